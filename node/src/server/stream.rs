//! `strata.stream.v1.Stream`: handlers parse and validate, delegate to Raft (publishes, topic
//! admin, group steps) or the applied stream state (reads, deliveries), and encode.
//!
//! A `Consume` call with a group runs a [`GroupSession`]: it settles the client's acks and
//! claims messages through the log (so members on different nodes never hold the same message
//! at once), then reads the claimed messages from this node's applied state and pushes them.
//! Without a group it runs an ephemeral cursor over the applied state and needs no log entries.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use strata_proto::stream::v1 as pb;
use strata_raft::node::now_ms;
use strata_raft::{RaftNode, WriteError};
use strata_stream::{
    GroupConfig, GroupStep, Message, NewMessage, Notice, Settle, SettleOutcome, StartAt,
    StreamCommand, StreamFailure, StreamResponse, Topic, TopicConfig,
};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tonic::{Request, Response, Status, Streaming};

use super::metrics::Metrics;
use super::{namespace, status, validate};

pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Longest topic name, in bytes.
pub const MAX_TOPIC_BYTES: usize = 255;
pub const MAX_MESSAGE_ID_BYTES: usize = 256;
/// Most messages, and most payload bytes (unless one message alone is larger), per batch.
pub const MAX_BATCH_MESSAGES: usize = 1_000;
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
pub const MIN_ACK_WAIT_MS: u64 = 100;
/// Twelve hours: also the longest nack delay.
pub const MAX_ACK_WAIT_MS: u64 = 12 * 3600 * 1000;
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 256;
pub const MAX_IN_FLIGHT: u32 = 10_000;
pub const MAX_DELIVERIES: u32 = 1_000;
pub const DEFAULT_READ_LIMIT: u32 = 100;
pub const MAX_READ_LIMIT: u32 = 1_000;
pub const MAX_SETTLE_PER_REQUEST: usize = 10_000;
/// Most messages claimed by one log entry.
const MAX_CLAIM: u32 = 512;
/// Payload bytes per read page (a page holds at least one message).
const READ_PAGE_BYTES: usize = 16 * 1024 * 1024;
/// Messages buffered per consumer before the session waits for the client.
const CONSUME_CHANNEL_CAPACITY: usize = 256;
/// How long a session keeps retrying a step the cluster cannot take (no leader) before it ends
/// the stream with UNAVAILABLE.
const STEP_RETRY_FOR: Duration = Duration::from_secs(30);
/// How often an idle consume stream hears that its session is alive (see `Subscribe.heartbeat_ms`).
pub const DEFAULT_HEARTBEAT_MS: u32 = 5_000;
pub const MIN_HEARTBEAT_MS: u32 = 1_000;
pub const MAX_HEARTBEAT_MS: u32 = 60_000;
/// After a step that claimed nothing, a due redelivery by this node's clock is looked for again
/// no sooner than this (the leader's clock may be a little behind).
const EMPTY_CLAIM_BACKOFF: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct StreamService {
    node: RaftNode,
    metrics: Metrics,
    max_message_bytes: usize,
    stopping: tokio::sync::watch::Receiver<bool>,
}

pub type ConsumeStream = Pin<Box<dyn Stream<Item = Result<pb::ConsumeResponse, Status>> + Send>>;
/// A consume session's requests after `subscribe` (acks and nacks): a gRPC stream, or one
/// adapted from another protocol (Micro's events).
pub type Inbound = Pin<Box<dyn Stream<Item = Result<pb::ConsumeRequest, Status>> + Send>>;

impl StreamService {
    pub fn new(
        node: RaftNode,
        metrics: Metrics,
        max_message_bytes: usize,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            node,
            metrics,
            max_message_bytes,
            stopping,
        }
    }

    /// Largest request this service decodes: one full batch.
    pub fn node(&self) -> &RaftNode {
        &self.node
    }

    pub fn max_request_bytes(max_message_bytes: usize) -> usize {
        max_message_bytes.max(MAX_BATCH_BYTES)
    }

    async fn write(&self, command: StreamCommand) -> Result<(u64, StreamResponse), Status> {
        match self
            .node
            .write_stream(command)
            .await
            .map_err(status::write)?
        {
            (_, StreamResponse::Failed(failure)) => Err(failure_status(&failure)),
            done => Ok(done),
        }
    }

    /// `index`: the message's place in a batch, named in errors.
    pub fn new_message(
        &self,
        index: Option<usize>,
        payload: Vec<u8>,
        metadata: &HashMap<String, String>,
        message_id: String,
    ) -> Result<NewMessage, Status> {
        let field = || index.map_or(String::new(), |i| format!("messages[{i}]."));
        if payload.len() > self.max_message_bytes {
            return Err(validate::invalid(format!(
                "{}payload is {} bytes; the limit is {} bytes (--max-message-bytes)",
                field(),
                payload.len(),
                self.max_message_bytes
            )));
        }
        if message_id.len() > MAX_MESSAGE_ID_BYTES {
            return Err(validate::invalid(format!(
                "{}message_id is {} bytes; the limit is {MAX_MESSAGE_ID_BYTES}",
                field(),
                message_id.len()
            )));
        }
        Ok(NewMessage {
            message_id,
            metadata: validate::metadata(metadata)?,
            payload,
        })
    }

    /// Starts a consume session for `subscribe` in `namespace`, fed by `inbound` (its acks and
    /// nacks); a group is created (its start fixed) before this returns.
    pub async fn open_consume(
        &self,
        namespace: String,
        subscribe: pb::Subscribe,
        inbound: Inbound,
    ) -> Result<ConsumeStream, Status> {
        let subscription = subscription_of(subscribe)?;
        let (sender, receiver) = super::outbox::consume_channel(
            CONSUME_CHANNEL_CAPACITY,
            "consume again: a group resumes from its acked floor, and what this stream held \
             is delivered again after its ack wait",
        );
        let context = SessionContext {
            node: self.node.clone(),
            notices: self.node.subscribe_streams(),
            namespace,
            out: sender,
            stopping: self.stopping.clone(),
            heartbeat: subscription.heartbeat,
            last_sent: Instant::now(),
        };
        match subscription.group.clone() {
            Some(group) => {
                let session = GroupSession {
                    consumer: format!("node-{}/{:016x}", self.node.node_id(), rand_u64()),
                    group,
                    subscription,
                    context,
                };
                // Create the group (fixing its start) before answering, so that a
                // client that subscribes and then publishes never misses its own
                // messages, and a refused subscription fails the call itself.
                session.step(Vec::new(), 0).await?;
                tokio::spawn(session.run(inbound));
            }
            None => {
                tokio::spawn(run_ephemeral(context, subscription, inbound));
            }
        }
        Ok(Box::pin(receiver) as ConsumeStream)
    }

    pub async fn publish_messages(
        &self,
        namespace: String,
        topic: String,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<pb::PublishResponse>, Status> {
        let command = StreamCommand::Publish {
            namespace,
            topic,
            messages,
        };
        match self.write(command).await? {
            (revision, StreamResponse::Published { results, .. }) => Ok(results
                .into_iter()
                .map(|r| pb::PublishResponse {
                    sequence: r.sequence,
                    timestamp_ms: r.timestamp_ms,
                    duplicate: r.duplicate,
                    revision,
                })
                .collect()),
            (_, other) => Err(unexpected(other)),
        }
    }
}

