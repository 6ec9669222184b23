//! One mechanism for every watch (key-value, registry, config): a task reads the stream, and
//! when it breaks (its node failed or was cut off, the connection dropped) or falls silent
//! (nothing, not even a progress message, for three progress intervals) it opens the watch
//! again on the next endpoint from the revision after the last one seen, so the caller sees
//! every revision once and in order, as etcd's watchers do. A watch whose position is not
//! known yet (opened "from now", broken before its first message; or in the middle of a
//! registry snapshot) is not resumed: the caller gets the error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::Status;

use crate::retry::{Endpoints, Safety};
use crate::Error;

/// How long a broken watch keeps trying to open again.
pub const RESUME_FOR: Duration = Duration::from_secs(60);
/// The progress interval the SDK asks for where the caller names none.
pub const PROGRESS: Duration = Duration::from_secs(5);
/// Responses read ahead of the caller.
const BUFFER: usize = 256;

/// A watch request that can be moved to a revision.
pub(crate) trait Request: Clone + Send + Sync + 'static {
    /// Resumes after `revision`: deliver from `revision + 1`, no initial snapshot.
    fn resume_after(&mut self, revision: u64);
    /// The progress interval asked for (0: the server's default, 10 s).
    fn progress_ms(&self) -> u32;
}

/// A watch response.
pub(crate) trait Response: Send + 'static {
    /// The revision up to which this response says everything was seen, if it says so.
    fn seen_up_to(&self) -> Option<u64>;
    /// More of this response's revision follows in the next one (a revision too large for
    /// one message): the session joins them and delivers the revision whole.
    fn fragment(&self) -> bool {
        false
    }
    /// Appends the next fragment of the same revision.
    fn join(&mut self, _next: Self)
    where
        Self: Sized,
    {
    }
}

/// Implements [`Request`] and [`Response`] for a watch whose every response, change or
/// progress, says everything up to its `revision` was seen (key-value, config).
macro_rules! revision_watch {
    ($request:ty, $response:ty) => {
        impl $crate::watch::Request for $request {
            fn resume_after(&mut self, revision: u64) {
                self.start_revision = revision + 1;
            }

            fn progress_ms(&self) -> u32 {
                self.progress_interval_ms
            }
        }

        impl $crate::watch::Response for $response {
            fn seen_up_to(&self) -> Option<u64> {
                Some(self.revision)
            }
        }
    };
}
pub(crate) use revision_watch;

type Opened<R> = Result<tonic::Response<tonic::Streaming<R>>, Status>;

/// The caller's side: responses in order, or the error that ended the watch.
pub(crate) struct Resumable<R> {
    receiver: mpsc::Receiver<Result<R, Error>>,
    task: tokio::task::JoinHandle<()>,
}

impl<R> Drop for Resumable<R> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<R> Stream for Resumable<R> {
    type Item = Result<R, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.receiver.poll_recv(cx)
    }
}

