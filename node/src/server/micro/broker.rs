//! `broker.Broker` (shared/MICRO_API.md §4) over native streams, so that a publish on one node
//! reaches subscribers on every node: Micro's broker topic T of a caller in namespace N is the
//! native topic T in namespace N (Micro prefixes the topic with the caller's issuer: topics are
//! apart per namespace). Delivery is at most once, as Micro's: subscriptions ack on hand-off
//! and start at the newest message; a broker topic keeps its messages one minute.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use strata_proto::micro::broker as pb;
use strata_proto::stream::v1 as native;
use tonic::{Request, Response, Status, Streaming};

use super::{caller_of, first};
use crate::server::metrics::Metrics;
use crate::server::namespace;
use crate::server::stream::{Inbound, StreamService};
use crate::server::validate;

/// How long a broker topic created here keeps its messages: enough for a subscriber's
/// reconnect, not a log (Micro's broker keeps nothing).
const BROKER_RETENTION_MS: u64 = 60_000;

#[derive(Clone)]
pub struct BrokerService {
    streams: StreamService,
    metrics: Metrics,
}

impl BrokerService {
    pub fn new(streams: StreamService, metrics: Metrics) -> Self {
        Self { streams, metrics }
    }

    async fn topic(&self, namespace: &str, topic: &str) -> Result<(), Status> {
        self.streams
            .ensure_topic_with(
                namespace,
                topic,
                Some(native::Retention {
                    max_age_ms: BROKER_RETENTION_MS,
                    dedup_window_ms: Some(0),
                    ..Default::default()
                }),
            )
            .await
    }
}

fn topic_of(topic: &str) -> Result<(), Status> {
    if topic.is_empty() {
        return Err(validate::invalid("Missing topic".into()));
    }
    crate::server::stream::topic_name("topic", topic)
}

type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

#[tonic::async_trait]
impl pb::broker_server::Broker for BrokerService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.metrics
            .observed("broker.Publish", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                let message = req
                    .message
                    .ok_or_else(|| validate::invalid("Missing message".into()))?;
                topic_of(&req.topic)?;
                let message =
                    self.streams
                        .new_message(None, message.body, &message.header, String::new())?;
                self.topic(&namespace, &req.topic).await?;
                self.streams
                    .publish_messages(namespace, req.topic, vec![message])
                    .await?;
                Ok(pb::Empty {})
            })
            .await
    }

    type SubscribeStream = MessageStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.metrics
            .observed("broker.Subscribe", async {
                let namespace = caller_of(&request).and_then(|caller| {
                    if caller.namespace == namespace::ALL {
                        Err(validate::invalid("name one namespace".into()))
                    } else {
                        Ok(caller.namespace)
                    }
                })?;
                let (_, req) = first(request).await?;
                topic_of(&req.topic)?;
                self.topic(&namespace, &req.topic).await?;
                let subscribe = native::Subscribe {
                    topic: req.topic,
                    // A queue is a group its subscribers share; none: each gets everything.
                    group: req.queue,
                    start: Some(native::StartPosition {
                        position: Some(native::start_position::Position::Latest(true)),
                    }),
                    auto_ack: true,
                    ..Default::default()
                };
                // Micro's subscribers send nothing after the request.
                let inbound: Inbound = Box::pin(futures::stream::empty());
                let session = self
                    .streams
                    .open_consume(namespace, subscribe, inbound)
                    .await?;
                let messages = session.filter_map(|response| async move {
                    match response {
                        Ok(native::ConsumeResponse {
                            response: Some(native::consume_response::Response::Message(message)),
                        }) => Some(Ok(pb::Message {
                            header: message.metadata,
                            body: message.payload,
                        })),
                        Ok(_) => None,
                        Err(status) => Some(Err(status)),
                    }
                });
                Ok(Box::pin(messages) as MessageStream)
            })
            .await
    }
}
