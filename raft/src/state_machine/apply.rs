//! Applying committed entries. Every command gets its own revision, also inside a batch entry
//! (the write batcher packs concurrent commands into one entry: one fsync for all of them), and
//! applies exactly as it would have alone in an entry of its own.
//!
//! Revisions: a command's revision is `max(previous revision + 1, its entry's log index)`. An
//! entry of one command thus keeps the revision it always had (its index), a batch's commands
//! take the next ones, and data written before batches existed needs no migration: every
//! replica computes the same numbers from the same log, whenever it was upgraded.
//!
//! Atomicity: each command's changes land in one RocksDB write together with the revision and
//! how far its entry got (`applied_part`); the entry's last command also writes `last_applied`.
//! A crash in the middle of a batch resumes after its last applied command, so none applies
//! twice, and a later command of the batch reads the earlier ones' writes like any other.

use std::sync::Arc;

use openraft::{EntryPayload, LogId, StorageError, StorageIOError, StoredMembership};
use strata_registry::RegistryCommand;
use strata_storage::kv::{KvCommand, RevisionEvents, StateTxn};
use strata_storage::quota::Quota;
use strata_stream::StreamCommand;

use super::StateMachine;
use crate::types::{Command, Request, Response, TypeConfig};

pub(crate) const META_REVISION: &[u8] = b"revision";
/// The newest command time applied (see `clock`): a restarted node resumes from it.
pub(crate) const META_CLUSTER_TIME: &[u8] = b"cluster_time";
/// `(log index, commands applied)` of a batch entry applied in part.
pub(crate) const META_APPLIED_PART: &[u8] = b"applied_part";

/// What a command's write also records.
enum Finish {
    /// The entry's last command: the entry is applied.
    Entry,
    /// `done` commands of the batch at `index` are applied.
    Part { index: u64, done: u64 },
}

fn write_error(error: impl std::error::Error + 'static) -> StorageError<u64> {
    StorageIOError::write_state_machine(&error).into()
}

