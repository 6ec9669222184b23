//! The registry state machine against a plain in-memory model: random registrations (merges,
//! keepalives, info changes, node limits), deregistrations, expiries (current and stale), config
//! sets (merge, replace, paths into non-objects, size limits) and deletes. After every command
//! the response, the events, every service view, every config document and the history agree.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use strata_registry::*;
use strata_storage::kv::{KvState, StateTxn};
use strata_storage::Engine;

const NS: &str = "ns";
const SERVICES: [&str; 2] = ["alpha", "beta"];
const VERSIONS: [&str; 2] = ["1", "2"];
const CONFIG_KEYS: [&str; 2] = ["app", "db"];
const SEGMENTS: [&str; 2] = ["a", "b"];

#[derive(Clone, Debug)]
enum Op {
    Register {
        service: usize,
        version: usize,
        info: u8,
        /// (node id, address tag, metadata tag)
        nodes: Vec<(u8, u8, u8)>,
        ttl_s: u64,
        max_nodes: u64,
    },
    Deregister {
        service: usize,
        version: usize,
        ids: Vec<u8>,
    },
    /// Expire the n-th current node (modulo), with its true mod revision or a stale one.
    Expire {
        picks: Vec<(usize, bool)>,
    },
    ConfigSet {
        key: usize,
        path: Vec<usize>,
        value: Value,
        max_bytes: u64,
    },
    ConfigDelete {
        key: usize,
        path: Vec<usize>,
    },
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        (0..3i64).prop_map(|n| json!(n)),
        Just(json!("s")),
        Just(Value::Null),
    ];
    leaf.prop_recursive(2, 6, 2, |inner| {
        prop::collection::btree_map(prop::sample::select(SEGMENTS.to_vec()), inner, 0..3).prop_map(
            |map| Value::Object(map.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        )
    })
}

fn op() -> impl Strategy<Value = Op> {
    let path = prop::collection::vec(0..2usize, 0..3);
    prop_oneof![
        6 => (0..2usize, 0..2usize, 0..2u8,
              prop::collection::btree_map(0..4u8, (0..2u8, 0..2u8), 1..4), 1..3u64, 3..7u64)
            .prop_map(|(service, version, info, nodes, ttl_s, max_nodes)| Op::Register {
                service, version, info,
                nodes: nodes.into_iter().map(|(id, (a, m))| (id, a, m)).collect(),
                ttl_s, max_nodes,
            }),
        2 => (0..2usize, 0..2usize, prop::collection::vec(0..4u8, 0..3))
            .prop_map(|(service, version, ids)| Op::Deregister { service, version, ids }),
        2 => prop::collection::vec((0..8usize, prop::bool::weighted(0.3)), 1..3)
            .prop_map(|picks| Op::Expire { picks }),
        4 => (0..2usize, path.clone(), json_value(), prop_oneof![Just(1_000u64), 20..60u64])
            .prop_map(|(key, path, value, max_bytes)| Op::ConfigSet { key, path, value, max_bytes }),
        2 => (0..2usize, path).prop_map(|(key, path)| Op::ConfigDelete { key, path }),
    ]
}

#[derive(Clone, Debug, PartialEq)]
struct ModelNode {
    address: String,
    metadata: BTreeMap<String, String>,
    ttl_ms: u64,
    create_revision: u64,
    mod_revision: u64,
}

#[derive(Default)]
struct Model {
    /// (service, version) -> (info, create revision, mod revision)
    versions: BTreeMap<(String, String), (ServiceInfo, u64, u64)>,
    nodes: BTreeMap<(String, String, String), ModelNode>,
    /// key -> (document, create revision, mod revision, version)
    configs: BTreeMap<String, (Value, u64, u64, u64)>,
}

fn info(tag: u8) -> ServiceInfo {
    ServiceInfo {
        metadata: BTreeMap::from([("v".to_string(), tag.to_string())]),
        endpoints: Vec::new(),
    }
}

