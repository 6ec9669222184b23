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

/// A replication stream opens the current snapshot while newer ones are being built: every
/// open must find the data file `current.meta` names, whole (before the snapshot files had one
/// lock, a build could remove that file between the reader's two steps, and openraft stops the
/// leader's core when a replication stream cannot read its snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_current_snapshot_opens_while_newer_ones_are_built() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(&dir.path().join("db")).unwrap();
    let mut machine = StateMachine::new(engine, dir.path().join("snapshots"), 1_000).unwrap();
    let entry = |index| Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Blank,
    };
    machine.apply([entry(1)]).await.unwrap();
    machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    const BUILDS: u64 = 300;
    let mut builder = machine.clone();
    let builds = tokio::spawn(async move {
        for index in 2..=BUILDS {
            builder.apply([entry(index)]).await.unwrap();
            builder
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        }
    });
    // Readers as a leader has replication streams, each opening the snapshot again and again.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let mut machine = machine.clone();
            let builds_done = builds.abort_handle();
            tokio::spawn(async move {
                let mut opened = 0u32;
                let mut last_seen = None;
                while !builds_done.is_finished() && opened < 100_000 {
                    let mut current = machine
                        .get_current_snapshot()
                        .await
                        .expect("the current snapshot opens while another is built")
                        .expect("a current snapshot");
                    let mut data = Vec::new();
                    current.snapshot.read_to_end(&mut data).await.unwrap();
                    assert!(!data.is_empty(), "{} read empty", current.meta.snapshot_id);
                    assert!(
                        current.meta.last_log_id >= last_seen,
                        "the current snapshot went back from {last_seen:?} to {:?}",
                        current.meta.last_log_id
                    );
                    last_seen = current.meta.last_log_id;
                    opened += 1;
                }
                opened
            })
        })
        .collect();
    let mut opened = 0;
    for reader in readers {
        opened += reader.await.unwrap();
    }
    builds.await.unwrap();
    assert!(opened > 0);
    let current = machine.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.last_log_id.map(|id| id.index), Some(BUILDS));
}
