//! A full disk: writes that add data are refused with a clear status, the node stays up and
//! serves reads, nothing acknowledged is lost, and writes resume once space returns.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_client::Error;

use crate::harness::Server;

/// A tmpfs of `size_mib` mounted for the test (the suite runs as root, as `.ci/run` does);
/// unmounted when dropped.
struct SmallDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size_mib: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&mount)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CI runs as root): {status}"
        );
        Self { mount, _dir: dir }
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
