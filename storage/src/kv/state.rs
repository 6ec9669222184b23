//! Applying key-value commands and serving reads from RocksDB.
//!
//! Apply is deterministic: given the same state, revision, command time and command, every node
//! writes the same bytes. It never reads a clock. Reads take the reader's `now_ms` only to hide
//! records that have expired but whose removal has not yet gone through the log.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::command::*;
use super::record::{self, Event, EventKind, Record, RevisionEvents};
use super::SUBSYSTEM_KV;
use crate::engine::{Engine, CF_KV, CF_KV_CATALOG, CF_KV_EXPIRY, CF_KV_HISTORY, CF_SM_META};
use crate::quota::{record_bytes, Delta, Limits, Quota, TxnQuota, Usage};
use crate::{keys, StorageError};

/// Default number of revisions of watch history kept behind the newest.
pub const HISTORY_RETAIN_REVISIONS: u64 = 100_000;
/// History is trimmed in steps of at most this many revisions, not on every write.
const HISTORY_TRIM_STEP_MAX: u64 = 1_024;
/// At most this many stored rows are examined for one page of a list, so that a sparse suffix
/// filter cannot turn one request into a full scan; the page then ends early with a cursor.
pub const MAX_SCAN_PER_PAGE: usize = 10_000;

/// A raw RocksDB key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

const META_HISTORY_FLOOR: &[u8] = b"kv_history_floor";

/// The changes of one log entry, built up by [`KvState::apply`] and written by
/// [`KvState::commit`] in one atomic batch.
pub struct StateTxn {
    revision: u64,
    batch: WriteBatch,
    /// Records changed earlier in this entry, so that later operations read their own writes.
    overlay: HashMap<Vec<u8>, Option<Record>>,
    catalog_delta: BTreeMap<Vec<u8>, i64>,
    events: Vec<Event>,
    meta: Vec<(Vec<u8>, Vec<u8>)>,
    quota: TxnQuota,
}

impl StateTxn {
    pub fn new(revision: u64) -> Self {
        Self {
            revision,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            catalog_delta: BTreeMap::new(),
            events: Vec::new(),
            meta: Vec::new(),
            quota: TxnQuota::default(),
        }
    }

    /// Counts `change` against `namespace`'s usage of `quota` (see [`crate::quota`]).
    pub fn add_usage(&mut self, namespace: &str, quota: Quota, change: i64) {
        self.quota.add(namespace, quota, change);
    }

    /// How this entry's changes so far move each namespace's usage.
    pub fn usage_deltas(&self) -> &BTreeMap<String, Delta> {
        &self.quota.deltas
    }

    /// Replaces `namespace`'s limits (a `QuotaCommand`).
    pub fn set_limits(&mut self, namespace: &str, limits: Limits) {
        self.quota.limits = Some((namespace.to_string(), limits));
    }

    pub(crate) fn take_quota_changes(
        &mut self,
    ) -> (BTreeMap<String, Delta>, Option<(String, Limits)>) {
        let quota = std::mem::take(&mut self.quota);
        (quota.deltas, quota.limits)
    }

    #[cfg(test)]
    pub(crate) fn into_batch(self) -> WriteBatch {
        self.batch
    }

