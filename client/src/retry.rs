//! Endpoint failover and safe retries.
//!
//! The client holds one lazily connected channel per endpoint and prefers the last one that
//! worked. A call that fails is retried, on the next endpoint, only when that cannot apply it
//! twice:
//! - reads retry on any unavailability (they change nothing);
//! - writes retry only when the server said nothing was done (`not_leader`,
//!   `leader_unreachable`) or the connection was refused (nothing was sent). A write whose
//!   outcome is unknown (a timeout, a connection lost mid-call) is returned to the caller, who
//!   knows whether it is idempotent.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::{Code, Status};

use crate::error::ERROR_CODE_HEADER;
use crate::{Error, KvGrpc};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Safety {
    /// Changes nothing: always safe to retry.
    Read,
    /// Retried only when certainly not applied.
    Write,
    /// A write that the server recognises when repeated (a publish with a message id): retried
    /// like a read, and after an unknown outcome too.
    Idempotent,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff: Duration::from_millis(25),
            max_backoff: Duration::from_millis(800),
        }
    }
}

impl RetryPolicy {
    /// No retries: every error goes straight to the caller.
    pub fn none() -> Self {
        Self {
            attempts: 1,
            ..Self::default()
        }
    }

    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.min(16);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// One client of each endpoint, for one gRPC service (`C`).
pub(crate) struct Endpoints<C = KvGrpc> {
    channels: Vec<(String, C)>,
    preferred: AtomicUsize,
    policy: RetryPolicy,
    /// The builder's `request_timeout`, for waits that are not one gRPC call (settles).
    request_timeout: Option<Duration>,
}

impl<C: Clone> Endpoints<C> {
    pub(crate) fn new(
        channels: Vec<(String, C)>,
        preferred: usize,
        policy: RetryPolicy,
        request_timeout: Option<Duration>,
    ) -> Self {
        Self {
            channels,
            preferred: AtomicUsize::new(preferred),
            policy,
            request_timeout,
        }
    }

    pub(crate) fn request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// The preferred endpoint's index and client: for a stream that moves itself on failure.
    pub(crate) fn current_indexed(&self) -> (usize, C) {
        let index = self.preferred.load(Ordering::Relaxed) % self.channels.len();
        (index, self.channels[index].1.clone())
    }

    /// The name of endpoint `index`, for errors.
    pub(crate) fn name(&self, index: usize) -> &str {
        &self.channels[index % self.channels.len()].0
    }

    /// Prefers the endpoint after `index` from now on, unless another caller already moved on.
    pub(crate) fn move_on_from(&self, index: usize) {
        if self.channels.len() > 1 {
            let _ = self.preferred.compare_exchange(
                index,
                (index + 1) % self.channels.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    pub(crate) async fn call<T, F, Fut>(&self, safety: Safety, call: F) -> Result<T, Error>
    where
        F: Fn(C) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut retry = 0;
        loop {
            let index = self.preferred.load(Ordering::Relaxed) % self.channels.len();
            let status = match call(self.channels[index].1.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => status,
            };
            if retry + 1 >= self.policy.attempts || !retryable(&status, safety) {
                return Err(final_error(status, safety, &self.channels[index].0));
            }
            self.move_on_from(index);
            tokio::time::sleep(self.policy.delay(retry)).await;
            retry += 1;
        }
    }
}

/// Whether a long-lived stream that ended with `status` may be opened again elsewhere: the
/// node or the connection failed, not the request.
pub(crate) fn resumable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Cancelled)
        || transport_failure(status)
        || (status.code() == Code::Unknown && status.metadata().get(ERROR_CODE_HEADER).is_none())
}

/// Whether a failed call may be retried without risking a second application.
pub(crate) fn retryable(status: &Status, safety: Safety) -> bool {
    let error = status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok());
    match (error, safety) {
        // The server says it did nothing.
        (Some("not_leader" | "leader_unreachable"), _) => true,
        (Some("no_quorum" | "shutting_down"), Safety::Read | Safety::Idempotent) => true,
        (Some("outcome_unknown"), Safety::Idempotent) => true,
        // Every other server answer is final (bad input, preconditions, unknown outcomes).
        (Some(_), _) => false,
        (None, Safety::Read | Safety::Idempotent) => {
            status.code() == Code::Unavailable || transport_failure(status)
        }
        (None, Safety::Write) => connection_refused(status),
    }
}

