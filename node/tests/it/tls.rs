//! TLS on the client port: clients that trust the cluster's CA get in; plaintext clients and
//! clients trusting another CA do not.

use std::time::Duration;

use strata_client::Client;

use crate::harness::{strata, Server};

/// A put through `builder` (with a short deadline), or why it failed: at connect or at the call.
async fn try_put(builder: strata_client::ClientBuilder) -> Result<(), String> {
    let client = builder
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    client
        .table("d", "t")
        .put("k", "v")
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_client_port_serves_tls_to_clients_that_trust_the_cluster_ca() {
    let temp = tempfile::tempdir().unwrap();
    let tls = temp.path().join("tls");
    let tls = tls.to_str().unwrap();
    strata(&["cert", "init", "--tls-dir", tls]);
    strata(&[
        "cert",
        "node",
        "--tls-dir",
        tls,
        "--node-id",
        "1",
        "--name",
        "127.0.0.1",
    ]);
    let server = Server::start_with(&[
        "--tls-dir",
        tls,
        "--peer-addr",
        "127.0.0.1:0",
        "--client-tls",
        "on",
        "--auth",
        "on",
    ]);
    let ca = std::fs::read(temp.path().join("tls/ca.pem")).unwrap();
    let (namespace, id, secret) = crate::harness::auth::root_credentials(&[&server.data_dir]);

    // Trusting the cluster's CA: in, and the login goes over TLS too.
    try_put(
        Client::builder(&server.grpc)
            .ca_pem(ca.clone())
            .credentials(&namespace, &id, &secret),
    )
    .await
    .expect("a client with the CA");

    // Plaintext: refused.
    let plain = try_put(Client::builder(&server.grpc).token("x")).await;
    assert!(plain.is_err(), "a plaintext client got in");

    // Trusting another CA: refused before any credentials are sent.
    let other = tempfile::tempdir().unwrap();
    let other_tls = other.path().join("tls");
    strata(&["cert", "init", "--tls-dir", other_tls.to_str().unwrap()]);
    let foreign = std::fs::read(other_tls.join("ca.pem")).unwrap();
    let refused = try_put(
        Client::builder(&server.grpc)
            .ca_pem(foreign)
            .credentials(&namespace, &id, &secret),
    )
    .await;
    assert!(refused.is_err(), "a client trusting another CA got in");

    // The CLI takes the CA file.
    let ca_file = temp.path().join("tls/ca.pem");
    let ca_file = ca_file.to_str().unwrap();
    let (ok, _, stderr) = server.cli_in(
        "login",
        &[
            "--ca-file",
            ca_file,
            "--namespace",
            &namespace,
            "--id",
            &id,
            "--secret-file",
            "-",
        ],
        Some(&secret),
    );
    assert!(ok, "login over TLS: {stderr}");
    let (ok, _, stderr) = server.cli_in(
        "kv",
        &["put", "cli", "over-tls", "--ca-file", ca_file],
        None,
    );
    assert!(ok, "put over TLS: {stderr}");
    let (ok, stdout, stderr) = server.cli_in("kv", &["get", "cli", "--ca-file", ca_file], None);
    assert!(
        ok && stdout.contains("over-tls"),
        "get over TLS: {stdout} {stderr}"
    );
    let (ok, _, _) = server.cli_in("kv", &["get", "cli"], None);
    assert!(!ok, "the CLI got in without the CA");
}

#[tokio::test]
async fn nodes_may_require_client_certificates() {
    let temp = tempfile::tempdir().unwrap();
    let tls = temp.path().join("tls");
    let tls_arg = tls.to_str().unwrap();
    strata(&["cert", "init", "--tls-dir", tls_arg]);
    strata(&[
        "cert",
        "node",
        "--tls-dir",
        tls_arg,
        "--node-id",
        "1",
        "--name",
        "127.0.0.1",
    ]);
    // A certificate from the same CA for the client (node certificates may act as clients).
    strata(&["cert", "node", "--tls-dir", tls_arg, "--node-id", "9"]);
    let ca_file = tls.join("ca.pem");
    let server = Server::start_with(&[
        "--tls-dir",
        tls_arg,
        "--peer-addr",
        "127.0.0.1:0",
        "--client-ca-file",
        ca_file.to_str().unwrap(),
    ]);
    let ca = std::fs::read(&ca_file).unwrap();
    let without = try_put(Client::builder(&server.grpc).ca_pem(ca.clone())).await;
    assert!(without.is_err(), "a client without a certificate got in");
    let cert = std::fs::read(tls.join("node-9.pem")).unwrap();
    let key = std::fs::read(tls.join("node-9.key")).unwrap();
    try_put(
        Client::builder(&server.grpc)
            .ca_pem(ca)
            .client_identity(cert, key),
    )
    .await
    .expect("a client with a certificate of the cluster's CA");
}
