//! The `abuse` suite: what a hostile client, a damaged disk or a careless operator does to a
//! real node, with bounded sizes, asserting that the node refuses or survives and that every
//! acknowledged write is still there.

mod bounded;
mod clock;
mod damage;
mod disk;
mod membership;

/// `strata cluster status` shows `count` voters.
fn assert_voters(cluster: &crate::harness::Cluster, count: usize) {
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let voters = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .count();
    assert_eq!(voters, count, "{status}");
}

/// Runs a membership command until it succeeds (a change in flight, or a promotion of a
/// learner still catching up, is refused: nothing done), for up to 30 s.
pub(crate) async fn retry(mut call: impl FnMut() -> Result<serde_json::Value, String>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match call() {
            Ok(_) => return,
            Err(error) => {
                assert!(std::time::Instant::now() < deadline, "{error}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    }
}

/// Starts `strata serve` over `data_dir` expecting it to refuse: its exit status and stderr.
pub(crate) fn start_refused(
    data_dir: &std::path::Path,
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut child = crate::harness::serve_command(data_dir)
        .args(args)
        .env("STRATA_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("a node expected to refuse to start kept running for 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    use std::io::Read;
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}
