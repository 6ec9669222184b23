//! `events.Stream` and `events.Store` conformance (shared/MICRO_API.md §5, §11.7): publish,
//! consume with groups (shared and broadcast), acks and nacks on the Consume stream,
//! redelivery after `ack_wait`, retry limits, time offsets (negative = none), a client that
//! half-closes, the store's Read and 501 Write, tenancy, and native visibility.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use strata_proto::micro::events as pb;
use strata_proto::micro::events::store_client::StoreClient;
use strata_proto::micro::events::stream_client::StreamClient;
use strata_proto::RawFrame;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{assert_micro_error, channel, MicroChannel};
use crate::harness::{auth, Server};

const WAIT: Duration = Duration::from_secs(10);

/// A Consume stream as Micro's Go client drives it: the request, then acks on the same
/// stream, never half-closed.
struct Consumer {
    acks: mpsc::Sender<RawFrame>,
    events: tonic::Streaming<pb::Event>,
}

impl Consumer {
    async fn open(
        grpc: &str,
        token: Option<&str>,
        request: pb::ConsumeRequest,
    ) -> Result<Self, tonic::Status> {
        let (acks, frames) = mpsc::channel(64);
        acks.send(RawFrame(request.encode_to_vec())).await.unwrap();
        let mut grpc = tonic::client::Grpc::new(channel(grpc, token, None).await);
        grpc.ready().await.unwrap();
        let events = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(frames)),
                http::uri::PathAndQuery::from_static("/events.Stream/Consume"),
                tonic_prost::ProstCodec::<RawFrame, pb::Event>::default(),
            )
            .await?
            .into_inner();
        Ok(Self { acks, events })
    }

    async fn next(&mut self) -> pb::Event {
        tokio::time::timeout(WAIT, self.events.message())
            .await
            .expect("no event in time")
            .expect("consume failed")
            .expect("consume ended")
    }

    /// Whether nothing arrives for `quiet`.
    async fn silent_for(&mut self, quiet: Duration) -> bool {
        tokio::time::timeout(quiet, self.events.message())
            .await
            .is_err()
    }

    async fn settle(&self, id: &str, success: bool) {
        let ack = pb::AckRequest {
            id: id.into(),
            success,
        };
        self.acks.send(RawFrame(ack.encode_to_vec())).await.unwrap();
    }
}

fn consume(topic: &str, group: &str, auto_ack: bool) -> pb::ConsumeRequest {
    pb::ConsumeRequest {
        group: group.into(),
        topic: topic.into(),
        // What Micro's Go client sends when no offset is set: time.Time{}.Unix().
        offset: -62_135_596_800,
        auto_ack,
        ack_wait: 30_000_000_000,
        retry_limit: -1,
    }
}

