//! openraft's own storage conformance suite, run against our RocksDB log store and state
//! machine, as every openraft log store must pass.

mod chaos;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use strata_raft::log_store::RaftLogStore;
use strata_raft::state_machine::StateMachine;
use strata_raft::TypeConfig;
use strata_storage::{Engine, LogStore};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, RaftLogStore, StateMachine, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, RaftLogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(&dir.path().join("db")).expect("open engine");
        let log = RaftLogStore::new(LogStore::new(engine.clone()));
        let state_machine =
            StateMachine::new(engine, dir.path().join("snapshots"), 1_000).expect("state machine");
        Ok((dir, log, state_machine))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    if let Err(error) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {error}");
    }
}

/// A node that crashed while loading a received snapshot finds the `importing` marker at start
/// and loads the snapshot again, instead of serving a half-imported state.
#[tokio::test]
async fn an_interrupted_snapshot_import_is_redone_at_start() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use strata_storage::kv::{Expiry, KvCommand, Precondition, Put, Scope, StateTxn};

    let source_dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&source_dir.path().join("db")).unwrap();
    let mut source = StateMachine::new(engine, source_dir.path().join("snapshots"), 1_000).unwrap();
    let scope = Scope::new("ns", "db", "t");
    for i in 1..=50u64 {
        let mut txn = StateTxn::new(i);
        let command = KvCommand::Put {
            scope: scope.clone(),
            put: Put {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; 100],
                metadata: Default::default(),
                expiry: Expiry::Never,
            },
            precondition: Precondition::None,
        };
        source.kv().apply(&mut txn, 1, &command).unwrap();
        source.kv().commit(txn).unwrap();
    }
    let snapshot = source
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    drop(snapshot);

    // Node B: the snapshot files are in place and the marker says the import never finished.
    let target_dir = tempfile::tempdir().unwrap();
    let snapshots = target_dir.path().join("snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    for entry in std::fs::read_dir(source_dir.path().join("snapshots")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), snapshots.join(entry.file_name())).unwrap();
    }
    std::fs::write(snapshots.join("importing"), b"").unwrap();
    let engine = Engine::open(&target_dir.path().join("db")).unwrap();
    let mut target = StateMachine::new(engine, snapshots.clone(), 1_000).unwrap();
    assert!(
        !snapshots.join("importing").exists(),
        "the marker outlived the import"
    );
    for i in 1..=50u64 {
        let record = target
            .kv()
            .get(&scope, format!("k{i}").as_bytes(), 0)
            .unwrap();
        assert_eq!(record.map(|r| r.value.len()), Some(100), "k{i}");
    }
    let current = target
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("a current snapshot");
    assert!(
        current.meta.snapshot_id.ends_with("-0"),
        "{}",
        current.meta.snapshot_id
    );
}
