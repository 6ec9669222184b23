//! A full disk: writes that add data are refused with a clear status, the node stays up and
//! serves reads, nothing acknowledged is lost, and writes resume once space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_client::Error;

use crate::harness::{Cluster, Server};

/// A tmpfs of `size_mib` mounted for the test (the suite runs as root, as `.ci/run` does);
/// unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SmallDisk {
    fn mount(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let mut disk = Self::mount_at(&mount, size_mib);
        disk._dir = Some(dir);
        disk
    }

    /// Mounts the tmpfs on `mount`, an existing empty directory.
    fn mount_at(mount: &Path, size_mib: u64) -> Self {
        let mount = mount.to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Self { mount, _dir: None }
    }

    fn path(&self) -> &Path {
        &self.mount
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn is_disk_full(error: &Error) -> bool {
    matches!(error, Error::Status(status)
        if status.code() == tonic::Code::ResourceExhausted
            && status.metadata().get("x-strata-error").is_some_and(|code| code == "disk_full"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_refuses_growth_serves_reads_and_recovers() {
    let disk = SmallDisk::mount(96);
    // Most of the disk is taken by something else.
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 40 * 1024 * 1024]).unwrap();
    let data_dir = disk.path().join("data");
    let mut server = Server::start_at(
        &data_dir,
        vec!["--min-free-bytes".into(), (16 * 1024 * 1024).to_string()],
    );
    let table = server.client("default").await.table("db", "t");
    let value = vec![b'v'; 32 * 1024];
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        assert!(Instant::now() < deadline, "the disk never filled");
        assert!(
            acked.len() < 5_000,
            "5,000 writes of 32 KiB fit a 96 MiB disk?"
        );
        let key = format!("k{:05}", acked.len());
        match table.put(key.clone(), value.clone()).await {
            Ok(_) => acked.push(key),
            Err(error) => break error,
        }
    };
    assert!(is_disk_full(&refusal), "{refusal:?}");
    assert!(
        refusal
            .to_string()
            .contains(&data_dir.display().to_string()),
        "{refusal}"
    );
    assert!(
        acked.len() > 50,
        "only {} writes before the refusal",
        acked.len()
    );
    assert!(server.is_running(), "the node went down");
    // Reads and deletes go on.
    for key in &acked {
        assert_eq!(table.get(key.clone()).await.unwrap().unwrap().value, value);
    }
    assert_eq!(table.delete(acked.pop().unwrap()).await.unwrap(), 1);
    let error = table.put("more", value.clone()).await.unwrap_err();
    assert!(is_disk_full(&error), "{error:?}");

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match table.put("more", value.clone()).await {
            Ok(_) => break,
            Err(error) if is_disk_full(&error) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("writes did not resume: {error:?}"),
        }
    }
    // Nothing acknowledged was lost, across a crash too.
    server.kill9();
    server.restart();
    let table = server.client("default").await.table("db", "t");
    for key in acked.iter().chain([&"more".to_string()]) {
        assert!(
            table.get(key.clone()).await.unwrap().is_some(),
            "{key} lost"
        );
    }
    server.kill9();
}

/// Fills what is left of the disk holding `path` with a file there.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [1 << 20, 4096, 64] {
        let block = vec![0u8; chunk];
        while file.write_all(&block).is_ok() {}
    }
    let _ = file.sync_all();
}