    /// The log index this entry applies at.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The entry's write batch, for other subsystems (streams) whose changes must land in the
    /// same atomic write as the entry's `last_applied`.
    pub fn batch_mut(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// Writes a state-machine metadata value in the same atomic batch.
    pub fn put_meta(&mut self, key: &[u8], value: &[u8]) {
        self.meta.push((key.to_vec(), value.to_vec()));
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
    /// Only keys after this one (before it, when descending).
    pub start_after: Option<Vec<u8>>,
    pub limit: usize,
    pub descending: bool,
    /// Return keys and revisions only: values and metadata are left empty.
    pub keys_only: bool,
    /// End the page early once it holds this many key and value bytes (0: no bound). A page
    /// always holds at least one record.
    pub max_bytes: usize,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<(Vec<u8>, Record)>,
    /// Set when more may follow: the next page starts after this key.
    pub resume_after: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub revisions: Vec<RevisionEvents>,
    /// The oldest revision still in history; asking for an older one is an error the caller
    /// reports, not silently skipped.
    pub floor: u64,
}

#[derive(Clone)]
pub struct KvState {
    engine: Engine,
    history_retain_revisions: u64,
}

impl KvState {
    pub fn new(engine: Engine) -> Self {
        Self::with_history_retention(engine, HISTORY_RETAIN_REVISIONS)
    }

    /// Keeps `revisions` revisions of watch history. Trimming is decided from the revision
    /// alone, so replicas with the same setting keep the same history.
    pub fn with_history_retention(engine: Engine, revisions: u64) -> Self {
        assert!(revisions > 0, "history retention must be positive");
        Self {
            engine,
            history_retain_revisions: revisions,
        }
    }

    // ----- apply -------------------------------------------------------------------------

    /// Applies one command at `revision` with the proposer's `time_ms`. Changes go into `txn`.
    pub fn apply(
        &self,
        txn: &mut StateTxn,
        time_ms: u64,
        command: &KvCommand,
    ) -> Result<KvResponse, StorageError> {
        assert_eq!(txn.events.len(), 0, "one command per StateTxn");
        let revision = txn.revision;
        match command {
            KvCommand::Put {
                scope,
                put,
                precondition,
            } => {
                let current = self.live(txn, scope, &put.key, time_ms)?;
                if let Some(failure) = check_precondition(precondition, current.as_ref()) {
                    return Ok(KvResponse::Failed(failure));
                }
                let version = self.put(txn, scope, put, current, time_ms);
                Ok(KvResponse::Put { revision, version })
            }
            KvCommand::Delete {
                scope,
                key,
                prefix,
                precondition,
            } => {
                if !*prefix {
                    let current = self.live(txn, scope, key, time_ms)?;
                    if let Some(failure) = check_precondition(precondition, current.as_ref()) {
                        return Ok(KvResponse::Failed(failure));
                    }
                }
                let deleted = self.delete(txn, scope, key, *prefix, time_ms)?;
                Ok(KvResponse::Delete { revision, deleted })
            }
            KvCommand::Txn {
                scope,
                compares,
                success,
                failure,
            } => {
                let mut succeeded = true;
                for compare in compares {
                    let current = self.live(txn, scope, &compare.key, time_ms)?;
                    if !compare_holds(compare, current.as_ref()) {
                        succeeded = false;
                        break;
                    }
                }
                let ops = if succeeded { success } else { failure };
                // A transaction is one atomic step: bound its prefix deletes before any change
                // (by the stored records; its own ops add at most MAX_TXN_OPS more).
                for op in ops {
                    if let TxnOp::Delete { key, prefix: true } = op {
                        let start = scan_prefix(scope, key);
                        let end = keys::prefix_end(&start);
                        let found = self
                            .range(&start, end.as_deref(), false)
                            .take(MAX_TXN_PREFIX_DELETE as usize + 1)
                            .count() as u64;
                        if found > MAX_TXN_PREFIX_DELETE {
                            return Ok(KvResponse::Failed(KvFailure::TooManyKeys {
                                limit: MAX_TXN_PREFIX_DELETE,
                            }));
                        }
                    }
                }
                let mut results = Vec::with_capacity(ops.len());
                for op in ops {
                    results.push(match op {
                        TxnOp::Put(put) => {
                            let current = self.live(txn, scope, &put.key, time_ms)?;
                            TxnOpResult::Put {
                                version: self.put(txn, scope, put, current, time_ms),
                            }
                        }
                        TxnOp::Delete { key, prefix } => TxnOpResult::Delete {
                            deleted: self.delete(txn, scope, key, *prefix, time_ms)?,
                        },
                        TxnOp::Get { key } => TxnOpResult::Get {
                            record: self.live(txn, scope, key, time_ms)?,
                        },
                    });
                }
                Ok(KvResponse::Txn {
                    revision,
                    succeeded,
                    results,
                })
            }
            KvCommand::Expire { keys: expiring } => {
                let mut expired = 0;
                for item in expiring {
                    let Some(record) = self.load(txn, &item.storage_key)? else {
                        continue;
                    };
                    if record.mod_revision != item.mod_revision || !record.is_expired_at(time_ms) {
                        continue;
                    }
                    let (scope, key) = decode_record_key(&item.storage_key)?;
                    self.remove(txn, &scope, &key, &item.storage_key, &record, true);
                    expired += 1;
                }
                Ok(KvResponse::Expire { revision, expired })
            }
            KvCommand::DeletePrefix {
                scope,
                prefix,
                limit,
            } => {
                let (deleted, more) =
                    self.delete_prefix_step(txn, scope, prefix, (*limit).max(1), time_ms)?;
                Ok(KvResponse::DeletePrefix {
                    revision,
                    deleted,
                    more,
                })
            }
        }
    }

    /// Removes the first `limit` records under `prefix` (expired ones too, uncounted);
    /// returns how many live ones went and whether any record remains.
    fn delete_prefix_step(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        prefix: &[u8],
        limit: u32,
        time_ms: u64,
    ) -> Result<(u64, bool), StorageError> {
        debug_assert!(
            txn.overlay.is_empty(),
            "a prefix step is a command of its own"
        );
        let start = scan_prefix(scope, prefix);
        let end = keys::prefix_end(&start);
        let mut rows = self.range(&start, end.as_deref(), false);
        let mut deleted = 0;
        for item in rows.by_ref().take(limit as usize) {
            deleted += self.remove_stored(txn, scope, &item?.0, time_ms)? as u64;
        }
        let more = rows.next().transpose()?.is_some();
        Ok((deleted, more))
    }

    /// Writes `txn` (records, indexes, catalog counts, history and metadata) in one batch.
    /// Not synced: the log entry it came from is durable, and the next log sync covers it.
    /// Returns the events, for live watchers.
    pub fn commit(&self, mut txn: StateTxn) -> Result<Vec<Event>, StorageError> {
        let db = self.engine.db();
        let catalog = self.engine.cf(CF_KV_CATALOG);
        for (table, delta) in std::mem::take(&mut txn.catalog_delta) {
            let current = match db.get_cf(catalog, &table)? {
                Some(bytes) => read_u64(&bytes)?,
                None => 0,
            };
            let updated = current as i64 + delta;
            assert!(
                updated >= 0,
                "live-key count below zero: {current} + {delta}"
            );
            if updated == 0 {
                txn.batch.delete_cf(catalog, &table);
            } else {
                txn.batch
                    .put_cf(catalog, &table, (updated as u64).to_be_bytes());
            }
        }
        if !txn.events.is_empty() {
            let history = RevisionEvents {
                revision: txn.revision,
                events: txn.events.clone(),
            };
            txn.batch.put_cf(
                self.engine.cf(CF_KV_HISTORY),
                txn.revision.to_be_bytes(),
                record::encode(&history),
            );
            self.trim_history(&mut txn)?;
        }
        let meta = self.engine.cf(CF_SM_META);
        for (key, value) in &txn.meta {
            txn.batch.put_cf(meta, key, value);
        }
        db.write(txn.batch)?;
        Ok(txn.events)
    }

    fn trim_history(&self, txn: &mut StateTxn) -> Result<(), StorageError> {
        let floor = self.history_floor()?;
        let retain = self.history_retain_revisions;
        let step = (retain / 8).clamp(1, HISTORY_TRIM_STEP_MAX);
        if txn.revision < floor + retain + step {
            return Ok(());
        }
        let new_floor = txn.revision - retain;
        let history = self.engine.cf(CF_KV_HISTORY);
        txn.batch
            .delete_range_cf(history, 0u64.to_be_bytes(), new_floor.to_be_bytes());
        txn.put_meta(META_HISTORY_FLOOR, &new_floor.to_be_bytes());
        Ok(())
    }

    fn put(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        put: &Put,
        current: Option<Record>,
        time_ms: u64,
    ) -> u64 {
        let storage_key = record_key(scope, &put.key);
        let expires_at_ms = match put.expiry {
            Expiry::Never => 0,
            Expiry::TtlMs(ttl) => time_ms.saturating_add(ttl),
            Expiry::AtMs(at) => at,
        };
        let record = Record {
            value: put.value.clone(),
            metadata: put.metadata.clone(),
            create_revision: current.as_ref().map_or(txn.revision, |c| c.create_revision),
            mod_revision: txn.revision,
            version: current.as_ref().map_or(1, |c| c.version + 1),
            expires_at_ms,
        };
        let bytes = record_bytes(&put.key, &record.value, &record.metadata) as i64;
        let freed = current.as_ref().map_or(0, |old| {
            record_bytes(&put.key, &old.value, &old.metadata) as i64
        });
        txn.add_usage(&scope.namespace, Quota::Bytes, bytes - freed);
        if current.is_none() {
            txn.add_usage(&scope.namespace, Quota::Keys, 1);
        }
        let expiry_cf = self.engine.cf(CF_KV_EXPIRY);
        match &current {
            Some(old) if old.expires_at_ms != 0 => {
                txn.batch
                    .delete_cf(expiry_cf, expiry_key(old.expires_at_ms, &storage_key));
            }
            Some(_) => {}
            None => *txn.catalog_delta.entry(catalog_key(scope)).or_default() += 1,
        }
        if expires_at_ms != 0 {
            txn.batch.put_cf(
                expiry_cf,
                expiry_key(expires_at_ms, &storage_key),
                txn.revision.to_be_bytes(),
            );
        }
        txn.batch
            .put_cf(self.engine.cf(CF_KV), &storage_key, record::encode(&record));
        let version = record.version;
        txn.events.push(Event {
            kind: EventKind::Put as i32,
            namespace: scope.namespace.clone(),
            database: scope.database.clone(),
            table: scope.table.clone(),
            key: put.key.clone(),
            record: Some(record.clone()),
            expired: false,
        });
        txn.overlay.insert(storage_key, Some(record));
        version
    }

    fn delete(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        key: &[u8],
        prefix: bool,
        time_ms: u64,
    ) -> Result<u64, StorageError> {
        if !prefix {
            return Ok(match self.live(txn, scope, key, time_ms)? {
                Some(record) => {
                    self.remove(txn, scope, key, &record_key(scope, key), &record, false);
                    1
                }
                None => 0,
            });
        }
        let start = scan_prefix(scope, key);
        let end = keys::prefix_end(&start);
        // Keys stored before this entry, plus those this entry created.
        let mut candidates: BTreeSet<Vec<u8>> = BTreeSet::new();
        for item in self.range(&start, end.as_deref(), false) {
            candidates.insert(item?.0.to_vec());
        }
        candidates.extend(
            txn.overlay
                .iter()
                .filter(|(k, v)| v.is_some() && k.starts_with(&start))
                .map(|(k, _)| k.clone()),
        );
        let mut deleted = 0;
        for storage_key in candidates {
            deleted += self.remove_stored(txn, scope, &storage_key, time_ms)? as u64;
        }
        Ok(deleted)
    }

    /// Removes the record at `storage_key` if there is one (an expired one too); whether a
    /// live record went.
    fn remove_stored(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        storage_key: &[u8],
        time_ms: u64,
    ) -> Result<bool, StorageError> {
        let Some(record) = self.load(txn, storage_key)? else {
            return Ok(false);
        };
        let (_, user_key) = decode_record_key(storage_key)?;
        let expired = record.is_expired_at(time_ms);
        self.remove(txn, scope, &user_key, storage_key, &record, expired);
        Ok(!expired)
    }

    fn remove(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        key: &[u8],
        storage_key: &[u8],
        record: &Record,
        expired: bool,
    ) {
        txn.batch.delete_cf(self.engine.cf(CF_KV), storage_key);
        if record.expires_at_ms != 0 {
            txn.batch.delete_cf(
                self.engine.cf(CF_KV_EXPIRY),
                expiry_key(record.expires_at_ms, storage_key),
            );
        }
        *txn.catalog_delta.entry(catalog_key(scope)).or_default() -= 1;
        let bytes = record_bytes(key, &record.value, &record.metadata) as i64;
        txn.add_usage(&scope.namespace, Quota::Keys, -1);
        txn.add_usage(&scope.namespace, Quota::Bytes, -bytes);
        txn.events.push(Event {
            kind: EventKind::Delete as i32,
            namespace: scope.namespace.clone(),
            database: scope.database.clone(),
            table: scope.table.clone(),
            key: key.to_vec(),
            record: None,
            expired,
        });
        txn.overlay.insert(storage_key.to_vec(), None);
    }

    /// The record as this entry sees it; one that has expired by `time_ms` is removed here
    /// (with its delete event) and reported absent, so the outcome never depends on whether
    /// the leader's sweep got to it first.
    fn live(
        &self,
        txn: &mut StateTxn,
        scope: &Scope,
        key: &[u8],
        time_ms: u64,
    ) -> Result<Option<Record>, StorageError> {
        let storage_key = record_key(scope, key);
        match self.load(txn, &storage_key)? {
            Some(record) if record.is_expired_at(time_ms) => {
                self.remove(txn, scope, key, &storage_key, &record, true);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    fn load(&self, txn: &StateTxn, storage_key: &[u8]) -> Result<Option<Record>, StorageError> {
        if let Some(changed) = txn.overlay.get(storage_key) {
            return Ok(changed.clone());
        }
        self.read_record(storage_key)
    }

    // ----- reads -------------------------------------------------------------------------

    /// The live record at `key`, or `None` if absent or expired at `now_ms`.
    pub fn get(
        &self,
        scope: &Scope,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<Record>, StorageError> {
        Ok(self
            .read_record(&record_key(scope, key))?
            .filter(|r| !r.is_expired_at(now_ms)))
    }

    /// One page of live records matching `query`.
    pub fn list(
        &self,
        scope: &Scope,
        query: &ListQuery,
        now_ms: u64,
    ) -> Result<ListPage, StorageError> {
        let table = table_prefix(scope);
        let prefix = scan_prefix(scope, &query.prefix);
        let prefix_end = keys::prefix_end(&prefix);
        assert!(query.limit > 0, "a list page holds at least one record");
        // The cursor narrows the prefix range; it never widens it.
        let (start, end) = match (&query.start_after, query.descending) {
            (Some(after), false) => {
                let mut from = record_key(scope, after);
                from.push(0); // strictly after
                (from.max(prefix.clone()), prefix_end)
            }
            (Some(before), true) => {
                let before = record_key(scope, before);
                let end = match prefix_end {
                    Some(prefix_end) => before.min(prefix_end),
                    None => before,
                };
                (prefix.clone(), Some(end))
            }
            (None, _) => (prefix.clone(), prefix_end),
        };
        if end.as_ref().is_some_and(|end| *end <= start) {
            return Ok(ListPage::default());
        }
        let mut page = ListPage::default();
        let mut scanned = 0;
        let mut bytes = 0;
        for item in self.range(&start, end.as_deref(), query.descending) {
            let (storage_key, value) = item?;
            let (user_key, _) = keys::decode_segment(&storage_key[table.len()..])?;
            scanned += 1;
            if user_key.ends_with(&query.suffix) {
                let record: Record = record::decode(&value)?;
                if !record.is_expired_at(now_ms) {
                    let record = if query.keys_only {
                        Record {
                            value: Vec::new(),
                            metadata: BTreeMap::new(),
                            ..record
                        }
                    } else {
                        record
                    };
                    let size = user_key.len() + record.value.len();
                    let full = page.items.len() == query.limit
                        || (query.max_bytes > 0
                            && !page.items.is_empty()
                            && bytes + size > query.max_bytes);
                    if full {
                        // A further match exists past this page: hand back a cursor.
                        page.resume_after = page.items.last().map(|(k, _)| k.clone());
                        return Ok(page);
                    }
                    bytes += size;
                    page.items.push((user_key.clone(), record));
                }
            }
            if scanned >= MAX_SCAN_PER_PAGE {
                page.resume_after = Some(user_key);
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Databases of `namespace` holding at least one key.
    pub fn databases(&self, namespace: &str) -> Result<Vec<String>, StorageError> {
        let names = self.catalog_names(&[namespace.as_bytes()], 1)?;
        Ok(names
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Every (namespace, database) pair holding at least one key, in order.
    pub fn all_databases(&self) -> Result<Vec<(String, String)>, StorageError> {
        let cf = self.engine.cf(CF_KV_CATALOG);
        let mut pairs = BTreeSet::new();
        for item in self.engine.db().iterator_cf(cf, IteratorMode::Start) {
            let (key, _) = item?;
            let segments = keys::decode(&key)?;
            let [namespace, database, ..] = segments.as_slice() else {
                return Err(StorageError::Corrupt(
                    "catalog key with too few segments".into(),
                ));
            };
            pairs.insert((
                String::from_utf8_lossy(namespace).into_owned(),
                String::from_utf8_lossy(database).into_owned(),
            ));
        }
        Ok(pairs.into_iter().collect())
    }

    /// Tables of `namespace`/`database` holding at least one key.
    pub fn tables(&self, namespace: &str, database: &str) -> Result<Vec<String>, StorageError> {
        self.catalog_names(&[namespace.as_bytes(), database.as_bytes()], 2)
    }

    fn catalog_names(
        &self,
        parents: &[&[u8]],
        segment: usize,
    ) -> Result<Vec<String>, StorageError> {
        let prefix = keys::encode(parents);
        let cf = self.engine.cf(CF_KV_CATALOG);
        let iter = self
            .engine
            .db()
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward));
        let mut names = Vec::new();
        for item in iter {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            let segments = keys::decode(&key)?;
            let name = segments
                .get(segment)
                .ok_or_else(|| StorageError::Corrupt("catalog key with too few segments".into()))?;
            names.push(String::from_utf8_lossy(name).into_owned());
        }
        Ok(names)
    }

    /// Up to `limit` records whose expiry is at or before `now_ms`, oldest expiry first.
    pub fn due_expirations(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<ExpireKey>, StorageError> {
        let cf = self.engine.cf(CF_KV_EXPIRY);
        let mut due = Vec::new();
        for item in self.engine.db().iterator_cf(cf, IteratorMode::Start) {
            let (key, value) = item?;
            if key.len() < 8 || due.len() >= limit {
                break;
            }
            let expires_at = u64::from_be_bytes(key[..8].try_into().expect("8 bytes"));
            if expires_at > now_ms {
                break;
            }
            due.push(ExpireKey {
                storage_key: key[8..].to_vec(),
                mod_revision: read_u64(&value)?,
            });
        }
        Ok(due)
    }

    /// History from `from_revision` on, at most `max_revisions` revisions.
    pub fn history(
        &self,
        from_revision: u64,
        max_revisions: usize,
    ) -> Result<HistoryPage, StorageError> {
        let floor = self.history_floor()?;
        let cf = self.engine.cf(CF_KV_HISTORY);
        let start = from_revision.max(floor).to_be_bytes();
        let mut page = HistoryPage {
            revisions: Vec::new(),
            floor,
        };
        for item in self
            .engine
            .db()
            .iterator_cf(cf, IteratorMode::From(&start, Direction::Forward))
        {
            if page.revisions.len() >= max_revisions {
                break;
            }
            page.revisions.push(record::decode(&item?.1)?);
        }
        Ok(page)
    }

    /// The oldest revision watchers can still start from.
    pub fn history_floor(&self) -> Result<u64, StorageError> {
        match self.get_meta(META_HISTORY_FLOOR)? {
            Some(bytes) => read_u64(&bytes),
            None => Ok(1),
        }
    }

    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.engine.db().get_cf(self.engine.cf(CF_SM_META), key)?)
    }

    /// Counts every stored record into `usage` by namespace (keys, and bytes as the `bytes`
    /// quota counts them), from the records themselves: the recount stored usage must match.
    pub fn recount_usage(&self, usage: &mut BTreeMap<String, Usage>) -> Result<(), StorageError> {
        let db = self.engine.db();
        for item in db.iterator_cf(self.engine.cf(CF_KV), IteratorMode::Start) {
            let (storage_key, bytes) = item?;
            let (scope, key) = decode_record_key(&storage_key)?;
            let record: Record = record::decode(&bytes)?;
            let counts = usage.entry(scope.namespace).or_default();
            counts.add(Quota::Keys, 1);
            counts.add(
                Quota::Bytes,
                record_bytes(&key, &record.value, &record.metadata),
            );
        }
        Ok(())
    }

    fn read_record(&self, storage_key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self
            .engine
            .db()
            .get_cf(self.engine.cf(CF_KV), storage_key)?
        {
            Some(bytes) => Ok(Some(record::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    fn range<'a>(
        &'a self,
        start: &[u8],
        end: Option<&[u8]>,
        descending: bool,
    ) -> impl Iterator<Item = Result<KeyValue, StorageError>> + 'a {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(start.to_vec());
        if let Some(end) = end {
            options.set_iterate_upper_bound(end.to_vec());
        }
        let mode = if descending {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        self.engine
            .db()
            .iterator_cf_opt(self.engine.cf(CF_KV), options, mode)
            .map(|item| item.map_err(StorageError::from))
    }
}

fn check_precondition(precondition: &Precondition, current: Option<&Record>) -> Option<KvFailure> {
    let actual = current.map_or(0, |r| r.mod_revision);
    match precondition {
        Precondition::None => None,
        Precondition::ModRevision(expected) if *expected != actual => {
            Some(KvFailure::ModRevisionMismatch {
                expected: *expected,
                actual,
            })
        }
        Precondition::ModRevision(_) => None,
        Precondition::Absent => current.map(|r| KvFailure::AlreadyExists {
            mod_revision: r.mod_revision,
        }),
    }
}

fn compare_holds(compare: &Compare, current: Option<&Record>) -> bool {
    use std::cmp::Ordering;
    let ordering = match &compare.target {
        // An absent key has no value: only NotEqual holds against it.
        CompareTarget::Value(expected) => match current {
            Some(record) => record.value.as_slice().cmp(expected.as_slice()),
            None => return compare.op == CompareOp::NotEqual,
        },
        CompareTarget::ModRevision(expected) => current.map_or(0, |r| r.mod_revision).cmp(expected),
        CompareTarget::Version(expected) => current.map_or(0, |r| r.version).cmp(expected),
        CompareTarget::Exists(expected) => current.is_some().cmp(expected),
    };
    match compare.op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}

fn table_prefix(scope: &Scope) -> Vec<u8> {
    let mut out = vec![SUBSYSTEM_KV];
    keys::push_segment(&mut out, scope.namespace.as_bytes());
    keys::push_segment(&mut out, scope.database.as_bytes());
    keys::push_segment(&mut out, scope.table.as_bytes());
    out
}

/// The storage key of a record.
pub fn record_key(scope: &Scope, key: &[u8]) -> Vec<u8> {
    let mut out = table_prefix(scope);
    keys::push_segment(&mut out, key);
    out
}

/// The byte prefix shared by the storage keys of every user key starting with `prefix`.
fn scan_prefix(scope: &Scope, prefix: &[u8]) -> Vec<u8> {
    let mut out = table_prefix(scope);
    keys::push_escaped(&mut out, prefix);
    out
}

fn decode_record_key(storage_key: &[u8]) -> Result<(Scope, Vec<u8>), StorageError> {
    let Some((&SUBSYSTEM_KV, rest)) = storage_key.split_first() else {
        return Err(StorageError::Corrupt(
            "record key without the kv subsystem byte".into(),
        ));
    };
    let mut segments = keys::decode(rest)?;
    if segments.len() != 4 {
        return Err(StorageError::Corrupt(format!(
            "record key with {} segments",
            segments.len()
        )));
    }
    let key = segments.pop().expect("4 segments");
    let text = |bytes: Vec<u8>| {
        String::from_utf8(bytes).map_err(|_| StorageError::Corrupt("non-UTF-8 scope name".into()))
    };
    let table = text(segments.pop().expect("3 left"))?;
    let database = text(segments.pop().expect("2 left"))?;
    let namespace = text(segments.pop().expect("1 left"))?;
    Ok((
        Scope {
            namespace,
            database,
            table,
        },
        key,
    ))
}

fn catalog_key(scope: &Scope) -> Vec<u8> {
    keys::encode(&[
        scope.namespace.as_bytes(),
        scope.database.as_bytes(),
        scope.table.as_bytes(),
    ])
}

fn expiry_key(expires_at_ms: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + storage_key.len());
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(storage_key);
    out
}

fn read_u64(bytes: &[u8]) -> Result<u64, StorageError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StorageError::Corrupt(format!("expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(array))
}
