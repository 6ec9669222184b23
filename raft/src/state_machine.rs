//! openraft's `RaftStateMachine` over the key-value model and the streams.
//!
//! Each entry is applied in its own atomic RocksDB batch that also records the last applied log
//! id (and membership), so a restart resumes exactly after the last entry whose effects are
//! stored; openraft re-applies the rest from the log. Applied events are broadcast to live
//! watchers after their batch is written.
//!
//! Snapshots live in files, never whole in memory: a build streams a consistent RocksDB
//! snapshot to `snapshot-<id>.data` (writes go on meanwhile); `current.meta` names the newest
//! and holds its Raft metadata, replaced atomically. Openraft sends the file to followers in
//! chunks, received into an unnamed file of each stream's own (a stream restarted after a
//! timeout must never write into one being installed). Installing verifies the received data,
//! keeps it as the current snapshot, leaves an `importing` marker, loads it in bounded batches
//! and removes the marker once synced; a node that crashed mid-import redoes it at start.
//!
//! openraft builds snapshots in a task of their own, beside the worker that installs received
//! ones and opens the current one for a replication stream. One lock orders every change of
//! the current snapshot against every reader of it: a reader opens the data file `current.meta`
//! names before that file can be replaced (an open file outlives its removal), and the current
//! snapshot never goes back to an older one (a build that finishes after a newer install is
//! returned to openraft but not made current). Without it a replication stream could find its
//! file gone, and openraft stops the leader's core on that (found by strata-jepsen).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError,
    StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_auth::AuthState;
use strata_registry::{RegistryEvent, RegistryState};
use strata_storage::kv::{KvState, RevisionEvents};
use strata_storage::quota::{QuotaState, Usage};
use strata_storage::Engine;
use strata_stream::{Notice, StreamState};
use tokio::sync::broadcast;

use crate::types::{Response, TypeConfig};

mod apply;
#[cfg(test)]
mod quota_tests;

pub(crate) use apply::{
    revision_of, Revisions, META_APPLIED_PART, META_CLUSTER_TIME, META_REVISION,
};

pub(crate) const META_LAST_APPLIED: &[u8] = b"last_applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";
const META_FILE: &str = "current.meta";
const IMPORTING_MARKER: &str = "importing";

/// Buffered revisions per live-watch subscriber before it must catch up from history.
pub const WATCH_BROADCAST_CAPACITY: usize = 4_096;
/// Buffered stream notices per consumer; one that lags re-reads its topic (notices carry no
/// data, only "look again").
pub const STREAM_NOTICE_CAPACITY: usize = 4_096;

/// The last applied log id and membership, as openraft asks for them.
type AppliedState = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

#[derive(Clone)]
pub struct StateMachine {
    engine: Engine,
    kv: KvState,
    stream: StreamState,
    events: broadcast::Sender<Arc<RevisionEvents>>,
    /// (revision, topics changed by it), after the command's batch is written; an empty list
    /// after a snapshot install means any topic may have changed.
    notices: broadcast::Sender<Arc<(u64, Vec<Notice>)>>,
    registry: RegistryState,
    auth: AuthState,
    quota: QuotaState,
    /// (revision, registry and config events of it), after the command's batch is written; an
    /// empty list after a snapshot install means "read history from where you are".
    registry_events: broadcast::Sender<Arc<(u64, Vec<RegistryEvent>)>>,
    snapshot_dir: PathBuf,
    /// Held while `current.meta` or the data files change, and while a reader opens them.
    snapshot_files: Arc<std::sync::Mutex<()>>,
    /// The newest applied command's revision.
    revisions: Revisions,
    /// The leader's time as the log carried it here (see `clock`).
    clock: Arc<crate::clock::ClusterClock>,
}

/// What `current.meta` holds: the newest snapshot's Raft metadata and its data file.
#[derive(Serialize, Deserialize)]
struct StoredMeta {
    meta: SnapshotMeta<u64, BasicNode>,
    file: String,
}