fn unexpected(response: StreamResponse) -> Status {
    Status::internal(format!("unexpected stream response {response:?}"))
}

pub fn failure_status(failure: &StreamFailure) -> Status {
    match failure {
        StreamFailure::TopicNotFound => Status::not_found("no such topic in this namespace"),
        StreamFailure::TopicExists => Status::already_exists(
            "the topic exists; change its limits with UpdateTopic (`strata stream update`)",
        ),
        StreamFailure::GroupNotFound => Status::not_found("no such group on this topic"),
        StreamFailure::MessageTooLarge { max_bytes } => Status::invalid_argument(format!(
            "a message is larger than the topic's max_bytes limit ({max_bytes} bytes); nothing was published"
        )),
    }
}

/// A topic name: 1 to 255 bytes of dot-separated tokens of [A-Za-z0-9_-].
pub fn topic_name(field: &str, topic: &str) -> Result<(), Status> {
    if topic.is_empty() {
        return Err(validate::invalid(format!("{field} must not be empty")));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(validate::invalid(format!(
            "{field} is {} bytes; the limit is {MAX_TOPIC_BYTES}",
            topic.len()
        )));
    }
    for token in topic.split('.') {
        if token.is_empty() {
            return Err(validate::invalid(format!(
                "{field} {topic:?} has an empty token: tokens are separated by single dots, with none at either end"
            )));
        }
        if token.contains(['*', '>']) {
            return Err(validate::invalid(format!(
                "{field} {topic:?}: wildcards ('*', '>') are only valid in a ListTopics filter"
            )));
        }
        if let Some(bad) = token
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-".contains(*c)))
        {
            return Err(validate::invalid(format!(
                "{field} {topic:?} contains {bad:?}; allowed are letters, digits, '_', '-' and '.' between tokens"
            )));
        }
    }
    Ok(())
}

/// A ListTopics filter: tokens as in a topic name, or `*` (one token), or a final `>` (one or
/// more tokens).
pub fn topic_filter(filter: &str) -> Result<Vec<String>, Status> {
    if filter.is_empty() {
        return Ok(Vec::new());
    }
    if filter.len() > MAX_TOPIC_BYTES {
        return Err(validate::invalid(format!(
            "filter is longer than {MAX_TOPIC_BYTES} bytes"
        )));
    }
    let tokens: Vec<&str> = filter.split('.').collect();
    for (index, token) in tokens.iter().enumerate() {
        match *token {
            "*" => {}
            ">" if index == tokens.len() - 1 => {}
            ">" => {
                return Err(validate::invalid(format!(
                    "filter {filter:?}: '>' may only be the last token"
                )))
            }
            token if token.contains(['*', '>']) => {
                return Err(validate::invalid(format!(
                    "filter {filter:?}: a wildcard must be a whole token ('orders.*', 'orders.>'), not part of {token:?}"
                )))
            }
            token => topic_name("filter token", token)?,
        }
    }
    Ok(tokens.into_iter().map(String::from).collect())
}

fn filter_matches(filter: &[String], topic: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let tokens: Vec<&str> = topic.split('.').collect();
    for (index, want) in filter.iter().enumerate() {
        match want.as_str() {
            ">" => return tokens.len() > index,
            "*" if index < tokens.len() => {}
            literal if tokens.get(index) == Some(&literal) => {}
            _ => return false,
        }
    }
    tokens.len() == filter.len()
}

/// Where a Read starts: a sequence, or the first message at or after a time.
enum From {
    Sequence(u64),
    Time(u64),
}

fn retention_of(retention: Option<pb::Retention>) -> Result<TopicConfig, Status> {
    let retention = retention.unwrap_or_default();
    if retention.max_age_ms > validate::MAX_TTL_MS {
        return Err(validate::invalid(format!(
            "retention.max_age_ms is above the limit of {} ms (ten years)",
            validate::MAX_TTL_MS
        )));
    }
    let dedup_window_ms = retention
        .dedup_window_ms
        .unwrap_or(strata_stream::DEFAULT_DEDUP_WINDOW_MS);
    if dedup_window_ms > 24 * 3600 * 1000 {
        return Err(validate::invalid(
            "retention.dedup_window_ms is above the limit of 86400000 ms (one day)".into(),
        ));
    }
    Ok(TopicConfig {
        max_age_ms: retention.max_age_ms,
        max_messages: retention.max_messages,
        max_bytes: retention.max_bytes,
        dedup_window_ms,
    })
}

fn retention_pb(config: &TopicConfig) -> pb::Retention {
    pb::Retention {
        max_age_ms: config.max_age_ms,
        max_messages: config.max_messages,
        max_bytes: config.max_bytes,
        dedup_window_ms: Some(config.dedup_window_ms),
    }
}

