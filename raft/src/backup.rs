//! Backups of the whole replicated state (etcd's `snapshot save|status|restore`): taken from a
//! live cluster through any node ([`RaftNode::backup`]), checked ([`verify`]) and turned into
//! the data directory of a member of a new cluster ([`restore`]).
//!
//! A backup file: `STRBKUP1` ++ header length (u32 LE) ++ header (JSON, [`BackupHeader`]) ++
//! state (the state-machine snapshot format of `strata_storage::engine`, its crc32 at its end)
//! ++ SHA-256 of everything before (32 bytes). The node that exports the state computes its
//! crc32, so that covers the transfer; the SHA-256 covers the file at rest.
//!
//! Restore makes the state the base of the new cluster: a Raft snapshot at log id (term 0,
//! index 0), the id openraft gives the initial membership entry, whose membership is the new
//! cluster's members. Every member restored from the same file starts from the same base, so
//! they agree from the start, and a node added later receives the base as a Raft snapshot (no
//! log before it exists to replay). Revisions, group cursors and the cluster's clock go on
//! from the backup's; registry leases begin afresh under the new cluster's first leader.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, CommittedLeaderId, LogId, Membership, StoredMembership};
use serde::{Deserialize, Serialize};
use strata_storage::engine::{read_snapshot, SnapshotWriter, CF_SM_META, STATE_CFS};
use strata_storage::Engine;

use crate::node::{RaftNode, ReadError};
use crate::state_machine::{
    revision_of, StateMachine, META_APPLIED_PART, META_CLUSTER_TIME, META_LAST_APPLIED,
    META_MEMBERSHIP, META_REVISION,
};

const MAGIC: &[u8; 8] = b"STRBKUP1";
/// The header layout this build writes and reads.
pub const FORMAT: u32 = 1;
/// Largest header a file may declare (a real one is well under 1 KiB per member).
const MAX_HEADER_BYTES: u32 = 1 << 20;
const DIGEST_BYTES: u64 = 32;
/// State bytes per message of a backup stream.
pub const CHUNK_BYTES: usize = 256 * 1024;

/// What a backup holds, besides its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// The version of the `strata` that exported it.
    pub strata_version: String,
    /// The node that exported it.
    pub source_node: u64,
    /// The newest revision the state holds: every write acknowledged before the backup
    /// started has a revision at or below it.
    pub revision: u64,
    /// The source cluster's last applied log entry.
    pub applied_index: u64,
    pub applied_term: u64,
    /// The source cluster's members (node id → peer address) and voters, for reference: a
    /// restore names the new cluster's own.
    pub members: BTreeMap<u64, String>,
    pub voters: BTreeSet<u64>,
    /// The cluster's clock (newest command time applied), ms since the epoch.
    pub cluster_time_ms: u64,
    /// When the export began, by the exporting node's wall clock, ms since the epoch.
    pub created_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Storage(String),
    /// The file is not a backup this build can read, or it is damaged.
    #[error("{0}")]
    Invalid(String),
    /// A restore that cannot go ahead as asked (nothing was written).
    #[error("{0}")]
    Refused(String),
}

impl From<strata_storage::StorageError> for BackupError {
    fn from(error: strata_storage::StorageError) -> Self {
        BackupError::Storage(error.to_string())
    }
}

/// One message of a backup stream.
#[derive(Debug)]
pub enum BackupPart {
    /// First: the header, and RocksDB's estimate of the entries to come.
    Header {
        header: BackupHeader,
        estimated_entries: u64,
    },
    /// State bytes, and how many entries have been exported so far.
    Data { bytes: Vec<u8>, entries: u64 },
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: Option<Vec<u8>>,
) -> Result<Option<T>, BackupError> {
    bytes
        .map(|bytes| bincode::deserialize(&bytes))
        .transpose()
        .map_err(|e| BackupError::Storage(format!("decoding the state's metadata: {e}")))
}

