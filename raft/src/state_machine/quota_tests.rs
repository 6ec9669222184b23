//! Quotas through the whole apply path: usage stays equal to a recount of the state after any
//! commands, a refused command changes nothing, a client's write never takes a namespace past
//! a limit, and usage survives a restart, a snapshot install and an upgrade from data written
//! before quotas.

use std::collections::BTreeMap;

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use proptest::prelude::*;
use strata_registry::{NodeInfo, RegistryCommand, ServiceInfo};
use strata_storage::engine::{CF_QUOTA, CF_SM_META, STATE_CFS};
use strata_storage::kv::{Expiry, KvCommand, Precondition, Put, Scope, TxnOp};
use strata_storage::quota::{Quota, QuotaCommand, Usage};
use strata_storage::Engine;
use strata_stream::{GroupConfig, NewMessage, Settle, StartAt, StreamCommand, TopicConfig};

use super::apply::checked_quotas;
use super::StateMachine;
use crate::types::{Command, Request, Response};

const NAMESPACES: [&str; 2] = ["a", "b"];

fn namespace() -> impl Strategy<Value = String> {
    prop::sample::select(NAMESPACES.to_vec()).prop_map(str::to_string)
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn kv_put(key: u8, value: Vec<u8>) -> Put {
    Put {
        key: vec![b'k', key],
        value,
        metadata: BTreeMap::from([("m".to_string(), "x".repeat(key as usize))]),
        expiry: Expiry::Never,
    }
}

fn kv() -> impl Strategy<Value = Command> {
    let scope = || namespace().prop_map(|ns| Scope::new(&ns, "db", "t"));
    prop_oneof![
        (scope(), 0u8..5, bytes(40)).prop_map(|(scope, key, value)| KvCommand::Put {
            scope,
            put: kv_put(key, value),
            precondition: Precondition::None,
        }),
        (scope(), 0u8..5).prop_map(|(scope, key)| KvCommand::Delete {
            scope,
            key: vec![b'k', key],
            prefix: false,
            precondition: Precondition::None,
        }),
        scope().prop_map(|scope| KvCommand::Delete {
            scope,
            key: b"k".to_vec(),
            prefix: true,
            precondition: Precondition::None,
        }),
        (scope(), 1u32..4).prop_map(|(scope, limit)| KvCommand::DeletePrefix {
            scope,
            prefix: b"k".to_vec(),
            limit,
        }),
        (scope(), 0u8..5, 0u8..5, bytes(40)).prop_map(|(scope, a, b, value)| KvCommand::Txn {
            scope,
            compares: Vec::new(),
            success: vec![
                TxnOp::Put(kv_put(a, value.clone())),
                TxnOp::Put(kv_put(b, value)),
                TxnOp::Delete {
                    key: vec![b'k', a.wrapping_add(1) % 5],
                    prefix: false,
                },
            ],
            failure: Vec::new(),
        }),
    ]
    .prop_map(Command::Kv)
}

fn topic() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["t0", "t1", "dlq"]).prop_map(str::to_string)
}

fn stream() -> impl Strategy<Value = Command> {
    prop_oneof![
        3 => (namespace(), topic(), prop::collection::vec(bytes(30), 1..4)).prop_map(
            |(namespace, topic, payloads)| StreamCommand::Publish {
                namespace,
                topic,
                messages: payloads
                    .into_iter()
                    .map(|payload| NewMessage {
                        message_id: String::new(),
                        metadata: BTreeMap::new(),
                        payload,
                    })
                    .collect(),
            }
        ),
        1 => (namespace(), topic(), 0u64..4).prop_map(|(namespace, topic, max_messages)| {
            StreamCommand::PutTopic {
                namespace,
                topic,
                config: TopicConfig {
                    max_messages,
                    ..TopicConfig::default()
                },
                must_exist: false,
                must_not_exist: false,
            }
        }),
        1 => (namespace(), topic()).prop_map(|(namespace, topic)| StreamCommand::DeleteTopic {
            namespace,
            topic
        }),
        // Claims, and nacks that send messages to the dead-letter topic after one delivery.
        1 => (namespace(), 1u64..6, 0u32..3).prop_map(|(namespace, nack, claim)| {
            StreamCommand::Group {
                namespace,
                topic: "t0".into(),
                group: "g".into(),
                consumer: "c".into(),
                config: GroupConfig {
                    start: StartAt::Earliest,
                    ack_wait_ms: 0,
                    max_deliveries: 1,
                    dead_letter_topic: "dlq".into(),
                },
                settle: vec![Settle::Nack {
                    sequence: nack,
                    delay_ms: 0,
                }],
                claim,
                auto_ack: false,
            }
        }),
    ]
    .prop_map(Command::Stream)
}

