//! The way out of every watch (key-value, registry, config, Micro's registry) and every
//! consume session: a bounded queue of responses between the pump that makes them and the
//! client that reads them, which cuts a client that stops reading. A client is cut when a
//! response finds the queue full for [`SLOW_READER_WAIT`], or when responses sit queued while
//! it reads none for that long ([`Outbox::cut_if_stalled`], which a pump that seldom sends
//! calls from its timer: a consumer holding its whole credit never fills its queue). The
//! client's next read is then RESOURCE_EXHAUSTED `slow_reader` (ahead of anything still
//! queued), so a reader that stops costs at most its queue, and only for that long.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// What a cut client should do next, in the status that cuts it.
const WATCH_HINT: &str = "watch again from the last revision seen";

/// The pump's side.
pub struct Outbox<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    cut: Option<oneshot::Sender<Status>>,
    wait: Duration,
    reads: Arc<ReadClock>,
    hint: &'static str,
}

/// The client's side: the queued responses, or first of all the status that cut it.
pub struct Inbox<T> {
    receiver: mpsc::Receiver<Result<T, Status>>,
    cut: Option<oneshot::Receiver<Status>>,
    done: bool,
    reads: Arc<ReadClock>,
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
pub fn channel<T>() -> (Outbox<T>, Inbox<T>) {
    with_wait(CAPACITY, SLOW_READER_WAIT, WATCH_HINT)
}

/// A consume session's queue of `capacity` responses; `hint` tells a cut consumer what to do.
pub fn consume_channel<T>(capacity: usize, hint: &'static str) -> (Outbox<T>, Inbox<T>) {
    with_wait(capacity, SLOW_READER_WAIT, hint)
}

fn with_wait<T>(capacity: usize, wait: Duration, hint: &'static str) -> (Outbox<T>, Inbox<T>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let (cut, cut_receiver) = oneshot::channel();
    let reads = Arc::new(ReadClock {
        origin: Instant::now(),
        last_read_ms: AtomicU64::new(0),
    });
    (
        Outbox {
            sender,
            cut: Some(cut),
            wait,
            reads: reads.clone(),
            hint,
        },
        Inbox {
            receiver,
            cut: Some(cut_receiver),
            done: false,
            reads,
        },
    )
}

/// The client went away, or was cut for reading too slowly: the pump stops.
#[derive(Debug, PartialEq, Eq)]
pub struct Gone;

impl<T> Outbox<T> {
    /// Queues one item; `Err(Gone)` when the pump should stop.
    pub async fn send(&mut self, item: Result<T, Status>) -> Result<(), Gone> {
        match self.sender.send_timeout(item, self.wait).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                self.cut("found no room");
                Err(Gone)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Gone),
        }
    }

    /// Queues one item if there is room now: `Ok(false)` when the queue is full (the item is
    /// dropped), `Err(Gone)` when the client went away.
    pub fn try_send(&mut self, item: Result<T, Status>) -> Result<bool, Gone> {
        match self.sender.try_send(item) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Gone),
        }
    }

    /// Ends the stream with `status` after what is queued (waiting for room at most as long
    /// as a send would; a client that is not reading never sees it, and is gone by then).
    pub async fn finish(&self, status: Status) {
        let _ = self.sender.send_timeout(Err(status), self.wait).await;
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
                    "this stream stopped reading: its queued responses (at most {}) {what} \
                     for {:?}; {}",
                    self.sender.max_capacity(),
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
pub struct ClientGone<T>(mpsc::Sender<Result<T, Status>>);

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
        let polled = self.receiver.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            let now = self.reads.origin.elapsed().as_millis() as u64;
            self.reads.last_read_ms.store(now, Ordering::Relaxed);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_cut_first_thing_and_the_pump_told_to_stop() {
        let (mut outbox, mut inbox) = with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT);
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
        let (mut outbox, mut inbox) = with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT);
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
        let (mut outbox, mut inbox) = with_wait::<u32>(8, Duration::from_secs(30), "do this");
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
        let (mut outbox, inbox) = with_wait::<u32>(2, Duration::from_secs(30), WATCH_HINT);
        drop(inbox);
        assert_eq!(outbox.send(Ok(1)).await, Err(Gone));
        outbox.client_gone().wait().await;
    }
}