fn header_of(
    export: &strata_storage::engine::StateExport<'_>,
    source_node: u64,
) -> Result<BackupHeader, BackupError> {
    let applied: Option<LogId<u64>> =
        decode::<Option<LogId<u64>>>(export.meta(META_LAST_APPLIED)?)?.flatten();
    let membership: StoredMembership<u64, BasicNode> =
        decode(export.meta(META_MEMBERSHIP)?)?.unwrap_or_default();
    let revision = revision_of(decode::<u64>(export.meta(META_REVISION)?)?, applied);
    Ok(BackupHeader {
        format: FORMAT,
        strata_version: env!("CARGO_PKG_VERSION").to_string(),
        source_node,
        revision,
        applied_index: applied.map_or(0, |id| id.index),
        applied_term: applied.map_or(0, |id| id.leader_id.term),
        members: membership
            .membership()
            .nodes()
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect(),
        voters: membership.membership().voter_ids().collect(),
        cluster_time_ms: decode::<u64>(export.meta(META_CLUSTER_TIME)?)?.unwrap_or(0),
        created_ms: crate::node::now_ms(),
    })
}

/// Sends the exported bytes as [`BackupPart::Data`] of at most [`CHUNK_BYTES`], from a
/// blocking thread; cut once the reader takes nothing for `stall`.
struct ChunkSink {
    buffer: Vec<u8>,
    sink: tokio::sync::mpsc::Sender<BackupPart>,
    runtime: tokio::runtime::Handle,
    entries: Arc<AtomicU64>,
    stall: Duration,
}

impl ChunkSink {
    fn send(&mut self, part: BackupPart) -> std::io::Result<()> {
        match self
            .runtime
            .block_on(tokio::time::timeout(self.stall, self.sink.send(part)))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the reader of the backup went away",
            )),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the reader of the backup took nothing for {} s",
                    self.stall.as_secs()
                ),
            )),
        }
    }

    fn send_buffer(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        let entries = self.entries.load(Ordering::Relaxed);
        self.send(BackupPart::Data { bytes, entries })
    }
}

impl Write for ChunkSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK_BYTES - self.buffer.len();
        let taken = bytes.len().min(room);
        self.buffer.extend_from_slice(&bytes[..taken]);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send_buffer()?;
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send_buffer()
    }
}

impl RaftNode {
    /// Streams a backup of the whole state into `sink`: a [`BackupPart::Header`], then the
    /// state. It reflects every write acknowledged before the call (a linearizable read point
    /// first; then one consistent view of this node's state, while writes go on). The export
    /// runs on a blocking thread and stops when the reader takes nothing for `stall`.
    pub async fn backup(
        &self,
        sink: tokio::sync::mpsc::Sender<BackupPart>,
        stall: Duration,
    ) -> Result<BackupHeader, BackupError> {
        self.linearizable_barrier().await?;
        let engine = self.engine().clone();
        let source_node = self.node_id();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || -> Result<BackupHeader, BackupError> {
            let export = engine.begin_export();
            let header = header_of(&export, source_node)?;
            let mut out = ChunkSink {
                buffer: Vec::with_capacity(CHUNK_BYTES),
                sink,
                runtime,
                entries: Arc::default(),
                stall,
            };
            out.send(BackupPart::Header {
                header: header.clone(),
                estimated_entries: engine.estimate_state_entries(),
            })?;
            let entries = out.entries.clone();
            export.write_to(&mut out, &entries)?;
            Ok(header)
        })
        .await
        .map_err(|e| BackupError::Storage(format!("the export task failed: {e}")))?
    }
}

/// Writes a backup file: the header first, then the state as it arrives, then the digest.
pub struct BackupWriter<W: Write> {
    out: W,
    digest: ring::digest::Context,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(mut out: W, header: &BackupHeader) -> std::io::Result<Self> {
        let encoded = serde_json::to_vec(header).map_err(std::io::Error::other)?;
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [&MAGIC[..], &(encoded.len() as u32).to_le_bytes(), &encoded] {
            digest.update(part);
            out.write_all(part)?;
        }
        Ok(Self { out, digest })
    }

    /// The next bytes of the state, as the node sent them.
    pub fn state(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.digest.update(bytes);
        self.out.write_all(bytes)
    }

