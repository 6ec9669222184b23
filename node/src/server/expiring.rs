//! Long-lived calls (watch, consume, subscribe: every server-streaming method) live no longer
//! than the credential that opened them: the identity layer wraps their response body in
//! [`Expiring`], which ends the stream with UNAUTHENTICATED when a bearer token expires, and
//! re-checks the credential every second, so that a revoked token, a deleted account or a
//! changed secret ends the stream too (a stream opened with `Basic` id and secret ends when
//! its account is deleted or its secret changes). The service underneath never knows.

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

/// What a stream was opened with, and is checked against while it lasts.
pub enum Bound {
    /// A bearer token expiring at `exp` (unix seconds).
    Bearer { token: String, exp: u64 },
    /// `Basic` id and secret of an account, correct at this generation of it.
    Account {
        namespace: String,
        id: String,
        generation: u64,
    },
}

/// A response body that ends with UNAUTHENTICATED once its credential stops being valid.
pub struct Expiring {
    inner: tonic::body::Body,
    gate: Arc<Gate>,
    bound: Bound,
    expiry: Option<Pin<Box<tokio::time::Sleep>>>,
    recheck: tokio::time::Interval,
    done: bool,
}

impl Expiring {
    /// Wraps `inner` for as long as `bound` stays valid.
    pub fn new(inner: tonic::body::Body, gate: Arc<Gate>, bound: Bound) -> Self {
        let expiry = match &bound {
            Bound::Bearer { exp, .. } => {
                let left = (exp + LEEWAY_S).saturating_sub(strata_auth::token::now_s());
                Some(Box::pin(tokio::time::sleep(Duration::from_secs(left))))
            }
            Bound::Account { .. } => None,
        };
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Self {
            inner,
            gate,
            bound,
            expiry,
            recheck,
            done: false,
        }
    }

    /// Whether the credential still holds on this node.
    fn still_valid(&self) -> Result<(), Status> {
        match &self.bound {
            Bound::Bearer { token, .. } => self.gate.verify_bearer(token).map(|_| ()),
            Bound::Account {
                namespace,
                id,
                generation,
            } => match self.gate.view().account(namespace, id) {
                Some(account) if account.generation == *generation => Ok(()),
                _ => Err(unauthenticated(
                    "the account was deleted or its secret changed; open the stream again",
                )),
            },
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
        if let Some(expiry) = self.expiry.as_mut() {
            if expiry.as_mut().poll(cx).is_ready() {
                return self.end(unauthenticated(
                    "the access token expired; open the stream again with a fresh token",
                ));
            }
        }
        while self.recheck.poll_tick(cx).is_ready() {
            if let Err(status) = self.still_valid() {
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

/// A response body that holds its call's place among the node's long-lived calls until the
/// body is dropped (the call ended or the client went away).
pub struct Holding {
    inner: tonic::body::Body,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Holding {
    pub fn new(inner: tonic::body::Body, slot: tokio::sync::OwnedSemaphorePermit) -> Self {
        Self { inner, _slot: slot }
    }
}

impl Body for Holding {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
