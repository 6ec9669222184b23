//! Event streams: publish, replay, and consume through durable groups.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strata_client::Error> {
//! use futures::StreamExt;
//! use strata_client::stream::{Publish, SubscribeOptions};
//! let client = strata_client::Client::connect("127.0.0.1:7420").await?;
//! let orders = client.topic("orders.created");
//! let published = orders.publish(Publish::new(b"{\"id\":1}".to_vec())).await?;
//! let mut subscription = orders.subscribe(SubscribeOptions::group("billing").earliest()).await?;
//! while let Some(delivery) = subscription.next().await {
//!     let delivery = delivery?;
//!     println!("{} {:?}", delivery.message.sequence, delivery.message.payload);
//!     delivery.ack().await?; // durable once this returns
//! #   break;
//! }
//! # let _ = published; Ok(()) }
//! ```
//!
//! Retries: every publish carries a message id (one is generated when the caller gives none),
//! so the SDK retries publishes on any unavailability and the server's dedup window turns a
//! repeat into the original's sequence (`duplicate = true`). A subscription is served by one
//! node at a time; the server proves an idle stream alive with heartbeats, and when the stream
//! breaks or falls silent the subscription opens it again on the next endpoint (a group resumes
//! from its acked floor). Delivery is at least once: a message whose ack was lost is delivered
//! again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

use crate::retry::{Endpoints, Safety};
use crate::{Error, StreamGrpc};

pub use strata_proto::stream::v1 as proto;

/// One message to publish.
#[derive(Clone, Debug)]
pub struct Publish {
    message: proto::OutgoingMessage,
}

impl Publish {
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            message: proto::OutgoingMessage {
                payload: payload.into(),
                metadata: HashMap::new(),
                message_id: String::new(),
            },
        }
    }

    /// The id the server deduplicates on (within the topic's window, 2 minutes by default).
    /// Without one, the SDK generates a random id, so its own retries never duplicate.
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message.message_id = id.into();
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.message.metadata.insert(key.into(), value.into());
        self
    }

    fn with_id(mut self) -> proto::OutgoingMessage {
        if self.message.message_id.is_empty() {
            self.message.message_id = random_id();
        }
        self.message
    }
}

/// 128 random bits in hex, from the standard library's per-process random hash keys.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let half = |salt: u64| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(count);
        hasher.write_u64(salt);
        hasher.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

/// What a publish returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub sequence: u64,
    pub timestamp_ms: u64,
    /// The message id was seen within the dedup window: this is the original's sequence.
    pub duplicate: bool,
    pub revision: u64,
}

impl From<proto::PublishResponse> for Published {
    fn from(r: proto::PublishResponse) -> Self {
        Self {
            sequence: r.sequence,
            timestamp_ms: r.timestamp_ms,
            duplicate: r.duplicate,
            revision: r.revision,
        }
    }
}

/// Where a read, a new group or an ephemeral subscription starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    Sequence(u64),
    TimeMs(u64),
}

impl Start {
    fn proto(self) -> proto::StartPosition {
        use proto::start_position::Position;
        proto::StartPosition {
            position: Some(match self {
                Start::Earliest => Position::Earliest(true),
                Start::Latest => Position::Latest(true),
                Start::Sequence(seq) => Position::Sequence(seq),
                Start::TimeMs(at) => Position::TimeMs(at),
            }),
        }
    }
}

/// How to consume: through a durable group, or ephemerally (every message, auto-ack).
#[derive(Clone, Debug)]
pub struct SubscribeOptions {
    subscribe: proto::Subscribe,
    resubscribe_for: Duration,
}

impl SubscribeOptions {
    /// A member of the durable group `name`, acking manually.
    pub fn group(name: impl Into<String>) -> Self {
        Self {
            subscribe: proto::Subscribe {
                group: name.into(),
                ..Default::default()
            },
            resubscribe_for: DEFAULT_RESUBSCRIBE_FOR,
        }
    }

    /// Every message from the start position (default: new ones only), no durable state.
    pub fn ephemeral() -> Self {
        Self {
            subscribe: proto::Subscribe {
                auto_ack: true,
                ..Default::default()
            },
            resubscribe_for: DEFAULT_RESUBSCRIBE_FOR,
        }
    }

