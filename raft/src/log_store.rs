//! openraft's `RaftLogStorage` over [`strata_storage::LogStore`].
//!
//! Entries are bincode-encoded, framed with a crc32 by the storage layer, and written at once so
//! they are readable when `append` returns. Durability is a group commit: a dedicated flusher
//! thread syncs the WAL once for every batch of appends waiting on it, and only then tells
//! openraft that those entries are on disk. Nothing is acknowledged to a client before that.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogId, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use strata_storage::LogStore;

use crate::types::TypeConfig;

const META_VOTE: &str = "vote";
const META_PURGED: &str = "last_purged";

#[derive(Clone)]
pub struct RaftLogStore {
    log: LogStore,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
    /// Bytes of entries appended since this process started (see `appended_bytes`).
    appended: Arc<AtomicU64>,
}

impl RaftLogStore {
    pub fn new(log: LogStore) -> Self {
        let (flusher, waiting) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let sync_log = log.clone();
        std::thread::Builder::new()
            .name("strata-log-sync".into())
            .spawn(move || run_flusher(sync_log, waiting))
            .expect("spawning the log flusher thread");
        Self {
            log,
            flusher,
            appended: Arc::default(),
        }
    }

    /// A counter of the bytes of entries this store appended since the process started: the
    /// snapshot trigger by size (`RaftNode::run_snapshot_by_bytes`) reads it, because batch
    /// entries make an entry count a poor measure of how much log waits behind a snapshot.
    pub(crate) fn appended_bytes(&self) -> Arc<AtomicU64> {
        self.appended.clone()
    }

    /// Writes `entry` after the last one and stores `vote`, durably, outside of openraft (for
    /// offline recovery only: see `recovery`).
    pub(crate) fn write_outside_raft(
        &self,
        entry: &Entry<TypeConfig>,
        vote: &Vote<u64>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = bincode::serialize(entry).map_err(write_error)?;
        self.log
            .append([(entry.log_id.index, bytes.as_slice())])
            .map_err(|e| StorageIOError::write_logs(&e))?;
        let vote_bytes = bincode::serialize(vote).map_err(write_error)?;
        self.log
            .put_meta(META_VOTE, &vote_bytes)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.log
            .sync()
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    fn last_purged(&self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        self.log
            .get_meta(META_PURGED)
            .map_err(read_error)?
            .map(|bytes| bincode::deserialize(&bytes).map_err(read_error))
            .transpose()
    }
}

/// Syncs once for everything queued, then completes every queued callback.
fn run_flusher(log: LogStore, waiting: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        batch.extend(waiting.try_iter());
        crate::failpoints::crash_point("log-before-fsync");
        let _span = tracing::debug_span!("raft.log.fsync", appends = batch.len()).entered();
        let started = std::time::Instant::now();
        let result = log.sync().map_err(std::io::Error::other);
        crate::metrics::LOG_FSYNC_SECONDS.observe(started.elapsed().as_secs_f64());
        crate::metrics::LOG_FSYNC_APPENDS.observe(batch.len() as f64);
        crate::failpoints::crash_point("log-after-fsync");
        if let Err(error) = &result {
            tracing::error!(%error, "log fsync failed; entries are not durable");
        }
        for callback in batch {
            callback.log_io_completed(match &result {
                Ok(()) => Ok(()),
                Err(error) => Err(std::io::Error::other(error.to_string())),
            });
        }
    }
}

impl RaftLogReader<TypeConfig> for RaftLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.log
            .read(range)
            .map_err(read_error)?
            .into_iter()
            .map(|(_, bytes)| bincode::deserialize(&bytes).map_err(read_error))
            .collect()
    }
}

impl RaftLogStorage<TypeConfig> for RaftLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id = self.last_purged()?;
        let last_log_id = match self.log.last_index().map_err(read_error)? {
            Some(index) => {
                let bytes = self
                    .log
                    .get(index)
                    .map_err(read_error)?
                    .expect("last index exists");
                let entry: Entry<TypeConfig> = bincode::deserialize(&bytes).map_err(read_error)?;
                Some(*entry.get_log_id())
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let bytes = bincode::serialize(vote).map_err(write_error)?;
        self.log
            .put_meta(META_VOTE, &bytes)
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.log
            .get_meta(META_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?
            .map(|bytes| bincode::deserialize(&bytes).map_err(read_error))
            .transpose()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = std::time::Instant::now();
        let span = tracing::debug_span!(
            "raft.log.append",
            entries = tracing::field::Empty,
            first_index = tracing::field::Empty
        );
        let _entered = span.enter();
        let encoded = entries
            .into_iter()
            .map(|entry| {
                Ok((
                    entry.log_id.index,
                    bincode::serialize(&entry).map_err(write_error)?,
                ))
            })
            .collect::<Result<Vec<_>, StorageError<u64>>>()?;
        span.record("entries", encoded.len());
        if let Some((first, _)) = encoded.first() {
            span.record("first_index", first);
        }
        self.log
            .append(
                encoded
                    .iter()
                    .map(|(index, bytes)| (*index, bytes.as_slice())),
            )
            .map_err(|e| StorageIOError::write_logs(&e))?;
        crate::metrics::LOG_APPEND_SECONDS.observe(started.elapsed().as_secs_f64());
        let bytes: usize = encoded.iter().map(|(_, bytes)| bytes.len()).sum();
        self.appended.fetch_add(bytes as u64, Ordering::Relaxed);
        self.flusher.send(callback).map_err(|_| {
            StorageIOError::write_logs(&std::io::Error::other("log flusher thread is gone"))
        })?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        self.log
            .truncate_from(log_id.index)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let bytes = bincode::serialize(&log_id).map_err(write_error)?;
        self.log
            .purge_upto(log_id.index, META_PURGED, &bytes)
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

pub(crate) fn read_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Logs,
        ErrorVerb::Read,
        openraft::AnyError::new(&error),
    )
    .into()
}

pub(crate) fn write_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::new(
        ErrorSubject::Logs,
        ErrorVerb::Write,
        openraft::AnyError::new(&error),
    )
    .into()
}
