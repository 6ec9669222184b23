use tonic::Code;

/// Metadata keys the server sets on errors, for programs to branch on.
pub const ERROR_CODE_HEADER: &str = "x-strata-error";
pub const CURRENT_REVISION_HEADER: &str = "x-strata-current-revision";
pub const OLDEST_REVISION_HEADER: &str = "x-strata-oldest-revision";
pub const LEADER_HEADER: &str = "x-strata-leader";
/// On RESOURCE_EXHAUSTED `quota_exceeded`: which quota (`keys`, `bytes`, `topics`,
/// `stream_bytes`, `nodes`, `requests_per_second`).
pub const QUOTA_HEADER: &str = "x-strata-quota";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists (mod revision {mod_revision}): {message}")]
    AlreadyExists { mod_revision: u64, message: String },
    /// A compare-and-swap or conditional delete did not hold; nothing changed.
    #[error("precondition failed (current mod revision {current_revision}): {message}")]
    PreconditionFailed {
        current_revision: u64,
        message: String,
    },
    /// A watch asked for history older than the server keeps.
    #[error("history compacted: oldest available revision is {oldest_revision}")]
    Compacted {
        oldest_revision: u64,
        message: String,
    },
    /// The write may or may not have been applied (the leader did not answer in time, or the
    /// connection was lost mid-call). Re-read before retrying anything not idempotent.
    #[error("outcome unknown: {message}")]
    OutcomeUnknown { message: String },
    /// The call's deadline (`request_timeout`) passed before an answer came. For a write, the
    /// outcome is unknown, as with [`Error::OutcomeUnknown`].
    #[error("timed out: {message}")]
    Timeout { message: String },
    /// The cluster cannot serve now (no leader, no quorum, shutting down); the client already
    /// retried where that was safe. Writes failing with `not_leader` or `leader_unreachable`
    /// (see `error_code`) were not applied; with `shutting_down`, their outcome is unknown.
    #[error("unavailable: {message}")]
    Unavailable {
        message: String,
        /// The leader's node id, when the server knew one (`x-strata-leader`).
        leader: Option<String>,
    },
    /// No valid token: missing, expired, revoked, tampered, or its account changed.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The token is valid but its account may not do this (namespace, scope or rule).
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The namespace is at a limit (`quota` names it); nothing was applied. A request rate
    /// passes with time; the others need usage freed or the limit raised by an admin.
    #[error("quota {quota} exceeded: {message}")]
    QuotaExceeded { quota: String, message: String },
    #[error("{0}")]
    Status(tonic::Status),
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let header = |name: &str| {
            status
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let number = |name: &str| header(name).and_then(|v| v.parse().ok()).unwrap_or(0);
        let message = status.message().to_owned();
        match (status.code(), header(ERROR_CODE_HEADER).as_deref()) {
            (Code::InvalidArgument, _) => Error::InvalidArgument(message),
            (Code::Unauthenticated, _) => Error::Unauthenticated(message),
            (Code::PermissionDenied, _) => Error::PermissionDenied(message),
            (Code::NotFound, _) => Error::NotFound(message),
            (Code::AlreadyExists, _) => Error::AlreadyExists {
                mod_revision: number(CURRENT_REVISION_HEADER),
                message,
            },
            (Code::FailedPrecondition, Some("compacted")) => Error::Compacted {
                oldest_revision: number(OLDEST_REVISION_HEADER),
                message,
            },
            (Code::FailedPrecondition, _) => Error::PreconditionFailed {
                current_revision: number(CURRENT_REVISION_HEADER),
                message,
            },
            (Code::DeadlineExceeded, Some("outcome_unknown")) => Error::OutcomeUnknown { message },
            // tonic reports its own client-side deadline as CANCELLED "Timeout expired".
            (Code::Cancelled, None) if message.contains("Timeout expired") => {
                Error::Timeout { message }
            }
            (Code::ResourceExhausted, Some("quota_exceeded")) => Error::QuotaExceeded {
                quota: header(QUOTA_HEADER).unwrap_or_default(),
                message,
            },
            (Code::Unavailable, _) => Error::Unavailable {
                message,
                leader: header(LEADER_HEADER),
            },
            _ => Error::Status(status),
        }
    }
}