    /// How often the server proves an idle stream alive (default 5 s, 1 s to 60 s). Hearing
    /// nothing for three intervals, the subscription takes its stream as broken and opens it
    /// again on another endpoint.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.subscribe.heartbeat_ms = every.as_millis().min(u128::from(u32::MAX)) as u32;
        self
    }

    /// How long a broken subscription keeps trying to open its stream again (default 60 s)
    /// before it ends with the last error; zero: never, the first break ends it.
    pub fn resubscribe_for(mut self, limit: Duration) -> Self {
        self.resubscribe_for = limit;
        self
    }

    pub fn start(mut self, start: Start) -> Self {
        self.subscribe.start = Some(start.proto());
        self
    }

    pub fn earliest(self) -> Self {
        self.start(Start::Earliest)
    }

    /// Each message counts as acked once handed over (at most once after hand-off).
    pub fn auto_ack(mut self) -> Self {
        self.subscribe.auto_ack = true;
        self
    }

    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.subscribe.ack_wait_ms = wait.as_millis() as u64;
        self
    }

    /// Deliveries after which an unacked message goes to the dead-letter topic (0: unlimited).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.subscribe.max_deliveries = n;
        self
    }

    pub fn max_in_flight(mut self, n: u32) -> Self {
        self.subscribe.max_in_flight = n;
        self
    }

    /// Deliver at most `n` messages, then end the subscription once they are settled (a
    /// "fetch"); the server claims no more than that for this subscription.
    pub fn limit(mut self, n: u64) -> Self {
        self.subscribe.limit = n;
        self
    }

    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.subscribe.dead_letter_topic = topic.into();
        self
    }
}

/// A handle on one topic.
#[derive(Clone)]
pub struct Topic {
    endpoints: Arc<Endpoints<StreamGrpc>>,
    name: String,
}

