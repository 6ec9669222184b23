//! Quotas per namespace: what each namespace holds (its usage, kept exact by the apply path)
//! and the limits admins set, both replicated state in one column family.
//!
//! Usage is counted where state changes: every command's apply adds its deltas to the entry's
//! [`StateTxn`], the state machine checks them against the limits before it writes anything
//! ([`QuotaState::check`]), then writes the new counts in the same atomic batch as the change
//! ([`QuotaState::stage`]). A command over a limit is refused whole: its batch is dropped, so
//! nothing of it is applied. Deterministic like every apply: concurrent writers are judged in
//! log order, so a limit is never overshot however many race for it.
//!
//! Layout (column family [`CF_QUOTA`]): `U seg(namespace)` -> usage, `L seg(namespace)` ->
//! limits (the namespace `*` holds the defaults for namespaces without limits of their own),
//! `C` -> the counting format, written when usage was recounted from the state (first start
//! of a data directory written before quotas existed; its absence triggers the recount).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, CF_QUOTA};
use crate::kv::StateTxn;
use crate::{keys, StorageError};

/// The limits of namespace `*` apply to every namespace without limits of its own.
pub const DEFAULTS_NAMESPACE: &str = "*";

const USAGE: u8 = b'U';
const LIMITS: u8 = b'L';
const COUNTED: &[u8] = b"C";
const COUNTING_FORMAT: u64 = 1;

/// What a namespace may be limited in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quota {
    /// Keys stored: key-value records and config documents.
    Keys,
    /// Bytes of those: keys, values and metadata; config keys and documents.
    Bytes,
    /// Stream topics.
    Topics,
    /// Bytes of retained stream messages (payload, metadata and id).
    StreamBytes,
    /// Registered service nodes.
    Nodes,
    /// Calls per second, per node (not counted in the log: enforced where calls arrive).
    RequestsPerSecond,
}

impl Quota {
    /// Every quota, in display order.
    pub const ALL: [Quota; 6] = [
        Quota::Keys,
        Quota::Bytes,
        Quota::Topics,
        Quota::StreamBytes,
        Quota::Nodes,
        Quota::RequestsPerSecond,
    ];
    /// The quotas whose usage is stored state.
    pub const COUNTED: [Quota; 5] = [
        Quota::Keys,
        Quota::Bytes,
        Quota::Topics,
        Quota::StreamBytes,
        Quota::Nodes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Quota::Keys => "keys",
            Quota::Bytes => "bytes",
            Quota::Topics => "topics",
            Quota::StreamBytes => "stream_bytes",
            Quota::Nodes => "nodes",
            Quota::RequestsPerSecond => "requests_per_second",
        }
    }

    pub fn parse(name: &str) -> Option<Quota> {
        Quota::ALL.into_iter().find(|quota| quota.name() == name)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a namespace holds, per counted quota. Stored as a list, so that quotas added later
/// read older records (as zero).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(from = "Vec<u64>", into = "Vec<u64>")]
pub struct Usage([u64; 5]);

/// The first values of `list` into an array of zeros (a list from an older or newer format).
fn padded<const N: usize>(list: Vec<u64>) -> [u64; N] {
    let mut values = [0; N];
    for (slot, value) in values.iter_mut().zip(list) {
        *slot = value;
    }
    values
}

impl From<Vec<u64>> for Usage {
    fn from(list: Vec<u64>) -> Self {
        Usage(padded(list))
    }
}

impl From<Usage> for Vec<u64> {
    fn from(usage: Usage) -> Self {
        usage.0.to_vec()
    }
}

impl From<Vec<u64>> for Limits {
    fn from(list: Vec<u64>) -> Self {
        Limits(padded(list))
    }
}

impl From<Limits> for Vec<u64> {
    fn from(limits: Limits) -> Self {
        limits.0.to_vec()
    }
}

impl Usage {
    /// The count of a counted quota (0 for the request rate, which is not counted).
    pub fn get(&self, quota: Quota) -> u64 {
        self.0.get(quota.index()).copied().unwrap_or(0)
    }

    /// Adds `amount` (a recount).
    pub fn add(&mut self, quota: Quota, amount: u64) {
        if let Some(count) = self.0.get_mut(quota.index()) {
            *count = count.saturating_add(amount);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|count| *count == 0)
    }

    fn with(mut self, delta: &Delta) -> Usage {
        for (count, change) in self.0.iter_mut().zip(delta.0) {
            let updated = *count as i128 + change as i128;
            if updated < 0 {
                // A bug, never client input: keep serving and let the recount test find it.
                tracing::error!(
                    count = *count,
                    change,
                    "a usage count would drop below zero"
                );
            }
            *count = updated.clamp(0, u64::MAX as i128) as u64;
        }
        self
    }
}

/// How one command changes a namespace's usage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta([i64; 5]);

impl Delta {
    pub fn get(&self, quota: Quota) -> i64 {
        self.0.get(quota.index()).copied().unwrap_or(0)
    }
}

/// A namespace's limits; 0 means no limit. Stored as a list, like [`Usage`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(from = "Vec<u64>", into = "Vec<u64>")]
pub struct Limits([u64; 6]);

impl Limits {
    pub fn get(&self, quota: Quota) -> u64 {
        self.0[quota.index()]
    }

    pub fn set(&mut self, quota: Quota, limit: u64) {
        self.0[quota.index()] = limit;
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|limit| *limit == 0)
    }
}

