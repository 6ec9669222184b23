//! The Go SDK (`sdk/go`) and its Micro plugins, tested by Go's own tests against this build's
//! binary: `go test` in each Go module, with `STRATA_BIN` naming the binary. The SDK's tests
//! start a node and a three-node cluster; the plugins' tests run Micro v3's and go-micro v5's
//! own server and client over a three-node cluster and kill its leader. `scripts/setup`
//! downloads the modules and compiles the tests beforehand, so that these runs are quick.

use std::path::PathBuf;
use std::process::Command;

use crate::harness::BINARY;

/// `go test` in the Go module at `sdk/go/<module>`, with `flags` before the packages.
fn go_test(module: &str, flags: &[&str]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk/go")
        .join(module);
    let output = Command::new("go")
        .args(["test", "-count=1", "-timeout", "240s"])
        .args(flags)
        .arg("./...")
        .current_dir(&dir)
        .env("STRATA_BIN", BINARY)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "running go test in {} (is Go installed?): {e}",
                dir.display()
            )
        });
    assert!(
        output.status.success(),
        "go test in {} failed:\n{}\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_go_sdk_passes_its_tests_against_real_nodes() {
    // The SDK is concurrent (subscriptions, watches, keepalives): its tests run with the race
    // detector.
    go_test("", &["-race"]);
}

#[test]
fn micro_v3_runs_on_a_strata_cluster_through_the_go_plugins() {
    go_test("micro", &[]);
}

#[test]
fn go_micro_v5_runs_on_a_strata_cluster_through_the_go_plugins() {
    go_test("gomicro", &[]);
}
