//! openraft's `RaftStateMachine` over the key-value model.
//!
//! Each entry is applied in its own atomic RocksDB batch that also records the last applied log
//! id (and membership), so a restart resumes exactly after the last entry whose effects are
//! stored; openraft re-applies the rest from the log. Applied events are broadcast to live
//! watchers after their batch is written.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError,
    StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strata_storage::kv::{KvState, RevisionEvents, StateTxn};
use strata_storage::Engine;
use tokio::sync::broadcast;

use crate::types::{Command, Response, TypeConfig};

const META_LAST_APPLIED: &[u8] = b"last_applied";
const META_MEMBERSHIP: &[u8] = b"membership";
const SNAPSHOT_FILE: &str = "current.snapshot";

/// Buffered revisions per live-watch subscriber before it must catch up from history.
pub const WATCH_BROADCAST_CAPACITY: usize = 4_096;

/// The last applied log id and membership, as openraft asks for them.
type AppliedState = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

#[derive(Clone)]
pub struct StateMachine {
    engine: Engine,
    kv: KvState,
    events: broadcast::Sender<Arc<RevisionEvents>>,
    snapshot_dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, BasicNode>,
    data: Vec<u8>,
}

impl StateMachine {
    pub fn new(
        engine: Engine,
        snapshot_dir: PathBuf,
        history_retain_revisions: u64,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&snapshot_dir)?;
        let (events, _) = broadcast::channel(WATCH_BROADCAST_CAPACITY);
        let kv = KvState::with_history_retention(engine.clone(), history_retain_revisions);
        Ok(Self {
            kv,
            engine,
            events,
            snapshot_dir,
        })
    }

    pub fn kv(&self) -> &KvState {
        &self.kv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.events.subscribe()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<u64>> {
        self.kv
            .get_meta(key)
            .map_err(|e| StorageIOError::read_state_machine(&e))?
            .map(|bytes| {
                bincode::deserialize(&bytes)
                    .map_err(|e| StorageIOError::read_state_machine(&e).into())
            })
            .transpose()
    }

    fn applied(&self) -> Result<AppliedState, StorageError<u64>> {
        Ok((
            self.read_meta(META_LAST_APPLIED)?.flatten(),
            self.read_meta(META_MEMBERSHIP)?.unwrap_or_default(),
        ))
    }

    fn save_snapshot(&self, stored: &StoredSnapshot) -> std::io::Result<()> {
        use std::io::Write;
        let bytes = bincode::serialize(stored).map_err(std::io::Error::other)?;
        let temporary = self.snapshot_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.snapshot_dir.join(SNAPSHOT_FILE))?;
        std::fs::File::open(&self.snapshot_dir)?.sync_all()
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let (data, meta) = self
            .engine
            .export_state(&[META_LAST_APPLIED, META_MEMBERSHIP])
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let decode_error = |e: bincode::Error| StorageIOError::read_state_machine(&e);
        let last_log_id: Option<LogId<u64>> = match &meta[0] {
            Some(bytes) => bincode::deserialize(bytes).map_err(decode_error)?,
            None => None,
        };
        let last_membership: StoredMembership<u64, BasicNode> = match &meta[1] {
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
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)
            .map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
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
        let mut responses = Vec::new();
        for entry in entries {
            let mut txn = StateTxn::new(entry.log_id.index);
            let response = match &entry.payload {
                EntryPayload::Blank => Response::None,
                EntryPayload::Normal(request) => match &request.command {
                    Command::Kv(command) => Response::Kv(
                        self.kv
                            .apply(&mut txn, request.time_ms, command)
                            .map_err(|e| StorageIOError::write_state_machine(&e))?,
                    ),
                },
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership.clone());
                    let bytes = bincode::serialize(&stored)
                        .map_err(|e| StorageIOError::write_state_machine(&e))?;
                    txn.put_meta(META_MEMBERSHIP, &bytes);
                    Response::None
                }
            };
            let applied = bincode::serialize(&Some(entry.log_id))
                .map_err(|e| StorageIOError::write_state_machine(&e))?;
            txn.put_meta(META_LAST_APPLIED, &applied);
            let events = self
                .kv
                .commit(txn)
                .map_err(|e| StorageIOError::write_state_machine(&e))?;
            if !events.is_empty() {
                // No receivers is fine: nobody is watching.
                let _ = self.events.send(Arc::new(RevisionEvents {
                    revision: entry.log_id.index,
                    events,
                }));
            }
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let signature = Some(meta.signature());
        self.engine
            .import_state(&data)
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), &e))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored)
            .map_err(|e| StorageIOError::write_snapshot(signature, &e))?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        let stored: StoredSnapshot =
            bincode::deserialize(&bytes).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