/// Changes to limits; part of the log's format: add variants at the end only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum QuotaCommand {
    /// Sets the listed limits of `namespace` (0 removes one), leaving the others as they are.
    SetLimits {
        namespace: String,
        changes: Vec<(Quota, u64)>,
    },
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum QuotaResponse {
    /// The namespace's own limits afterwards.
    LimitsSet { revision: u64, limits: Limits },
}

/// Why a command was refused: applying it would take `namespace` past a limit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    pub namespace: String,
    pub quota: Quota,
    pub limit: u64,
    pub used: u64,
    /// What the command would have added.
    pub adding: u64,
}

impl std::fmt::Display for Exceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "quota {} of namespace {:?} exceeded: {} in use, limit {}, this change adds {}; \
             nothing was applied",
            self.quota, self.namespace, self.used, self.limit, self.adding
        )
    }
}

/// A namespace's usage and the limits that apply to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceQuota {
    pub namespace: String,
    pub usage: Usage,
    /// Its own limits, if any were set.
    pub own: Option<Limits>,
    /// The limits in force: its own, else the defaults.
    pub effective: Limits,
}

#[derive(Default, Debug, PartialEq, Eq)]
struct View {
    usage: HashMap<String, Usage>,
    limits: HashMap<String, Limits>,
}

impl View {
    fn effective(&self, namespace: &str) -> Limits {
        self.limits
            .get(namespace)
            .or_else(|| self.limits.get(DEFAULTS_NAMESPACE))
            .copied()
            .unwrap_or_default()
    }

    fn quota_of(&self, namespace: &str) -> NamespaceQuota {
        NamespaceQuota {
            namespace: namespace.to_string(),
            usage: self.usage.get(namespace).copied().unwrap_or_default(),
            own: self.limits.get(namespace).copied(),
            effective: self.effective(namespace),
        }
    }
}

/// What an entry changed, to be shown to readers once its batch is written.
#[derive(Default)]
pub struct Staged {
    usage: Vec<(String, Usage)>,
    limits: Option<(String, Option<Limits>)>,
}

/// Usage and limits: the stored records and an in-memory copy every check reads.
#[derive(Clone)]
pub struct QuotaState {
    engine: Engine,
    view: Arc<RwLock<View>>,
}

fn key(kind: u8, namespace: &str) -> Vec<u8> {
    let mut out = vec![kind];
    keys::push_segment(&mut out, namespace.as_bytes());
    out
}

impl QuotaState {
    /// Opens and loads the stored usage and limits. Call [`Self::is_counted`] next: a data
    /// directory from before quotas needs [`Self::store_recount`] once.
    pub fn new(engine: Engine) -> Result<Self, StorageError> {
        let state = Self {
            engine,
            view: Arc::default(),
        };
        state.reload()?;
        Ok(state)
    }

    /// Whether stored usage was counted by this format (absent on data written before quotas,
    /// and in snapshots from such nodes).
    pub fn is_counted(&self) -> Result<bool, StorageError> {
        let stored = self.engine.db().get_cf(self.engine.cf(CF_QUOTA), COUNTED)?;
        Ok(stored.is_some_and(|bytes| bytes.as_slice() == COUNTING_FORMAT.to_be_bytes()))
    }

