//! Every error the server returns becomes a `tonic::Status` here, with a stable machine-readable
//! code in the `x-strata-error` metadata and the facts a client needs to act on it.

use strata_client::error_headers::*;
use strata_raft::node::ReadError;
use strata_raft::WriteError;
use strata_storage::kv::KvFailure;
use strata_storage::quota::Quota;
use strata_storage::StorageError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

fn with(
    code: Code,
    error: &'static str,
    message: String,
    headers: &[(&'static str, String)],
) -> Status {
    let mut status = Status::new(code, message);
    status
        .metadata_mut()
        .insert(ERROR_CODE_HEADER, MetadataValue::from_static(error));
    for (name, value) in headers {
        if let Ok(value) = MetadataValue::try_from(value.as_str()) {
            status.metadata_mut().insert(*name, value);
        }
    }
    status
}

/// A status with its `x-strata-error` code.
pub fn with_code(code: Code, error: &'static str, message: String) -> Status {
    with(code, error, message, &[])
}

pub fn failure(failure: &KvFailure) -> Status {
    match failure {
        KvFailure::ModRevisionMismatch { expected, actual } => with(
            Code::FailedPrecondition,
            "mod_revision_mismatch",
            format!("expected mod revision {expected}, but the key's is {actual} (0: absent)"),
            &[(CURRENT_REVISION_HEADER, actual.to_string())],
        ),
        KvFailure::AlreadyExists { mod_revision } => with(
            Code::AlreadyExists,
            "already_exists",
            format!("the key exists (mod revision {mod_revision}) and create_only was set"),
            &[(CURRENT_REVISION_HEADER, mod_revision.to_string())],
        ),
        KvFailure::TooManyKeys { limit } => with(
            Code::FailedPrecondition,
            "too_many_keys",
            format!(
                "a prefix delete in a transaction may remove at most {limit} keys, and this one \
                 found more; nothing was done (delete the prefix outside a transaction: it goes \
                 in steps)"
            ),
            &[],
        ),
    }
}

pub fn compacted(requested: u64, oldest: u64) -> Status {
    with(
        Code::FailedPrecondition,
        "compacted",
        format!(
            "revision {requested} is compacted; the oldest available revision is {oldest}: \
             re-read the current state and watch from its revision"
        ),
        &[(OLDEST_REVISION_HEADER, oldest.to_string())],
    )
}

pub fn write(error: WriteError) -> Status {
    match error {
        WriteError::NotLeader { leader_id } => not_leader(leader_id),
        WriteError::LeaderUnreachable(message) => unavailable(
            "leader_unreachable",
            format!("the leader could not be reached and the write was not sent; retry: {message}"),
        ),
        WriteError::Unknown(message) => outcome_unknown(message),
        WriteError::Fatal(message) => with(
            Code::Unavailable,
            "shutting_down",
            format!(
                "the node is shutting down or failed; the write's outcome is unknown: {message}"
            ),
            &[],
        ),
        WriteError::Unexpected(message) => with(Code::Internal, "internal", message, &[]),
        WriteError::QuotaExceeded(exceeded) => quota_exceeded(exceeded.quota, exceeded.to_string()),
        WriteError::DiskFull(message) => with(Code::ResourceExhausted, "disk_full", message, &[]),
    }
}

/// RESOURCE_EXHAUSTED `quota_exceeded`, naming the quota in `x-strata-quota`.
pub fn quota_exceeded(quota: Quota, message: String) -> Status {
    with(
        Code::ResourceExhausted,
        "quota_exceeded",
        message,
        &[(QUOTA_HEADER, quota.name().to_string())],
    )
}

pub fn read(error: ReadError) -> Status {
    match error {
        ReadError::NotLeader { leader_id } => not_leader(leader_id),
        ReadError::Unavailable(message) => with(
            Code::Unavailable,
            "no_quorum",
            format!("cannot confirm a linearizable read with a quorum ({message}); retry, or ask for a serializable read"),
            &[],
        ),
    }
}

/// Retry-safe unavailability: nothing was done.
pub fn unavailable(error: &'static str, message: String) -> Status {
    with(Code::Unavailable, error, message, &[])
}

/// The operation may or may not have taken effect: DEADLINE_EXCEEDED, which gRPC clients do not
/// retry on their own, with a message that says so.
pub fn outcome_unknown(message: String) -> Status {
    with(
        Code::DeadlineExceeded,
        "outcome_unknown",
        format!(
            "no answer in time; the operation may or may not have been applied \
             (re-read before retrying anything not idempotent): {message}"
        ),
        &[],
    )
}

/// Nothing was done for want of a leader; the header names the leader's node id when one is
/// known (it changed while the request was on its way).
fn not_leader(leader_id: Option<u64>) -> Status {
    let message = match leader_id {
        Some(id) => format!("the leader changed (now node {id}) while the request was on its way; nothing was done, retry"),
        None => "no leader is known right now; nothing was done, retry shortly".to_string(),
    };
    let headers: Vec<_> = leader_id
        .into_iter()
        .map(|id| (LEADER_HEADER, id.to_string()))
        .collect();
    with(Code::Unavailable, "not_leader", message, &headers)
}

/// Runs a storage read that may scan many rows on a blocking thread, off the async workers
/// that carry heartbeats and other requests; its error as a status.
pub async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(storage),
        Err(error) => Err(with(
            Code::Internal,
            "storage",
            format!("a storage task failed: {error}"),
            &[],
        )),
    }
}

pub fn storage(error: StorageError) -> Status {
    tracing::error!(%error, "storage error while serving a request");
    with(
        Code::Internal,
        "storage",
        format!("storage error: {error}"),
        &[],
    )
}
