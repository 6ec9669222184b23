//! The key-value state machine against a simple in-memory model, over random command sequences:
//! every response, every visible record, the catalog and the watch history must agree.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use strata_storage::kv::*;
use strata_storage::Engine;

type Key = (Scope, Vec<u8>);

#[derive(Default)]
struct Model {
    records: BTreeMap<Key, Record>,
    /// (revision, scope, key, is_put) for every event produced.
    events: Vec<(u64, Scope, Vec<u8>, bool)>,
}

impl Model {
    fn live(&mut self, rev: u64, scope: &Scope, key: &[u8], time: u64) -> Option<Record> {
        let id = (scope.clone(), key.to_vec());
        match self.records.get(&id) {
            Some(r) if r.is_expired_at(time) => {
                self.records.remove(&id);
                self.events.push((rev, scope.clone(), key.to_vec(), false));
                None
            }
            other => other.cloned(),
        }
    }

    fn put(
        &mut self,
        rev: u64,
        scope: &Scope,
        put: &Put,
        current: Option<Record>,
        time: u64,
    ) -> u64 {
        let record = Record {
            value: put.value.clone(),
            metadata: put.metadata.clone(),
            create_revision: current.as_ref().map_or(rev, |c| c.create_revision),
            mod_revision: rev,
            version: current.as_ref().map_or(1, |c| c.version + 1),
            expires_at_ms: match put.expiry {
                Expiry::Never => 0,
                Expiry::TtlMs(t) => time + t,
                Expiry::AtMs(a) => a,
            },
        };
        let version = record.version;
        self.records
            .insert((scope.clone(), put.key.clone()), record);
        self.events
            .push((rev, scope.clone(), put.key.clone(), true));
        version
    }

    fn delete(&mut self, rev: u64, scope: &Scope, key: &[u8], prefix: bool, time: u64) -> u64 {
        if !prefix {
            return match self.live(rev, scope, key, time) {
                Some(_) => {
                    self.records.remove(&(scope.clone(), key.to_vec()));
                    self.events.push((rev, scope.clone(), key.to_vec(), false));
                    1
                }
                None => 0,
            };
        }
        let doomed: Vec<Key> = self
            .records
            .keys()
            .filter(|(s, k)| s == scope && k.starts_with(key))
            .cloned()
            .collect();
        let mut deleted = 0;
        for id in doomed {
            let record = self.records.remove(&id).unwrap();
            self.events.push((rev, id.0.clone(), id.1.clone(), false));
            if !record.is_expired_at(time) {
                deleted += 1;
            }
        }
        deleted
    }

    fn check(precondition: &Precondition, current: Option<&Record>) -> Option<KvFailure> {
        let actual = current.map_or(0, |r| r.mod_revision);
        match precondition {
            Precondition::None => None,
            Precondition::ModRevision(e) if *e != actual => Some(KvFailure::ModRevisionMismatch {
                expected: *e,
                actual,
            }),
            Precondition::ModRevision(_) => None,
            Precondition::Absent => current.map(|r| KvFailure::AlreadyExists {
                mod_revision: r.mod_revision,
            }),
        }
    }

