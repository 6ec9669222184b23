//! Damaged files: a node never serves damaged data and never silently drops acknowledged data.
//! Each test writes acknowledged keys, stops the node, damages one layer (the RocksDB WAL, a
//! table file, the replicated log, the current snapshot) and starts it again.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_client::Consistency;
use strata_storage::Engine;

use crate::harness::{Cluster, Server};

const VALUE: usize = 1_000;

fn value(i: usize) -> Vec<u8> {
    format!("{i:08}").repeat(VALUE / 8).into_bytes()
}

/// Writes `count` acknowledged keys with `concurrency` writers (one writer: one log entry
/// per key; more: the leader packs them into fewer entries).
async fn write_keys(server: &Server, count: usize, concurrency: usize) {
    let table = server.client("default").await.table("db", "t");
    let mut writers = Vec::new();
    for writer in 0..concurrency {
        let table = table.clone();
        writers.push(tokio::spawn(async move {
            for i in (writer..count).step_by(concurrency) {
                table.put(format!("k{i:06}"), value(i)).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Every key is there with its value; `Err` names the first that is not.
async fn read_keys(server: &Server, count: usize) -> Result<(), String> {
    let table = server.client("default").await.table("db", "t");
    for i in 0..count {
        match table.get(format!("k{i:06}")).await {
            Ok(Some(record)) if record.value == value(i) => {}
            Ok(Some(_)) => panic!("key {i} came back with other bytes"),
            Ok(None) => panic!("acknowledged key {i} is missing"),
            Err(error) => return Err(format!("key {i}: {error}")),
        }
    }
    Ok(())
}

/// Overwrites `len` bytes at `offset` of `path`.
fn scribble(path: &Path, offset: u64, len: usize) {
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&vec![0xa5; len]).unwrap();
    file.sync_all().unwrap();
}

fn largest(dir: &Path, suffix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("no {suffix} file in {}", dir.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[tokio::test]
async fn a_wal_damaged_in_the_middle_stops_the_start_and_names_the_file() {
    let mut server = Server::start();
    write_keys(&server, 1_000, 16).await;
    // A crash: what was acknowledged is in the WAL only (no table file yet).
    server.kill9();
    let wal = largest(&server.data_dir.join("db"), ".log");
    let len = std::fs::metadata(&wal).unwrap().len();
    assert!(len > 64 * 1024, "the WAL holds the writes ({len} bytes)");
    scribble(&wal, len / 2, 4096);

    let (status, stderr) = super::start_refused(&server.data_dir, &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&file_name(&wal)), "{stderr}");
    assert!(stderr.contains("Damaged data"), "{stderr}");
    // Refusing changed nothing: the next start refuses again.
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), len);
    let (status, _) = super::start_refused(&server.data_dir, &[]);
    assert!(!status.success());
}

#[tokio::test]
async fn a_torn_wal_tail_loses_nothing_acknowledged() {
    let mut server = Server::start();
    write_keys(&server, 300, 16).await;
    server.kill9();
    // A crash during a write that was never acknowledged: a partial record at the end.
    let wal = largest(&server.data_dir.join("db"), ".log");
    let mut file = std::fs::OpenOptions::new().append(true).open(&wal).unwrap();
    // The WAL is written in blocks of 32 KiB, and no record crosses a block's end. Zeros up
    // to the next block (what a preallocated region looks like; the reader skips them), then
    // a record header promising 30,000 bytes (crc, length, type "full") and 100 of them: the
    // write that the crash cut short.
    let len = file.metadata().unwrap().len();
    let in_block = (len % 32_768) as usize;
    if in_block != 0 {
        file.write_all(&vec![0u8; 32_768 - in_block]).unwrap();
    }
    file.write_all(&[0, 0, 0, 0, 0x30, 0x75, 1]).unwrap();
    file.write_all(&[7u8; 100]).unwrap();
    file.sync_all().unwrap();
    server.restart();
    read_keys(&server, 300).await.unwrap();
}

#[tokio::test]
async fn a_damaged_table_file_stops_the_start_and_is_never_served() {
    let mut server = Server::start();
    write_keys(&server, 2_000, 16).await;
    assert!(server.terminate().success());
    // Move everything into table files, then damage the key-value family's largest one.
    let db = server.data_dir.join("db");
    let table = {
        let engine = Engine::open(&db).unwrap();
        engine.flush_all().unwrap();
        let table = engine
            .db()
            .live_files()
            .unwrap()
            .into_iter()
            .filter(|file| file.column_family_name == "kv")
            .max_by_key(|file| file.size)
            .expect("a table file of the kv family");
        engine.quiesce().unwrap();
        db.join(table.name.trim_start_matches('/'))
    };
    let len = std::fs::metadata(&table).unwrap().len();
    scribble(&table, len / 3, 64);

    let (status, stderr) = super::start_refused(&server.data_dir, &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&file_name(&table)), "{stderr}");
    assert!(stderr.contains("Damaged data"), "{stderr}");

    // Started anyway, without the check: the damaged keys fail to read; none reads wrong.
    let mut server = Server::start_at(
        &server.data_dir,
        vec!["--verify-on-start".into(), "off".into()],
    );
    let error = read_keys(&server, 2_000)
        .await
        .expect_err("a key in the damaged block was served");
    assert!(error.contains("key "), "{error}");
    server.kill9();
}

#[tokio::test]
async fn a_damaged_raft_log_entry_stops_the_start() {
    let mut server = Server::start();
    write_keys(&server, 200, 1).await;
    assert!(server.terminate().success());
    // Damage one entry's payload in the middle of the log (its own crc32 no longer matches);
    // RocksDB's checksums are intact, so only the log's own check can see it.
    let index = {
        let engine = Engine::open(&server.data_dir.join("db")).unwrap();
        let cf = engine.cf(strata_storage::engine::CF_LOG);
        let entries: Vec<_> = engine
            .db()
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(Result::unwrap)
            .collect();
        assert!(entries.len() > 100, "{} entries", entries.len());
        let (key, value) = &entries[entries.len() / 2];
        let mut damaged = value.to_vec();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x40;
        engine.db().put_cf(cf, key, damaged).unwrap();
        engine.quiesce().unwrap();
        u64::from_be_bytes(key[..].try_into().unwrap())
    };

    let (status, stderr) = super::start_refused(&server.data_dir, &[]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("raft log (entry)"), "{stderr}");
    assert!(stderr.contains(&format!("entry {index} ")), "{stderr}");
}

#[tokio::test]
async fn a_damaged_snapshot_is_set_aside_and_built_again() {
    let mut server = Server::start_with(&["--snapshot-every-entries", "200"]);
    write_keys(&server, 1_500, 1).await;
    let snapshots = server.data_dir.join("snapshots");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !snapshots.join("current.meta").exists() {
        assert!(Instant::now() < deadline, "no snapshot was built");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.terminate().success());
    let damaged = largest(&snapshots, ".data");
    let len = std::fs::metadata(&damaged).unwrap().len();
    scribble(&damaged, len / 2, 16);

    server.restart();
    read_keys(&server, 1_500).await.unwrap();
    let aside = snapshots.join(format!("{}.damaged", file_name(&damaged)));
    assert!(aside.exists(), "the damaged snapshot was not set aside");
    // The log behind it was purged, so a new snapshot was built from the state at start,
    // and it verifies.
    let current = largest(&snapshots, ".data");
    assert_ne!(current, damaged);
    let scratch = tempfile::tempdir().unwrap();
    let engine = Engine::open(scratch.path()).unwrap();
    let file = std::fs::File::open(&current).unwrap();
    let len = file.metadata().unwrap().len();
    assert!(engine.verify_snapshot(len, file).unwrap() > 1_500);
    server.kill9();
}

/// The operator's steps of `docs/operations.md` ("Damaged data") for a cluster member: remove
/// it, empty its data directory, start it with `--join`, add it as a learner (it catches up
/// from a snapshot or the log), promote it. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_with_damaged_data_is_rebuilt_from_its_peers_by_the_documented_steps() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    let keeper = (1..=3).find(|id| *id != victim).unwrap();
    let count = 600;
    write_keys(cluster.node(keeper), count, 16).await;
    cluster.node_mut(victim).kill9();
    let data_dir = cluster.data_dir(victim);
    let wal = largest(&data_dir.join("db"), ".log");
    let len = std::fs::metadata(&wal).unwrap().len();
    scribble(&wal, len / 2, 4096);
    let (status, stderr) = super::start_refused(&data_dir, &["--node-id", &victim.to_string()]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains(&file_name(&wal)), "{stderr}");

    let id = victim.to_string();
    super::retry(|| cluster.cluster_cli(&["remove", "--node-id", &id])).await;
    std::fs::remove_dir_all(&data_dir).unwrap();
    cluster.start_joining(victim);
    let peer = cluster.peer_addrs[&victim].clone();
    super::retry(|| cluster.cluster_cli(&["add-learner", "--node-id", &id, "--peer-addr", &peer]))
        .await;
    super::retry(|| cluster.cluster_cli(&["promote", "--node-id", &id])).await;

    // Linearizable reads on the rebuilt node: each waits until it has applied what the
    // leader had committed.
    let table = cluster
        .node(victim)
        .client("default")
        .await
        .table("db", "t");
    for i in 0..count {
        let record = table
            .get_with(format!("k{i:06}"), Consistency::Linearizable)
            .await
            .unwrap();
        assert!(
            record.is_some_and(|r| r.value == value(i)),
            "key {i} is missing or wrong on node {victim}"
        );
    }
    super::assert_voters(&cluster, 3);
}
