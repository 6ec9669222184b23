//! The way out of every watch (key-value, registry, config, Micro's registry): a bounded queue
//! of responses between the pump that makes them and the client that reads them, which cuts a
//! client that stops reading. A response that finds the queue full waits at most
//! [`SLOW_READER_WAIT`]; past it the pump ends and the client's next read is
//! RESOURCE_EXHAUSTED `slow_reader` (ahead of anything still queued), so a watcher that stops
//! reading costs at most its queue ([`CAPACITY`] responses of at most about 1 MiB each) and
//! only for that long, never a pump and its history reads for ever.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// Responses queued per watcher.
pub const CAPACITY: usize = 64;
/// How long a response waits for room before its watcher is cut.
pub const SLOW_READER_WAIT: Duration = Duration::from_secs(30);

/// The pump's side.
pub struct Outbox<T> {
    sender: mpsc::Sender<Result<T, Status>>,
    cut: Option<oneshot::Sender<Status>>,
    wait: Duration,
}

/// The client's side: the queued responses, or first of all the status that cut it.
pub struct Inbox<T> {
    receiver: mpsc::Receiver<Result<T, Status>>,
    cut: Option<oneshot::Receiver<Status>>,
    done: bool,
}

/// A queue of [`CAPACITY`] that cuts its reader after [`SLOW_READER_WAIT`] without room.
pub fn channel<T>() -> (Outbox<T>, Inbox<T>) {
    with_wait(CAPACITY, SLOW_READER_WAIT)
}

fn with_wait<T>(capacity: usize, wait: Duration) -> (Outbox<T>, Inbox<T>) {
    let (sender, receiver) = mpsc::channel(capacity);
    let (cut, cut_receiver) = oneshot::channel();
    (
        Outbox {
            sender,
            cut: Some(cut),
            wait,
        },
        Inbox {
            receiver,
            cut: Some(cut_receiver),
            done: false,
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
                if let Some(cut) = self.cut.take() {
                    tracing::info!("cutting a watcher that stopped reading");
                    let _ = cut.send(crate::server::status::with_code(
                        tonic::Code::ResourceExhausted,
                        "slow_reader",
                        format!(
                            "this watch stopped reading: its {CAPACITY} queued responses found \
                             no room for {:?}; watch again from the last revision seen",
                            self.wait
                        ),
                    ));
                }
                Err(Gone)
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Gone),
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
        self.receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_stops_is_cut_first_thing_and_the_pump_told_to_stop() {
        let (mut outbox, mut inbox) = with_wait::<u32>(2, Duration::from_secs(30));
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
        let (mut outbox, mut inbox) = with_wait::<u32>(2, Duration::from_secs(30));
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

    #[tokio::test]
    async fn the_pump_sees_a_reader_that_went_away() {
        let (mut outbox, inbox) = with_wait::<u32>(2, Duration::from_secs(30));
        drop(inbox);
        assert_eq!(outbox.send(Ok(1)).await, Err(Gone));
        outbox.client_gone().wait().await;
    }
}
