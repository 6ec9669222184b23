//! Long-lived calls (watch, consume, subscribe: every server-streaming method) live no longer
//! than the token that opened them: the identity layer wraps their response body in
//! [`Expiring`], which ends the stream with UNAUTHENTICATED when the token expires, and
//! re-checks it every second, so that a revoked token, a deleted account or a changed secret
//! ends the stream too. The service underneath never knows.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use prost::Message;
use tonic::Status;

use super::identity::{unauthenticated, Gate};

/// How often an open stream's token is checked again (revocation, deletion, secret change).
const RECHECK: Duration = Duration::from_secs(1);
/// Expiry is judged with the same leeway as a new call's token.
const LEEWAY_S: u64 = 5;

/// The server-streaming methods of every Strata service, as `/package.Service/Method`.
pub fn streaming_methods() -> HashSet<String> {
    let set = prost_types::FileDescriptorSet::decode(strata_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set decodes");
    let mut paths = HashSet::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                if method.server_streaming() {
                    paths.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    paths
}

/// A response body that ends with UNAUTHENTICATED once its bearer token stops being valid.
pub struct Expiring {
    inner: tonic::body::Body,
    gate: Arc<Gate>,
    token: String,
    expiry: Pin<Box<tokio::time::Sleep>>,
    recheck: tokio::time::Interval,
    done: bool,
}

impl Expiring {
    /// Wraps `inner` for the bearer `token` that expires at `exp` (unix seconds).
    pub fn new(inner: tonic::body::Body, gate: Arc<Gate>, token: String, exp: u64) -> Self {
        let left = (exp + LEEWAY_S).saturating_sub(strata_auth::token::now_s());
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            inner,
            gate,
            token,
            expiry: Box::pin(tokio::time::sleep(Duration::from_secs(left))),
            recheck,
            done: false,
        }
    }

    fn end(&mut self, status: Status) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        match status.add_header(&mut trailers) {
            Ok(()) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Err(status) => Poll::Ready(Some(Err(status))),
        }
    }
}

impl Body for Expiring {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.expiry.as_mut().poll(cx).is_ready() {
            return self.end(unauthenticated(
                "the access token expired; open the stream again with a fresh token",
            ));
        }
        while self.recheck.poll_tick(cx).is_ready() {
            if let Err(status) = self.gate.verify_bearer(&self.token) {
                return self.end(status);
            }
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(status))) => {
                self.done = true;
                Poll::Ready(Some(Err(status)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