fn registry() -> impl Strategy<Value = Command> {
    prop_oneof![
        (namespace(), 0u8..2, prop::collection::vec(0u8..4, 1..3)).prop_map(
            |(namespace, service, ids)| RegistryCommand::Register {
                namespace,
                service: format!("s{service}"),
                version: "1".into(),
                info: ServiceInfo::default(),
                nodes: ids
                    .into_iter()
                    .map(|id| NodeInfo {
                        id: format!("n{id}"),
                        address: "127.0.0.1:1".into(),
                        metadata: BTreeMap::new(),
                    })
                    .collect(),
                ttl_ms: 0,
                max_nodes: 100,
            }
        ),
        (namespace(), 0u8..2, prop::collection::vec(0u8..4, 0..2)).prop_map(
            |(namespace, service, ids)| RegistryCommand::Deregister {
                namespace,
                service: format!("s{service}"),
                version: "1".into(),
                node_ids: ids.into_iter().map(|id| format!("n{id}")).collect(),
            }
        ),
        (namespace(), 0u8..2, 0u32..1000).prop_map(|(namespace, key, value)| {
            RegistryCommand::ConfigSet {
                namespace,
                key: format!("c{key}"),
                path: vec!["v".into()],
                value: value.to_string(),
                max_document_bytes: 1 << 20,
            }
        }),
        (namespace(), 0u8..2).prop_map(|(namespace, key)| RegistryCommand::ConfigDelete {
            namespace,
            key: format!("c{key}"),
            path: Vec::new(),
        }),
    ]
    .prop_map(Command::Registry)
}

fn limits() -> impl Strategy<Value = Command> {
    let namespace = prop::sample::select(vec!["a", "b", "*"]).prop_map(str::to_string);
    let change = prop_oneof![
        (0u64..8).prop_map(|n| (Quota::Keys, n)),
        (0u64..300).prop_map(|n| (Quota::Bytes, n)),
        (0u64..3).prop_map(|n| (Quota::Topics, n)),
        (0u64..120).prop_map(|n| (Quota::StreamBytes, n)),
        (0u64..4).prop_map(|n| (Quota::Nodes, n)),
    ];
    (namespace, prop::collection::vec(change, 1..3)).prop_map(|(namespace, changes)| {
        Command::Quota(QuotaCommand::SetLimits { namespace, changes })
    })
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![3 => kv(), 3 => stream(), 2 => registry(), 1 => limits()]
}

fn open(dir: &std::path::Path) -> StateMachine {
    let engine = Engine::open(&dir.join("db")).unwrap();
    StateMachine::new(engine, dir.join("snapshots"), 1_000).unwrap()
}

fn entry(index: u64, command: Command) -> Entry<crate::types::TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            time_ms: 1_000 + index,
            command,
        }),
    }
}

/// Every state column family but the metadata (which a refused command still moves: the
/// revision it consumed and the entry's progress).
/// (column family index, key, value) of every stored row.
type Rows = Vec<(usize, Box<[u8]>, Box<[u8]>)>;

fn state_digest(machine: &StateMachine) -> Rows {
    let db = machine.engine.db();
    let mut out = Vec::new();
    for (index, name) in STATE_CFS.iter().enumerate() {
        if *name == CF_SM_META {
            continue;
        }
        for item in db.iterator_cf(machine.engine.cf(name), rocksdb::IteratorMode::Start) {
            let (key, value) = item.unwrap();
            out.push((index, key, value));
        }
    }
    out
}

fn usage(machine: &StateMachine) -> BTreeMap<String, Usage> {
    machine.quota().usage_by_namespace()
}