/// The error a caller sees: a write whose connection failed mid-call has an unknown outcome,
/// whatever code the transport chose for it.
fn final_error(status: Status, safety: Safety, endpoint: &str) -> Error {
    if safety == Safety::Write && transport_failure(&status) && !connection_refused(&status) {
        return Error::OutcomeUnknown {
            message: format!(
                "the connection to {endpoint} failed during the call ({}); the write may or \
                 may not have been applied",
                status.message()
            ),
        };
    }
    status.into()
}

/// True when the call failed in the transport (connection lost, reset, refused), not with an
/// answer from a server; the client's own deadline does not count.
fn transport_failure(status: &Status) -> bool {
    if status.metadata().get(ERROR_CODE_HEADER).is_some() || status.message() == "Timeout expired" {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::transport::Error>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// True when the call failed because the connection could not be made, so nothing was sent.
fn connection_refused(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;

    fn with_code(code: Code, error: &'static str) -> Status {
        let mut status = Status::new(code, "x");
        status
            .metadata_mut()
            .insert(ERROR_CODE_HEADER, MetadataValue::from_static(error));
        status
    }

    #[test]
    fn writes_retry_only_when_certainly_not_applied() {
        assert!(retryable(
            &with_code(Code::Unavailable, "not_leader"),
            Safety::Write
        ));
        assert!(retryable(
            &with_code(Code::Unavailable, "leader_unreachable"),
            Safety::Write
        ));
        assert!(!retryable(
            &with_code(Code::DeadlineExceeded, "outcome_unknown"),
            Safety::Write
        ));
        assert!(!retryable(
            &with_code(Code::Unavailable, "shutting_down"),
            Safety::Write
        ));
        assert!(!retryable(
            &Status::unavailable("connection reset"),
            Safety::Write
        ));
        assert!(!retryable(
            &Status::deadline_exceeded("timeout"),
            Safety::Write
        ));
        // A refused connection (nothing sent) is covered by an integration test with a dead
        // endpoint first in the list: tonic's transport error chain cannot be built here.
    }

    #[test]
    fn reads_retry_on_any_unavailability_but_not_on_answers() {
        assert!(retryable(
            &Status::unavailable("connection reset"),
            Safety::Read
        ));
        assert!(retryable(
            &with_code(Code::Unavailable, "no_quorum"),
            Safety::Read
        ));
        assert!(!retryable(
            &Status::invalid_argument("bad key"),
            Safety::Read
        ));
        assert!(!retryable(
            &with_code(Code::FailedPrecondition, "compacted"),
            Safety::Read
        ));
    }

    #[test]
    fn idempotent_writes_retry_after_unknown_outcomes_but_not_on_answers() {
        for error in [
            "outcome_unknown",
            "not_leader",
            "no_quorum",
            "shutting_down",
        ] {
            assert!(
                retryable(&with_code(Code::Unavailable, error), Safety::Idempotent),
                "{error}"
            );
        }
        assert!(!retryable(
            &with_code(Code::InvalidArgument, "invalid_argument"),
            Safety::Idempotent
        ));
        assert!(!retryable(
            &with_code(Code::DeadlineExceeded, "outcome_unknown"),
            Safety::Write
        ));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let policy = RetryPolicy::default();
        let delays: Vec<_> = (0..7).map(|r| policy.delay(r).as_millis()).collect();
        assert_eq!(delays, [25, 50, 100, 200, 400, 800, 800]);
    }
}