fn node_event(
    (service, version, id): (&str, &str, &str),
    info: &ServiceInfo,
    node: &ModelNode,
    change: Change,
    expired: bool,
) -> RegistryEvent {
    RegistryEvent::Node(NodeEvent {
        namespace: NS.into(),
        service: service.into(),
        version: version.into(),
        info: info.clone(),
        node: NodeInfo {
            id: id.into(),
            address: node.address.clone(),
            metadata: node.metadata.clone(),
        },
        ttl_ms: node.ttl_ms,
        change,
        expired,
    })
}

/// The model's own path write: objects merge key by key, anything else replaces; fails at the
/// first non-object on the way (naming the dotted prefix).
fn model_set(document: &mut Value, path: &[String], value: Value) -> Result<(), String> {
    let mut at = document;
    for (depth, segment) in path.iter().enumerate() {
        let Value::Object(map) = at else {
            return Err(path[..depth].join("."));
        };
        at = map.entry(segment.clone()).or_insert_with(|| json!({}));
    }
    fn merge(target: &mut Value, value: Value) {
        match (target, value) {
            (Value::Object(target), Value::Object(incoming)) => {
                for (k, v) in incoming {
                    merge(target.entry(k).or_insert(Value::Null), v);
                }
            }
            (target, value) => *target = value,
        }
    }
    // A missing key merges into Null, which an object then replaces whole: same as insert.
    merge(at, value);
    Ok(())
}

fn model_delete(document: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = document;
    for segment in parents {
        match at.as_object_mut().and_then(|m| m.get_mut(segment)) {
            Some(next) => at = next,
            None => return false,
        }
    }
    at.as_object_mut().is_some_and(|m| m.remove(last).is_some())
}

impl Model {
    fn service_nodes(&self, service: &str) -> u64 {
        self.nodes.keys().filter(|(s, _, _)| s == service).count() as u64
    }

    fn remove(
        &mut self,
        key: &(String, String, String),
        expired: bool,
        revision: u64,
        events: &mut Vec<RegistryEvent>,
    ) {
        let node = self.nodes.remove(key).expect("present");
        let vkey = (key.0.clone(), key.1.clone());
        let info = self.versions[&vkey].0.clone();
        events.push(node_event(
            (&key.0, &key.1, &key.2),
            &info,
            &node,
            Change::Delete,
            expired,
        ));
        if self
            .nodes
            .keys()
            .any(|(s, v, _)| (s, v) == (&vkey.0, &vkey.1))
        {
            self.versions.get_mut(&vkey).expect("present").2 = revision;
        } else {
            self.versions.remove(&vkey);
        }
    }