impl Topic {
    pub(crate) fn new(endpoints: Arc<Endpoints<StreamGrpc>>, name: &str) -> Self {
        Self {
            endpoints,
            name: name.to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes one message; returns once it is committed and durable on a majority.
    pub async fn publish(&self, message: Publish) -> Result<Published, Error> {
        let message = message.with_id();
        let request = proto::PublishRequest {
            topic: self.name.clone(),
            payload: message.payload,
            metadata: message.metadata,
            message_id: message.message_id,
        };
        // Safe to retry on any unavailability: the id makes a repeat a no-op.
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.publish(request).await }
            })
            .await?;
        Ok(response.into())
    }

    /// Publishes messages in one replicated entry, in order; one result each.
    pub async fn publish_batch(
        &self,
        messages: impl IntoIterator<Item = Publish>,
    ) -> Result<Vec<Published>, Error> {
        let request = proto::PublishBatchRequest {
            topic: self.name.clone(),
            messages: messages.into_iter().map(Publish::with_id).collect(),
        };
        let response = self
            .endpoints
            .call(Safety::Idempotent, |mut client| {
                let request = request.clone();
                async move { client.publish_batch(request).await }
            })
            .await?;
        Ok(response.results.into_iter().map(Published::from).collect())
    }

    /// Retained messages from `from` on (at most `limit`, up to 1,000), without a group.
    pub async fn read(&self, from: Start, limit: u32) -> Result<proto::ReadResponse, Error> {
        use proto::read_request::From;
        let from = match from {
            Start::Earliest => None,
            Start::Sequence(seq) => Some(From::Sequence(seq)),
            Start::TimeMs(at) => Some(From::TimeMs(at)),
            Start::Latest => {
                return Err(Error::InvalidArgument(
                    "a read starts at the earliest message, a sequence or a time".into(),
                ))
            }
        };
        let request = proto::ReadRequest {
            topic: self.name.clone(),
            from,
            limit,
            linearizable: false,
        };
        self.endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.read(request).await }
            })
            .await
    }

    /// Creates the topic with these limits (ALREADY_EXISTS if it exists).
    pub async fn create(&self, retention: proto::Retention) -> Result<u64, Error> {
        let request = proto::CreateTopicRequest {
            topic: self.name.clone(),
            retention: Some(retention),
        };
        let response = self
            .endpoints
            .call(Safety::Write, |mut client| {
                let request = request.clone();
                async move { client.create_topic(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Changes the topic's limits (NOT_FOUND if it does not exist).
    pub async fn update(&self, retention: proto::Retention) -> Result<u64, Error> {
        let request = proto::UpdateTopicRequest {
            topic: self.name.clone(),
            retention: Some(retention),
        };
        let response = self
            .endpoints
            .call(Safety::Write, |mut client| {
                let request = request.clone();
                async move { client.update_topic(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Deletes the topic with its messages and groups.
    pub async fn delete(&self) -> Result<u64, Error> {
        let request = proto::DeleteTopicRequest {
            topic: self.name.clone(),
        };
        let response = self
            .endpoints
            .call(Safety::Write, |mut client| {
                let request = request.clone();
                async move { client.delete_topic(request).await }
            })
            .await?;
        Ok(response.revision)
    }

    /// Sequences, sizes, limits, and every group's floor, pending count and lag.
    pub async fn info(&self) -> Result<proto::TopicInfoResponse, Error> {
        let request = proto::TopicInfoRequest {
            topic: self.name.clone(),
        };
        self.endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.topic_info(request).await }
            })
            .await
    }

    /// Opens a consume stream on the preferred endpoint. When the stream breaks (its node
    /// fails, is removed or cut off, or falls silent past three heartbeat intervals) the
    /// subscription opens it again on the next endpoint, for up to
    /// [`SubscribeOptions::resubscribe_for`]: a group resumes from its acked floor, an
    /// ephemeral subscription after the last sequence it delivered. Acks of messages from the
    /// broken stream are sent on the new one (the group settles by sequence); those awaiting
    /// confirmation when it broke fail with `OutcomeUnknown` (the message may come again).
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<Subscription, Error> {
        let mut subscribe = options.subscribe;
        subscribe.topic = self.name.clone();
        let heartbeat = match subscribe.heartbeat_ms {
            0 => DEFAULT_HEARTBEAT,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let (requests, outgoing) = mpsc::channel(64);
        let (deliveries, received) = mpsc::unbounded_channel();
        let waiters: Waiters = Arc::default();
        let backlog = Arc::new(AtomicUsize::new(0));
        let resubscribed = Arc::new(AtomicU64::new(0));
        let mut session = Session {
            endpoints: self.endpoints.clone(),
            remaining: (subscribe.limit > 0).then_some(subscribe.limit),
            subscribe,
            silence: heartbeat * SILENT_HEARTBEATS,
            resubscribe_for: options.resubscribe_for,
            outgoing: Some(outgoing),
            deliveries,
            waiters: waiters.clone(),
            backlog: backlog.clone(),
            resubscribed: resubscribed.clone(),
            last_sequence: None,
        };
        let first = session
            .open()
            .await
            .map_err(|(_, status)| Error::from(status))?;
        tokio::spawn(session.run(first));
        Ok(Subscription {
            received,
            backlog,
            resubscribed,
            acker: Acker {
                topic: self.name.clone(),
                requests,
                waiters,
                deadline: self
                    .endpoints
                    .request_timeout()
                    .unwrap_or(DEFAULT_SETTLE_TIMEOUT),
            },
        })
    }
}

/// Every page of ListTopics.
pub(crate) async fn list_topics(
    endpoints: &Endpoints<StreamGrpc>,
    filter: &str,
) -> Result<Vec<proto::TopicSummary>, Error> {
    let mut topics = Vec::new();
    let mut start_after = String::new();
    loop {
        let request = proto::ListTopicsRequest {
            filter: filter.to_string(),
            start_after: start_after.clone(),
            limit: 1_000,
        };
        let page = endpoints
            .call(Safety::Read, |mut client| {
                let request = request.clone();
                async move { client.list_topics(request).await }
            })
            .await?;
        topics.extend(page.topics);
        if page.next_start_after.is_empty() {
            return Ok(topics);
        }
        start_after = page.next_start_after;
    }
}

type Waiters = Arc<Mutex<HashMap<(u64, bool), Vec<oneshot::Sender<proto::SettleOutcome>>>>>;

/// Messages received but not yet taken by the caller, past which the subscription fails
/// ("consumer too slow") rather than buffer without bound. The server sends at most
/// max_in_flight messages the caller has not settled, plus redeliveries once per ack wait.
const MAX_BACKLOG: usize = 100_000;

/// How long an ack or nack waits for the server's confirmation when the client has no
/// `request_timeout`: past it, the settle's outcome is unknown (a leader that cannot commit,
/// say) and the caller hears so instead of waiting for ever.
pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The heartbeat interval the server uses when the subscription names none.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// Heartbeat intervals of silence after which a consume stream is taken as broken.
const SILENT_HEARTBEATS: u32 = 3;
/// How long a broken subscription keeps trying to open its stream again, by default.
pub const DEFAULT_RESUBSCRIBE_FOR: Duration = Duration::from_secs(60);

/// One open consume stream.
struct Attempt {
    /// The endpoint it was opened on.
    index: usize,
    /// Its request side: `None` once the caller can send no more acks (half-closed).
    requests: Option<mpsc::Sender<proto::ConsumeRequest>>,
    inbound: tonic::Streaming<proto::ConsumeResponse>,
}

/// How an attempt ended.
enum Ended {
    /// The server ended the stream cleanly (a fetch that is done), or the caller is gone.
    Done,
    /// The node or the connection failed: open the stream again elsewhere.
    Broken(Error),
    /// The request failed: tell the caller and stop.
    Final(Error),
}

/// A subscription's life across consume streams: reads the current stream (messages to the
/// caller, ack results to their waiters), forwards the caller's acks to it, watches it for
/// silence and opens another when it breaks. Runs apart from the caller and never waits for
/// it, so an `ack().await` inside the consuming loop completes however many messages are
/// queued ahead of its confirmation.
struct Session {
    endpoints: Arc<Endpoints<StreamGrpc>>,
    subscribe: proto::Subscribe,
    /// Deliveries left of a fetch (`limit`).
    remaining: Option<u64>,
    /// No message, confirmation or heartbeat for this long: the stream is broken.
    silence: Duration,
    resubscribe_for: Duration,
    /// The caller's acks and nacks.
    outgoing: Option<mpsc::Receiver<proto::ConsumeRequest>>,
    deliveries: mpsc::UnboundedSender<Result<proto::Message, Error>>,
    waiters: Waiters,
    backlog: Arc<AtomicUsize>,
    resubscribed: Arc<AtomicU64>,
    /// The last sequence delivered: where an ephemeral subscription resumes.
    last_sequence: Option<u64>,
}

impl Session {
    /// Opens a consume stream on the preferred endpoint; on failure, the endpoint and why.
    async fn open(&mut self) -> Result<Attempt, (usize, tonic::Status)> {
        let (index, mut client) = self.endpoints.current_indexed();
        let mut subscribe = self.subscribe.clone();
        if let Some(remaining) = self.remaining {
            subscribe.limit = remaining;
        }
        if let (true, Some(last)) = (subscribe.group.is_empty(), self.last_sequence) {
            subscribe.start = Some(Start::Sequence(last + 1).proto());
        }
        let (requests, outgoing) = mpsc::channel(64);
        requests
            .send(proto::ConsumeRequest {
                request: Some(proto::consume_request::Request::Subscribe(subscribe)),
            })
            .await
            .expect("the receiver is held here");
        // The server answers once the group exists; a node that cannot reach a leader may take
        // long to say so.
        let opened =
            tokio::time::timeout(self.silence, client.consume(ReceiverStream::new(outgoing))).await;
        match opened {
            Ok(Ok(response)) => Ok(Attempt {
                index,
                requests: self.outgoing.is_some().then_some(requests),
                inbound: response.into_inner(),
            }),
            Ok(Err(status)) => Err((index, status)),
            Err(_) => Err((
                index,
                tonic::Status::unavailable(format!(
                    "{} did not open the consume stream within {:?}",
                    self.endpoints.name(index),
                    self.silence
                )),
            )),
        }
    }

    async fn run(mut self, mut attempt: Attempt) {
        loop {
            let error = match self.pump(&mut attempt).await {
                Ended::Done => return,
                Ended::Final(error) => {
                    let _ = self.deliveries.send(Err(error));
                    return;
                }
                Ended::Broken(error) => error,
            };
            // Settles that were waiting on the broken stream: their outcome is unknown.
            self.waiters.lock().expect("waiters lock").clear();
            if self.resubscribe_for.is_zero() {
                let _ = self.deliveries.send(Err(error));
                return;
            }
            self.endpoints.move_on_from(attempt.index);
            match self.reopen(error).await {
                Ok(next) => {
                    self.resubscribed.fetch_add(1, Ordering::Relaxed);
                    attempt = next;
                }
                Err(error) => {
                    let _ = self.deliveries.send(Err(error));
                    return;
                }
            }
        }
    }

    /// Opens the stream again, moving through the endpoints with backoff, for up to
    /// `resubscribe_for`.
    async fn reopen(&mut self, mut last: Error) -> Result<Attempt, Error> {
        let give_up = tokio::time::Instant::now() + self.resubscribe_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.deliveries.is_closed() {
                return Err(last); // nobody is listening any more
            }
            match self.open().await {
                Ok(attempt) => return Ok(attempt),
                Err((index, status)) if crate::retry::resumable(&status) => {
                    self.endpoints.move_on_from(index);
                    last = Error::from(status);
                }
                Err((_, status)) => return Err(Error::from(status)),
            }
            if tokio::time::Instant::now() + backoff >= give_up {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Serves one stream until it ends.
    async fn pump(&mut self, attempt: &mut Attempt) -> Ended {
        loop {
            let request = async {
                match self.outgoing.as_mut() {
                    Some(outgoing) => outgoing.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                item = tokio::time::timeout(self.silence, attempt.inbound.next()) => {
                    let item = match item {
                        Ok(item) => item,
                        Err(_) => {
                            return Ended::Broken(Error::Unavailable {
                                message: format!(
                                    "{} sent nothing, not even a heartbeat, for {:?}: the \
                                     consume stream is taken as broken",
                                    self.endpoints.name(attempt.index),
                                    self.silence
                                ),
                                leader: None,
                            })
                        }
                    };
                    match item.map(|r| r.map(|r| r.response)) {
                        None => return Ended::Done,
                        Some(Err(status)) if crate::retry::resumable(&status) => {
                            return Ended::Broken(Error::from(status))
                        }
                        Some(Err(status)) => return Ended::Final(Error::from(status)),
                        Some(Ok(Some(proto::consume_response::Response::Message(message)))) => {
                            if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BACKLOG {
                                return Ended::Final(Error::Unavailable {
                                    message: format!(
                                        "the consumer fell {MAX_BACKLOG} messages behind its \
                                         subscription; subscribe again (the group resumes from \
                                         its acked floor)"
                                    ),
                                    leader: None,
                                });
                            }
                            self.last_sequence = Some(message.sequence);
                            if let Some(remaining) = self.remaining.as_mut() {
                                *remaining = remaining.saturating_sub(1);
                            }
                            if self.deliveries.send(Ok(message)).is_err() {
                                return Ended::Done;
                            }
                        }
                        Some(Ok(Some(proto::consume_response::Response::Settled(settled)))) => {
                            let outcome = proto::SettleOutcome::try_from(settled.outcome)
                                .unwrap_or(proto::SettleOutcome::Unspecified);
                            let mut waiters = self.waiters.lock().expect("waiters lock");
                            if let Some(list) = waiters.remove(&(settled.sequence, settled.ack)) {
                                for waiter in list {
                                    let _ = waiter.send(outcome);
                                }
                            }
                        }
                        Some(Ok(Some(proto::consume_response::Response::Heartbeat(_)) | None)) => {}
                    }
                }
                request = request => match request {
                    Some(request) => {
                        if let Some(requests) = attempt.requests.as_ref() {
                            // A stream that is gone says so on its inbound side.
                            let _ = requests.send(request).await;
                        }
                    }
                    None => {
                        // The caller can send no more: half-close, keep receiving.
                        self.outgoing = None;
                        attempt.requests = None;
                    }
                },
                _ = self.deliveries.closed() => return Ended::Done,
            }
        }
    }
}

/// A consume stream: yields deliveries; ends with an error if the server ends it.
pub struct Subscription {
    received: mpsc::UnboundedReceiver<Result<proto::Message, Error>>,
    backlog: Arc<AtomicUsize>,
    resubscribed: Arc<AtomicU64>,
    acker: Acker,
}

impl Subscription {
    /// How often the stream broke and was opened again.
    pub fn resubscribed(&self) -> u64 {
        self.resubscribed.load(Ordering::Relaxed)
    }

    /// A handle that acks or nacks by sequence, from any task.
    pub fn settler(&self) -> Settler {
        Settler {
            acker: self.acker.clone(),
        }
    }
}

/// Acks and nacks by sequence on a subscription's stream.
#[derive(Clone)]
pub struct Settler {
    acker: Acker,
}

impl Settler {
    /// Acks `sequence`; returns once committed. Fails if the group never delivered it.
    pub async fn ack(&self, sequence: u64) -> Result<(), Error> {
        self.acker.settle(sequence, true, Duration::ZERO).await
    }

    /// Asks for redelivery of `sequence` no sooner than `delay`; returns once committed.
    pub async fn nack(&self, sequence: u64, delay: Duration) -> Result<(), Error> {
        self.acker.settle(sequence, false, delay).await
    }
}

impl Stream for Subscription {
    type Item = Result<Delivery, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.received.poll_recv(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        polled.map(|item| {
            item.map(|result| {
                result.map(|message| Delivery {
                    message,
                    acker: self.acker.clone(),
                })
            })
        })
    }
}

#[derive(Clone)]
struct Acker {
    topic: String,
    requests: mpsc::Sender<proto::ConsumeRequest>,
    waiters: Waiters,
    /// How long a settle waits to be sent and confirmed.
    deadline: Duration,
}

impl Acker {
    async fn settle(&self, sequence: u64, ack: bool, delay: Duration) -> Result<(), Error> {
        let (tell, told) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .entry((sequence, ack))
            .or_default()
            .push(tell);
        let what = if ack { "ack" } else { "nack" };
        let confirmed = tokio::time::timeout(self.deadline, async {
            self.send(sequence, ack, delay).await?;
            told.await.map_err(|_| Error::OutcomeUnknown {
                message: format!(
                    "the subscription to {} ended before the server confirmed the {what} of \
                     {sequence}",
                    self.topic
                ),
            })
        })
        .await;
        let outcome = match confirmed {
            Ok(outcome) => outcome?,
            Err(_) => {
                // This waiter's receiver is gone with the timed-out future: forget it.
                let mut waiters = self.waiters.lock().expect("waiters lock");
                if let Some(list) = waiters.get_mut(&(sequence, ack)) {
                    list.retain(|waiter| !waiter.is_closed());
                    if list.is_empty() {
                        waiters.remove(&(sequence, ack));
                    }
                }
                return Err(Error::Timeout {
                    message: format!(
                        "the server did not confirm the {what} of {sequence} of {} within {:?}; \
                         it may still apply (an unconfirmed ack means the message may come \
                         again)",
                        self.topic, self.deadline
                    ),
                });
            }
        };
        match outcome {
            proto::SettleOutcome::Done | proto::SettleOutcome::AlreadySettled => Ok(()),
            proto::SettleOutcome::NotDelivered => Err(Error::InvalidArgument(format!(
                "sequence {sequence} of {} was never delivered to this group",
                self.topic
            ))),
            proto::SettleOutcome::NotPending => Err(Error::InvalidArgument(format!(
                "sequence {sequence} of {} is not pending (already acked, dead-lettered or discarded)",
                self.topic
            ))),
            proto::SettleOutcome::Unspecified => Err(Error::Status(tonic::Status::internal(
                "the server answered an ack with an unknown outcome",
            ))),
        }
    }

    async fn send(&self, sequence: u64, ack: bool, delay: Duration) -> Result<(), Error> {
        let request = if ack {
            proto::consume_request::Request::Ack(proto::Ack {
                sequences: vec![sequence],
            })
        } else {
            proto::consume_request::Request::Nack(proto::Nack {
                sequences: vec![sequence],
                delay_ms: delay.as_millis() as u64,
            })
        };
        self.requests
            .send(proto::ConsumeRequest {
                request: Some(request),
            })
            .await
            .map_err(|_| Error::Unavailable {
                message: "the subscription has ended; subscribe again (the group resumes from its acked floor)".into(),
                leader: None,
            })
    }
}

/// One delivered message and the means to settle it.
pub struct Delivery {
    pub message: proto::Message,
    acker: Acker,
}

impl Delivery {
    /// Acks the message; returns once the ack is committed (it will not be redelivered).
    pub async fn ack(&self) -> Result<(), Error> {
        self.acker
            .settle(self.message.sequence, true, Duration::ZERO)
            .await
    }

    /// Sends the ack without waiting for it to commit (acks in flight together share one log
    /// entry). If it is lost, the message is delivered again after the ack wait.
    pub async fn ack_nowait(&self) -> Result<(), Error> {
        self.acker
            .send(self.message.sequence, true, Duration::ZERO)
            .await
    }

    /// Asks for redelivery no sooner than `delay`; returns once committed.
    pub async fn nack(&self, delay: Duration) -> Result<(), Error> {
        self.acker.settle(self.message.sequence, false, delay).await
    }
}