fn summary(name: String, topic: &Topic) -> pb::TopicSummary {
    pb::TopicSummary {
        name,
        retention: Some(retention_pb(&topic.config)),
        first_sequence: topic.first_seq,
        last_sequence: topic.last_seq,
        messages: topic.messages(),
        bytes: topic.bytes,
        created_ms: topic.created_ms,
    }
}

pub fn message_pb(topic: &str, seq: u64, message: Message, delivery_count: u32) -> pb::Message {
    pb::Message {
        topic: topic.to_string(),
        sequence: seq,
        timestamp_ms: message.timestamp_ms,
        metadata: message.metadata.into_iter().collect(),
        payload: message.payload,
        delivery_count,
        message_id: message.message_id,
    }
}

fn start_of(start: Option<pb::StartPosition>) -> Result<StartAt, Status> {
    use pb::start_position::Position;
    Ok(match start.and_then(|s| s.position) {
        None | Some(Position::Latest(_)) => StartAt::Latest,
        Some(Position::Earliest(_)) => StartAt::Earliest,
        Some(Position::Sequence(0)) => {
            return Err(validate::invalid(
                "start.sequence must be at least 1 (sequences start at 1)".into(),
            ))
        }
        Some(Position::Sequence(seq)) => StartAt::Sequence(seq),
        Some(Position::TimeMs(at)) => StartAt::TimeMs(at),
    })
}

/// A validated subscription.
struct Subscription {
    topic: String,
    group: Option<String>,
    config: GroupConfig,
    auto_ack: bool,
    max_in_flight: u32,
    /// Most deliveries before the session ends (0: unbounded).
    limit: u64,
    heartbeat: Duration,
}

fn subscription_of(subscribe: pb::Subscribe) -> Result<Subscription, Status> {
    topic_name("subscribe.topic", &subscribe.topic)?;
    let group = match subscribe.group.as_str() {
        "" => None,
        name => {
            validate::name("subscribe.group", name)?;
            Some(name.to_string())
        }
    };
    if group.is_none() && !subscribe.auto_ack {
        return Err(validate::invalid(
            "manual acks need a group (durable state): set subscribe.group, or auto_ack for an \
             ephemeral subscription"
                .into(),
        ));
    }
    let ack_wait_ms = match subscribe.ack_wait_ms {
        0 => DEFAULT_ACK_WAIT_MS,
        ms if (MIN_ACK_WAIT_MS..=MAX_ACK_WAIT_MS).contains(&ms) => ms,
        ms => {
            return Err(validate::invalid(format!(
                "subscribe.ack_wait_ms {ms} is outside {MIN_ACK_WAIT_MS}..={MAX_ACK_WAIT_MS}"
            )))
        }
    };
    if subscribe.max_deliveries > MAX_DELIVERIES {
        return Err(validate::invalid(format!(
            "subscribe.max_deliveries {} is above {MAX_DELIVERIES} (0: unlimited)",
            subscribe.max_deliveries
        )));
    }
    let max_in_flight = match subscribe.max_in_flight {
        0 => DEFAULT_MAX_IN_FLIGHT,
        n if n <= MAX_IN_FLIGHT => n,
        n => {
            return Err(validate::invalid(format!(
                "subscribe.max_in_flight {n} is above {MAX_IN_FLIGHT}"
            )))
        }
    };
    let heartbeat_ms = match subscribe.heartbeat_ms {
        0 => DEFAULT_HEARTBEAT_MS,
        ms if (MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&ms) => ms,
        ms => {
            return Err(validate::invalid(format!(
                "subscribe.heartbeat_ms {ms} is outside {MIN_HEARTBEAT_MS}..={MAX_HEARTBEAT_MS}"
            )))
        }
    };
    let dead_letter_topic = match subscribe.dead_letter_topic.as_str() {
        "" => {
            let name = format!("{}.dlq", subscribe.topic);
            if name.len() > MAX_TOPIC_BYTES {
                return Err(validate::invalid(format!(
                    "the default dead-letter topic \"<topic>.dlq\" would be longer than \
                     {MAX_TOPIC_BYTES} bytes; name one in subscribe.dead_letter_topic"
                )));
            }
            name
        }
        name => {
            topic_name("subscribe.dead_letter_topic", name)?;
            name.to_string()
        }
    };
    if dead_letter_topic == subscribe.topic {
        return Err(validate::invalid(
            "subscribe.dead_letter_topic must differ from the topic".into(),
        ));
    }
    Ok(Subscription {
        config: GroupConfig {
            start: start_of(subscribe.start)?,
            ack_wait_ms,
            max_deliveries: subscribe.max_deliveries,
            dead_letter_topic,
        },
        topic: subscribe.topic,
        group,
        auto_ack: subscribe.auto_ack,
        max_in_flight,
        limit: subscribe.limit,
        heartbeat: Duration::from_millis(u64::from(heartbeat_ms)),
    })
}

