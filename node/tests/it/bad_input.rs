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
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("x-strata-error").unwrap(),
        "message_too_large"
    );
    assert!(
        status.message().contains("limit of"),
        "{}",
        status.message()
    );

    // Bytes that do not decode as the request (invalid UTF-8 in a string field, nesting past
    // the decoder's limit) are INVALID_ARGUMENT, not INTERNAL.
    for (path, body) in [
        // PutRequest.database (field 1, a string) holding 0xFF 0xFE.
        ("/strata.kv.v1.Kv/Put", vec![0x0a, 0x02, 0xff, 0xfe]),
        // A registration whose endpoint's request type (TypeInfo, whose field 3 is TypeInfos)
        // nests 120 deep, past the decoder's limit of 100.
        (
            "/strata.registry.v1.Registry/Register",
            wrap(1, wrap(4, wrap(2, nested(3, 120)))),
        ),
    ] {
        let status = raw_unary(&server.grpc, path, body).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("the request does not decode"),
            "{}",
            status.message()
        );
    }

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

/// `message` as the length-delimited field `field` of a message.
fn wrap(field: u8, message: Vec<u8>) -> Vec<u8> {
    let mut outer = vec![(field << 3) | 2];
    prost::encoding::encode_varint(message.len() as u64, &mut outer);
    outer.extend_from_slice(&message);
    outer
}

/// `depth` length-delimited fields numbered `field`, each the whole payload of the one above.
fn nested(field: u8, depth: usize) -> Vec<u8> {
    (0..depth).fold(Vec::new(), |message, _| wrap(field, message))
}

/// One unary call whose request is `body` as it is on the wire (no encoding by us).
async fn raw_unary(
    grpc: &str,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            Ok(Some(bytes.to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let mut client = crate::harness::raw_grpc(grpc).await;
    client
        .unary(
            tonic::Request::new(body),
            http::uri::PathAndQuery::from_static(path),
            Raw,
        )
        .await
        .map(tonic::Response::into_inner)
}

/// A watcher that stops reading is cut: once its queue has found no room for the outbox's
/// wait (30 s), its next read is RESOURCE_EXHAUSTED `slow_reader`, and the node goes on.
#[tokio::test]
async fn a_watcher_that_stops_reading_is_cut_with_a_clear_status() {
    use strata_client::proto::{kv_client::KvClient, WatchRequest};

    let server = Server::start();
    let client = server.client("default").await;
    let table = client.table("", "");
    let mut watch = KvClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .watch(WatchRequest {
            key: b"slow/".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // More than the queue (64 responses), the HTTP/2 windows and buffers can hold unread.
    for i in 0..120 {
        table
            .put(format!("slow/{i:03}"), vec![b'v'; 64 * 1024])
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    let mut read = 0;
    let status = loop {
        match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            futures::StreamExt::next(&mut watch),
        )
        .await
        {
            Ok(Some(Ok(_))) => read += 1,
            Ok(Some(Err(status))) => break status,
            other => panic!("after {read} responses: {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("x-strata-error").unwrap(),
        "slow_reader"
    );
    assert!(read < 120, "every response arrived: nothing was cut");
    // The node serves on.
    table.put("slow/after", "x").await.unwrap();
}