    fn holds(compare: &Compare, current: Option<&Record>) -> bool {
        let ord = match &compare.target {
            CompareTarget::Value(v) => match current {
                Some(r) => r.value.cmp(v),
                None => return compare.op == CompareOp::NotEqual,
            },
            CompareTarget::ModRevision(v) => current.map_or(0, |r| r.mod_revision).cmp(v),
            CompareTarget::Version(v) => current.map_or(0, |r| r.version).cmp(v),
            CompareTarget::Exists(v) => current.is_some().cmp(v),
        };
        match compare.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Less => ord.is_lt(),
            CompareOp::Greater => ord.is_gt(),
        }
    }

    fn apply(&mut self, rev: u64, time: u64, command: &KvCommand) -> KvResponse {
        match command {
            KvCommand::Put {
                scope,
                put,
                precondition,
            } => {
                let current = self.live(rev, scope, &put.key, time);
                if let Some(f) = Self::check(precondition, current.as_ref()) {
                    return KvResponse::Failed(f);
                }
                KvResponse::Put {
                    revision: rev,
                    version: self.put(rev, scope, put, current, time),
                }
            }
            KvCommand::Delete {
                scope,
                key,
                prefix,
                precondition,
            } => {
                if !*prefix {
                    let current = self.live(rev, scope, key, time);
                    if let Some(f) = Self::check(precondition, current.as_ref()) {
                        return KvResponse::Failed(f);
                    }
                }
                KvResponse::Delete {
                    revision: rev,
                    deleted: self.delete(rev, scope, key, *prefix, time),
                }
            }
            KvCommand::Txn {
                scope,
                compares,
                success,
                failure,
            } => {
                let mut ok = true;
                for c in compares {
                    let current = self.live(rev, scope, &c.key, time);
                    if !Self::holds(c, current.as_ref()) {
                        ok = false;
                        break;
                    }
                }
                let mut results = Vec::new();
                for op in if ok { success } else { failure } {
                    results.push(match op {
                        TxnOp::Put(p) => {
                            let current = self.live(rev, scope, &p.key, time);
                            TxnOpResult::Put {
                                version: self.put(rev, scope, p, current, time),
                            }
                        }
                        TxnOp::Delete { key, prefix } => TxnOpResult::Delete {
                            deleted: self.delete(rev, scope, key, *prefix, time),
                        },
                        TxnOp::Get { key } => TxnOpResult::Get {
                            record: self.live(rev, scope, key, time),
                        },
                    });
                }
                KvResponse::Txn {
                    revision: rev,
                    succeeded: ok,
                    results,
                }
            }
            KvCommand::Expire { keys } => {
                let mut expired = 0;
                for item in keys {
                    let found = self
                        .records
                        .iter()
                        .find(|((s, k), _)| record_key(s, k) == item.storage_key)
                        .map(|(id, r)| (id.clone(), r.clone()));
                    if let Some((id, r)) = found {
                        if r.mod_revision == item.mod_revision && r.is_expired_at(time) {
                            self.records.remove(&id);
                            self.events.push((rev, id.0, id.1, false));
                            expired += 1;
                        }
                    }
                }
                KvResponse::Expire {
                    revision: rev,
                    expired,
                }
            }
            KvCommand::DeletePrefix {
                scope,
                prefix,
                limit,
            } => {
                let under: Vec<Key> = self
                    .records
                    .keys()
                    .filter(|(s, k)| s == scope && k.starts_with(prefix))
                    .cloned()
                    .collect();
                let step = (*limit).max(1) as usize;
                let mut deleted = 0;
                for id in under.iter().take(step) {
                    let record = self.records.remove(id).unwrap();
                    self.events.push((rev, id.0.clone(), id.1.clone(), false));
                    if !record.is_expired_at(time) {
                        deleted += 1;
                    }
                }
                KvResponse::DeletePrefix {
                    revision: rev,
                    deleted,
                    more: under.len() > step,
                }
            }
        }
    }
}

fn scopes() -> Vec<Scope> {
    vec![
        Scope::new("ns1", "db", "t"),
        Scope::new("ns2", "db", "t"),
        Scope::new("ns1", "db", "u"),
    ]
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
        vec![0u8],
        vec![0u8, 0xFF],
        vec![0xFF],
    ])
}

fn put() -> impl Strategy<Value = Put> {
    (
        key(),
        prop::collection::vec(any::<u8>(), 0..4),
        0..3u8,
        1..4_000u64,
    )
        .prop_map(|(key, value, e, ttl)| {
            let expiry = match e {
                0 => Expiry::Never,
                1 => Expiry::TtlMs(ttl),
                _ => Expiry::AtMs(ttl * 3),
            };
            let metadata = BTreeMap::from([("len".to_string(), value.len().to_string())]);
            Put {
                key,
                value,
                metadata,
                expiry,
            }
        })
}

fn precondition() -> impl Strategy<Value = Precondition> {
    prop_oneof![
        3 => Just(Precondition::None),
        1 => Just(Precondition::Absent),
        1 => (0..30u64).prop_map(Precondition::ModRevision),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ]);
    let target = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..3).prop_map(CompareTarget::Value),
        (0..30u64).prop_map(CompareTarget::ModRevision),
        (0..4u64).prop_map(CompareTarget::Version),
        any::<bool>().prop_map(CompareTarget::Exists),
    ];
    (key(), op, target).prop_map(|(key, op, target)| Compare { key, op, target })
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        put().prop_map(TxnOp::Put),
        (key(), any::<bool>()).prop_map(|(key, prefix)| TxnOp::Delete { key, prefix }),
        key().prop_map(|key| TxnOp::Get { key }),
    ]
}

#[derive(Clone, Debug)]
enum Step {
    Command(KvCommand),
    /// Ask the engine which keys are due and expire them, as the leader's sweeper does.
    Sweep,
}

