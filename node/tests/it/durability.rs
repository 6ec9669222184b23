//! Crash safety: kill -9 during a stream of writes, restart, and every acknowledged write is
//! there; a write that failed is either wholly applied or not at all.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_client::{List, Put};

use crate::harness::Server;

const WRITERS: usize = 8;
const WRITES_PER_WRITER: usize = 400;

#[tokio::test]
async fn kill9_during_writes_loses_no_acknowledged_write() {
    let mut server = Server::start();
    let client = server.client("default").await;
    // key -> (value, acknowledged?)
    let outcomes: Arc<Mutex<BTreeMap<String, (String, bool)>>> = Arc::default();
    let acked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let table = client.table("db", "t");
        let outcomes = outcomes.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..WRITES_PER_WRITER {
                if Instant::now() > deadline {
                    return;
                }
                let key = format!("w{writer}/{i:05}");
                let value = format!("value-{writer}-{i}-{}", "x".repeat(i % 50));
                outcomes
                    .lock()
                    .unwrap()
                    .insert(key.clone(), (value.clone(), false));
                match table
                    .put_with(Put::new(key.clone(), value).metadata("writer", writer.to_string()))
                    .await
                {
                    Ok(_) => {
                        outcomes.lock().unwrap().get_mut(&key).unwrap().1 = true;
                        acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    // Kill mid-stream, once a good number of writes are acknowledged.
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "writes too slow to reach the kill point"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for writer in writers {
        writer.await.unwrap();
    }

    server.restart();
    let table = server.client("default").await.table("db", "t");
    let stored: BTreeMap<String, strata_client::proto::Record> = table
        .list_all(List::all().limit(1000))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (String::from_utf8(r.key.clone()).unwrap(), r))
        .collect();
    let outcomes = outcomes.lock().unwrap();
    let mut acknowledged = 0;
    for (key, (value, was_acked)) in outcomes.iter() {
        match stored.get(key) {
            Some(record) => {
                // Present: wholly applied, value and metadata together.
                assert_eq!(record.value, value.as_bytes(), "{key}");
                assert_eq!(
                    record.metadata.get("writer").map(String::as_str),
                    key[1..].split('/').next()
                );
            }
            None => assert!(!was_acked, "acknowledged write {key} was lost"),
        }
        acknowledged += usize::from(*was_acked);
    }
    assert!(
        stored.keys().all(|k| outcomes.contains_key(k)),
        "a key appeared that was never written"
    );
    let attempted = outcomes.len();
    eprintln!(
        "kill -9: {attempted} writes attempted, {acknowledged} acknowledged, {} stored after restart",
        stored.len()
    );
    assert!(
        attempted < WRITERS * WRITES_PER_WRITER,
        "the kill came after every write had finished"
    );
    assert!(
        acknowledged >= 300,
        "only {acknowledged} writes acknowledged"
    );
}

// Multi-threaded: terminate() blocks one worker while the client answers the server's GOAWAY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_restart_keeps_data() {
    let mut server = Server::start();
    let table = server.client("default").await.table("db", "t");
    let put = table.put("k", "v").await.unwrap();
    let status = server.terminate();
    assert!(status.success(), "clean shutdown exits 0, got {status}");
    server.restart();
    let table = server.client("default").await.table("db", "t");
    let record = table.get("k").await.unwrap().unwrap();
    assert_eq!(record.mod_revision, put.revision);
    // Revisions keep increasing across restarts.
    assert!(table.put("k2", "v").await.unwrap().revision > put.revision);
}

#[test]
fn refuses_a_data_directory_of_another_node() {
    let mut server = Server::start();
    server.kill9();
    let output = crate::harness::serve_command(&server.data_dir)
        .args(["--node-id", "2"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("belongs to node 1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_watches_with_unavailable() {
    use futures::StreamExt;
    let mut server = Server::start();
    let table = server.client("default").await.table("db", "t");
    let mut watch = table.watch("k", true, 0).await.unwrap();
    let started = Instant::now();
    let status = tokio::task::block_in_place(|| server.terminate());
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    match watch.next().await {
        Some(Err(strata_client::Error::Unavailable { message, .. })) => {
            assert!(message.contains("shutting down"), "{message}")
        }
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
}

#[test]
fn refuses_to_serve_from_a_corrupt_log() {
    use strata_storage::engine::{Engine, CF_LOG};
    use strata_storage::LogStore;
    let mut server = Server::start();
    let cli = server.cli(&["put", "k", "v"], None);
    assert!(cli.0, "{}", cli.2);
    server.kill9();
    {
        // Flip one payload byte of the newest log entry, as bit rot would.
        let engine = Engine::open(&server.data_dir.join("db")).unwrap();
        let log = engine.cf(CF_LOG);
        let last_index = LogStore::new(engine.clone()).last_index().unwrap().unwrap();
        let key = last_index.to_be_bytes();
        let mut corrupted = engine.db().get_cf(log, key).unwrap().unwrap();
        let last = corrupted.len() - 1;
        corrupted[last] ^= 0x40;
        engine.db().put_cf(log, key, corrupted).unwrap();
        engine.sync_wal().unwrap();
    }
    let output = crate::harness::serve_command(&server.data_dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Exit code 1 (a start-up error), not a crash and not a running server.
    assert_eq!(
        output.status.code(),
        Some(1),
        "started on a corrupt log, or crashed: {stdout} {stderr}"
    );
    assert!(!stdout.contains("strata ready"), "{stdout}");
    assert!(
        stderr.contains("crc32"),
        "the error names the corruption: {stderr}"
    );
    assert!(
        !stderr.contains("pthread"),
        "RocksDB raced process exit: {stderr}"
    );
}

/// A node whose Raft core stops on a storage error (here the `apply-error` failpoint: writing
/// an applied entry fails, as on a broken disk) exits with code 3 at once. It must not stay up
/// without Raft: a leader that did went on answering as leader with nothing behind it.
#[test]
fn exits_when_raft_stops_on_a_storage_error() {
    // The test build's strata has the failpoints (node's dev-dependency turns them on); one
    // without refuses FAILPOINTS at start, with exit code 1 and a message saying so.
    let temp = tempfile::tempdir().unwrap();
    let mut child = crate::harness::serve_command(&temp.path().join("data"))
        .env("FAILPOINTS", "apply-error=return")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 30 s after its state machine failed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("failpoint apply-error fired"), "{stderr}");
    assert!(
        !stderr.contains("pthread"),
        "RocksDB raced process exit: {stderr}"
    );
}