impl StateMachine {
    /// Applies committed entries in order (on a blocking thread: see `apply`).
    pub(super) fn apply_entries(
        &self,
        entries: Vec<openraft::Entry<TypeConfig>>,
    ) -> Result<Vec<Response>, StorageError<u64>> {
        let mut responses = Vec::with_capacity(entries.len());
        for entry in entries {
            let log_id = entry.log_id;
            let response = match &entry.payload {
                EntryPayload::Blank => {
                    self.apply_one(log_id, None, Finish::Entry)?;
                    Response::None
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(log_id), membership.clone());
                    self.apply_one(log_id, Some(Meta::Membership(stored)), Finish::Entry)?;
                    Response::None
                }
                EntryPayload::Normal(Request {
                    command: Command::Batch(requests),
                    ..
                }) => self.apply_batch(log_id, requests)?,
                EntryPayload::Normal(request) => {
                    self.apply_one(log_id, Some(Meta::Request(request)), Finish::Entry)?
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    fn apply_batch(
        &self,
        log_id: LogId<u64>,
        requests: &[Request],
    ) -> Result<Response, StorageError<u64>> {
        if requests.is_empty() {
            self.apply_one(log_id, None, Finish::Entry)?;
            return Ok(Response::Batch(Vec::new()));
        }
        // After a crash in the middle of this entry: its first `done` commands are applied
        // (their callers are gone with the crash; nobody reads these answers).
        let done = match self.read_meta::<(u64, u64)>(META_APPLIED_PART)? {
            Some((index, done)) if index == log_id.index => done as usize,
            _ => 0,
        };
        let mut responses = Vec::with_capacity(requests.len());
        for (position, request) in requests.iter().enumerate() {
            if position < done {
                responses.push(Response::None);
                continue;
            }
            let finish = if position + 1 == requests.len() {
                Finish::Entry
            } else {
                Finish::Part {
                    index: log_id.index,
                    done: position as u64 + 1,
                }
            };
            responses.push(self.apply_one(log_id, Some(Meta::Request(request)), finish)?);
        }
        Ok(Response::Batch(responses))
    }

    /// Applies one command (or an entry without one) in one atomic write, then tells watchers
    /// and consumers.
    fn apply_one(
        &self,
        log_id: LogId<u64>,
        what: Option<Meta<'_>>,
        finish: Finish,
    ) -> Result<Response, StorageError<u64>> {
        let request = match &what {
            Some(Meta::Request(request)) => Some(*request),
            _ => None,
        };
        let revision = match request {
            Some(_) => (self.revisions.applied() + 1).max(log_id.index),
            None => self.revisions.applied(),
        };
        let mut txn = StateTxn::new(revision);
        let mut notices = Vec::new();
        let mut registry_events = Vec::new();
        let response = match request.map(|r| (&r.command, r.time_ms)) {
            None => Response::None,
            Some((Command::Kv(command), time_ms)) => Response::Kv(
                self.kv
                    .apply(&mut txn, time_ms, command)
                    .map_err(write_error)?,
            ),
            Some((Command::Stream(command), time_ms)) => {
                let (response, changed) = self
                    .stream
                    .apply(&mut txn, time_ms, command)
                    .map_err(write_error)?;
                notices = changed;
                Response::Stream(response)
            }
            Some((Command::Registry(command), _)) => {
                let (response, events) = self
                    .registry
                    .apply(&mut txn, command)
                    .map_err(write_error)?;
                registry_events = events;
                Response::Registry(response)
            }
            Some((Command::Auth(command), time_ms)) => Response::Auth(
                self.auth
                    .apply(&mut txn, time_ms, command)
                    .map_err(write_error)?,
            ),
            Some((Command::Quota(command), _)) => {
                Response::Quota(self.quota.apply(&mut txn, command))
            }
            // The batcher never nests batches; one that arrives anyway changes nothing.
            Some((Command::Batch(_), _)) => Response::None,
        };
        let mut response = response;
        if let Some(exceeded) =
            request.and_then(|r| self.quota.check(&txn, checked_quotas(&r.command)))
        {
            // Refused whole: drop everything the command wrote; only the entry's progress and
            // the revision it consumed are written.
            txn = StateTxn::new(revision);
            notices.clear();
            registry_events.clear();
            response = Response::QuotaExceeded(exceeded);
        }
        let usage = self.quota.stage(&mut txn).map_err(write_error)?;
        if let Some(Meta::Membership(stored)) = &what {
            let bytes = bincode::serialize(stored).map_err(write_error)?;
            txn.put_meta(super::META_MEMBERSHIP, &bytes);
        }
        if let Some(request) = request {
            txn.put_meta(
                META_REVISION,
                &bincode::serialize(&revision).map_err(write_error)?,
            );
            let newest = self
                .clock
                .newest_applied()
                .unwrap_or(0)
                .max(request.time_ms);
            txn.put_meta(
                META_CLUSTER_TIME,
                &bincode::serialize(&newest).map_err(write_error)?,
            );
        }
        match finish {
            Finish::Entry => {
                let applied = bincode::serialize(&Some(log_id)).map_err(write_error)?;
                txn.put_meta(super::META_LAST_APPLIED, &applied);
            }
            Finish::Part { index, done } => {
                let part = bincode::serialize(&(index, done)).map_err(write_error)?;
                txn.put_meta(META_APPLIED_PART, &part);
            }
        }
        crate::failpoints::crash_point("apply-before-commit");
        crate::failpoints::error_point("apply-error").map_err(write_error)?;
        let events = self.kv.commit(txn).map_err(write_error)?;
        self.quota.publish(usage);
        if let Some(request) = request {
            self.clock.observe(request.time_ms);
        }
        self.revisions.set(revision);
        if !events.is_empty() {
            // No receivers is fine: nobody is watching.
            let _ = self
                .events
                .send(Arc::new(RevisionEvents { revision, events }));
        }
        if !registry_events.is_empty() {
            let _ = self
                .registry_events
                .send(Arc::new((revision, registry_events)));
        }
        if !notices.is_empty() {
            let _ = self.notices.send(Arc::new((revision, notices)));
        }
        Ok(response)
    }
}

/// The quotas a command is refused for when it would take its namespace past them: growth a
/// client asked for. What the system does on its own (expiry, retention, deletions, a group's
/// dead-lettering) is counted but never refused, so that it can always make progress.
pub(super) fn checked_quotas(command: &Command) -> &'static [Quota] {
    match command {
        Command::Kv(KvCommand::Put { .. } | KvCommand::Delete { .. } | KvCommand::Txn { .. }) => {
            &[Quota::Keys, Quota::Bytes]
        }
        Command::Stream(StreamCommand::Publish { .. }) => &[Quota::Topics, Quota::StreamBytes],
        Command::Stream(StreamCommand::PutTopic { .. }) => &[Quota::Topics],
        // The step that creates a group (and its topic, if absent); later steps carry acks,
        // which must never be refused.
        Command::Stream(StreamCommand::Group { settle, claim, .. })
            if settle.is_empty() && *claim == 0 =>
        {
            &[Quota::Topics]
        }
        Command::Registry(RegistryCommand::Register { .. }) => &[Quota::Nodes],
        Command::Registry(RegistryCommand::ConfigSet { .. }) => &[Quota::Keys, Quota::Bytes],
        _ => &[],
    }
}

/// What `apply_one` writes besides the entry's progress: a command, or a membership.
enum Meta<'a> {
    Request(&'a Request),
    Membership(StoredMembership<u64, openraft::BasicNode>),
}

/// The revision of the newest applied command, shared by every handle of the state machine and
/// watched by those waiting for one (a consumer waiting until this node applied its step).
#[derive(Clone)]
pub(crate) struct Revisions {
    applied: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Revisions {
    pub(super) fn new() -> Self {
        Self {
            applied: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub(crate) fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Sets the applied revision (from a command just applied, or read from the state).
    pub(super) fn set(&self, revision: u64) {
        self.applied.send_replace(revision);
    }

    /// Waits until a command at `revision` or later is applied, for at most `timeout`.
    pub(crate) async fn wait_for(
        &self,
        revision: u64,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, async {
            applied.wait_for(|r| *r >= revision).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) => Err("the state machine stopped".into()),
            Err(_) => Err(format!(
                "revision {revision} not applied here within {} ms (applied: {})",
                timeout.as_millis(),
                self.applied()
            )),
        }
    }
}

/// The newest applied revision a state records: the stored one, or for data from before
/// revisions were stored, the last applied index (every revision then was an index).
pub(crate) fn revision_of(stored: Option<u64>, applied: Option<LogId<u64>>) -> u64 {
    stored.unwrap_or_else(|| applied.map_or(0, |id| id.index))
}

impl StateMachine {
    /// Reads the applied revision from the state (at open and after a snapshot import): the
    /// stored one, or for data from before revisions were stored, the last applied index
    /// (every revision then was an index).
    pub(super) fn load_revision(&self) -> Result<(), StorageError<u64>> {
        let stored = self.read_meta::<u64>(META_REVISION)?;
        let applied = match stored {
            Some(_) => None,
            None => self
                .read_meta::<Option<LogId<u64>>>(super::META_LAST_APPLIED)?
                .flatten(),
        };
        self.revisions.set(revision_of(stored, applied));
        // The cluster's time resumes from the newest applied stamp, never from this node's
        // own wall clock (behind the true time by the downtime until the next stamp arrives).
        if let Some(time_ms) = self.read_meta::<u64>(META_CLUSTER_TIME)? {
            self.clock.observe(time_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Entry};
    use proptest::prelude::*;
    use strata_storage::kv::{
        Compare, CompareOp, CompareTarget, Expiry, KvCommand, ListQuery, Precondition, Put, Scope,
        TxnOp,
    };
    use strata_storage::Engine;

    use super::*;

    fn scope() -> Scope {
        Scope::new("ns", "db", "t")
    }

    fn put(key: u8, value: u8) -> Put {
        Put {
            key: vec![b'a' + key],
            value: vec![value],
            metadata: BTreeMap::new(),
            expiry: Expiry::Never,
        }
    }

    /// Commands over three keys whose outcomes depend on what came before: puts and deletes
    /// with and without preconditions on mod revisions, create-only puts, transactions.
    fn command() -> impl Strategy<Value = KvCommand> {
        let key = 0u8..3;
        prop_oneof![
            (key.clone(), any::<u8>()).prop_map(|(k, v)| KvCommand::Put {
                scope: scope(),
                put: put(k, v),
                precondition: Precondition::None,
            }),
            (key.clone(), any::<u8>(), 0u64..12).prop_map(|(k, v, rev)| KvCommand::Put {
                scope: scope(),
                put: put(k, v),
                precondition: Precondition::ModRevision(rev),
            }),
            (key.clone(), any::<u8>()).prop_map(|(k, v)| KvCommand::Put {
                scope: scope(),
                put: put(k, v),
                precondition: Precondition::Absent,
            }),
            (key.clone(), prop::option::of(0u64..12)).prop_map(|(k, rev)| KvCommand::Delete {
                scope: scope(),
                key: vec![b'a' + k],
                prefix: false,
                precondition: rev.map_or(Precondition::None, Precondition::ModRevision),
            }),
            (1u32..3).prop_map(|limit| KvCommand::DeletePrefix {
                scope: scope(),
                prefix: Vec::new(),
                limit,
            }),
            (key.clone(), key, any::<u8>()).prop_map(|(k, other, v)| KvCommand::Txn {
                scope: scope(),
                compares: vec![Compare {
                    key: vec![b'a' + k],
                    op: CompareOp::Equal,
                    target: CompareTarget::Exists(true),
                }],
                success: vec![TxnOp::Put(put(other, v))],
                failure: vec![TxnOp::Delete {
                    key: vec![b'a' + other],
                    prefix: false,
                }],
            }),
        ]
    }

    fn machine() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("db")).unwrap();
        let machine = StateMachine::new(engine, dir.path().join("snapshots"), 1_000).unwrap();
        (dir, machine)
    }

    fn entry(index: u64, command: Command) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request {
                time_ms: 1_000 + index,
                command,
            }),
        }
    }

    /// What a client can observe: each command's answer, the watch history, the final state.
    type Observed = (
        Vec<Response>,
        Vec<RevisionEvents>,
        Vec<(Vec<u8>, strata_storage::kv::Record)>,
    );

    fn observe(machine: &StateMachine, responses: Vec<Response>) -> Observed {
        let history = machine.kv.history(0, 10_000).unwrap().revisions;
        let query = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        let state = machine.kv.list(&scope(), &query, 0).unwrap().items;
        (responses, history, state)
    }

    /// Each command in an entry of its own.
    fn one_by_one(commands: &[KvCommand]) -> Observed {
        let (_dir, machine) = machine();
        let entries = commands
            .iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, Command::Kv(c.clone())))
            .collect();
        let responses = machine.apply_entries(entries).unwrap();
        observe(&machine, responses)
    }

    /// The same commands packed into batch entries of the given sizes (each command keeps the
    /// time it was proposed with), answers unpacked.
    fn packed(commands: &[KvCommand], sizes: &[usize]) -> Observed {
        let (_dir, machine) = machine();
        let mut entries = Vec::new();
        let mut rest = commands;
        let mut sizes = sizes.iter().cycle();
        let mut proposed = 0;
        while !rest.is_empty() {
            let take = (*sizes.next().unwrap()).clamp(1, rest.len());
            let requests = rest[..take]
                .iter()
                .enumerate()
                .map(|(i, c)| Request {
                    time_ms: 1_000 + (proposed + i) as u64 + 1,
                    command: Command::Kv(c.clone()),
                })
                .collect();
            proposed += take;
            rest = &rest[take..];
            entries.push(entry(entries.len() as u64 + 1, Command::Batch(requests)));
        }
        let mut responses = Vec::new();
        for response in machine.apply_entries(entries).unwrap() {
            match response {
                Response::Batch(answers) => responses.extend(answers),
                other => panic!("a batch answered {other:?}"),
            }
        }
        observe(&machine, responses)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Issue 18: packing never changes an outcome, a revision or a watch event.
        #[test]
        fn batches_apply_exactly_as_one_command_per_entry(
            commands in prop::collection::vec(command(), 1..24),
            sizes in prop::collection::vec(1usize..6, 1..5),
        ) {
            let alone = one_by_one(&commands);
            let together = packed(&commands, &sizes);
            prop_assert_eq!(alone, together);
        }
    }

    #[test]
    fn a_batch_applied_in_part_resumes_after_its_last_applied_command() {
        let (_dir, machine) = machine();
        let requests: Vec<Request> = (0..3)
            .map(|k| Request {
                time_ms: 1,
                command: Command::Kv(KvCommand::Put {
                    scope: scope(),
                    put: put(0, k),
                    precondition: Precondition::None,
                }),
            })
            .collect();
        // As if the node crashed after the batch's first two commands were written.
        let (first_two, _) = requests.split_at(2);
        let log_id = LogId::new(CommittedLeaderId::new(1, 1), 1);
        for (k, request) in first_two.iter().enumerate() {
            let finish = Finish::Part {
                index: 1,
                done: k as u64 + 1,
            };
            machine
                .apply_one(log_id, Some(Meta::Request(request)), finish)
                .unwrap();
        }
        assert_eq!(
            machine.applied().unwrap().0,
            None,
            "the entry is not applied yet"
        );
        let responses = machine
            .apply_entries(vec![entry(1, Command::Batch(requests))])
            .unwrap();
        let Response::Batch(answers) = &responses[0] else {
            panic!("{responses:?}")
        };
        assert_eq!(answers[..2], [Response::None, Response::None]);
        assert_eq!(
            answers[2],
            Response::Kv(strata_storage::kv::KvResponse::Put {
                revision: 3,
                version: 3
            }),
            "the third put is the key's third version, not its fourth or fifth"
        );
        assert_eq!(machine.applied().unwrap().0, Some(log_id));
        assert_eq!(machine.revisions.applied(), 3);
    }

    #[test]
    fn revisions_follow_the_log_until_batches_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let engine = Engine::open(&dir.path().join("db")).unwrap();
            StateMachine::new(engine, dir.path().join("snapshots"), 1_000).unwrap()
        };
        let machine = open();
        let kv = |k: u8| {
            Command::Kv(KvCommand::Put {
                scope: scope(),
                put: put(k, 0),
                precondition: Precondition::None,
            })
        };
        let request = |k: u8| Request {
            time_ms: 1,
            command: kv(k),
        };
        let blank = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Blank,
        };
        machine
            .apply_entries(vec![
                entry(1, kv(0)),
                blank,
                entry(3, Command::Batch(vec![request(0), request(1), request(2)])),
                entry(4, kv(1)),
                entry(9, kv(2)),
            ])
            .unwrap();
        // 1; a blank entry takes none; 3, 4, 5 for the batch; 6 (past index 4); 9 (index 9).
        assert_eq!(machine.revisions.applied(), 9);
        let history: Vec<u64> = machine
            .kv
            .history(0, 100)
            .unwrap()
            .revisions
            .iter()
            .map(|r| r.revision)
            .collect();
        assert_eq!(history, vec![1, 3, 4, 5, 6, 9]);
        drop(machine);
        assert_eq!(open().revisions.applied(), 9, "read back from the state");
    }
}