#[tonic::async_trait]
impl pb::stream_server::Stream for StreamService {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        self.metrics
            .observed("stream.Publish", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                let message = self.new_message(None, req.payload, &req.metadata, req.message_id)?;
                let mut results = self
                    .publish_messages(namespace, req.topic, vec![message])
                    .await?;
                results
                    .pop()
                    .ok_or_else(|| Status::internal("a publish without a result"))
            })
            .await
    }

    async fn publish_batch(
        &self,
        request: Request<pb::PublishBatchRequest>,
    ) -> Result<Response<pb::PublishBatchResponse>, Status> {
        self.metrics
            .observed("stream.PublishBatch", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                if req.messages.is_empty() || req.messages.len() > MAX_BATCH_MESSAGES {
                    return Err(validate::invalid(format!(
                        "a batch holds 1 to {MAX_BATCH_MESSAGES} messages, not {}",
                        req.messages.len()
                    )));
                }
                let total: usize = req.messages.iter().map(|m| m.payload.len()).sum();
                if req.messages.len() > 1 && total > MAX_BATCH_BYTES {
                    return Err(validate::invalid(format!(
                        "the batch's payloads total {total} bytes; the limit is {MAX_BATCH_BYTES}"
                    )));
                }
                let messages = req
                    .messages
                    .into_iter()
                    .enumerate()
                    .map(|(index, m)| {
                        self.new_message(Some(index), m.payload, &m.metadata, m.message_id)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let results = self
                    .publish_messages(namespace, req.topic, messages)
                    .await?;
                Ok(pb::PublishBatchResponse { results })
            })
            .await
    }

    type ConsumeStream = ConsumeStream;

    async fn consume(
        &self,
        request: Request<Streaming<pb::ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        self.metrics
            .observed("stream.Consume", async {
                let namespace = namespace::of(&request)?;
                let mut inbound = request.into_inner();
                let subscribe = match inbound.next().await {
                    Some(Ok(pb::ConsumeRequest {
                        request: Some(pb::consume_request::Request::Subscribe(subscribe)),
                    })) => subscribe,
                    Some(Ok(_)) => {
                        return Err(validate::invalid(
                            "the first message on a Consume stream must be `subscribe`".into(),
                        ))
                    }
                    Some(Err(status)) => return Err(status),
                    None => {
                        return Err(validate::invalid(
                            "the Consume stream ended before `subscribe`".into(),
                        ))
                    }
                };
                self.open_consume(namespace, subscribe, Box::pin(inbound))
                    .await
            })
            .await
    }

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        self.metrics
            .observed("stream.Read", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                let limit = match req.limit {
                    0 => DEFAULT_READ_LIMIT,
                    n if n <= MAX_READ_LIMIT => n,
                    n => {
                        return Err(validate::invalid(format!(
                            "limit {n} is above {MAX_READ_LIMIT}"
                        )))
                    }
                };
                if req.linearizable {
                    self.node
                        .linearizable_barrier()
                        .await
                        .map_err(status::read)?;
                }
                let from = match req.from {
                    None => From::Sequence(1),
                    Some(pb::read_request::From::Sequence(0)) => {
                        return Err(validate::invalid(
                            "sequence must be at least 1 (sequences start at 1)".into(),
                        ))
                    }
                    Some(pb::read_request::From::Sequence(seq)) => From::Sequence(seq),
                    Some(pb::read_request::From::TimeMs(at)) => From::Time(at),
                };
                // A page of up to MAX_READ_LIMIT messages and READ_PAGE_BYTES: a scan, so on
                // a blocking thread, off the workers that carry heartbeats and requests.
                let (state, scope, topic) = (
                    self.node.stream().clone(),
                    namespace.clone(),
                    req.topic.clone(),
                );
                let page = status::blocking(move || {
                    let from = match from {
                        From::Sequence(seq) => seq,
                        From::Time(at) => state.sequence_at_time(&scope, &topic, at)?,
                    };
                    state.read(&scope, &topic, from, limit as usize, READ_PAGE_BYTES)
                })
                .await?;
                Ok(pb::ReadResponse {
                    messages: page
                        .messages
                        .into_iter()
                        .map(|(seq, m)| message_pb(&req.topic, seq, m, 0))
                        .collect(),
                    first_sequence: page.first_seq,
                    last_sequence: page.last_seq,
                })
            })
            .await
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        self.metrics
            .observed("stream.CreateTopic", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                self.put_topic(namespace, req.topic, req.retention, false)
                    .await
            })
            .await
    }

    async fn update_topic(
        &self,
        request: Request<pb::UpdateTopicRequest>,
    ) -> Result<Response<pb::TopicResponse>, Status> {
        self.metrics
            .observed("stream.UpdateTopic", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                self.put_topic(namespace, req.topic, req.retention, true)
                    .await
            })
            .await
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        self.metrics
            .observed("stream.DeleteTopic", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                let (revision, _) = self
                    .write(StreamCommand::DeleteTopic {
                        namespace,
                        topic: req.topic,
                    })
                    .await?;
                Ok(pb::DeleteTopicResponse { revision })
            })
            .await
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        self.metrics
            .observed("stream.ListTopics", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                let filter = topic_filter(&req.filter)?;
                if !req.start_after.is_empty() {
                    topic_name("start_after", &req.start_after)?;
                }
                let limit = match req.limit {
                    0 => DEFAULT_READ_LIMIT,
                    n if n <= MAX_READ_LIMIT => n,
                    n => {
                        return Err(validate::invalid(format!(
                            "limit {n} is above {MAX_READ_LIMIT}"
                        )))
                    }
                } as usize;
                let mut topics = Vec::new();
                let mut after = (!req.start_after.is_empty()).then(|| req.start_after.clone());
                let mut scanned = 0;
                // Bounded: at most 10 scans of 1,000 names per request, then a cursor.
                let next = loop {
                    let (state, scope, from) =
                        (self.node.stream().clone(), namespace.clone(), after.clone());
                    let batch =
                        status::blocking(move || state.topics(&scope, from.as_deref(), 1_000))
                            .await?;
                    let exhausted = batch.len() < 1_000;
                    for (name, topic) in batch {
                        scanned += 1;
                        after = Some(name.clone());
                        if filter_matches(&filter, &name) {
                            topics.push(summary(name, &topic));
                            if topics.len() == limit {
                                break;
                            }
                        }
                    }
                    if topics.len() == limit || (!exhausted && scanned >= 10_000) {
                        break after.clone().unwrap_or_default();
                    }
                    if exhausted {
                        break String::new();
                    }
                };
                Ok(pb::ListTopicsResponse {
                    topics,
                    next_start_after: next,
                })
            })
            .await
    }

    async fn topic_info(
        &self,
        request: Request<pb::TopicInfoRequest>,
    ) -> Result<Response<pb::TopicInfoResponse>, Status> {
        self.metrics
            .observed("stream.TopicInfo", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                let info = self
                    .node
                    .stream()
                    .info(&namespace, &req.topic)
                    .map_err(status::storage)?
                    .ok_or_else(|| failure_status(&StreamFailure::TopicNotFound))?;
                Ok(pb::TopicInfoResponse {
                    topic: Some(summary(info.name, &info.topic)),
                    groups: info
                        .groups
                        .into_iter()
                        .map(|g| pb::GroupInfo {
                            name: g.name,
                            ack_floor: g.ack_floor,
                            next_sequence: g.record.next_seq,
                            pending: g.record.pending,
                            lag: g.lag,
                            ack_wait_ms: g.record.config.ack_wait_ms,
                            max_deliveries: g.record.config.max_deliveries,
                            dead_letter_topic: g.record.config.dead_letter_topic,
                            last_delivery_ms: g.record.activity.last_delivery_ms,
                            last_ack_ms: g.record.activity.last_ack_ms,
                            delivered: g.record.activity.delivered,
                            acked: g.record.activity.acked,
                        })
                        .collect(),
                })
            })
            .await
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.metrics
            .observed("stream.DeleteGroup", async {
                let namespace = namespace::of(&request)?;
                let req = request.into_inner();
                topic_name("topic", &req.topic)?;
                validate::name("group", &req.group)?;
                let (revision, _) = self
                    .write(StreamCommand::DeleteGroup {
                        namespace,
                        topic: req.topic,
                        group: req.group,
                    })
                    .await?;
                Ok(pb::DeleteGroupResponse { revision })
            })
            .await
    }
}

