//! `events.Stream` and `events.Store` (shared/MICRO_API.md §5) over native streams. Micro's
//! events are global and for the super-tenant only (`AuthorizeAdmin("micro")`): Micro's topic
//! T is the native topic T in namespace `micro`, created on first use. An event's id is its
//! sequence in the topic (decimal), which is what an ack names.
//!
//! Consume is an adapter ([`ConsumeAdapter`]) between Micro's stream (a ConsumeRequest, then
//! AckRequests, in raw frames decoded by position) and the native consume session, which does
//! all the work: groups, acks, redelivery after `ack_wait`, retry limits, time starts.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use prost::Message as _;
use strata_proto::micro::events as pb;
use strata_proto::stream::v1 as native;
use strata_proto::RawFrame;
use tonic::{Request, Response, Status, Streaming};

use super::{authorize_admin, caller_of, DEFAULT};
use crate::server::metrics::Metrics;
use crate::server::stream::{self as stream_service, Inbound, StreamService};
use crate::server::validate;

/// Events returned by `events.Store/Read` when the request says 0 (Micro's default).
const DEFAULT_READ_LIMIT: u64 = 250;
/// Most events one Read returns.
const MAX_READ_LIMIT: u64 = 1_000;
/// A Read page ends early past this many payload bytes.
const READ_PAGE_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct EventsService {
    streams: StreamService,
    metrics: Metrics,
}

impl EventsService {
    pub fn new(streams: StreamService, metrics: Metrics) -> Self {
        Self { streams, metrics }
    }
}

fn topic_of(topic: &str) -> Result<(), Status> {
    if topic.is_empty() {
        return Err(validate::invalid("Missing topic".into()));
    }
    stream_service::topic_name("topic", topic)
}

fn event_of(message: native::Message) -> pb::Event {
    pb::Event {
        id: message.sequence.to_string(),
        topic: message.topic,
        metadata: message.metadata,
        payload: message.payload,
        timestamp: (message.timestamp_ms / 1000) as i64,
    }
}

/// Translates one Micro consume stream to and from a native consume session: plain functions
/// of the messages, driven without gRPC by the tests below.
pub struct ConsumeAdapter;

impl ConsumeAdapter {
    /// The native subscription for Micro's ConsumeRequest.
    pub fn subscribe(request: &pb::ConsumeRequest) -> Result<native::Subscribe, Status> {
        topic_of(&request.topic)?;
        // A start time in seconds; the Go client sends year 1 (negative) for "none".
        let start = match request.offset {
            offset if offset > 0 => {
                native::start_position::Position::TimeMs((offset as u64).saturating_mul(1000))
            }
            _ => native::start_position::Position::Latest(true),
        };
        let ack_wait_ms = match request.ack_wait {
            wait if wait <= 0 => 0, // the native default, 30 s (as STAN's)
            wait => (wait as u64 / 1_000_000).max(stream_service::MIN_ACK_WAIT_MS),
        };
        // Micro counts redeliveries (-1: unlimited); Strata counts deliveries (0: unlimited).
        let max_deliveries = match request.retry_limit {
            limit if limit < 0 => 0,
            limit => u32::try_from(limit)
                .ok()
                .and_then(|l| l.checked_add(1))
                .filter(|d| *d <= stream_service::MAX_DELIVERIES)
                .ok_or_else(|| {
                    validate::invalid(format!(
                        "retry_limit {limit} is above {}",
                        stream_service::MAX_DELIVERIES - 1
                    ))
                })?,
        };
        Ok(native::Subscribe {
            topic: request.topic.clone(),
            group: request.group.clone(),
            start: Some(native::StartPosition {
                position: Some(start),
            }),
            auto_ack: request.auto_ack,
            ack_wait_ms,
            max_deliveries,
            ..Default::default()
        })
    }

