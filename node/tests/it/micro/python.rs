//! The second-language client: `sdk/python/micro_check.py` (grpcio code generated from the same
//! Micro-package protos) drives store, registry, events and config against a real node.
//! `scripts/setup` makes its virtual environment (`sdk/python/.venv`, from PyPI).

use std::path::PathBuf;
use std::process::Command;

use crate::harness::Server;

#[test]
fn a_python_client_generated_from_the_protos_passes_its_checks() {
    let sdk = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/python");
    let python = sdk.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs sdk/python/requirements.txt)",
        python.display()
    );
    let server = Server::start();
    let output = Command::new(&python)
        .arg(sdk.join("micro_check.py"))
        .args(["--address", &server.grpc])
        .output()
        .expect("running micro_check.py");
    assert!(
        output.status.success(),
        "micro_check.py failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