    /// Replaces every stored usage with `counts` (a recount of the state) and marks usage
    /// counted, in one write.
    pub fn store_recount(&self, counts: &BTreeMap<String, Usage>) -> Result<(), StorageError> {
        let cf = self.engine.cf(CF_QUOTA);
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_range_cf(cf, [USAGE], [USAGE + 1]);
        for (namespace, usage) in counts.iter().filter(|(_, usage)| !usage.is_zero()) {
            batch.put_cf(cf, key(USAGE, namespace), bincode::serialize(usage)?);
        }
        batch.put_cf(cf, COUNTED, COUNTING_FORMAT.to_be_bytes());
        self.engine.db().write(batch)?;
        self.reload()
    }

    /// Reads everything stored into the in-memory copy (at start, after a snapshot install).
    pub fn reload(&self) -> Result<(), StorageError> {
        let mut view = View::default();
        let db = self.engine.db();
        for item in db.iterator_cf(self.engine.cf(CF_QUOTA), rocksdb::IteratorMode::Start) {
            let (stored_key, value) = item?;
            let Some((&kind, rest)) = stored_key.split_first() else {
                continue;
            };
            if kind != USAGE && kind != LIMITS {
                continue;
            }
            let (name, _) = keys::decode_segment(rest)?;
            let namespace = String::from_utf8(name)
                .map_err(|_| StorageError::Corrupt("a quota namespace is not UTF-8".into()))?;
            if kind == USAGE {
                view.usage.insert(namespace, bincode::deserialize(&value)?);
            } else {
                view.limits.insert(namespace, bincode::deserialize(&value)?);
            }
        }
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
        Ok(())
    }

    fn read(&self) -> RwLockReadGuard<'_, View> {
        self.view.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a limits change into `txn`; shown to readers by [`Self::publish`].
    pub fn apply(&self, txn: &mut StateTxn, command: &QuotaCommand) -> QuotaResponse {
        match command {
            QuotaCommand::SetLimits { namespace, changes } => {
                let mut limits = self
                    .read()
                    .limits
                    .get(namespace)
                    .copied()
                    .unwrap_or_default();
                for (quota, limit) in changes {
                    limits.set(*quota, *limit);
                }
                txn.set_limits(namespace, limits);
                QuotaResponse::LimitsSet {
                    revision: txn.revision(),
                    limits,
                }
            }
        }
    }

    /// The first of `quotas` that the changes in `txn` would take past its limit. Only growth
    /// is refused: a change that frees or keeps usage passes even over a lowered limit.
    pub fn check(&self, txn: &StateTxn, quotas: &[Quota]) -> Option<Exceeded> {
        if quotas.is_empty() {
            return None;
        }
        let view = self.read();
        for (namespace, delta) in txn.usage_deltas() {
            let limits = view.effective(namespace);
            let usage = view.usage.get(namespace).copied().unwrap_or_default();
            for &quota in quotas {
                let (limit, adding) = (limits.get(quota), delta.get(quota));
                if limit == 0 || adding <= 0 {
                    continue;
                }
                let used = usage.get(quota);
                if used.saturating_add(adding as u64) > limit {
                    return Some(Exceeded {
                        namespace: namespace.clone(),
                        quota,
                        limit,
                        used,
                        adding: adding as u64,
                    });
                }
            }
        }
        None
    }

    /// Writes the usage and limits `txn` changed into its batch; returns them for
    /// [`Self::publish`] once the batch is written.
    pub fn stage(&self, txn: &mut StateTxn) -> Result<Staged, StorageError> {
        let mut staged = Staged::default();
        let (deltas, limits) = txn.take_quota_changes();
        let cf = self.engine.cf(CF_QUOTA);
        {
            let view = self.read();
            for (namespace, delta) in deltas {
                if delta == Delta::default() {
                    continue;
                }
                let before = view.usage.get(&namespace).copied().unwrap_or_default();
                staged.usage.push((namespace, before.with(&delta)));
            }
        }
        let batch = txn.batch_mut();
        for (namespace, usage) in &staged.usage {
            if usage.is_zero() {
                batch.delete_cf(cf, key(USAGE, namespace));
            } else {
                batch.put_cf(cf, key(USAGE, namespace), bincode::serialize(usage)?);
            }
        }
        if let Some((namespace, limits)) = limits {
            let stored = (!limits.is_empty()).then_some(limits);
            match &stored {
                Some(limits) => {
                    batch.put_cf(cf, key(LIMITS, &namespace), bincode::serialize(limits)?)
                }
                None => batch.delete_cf(cf, key(LIMITS, &namespace)),
            }
            staged.limits = Some((namespace, stored));
        }
        Ok(staged)
    }

