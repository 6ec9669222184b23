//! Dynamic config through the SDK against a real node: dotted paths, merge, delete, watch with
//! old and new values, resume, secrets sealed on disk and masked unless asked, namespace
//! isolation, bad input, and the CLI.

use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use strata_client::config::{Change, ConfigWatch};
use strata_client::Error;

use crate::harness::Server;

const WAIT: Duration = Duration::from_secs(20);

async fn next_change(watch: &mut ConfigWatch) -> Change {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("no config change in time")
        .expect("the watch ended")
        .expect("the watch failed")
}

#[tokio::test]
async fn paths_merge_replace_delete_and_watch_old_and_new() {
    let server = Server::start();
    let client = server.client("default").await;
    let config = client.config();
    assert!(matches!(
        config.get("app", "").await,
        Err(Error::NotFound(_))
    ));

    let r1 = config
        .set(
            "app",
            "",
            &json!({"db": {"host": "a", "port": 1}, "name": "app"}),
        )
        .await
        .unwrap();
    assert!(r1 > 0);
    let mut db_watch = config.watch("app", "db", 0, false).await.unwrap();
    let mut whole_watch = config.watch("app", "", 0, false).await.unwrap();

    // An object merges into the object there; the rest of the document stays.
    let r2 = config
        .set("app", "db", &json!({"port": 2, "user": "u"}))
        .await
        .unwrap();
    assert_eq!(
        config.get("app", "").await.unwrap(),
        json!({"db": {"host": "a", "port": 2, "user": "u"}, "name": "app"})
    );
    assert_eq!(config.get("app", "db.port").await.unwrap(), json!(2));
    assert_eq!(config.get("app", "db.missing").await.unwrap(), Value::Null);
    assert_eq!(config.get("app", "name.deeper").await.unwrap(), Value::Null);
    // Setting what is already there changes nothing.
    assert_eq!(config.set("app", "db.port", &json!(2)).await.unwrap(), 0);
    // A non-object replaces; paths create the objects on the way.
    config.set("app", "db.host", &json!("b")).await.unwrap();
    let r4 = config
        .set("app", "features.beta.enabled", &json!(true))
        .await
        .unwrap();
    assert_eq!(
        config.get("app", "features").await.unwrap(),
        json!({"beta": {"enabled": true}})
    );
    let deleted = config.delete("app", "db.user").await.unwrap();
    assert!(deleted > r4);
    assert_eq!(
        config.delete("app", "db.user").await.unwrap(),
        0,
        "already gone"
    );
    assert_eq!(config.delete("app", "nope.x").await.unwrap(), 0);

    let document = config.read("app", false).await.unwrap();
    assert_eq!(
        document.value,
        json!({"db": {"host": "b", "port": 2}, "name": "app", "features": {"beta": {"enabled": true}}})
    );
    assert_eq!(document.create_revision, r1);
    assert_eq!(document.mod_revision, deleted);
    assert_eq!(document.version, 5);

    // The db watcher saw the three changes under db (not the one under features).
    let changes: Vec<Change> = vec![
        next_change(&mut db_watch).await,
        next_change(&mut db_watch).await,
        next_change(&mut db_watch).await,
    ];
    assert_eq!(changes[0].revision, r2);
    assert_eq!(changes[0].old, json!({"host": "a", "port": 1}));
    assert_eq!(changes[0].new, json!({"host": "a", "port": 2, "user": "u"}));
    assert_eq!(changes[1].new, json!({"host": "b", "port": 2, "user": "u"}));
    assert_eq!(changes[2].revision, deleted);
    assert_eq!(changes[2].new, json!({"host": "b", "port": 2}));
    // The whole-document watcher saw four; then the document goes.
    for _ in 0..4 {
        next_change(&mut whole_watch).await;
    }
    let gone = config.delete("app", "").await.unwrap();
    let last = next_change(&mut whole_watch).await;
    assert_eq!((last.revision, last.new.clone()), (gone, Value::Null));
    assert_eq!(next_change(&mut db_watch).await.new, Value::Null);
    assert!(matches!(
        config.read("app", false).await,
        Err(Error::NotFound(_))
    ));

    // Resume from a revision: the history from there, in order.
    let mut resumed = config.watch("app", "db", r2, false).await.unwrap();
    let revisions: Vec<u64> = [
        next_change(&mut resumed).await,
        next_change(&mut resumed).await,
        next_change(&mut resumed).await,
        next_change(&mut resumed).await,
    ]
    .iter()
    .map(|c| c.revision)
    .collect();
    assert_eq!(revisions[0], r2);
    assert_eq!(revisions[3], gone);

    for key in ["svc.a", "svc.b", "other"] {
        config.set(key, "x", &json!(1)).await.unwrap();
    }
    assert_eq!(config.keys("svc.").await.unwrap(), ["svc.a", "svc.b"]);
    assert_eq!(config.keys("").await.unwrap(), ["other", "svc.a", "svc.b"]);
}