    /// The command the op stands for, and the model's response and events.
    fn apply(
        &mut self,
        op: &Op,
        revision: u64,
    ) -> (RegistryCommand, RegistryResponse, Vec<RegistryEvent>) {
        let mut events = Vec::new();
        match op {
            Op::Register {
                service,
                version,
                info: tag,
                nodes,
                ttl_s,
                max_nodes,
            } => {
                let (service, version) = (
                    SERVICES[*service].to_string(),
                    VERSIONS[*version].to_string(),
                );
                let infos: Vec<NodeInfo> = nodes
                    .iter()
                    .map(|(id, a, m)| NodeInfo {
                        id: format!("n{id}"),
                        address: format!("h{a}:1"),
                        metadata: BTreeMap::from([("m".to_string(), m.to_string())]),
                    })
                    .collect();
                let command = RegistryCommand::Register {
                    namespace: NS.into(),
                    service: service.clone(),
                    version: version.clone(),
                    info: info(*tag),
                    nodes: infos.clone(),
                    ttl_ms: ttl_s * 1000,
                    max_nodes: *max_nodes,
                };
                let new_info = info(*tag);
                let vkey = (service.clone(), version.clone());
                let existed = self.versions.contains_key(&vkey);
                let info_changed = self.versions.get(&vkey).is_none_or(|v| v.0 != new_info);
                let key = |n: &NodeInfo| (service.clone(), version.clone(), n.id.clone());
                let added = infos
                    .iter()
                    .filter(|n| !self.nodes.contains_key(&key(n)))
                    .count() as u64;
                if added > 0 && self.service_nodes(&service) + added > *max_nodes {
                    let failure = RegistryFailure::TooManyNodes {
                        limit: *max_nodes,
                        would_have: self.service_nodes(&service) + added,
                    };
                    return (command, RegistryResponse::Failed(failure), events);
                }
                let changed: Vec<&NodeInfo> = infos
                    .iter()
                    .filter(|n| {
                        self.nodes.get(&key(n)).is_none_or(|old| {
                            old.address != n.address
                                || old.metadata != n.metadata
                                || old.ttl_ms != ttl_s * 1000
                        })
                    })
                    .collect();
                if changed.is_empty() && !info_changed {
                    let response = RegistryResponse::Registered {
                        revision: 0,
                        created: 0,
                        updated: 0,
                    };
                    return (command, response, events);
                }
                let create_revision = self.versions.get(&vkey).map_or(revision, |v| v.1);
                self.versions
                    .insert(vkey.clone(), (new_info.clone(), create_revision, revision));
                let (mut created, mut updated) = (0, 0);
                for n in &changed {
                    let old = self.nodes.get(&key(n));
                    let change = if old.is_some() {
                        updated += 1;
                        Change::Update
                    } else {
                        created += 1;
                        Change::Create
                    };
                    let stored = ModelNode {
                        address: n.address.clone(),
                        metadata: n.metadata.clone(),
                        ttl_ms: ttl_s * 1000,
                        create_revision: old.map_or(revision, |o| o.create_revision),
                        mod_revision: revision,
                    };
                    events.push(node_event(
                        (&service, &version, &n.id),
                        &new_info,
                        &stored,
                        change,
                        false,
                    ));
                    self.nodes.insert(key(n), stored);
                }
                if info_changed && existed {
                    events.push(RegistryEvent::Version(VersionEvent {
                        namespace: NS.into(),
                        service: service.clone(),
                        version: version.clone(),
                        info: new_info.clone(),
                    }));
                }
                let response = RegistryResponse::Registered {
                    revision,
                    created,
                    updated,
                };
                (command, response, events)
            }
            Op::Deregister {
                service,
                version,
                ids,
            } => {
                let (service, version) = (
                    SERVICES[*service].to_string(),
                    VERSIONS[*version].to_string(),
                );
                let ids: Vec<String> = if ids.is_empty() {
                    self.nodes
                        .keys()
                        .filter(|(s, v, _)| (s, v) == (&service, &version))
                        .map(|(_, _, id)| id.clone())
                        .collect()
                } else {
                    ids.iter().map(|id| format!("n{id}")).collect()
                };
                let command = RegistryCommand::Deregister {
                    namespace: NS.into(),
                    service: service.clone(),
                    version: version.clone(),
                    node_ids: if let Op::Deregister { ids, .. } = op {
                        ids.iter().map(|id| format!("n{id}")).collect()
                    } else {
                        unreachable!()
                    },
                };
                let mut removed = 0;
                for id in ids {
                    let key = (service.clone(), version.clone(), id);
                    if self.nodes.contains_key(&key) {
                        self.remove(&key, false, revision, &mut events);
                        removed += 1;
                    }
                }
                let revision = if removed > 0 { revision } else { 0 };
                (
                    command,
                    RegistryResponse::Deregistered { revision, removed },
                    events,
                )
            }
            Op::Expire { picks } => {
                let current: Vec<_> = self
                    .nodes
                    .iter()
                    .map(|(k, n)| (k.clone(), n.mod_revision))
                    .collect();
                let mut items = Vec::new();
                for (pick, stale) in picks {
                    let Some(((s, v, id), mod_revision)) =
                        current.get(pick % current.len().max(1)).cloned()
                    else {
                        continue;
                    };
                    let judged = if *stale {
                        mod_revision + 1
                    } else {
                        mod_revision
                    };
                    items.push(((s, v, id), judged));
                }
                let command = RegistryCommand::Expire {
                    nodes: items
                        .iter()
                        .map(|((s, v, id), judged)| ExpireNode {
                            key: node_key(NS, s, v, id),
                            mod_revision: *judged,
                        })
                        .collect(),
                };
                let mut expired = 0;
                for (key, judged) in &items {
                    if self
                        .nodes
                        .get(key)
                        .is_some_and(|n| n.mod_revision == *judged)
                    {
                        self.remove(key, true, revision, &mut events);
                        expired += 1;
                    }
                }
                let revision = if expired > 0 { revision } else { 0 };
                (
                    command,
                    RegistryResponse::Expired { revision, expired },
                    events,
                )
            }
            Op::ConfigSet {
                key,
                path,
                value,
                max_bytes,
            } => {
                let key = CONFIG_KEYS[*key].to_string();
                let path: Vec<String> = path.iter().map(|i| SEGMENTS[*i].to_string()).collect();
                let command = RegistryCommand::ConfigSet {
                    namespace: NS.into(),
                    key: key.clone(),
                    path: path.clone(),
                    value: value.to_string(),
                    max_document_bytes: *max_bytes,
                };
                if path.is_empty() && !value.is_object() {
                    return (
                        command,
                        RegistryResponse::Failed(RegistryFailure::RootNotObject),
                        events,
                    );
                }
                let current = self.configs.get(&key).cloned();
                let mut document = current.as_ref().map_or(json!({}), |c| c.0.clone());
                if let Err(at) = model_set(&mut document, &path, value.clone()) {
                    let failure = RegistryFailure::NotAnObject { at };
                    return (command, RegistryResponse::Failed(failure), events);
                }
                let bytes = document.to_string().len() as u64;
                if bytes > *max_bytes {
                    let failure = RegistryFailure::DocumentTooLarge {
                        bytes,
                        limit: *max_bytes,
                    };
                    return (command, RegistryResponse::Failed(failure), events);
                }
                if current.as_ref().is_some_and(|c| c.0 == document) {
                    return (command, RegistryResponse::ConfigSet { revision: 0 }, events);
                }
                events.push(RegistryEvent::Config(ConfigEvent {
                    namespace: NS.into(),
                    key: key.clone(),
                    old: current.as_ref().map(|c| c.0.to_string()),
                    new: Some(document.to_string()),
                }));
                let (create, version) = current.map_or((revision, 1), |c| (c.1, c.3 + 1));
                self.configs
                    .insert(key, (document, create, revision, version));
                (command, RegistryResponse::ConfigSet { revision }, events)
            }
            Op::ConfigDelete { key, path } => {
                let key = CONFIG_KEYS[*key].to_string();
                let path: Vec<String> = path.iter().map(|i| SEGMENTS[*i].to_string()).collect();
                let command = RegistryCommand::ConfigDelete {
                    namespace: NS.into(),
                    key: key.clone(),
                    path: path.clone(),
                };
                let Some(current) = self.configs.get(&key).cloned() else {
                    return (
                        command,
                        RegistryResponse::ConfigDeleted { revision: 0 },
                        events,
                    );
                };
                let new = if path.is_empty() {
                    None
                } else {
                    let mut document = current.0.clone();
                    if !model_delete(&mut document, &path) {
                        return (
                            command,
                            RegistryResponse::ConfigDeleted { revision: 0 },
                            events,
                        );
                    }
                    Some(document)
                };
                events.push(RegistryEvent::Config(ConfigEvent {
                    namespace: NS.into(),
                    key: key.clone(),
                    old: Some(current.0.to_string()),
                    new: new.as_ref().map(Value::to_string),
                }));
                match new {
                    Some(document) => {
                        self.configs
                            .insert(key, (document, current.1, revision, current.3 + 1));
                    }
                    None => {
                        self.configs.remove(&key);
                    }
                }
                (
                    command,
                    RegistryResponse::ConfigDeleted { revision },
                    events,
                )
            }
        }
    }
}

