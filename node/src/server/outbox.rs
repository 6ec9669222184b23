//! The way out of every watch (key-value, registry, config, Micro's registry) and every
//! consume session: a bounded queue of responses between the pump that makes them and the
//! client that reads them, which cuts a client that stops reading. A client is cut when a
//! response finds the queue full for [`SLOW_READER_WAIT`], or when responses sit queued while
//! it reads none for that long ([`Outbox::cut_if_stalled`], which a pump that seldom sends
//! calls from its timer: a consumer holding its whole credit never fills its queue). The
//! client's next read is then RESOURCE_EXHAUSTED `slow_reader` (ahead of anything still
//! queued), so a reader that stops costs at most its queue, and only for that long.
//!
//! Queues are bounded in bytes too (each response weighed by its encoded length): a session
//! holds at most [`SESSION_BYTES`] (or one larger response alone), and every queue of the
//! node together at most [`NODE_BYTES`]. A response that does not fit waits like one that
//! finds the queue full, and the same cut follows. With `--max-streams`, that bounds what
//! sessions hold in all, however many stop reading.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::Status;

/// Responses queued per watcher.
pub const CAPACITY: usize = 64;
/// How long a response waits for room, or queued responses wait for a read, before the
/// client is cut.
pub const SLOW_READER_WAIT: Duration = Duration::from_secs(30);

/// Bytes one session may hold queued (a single larger response may be queued alone).
pub const SESSION_BYTES: usize = 8 << 20;
/// Bytes every session of this process may hold queued together.
pub const NODE_BYTES: usize = 256 << 20;
/// How soon a response that did not fit looks again: doubling from the first to the last, so
/// that many waiting sessions cost few wake-ups.
const ROOM_POLL_FIRST: Duration = Duration::from_millis(5);
const ROOM_POLL_LAST: Duration = Duration::from_millis(200);

/// Bytes queued in every session of the process (see [`NODE_BYTES`]).
static NODE_QUEUED: AtomicUsize = AtomicUsize::new(0);

/// Bytes queued in every session now (for metrics and tests).
pub fn node_queued_bytes() -> usize {
    NODE_QUEUED.load(Ordering::Relaxed)
}

/// What a cut client should do next, in the status that cuts it.
const WATCH_HINT: &str = "watch again from the last revision seen";

/// The pump's side.
pub struct Outbox<T> {
    sender: mpsc::Sender<Queued<T>>,
    cut: Option<oneshot::Sender<Status>>,
    wait: Duration,
    reads: Arc<ReadClock>,
    hint: &'static str,
    weigh: fn(&T) -> usize,
    bytes: Arc<Bytes>,
}

/// The client's side: the queued responses, or first of all the status that cut it.
pub struct Inbox<T> {
    receiver: mpsc::Receiver<Queued<T>>,
    cut: Option<oneshot::Receiver<Status>>,
    done: bool,
    reads: Arc<ReadClock>,
    bytes: Arc<Bytes>,
}

/// A queued response and its weight.
type Queued<T> = (Result<T, Status>, usize);

/// Bytes one session holds queued; counted in the node's total too.
#[derive(Default)]
struct Bytes(AtomicUsize);

impl Bytes {
    /// Takes `n` bytes if they fit the session's and the node's budgets (or the session holds
    /// nothing and the node has room for them).
    fn reserve(&self, n: usize) -> bool {
        let held = self.0.load(Ordering::Acquire);
        if held > 0 && held + n > SESSION_BYTES {
            return false;
        }
        let fits_node = NODE_QUEUED
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |total| {
                (total + n <= NODE_BYTES).then_some(total + n)
            })
            .is_ok();
        if fits_node {
            self.0.fetch_add(n, Ordering::AcqRel);
        }
        fits_node
    }

    fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::AcqRel);
        NODE_QUEUED.fetch_sub(n, Ordering::AcqRel);
    }
}

impl<T> Drop for Inbox<T> {
    fn drop(&mut self) {
        // What the client never read goes with it.
        self.receiver.close();
        while let Ok((_, n)) = self.receiver.try_recv() {
            self.bytes.release(n);
        }
    }
}

/// When the client last took a response (milliseconds since the queue was made).
struct ReadClock {
    origin: Instant,
    last_read_ms: AtomicU64,
}

impl ReadClock {
    fn since_last_read(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }
}

/// A watch's queue: [`CAPACITY`] responses, cut after [`SLOW_READER_WAIT`] without reading.
pub fn channel<T: prost::Message>() -> (Outbox<T>, Inbox<T>) {
    with_wait(CAPACITY, SLOW_READER_WAIT, WATCH_HINT, encoded_len::<T>)
}