fn step() -> impl Strategy<Value = (u64, Step)> {
    let scope = prop::sample::select(scopes());
    let command = prop_oneof![
        4 => (scope.clone(), put(), precondition())
            .prop_map(|(scope, put, precondition)| KvCommand::Put { scope, put, precondition }),
        2 => (scope.clone(), key(), any::<bool>(), precondition()).prop_map(|(scope, key, prefix, precondition)| {
            let precondition = if prefix { Precondition::None } else { precondition };
            KvCommand::Delete { scope, key, prefix, precondition }
        }),
        2 => (scope.clone(), key(), 0..4u32)
            .prop_map(|(scope, prefix, limit)| KvCommand::DeletePrefix { scope, prefix, limit }),
        2 => (
            scope,
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(txn_op(), 0..4),
            prop::collection::vec(txn_op(), 0..3),
        )
            .prop_map(|(scope, compares, success, failure)| KvCommand::Txn { scope, compares, success, failure }),
    ];
    let step = prop_oneof![6 => command.prop_map(Step::Command), 1 => Just(Step::Sweep)];
    (0..1_500u64, step)
}

fn visible(state: &KvState, model: &Model, time: u64) {
    for scope in scopes() {
        let query = ListQuery {
            limit: 1_000,
            ..Default::default()
        };
        let page = state.list(&scope, &query, time).unwrap();
        let expected: Vec<(Vec<u8>, Record)> = model
            .records
            .iter()
            .filter(|((s, _), r)| *s == scope && !r.is_expired_at(time))
            .map(|((_, k), r)| (k.clone(), r.clone()))
            .collect();
        assert_eq!(page.items, expected, "visible records of {scope:?}");
        for (key, record) in &expected {
            assert_eq!(state.get(&scope, key, time).unwrap().as_ref(), Some(record));
        }
        let mut desc = state
            .list(
                &scope,
                &ListQuery {
                    descending: true,
                    ..query
                },
                time,
            )
            .unwrap()
            .items;
        desc.reverse();
        assert_eq!(desc, expected, "descending order of {scope:?}");
    }
    for namespace in ["ns1", "ns2"] {
        let tables: BTreeSet<String> = model
            .records
            .keys()
            .filter(|(s, _)| s.namespace == namespace)
            .map(|(s, _)| s.table.clone())
            .collect();
        let got: BTreeSet<String> = state.tables(namespace, "db").unwrap().into_iter().collect();
        assert_eq!(got, tables, "catalog of {namespace}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_matches_model(steps in prop::collection::vec(step(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let state = KvState::new(Engine::open(dir.path()).unwrap());
        let mut model = Model::default();
        let mut time = 1_000u64;
        for (revision, (advance, step)) in steps.into_iter().enumerate() {
            let revision = revision as u64 + 1;
            time += advance;
            let command = match step {
                Step::Command(command) => command,
                Step::Sweep => KvCommand::Expire { keys: state.due_expirations(time, 100).unwrap() },
            };
            let mut txn = StateTxn::new(revision);
            let got = state.apply(&mut txn, time, &command).unwrap();
            state.commit(txn).unwrap();
            let expected = model.apply(revision, time, &command);
            prop_assert_eq!(&got, &expected, "response to {:?}", command);
            visible(&state, &model, time);
        }
        // History holds exactly the model's events, in revision order.
        let history = state.history(1, usize::MAX).unwrap();
        let got: Vec<(u64, Scope, Vec<u8>, bool)> = history
            .revisions
            .iter()
            .flat_map(|r| r.events.iter().map(move |e| {
                (r.revision, Scope::new(&e.namespace, &e.database, &e.table), e.key.clone(), e.kind == EventKind::Put as i32)
            }))
            .collect();
        prop_assert_eq!(got, model.events);
    }
}

/// Applies and commits one unconditional put at `revision`.
fn put_at(
    state: &KvState,
    revision: u64,
    time_ms: u64,
    scope: &Scope,
    key: &[u8],
    value: &[u8],
    expiry: Expiry,
) {
    let put = Put {
        key: key.to_vec(),
        value: value.to_vec(),
        metadata: BTreeMap::new(),
        expiry,
    };
    let command = KvCommand::Put {
        scope: scope.clone(),
        put,
        precondition: Precondition::None,
    };
    let mut txn = StateTxn::new(revision);
    state.apply(&mut txn, time_ms, &command).unwrap();
    state.commit(txn).unwrap();
}

#[test]
fn pages_resume_where_they_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let state = KvState::new(Engine::open(dir.path()).unwrap());
    let scope = Scope::new("ns", "db", "t");
    for i in 0..25u8 {
        put_at(
            &state,
            i as u64 + 1,
            0,
            &scope,
            &[b'k', i],
            &[i],
            Expiry::Never,
        );
    }
    for descending in [false, true] {
        let mut seen = Vec::new();
        let mut query = ListQuery {
            prefix: b"k".to_vec(),
            limit: 7,
            descending,
            ..Default::default()
        };
        loop {
            let page = state.list(&scope, &query, 0).unwrap();
            assert!(page.items.len() <= 7);
            seen.extend(page.items.into_iter().map(|(k, _)| k[1]));
            match page.resume_after {
                Some(after) => query.start_after = Some(after),
                None => break,
            }
        }
        let mut expected: Vec<u8> = (0..25).collect();
        if descending {
            expected.reverse();
        }
        assert_eq!(seen, expected, "descending={descending}");
    }
}