    /// The native request for an AckRequest frame: an ack, or a nack (redelivered at once);
    /// `None` for an id that names no event (Micro ignores unknown ids).
    pub fn settle(frame: &RawFrame) -> Result<Option<native::ConsumeRequest>, Status> {
        let ack = pb::AckRequest::decode(frame.0.as_slice())
            .map_err(|e| validate::invalid(format!("an AckRequest does not decode: {e}")))?;
        let Ok(sequence) = ack.id.parse::<u64>() else {
            return Ok(None);
        };
        let request = if ack.success {
            native::consume_request::Request::Ack(native::Ack {
                sequences: vec![sequence],
            })
        } else {
            native::consume_request::Request::Nack(native::Nack {
                sequences: vec![sequence],
                delay_ms: 0,
            })
        };
        Ok(Some(native::ConsumeRequest {
            request: Some(request),
        }))
    }

    /// What Micro's client gets for a native response: events only (settlements and
    /// heartbeats are the native protocol's own).
    pub fn event(response: native::ConsumeResponse) -> Option<pb::Event> {
        match response.response {
            Some(native::consume_response::Response::Message(message)) => Some(event_of(message)),
            _ => None,
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::stream_server::Stream for EventsService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.metrics
            .observed("events.Publish", async {
                authorize_admin(&caller_of(&request)?, DEFAULT)?;
                let req = request.into_inner();
                topic_of(&req.topic)?;
                let message =
                    self.streams
                        .new_message(None, req.payload, &req.metadata, String::new())?;
                self.streams.ensure_topic(DEFAULT, &req.topic).await?;
                self.streams
                    .publish_messages(DEFAULT.into(), req.topic, vec![message])
                    .await?;
                Ok(pb::PublishResponse {})
            })
            .await
    }

    type ConsumeStream = EventStream;

    async fn consume(
        &self,
        request: Request<Streaming<RawFrame>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        self.metrics
            .observed("events.Consume", async {
                authorize_admin(&caller_of(&request)?, DEFAULT)?;
                let mut frames = request.into_inner();
                let first = super::first_message(&mut frames).await?;
                let consume = pb::ConsumeRequest::decode(first.0.as_slice()).map_err(|e| {
                    validate::invalid(format!("the ConsumeRequest does not decode: {e}"))
                })?;
                let subscribe = ConsumeAdapter::subscribe(&consume)?;
                self.streams.ensure_topic(DEFAULT, &consume.topic).await?;
                // A client that half-closes (a generated client cannot ack) ends only its
                // side: the session goes on delivering.
                let inbound: Inbound = Box::pin(frames.filter_map(|frame| async move {
                    match frame {
                        Ok(frame) => ConsumeAdapter::settle(&frame).transpose(),
                        Err(status) => Some(Err(status)),
                    }
                }));
                let session = self
                    .streams
                    .open_consume(DEFAULT.into(), subscribe, inbound)
                    .await?;
                let events = session.filter_map(|response| async move {
                    match response {
                        Ok(response) => ConsumeAdapter::event(response).map(Ok),
                        Err(status) => Some(Err(status)),
                    }
                });
                Ok(Box::pin(events) as EventStream)
            })
            .await
    }
}

#[tonic::async_trait]
impl pb::store_server::Store for EventsService {
    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.metrics
            .observed("events.Read", async {
                authorize_admin(&caller_of(&request)?, DEFAULT)?;
                let req = request.into_inner();
                topic_of(&req.topic)?;
                let limit = match req.limit {
                    0 => DEFAULT_READ_LIMIT,
                    n if n <= MAX_READ_LIMIT => n,
                    n => {
                        return Err(validate::invalid(format!(
                            "limit {n} is above {MAX_READ_LIMIT}"
                        )))
                    }
                };
                let node = self.streams.node();
                node.linearizable_barrier()
                    .await
                    .map_err(crate::server::status::read)?;
                let state = node.stream();
                let first = state
                    .topic(DEFAULT, &req.topic)
                    .map_err(crate::server::status::storage)?
                    .map_or(1, |topic| topic.first_seq);
                let page = state
                    .read(
                        DEFAULT,
                        &req.topic,
                        first.saturating_add(req.offset),
                        limit as usize,
                        READ_PAGE_BYTES,
                    )
                    .map_err(crate::server::status::storage)?;
                Ok(pb::ReadResponse {
                    events: page
                        .messages
                        .into_iter()
                        .map(|(sequence, message)| {
                            event_of(stream_service::message_pb(&req.topic, sequence, message, 0))
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.metrics
            .observed("events.Write", async {
                authorize_admin(&caller_of(&request)?, DEFAULT)?;
                // Micro's contract (§5.4): events enter through Stream.Publish only.
                Err(Status::unimplemented(
                    "Writing to the store directly is not supported",
                ))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn consume(offset: i64, ack_wait: i64, retry_limit: i64) -> pb::ConsumeRequest {
        pb::ConsumeRequest {
            group: "g".into(),
            topic: "orders".into(),
            offset,
            auto_ack: false,
            ack_wait,
            retry_limit,
        }
    }

    #[test]
    fn consume_requests_map_units_and_limits() {
        use native::start_position::Position;
        let sub = ConsumeAdapter::subscribe(&consume(-62_135_596_800, 0, -1)).unwrap();
        assert_eq!(
            sub.start.unwrap().position,
            Some(Position::Latest(true)),
            "year 1 means no offset"
        );
        assert_eq!((sub.ack_wait_ms, sub.max_deliveries), (0, 0));
        let sub = ConsumeAdapter::subscribe(&consume(1_700_000_000, 2_500_000_000, 3)).unwrap();
        assert_eq!(
            sub.start.unwrap().position,
            Some(Position::TimeMs(1_700_000_000_000))
        );
        assert_eq!((sub.ack_wait_ms, sub.max_deliveries), (2_500, 4));
        assert_eq!(
            ConsumeAdapter::subscribe(&consume(0, 1, 0))
                .unwrap()
                .ack_wait_ms,
            stream_service::MIN_ACK_WAIT_MS
        );
        assert!(ConsumeAdapter::subscribe(&consume(0, 0, 5_000)).is_err());
        let mut no_topic = consume(0, 0, -1);
        no_topic.topic.clear();
        assert_eq!(
            ConsumeAdapter::subscribe(&no_topic).unwrap_err().message(),
            "Missing topic"
        );
    }

    #[test]
    fn acks_become_native_settles_and_unknown_ids_are_ignored() {
        let frame = |id: &str, success: bool| {
            RawFrame(
                pb::AckRequest {
                    id: id.into(),
                    success,
                }
                .encode_to_vec(),
            )
        };
        let ack = ConsumeAdapter::settle(&frame("12", true)).unwrap().unwrap();
        assert!(matches!(
            ack.request,
            Some(native::consume_request::Request::Ack(native::Ack { ref sequences })) if sequences == &[12]
        ));
        let nack = ConsumeAdapter::settle(&frame("9", false)).unwrap().unwrap();
        assert!(matches!(
            nack.request,
            Some(native::consume_request::Request::Nack(native::Nack { ref sequences, delay_ms: 0 })) if sequences == &[9]
        ));
        assert!(ConsumeAdapter::settle(&frame("not-a-number", true))
            .unwrap()
            .is_none());
        assert!(ConsumeAdapter::settle(&RawFrame(vec![0x12, 0x05, 1])).is_err());
    }

    #[test]
    fn only_messages_reach_micro() {
        let message = native::ConsumeResponse {
            response: Some(native::consume_response::Response::Message(
                native::Message {
                    topic: "orders".into(),
                    sequence: 5,
                    timestamp_ms: 1_700_000_000_999,
                    payload: b"p".to_vec(),
                    ..Default::default()
                },
            )),
        };
        let event = ConsumeAdapter::event(message).unwrap();
        assert_eq!(
            (event.id.as_str(), event.timestamp, event.payload.as_slice()),
            ("5", 1_700_000_000, &b"p"[..])
        );
        let heartbeat = native::ConsumeResponse {
            response: Some(native::consume_response::Response::Heartbeat(
                native::Heartbeat::default(),
            )),
        };
        assert!(ConsumeAdapter::event(heartbeat).is_none());
    }
}