/// A consume session's queue of `capacity` responses; `hint` tells a cut consumer what to do.
pub fn consume_channel<T: prost::Message>(
    capacity: usize,
    hint: &'static str,
) -> (Outbox<T>, Inbox<T>) {
    with_wait(capacity, SLOW_READER_WAIT, hint, encoded_len::<T>)
}

fn encoded_len<T: prost::Message>(item: &T) -> usize {
    item.encoded_len()
}

fn with_wait<T>(
    capacity: usize,
    wait: Duration,
    hint: &'static str,
    weigh: fn(&T) -> usize,
) -> (Outbox<T>, Inbox<T>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let (cut, cut_receiver) = oneshot::channel();
    let reads = Arc::new(ReadClock {
        origin: Instant::now(),
        last_read_ms: AtomicU64::new(0),
    });
    let bytes = Arc::new(Bytes::default());
    (
        Outbox {
            sender,
            cut: Some(cut),
            wait,
            reads: reads.clone(),
            hint,
            weigh,
            bytes: bytes.clone(),
        },
        Inbox {
            receiver,
            cut: Some(cut_receiver),
            done: false,
            reads,
            bytes,
        },
    )
}

/// The client went away, or was cut for reading too slowly: the pump stops.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

impl<T> Outbox<T> {
    fn weight(&self, item: &Result<T, Status>) -> usize {
        item.as_ref().map_or(0, self.weigh)
    }

    /// Queues one item; `Err(Gone)` when the pump should stop.
    pub async fn send(&mut self, item: Result<T, Status>) -> Result<(), Gone> {
        let n = self.weight(&item);
        let deadline = Instant::now() + self.wait;
        let mut pause = ROOM_POLL_FIRST;
        while !self.bytes.reserve(n) {
            if self.sender.is_closed() {
                return Err(Gone);
            }
            if Instant::now() >= deadline {
                self.cut("found no room");
                return Err(Gone);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(ROOM_POLL_LAST);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match self.sender.send_timeout((item, n), left).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.bytes.release(n);
                self.cut("found no room");
                Err(Gone)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                self.bytes.release(n);
                Err(Gone)
            }
        }
    }

    /// Queues one item if there is room now: `Ok(false)` when the queue is full (the item is
    /// dropped), `Err(Gone)` when the client went away.
    pub fn try_send(&mut self, item: Result<T, Status>) -> Result<bool, Gone> {
        let n = self.weight(&item);
        if !self.bytes.reserve(n) {
            return if self.sender.is_closed() {
                Err(Gone)
            } else {
                Ok(false)
            };
        }
        match self.sender.try_send((item, n)) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.bytes.release(n);
                Ok(false)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.bytes.release(n);
                Err(Gone)
            }
        }
    }

    /// Ends the stream with `status` after what is queued (waiting for room at most as long
    /// as a send would; a client that is not reading never sees it, and is gone by then).
    pub async fn finish(&self, status: Status) {
        let _ = self.sender.send_timeout((Err(status), 0), self.wait).await;
    }

    /// Room left in the queue.
    pub fn capacity(&self) -> usize {
        self.sender.capacity()
    }

    /// Cuts the client if responses have waited in its queue while it read none for the
    /// wait; `Err(Gone)` then (the pump stops).
    pub fn cut_if_stalled(&mut self) -> Result<(), Gone> {
        let queued = self.sender.max_capacity() - self.sender.capacity();
        if queued > 0 && self.reads.since_last_read() >= self.wait {
            self.cut("waited unread");
            return Err(Gone);
        }
        Ok(())
    }

    fn cut(&mut self, what: &str) {
        if let Some(cut) = self.cut.take() {
            tracing::info!("cutting a client that stopped reading");
            let _ = cut.send(crate::server::status::with_code(
                tonic::Code::ResourceExhausted,
                "slow_reader",
                format!(
                    "this stream stopped reading: its queued responses (at most {} and {} \
                     MiB) {what} for {:?}; {}",
                    self.sender.max_capacity(),
                    SESSION_BYTES >> 20,
                    self.wait,
                    self.hint
                ),
            ));
        }
    }

    /// A handle that only tells when the client has gone, for a pump's `select!` beside its
    /// sends.
    pub fn client_gone(&self) -> ClientGone<T> {
        ClientGone(self.sender.clone())
    }
}

/// See [`Outbox::client_gone`].
pub struct ClientGone<T>(mpsc::Sender<Queued<T>>);

impl<T> ClientGone<T> {
    pub async fn wait(&self) {
        self.0.closed().await
    }
}