impl StreamService {
    /// CreateTopic (`update` false) or UpdateTopic.
    /// Creates `topic` with the default retention unless it exists (Micro's topics appear on
    /// first use). Creating it counts against the `topics` quota like any creation.
    pub async fn ensure_topic(&self, namespace: &str, topic: &str) -> Result<(), Status> {
        self.ensure_topic_with(namespace, topic, None).await
    }

    /// [`Self::ensure_topic`] with `retention` for a topic it creates.
    pub async fn ensure_topic_with(
        &self,
        namespace: &str,
        topic: &str,
        retention: Option<pb::Retention>,
    ) -> Result<(), Status> {
        topic_name("topic", topic)?;
        if self
            .node
            .stream()
            .topic(namespace, topic)
            .map_err(status::storage)?
            .is_some()
        {
            return Ok(());
        }
        match self
            .put_topic(namespace.to_string(), topic.to_string(), retention, false)
            .await
        {
            Ok(_) => Ok(()),
            // Made meanwhile by someone else: as good.
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(status) => Err(status),
        }
    }

    async fn put_topic(
        &self,
        namespace: String,
        topic: String,
        retention: Option<pb::Retention>,
        update: bool,
    ) -> Result<pb::TopicResponse, Status> {
        topic_name("topic", &topic)?;
        let config = retention_of(retention)?;
        let command = StreamCommand::PutTopic {
            namespace,
            topic,
            config,
            must_exist: update,
            must_not_exist: !update,
        };
        match self.write(command).await? {
            (revision, StreamResponse::TopicPut { created, .. }) => {
                Ok(pb::TopicResponse { revision, created })
            }
            (_, other) => Err(unexpected(other)),
        }
    }
}

/// Whether a notice concerns `topic` of `namespace` (lost notices do: look anyway).
fn relevant(
    namespace: &str,
    topic: &str,
    notice: &Result<std::sync::Arc<(u64, Vec<Notice>)>, broadcast::error::RecvError>,
) -> bool {
    match notice {
        // An empty list follows a snapshot install: anything may have changed.
        Ok(notices) => {
            notices.1.is_empty()
                || notices
                    .1
                    .iter()
                    .any(|n| n.namespace == namespace && n.topic == topic)
        }
        Err(broadcast::error::RecvError::Lagged(_)) => true,
        Err(broadcast::error::RecvError::Closed) => false,
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_ms());
    hasher.finish()
}

/// What every consume session needs.
struct SessionContext {
    node: RaftNode,
    notices: broadcast::Receiver<std::sync::Arc<(u64, Vec<Notice>)>>,
    namespace: String,
    /// Cuts a client that leaves what it was sent unread (see `outbox`).
    out: super::outbox::Outbox<pb::ConsumeResponse>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// Quiet this long, the session proves it can still serve and says so (or ends).
    heartbeat: Duration,
    /// When the client was last sent anything.
    last_sent: Instant,
}

/// Why a session waited no longer.
enum Wake {
    Client(Option<Result<pb::ConsumeRequest, Status>>),
    /// A topic changed (or notices were lost: look anyway).
    Notice(bool),
    Timer,
    Stop,
    ClientGone,
}