    /// Shows an entry's staged changes to readers; call after its batch is written.
    pub fn publish(&self, staged: Staged) {
        if staged.usage.is_empty() && staged.limits.is_none() {
            return;
        }
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        for (namespace, usage) in staged.usage {
            if usage.is_zero() {
                view.usage.remove(&namespace);
            } else {
                view.usage.insert(namespace, usage);
            }
        }
        if let Some((namespace, limits)) = staged.limits {
            match limits {
                Some(limits) => view.limits.insert(namespace, limits),
                None => view.limits.remove(&namespace),
            };
        }
    }

    /// The limit in force for `namespace` (0: none).
    pub fn limit(&self, namespace: &str, quota: Quota) -> u64 {
        self.read().effective(namespace).get(quota)
    }

    /// One namespace's usage and limits.
    pub fn namespace(&self, namespace: &str) -> NamespaceQuota {
        self.read().quota_of(namespace)
    }

    /// Every namespace that holds something or has limits, by name (the defaults as `*`).
    pub fn all(&self) -> Vec<NamespaceQuota> {
        let view = self.read();
        let mut names: Vec<&String> = view.usage.keys().chain(view.limits.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|namespace| view.quota_of(namespace))
            .collect()
    }

    /// Every namespace's stored usage, as the view holds it (tests compare it to a recount).
    pub fn usage_by_namespace(&self) -> BTreeMap<String, Usage> {
        self.read()
            .usage
            .iter()
            .map(|(namespace, usage)| (namespace.clone(), *usage))
            .collect()
    }
}

/// The usage deltas and limits change of one entry, carried by its [`StateTxn`].
#[derive(Default)]
pub(crate) struct TxnQuota {
    pub(crate) deltas: BTreeMap<String, Delta>,
    pub(crate) limits: Option<(String, Limits)>,
}

impl TxnQuota {
    pub(crate) fn add(&mut self, namespace: &str, quota: Quota, change: i64) {
        if change == 0 {
            return;
        }
        if !self.deltas.contains_key(namespace) {
            self.deltas.insert(namespace.to_string(), Delta::default());
        }
        let slot = self
            .deltas
            .get_mut(namespace)
            .and_then(|delta| delta.0.get_mut(quota.index()));
        if let Some(value) = slot {
            *value = value.saturating_add(change);
        }
    }
}