    /// Writes the digest; returns the writer and the digest (hex).
    pub fn finish(mut self) -> std::io::Result<(W, String)> {
        let digest = self.digest.finish();
        self.out.write_all(digest.as_ref())?;
        self.out.flush()?;
        Ok((self.out, hex(digest.as_ref())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A backup file, checked completely.
#[derive(Debug, Clone)]
pub struct BackupInfo {
    pub header: BackupHeader,
    /// State entries it holds.
    pub entries: u64,
    /// Bytes of the whole file and of its state.
    pub file_bytes: u64,
    pub state_bytes: u64,
    /// SHA-256 of the file's contents before the digest (hex).
    pub sha256: String,
    state_offset: u64,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> BackupError {
    BackupError::Invalid(format!("{}: {what}", path.display()))
}

/// Checks a backup file completely (digest, header, the state's structure and crc32)
/// without changing anything, and describes it.
pub fn verify(path: &Path) -> Result<BackupInfo, BackupError> {
    let mut file = std::fs::File::open(path)?;
    let file_bytes = file.metadata()?.len();
    let smallest = (MAGIC.len() + 4) as u64 + DIGEST_BYTES;
    if file_bytes < smallest {
        return Err(invalid(
            path,
            format!("not a Strata backup, or truncated: {file_bytes} bytes"),
        ));
    }
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid(path, "not a Strata backup (no STRBKUP1 header)"));
    }
    // One pass: the header and the state are parsed from the bytes being hashed (every length
    // is bounded by what the file holds). The digest is judged first: a truncated or damaged
    // file is told apart from one this build cannot read.
    file.seek(SeekFrom::Start(0))?;
    let mut body = Hashing {
        inner: std::io::BufReader::with_capacity(1 << 20, file.take(file_bytes - DIGEST_BYTES)),
        digest: ring::digest::Context::new(&ring::digest::SHA256),
    };
    let parsed = parse_body(&mut body, file_bytes);
    std::io::copy(&mut body, &mut std::io::sink())?;
    let mut file = body.inner.into_inner().into_inner();
    let mut stored = [0u8; DIGEST_BYTES as usize];
    file.read_exact(&mut stored)?;
    let digest = body.digest.finish();
    if digest.as_ref() != stored {
        return Err(invalid(
            path,
            "SHA-256 mismatch: the file is truncated or damaged",
        ));
    }
    let (header, entries, state_offset) = parsed.map_err(|what| invalid(path, what))?;
    if header.format != FORMAT {
        return Err(invalid(
            path,
            format!(
                "format {} (this build reads format {FORMAT}); written by strata {}",
                header.format, header.strata_version
            ),
        ));
    }
    Ok(BackupInfo {
        header,
        entries,
        file_bytes,
        state_bytes: file_bytes - DIGEST_BYTES - state_offset,
        sha256: hex(digest.as_ref()),
        state_offset,
    })
}

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    digest: ring::digest::Context,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.digest.update(&buf[..read]);
        Ok(read)
    }
}

/// Reads a backup's body (all but the digest) from its start: the header, the state's
/// entries (counted) and where the state begins; or what is wrong with it.
fn parse_body(body: &mut impl Read, file_bytes: u64) -> Result<(BackupHeader, u64, u64), String> {
    let mut head = [0u8; MAGIC.len() + 4];
    body.read_exact(&mut head).map_err(|e| e.to_string())?;
    let header_bytes = u32::from_le_bytes(head[MAGIC.len()..].try_into().expect("4 bytes"));
    let state_offset = (MAGIC.len() + 4) as u64 + header_bytes as u64;
    if header_bytes > MAX_HEADER_BYTES || state_offset + DIGEST_BYTES > file_bytes {
        return Err(format!("a header of {header_bytes} bytes"));
    }
    let mut encoded = vec![0u8; header_bytes as usize];
    body.read_exact(&mut encoded).map_err(|e| e.to_string())?;
    let header: BackupHeader =
        serde_json::from_slice(&encoded).map_err(|e| format!("the header: {e}"))?;
    let mut entries = 0u64;
    read_snapshot(body, file_bytes - DIGEST_BYTES - state_offset, |_, _, _| {
        entries += 1;
        Ok(())
    })
    .map_err(|e| format!("the state: {e}"))?;
    Ok((header, entries, state_offset))
}

/// What [`restore`] made.
#[derive(Debug, Clone)]
pub struct Restored {
    pub info: BackupInfo,
    pub node_id: u64,
    pub members: BTreeMap<u64, String>,
}

/// Builds the data directory `data_dir` of node `node_id` of a new cluster whose voters are
/// `members` (node id → peer address), from the backup at `path`. Every member of the new
/// cluster is restored from the same file with the same `members`; each then starts with
/// `strata serve` on its directory (its `--initial-cluster` is not used to initialise: the
/// membership is in the data). `data_dir` must not exist or be empty; the file is checked
/// completely before anything is written.
pub async fn restore(
    path: &Path,
    data_dir: &Path,
    node_id: u64,
    members: BTreeMap<u64, String>,
) -> Result<Restored, BackupError> {
    if !members.contains_key(&node_id) {
        return Err(BackupError::Refused(format!(
            "node {node_id} is not one of the new cluster's members {:?}",
            members.keys().collect::<Vec<_>>()
        )));
    }
    if members.contains_key(&0) {
        return Err(BackupError::Refused("node ids start at 1".into()));
    }
    match std::fs::read_dir(data_dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BackupError::Refused(format!(
                    "{} is not empty: a restore builds a new data directory",
                    data_dir.display()
                )));
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error.into()),
    }
    let info = {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || verify(&path))
            .await
            .map_err(|e| BackupError::Storage(e.to_string()))??
    };
    let existed = data_dir.exists();
    if let Err(error) = write_data_dir(path, data_dir, node_id, &info, &members).await {
        // Nothing half-made stays behind: the directory was new or empty.
        let _ = std::fs::remove_dir_all(data_dir);
        if existed {
            let _ = std::fs::create_dir(data_dir);
        }
        return Err(error);
    }
    tracing::info!(
        node_id,
        revision = info.header.revision,
        entries = info.entries,
        data_dir = %data_dir.display(),
        "restored a backup into a new data directory"
    );
    Ok(Restored {
        info,
        node_id,
        members,
    })
}

