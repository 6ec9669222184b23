//! Every kind of bad input is refused with INVALID_ARGUMENT (or the fitting code), a message
//! naming the field and the limit, and no change to the store.

use strata_client::proto;
use strata_client::{Error, List, Put, Txn};
use tonic::Code;

use crate::harness::Server;

fn invalid(result: Result<impl std::fmt::Debug, Error>, mentions: &[&str]) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            for word in mentions {
                assert!(
                    message.contains(word),
                    "message {message:?} should mention {word:?}"
                );
            }
        }
        other => panic!("expected INVALID_ARGUMENT mentioning {mentions:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let server = Server::start_with(&["--max-value-bytes", "1024"]);
    let client = server.client("default").await;
    let table = client.table("db", "t");
    table.put("existing", "v").await.unwrap();
    let before = table.list_all(List::all()).await.unwrap();

    invalid(table.put("", "v").await, &["key", "empty"]);
    invalid(table.put(vec![b'k'; 4097], "v").await, &["key", "4096"]);
    invalid(table.put("k", vec![0u8; 1025]).await, &["value", "1024"]);
    invalid(
        table
            .put_with(Put::new("k", "v").ttl(std::time::Duration::from_secs(20 * 365 * 86400)))
            .await,
        &["ttl_ms"],
    );
    invalid(
        table.put_with(Put::new("k", "v").expires_at_ms(1)).await,
        &["expires_at_ms", "future"],
    );
    invalid(
        table
            .put_with(Put::new("k", "v").create_only().expect_mod_revision(3))
            .await,
        &["create_only"],
    );
    invalid(
        table.put_with(Put::new("k", "v").metadata("", "x")).await,
        &["metadata key"],
    );
    invalid(table.get("").await, &["key"]);
    invalid(table.delete("").await, &["key"]);
    invalid(
        table.list(List::all().limit(10_001)).await,
        &["limit", "10000"],
    );
    invalid(
        table.list(List::all().page_token("!!not-base64!!")).await,
        &["page_token"],
    );
    invalid(
        table.list(List::prefix("a").page_token("AQBi")).await,
        &["page_token"],
    ); // token for "b"
    invalid(
        table
            .list(List::all().start_after("a").page_token("AQBi"))
            .await,
        &["start_after"],
    );
    invalid(
        table.txn(Txn::new().then(proto::TxnOp { op: None })).await,
        &["success", "empty"],
    );
    invalid(
        table
            .txn(Txn::new().when(proto::Compare {
                key: b"k".to_vec(),
                op: 1,
                target: None,
            }))
            .await,
        &["target"],
    );

    // Names that could escape their scope, or that are empty or too long.
    for name in ["../etc", "a/b", "a\u{0}b", ".hidden", &"x".repeat(65)] {
        invalid(client.table(name, "t").put("k", "v").await, &["database"]);
        invalid(client.table("db", name).put("k", "v").await, &["table"]);
    }
    invalid(client.tables("a/b").await, &["database"]);

    // Unknown enum values, sent raw.
    let mut raw = proto::kv_client::KvClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let status = raw
        .list(proto::ListRequest {
            order: 9,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("order"), "{}", status.message());
    let status = raw
        .get(proto::GetRequest {
            key: b"k".to_vec(),
            consistency: 7,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("consistency"),
        "{}",
        status.message()
    );

    // A bad namespace header.
    for namespace in ["a/b", "", "../x"] {
        let mut request = tonic::Request::new(proto::GetRequest {
            key: b"k".to_vec(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-strata-namespace", namespace.parse().unwrap());
        let status = raw.get(request).await.unwrap_err();
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "namespace {namespace:?}"
        );
        assert!(
            status.message().contains("namespace"),
            "{}",
            status.message()
        );
    }

    // An oversized message is refused by the transport limit before it reaches a handler.
    let status = raw
        .put(proto::PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 3 * 1024 * 1024],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            status.code(),
            Code::ResourceExhausted | Code::InvalidArgument | Code::OutOfRange
        ),
        "{status:?}"
    );

    assert_eq!(
        table.list_all(List::all()).await.unwrap(),
        before,
        "bad input changed the store"
    );
    assert_eq!(client.databases().await.unwrap(), ["db"]);
}

/// Long-lived calls are bounded per node: past `--max-streams` a new watch or subscription
/// gets RESOURCE_EXHAUSTED, and a place frees as soon as a call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_calls_are_bounded_per_node() {
    let server = Server::start_with(&["--max-streams", "3"]);
    let client = server.client("bounded").await;
    let table = client.table("db", "t");
    let mut open = Vec::new();
    for i in 0..3 {
        open.push(table.watch(format!("k{i}"), false, 0).await.unwrap());
    }
    let refused = table
        .watch("k9", false, 0)
        .await
        .err()
        .expect("a fourth watch opened");
    match &refused {
        Error::Status(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains("--max-streams"), "{status:?}");
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    // Other calls are not affected.
    table.put("k0", "v").await.unwrap();
    // Ending one call frees its place.
    open.pop();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match table.watch("k9", false, 0).await {
            Ok(_) => break,
            Err(error) if std::time::Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no place freed after a watch ended: {error:?}"),
        }
    }
}