async fn publish(stream: &mut StreamClient<MicroChannel>, topic: &str, payload: &str) {
    stream
        .publish(pb::PublishRequest {
            topic: topic.into(),
            metadata: HashMap::from([("Content-Type".to_string(), "text/plain".to_string())]),
            payload: payload.as_bytes().to_vec(),
            timestamp: 0,
        })
        .await
        .unwrap_or_else(|s| panic!("publish: {s:?}"));
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn events_consume_with_acks_nacks_and_redelivery() {
    let server = Server::start();
    let mut stream = StreamClient::new(channel(&server.grpc, None, None).await);
    // Subscribing first creates the topic; the group starts at "now".
    let mut consumer = Consumer::open(
        &server.grpc,
        None,
        pb::ConsumeRequest {
            ack_wait: 1_000_000_000, // 1 s, in nanoseconds
            ..consume("orders", "billing", false)
        },
    )
    .await
    .unwrap();
    publish(&mut stream, "orders", "one").await;
    publish(&mut stream, "orders", "two").await;
    let one = consumer.next().await;
    assert_eq!(
        (one.topic.as_str(), one.payload.as_slice()),
        ("orders", &b"one"[..])
    );
    assert_eq!(one.metadata["Content-Type"], "text/plain");
    assert!((now_s() - one.timestamp).abs() <= 5, "unix seconds");
    let two = consumer.next().await;
    assert_eq!(two.payload, b"two");
    assert_ne!(one.id, two.id);
    // Ack the first; nack the second: it comes back at once. Unknown ids are ignored.
    consumer.settle(&one.id, true).await;
    consumer.settle("no-such-id", true).await;
    consumer.settle(&two.id, false).await;
    let again = consumer.next().await;
    assert_eq!(
        (again.id.as_str(), again.payload.as_slice()),
        (two.id.as_str(), &b"two"[..])
    );
    // Not acked now: redelivered after ack_wait (1 s); the acked one never.
    let late = consumer.next().await;
    assert_eq!(late.id, two.id);
    consumer.settle(&two.id, true).await;
    assert!(consumer.silent_for(Duration::from_millis(2_500)).await);
    drop(consumer);

    // The group resumes where it stands: nothing acked is sent again, new events are.
    publish(&mut stream, "orders", "three").await;
    let mut resumed = Consumer::open(&server.grpc, None, consume("orders", "billing", true))
        .await
        .unwrap();
    assert_eq!(resumed.next().await.payload, b"three");
}

#[tokio::test]
async fn events_groups_share_broadcast_and_replay_from_a_time() {
    let server = Server::start();
    let mut stream = StreamClient::new(channel(&server.grpc, None, None).await);
    let before = now_s() - 1;
    publish(&mut stream, "audit", "old-1").await;
    publish(&mut stream, "audit", "old-2").await;
    // A time offset replays history; a negative one (no offset) starts from now.
    let mut replay = Consumer::open(
        &server.grpc,
        None,
        pb::ConsumeRequest {
            offset: before,
            ..consume("audit", "replay", true)
        },
    )
    .await
    .unwrap();
    assert_eq!(replay.next().await.payload, b"old-1");
    assert_eq!(replay.next().await.payload, b"old-2");
    let mut fresh = Consumer::open(&server.grpc, None, consume("audit", "fresh", true))
        .await
        .unwrap();
    // Two members of one group split the events; two subscriptions without a group each get
    // all of them.
    let mut a = Consumer::open(&server.grpc, None, consume("audit", "workers", true))
        .await
        .unwrap();
    let mut b = Consumer::open(&server.grpc, None, consume("audit", "workers", true))
        .await
        .unwrap();
    let mut x = Consumer::open(&server.grpc, None, consume("audit", "", true))
        .await
        .unwrap();
    let mut y = Consumer::open(&server.grpc, None, consume("audit", "", true))
        .await
        .unwrap();
    for i in 0..10 {
        publish(&mut stream, "audit", &format!("new-{i}")).await;
    }
    assert_eq!(fresh.next().await.payload, b"new-0", "no offset: from now");
    for broadcast in [&mut x, &mut y] {
        for i in 0..10 {
            assert_eq!(
                broadcast.next().await.payload,
                format!("new-{i}").as_bytes()
            );
        }
    }
    let mut shared = Vec::new();
    while shared.len() < 10 {
        tokio::select! {
            event = a.next() => shared.push(event.payload),
            event = b.next() => shared.push(event.payload),
        }
    }
    shared.sort();
    let mut expected: Vec<Vec<u8>> = (0..10).map(|i| format!("new-{i}").into_bytes()).collect();
    expected.sort();
    assert_eq!(shared, expected, "each event to one member of the group");
}

#[tokio::test]
async fn events_consume_survives_a_half_closed_client_and_errors_are_micros() {
    let server = Server::start();
    let mut stream = StreamClient::new(channel(&server.grpc, None, None).await);
    // A client generated from the proto sends its request and half-closes: still delivered.
    let mut generated = stream
        .consume(consume("half", "", true))
        .await
        .unwrap()
        .into_inner();
    publish(&mut stream, "half", "still").await;
    let event = tokio::time::timeout(WAIT, generated.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.payload, b"still");

    let missing = stream
        .publish(pb::PublishRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&missing, "events.Stream.Publish", 400),
        "Missing topic"
    );
    let refused = Consumer::open(&server.grpc, None, consume("", "g", true))
        .await
        .err()
        .expect("a consume without a topic is refused");
    assert_micro_error(&refused, "events.Stream.Consume", 400);
    let too_many = Consumer::open(
        &server.grpc,
        None,
        pb::ConsumeRequest {
            retry_limit: 1_000_000,
            ..consume("half", "g", false)
        },
    )
    .await
    .err()
    .expect("an unbounded retry limit is refused");
    assert_micro_error(&too_many, "events.Stream.Consume", 400);
}