/// A snapshot the state must be loaded from, but that fails to load.
fn damaged_snapshot(path: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::other(format!(
        "loading the snapshot {}: {error}; see {}",
        path.display(),
        strata_storage::integrity::DAMAGE_GUIDE
    ))
}

fn data_file_name(meta: &SnapshotMeta<u64, BasicNode>) -> String {
    format!("snapshot-{}.data", meta.snapshot_id)
}

/// A reader that also writes everything it reads to `copy`.
struct Tee {
    source: std::fs::File,
    copy: std::fs::File,
}

impl std::io::Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::Write;
        let read = self.source.read(buf)?;
        self.copy.write_all(&buf[..read])?;
        Ok(read)
    }
}

/// Writes `bytes` to `dir/name` durably and atomically (temporary file, fsync, rename, fsync
/// of the directory).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

impl StateMachine {
    pub fn new(
        engine: Engine,
        snapshot_dir: PathBuf,
        history_retain_revisions: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let (notices, _) = broadcast::channel(STREAM_NOTICE_CAPACITY);
        let (registry_events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let kv = KvState::with_history_retention(engine.clone(), history_retain_revisions);
        let machine = Self {
            kv,
            stream: StreamState::new(engine.clone()),
            registry: RegistryState::new(engine.clone(), history_retain_revisions),
            auth: AuthState::new(engine.clone()).map_err(std::io::Error::other)?,
            quota: QuotaState::new(engine.clone()).map_err(std::io::Error::other)?,
            registry_events,
            engine,
            events,
            notices,
            snapshot_dir,
            snapshot_files: Arc::default(),
            revisions: Revisions::new(),
            clock: Arc::new(crate::clock::ClusterClock::new(0)),
        };
        let stored = machine.read_stored_meta()?;
        if machine.snapshot_dir.join(IMPORTING_MARKER).exists() {
            tracing::warn!("a snapshot import was interrupted; redoing it");
            let stored = stored.as_ref().ok_or_else(|| {
                std::io::Error::other("an import marker without a current snapshot")
            })?;
            let path = machine.snapshot_dir.join(&stored.file);
            let mut file = std::fs::File::open(&path)?;
            machine
                .import(&mut file, true)
                .map_err(|e| damaged_snapshot(&path, e))?;
        } else if let Some(stored) = &stored {
            // A received snapshot made current, then a crash before its import began: the
            // state is behind its own current snapshot, which openraft refuses at start
            // (snapshot past the committed index; found by strata-jepsen's snapshot-install
            // failpoint). Finish the install. A snapshot built here is never ahead of applied.
            let applied = machine
                .read_meta::<Option<LogId<u64>>>(META_LAST_APPLIED)
                .map_err(std::io::Error::other)?
                .flatten();
            if stored.meta.last_log_id > applied {
                tracing::warn!(
                    snapshot = ?stored.meta.last_log_id, ?applied,
                    "the current snapshot was received but never loaded; loading it"
                );
                let path = machine.snapshot_dir.join(&stored.file);
                let mut file = std::fs::File::open(&path)?;
                machine
                    .import(&mut file, true)
                    .map_err(|e| damaged_snapshot(&path, e))?;
            } else {
                machine.check_current(stored)?;
            }
        }
        machine.count_usage()?;
        machine
            .load_revision()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(machine)
    }

    /// Verifies the current snapshot, which the state already holds (it is not ahead of
    /// applied), so that a damaged one is never sent to a follower. A damaged one is only a
    /// stale copy: it is set aside as `<file>.damaged` and forgotten, and openraft builds a new
    /// one from the state at start when the log behind it is purged.
    fn check_current(&self, stored: &StoredMeta) -> std::io::Result<()> {
        let path = self.snapshot_dir.join(&stored.file);
        let verified = std::fs::File::open(&path).and_then(|file| {
            let len = file.metadata()?.len();
            self.engine
                .verify_snapshot(len, file)
                .map_err(std::io::Error::other)
        });
        let Err(error) = verified else {
            return Ok(());
        };
        tracing::error!(
            file = %path.display(), %error,
            "the current snapshot is damaged; setting it aside (the state holds everything \
             in it) and building a new one"
        );
        let aside = self.snapshot_dir.join(format!("{}.damaged", stored.file));
        if path.exists() {
            std::fs::rename(&path, &aside)?;
        }
        std::fs::remove_file(self.snapshot_dir.join(META_FILE))?;
        std::fs::File::open(&self.snapshot_dir)?.sync_all()
    }

    /// The cluster's clock, advanced by every applied command's stamp.
    pub fn clock(&self) -> Arc<crate::clock::ClusterClock> {
        self.clock.clone()
    }

    /// Recounts every namespace's usage from the state where it was never counted (data
    /// written before quotas existed, or a snapshot from such a node). The count depends on
    /// the state alone, so every replica at the same applied index stores the same numbers.
    fn count_usage(&self) -> std::io::Result<()> {
        if self.quota.is_counted().map_err(std::io::Error::other)? {
            return Ok(());
        }
        let counts = self.recount_usage().map_err(std::io::Error::other)?;
        tracing::info!(
            namespaces = counts.len(),
            "counted every namespace's usage for quotas"
        );
        self.quota
            .store_recount(&counts)
            .map_err(std::io::Error::other)
    }

    /// Every namespace's usage, counted from the stored state itself (what the stored usage
    /// must always equal).
    pub fn recount_usage(
        &self,
    ) -> Result<std::collections::BTreeMap<String, Usage>, strata_storage::StorageError> {
        let mut counts = std::collections::BTreeMap::new();
        self.kv.recount_usage(&mut counts)?;
        self.stream.recount_usage(&mut counts)?;
        self.registry.recount_usage(&mut counts)?;
        counts.retain(|_, usage: &mut Usage| !usage.is_zero());
        Ok(counts)
    }

    fn read_stored_meta(&self) -> std::io::Result<Option<StoredMeta>> {
        match std::fs::read(self.snapshot_dir.join(META_FILE)) {
            Ok(bytes) => bincode::deserialize(&bytes).map(Some).map_err(|e| {
                std::io::Error::other(format!(
                    "{} is damaged: {e}; see {}",
                    self.snapshot_dir.join(META_FILE).display(),
                    strata_storage::integrity::DAMAGE_GUIDE
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the durable data file `staged` the current snapshot under `meta`'s name and
    /// removes older data files, unless the current snapshot is already newer (then `staged`
    /// is removed). Returns `staged` opened, whichever happened, and whether it became current.
    fn make_current(
        &self,
        staged: &Path,
        meta: &SnapshotMeta<u64, BasicNode>,
    ) -> std::io::Result<(std::fs::File, bool)> {
        let _files = self
            .snapshot_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let opened = std::fs::File::open(staged)?;
        if let Some(current) = self.read_stored_meta()? {
            if current.meta.last_log_id > meta.last_log_id {
                tracing::info!(
                    current = %current.meta.snapshot_id, superseded = %meta.snapshot_id,
                    "a newer snapshot became current meanwhile; not replacing it"
                );
                std::fs::remove_file(staged)?;
                return Ok((opened, false));
            }
        }
        let file = data_file_name(meta);
        std::fs::rename(staged, self.snapshot_dir.join(&file))?;
        let stored = StoredMeta {
            meta: meta.clone(),
            file: file.clone(),
        };
        let bytes = bincode::serialize(&stored).map_err(std::io::Error::other)?;
        write_atomically(&self.snapshot_dir, META_FILE, &bytes)?;
        for entry in std::fs::read_dir(&self.snapshot_dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("snapshot-") && name.ends_with(".data") && name != file.as_str() {
                let _ = std::fs::remove_file(self.snapshot_dir.join(name.as_ref()));
            }
        }
        Ok((opened, true))
    }

    /// The current snapshot's metadata and its data file, opened under the lock so that a
    /// newer snapshot cannot remove the file first.
    fn open_current(&self) -> std::io::Result<Option<(StoredMeta, std::fs::File)>> {
        let _files = self
            .snapshot_files
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(stored) = self.read_stored_meta()? else {
            return Ok(None);
        };
        let file = std::fs::File::open(self.snapshot_dir.join(&stored.file))?;
        Ok(Some((stored, file)))
    }

    /// Loads the state from snapshot data, under the import marker; `verify` first unless the
    /// caller just did.
    fn import(&self, data: &mut std::fs::File, verify: bool) -> std::io::Result<()> {
        use std::io::Seek;
        let marker = self.snapshot_dir.join(IMPORTING_MARKER);
        let len = data.metadata()?.len();
        if verify {
            data.rewind()?;
            self.engine
                .verify_snapshot(len, &mut *data)
                .map_err(std::io::Error::other)?;
        }
        write_atomically(&self.snapshot_dir, IMPORTING_MARKER, b"")?;
        data.rewind()?;
        self.engine
            .import_verified_state_from(len, &mut *data)
            .map_err(std::io::Error::other)?;
        std::fs::remove_file(&marker)?;
        std::fs::File::open(&self.snapshot_dir)?.sync_all()?;
        self.auth.reload().map_err(std::io::Error::other)?;
        self.quota.reload().map_err(std::io::Error::other)?;
        self.count_usage()?;
        self.load_revision()
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Makes the durable snapshot data file `staged` (whose state records `meta`'s log id and
    /// membership) the current snapshot and loads it, verified: the base of a restored node.
    pub(crate) fn restore_base(
        &self,
        staged: &Path,
        meta: &SnapshotMeta<u64, BasicNode>,
    ) -> std::io::Result<()> {
        let (mut data, current) = self.make_current(staged, meta)?;
        if !current {
            return Err(std::io::Error::other(
                "a newer snapshot is current already: the data directory was not new",
            ));
        }
        self.import(&mut data, true)
    }

    /// The newest applied command's revision, and waiting for one.
    pub(crate) fn revisions(&self) -> &Revisions {
        &self.revisions
    }

    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.events.subscribe()
    }

    pub fn stream(&self) -> &StreamState {
        &self.stream
    }

    pub fn subscribe_streams(&self) -> broadcast::Receiver<Arc<(u64, Vec<Notice>)>> {
        self.notices.subscribe()
    }

    pub fn registry(&self) -> &RegistryState {
        &self.registry
    }

    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    pub fn quota(&self) -> &QuotaState {
        &self.quota
    }

    pub fn subscribe_registry(&self) -> broadcast::Receiver<Arc<(u64, Vec<RegistryEvent>)>> {
        self.registry_events.subscribe()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<u64>> {
        read_meta_in(&self.kv, key)
    }

    fn applied(&self) -> Result<AppliedState, StorageError<u64>> {
        applied_in(&self.kv)
    }
}

fn read_meta_in<T: serde::de::DeserializeOwned>(
    kv: &KvState,
    key: &[u8],
) -> Result<Option<T>, StorageError<u64>> {
    kv.get_meta(key)
        .map_err(|e| StorageIOError::read_state_machine(&e))?
        .map(|bytes| {
            bincode::deserialize(&bytes).map_err(|e| StorageIOError::read_state_machine(&e).into())
        })
        .transpose()
}

/// The last applied log id and membership the state in `kv`'s engine records. Offline tools
/// read it this way, without opening a state machine (which recounts usage and may finish a
/// snapshot install).
pub(crate) fn applied_in(kv: &KvState) -> Result<AppliedState, StorageError<u64>> {
    Ok((
        read_meta_in(kv, META_LAST_APPLIED)?.flatten(),
        read_meta_in(kv, META_MEMBERSHIP)?.unwrap_or_default(),
    ))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let started = std::time::Instant::now();
        let engine = self.engine.clone();
        let building = self.snapshot_dir.join("building.tmp");
        let path = building.clone();
        let exported = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let file = std::fs::File::create(&path)?;
            let mut writer = std::io::BufWriter::with_capacity(1 << 20, file);
            let meta = engine
                .export_state_to(&mut writer, &[META_LAST_APPLIED, META_MEMBERSHIP])
                .map_err(std::io::Error::other)?;
            writer
                .into_inner()
                .map_err(|e| e.into_error())?
                .sync_all()?;
            Ok(meta)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, &std::io::Error::other(e)))?
        .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        let decode_error = |e: bincode::Error| StorageIOError::read_state_machine(&e);
        let last_log_id: Option<LogId<u64>> = match &exported[0] {
            Some(bytes) => bincode::deserialize(bytes).map_err(decode_error)?,
            None => None,
        };
        let last_membership: StoredMembership<u64, BasicNode> = match &exported[1] {
            Some(bytes) => bincode::deserialize(bytes).map_err(decode_error)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = format!(
            "{}-{}",
            last_log_id.map_or(0, |id| id.leader_id.term),
            last_log_id.map_or(0, |id| id.index)
        );
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        let signature = Some(meta.signature());
        crate::failpoints::crash_point("snapshot-build");
        let machine = self.clone();
        let meta_copy = meta.clone();
        let (file, current) =
            tokio::task::spawn_blocking(move || machine.make_current(&building, &meta_copy))
                .await
                .map_err(|e| {
                    StorageIOError::write_snapshot(signature.clone(), &std::io::Error::other(e))
                })?
                .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let file = tokio::fs::File::from_std(file);
        let bytes = file.metadata().await.map_or(0, |m| m.len());
        crate::metrics::SNAPSHOT_SECONDS
            .with_label_values(&["build"])
            .observe(started.elapsed().as_secs_f64());
        crate::metrics::SNAPSHOT_BYTES
            .with_label_values(&["build"])
            .set(bytes.min(i64::MAX as u64) as i64);
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            bytes,
            current,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built a snapshot"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        self.applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // RocksDB writes can stall (memtable flushes, compaction backpressure): on a blocking
        // thread, so that they never hold up an async worker (heartbeats, other requests).
        let entries: Vec<_> = entries.into_iter().collect();
        let machine = self.clone();
        let count = entries.len() as u64;
        let started = std::time::Instant::now();
        let span = tracing::debug_span!(
            "raft.apply",
            entries = count,
            first_index = entries.first().map_or(0, |e| e.log_id.index),
            last_index = entries.last().map_or(0, |e| e.log_id.index)
        );
        let applied =
            tokio::task::spawn_blocking(move || span.in_scope(|| machine.apply_entries(entries)))
                .await
                .map_err(|e| StorageIOError::write_state_machine(&e))?;
        crate::metrics::APPLY_SECONDS.observe(started.elapsed().as_secs_f64());
        crate::metrics::APPLIED_ENTRIES.inc_by(count);
        applied
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<u64>> {
        // An unnamed file of its own: a stream the leader restarts (after a timeout) must never
        // write into the file of one that is being installed.
        let file = tempfile::tempfile_in(&self.snapshot_dir)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<u64>> {
        use tokio::io::AsyncWriteExt;
        let started = std::time::Instant::now();
        let signature = Some(meta.signature());
        let io_error = |e: std::io::Error| StorageIOError::write_snapshot(signature.clone(), &e);
        let mut received = *snapshot;
        received.flush().await.map_err(io_error)?;
        let received = received.into_std().await;
        let machine = self.clone();
        let meta_copy = meta.clone();
        let installed = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            use std::io::Seek;
            // Keep the received data as this node's current snapshot, durably, verify it, and
            // only then make it current and load it.
            let copying = machine.snapshot_dir.join("installing.tmp");
            let mut source = received;
            source.rewind()?;
            let len = source.metadata()?.len();
            // One pass: the verification reads the received data and every byte it reads is
            // written to the copy.
            let mut tee = Tee {
                source,
                copy: std::fs::File::create(&copying)?,
            };
            machine
                .engine
                .verify_snapshot(len, &mut tee)
                .map_err(std::io::Error::other)?;
            tee.copy.sync_all()?;
            drop(tee);
            let (mut data, _) = machine.make_current(&copying, &meta_copy)?;
            crate::failpoints::crash_point("snapshot-install");
            machine.import(&mut data, false)?;
            Ok(len)
        })
        .await
        .map_err(|e| io_error(std::io::Error::other(e)))?
        .map_err(io_error)?;
        crate::metrics::SNAPSHOT_SECONDS
            .with_label_values(&["install"])
            .observe(started.elapsed().as_secs_f64());
        crate::metrics::SNAPSHOT_BYTES
            .with_label_values(&["install"])
            .set(installed.min(i64::MAX as u64) as i64);
        tracing::info!(
            snapshot_id = %meta.snapshot_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "installed a snapshot"
        );
        // The state jumped without per-entry notices: tell every consumer to look again (an
        // empty list means "any topic may have changed").
        let revision = self.revisions.applied();
        let _ = self.notices.send(Arc::new((revision, Vec::new())));
        let _ = self.registry_events.send(Arc::new((revision, Vec::new())));
        // Likewise for key-value watchers: no events means "read history from where you are"
        // (before, a kv watcher on a node that installed a snapshot skipped its revisions).
        let _ = self.events.send(Arc::new(RevisionEvents {
            revision,
            events: Vec::new(),
        }));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let machine = self.clone();
        let Some((stored, file)) = tokio::task::spawn_blocking(move || machine.open_current())
            .await
            .map_err(|e| StorageIOError::read_snapshot(None, &std::io::Error::other(e)))?
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        else {
            return Ok(None);
        };
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn meta(index: u64) -> SnapshotMeta<u64, BasicNode> {
        SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-{index}"),
        }
    }

    /// A build that finishes after a newer snapshot was installed is handed back, opened, but
    /// the current snapshot stays the newer one and its file stays.
    #[test]
    fn an_older_snapshot_never_replaces_a_newer_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let machine = StateMachine::new(engine, dir.path().join("snapshots"), 1_000).unwrap();
        let stage = |name: &str, bytes: &[u8]| {
            let path = machine.snapshot_dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };

        let (_, current) = machine
            .make_current(&stage("installing.tmp", b"newer"), &meta(10))
            .unwrap();
        assert!(current);
        let (mut older, current) = machine
            .make_current(&stage("building.tmp", b"older"), &meta(7))
            .unwrap();
        assert!(!current, "an older snapshot became current");
        let mut read = String::new();
        std::io::Read::read_to_string(&mut older, &mut read).unwrap();
        assert_eq!(read, "older", "the superseded build is still readable");

        let (stored, mut file) = machine.open_current().unwrap().unwrap();
        assert_eq!(stored.meta.snapshot_id, "1-10");
        let mut read = String::new();
        std::io::Read::read_to_string(&mut file, &mut read).unwrap();
        assert_eq!(read, "newer");
        let files: Vec<String> = std::fs::read_dir(&machine.snapshot_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != META_FILE)
            .collect();
        assert_eq!(files, vec!["snapshot-1-10.data".to_string()]);

        // The same or a newer one replaces it and removes the old data file.
        machine
            .make_current(&stage("building.tmp", b"newest"), &meta(12))
            .unwrap();
        let (stored, _) = machine.open_current().unwrap().unwrap();
        assert_eq!(stored.meta.snapshot_id, "1-12");
        assert!(!machine.snapshot_dir.join("snapshot-1-10.data").exists());
    }
}