/// Whether `needle` occurs in any file under `dir`.
fn found_in_files(dir: &Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn secrets_are_sealed_on_disk_and_masked_unless_asked() {
    let mut server = Server::start();
    let client = server.client("default").await;
    let config = client.config();
    const PLAIN: &str = "hunter2-plaintext-7f3a9c";
    const CONTROL: &str = "visible-control-51b2e8";
    config
        .set("billing", "db", &json!({"host": "db-1", "note": CONTROL}))
        .await
        .unwrap();
    let mut watch = config.watch("billing", "db", 0, false).await.unwrap();
    let mut revealing = config.watch("billing", "db", 0, true).await.unwrap();
    config
        .set_secret("billing", "db.password", &json!(PLAIN))
        .await
        .unwrap();
    config
        .set_secret("billing", "api", &json!({"key": "k-0193", "n": 7}))
        .await
        .unwrap();

    assert_eq!(
        config.get("billing", "db.password").await.unwrap(),
        json!("[secret]")
    );
    assert_eq!(
        config
            .get_with_secrets("billing", "db.password")
            .await
            .unwrap(),
        json!(PLAIN)
    );
    // Every leaf of a secret object is sealed on its own.
    assert_eq!(
        config.get("billing", "api").await.unwrap(),
        json!({"key": "[secret]", "n": "[secret]"})
    );
    assert_eq!(
        config.get_with_secrets("billing", "api").await.unwrap(),
        json!({"key": "k-0193", "n": 7})
    );
    let masked = config.read("billing", false).await.unwrap().value;
    assert_eq!(masked["db"]["password"], json!("[secret]"));
    assert_eq!(masked["db"]["host"], json!("db-1"));
    let revealed = config.read("billing", true).await.unwrap().value;
    assert_eq!(revealed["db"]["password"], json!(PLAIN));
    assert_eq!(
        next_change(&mut watch).await.new["password"],
        json!("[secret]")
    );
    assert_eq!(
        next_change(&mut revealing).await.new["password"],
        json!(PLAIN)
    );

    // Crash (no flush on the way out), then read every file of the data directory: the Raft
    // log, the WAL, the SST files. The control value is there in the clear, the secret is not.
    server.kill9();
    assert!(
        found_in_files(&server.data_dir, CONTROL.as_bytes()),
        "the scan must find a plain value (else it proves nothing)"
    );
    assert!(
        !found_in_files(&server.data_dir, PLAIN.as_bytes()),
        "plaintext on disk"
    );
    assert!(
        !found_in_files(&server.data_dir, b"k-0193"),
        "plaintext on disk"
    );

    // After a restart the node opens its secrets with the same key file.
    server.restart();
    let client = server.client("default").await;
    assert_eq!(
        client
            .config()
            .get_with_secrets("billing", "db.password")
            .await
            .unwrap(),
        json!(PLAIN)
    );
    // A secret cannot be read through by path, nor written as a lookalike.
    assert_eq!(
        client
            .config()
            .get("billing", "db.password.x")
            .await
            .unwrap(),
        Value::Null
    );
    assert!(matches!(
        client
            .config()
            .set("billing", "fake", &json!({"$secret": "abc"}))
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn config_namespaces_are_isolated() {
    let server = Server::start();
    let (a, b) = (server.client("team-a").await, server.client("team-b").await);
    a.config()
        .set("app", "level", &json!("debug"))
        .await
        .unwrap();
    b.config()
        .set("app", "level", &json!("warn"))
        .await
        .unwrap();
    b.config().set("only-b", "x", &json!(1)).await.unwrap();
    assert_eq!(
        a.config().get("app", "level").await.unwrap(),
        json!("debug")
    );
    assert_eq!(b.config().get("app", "level").await.unwrap(), json!("warn"));
    assert!(matches!(
        a.config().get("only-b", "").await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(a.config().keys("").await.unwrap(), ["app"]);
    let mut watch = a.config().watch("app", "level", 0, false).await.unwrap();
    b.config()
        .set("app", "level", &json!("error"))
        .await
        .unwrap();
    a.config()
        .set("app", "level", &json!("info"))
        .await
        .unwrap();
    let change = next_change(&mut watch).await;
    assert_eq!((change.old, change.new), (json!("debug"), json!("info")));
    // No admin scope for config.
    let all = server.client("*").await;
    assert!(all.config().get("app", "").await.is_err());
}

#[tokio::test]
async fn bad_config_input_is_refused_and_changes_nothing() {
    let server = Server::start_with(&["--max-value-bytes", "1024"]);
    let client = server.client("default").await;
    let config = client.config();
    config
        .set("app", "", &json!({"a": {"b": 1}, "s": "text"}))
        .await
        .unwrap();
    let before = config.read("app", false).await.unwrap();

    let expect_invalid = |what: &str, result: Result<u64, Error>| match result {
        Err(Error::InvalidArgument(message)) => assert!(!message.is_empty(), "{what}"),
        other => panic!("{what}: expected INVALID_ARGUMENT, got {other:?}"),
    };
    expect_invalid("empty key", config.set("", "a", &json!(1)).await);
    expect_invalid(
        "long key",
        config.set(&"k".repeat(65), "a", &json!(1)).await,
    );
    expect_invalid("empty segment", config.set("app", "a..b", &json!(1)).await);
    expect_invalid("trailing dot", config.set("app", "a.", &json!(1)).await);
    let deep = vec!["d"; 33].join(".");
    expect_invalid("deep path", config.set("app", &deep, &json!(1)).await);
    expect_invalid(
        "non-object root",
        config.set("app", "", &json!([1, 2])).await,
    );
    expect_invalid(
        "oversized value",
        config.set("app", "big", &json!("x".repeat(2_000))).await,
    );
    // Invalid JSON cannot come through the SDK (it sends serde values): use the raw API.
    let mut raw = strata_client::config::proto::config_client::ConfigClient::connect(format!(
        "http://{}",
        server.grpc
    ))
    .await
    .unwrap();
    let status = raw
        .set(strata_client::config::proto::SetRequest {
            key: "app".into(),
            path: "a".into(),
            value: "{\"unterminated\": ".into(),
            secret: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not valid JSON"),
        "{}",
        status.message()
    );

    // A path into a non-object: FAILED_PRECONDITION naming where.
    match config.set("app", "s.inner", &json!(1)).await {
        Err(Error::PreconditionFailed { message, .. }) => {
            assert!(message.contains("\"s\""), "{message}")
        }
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    match config.set("app", "a.b.c", &json!(1)).await {
        Err(Error::PreconditionFailed { .. }) => {}
        other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
    }
    // Growing the document past the value limit, a little at a time.
    let mut refused = false;
    for i in 0..20 {
        match config
            .set("app", &format!("k{i}"), &json!("y".repeat(200)))
            .await
        {
            Ok(_) => {}
            Err(Error::Status(status)) if status.code() == tonic::Code::ResourceExhausted => {
                refused = true;
                break;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused, "a document past --max-value-bytes must be refused");
    let after = config.read("app", false).await.unwrap();
    assert_eq!(after.value["a"], before.value["a"]);
    assert_eq!(after.value["s"], before.value["s"]);
    assert!(after.value.to_string().len() <= 1024);
    assert!(config.get("app", "big").await.unwrap().is_null());
}

#[test]
fn cli_registry_and_config_round_trip() {
    let server = Server::start();
    let cli = |group: &str, args: &[&str]| {
        let (ok, stdout, stderr) = server.cli_in(group, args, None);
        assert!(ok, "strata {group} {args:?}: {stderr}");
        stdout
    };
    let out = cli(
        "registry",
        &[
            "register",
            "greeter",
            "--version",
            "1.0.0",
            "--node",
            "g1=h:1",
            "--node",
            "g2=h:2",
            "--ttl",
            "60s",
            "--json",
        ],
    );
    let result: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(result["created"], 2);
    let again = cli(
        "registry",
        &[
            "register",
            "greeter",
            "--version",
            "1.0.0",
            "--node",
            "g1=h:1",
            "--ttl",
            "60s",
        ],
    );
    assert!(again.contains("unchanged"), "{again}");
    let got = cli("registry", &["get", "greeter", "--json"]);
    let service: Value = serde_json::from_str(got.lines().next().unwrap()).unwrap();
    assert_eq!(service["nodes"].as_array().unwrap().len(), 2);
    assert!(cli("registry", &["list"]).contains("default/greeter 1.0.0 (2 nodes"));
    let watched = cli(
        "registry",
        &[
            "watch",
            "greeter",
            "--from-rev",
            "1",
            "--count",
            "2",
            "--json",
        ],
    );
    assert_eq!(watched.lines().count(), 2, "{watched}");
    assert!(cli(
        "registry",
        &[
            "deregister",
            "greeter",
            "--version",
            "1.0.0",
            "--node",
            "g1"
        ]
    )
    .contains("removed=1"));
    let (ok, _, stderr) = server.cli_in("registry", &["get", "nothing"], None);
    assert!(!ok && stderr.contains("not found"), "{stderr}");

    assert!(
        cli("config", &["set", "app", ".", "{\"db\":{\"port\":1}}"]).starts_with("OK revision=")
    );
    cli("config", &["set", "app", "env", "prod"]);
    cli(
        "config",
        &["set", "app", "db.password", "\"s3cr3t\"", "--secret"],
    );
    assert_eq!(cli("config", &["get", "app", "db.port"]).trim(), "1");
    assert_eq!(cli("config", &["get", "app", "env"]).trim(), "\"prod\"");
    assert_eq!(
        cli("config", &["get", "app", "db.password"]).trim(),
        "\"[secret]\""
    );
    assert_eq!(
        cli("config", &["get", "app", "db.password", "--secrets"]).trim(),
        "\"s3cr3t\""
    );
    let read: Value =
        serde_json::from_str(cli("config", &["read", "app", "--json"]).trim()).unwrap();
    assert_eq!(read["document"]["env"], "prod");
    assert_eq!(read["version"], 3);
    let watched = cli(
        "config",
        &[
            "watch",
            "app",
            "env",
            "--from-rev",
            "1",
            "--count",
            "1",
            "--json",
        ],
    );
    let change: Value = serde_json::from_str(watched.trim()).unwrap();
    assert_eq!(
        (change["old"].clone(), change["new"].clone()),
        (Value::Null, json!("prod"))
    );
    assert_eq!(cli("config", &["keys", "--json"]).trim(), "[\"app\"]");
    assert!(cli("config", &["del", "app", "env"]).starts_with("OK revision="));
    let (ok, _, stderr) = server.cli_in("config", &["set", "app", "x", "{broken"], None);
    assert!(!ok && stderr.contains("not valid JSON"), "{stderr}");
}