/// Claims `data_dir` for `node_id` and builds its base (see [`build`]).
async fn write_data_dir(
    path: &Path,
    data_dir: &Path,
    node_id: u64,
    info: &BackupInfo,
    members: &BTreeMap<u64, String>,
) -> Result<(), BackupError> {
    crate::node::claim_node_id(data_dir, node_id)
        .map_err(|e| BackupError::Storage(e.to_string()))?;
    let engine = Engine::open(&data_dir.join("db"))?;
    let built = {
        let (engine, path, data_dir) = (engine.clone(), path.to_path_buf(), data_dir.to_path_buf());
        let (info, members) = (info.clone(), members.clone());
        tokio::task::spawn_blocking(move || build(&engine, &path, &data_dir, &info, &members))
            .await
            .map_err(|e| BackupError::Storage(e.to_string()))
    };
    let quiesced = engine.quiesce();
    built??;
    quiesced?;
    Ok(())
}

/// The base snapshot of a restored cluster: the backup's state with the new cluster's
/// membership at log id (0, 0), made this node's current snapshot and loaded.
fn build(
    engine: &Engine,
    path: &Path,
    data_dir: &Path,
    info: &BackupInfo,
    members: &BTreeMap<u64, String>,
) -> Result<(), BackupError> {
    let base = LogId::new(CommittedLeaderId::new(0, 0), 0);
    let membership = Membership::new(
        vec![members.keys().copied().collect::<BTreeSet<u64>>()],
        members
            .iter()
            .map(|(id, addr)| (*id, BasicNode::new(addr)))
            .collect::<BTreeMap<_, _>>(),
    );
    let stored = StoredMembership::new(Some(base), membership);
    let replaced: [(&[u8], Option<Vec<u8>>); 4] = [
        (META_LAST_APPLIED, Some(encode(&Some(base))?)),
        (META_MEMBERSHIP, Some(encode(&stored)?)),
        (META_REVISION, Some(encode(&info.header.revision)?)),
        (META_APPLIED_PART, None),
    ];
    let meta_cf = STATE_CFS
        .iter()
        .position(|name| *name == CF_SM_META)
        .expect("sm_meta is a state column family");
    let snapshots = data_dir.join("snapshots");
    std::fs::create_dir_all(&snapshots)?;
    let staged: PathBuf = snapshots.join("building.tmp");
    {
        let mut source = std::fs::File::open(path)?;
        source.seek(SeekFrom::Start(info.state_offset))?;
        let file = std::fs::File::create(&staged)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut writer = SnapshotWriter::new(&mut out)?;
        read_snapshot(&mut source, info.state_bytes, |cf, key, value| {
            if cf == meta_cf && replaced.iter().any(|(name, _)| *name == key) {
                return Ok(());
            }
            writer.put(cf, key, value)?;
            Ok(())
        })
        .map_err(|e| invalid(path, format!("the state: {e}")))?;
        for (key, value) in &replaced {
            if let Some(value) = value {
                writer.put(meta_cf, key, value)?;
            }
        }
        writer.finish()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let machine = StateMachine::new(
        engine.clone(),
        snapshots,
        strata_storage::kv::HISTORY_RETAIN_REVISIONS,
    )
    .map_err(|e| BackupError::Storage(e.to_string()))?;
    machine.restore_base(
        &staged,
        &openraft::SnapshotMeta {
            last_log_id: Some(base),
            last_membership: stored,
            snapshot_id: "0-0".into(),
        },
    )?;
    Ok(())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, BackupError> {
    bincode::serialize(value).map_err(|e| BackupError::Storage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            format: FORMAT,
            strata_version: "test".into(),
            source_node: 2,
            revision: 41,
            applied_index: 40,
            applied_term: 3,
            members: BTreeMap::from([(1, "a:1".into()), (2, "b:1".into())]),
            voters: BTreeSet::from([1, 2]),
            cluster_time_ms: 5,
            created_ms: 6,
        }
    }

    /// A backup file of a small real state.
    fn backup_file(dir: &Path) -> PathBuf {
        let engine = Engine::open(&dir.join("db")).unwrap();
        engine
            .db()
            .put_cf(
                engine.cf(CF_SM_META),
                META_CLUSTER_TIME,
                bincode::serialize(&5u64).unwrap(),
            )
            .unwrap();
        let mut state = Vec::new();
        engine.export_state_to(&mut state, &[]).unwrap();
        engine.quiesce().unwrap();
        let path = dir.join("backup.snap");
        let mut writer =
            BackupWriter::new(std::fs::File::create(&path).unwrap(), &header()).unwrap();
        // In pieces, as a stream delivers it.
        for piece in state.chunks(7) {
            writer.state(piece).unwrap();
        }
        writer.finish().unwrap();
        path
    }

    #[test]
    fn a_backup_verifies_and_every_truncation_or_bit_flip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = backup_file(dir.path());
        let info = verify(&path).unwrap();
        assert_eq!(info.header, header());
        assert_eq!(info.entries, 1);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(info.file_bytes, bytes.len() as u64);
        let damaged = dir.path().join("damaged.snap");
        for len in 0..bytes.len() {
            std::fs::write(&damaged, &bytes[..len]).unwrap();
            let error = verify(&damaged).unwrap_err().to_string();
            assert!(
                error.contains("truncated") || error.contains("not a Strata backup"),
                "cut at {len}: {error}"
            );
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x01;
            std::fs::write(&damaged, &flipped).unwrap();
            assert!(
                verify(&damaged).is_err(),
                "a bit flip at {at} went unnoticed"
            );
        }
    }

    #[tokio::test]
    async fn a_restore_refuses_a_used_directory_and_a_node_outside_the_members() {
        let dir = tempfile::tempdir().unwrap();
        let path = backup_file(dir.path());
        let members = BTreeMap::from([(1, "127.0.0.1:1".to_string())]);
        let used = dir.path().join("used");
        std::fs::create_dir_all(used.join("db")).unwrap();
        let error = restore(&path, &used, 1, members.clone()).await.unwrap_err();
        assert!(error.to_string().contains("is not empty"), "{error}");
        let fresh = dir.path().join("fresh");
        let error = restore(&path, &fresh, 2, members.clone())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("not one of"), "{error}");
        assert!(!fresh.exists());
        let restored = restore(&path, &fresh, 1, members).await.unwrap();
        assert_eq!(restored.info.entries, 1);
        // The base: applied at (0, 0) with the new membership, the revision kept.
        let engine = Engine::open(&fresh.join("db")).unwrap();
        let kv = strata_storage::kv::KvState::new(engine.clone());
        let (applied, membership) = crate::state_machine::applied_in(&kv).unwrap();
        assert_eq!(applied, Some(LogId::new(CommittedLeaderId::new(0, 0), 0)));
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
        let revision: u64 =
            bincode::deserialize(&kv.get_meta(META_REVISION).unwrap().unwrap()).unwrap();
        assert_eq!(revision, 41);
        engine.quiesce().unwrap();
    }
}