/// Events compared with documents parsed, so that key order inside JSON text does not matter.
fn comparable(events: &[RegistryEvent]) -> Vec<String> {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap())
    };
    events
        .iter()
        .map(|event| match event {
            RegistryEvent::Node(node) => format!("{node:?}"),
            RegistryEvent::Version(version) => format!("{version:?}"),
            RegistryEvent::Config(config) => format!(
                "{} {} {:?} -> {:?}",
                config.namespace,
                config.key,
                parse(&config.old),
                parse(&config.new)
            ),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn registry_state_machine_agrees_with_a_model(ops in prop::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let kv = KvState::new(engine.clone());
        let state = RegistryState::new(engine, 1_000);
        let mut model = Model::default();
        for (step, op) in ops.iter().enumerate() {
            let revision = step as u64 + 1;
            let (command, expected, expected_events) = model.apply(op, revision);
            let mut txn = StateTxn::new(revision);
            let (response, events) = state.apply(&mut txn, &command).unwrap();
            kv.commit(txn).unwrap();
            prop_assert_eq!(&response, &expected, "step {} {:?}", step, op);
            prop_assert_eq!(comparable(&events), comparable(&expected_events), "step {} {:?}", step, op);
            // History holds exactly the revisions that had events.
            let page = state.history(revision, 10).unwrap();
            if events.is_empty() {
                prop_assert!(page.revisions.is_empty());
            } else {
                prop_assert_eq!(page.revisions.len(), 1);
                prop_assert_eq!(comparable(&page.revisions[0].1), comparable(&events));
            }

            // Every view agrees with the model.
            let views = state.services(Some(NS), None).unwrap();
            let seen: Vec<_> = views.iter().map(|v| ((v.service.clone(), v.version.clone()), (v.record.info.clone(), v.record.create_revision, v.record.mod_revision, v.record.node_count))).collect();
            let want: Vec<_> = model.versions.iter().map(|(k, (info, c, m))| {
                let count = model.nodes.keys().filter(|(s, v, _)| (s, v) == (&k.0, &k.1)).count() as u64;
                (k.clone(), (info.clone(), *c, *m, count))
            }).collect();
            prop_assert_eq!(seen, want, "step {} {:?}", step, op);
            let nodes: Vec<_> = views.iter().flat_map(|v| v.nodes.iter().map(move |(n, r)| {
                ((v.service.clone(), v.version.clone(), n.id.clone()), ModelNode {
                    address: r.address.clone(), metadata: r.metadata.clone(), ttl_ms: r.ttl_ms,
                    create_revision: r.create_revision, mod_revision: r.mod_revision,
                })
            })).collect();
            let want: Vec<_> = model.nodes.iter().map(|(k, n)| (k.clone(), n.clone())).collect();
            prop_assert_eq!(nodes, want, "step {} {:?}", step, op);
            prop_assert_eq!(state.lease_rows().unwrap().len(), model.nodes.len());
            for key in CONFIG_KEYS {
                let stored = state.config(NS, key).unwrap().map(|r| {
                    (serde_json::from_str::<Value>(&r.document).unwrap(), r.create_revision, r.mod_revision, r.version)
                });
                prop_assert_eq!(stored, model.configs.get(key).cloned(), "step {} {:?}", step, op);
            }
            let keys: Vec<String> = state.config_keys(NS, "", None, 10).unwrap().into_iter().map(|(k, _)| k).collect();
            prop_assert_eq!(keys, model.configs.keys().cloned().collect::<Vec<_>>());
            // Prefixes and pages.
            let names = |prefix: &str, after: Option<&str>| -> Vec<String> {
                state.config_keys(NS, prefix, after, 10).unwrap().into_iter().map(|(k, _)| k).collect()
            };
            let want = |prefix: &str, after: &str| -> Vec<String> {
                model.configs.keys().filter(|k| k.starts_with(prefix) && k.as_str() > after).cloned().collect()
            };
            prop_assert_eq!(names("d", None), want("d", ""));
            prop_assert_eq!(names("", Some("app")), want("", "app"));
            prop_assert_eq!(names("a", Some("ap")), want("a", "ap"));
            prop_assert_eq!(names("ap", Some("a")), want("ap", "a"));
            prop_assert_eq!(names("", Some("zzz")), Vec::<String>::new());
            // Nothing leaks into another namespace.
            prop_assert!(state.services(Some("other"), None).unwrap().is_empty());
        }
    }
}

#[test]
fn model_merge_matches_the_documented_semantics() {
    let mut document = json!({"a": {"b": 1, "c": 2}, "s": "x"});
    model_set(&mut document, &["a".into()], json!({"b": 5, "d": {"e": 1}})).unwrap();
    assert_eq!(
        document,
        json!({"a": {"b": 5, "c": 2, "d": {"e": 1}}, "s": "x"})
    );
    assert_eq!(
        model_set(&mut document, &["s".into(), "t".into()], json!(1)),
        Err("s".into())
    );
}
