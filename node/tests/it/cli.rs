//! The `strata kv` CLI against a real server: human and JSON output, exit codes, errors.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Server, BINARY};

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

#[test]
fn put_get_list_del_txn_and_errors() {
    let server = Server::start();
    let (ok, out, _) = server.cli(&["put", "greeting", "hello", "--meta", "lang=en"], None);
    assert!(ok);
    assert!(out.starts_with("OK revision="), "{out}");
    let (ok, out, _) = server.cli(&["get", "greeting"], None);
    assert!(ok);
    assert_eq!(out, "hello\n");
    let (ok, out, _) = server.cli(&["get", "greeting", "--json"], None);
    assert!(ok);
    let record = json(&out);
    assert_eq!(record["value"], "hello");
    assert_eq!(record["metadata"]["lang"], "en");
    assert_eq!(record["version"], 1);

    // Value from stdin, another table, TTL.
    let (ok, _, err) = server.cli(
        &["put", "doc", "-", "-d", "app", "-t", "docs", "--ttl", "1h"],
        Some("from stdin"),
    );
    assert!(ok, "{err}");
    let (_, out, _) = server.cli(&["get", "doc", "-d", "app", "-t", "docs", "--json"], None);
    assert_eq!(json(&out)["value"], "from stdin");
    assert!(json(&out)["expires_at_ms"].as_u64().unwrap() > 0);

    for key in ["b", "a", "c"] {
        assert!(server.cli(&["put", key, key], None).0);
    }
    let (ok, out, _) = server.cli(&["list", "--keys-only"], None);
    assert!(ok);
    assert_eq!(out, "a\nb\nc\ngreeting\n");
    let (_, out, err) = server.cli(&["list", "--limit", "2", "--desc"], None);
    assert_eq!(out, "greeting\thello\nc\tc\n");
    assert!(
        err.contains("--page-token"),
        "a truncated listing says how to continue: {err}"
    );
    let (_, out, _) = server.cli(&["list", "--limit", "1", "--all", "--keys-only"], None);
    assert_eq!(out.lines().count(), 4);
    let (_, out, _) = server.cli(&["databases", "--json"], None);
    assert_eq!(json(&out), serde_json::json!(["app", "default"]));

    let txn = r#"{"compares": [{"key": "a", "value": "a"}],
                  "success": [{"put": {"key": "a", "value": "A"}}, {"get": {"key": "b"}}],
                  "failure": [{"get": {"key": "a"}}]}"#;
    let (ok, out, err) = server.cli(&["txn", "--json"], Some(txn));
    assert!(ok, "{err}");
    let result = json(&out);
    assert_eq!(result["succeeded"], true);
    assert_eq!(result["results"][1]["get"]["value"], "b");
    let (_, out, _) = server.cli(&["txn", "--json"], Some(txn));
    assert_eq!(
        json(&out)["succeeded"],
        false,
        "the compare no longer holds"
    );

    let (ok, out, _) = server.cli(&["del", "a"], None);
    assert!(ok);
    assert_eq!(out, "deleted 1\n");

    // Errors: non-zero exit and a message a person can act on.
    let (ok, _, err) = server.cli(&["get", "a"], None);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let (ok, _, err) = server.cli(&["put", "b", "x", "--expect-rev", "1"], None);
    assert!(!ok);
    assert!(err.contains("precondition failed"), "{err}");
    let (ok, _, err) = server.cli(&["put", "k", "v", "-t", "a/b"], None);
    assert!(!ok);
    assert!(err.contains("table"), "{err}");
    let (ok, _, err) = server.cli(&["txn"], Some("{not json"));
    assert!(!ok);
    assert!(err.contains("not valid JSON"), "{err}");
    let output = Command::new(BINARY)
        .args(["kv", "get", "k", "--endpoint", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot connect"));
}

#[test]
fn watch_prints_events_until_count() {
    let server = Server::start();
    let (_, out, _) = server.cli(&["put", "jobs/0", "queued", "--json"], None);
    let first = json(&out)["revision"].as_u64().unwrap();
    let watcher = Command::new(BINARY)
        .args([
            "kv",
            "watch",
            "jobs/",
            "--prefix",
            "--from-rev",
            &first.to_string(),
            "--count",
            "3",
            "--json",
        ])
        .args(["--endpoint", &server.grpc])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(server.cli(&["put", "jobs/1", "queued"], None).0);
    assert!(server.cli(&["del", "jobs/0"], None).0);
    let output = watcher.wait_with_output().unwrap();
    assert!(output.status.success());
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(json)
        .collect();
    let summary: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["record"]["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("PUT".into(), "jobs/0".into()),
            ("PUT".into(), "jobs/1".into()),
            ("DELETE".into(), "jobs/0".into())
        ]
    );
}