#[test]
fn pages_are_bounded_by_bytes_and_keys_only_drops_values() {
    let dir = tempfile::tempdir().unwrap();
    let state = KvState::new(Engine::open(dir.path()).unwrap());
    let scope = Scope::new("ns", "db", "t");
    for i in 0..10u8 {
        put_at(
            &state,
            i as u64 + 1,
            0,
            &scope,
            &[b'k', i],
            &[i; 1000],
            Expiry::Never,
        );
    }
    let query = ListQuery {
        limit: 100,
        max_bytes: 2_500,
        ..Default::default()
    };
    let page = state.list(&scope, &query, 0).unwrap();
    assert_eq!(
        page.items.len(),
        2,
        "two 1002-byte records fit in 2500 bytes, three do not"
    );
    assert_eq!(page.resume_after, Some(vec![b'k', 1]));
    // One record larger than the bound still makes a page, so listing always progresses.
    let tiny = ListQuery {
        max_bytes: 10,
        ..query.clone()
    };
    assert_eq!(state.list(&scope, &tiny, 0).unwrap().items.len(), 1);
    // keys_only pages carry no values, so the byte bound no longer bites.
    let keys = ListQuery {
        keys_only: true,
        ..query
    };
    let page = state.list(&scope, &keys, 0).unwrap();
    assert_eq!(page.items.len(), 10);
    assert!(page
        .items
        .iter()
        .all(|(_, r)| r.value.is_empty() && r.mod_revision > 0));
}

#[test]
fn start_after_outside_the_prefix_never_widens_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = KvState::new(Engine::open(dir.path()).unwrap());
    let scope = Scope::new("ns", "db", "t");
    for (revision, key) in ["a", "aa", "b", "ba", "c"].iter().enumerate() {
        put_at(
            &state,
            revision as u64 + 1,
            0,
            &scope,
            key.as_bytes(),
            b"",
            Expiry::Never,
        );
    }
    let keys = |after: &str, descending: bool| {
        let query = ListQuery {
            prefix: b"b".to_vec(),
            start_after: Some(after.as_bytes().to_vec()),
            limit: 10,
            descending,
            ..Default::default()
        };
        let page = state.list(&scope, &query, 0).unwrap();
        page.items
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys("a", false), ["b", "ba"]);
    assert_eq!(keys("b", false), ["ba"]);
    assert_eq!(keys("z", false), Vec::<String>::new());
    assert_eq!(keys("z", true), ["ba", "b"]);
    assert_eq!(keys("ba", true), ["b"]);
    assert_eq!(keys("a", true), Vec::<String>::new());
}

#[test]
fn snapshot_round_trips_and_rejects_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path()).unwrap();
    let state = KvState::new(engine.clone());
    let scope = Scope::new("ns", "db", "t");
    let put = Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        metadata: BTreeMap::new(),
        expiry: Expiry::TtlMs(10),
    };
    let mut txn = StateTxn::new(1);
    state
        .apply(
            &mut txn,
            5,
            &KvCommand::Put {
                scope: scope.clone(),
                put,
                precondition: Precondition::None,
            },
        )
        .unwrap();
    txn.put_meta(b"last_applied", b"1");
    state.commit(txn).unwrap();
    let (exported, meta) = engine.export_state(&[b"last_applied"]).unwrap();
    assert_eq!(meta, vec![Some(b"1".to_vec())]);

    let other_dir = tempfile::tempdir().unwrap();
    let other = Engine::open(other_dir.path()).unwrap();
    let mut corrupted = exported.clone();
    corrupted[12] ^= 1;
    assert!(other.import_state(&corrupted).is_err());
    other.import_state(&exported).unwrap();
    let restored = KvState::new(other);
    assert_eq!(restored.get(&scope, b"k", 0).unwrap().unwrap().value, b"v");
    assert_eq!(
        restored.due_expirations(15, 10).unwrap().len(),
        1,
        "expiry index restored"
    );
    assert_eq!(restored.tables("ns", "db").unwrap(), vec!["t".to_string()]);
}