impl<T> Stream for Inbox<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(cut) = self.cut.as_mut() {
            match Pin::new(cut).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Err(_)) => self.cut = None, // the pump ended without cutting
                Poll::Pending => {}
            }
        }
        match self.receiver.poll_recv(cx) {
            Poll::Ready(Some((item, n))) => {
                self.bytes.release(n);
                let now = self.reads.origin.elapsed().as_millis() as u64;
                self.reads.last_read_ms.store(now, Ordering::Relaxed);
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn unit(_: &u32) -> usize {
        1
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_cut_first_thing_and_the_pump_told_to_stop() {
        let (mut outbox, mut inbox) =
            with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT, unit);
        assert_eq!(outbox.send(Ok(1)).await, Ok(()));
        assert_eq!(outbox.send(Ok(2)).await, Ok(()));
        // Full: the third waits 30 s (paused time runs on), then the reader is cut.
        assert_eq!(outbox.send(Ok(3)).await, Err(Gone));
        let first = inbox.next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            first.metadata().get("x-strata-error").unwrap(),
            "slow_reader"
        );
        assert!(inbox.next().await.is_none(), "nothing after the cut");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_keeps_up_is_never_cut() {
        let (mut outbox, mut inbox) =
            with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT, unit);
        let pump = tokio::spawn(async move {
            for i in 0..100 {
                outbox.send(Ok(i)).await.unwrap();
            }
        });
        for i in 0..100 {
            assert_eq!(inbox.next().await.unwrap().unwrap(), i);
            tokio::time::sleep(Duration::from_secs(1)).await; // slower than the pump, within the wait
        }
        pump.await.unwrap();
        assert!(inbox.next().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_leaves_responses_unread_is_cut_though_the_queue_has_room() {
        let (mut outbox, mut inbox) = with_wait::<u32>(8, Duration::from_secs(30), "do this", unit);
        // Nothing queued: never stalled, however long.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(outbox.cut_if_stalled(), Ok(()));
        assert_eq!(outbox.send(Ok(1)).await, Ok(()));
        assert_eq!(inbox.next().await.unwrap().unwrap(), 1);
        assert_eq!(outbox.send(Ok(2)).await, Ok(()));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(outbox.cut_if_stalled(), Ok(()), "cut before the wait");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(outbox.cut_if_stalled(), Err(Gone));
        let first = inbox.next().await.unwrap().unwrap_err();
        assert_eq!(first.code(), tonic::Code::ResourceExhausted);
        assert!(first.message().ends_with("do this"), "{}", first.message());
    }

    #[tokio::test]
    async fn the_pump_sees_a_reader_that_went_away() {
        let (mut outbox, inbox) = with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT, unit);
        drop(inbox);
        assert_eq!(outbox.send(Ok(1)).await, Err(Gone));
        outbox.client_gone().wait().await;
    }

    fn size(item: &u32) -> usize {
        *item as usize
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_holds_at_most_its_bytes_and_a_larger_response_alone() {
        let (mut outbox, mut inbox) = with_wait::<u32>(64, Duration::from_secs(30), "x", size);
        // One response over the session's budget goes, alone.
        assert_eq!(outbox.send(Ok(SESSION_BYTES as u32 + 1)).await, Ok(()));
        assert_eq!(node_queued_bytes(), SESSION_BYTES + 1);
        assert_eq!(
            inbox.next().await.unwrap().unwrap(),
            SESSION_BYTES as u32 + 1
        );
        assert_eq!(node_queued_bytes(), 0, "read: released");
        // 6 MiB queued: 4 MiB more do not fit, wait the 30 s, and cut the reader.
        assert_eq!(outbox.send(Ok(6 << 20)).await, Ok(()));
        assert_eq!(outbox.try_send(Ok(4 << 20)), Ok(false));
        assert_eq!(outbox.send(Ok(4 << 20)).await, Err(Gone));
        let cut = inbox.next().await.unwrap().unwrap_err();
        assert_eq!(cut.metadata().get("x-strata-error").unwrap(), "slow_reader");
        drop(inbox);
        assert_eq!(
            node_queued_bytes(),
            0,
            "a dropped reader's queue is released"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_session_together_holds_at_most_the_nodes_bytes() {
        let sessions = NODE_BYTES / SESSION_BYTES;
        let mut held = Vec::new();
        for _ in 0..sessions {
            let (mut outbox, inbox) = with_wait::<u32>(64, Duration::from_secs(30), "x", size);
            assert_eq!(outbox.send(Ok(SESSION_BYTES as u32)).await, Ok(()));
            held.push((outbox, inbox));
        }
        assert_eq!(node_queued_bytes(), NODE_BYTES);
        let (mut late, _late_inbox) = with_wait::<u32>(64, Duration::from_secs(30), "x", size);
        assert_eq!(late.try_send(Ok(1)), Ok(false), "over the node's budget");
        // One session's reader goes: its bytes are released, and the late one fits.
        held.pop();
        assert_eq!(late.try_send(Ok(1)), Ok(true));
        assert_eq!(node_queued_bytes(), NODE_BYTES - SESSION_BYTES + 1);
    }
}
