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