#[test]
fn stream_pub_read_sub_topics_info() {
    let server = Server::start();
    let stream = |args: &[&str], stdin: Option<&str>| {
        let (ok, out, err) = server.cli_in("stream", args, stdin);
        assert!(ok, "strata stream {args:?}: {err}");
        out
    };
    let out = stream(
        &[
            "create",
            "orders.created",
            "--max-messages",
            "100",
            "--dedup-window",
            "10m",
        ],
        None,
    );
    assert!(out.starts_with("created at revision"), "{out}");
    assert_eq!(
        stream(&["pub", "orders.created", "first", "--id", "o-1"], None),
        "sequence 1\n"
    );
    assert_eq!(
        stream(&["pub", "orders.created", "again", "--id", "o-1"], None),
        "duplicate of sequence 1\n"
    );
    let out = stream(
        &["pub", "orders.created", "-", "--lines"],
        Some("two\nthree\nfour\n"),
    );
    assert_eq!(out, "published 3 messages\n");
    let out = stream(&["read", "orders.created", "--from", "2", "--json"], None);
    let payloads: Vec<String> = out
        .lines()
        .map(|line| json(line)["payload"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(payloads, vec!["two", "three", "four"]);

    // A group from the earliest message, stopping after three; the next run resumes.
    let out = stream(
        &[
            "sub",
            "orders.created",
            "-g",
            "billing",
            "--from",
            "earliest",
            "--count",
            "3",
        ],
        None,
    );
    assert_eq!(
        out,
        "orders.created #1: first\norders.created #2: two\norders.created #3: three\n"
    );
    let out = stream(
        &["sub", "orders.created", "-g", "billing", "--count", "1"],
        None,
    );
    assert_eq!(out, "orders.created #4: four\n");

    let info = json(&stream(&["info", "orders.created", "--json"], None));
    assert_eq!(info["messages"], 4);
    assert_eq!(info["retention"]["max_messages"], 100);
    assert_eq!(info["retention"]["dedup_window_ms"], 600_000);
    assert_eq!(info["groups"][0]["name"], "billing");
    assert_eq!(info["groups"][0]["ack_floor"], 4);
    let topics = json(&stream(&["topics", "orders.*", "--json"], None));
    assert_eq!(topics.as_array().unwrap().len(), 1);

    let (ok, _, err) = server.cli_in("stream", &["pub", "orders.*", "x"], None);
    assert!(!ok);
    assert!(err.contains("wildcards"), "{err}");
    let (ok, _, err) = server.cli_in("stream", &["info", "nothing"], None);
    assert!(!ok);
    assert!(err.contains("no such topic"), "{err}");
    assert!(stream(&["delete", "orders.created"], None).starts_with("deleted"));
    assert_eq!(stream(&["topics"], None), "");
}

/// `strata serve --config` (issue 20): a key in the file reaches the running server; the
/// environment beats the file and a flag beats both; `--print-config` says which won; an
/// unknown key stops the server before it starts, naming the key.
#[tokio::test]
async fn serve_reads_a_config_file_under_env_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata.toml");
    std::fs::write(
        &file,
        "# a node's settings\nmax-value-bytes = 16\nmax_message_bytes = 4096\nnode-id = 3\n",
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();

    let server = Server::start_with(&["--config", file_arg]);
    let table = server.client("ops").await.table("db", "t");
    table.put(b"fits", vec![b'x'; 16]).await.unwrap();
    let refused = table.put(b"big", vec![b'x'; 17]).await;
    assert!(
        matches!(&refused, Err(strata_client::Error::InvalidArgument(message)) if message.contains("16")),
        "the file's max-value-bytes holds: {refused:?}"
    );

    let output = Command::new(BINARY)
        .args([
            "serve",
            "--config",
            file_arg,
            "--node-id",
            "5",
            "--print-config",
        ])
        .env("STRATA_MAX_MESSAGE_BYTES", "8192")
        .env_remove("STRATA_NODE_ID")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "max-value-bytes = 16  # config file",
        "max-message-bytes = 8192  # STRATA_MAX_MESSAGE_BYTES",
        "node-id = 5  # flag",
        "data-dir = \"./strata-data\"  # default",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }

    std::fs::write(&file, "max-value-bytes = 16\nmax-valeu-bytes = 17\n").unwrap();
    let output = Command::new(BINARY)
        .args(["serve", "--config", file_arg])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"max-valeu-bytes\""), "{stderr}");
    assert!(
        stderr.contains(file_arg),
        "the error names the file: {stderr}"
    );
}