/// Applies `commands` one entry each, checking after every one; returns the machine's dir.
fn run(commands: &[Command]) -> Result<tempfile::TempDir, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let machine = open(dir.path());
    for (i, command) in commands.iter().enumerate() {
        let before = state_digest(&machine);
        let usage_before = usage(&machine);
        let response = machine
            .apply_entries(vec![entry(i as u64 + 1, command.clone())])
            .unwrap()
            .remove(0);
        prop_assert_eq!(
            usage(&machine),
            machine.recount_usage().unwrap(),
            "usage drifted from the state after {:?}",
            command
        );
        if let Response::QuotaExceeded(exceeded) = &response {
            prop_assert!(checked_quotas(command).contains(&exceeded.quota));
            prop_assert!(exceeded.used + exceeded.adding > exceeded.limit);
            prop_assert_eq!(&before, &state_digest(&machine), "a refusal changed state");
            continue;
        }
        // What a client asked for never takes its namespace past a limit.
        let after = usage(&machine);
        for namespace in NAMESPACES {
            for &quota in checked_quotas(command) {
                let old = usage_before.get(namespace).map_or(0, |u| u.get(quota));
                let new = after.get(namespace).map_or(0, |u| u.get(quota));
                let limit = machine.quota().limit(namespace, quota);
                prop_assert!(
                    new <= old || limit == 0 || new <= limit,
                    "{} of {} went from {} to {} past limit {} with {:?}",
                    quota,
                    namespace,
                    old,
                    new,
                    limit,
                    command
                );
            }
        }
    }
    Ok(dir)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn usage_matches_a_recount_and_limits_hold(
        commands in prop::collection::vec(command(), 1..60),
    ) {
        let dir = run(&commands)?;
        // A restart reads the same usage back.
        let reopened = open(dir.path());
        prop_assert_eq!(usage(&reopened), reopened.recount_usage().unwrap());
    }
}

fn some_state(machine: &StateMachine) {
    let commands = [
        Command::Kv(KvCommand::Put {
            scope: Scope::new("a", "db", "t"),
            put: kv_put(1, b"value".to_vec()),
            precondition: Precondition::None,
        }),
        Command::Stream(StreamCommand::Publish {
            namespace: "b".into(),
            topic: "t0".into(),
            messages: vec![NewMessage {
                message_id: "id".into(),
                metadata: BTreeMap::new(),
                payload: b"payload".to_vec(),
            }],
        }),
        Command::Registry(RegistryCommand::ConfigSet {
            namespace: "a".into(),
            key: "app".into(),
            path: Vec::new(),
            value: r#"{"x":1}"#.into(),
            max_document_bytes: 1 << 20,
        }),
    ];
    let entries = commands
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    machine.apply_entries(entries).unwrap();
}

#[test]
fn usage_comes_with_a_snapshot_install() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    some_state(&source);
    let expected = usage(&source);
    assert_eq!(expected["a"].get(Quota::Keys), 2, "a record and a document");
    assert_eq!(expected["b"].get(Quota::StreamBytes), 9);
    let path = source_dir.path().join("export");
    let mut file = std::fs::File::create(&path).unwrap();
    source.engine.export_state_to(&mut file, &[]).unwrap();
    drop(file);

    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    target
        .import(&mut std::fs::File::open(&path).unwrap(), true)
        .unwrap();
    assert_eq!(usage(&target), expected);
    assert_eq!(target.recount_usage().unwrap(), expected);
}

#[test]
fn data_from_before_quotas_is_counted_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let machine = open(dir.path());
        some_state(&machine);
        let expected = usage(&machine);
        // As a data directory written before quotas existed: no usage, no counting mark.
        let db = machine.engine.db();
        let cf = machine.engine.cf(CF_QUOTA);
        let keys: Vec<Box<[u8]>> = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|item| item.unwrap().0)
            .collect();
        for key in keys {
            db.delete_cf(cf, key).unwrap();
        }
        expected
    };
    let machine = open(dir.path());
    assert!(machine.quota().is_counted().unwrap());
    assert_eq!(usage(&machine), expected);
}