impl SessionContext {
    /// Waits for the next reason to act. A client that half-closed its side (`inbound` is
    /// `None`) sends no more acks, but still receives messages.
    async fn wait(
        &mut self,
        topic: &str,
        inbound: &mut Option<Inbound>,
        timer: Option<Instant>,
    ) -> Wake {
        let request = async {
            match inbound.as_mut() {
                Some(inbound) => inbound.next().await,
                None => std::future::pending().await,
            }
        };
        let sleep = async {
            match timer {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let namespace = self.namespace.as_str();
        let gone = self.out.client_gone();
        tokio::select! {
            request = request => Wake::Client(request),
            notice = self.notices.recv() => {
                let closed = matches!(notice, Err(broadcast::error::RecvError::Closed));
                if closed {
                    return Wake::Stop;
                }
                Wake::Notice(relevant(namespace, topic, &notice))
            }
            _ = sleep => Wake::Timer,
            _ = self.stopping.wait_for(|stop| *stop) => Wake::Stop,
            _ = gone.wait() => Wake::ClientGone,
        }
    }

    async fn send(&mut self, response: pb::consume_response::Response) -> bool {
        self.last_sent = Instant::now();
        self.out
            .send(Ok(pb::ConsumeResponse {
                response: Some(response),
            }))
            .await
            .is_ok()
    }

    /// When the next heartbeat is due.
    fn heartbeat_due(&self) -> Instant {
        self.last_sent + self.heartbeat
    }

    /// If the stream has been quiet for a heartbeat interval: confirms that this node can still
    /// serve the session (a member, current with a leader that has a quorum) and sends a
    /// heartbeat; if it cannot, ends the stream with UNAVAILABLE so that the client subscribes
    /// again elsewhere. A session on a node that was removed from the cluster, cut off from
    /// it, or left behind would otherwise wait for entries that never come while its client
    /// hears nothing (issue 21). Returns false when the session has ended.
    async fn beat_if_due(&mut self) -> bool {
        if self.out.cut_if_stalled().is_err() {
            return false;
        }
        if Instant::now() < self.heartbeat_due() {
            return true;
        }
        match super::history::confirm_current(&self.node, self.heartbeat).await {
            Ok(applied_index) => {
                let beat = pb::Heartbeat {
                    applied_index,
                    time_ms: now_ms(),
                };
                self.last_sent = Instant::now();
                // Never wait for a client that is not reading: a full channel already tells it
                // plenty.
                self.out
                    .try_send(Ok(pb::ConsumeResponse {
                        response: Some(pb::consume_response::Response::Heartbeat(beat)),
                    }))
                    .is_ok()
            }
            Err(status) => {
                self.fail(status).await;
                false
            }
        }
    }

    async fn fail(&self, status: Status) {
        self.out.finish(status).await;
    }

    async fn stopped(&self) {
        self.fail(status::unavailable(
            "shutting_down",
            "the node is shutting down; consume again (another node, or later): a group resumes from its acked floor".into(),
        ))
        .await;
    }
}

/// An ephemeral subscription: every message from the start position, read from this node's
/// applied state. No log entries, no durable state, auto-ack only.
async fn run_ephemeral(mut context: SessionContext, subscription: Subscription, inbound: Inbound) {
    let mut inbound = Some(inbound);
    let topic = subscription.topic;
    let state = context.node.stream().clone();
    let start = match subscription.config.start {
        StartAt::Earliest => Ok(1),
        StartAt::Sequence(seq) => Ok(seq),
        StartAt::Latest => state
            .topic(&context.namespace, &topic)
            .map(|t| t.map_or(1, |t| t.last_seq + 1))
            .map_err(status::storage),
        StartAt::TimeMs(at) => {
            let (state, scope, topic) = (state.clone(), context.namespace.clone(), topic.clone());
            status::blocking(move || state.sequence_at_time(&scope, &topic, at)).await
        }
    };
    let mut cursor = match start {
        Ok(seq) => seq,
        Err(status) => return context.fail(status).await,
    };
    let mut remaining = match subscription.limit {
        0 => u64::MAX,
        limit => limit,
    };
    loop {
        let (reader, scope, name) = (state.clone(), context.namespace.clone(), topic.clone());
        let page = status::blocking(move || {
            reader.read(
                &scope,
                &name,
                cursor,
                CONSUME_CHANNEL_CAPACITY,
                READ_PAGE_BYTES,
            )
        })
        .await;
        let page = match page {
            Ok(page) => page,
            Err(status) => return context.fail(status).await,
        };
        if !page.messages.is_empty() {
            for (seq, message) in page.messages {
                if remaining == 0 {
                    return;
                }
                remaining -= 1;
                cursor = seq + 1;
                let message = message_pb(&topic, seq, message, 1);
                if !context
                    .send(pb::consume_response::Response::Message(message))
                    .await
                {
                    return;
                }
            }
            if remaining == 0 {
                return;
            }
            continue;
        }
        loop {
            let due = context.heartbeat_due();
            match context.wait(&topic, &mut inbound, Some(due)).await {
                Wake::Client(Some(Ok(_))) => {
                    return context
                        .fail(validate::invalid(
                            "this subscription is ephemeral (no group) and auto-acks: it takes no acks or nacks".into(),
                        ))
                        .await
                }
                Wake::Client(None) => inbound = None, // half-closed: keep delivering
                Wake::Client(Some(Err(_))) | Wake::ClientGone => return,
                Wake::Notice(false) if Instant::now() < due => continue,
                Wake::Notice(_) | Wake::Timer => {
                    if !context.beat_if_due().await {
                        return;
                    }
                    break; // and look again
                }
                Wake::Stop => return context.stopped().await,
            }
        }
    }
}

/// A member of a durable group.
struct GroupSession {
    context: SessionContext,
    subscription: Subscription,
    group: String,
    consumer: String,
}

impl GroupSession {
    async fn run(mut self, inbound: Inbound) {
        let mut inbound = Some(inbound);
        let topic = self.subscription.topic.clone();
        let ack_wait = Duration::from_millis(self.subscription.config.ack_wait_ms);
        // What this session holds, until when: its share of max_in_flight.
        let mut held: HashMap<u64, Instant> = HashMap::new();
        let mut settle: Vec<Settle> = Vec::new();
        // Look for work in the local state (set by notices and timers).
        let mut look = true;
        // Claim at once on start, whatever this node's state says (a follower may not yet
        // show the group the call just created).
        let mut claim_anyway = true;
        let mut timer: Option<Instant> = None;
        let mut quiet_until = Instant::now();
        let mut remaining = match self.subscription.limit {
            0 => u64::MAX,
            limit => limit,
        };
        loop {
            let now = Instant::now();
            if let Err(status) = self.release_expired_holds(&mut held, now, ack_wait) {
                return self.context.fail(status).await;
            }
            if remaining == 0 && held.is_empty() && settle.is_empty() {
                return; // a fetch that is done: end the stream (OK)
            }
            // Acks of held messages settle first in the entry they ride in, so they free their
            // credit in that same entry: a consumer that acks one message at a time then costs
            // one log entry per message (ack and next claim together), not two.
            // (Distinct: a client may ack the same message twice.)
            let freeing = settle
                .iter()
                .filter_map(|s| match s {
                    Settle::Ack(seq) if held.contains_key(seq) => Some(*seq),
                    _ => None,
                })
                .collect::<std::collections::HashSet<u64>>()
                .len();
            let credit = if self.subscription.auto_ack {
                (self.context.out.capacity() as u32).min(self.subscription.max_in_flight)
            } else {
                // Adopted claims can take the holds past max_in_flight.
                self.subscription.max_in_flight.saturating_sub(
                        held.len().saturating_sub(freeing).min(u32::MAX as usize) as u32,
                    )
            }
            .min(MAX_CLAIM)
            .min(remaining.min(u64::from(u32::MAX)) as u32);
            let mut claim = 0;
            if credit > 0 && (claim_anyway || look || freeing > 0) {
                look = false;
                match self.work_ready(now, quiet_until) {
                    Ok((ready, next)) => {
                        timer = next;
                        if ready || claim_anyway {
                            claim = credit;
                        }
                    }
                    Err(status) => return self.context.fail(status).await,
                }
            }
            if claim > 0 || !settle.is_empty() {
                claim_anyway = false;
                let step = match self.step(std::mem::take(&mut settle), claim).await {
                    Ok(step) => step,
                    Err(status) => return self.context.fail(status).await,
                };
                for (sequence, ack, outcome) in &step.1 {
                    if *outcome == SettleOutcome::Done {
                        held.remove(sequence);
                    }
                    let settled = pb::Settled {
                        sequence: *sequence,
                        ack: *ack,
                        outcome: outcome_pb(*outcome) as i32,
                    };
                    if !self
                        .context
                        .send(pb::consume_response::Response::Settled(settled))
                        .await
                    {
                        return;
                    }
                }
                let claimed = step.0.claimed.len();
                tracing::debug!(
                    consumer = %self.consumer,
                    claim,
                    claimed,
                    settled = step.1.len(),
                    held = held.len(),
                    maybe_applied = step.2,
                    first = ?step.0.claimed.first().map(|c| (c.sequence, c.deliveries)),
                    "group step"
                );
                remaining -= claimed as u64;
                let mut deliver = step.0.claimed;
                if step.2 {
                    // An earlier attempt of this step may have applied: what it claimed is
                    // pending under this consumer's name. Deliver it now rather than after the
                    // ack wait.
                    match self.context.node.stream().pending_for(
                        &self.context.namespace,
                        &topic,
                        &self.group,
                        &self.consumer,
                        MAX_IN_FLIGHT as usize,
                    ) {
                        Ok(mine) => {
                            for (sequence, deliveries) in mine {
                                let known = held.contains_key(&sequence)
                                    || deliver.iter().any(|c| c.sequence == sequence);
                                if !known {
                                    deliver.push(strata_stream::Claimed {
                                        sequence,
                                        deliveries,
                                    });
                                }
                            }
                        }
                        Err(error) => return self.context.fail(status::storage(error)).await,
                    }
                }
                for item in deliver {
                    let message = match self.context.node.stream().message(
                        &self.context.namespace,
                        &topic,
                        item.sequence,
                    ) {
                        Ok(Some(message)) => message,
                        Ok(None) => continue, // discarded by retention since
                        Err(error) => return self.context.fail(status::storage(error)).await,
                    };
                    if !self.subscription.auto_ack {
                        held.insert(item.sequence, Instant::now() + ack_wait);
                    }
                    let message = message_pb(&topic, item.sequence, message, item.deliveries);
                    if !self
                        .context
                        .send(pb::consume_response::Response::Message(message))
                        .await
                    {
                        return;
                    }
                }
                if claim > 0 && claimed == claim as usize {
                    look = true; // maybe more
                } else if claim > 0 {
                    // Nothing (more) to claim right now: a due redelivery seen by this node's
                    // clock waits a moment for the leader's.
                    quiet_until = Instant::now() + EMPTY_CLAIM_BACKOFF;
                    look = true;
                }
                continue;
            }
            let hold_expiry = held.values().min().copied();
            let beat_at = self.context.heartbeat_due();
            let wake_at = [timer, hold_expiry]
                .into_iter()
                .flatten()
                .fold(beat_at, Instant::min);
            tracing::trace!(consumer = %self.consumer, credit, held = held.len(), look, "group session waits");
            match self.context.wait(&topic, &mut inbound, Some(wake_at)).await {
                Wake::Client(Some(Ok(request))) => match settles_of(request) {
                    Ok(items) => settle.extend(items),
                    Err(status) => return self.context.fail(status).await,
                },
                Wake::Client(None) => inbound = None, // half-closed: keep delivering
                Wake::Client(Some(Err(_))) | Wake::ClientGone => return,
                Wake::Notice(relevant) => look |= relevant,
                Wake::Timer => look = true,
                Wake::Stop => return self.context.stopped().await,
            }
            // Whatever woke it: a session busy with other topics' notices still proves itself.
            if !self.context.beat_if_due().await {
                return;
            }
            // Take every ack already queued, so that one log entry carries them all.
            while let (Some(stream), true) =
                (inbound.as_mut(), settle.len() < MAX_SETTLE_PER_REQUEST)
            {
                match futures::FutureExt::now_or_never(stream.next()) {
                    Some(Some(Ok(request))) => match settles_of(request) {
                        Ok(items) => settle.extend(items),
                        Err(status) => return self.context.fail(status).await,
                    },
                    Some(None) => inbound = None,
                    Some(Some(Err(_))) => return,
                    None => break,
                }
            }
        }
    }

    /// Frees the credit of holds whose ack wait passed, but only for messages no longer
    /// pending under this consumer (acked, or redelivered to another member): a message this
    /// client still holds keeps counting against max_in_flight, so a slow client is not sent
    /// more than it can take.
    fn release_expired_holds(
        &self,
        held: &mut HashMap<u64, Instant>,
        now: Instant,
        ack_wait: Duration,
    ) -> Result<(), Status> {
        let expired: Vec<u64> = held
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            let holder = self
                .context
                .node
                .stream()
                .pending_holder(
                    &self.context.namespace,
                    &self.subscription.topic,
                    &self.group,
                    seq,
                )
                .map_err(status::storage)?;
            if holder.as_deref() == Some(self.consumer.as_str()) {
                held.insert(seq, now + ack_wait);
            } else {
                held.remove(&seq);
            }
        }
        Ok(())
    }

    /// Whether the local state shows something to claim, and when to look again for a
    /// redelivery.
    fn work_ready(
        &self,
        now: Instant,
        quiet_until: Instant,
    ) -> Result<(bool, Option<Instant>), Status> {
        let state = self.context.node.stream();
        let namespace = &self.context.namespace;
        let topic = &self.subscription.topic;
        let current = state.topic(namespace, topic).map_err(status::storage)?;
        let group = state
            .group(namespace, topic, &self.group)
            .map_err(status::storage)?;
        let (Some(current), Some(group)) = (current, group) else {
            return Ok((true, None));
        };
        if current.last_seq >= group.next_seq.max(current.first_seq) {
            return Ok((true, None));
        }
        let Some(deadline_ms) = state
            .group_next_deadline(namespace, topic, &self.group, &group)
            .map_err(status::storage)?
        else {
            return Ok((false, None));
        };
        let wall = now_ms();
        let due_in = Duration::from_millis(deadline_ms.saturating_sub(wall));
        let at = (now + due_in).max(quiet_until);
        Ok((at <= now, Some(at)))
    }

    /// One log entry: settle, then claim. Retries while the cluster has no leader (nothing was
    /// done), and after an unknown outcome (claims then lapse into redelivery; acks are
    /// idempotent).
    async fn step(
        &self,
        settle: Vec<Settle>,
        claim: u32,
    ) -> Result<(GroupStep, Vec<(u64, bool, SettleOutcome)>, bool), Status> {
        let kinds: Vec<(u64, bool)> = settle
            .iter()
            .map(|s| match s {
                Settle::Ack(seq) => (*seq, true),
                Settle::Nack { sequence, .. } => (*sequence, false),
            })
            .collect();
        let command = StreamCommand::Group {
            namespace: self.context.namespace.clone(),
            topic: self.subscription.topic.clone(),
            group: self.group.clone(),
            consumer: self.consumer.clone(),
            config: self.subscription.config.clone(),
            settle,
            claim,
            auto_ack: self.subscription.auto_ack,
        };
        let give_up = Instant::now() + STEP_RETRY_FOR;
        let mut backoff = Duration::from_millis(50);
        let mut maybe_applied = false;
        let (revision, response) = loop {
            match self.context.node.write_stream(command.clone()).await {
                Ok(done) => break done,
                Err(error @ WriteError::Unknown(_)) if Instant::now() < give_up => {
                    tracing::debug!(%error, "group step outcome unknown; retrying");
                    maybe_applied = true;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(
                    error @ (WriteError::Fatal(_)
                    | WriteError::Unexpected(_)
                    | WriteError::QuotaExceeded(_)),
                ) => return Err(status::write(error)),
                Err(error) if Instant::now() >= give_up => return Err(status::write(error)),
                Err(error) => {
                    tracing::debug!(%error, "group step failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        };
        let step = match response {
            StreamResponse::Group { step, .. } => step,
            StreamResponse::Failed(failure) => return Err(failure_status(&failure)),
            other => return Err(unexpected(other)),
        };
        // Deliveries come from this node's state: wait until it includes the step.
        self.context
            .node
            .wait_revision(revision)
            .await
            .map_err(status::read)?;
        let settled = step
            .settled
            .iter()
            .zip(kinds)
            .map(|((seq, outcome), (_, ack))| (*seq, ack, *outcome))
            .collect();
        Ok((step, settled, maybe_applied))
    }
}

fn settles_of(request: pb::ConsumeRequest) -> Result<Vec<Settle>, Status> {
    match request.request {
        Some(pb::consume_request::Request::Ack(ack)) => {
            check_sequences(&ack.sequences)?;
            Ok(ack.sequences.into_iter().map(Settle::Ack).collect())
        }
        Some(pb::consume_request::Request::Nack(nack)) => {
            check_sequences(&nack.sequences)?;
            if nack.delay_ms > MAX_ACK_WAIT_MS {
                return Err(validate::invalid(format!(
                    "nack.delay_ms {} is above {MAX_ACK_WAIT_MS}",
                    nack.delay_ms
                )));
            }
            Ok(nack
                .sequences
                .into_iter()
                .map(|sequence| Settle::Nack {
                    sequence,
                    delay_ms: nack.delay_ms,
                })
                .collect())
        }
        Some(pb::consume_request::Request::Subscribe(_)) => Err(validate::invalid(
            "`subscribe` comes once, first; open another Consume stream for another subscription"
                .into(),
        )),
        None => Err(validate::invalid("an empty ConsumeRequest".into())),
    }
}

fn check_sequences(sequences: &[u64]) -> Result<(), Status> {
    if sequences.is_empty() || sequences.len() > MAX_SETTLE_PER_REQUEST {
        return Err(validate::invalid(format!(
            "an ack or nack names 1 to {MAX_SETTLE_PER_REQUEST} sequences, not {}",
            sequences.len()
        )));
    }
    if sequences.contains(&0) {
        return Err(validate::invalid(
            "sequence 0 is never delivered (sequences start at 1)".into(),
        ));
    }
    Ok(())
}

fn outcome_pb(outcome: SettleOutcome) -> pb::SettleOutcome {
    match outcome {
        SettleOutcome::Done => pb::SettleOutcome::Done,
        SettleOutcome::AlreadySettled => pb::SettleOutcome::AlreadySettled,
        SettleOutcome::NotDelivered => pb::SettleOutcome::NotDelivered,
        SettleOutcome::NotPending => pb::SettleOutcome::NotPending,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for good in [
            "a",
            "orders",
            "orders.created",
            "a-b_c.D9",
            &"x".repeat(255),
        ] {
            assert!(topic_name("topic", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a.*",
            "a.>",
            "é",
            &"x".repeat(256),
        ] {
            assert!(topic_name("topic", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f = |s: &str| topic_filter(s).unwrap();
        assert!(filter_matches(&f(""), "anything.at.all"));
        assert!(filter_matches(&f("orders.*"), "orders.created"));
        assert!(!filter_matches(&f("orders.*"), "orders.created.eu"));
        assert!(!filter_matches(&f("orders.*"), "orders"));
        assert!(filter_matches(&f("orders.>"), "orders.created.eu"));
        assert!(!filter_matches(&f("orders.>"), "orders"));
        assert!(filter_matches(&f("*.created"), "orders.created"));
        assert!(filter_matches(&f("orders"), "orders"));
        assert!(!filter_matches(&f("orders"), "orders.created"));
        for bad in ["a.>.b", "a*", "a.b>", "..", "a..*"] {
            assert!(topic_filter(bad).is_err(), "{bad}");
        }
    }
}