/// After a crash, opening the database writes the log's contents out as tables: a disk that
/// something else filled meanwhile would stop the start. The space reserved in the data
/// directory (`--start-reserve-bytes`) is freed first: the start succeeds, every acknowledged
/// write is there, and the reserve comes back once space does. With the reserve moved out of
/// the directory, the same start fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_start_on_a_disk_filled_meanwhile_uses_the_reserved_space() {
    const MIB: u64 = 1024 * 1024;
    let disk = SmallDisk::mount(160);
    let data_dir = disk.path().join("data");
    let args = vec![
        "--min-free-bytes".to_string(),
        (8 * MIB).to_string(),
        "--start-reserve-bytes".to_string(),
        (48 * MIB).to_string(),
    ];
    let mut server = Server::start_at(&data_dir, args);
    let reserve = data_dir.join("start-reserve");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&reserve).map_or(true, |m| m.len() < 48 * MIB) {
        assert!(
            Instant::now() < deadline,
            "the start reserve was never made"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let table = server.client("default").await.table("db", "t");
    let value = vec![b'r'; 32 * 1024];
    let keys: Vec<String> = (0..300).map(|i| format!("k{i:04}")).collect();
    for key in &keys {
        table.put(key.clone(), value.clone()).await.unwrap();
    }
    // A crash: the writes are in the log and memtables, not yet in tables.
    server.kill9();
    fill(&disk.path().join("filler"));

    let aside = disk.path().join("reserve-aside");
    std::fs::rename(&reserve, &aside).unwrap();
    let (status, stderr) = super::start_refused(&data_dir, &[]);
    assert!(
        !status.success(),
        "a start on a full disk succeeded: the test proves nothing"
    );
    assert!(stderr.contains("No space left"), "{stderr}");
    std::fs::rename(&aside, &reserve).unwrap();

    server.restart();
    let table = server.client("default").await.table("db", "t");
    for key in &keys {
        let record = table.get(key.clone()).await.unwrap();
        assert!(record.is_some_and(|r| r.value == value), "{key} lost");
    }
    // The reserve is not made again while the disk has no room for it and the guard's margin.
    assert!(
        !reserve.exists(),
        "the reserve is made again on a full disk?"
    );

    // Space returns: the reserve is made again, and writes go on.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::fs::metadata(&reserve).map_or(true, |m| m.len() < 48 * MIB) {
        assert!(
            Instant::now() < deadline,
            "the start reserve was not made again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    table.put("more", value.clone()).await.unwrap();
    server.kill9();
}

/// Free bytes of the disk holding `path`, as `df` tells.
fn available(path: &Path) -> u64 {
    let output = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// A follower's disk fills before the leader's: the leader hears of it (it asks each voter
/// every second) and refuses growth, naming the node, before the follower's own writes would
/// fail and stop it. The follower stays up with everything acknowledged, and writes resume
/// once its space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_nearly_full_disk_stops_growth_before_it_stops_the_follower() {
    const MIB: u64 = 1024 * 1024;
    let min_free = (8 * MIB).to_string();
    let mut cluster = Cluster::start(
        3,
        &["--min-free-bytes", &min_free, "--start-reserve-bytes", "0"],
    );
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    // Move the follower onto a small disk of its own.
    cluster.node_mut(follower).kill9();
    let dir = cluster.data_dir(follower);
    let aside = dir.with_extension("aside");
    std::fs::rename(&dir, &aside).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let _disk = SmallDisk::mount_at(&dir, 64);
    let copied = Command::new("cp")
        .arg("-a")
        .arg(aside.join("."))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(copied.success());
    cluster.node_mut(follower).restart();
    let table = cluster
        .node(leader)
        .client("default")
        .await
        .table("db", "t");
    let mut acked = vec!["before".to_string()];
    table.put("before", "1").await.unwrap();

    // Something else takes the follower's disk down to 4 MiB free, below its 8 MiB reserve.
    let filler = dir.join("filler");
    let take = available(&dir).saturating_sub(4 * MIB);
    std::fs::write(&filler, vec![0u8; take as usize]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        assert!(Instant::now() < deadline, "growth never stopped");
        let key = format!("k{:04}", acked.len());
        match table.put(key.clone(), "v").await {
            Ok(_) => acked.push(key),
            Err(error) => break error,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(is_disk_full(&refusal), "{refusal:?}");
    assert!(
        refusal.to_string().contains(&format!("node {follower}")),
        "{refusal}"
    );
    // The follower is up and serves reads.
    let on_follower = cluster
        .node(follower)
        .client("default")
        .await
        .table("db", "t");
    assert!(on_follower.get("before").await.unwrap().is_some());

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match table.put("after", "1").await {
            Ok(_) => break,
            Err(error) if is_disk_full(&error) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(error) => panic!("writes did not resume: {error:?}"),
        }
    }
    acked.push("after".into());
    for key in &acked {
        let record = on_follower
            .get_with(key.clone(), strata_client::Consistency::Linearizable)
            .await
            .unwrap();
        assert!(record.is_some(), "{key} missing on the follower");
    }
    cluster.node_mut(follower).kill9();
}