#[tokio::test]
async fn events_store_reads_history_and_refuses_writes() {
    let server = Server::start();
    let mut stream = StreamClient::new(channel(&server.grpc, None, None).await);
    for i in 0..5 {
        publish(&mut stream, "history", &format!("e{i}")).await;
    }
    let mut store = StoreClient::new(channel(&server.grpc, None, None).await);
    let read = |limit, offset| pb::ReadRequest {
        topic: "history".into(),
        limit,
        offset,
    };
    let all = store.read(read(0, 0)).await.unwrap().into_inner().events;
    assert_eq!(
        all.iter().map(|e| e.payload.clone()).collect::<Vec<_>>(),
        (0..5)
            .map(|i| format!("e{i}").into_bytes())
            .collect::<Vec<_>>()
    );
    let page = store.read(read(2, 1)).await.unwrap().into_inner().events;
    assert_eq!(
        page.iter()
            .map(|e| e.payload.as_slice())
            .collect::<Vec<_>>(),
        [&b"e1"[..], &b"e2"[..]]
    );
    let none = store
        .read(pb::ReadRequest {
            topic: "never-published".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(none.is_empty());
    let write = store.write(pb::WriteRequest::default()).await.unwrap_err();
    assert_micro_error(&write, "events.Store.Write", 501);
    let no_topic = store.read(pb::ReadRequest::default()).await.unwrap_err();
    assert_micro_error(&no_topic, "events.Store.Read", 400);
}

#[tokio::test]
async fn events_are_native_messages_in_namespace_micro() {
    let server = Server::start();
    let mut stream = StreamClient::new(channel(&server.grpc, None, None).await);
    publish(&mut stream, "shared", "from-micro").await;
    let native = server.client("micro").await.topic("shared");
    let read = native
        .read(strata_client::stream::Start::Earliest, 10)
        .await
        .unwrap();
    assert_eq!(read.messages[0].payload, b"from-micro");
    let mut consumer = Consumer::open(&server.grpc, None, consume("shared", "g", true))
        .await
        .unwrap();
    native
        .publish(strata_client::stream::Publish::new("from-native"))
        .await
        .unwrap();
    assert_eq!(consumer.next().await.payload, b"from-native");
}

#[tokio::test]
async fn events_are_for_the_super_tenant_only() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    let secret =
        auth::create_account(&server.grpc, &root, "acme", "api", "service", &["service"]).await;
    let tenant = auth::login(&server.grpc, "acme", "api", &secret)
        .await
        .access_token;
    let mut stream = StreamClient::new(channel(&server.grpc, Some(&tenant), None).await);
    let denied = stream
        .publish(pb::PublishRequest {
            topic: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_micro_error(&denied, "events.Stream.Publish", 403);
    let denied = Consumer::open(&server.grpc, Some(&tenant), consume("t", "g", true))
        .await
        .err()
        .expect("a tenant may not consume");
    assert_micro_error(&denied, "events.Stream.Consume", 403);
    let mut admin = StreamClient::new(channel(&server.grpc, Some(&root), None).await);
    publish(&mut admin, "t", "ok").await;
}