/// A record's bytes as the `bytes` quota counts them: key, value, and metadata keys and values.
pub fn record_bytes<'a>(
    key: &[u8],
    value: &[u8],
    metadata: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> u64 {
    let metadata: usize = metadata.into_iter().map(|(k, v)| k.len() + v.len()).sum();
    (key.len() + value.len() + metadata) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> (tempfile::TempDir, QuotaState) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        (dir, QuotaState::new(engine).unwrap())
    }

    fn commit(state: &QuotaState, mut txn: StateTxn) {
        let staged = state.stage(&mut txn).unwrap();
        state.engine.db().write(txn.into_batch()).unwrap();
        state.publish(staged);
    }

    #[test]
    fn stored_counts_read_back_across_formats() {
        let mut usage = Usage::default();
        usage.add(Quota::Nodes, 3);
        let bytes = bincode::serialize(&usage).unwrap();
        assert_eq!(bincode::deserialize::<Usage>(&bytes).unwrap(), usage);
        // A record with fewer quotas (older) or more (newer) still reads.
        let older = bincode::serialize(&vec![7u64, 8]).unwrap();
        let read: Usage = bincode::deserialize(&older).unwrap();
        assert_eq!((read.get(Quota::Keys), read.get(Quota::Nodes)), (7, 0));
        let newer = bincode::serialize(&vec![1u64; 9]).unwrap();
        let read: Limits = bincode::deserialize(&newer).unwrap();
        assert_eq!(read.get(Quota::RequestsPerSecond), 1);
    }

    #[test]
    fn names_round_trip() {
        for quota in Quota::ALL {
            assert_eq!(Quota::parse(quota.name()), Some(quota));
        }
        assert_eq!(Quota::parse("disk"), None);
    }

    #[test]
    fn growth_past_a_limit_is_refused_and_freeing_always_passes() {
        let (_dir, state) = state();
        let mut txn = StateTxn::new(1);
        state.apply(
            &mut txn,
            &QuotaCommand::SetLimits {
                namespace: "a".into(),
                changes: vec![(Quota::Keys, 2)],
            },
        );
        commit(&state, txn);
        let mut txn = StateTxn::new(2);
        txn.add_usage("a", Quota::Keys, 2);
        txn.add_usage("b", Quota::Keys, 50);
        assert_eq!(state.check(&txn, &[Quota::Keys]), None);
        commit(&state, txn);
        let mut txn = StateTxn::new(3);
        txn.add_usage("a", Quota::Keys, 1);
        let refused = state.check(&txn, &[Quota::Keys]).expect("over the limit");
        assert_eq!(
            (refused.quota, refused.used, refused.limit, refused.adding),
            (Quota::Keys, 2, 2, 1)
        );
        assert!(refused.to_string().contains("keys"));
        // Not checked for this command: passes.
        assert_eq!(state.check(&txn, &[Quota::Bytes]), None);
        let mut txn = StateTxn::new(4);
        txn.add_usage("a", Quota::Keys, -1);
        assert_eq!(state.check(&txn, &[Quota::Keys]), None);
    }

    #[test]
    fn defaults_apply_where_a_namespace_has_no_limits_of_its_own() {
        let (_dir, state) = state();
        let mut txn = StateTxn::new(1);
        state.apply(
            &mut txn,
            &QuotaCommand::SetLimits {
                namespace: DEFAULTS_NAMESPACE.into(),
                changes: vec![(Quota::Topics, 1), (Quota::Nodes, 5)],
            },
        );
        commit(&state, txn);
        let mut txn = StateTxn::new(2);
        state.apply(
            &mut txn,
            &QuotaCommand::SetLimits {
                namespace: "big".into(),
                changes: vec![(Quota::Topics, 100)],
            },
        );
        commit(&state, txn);
        assert_eq!(state.limit("small", Quota::Topics), 1);
        assert_eq!(state.limit("big", Quota::Topics), 100);
        // Own limits replace the defaults as a whole.
        assert_eq!(state.limit("big", Quota::Nodes), 0);
        // Setting a limit to 0 removes it; with none left the record goes.
        let mut txn = StateTxn::new(3);
        state.apply(
            &mut txn,
            &QuotaCommand::SetLimits {
                namespace: "big".into(),
                changes: vec![(Quota::Topics, 0)],
            },
        );
        commit(&state, txn);
        assert_eq!(state.namespace("big").own, None);
        assert_eq!(state.limit("big", Quota::Topics), 1);
    }

    #[test]
    fn the_view_survives_a_reopen_and_a_recount_replaces_usage() {
        let dir = tempfile::tempdir().unwrap();
        {
            let state = QuotaState::new(Engine::open(dir.path()).unwrap()).unwrap();
            assert!(!state.is_counted().unwrap());
            state.store_recount(&BTreeMap::new()).unwrap();
            let mut txn = StateTxn::new(1);
            txn.add_usage("a", Quota::Bytes, 10);
            txn.add_usage("b", Quota::Nodes, 1);
            commit(&state, txn);
        }
        let state = QuotaState::new(Engine::open(dir.path()).unwrap()).unwrap();
        assert!(state.is_counted().unwrap());
        assert_eq!(state.namespace("a").usage.get(Quota::Bytes), 10);
        let mut recount = BTreeMap::new();
        let mut usage = Usage::default();
        usage.add(Quota::Keys, 3);
        recount.insert("c".to_string(), usage);
        state.store_recount(&recount).unwrap();
        assert_eq!(state.usage_by_namespace(), recount);
        // Back to zero: the record goes.
        let mut txn = StateTxn::new(2);
        txn.add_usage("c", Quota::Keys, -3);
        commit(&state, txn);
        assert!(state.usage_by_namespace().is_empty());
        let reopened = QuotaState::new(state.engine.clone()).unwrap();
        assert!(reopened.usage_by_namespace().is_empty());
    }
}