/// Opens a watch (retried like a read where the server did nothing) and keeps it going.
pub(crate) async fn open<C, Req, R, F, Fut>(
    endpoints: Arc<Endpoints<C>>,
    request: Req,
    call: F,
) -> Result<Resumable<R>, Error>
where
    C: Clone + Send + Sync + 'static,
    Req: Request,
    R: Response,
    F: Fn(C, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Opened<R>> + Send + 'static,
{
    let first = request.clone();
    let stream = endpoints
        .call(Safety::Read, |client| call(client, first.clone()))
        .await?;
    // The call that succeeded left its endpoint preferred.
    let (index, _) = endpoints.current_indexed();
    let (sender, receiver) = mpsc::channel(BUFFER);
    let progress = match request.progress_ms() {
        0 => Duration::from_secs(10),
        ms => Duration::from_millis(ms.into()),
    };
    let session = Session {
        endpoints,
        request,
        call,
        silence: progress * 3,
        index,
        seen: None,
        sender,
    };
    let task = tokio::spawn(session.run(stream));
    Ok(Resumable { receiver, task })
}

struct Session<C, Req, R, F> {
    endpoints: Arc<Endpoints<C>>,
    request: Req,
    call: F,
    silence: Duration,
    /// The endpoint the current stream is on.
    index: usize,
    /// The newest revision the caller has everything up to.
    seen: Option<u64>,
    sender: mpsc::Sender<Result<R, Error>>,
}

enum Ended {
    /// The server ended the stream, or the caller went away.
    Done,
    /// Broken: open it again if the position is known.
    Broken(Error),
}

impl<C, Req, R, F, Fut> Session<C, Req, R, F>
where
    C: Clone + Send + Sync + 'static,
    Req: Request,
    R: Response,
    F: Fn(C, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Opened<R>> + Send + 'static,
{
    async fn run(mut self, mut stream: tonic::Streaming<R>) {
        loop {
            let error = match self.pump(&mut stream).await {
                Ended::Done => return,
                Ended::Broken(error) => error,
            };
            let Some(seen) = self.seen else {
                // Where to resume is not known: the caller decides.
                let _ = self.sender.send(Err(error)).await;
                return;
            };
            let mut request = self.request.clone();
            request.resume_after(seen);
            self.endpoints.move_on_from(self.index);
            match self.reopen(request, error).await {
                Ok(next) => stream = next,
                Err(error) => {
                    let _ = self.sender.send(Err(error)).await;
                    return;
                }
            }
        }
    }

    async fn pump(&mut self, stream: &mut tonic::Streaming<R>) -> Ended {
        // The fragments of a revision received so far (dropped if the stream breaks: the
        // watch resumes before that revision, which then comes again whole).
        let mut partial: Option<R> = None;
        loop {
            match tokio::time::timeout(self.silence, stream.next()).await {
                Err(_) => {
                    return Ended::Broken(Error::Unavailable {
                        message: format!(
                            "the watch sent nothing, not even progress, for {:?}: taken as broken",
                            self.silence
                        ),
                        leader: None,
                    })
                }
                Ok(None) => return Ended::Done,
                Ok(Some(Ok(response))) => {
                    let more = response.fragment();
                    let response = match partial.take() {
                        Some(mut joined) => {
                            joined.join(response);
                            joined
                        }
                        None => response,
                    };
                    if more {
                        partial = Some(response);
                        continue;
                    }
                    let seen = response.seen_up_to();
                    if self.sender.send(Ok(response)).await.is_err() {
                        return Ended::Done; // nobody is listening any more
                    }
                    if let Some(seen) = seen {
                        self.seen = Some(self.seen.map_or(seen, |s| s.max(seen)));
                    }
                }
                Ok(Some(Err(status))) if crate::retry::resumable(&status) => {
                    return Ended::Broken(Error::from(status))
                }
                Ok(Some(Err(status))) => {
                    let _ = self.sender.send(Err(Error::from(status))).await;
                    return Ended::Done;
                }
            }
        }
    }

    /// Opens the watch again, moving through the endpoints with backoff, for up to
    /// [`RESUME_FOR`].
    async fn reopen(
        &mut self,
        request: Req,
        mut last: Error,
    ) -> Result<tonic::Streaming<R>, Error> {
        let give_up = tokio::time::Instant::now() + RESUME_FOR;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.sender.is_closed() {
                return Err(last);
            }
            let (index, client) = self.endpoints.current_indexed();
            let opened =
                tokio::time::timeout(self.silence, (self.call)(client, request.clone())).await;
            match opened {
                Ok(Ok(response)) => {
                    self.index = index;
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if crate::retry::resumable(&status) => {
                    last = Error::from(status);
                }
                Ok(Err(status)) => return Err(Error::from(status)),
                Err(_) => {
                    last = Error::Unavailable {
                        message: format!(
                            "{} did not open the watch within {:?}",
                            self.endpoints.name(index),
                            self.silence
                        ),
                        leader: None,
                    }
                }
            }
            self.endpoints.move_on_from(index);
            if tokio::time::Instant::now() + backoff >= give_up {
                return Err(last);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
