//! Event streams through the SDK against real nodes: order, groups, redelivery, dead letters,
//! replay, retention, dedup, bad input, restarts, and a three-node cluster losing its leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use strata_client::stream::{proto, Delivery, Publish, Start, SubscribeOptions, Subscription};
use strata_client::{Client, Error};

use crate::harness::{Cluster, Server};

const WAIT: Duration = Duration::from_secs(20);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The next delivery, or a panic after `WAIT`.
async fn next(subscription: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("no delivery in time")
        .expect("subscription ended")
        .expect("subscription failed")
}

/// Asserts that nothing is delivered within `quiet`.
async fn assert_quiet(subscription: &mut Subscription, quiet: Duration) {
    if let Ok(item) = tokio::time::timeout(quiet, subscription.next()).await {
        let item = item.map(|r| r.map(|d| d.message.sequence));
        panic!("expected no delivery, got {item:?}");
    }
}

fn payload(delivery: &Delivery) -> String {
    String::from_utf8(delivery.message.payload.clone()).unwrap()
}

async fn publish_n(client: &Client, topic: &str, range: std::ops::Range<u32>) -> Vec<u64> {
    let mut sequences = Vec::new();
    for i in range {
        let published = client
            .topic(topic)
            .publish(Publish::new(format!("m{i}")))
            .await
            .unwrap();
        sequences.push(published.sequence);
    }
    sequences
}

#[tokio::test]
async fn order_batch_publish_replay_from_sequence_and_time() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("orders.created");

    let singles = publish_n(&client, "orders.created", 0..5).await;
    assert_eq!(singles, vec![1, 2, 3, 4, 5]);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let boundary = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let batch = topic
        .publish_batch((5..25).map(|i| Publish::new(format!("m{i}")).metadata("i", i.to_string())))
        .await
        .unwrap();
    let sequences: Vec<u64> = batch.iter().map(|p| p.sequence).collect();
    assert_eq!(sequences, (6..=25).collect::<Vec<_>>());
    assert!(batch
        .windows(2)
        .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
    assert!(
        batch.iter().all(|p| p.revision == batch[0].revision),
        "one entry"
    );

    let all = topic.read(Start::Earliest, 1_000).await.unwrap();
    let payloads: Vec<String> = all
        .messages
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..25).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    assert_eq!((all.first_sequence, all.last_sequence), (1, 25));
    assert_eq!(all.messages[10].metadata["i"], "10");

    let from_seq = topic.read(Start::Sequence(20), 3).await.unwrap();
    let seqs: Vec<u64> = from_seq.messages.iter().map(|m| m.sequence).collect();
    assert_eq!(seqs, vec![20, 21, 22]);

    let from_time = topic.read(Start::TimeMs(boundary), 1_000).await.unwrap();
    assert_eq!(from_time.messages.first().unwrap().sequence, 6);
    assert_eq!(from_time.messages.len(), 20);

    // An ephemeral subscription from a time gets the same, then live messages, in order.
    let mut live = topic
        .subscribe(SubscribeOptions::ephemeral().start(Start::TimeMs(boundary)))
        .await
        .unwrap();
    for expected in 6..=25 {
        assert_eq!(next(&mut live).await.message.sequence, expected);
    }
    publish_n(&client, "orders.created", 25..30).await;
    for expected in 26..=30 {
        let delivery = next(&mut live).await;
        assert_eq!(delivery.message.sequence, expected);
        assert_eq!(payload(&delivery), format!("m{}", expected - 1));
    }
}

#[tokio::test]
async fn two_groups_each_get_every_message_and_members_split_them() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("jobs");
    let options = |group: &str| {
        SubscribeOptions::group(group)
            .earliest()
            .max_in_flight(4)
            .ack_wait(Duration::from_secs(60))
    };
    let mut audit = topic.subscribe(options("audit")).await.unwrap();
    let mut worker_a = topic.subscribe(options("workers")).await.unwrap();
    let mut worker_b = topic.subscribe(options("workers")).await.unwrap();
    publish_n(&client, "jobs", 0..60).await;

    let mut audited = Vec::new();
    while audited.len() < 60 {
        let delivery = next(&mut audit).await;
        audited.push(delivery.message.sequence);
        delivery.ack().await.unwrap();
    }
    assert_eq!(
        audited,
        (1..=60).collect::<Vec<_>>(),
        "a group sees one order"
    );

    // Both workers pull concurrently; each message goes to exactly one of them.
    let mut by_member: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
    let deadline = Instant::now() + WAIT;
    while by_member.len() < 60 {
        assert!(Instant::now() < deadline, "workers got {}", by_member.len());
        tokio::select! {
            Some(Ok(d)) = worker_a.next() => {
                by_member.entry(d.message.sequence).or_default().push("a");
                d.ack().await.unwrap();
            }
            Some(Ok(d)) = worker_b.next() => {
                by_member.entry(d.message.sequence).or_default().push("b");
                d.ack().await.unwrap();
            }
        }
    }
    assert_eq!(
        by_member.keys().copied().collect::<Vec<_>>(),
        (1..=60).collect::<Vec<_>>()
    );
    let twice: Vec<_> = by_member.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(twice.is_empty(), "delivered to two members: {twice:?}");
    let a = by_member.values().filter(|m| m[0] == "a").count();
    assert!(a > 0 && a < 60, "both members got work (a: {a})");
    assert_quiet(&mut worker_a, Duration::from_millis(300)).await;

    let info = topic.info().await.unwrap();
    for group in &info.groups {
        assert_eq!(
            (group.ack_floor, group.pending, group.lag),
            (60, 0, 0),
            "{group:?}"
        );
    }
}

#[tokio::test]
async fn redelivery_after_ack_wait_and_after_nack_then_dead_letter() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("payments");
    publish_n(&client, "payments", 0..2).await;
    let mut consumer = topic
        .subscribe(
            SubscribeOptions::group("charge")
                .earliest()
                .ack_wait(Duration::from_millis(300))
                .max_deliveries(3),
        )
        .await
        .unwrap();

    // Not acked: redelivered after the ack wait, with the count raised.
    let first = next(&mut consumer).await;
    let second = next(&mut consumer).await;
    assert_eq!(
        (first.message.sequence, first.message.delivery_count),
        (1, 1)
    );
    assert_eq!(second.message.sequence, 2);
    second.ack().await.unwrap();
    let started = Instant::now();
    let again = next(&mut consumer).await;
    assert_eq!(
        (again.message.sequence, again.message.delivery_count),
        (1, 2)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );

    // Nacked with a delay: back after the delay, not before.
    again.nack(Duration::from_millis(400)).await.unwrap();
    let nacked_at = Instant::now();
    let third = next(&mut consumer).await;
    assert_eq!(
        (third.message.sequence, third.message.delivery_count),
        (1, 3)
    );
    assert!(nacked_at.elapsed() >= Duration::from_millis(350));

    // The third delivery was the last: nacked again, it goes to payments.dlq, not to us.
    third.nack(Duration::ZERO).await.unwrap();
    assert_quiet(&mut consumer, Duration::from_millis(800)).await;
    let dead = client
        .topic("payments.dlq")
        .read(Start::Earliest, 10)
        .await
        .unwrap();
    assert_eq!(dead.messages.len(), 1, "{dead:?}");
    let letter = &dead.messages[0];
    assert_eq!(letter.payload, b"m0");
    assert_eq!(letter.metadata["strata-dlq-topic"], "payments");
    assert_eq!(letter.metadata["strata-dlq-sequence"], "1");
    assert_eq!(letter.metadata["strata-dlq-group"], "charge");
    assert_eq!(letter.metadata["strata-dlq-deliveries"], "3");

    // Acking something never delivered is refused; acking twice is harmless.
    let latest = topic.publish(Publish::new("later")).await.unwrap();
    let delivery = next(&mut consumer).await;
    assert_eq!(delivery.message.sequence, latest.sequence);
    delivery.ack().await.unwrap();
    delivery.ack().await.unwrap();
    let info = topic.info().await.unwrap();
    let group = &info.groups[0];
    assert_eq!((group.ack_floor, group.pending), (latest.sequence, 0));
}

#[tokio::test]
async fn acking_a_sequence_never_delivered_is_an_error_that_changes_nothing() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("t");
    publish_n(&client, "t", 0..3).await;
    let mut consumer = topic
        .subscribe(SubscribeOptions::group("g").earliest().max_in_flight(1))
        .await
        .unwrap();
    let first = next(&mut consumer).await;
    assert_eq!(first.message.sequence, 1);
    // Sequence 3 exists but was never delivered to the group (max_in_flight 1).
    match consumer.settler().ack(3).await {
        Err(Error::InvalidArgument(message)) => assert!(message.contains("never delivered")),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let info = topic.info().await.unwrap();
    assert_eq!(
        (info.groups[0].next_sequence, info.groups[0].pending),
        (2, 1)
    );
    first.ack().await.unwrap();
    assert_eq!(next(&mut consumer).await.message.sequence, 2);
}

#[tokio::test]
async fn retention_by_count_bytes_and_age() {
    let server = Server::start();
    let client = server.client("default").await;
    let retention = |age: u64, count: u64, bytes: u64| proto::Retention {
        max_age_ms: age,
        max_messages: count,
        max_bytes: bytes,
        dedup_window_ms: None,
    };

    let by_count = client.topic("count");
    by_count.create(retention(0, 3, 0)).await.unwrap();
    publish_n(&client, "count", 0..10).await;
    let info = by_count.info().await.unwrap().topic.unwrap();
    assert_eq!(
        (info.first_sequence, info.last_sequence, info.messages),
        (8, 10, 3)
    );
    let read = by_count.read(Start::Earliest, 100).await.unwrap();
    assert_eq!(
        read.messages.iter().map(|m| m.sequence).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );

    let by_bytes = client.topic("bytes");
    by_bytes.create(retention(0, 0, 200)).await.unwrap();
    for i in 0..10 {
        by_bytes
            .publish(Publish::new(vec![b'x'; 30]).message_id(format!("id-{i:02}")))
            .await
            .unwrap();
    }
    // Each message counts 30 payload + 5 id bytes = 35: five fit in 200.
    let info = by_bytes.info().await.unwrap().topic.unwrap();
    assert_eq!(
        (info.messages, info.bytes, info.first_sequence),
        (5, 175, 6)
    );
    let too_big = by_bytes.publish(Publish::new(vec![b'x'; 300])).await;
    assert!(
        matches!(too_big, Err(Error::InvalidArgument(_))),
        "{too_big:?}"
    );

    let by_age = client.topic("age");
    by_age.create(retention(500, 0, 0)).await.unwrap();
    publish_n(&client, "age", 0..5).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = by_age.info().await.unwrap().topic.unwrap();
        if info.messages == 0 {
            assert_eq!((info.first_sequence, info.last_sequence), (6, 5));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "age retention never ran: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Lowering a limit applies it at once.
    by_count.update(retention(0, 1, 0)).await.unwrap();
    let info = by_count.info().await.unwrap().topic.unwrap();
    assert_eq!((info.first_sequence, info.messages), (10, 1));
}

#[tokio::test]
async fn a_repeated_message_id_returns_the_original_sequence_and_stores_nothing() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("dedup");
    let first = topic
        .publish(Publish::new("a").message_id("order-1"))
        .await
        .unwrap();
    topic.publish(Publish::new("b")).await.unwrap();
    let again = topic
        .publish(Publish::new("a, retried").message_id("order-1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.sequence, first.sequence);
    // In one batch too.
    let batch = topic
        .publish_batch([
            Publish::new("c").message_id("order-2"),
            Publish::new("c again").message_id("order-2"),
        ])
        .await
        .unwrap();
    assert_eq!(batch[1].sequence, batch[0].sequence);
    assert!(batch[1].duplicate);
    let read = topic.read(Start::Earliest, 100).await.unwrap();
    let payloads: Vec<&[u8]> = read.messages.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads, vec![&b"a"[..], b"b", b"c"]);

    // With a short window, the id is forgotten afterwards.
    let short = client.topic("dedup.short");
    short
        .create(proto::Retention {
            dedup_window_ms: Some(200),
            ..Default::default()
        })
        .await
        .unwrap();
    let one = short
        .publish(Publish::new("x").message_id("k"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let two = short
        .publish(Publish::new("x").message_id("k"))
        .await
        .unwrap();
    assert!(!two.duplicate);
    assert_eq!(two.sequence, one.sequence + 1);
}

#[tokio::test]
async fn a_group_resumes_from_its_acked_floor_after_a_restart() {
    let mut server = Server::start();
    let client = server.client("default").await;
    publish_n(&client, "resume", 0..10).await;
    {
        let mut consumer = client
            .topic("resume")
            .subscribe(
                SubscribeOptions::group("g")
                    .earliest()
                    .max_in_flight(5)
                    .ack_wait(Duration::from_millis(500)),
            )
            .await
            .unwrap();
        for _ in 0..4 {
            next(&mut consumer).await.ack().await.unwrap();
        }
        // The fifth is delivered but never acked.
        assert_eq!(next(&mut consumer).await.message.sequence, 5);
    }
    server.kill9();
    server.restart();
    let client = server.client("default").await;
    let info = client.topic("resume").info().await.unwrap();
    assert_eq!(info.groups[0].ack_floor, 4, "{info:?}");
    let mut consumer = client
        .topic("resume")
        .subscribe(
            SubscribeOptions::group("g")
                .ack_wait(Duration::from_millis(200))
                .start(Start::Latest), // ignored: the group exists
        )
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 6 {
        let delivery = next(&mut consumer).await;
        assert!(delivery.message.sequence > 4, "acked message redelivered");
        seen.insert(delivery.message.sequence);
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, (5..=10).collect());
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let server = Server::start_with(&["--max-message-bytes", "1024"]);
    let client = server.client("default").await;
    let invalid = |result: Result<_, Error>| match result {
        Err(Error::InvalidArgument(message)) => message,
        Err(other) => panic!("expected InvalidArgument, got {other:?}"),
        Ok(_) => panic!("expected InvalidArgument, got success"),
    };
    let long = "x".repeat(256);
    for name in [
        "",
        "a..b",
        ".a",
        "orders.*",
        "orders.>",
        "a b",
        long.as_str(),
    ] {
        invalid(
            client
                .topic(name)
                .publish(Publish::new("x"))
                .await
                .map(|_| ()),
        );
    }
    let message = invalid(
        client
            .topic("big")
            .publish(Publish::new(vec![0u8; 1025]))
            .await
            .map(|_| ()),
    );
    assert!(message.contains("--max-message-bytes"), "{message}");
    invalid(
        client
            .topic("id")
            .publish(Publish::new("x").message_id("i".repeat(257)))
            .await
            .map(|_| ()),
    );
    invalid(client.topic("empty").publish_batch([]).await.map(|_| ()));
    invalid(
        client
            .topic("t")
            .read(Start::Sequence(0), 10)
            .await
            .map(|_| ()),
    );
    invalid(
        client
            .topic("t")
            .read(Start::Earliest, 5_000)
            .await
            .map(|_| ()),
    );
    invalid(client.topics("orders.>.x").await.map(|_| ()));
    invalid(client.topics("ord*").await.map(|_| ()));

    // Subscriptions: options are checked before anything is created.
    for options in [
        SubscribeOptions::group("g").ack_wait(Duration::from_millis(10)),
        SubscribeOptions::group("g").max_in_flight(1_000_000),
        SubscribeOptions::group("g").start(Start::Sequence(0)),
        SubscribeOptions::group("g").dead_letter_topic("t"),
        SubscribeOptions::group("bad group"),
        SubscribeOptions::ephemeral().max_deliveries(5_000),
    ] {
        let result = client.topic("t").subscribe(options.clone()).await;
        let first = match result {
            Err(error) => Err(error),
            Ok(mut subscription) => match tokio::time::timeout(WAIT, subscription.next()).await {
                Ok(Some(Err(error))) => Err(error),
                other => panic!(
                    "{options:?}: expected an error, got {:?}",
                    other.map(|o| o.map(|r| r.map(|d| d.message.sequence)))
                ),
            },
        };
        invalid(first);
    }
    let mut manual_ephemeral = client
        .topic("t")
        .subscribe(SubscribeOptions::ephemeral().start(Start::Earliest))
        .await
        .unwrap();
    // No topic was created by any of the refused calls.
    assert!(client.topics("").await.unwrap().is_empty());
    assert_quiet(&mut manual_ephemeral, Duration::from_millis(100)).await;
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let server = Server::start();
    let acme = server.client("acme").await;
    let globex = server.client("globex").await;
    acme.topic("events")
        .publish(Publish::new("acme"))
        .await
        .unwrap();
    globex
        .topic("events")
        .publish(Publish::new("globex"))
        .await
        .unwrap();
    globex
        .topic("events")
        .publish(Publish::new("globex 2"))
        .await
        .unwrap();
    let read = acme
        .topic("events")
        .read(Start::Earliest, 10)
        .await
        .unwrap();
    assert_eq!(read.messages.len(), 1);
    assert_eq!(read.messages[0].payload, b"acme");
    let names: Vec<String> = globex
        .topics("")
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, vec!["events".to_string()]);
    assert_eq!(
        globex
            .topic("events")
            .info()
            .await
            .unwrap()
            .topic
            .unwrap()
            .messages,
        2
    );
    let mut consumer = acme
        .topic("events")
        .subscribe(SubscribeOptions::group("g").earliest())
        .await
        .unwrap();
    assert_eq!(payload(&next(&mut consumer).await), "acme");
    assert_quiet(&mut consumer, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_consumer_on_a_follower_and_leader_killed_mid_publish() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let endpoints = cluster.endpoints().join(",");
    let publisher = Client::builder(&endpoints).connect().await.unwrap();
    let on_follower = cluster.node(follower).client("default").await;

    // Consumer attached to a follower: claims go through the log, deliveries come from there.
    let topic = on_follower.topic("ledger");
    let options = || {
        SubscribeOptions::group("g")
            .earliest()
            .max_in_flight(64)
            .ack_wait(Duration::from_secs(2))
    };
    let mut consumer = topic.subscribe(options()).await.unwrap();

    // Publish in the background; kill the leader midway. Ids make the SDK's retries safe.
    let publishing = tokio::spawn(async move {
        let mut acked = Vec::new();
        let started = Instant::now();
        for i in 0..400u32 {
            if started.elapsed() > Duration::from_secs(60) {
                break;
            }
            match publisher
                .topic("ledger")
                .publish(Publish::new(format!("m{i}")).message_id(format!("m{i}")))
                .await
            {
                Ok(published) => acked.push((published.sequence, format!("m{i}"))),
                Err(error) => eprintln!("publish m{i}: {error}"),
            }
        }
        acked
    });
    let mut consumed: BTreeMap<u64, String> = BTreeMap::new();
    // First deliveries arrive in sequence order within one subscription.
    let mut last_first_delivery = 0;
    while consumed.len() < 100 {
        let delivery = next(&mut consumer).await;
        let seq = delivery.message.sequence;
        if delivery.message.delivery_count == 1 {
            assert!(
                seq > last_first_delivery,
                "{seq} after {last_first_delivery}"
            );
            last_first_delivery = seq;
        }
        consumed.insert(seq, payload(&delivery));
        delivery.ack().await.unwrap();
    }
    cluster.node_mut(leader).kill9();
    let acked = publishing.await.unwrap();
    assert!(
        acked.len() > 300,
        "only {} publishes acknowledged",
        acked.len()
    );
    // One total order: sequences follow the (sequential) publisher's order.
    assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "{acked:?}");

    // The group goes on from its floor. The subscription may end while the cluster changes
    // leader: subscribe again then (on the same follower, or it became the leader).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut last_first_delivery = 0;
    while !acked.iter().all(|(seq, _)| consumed.contains_key(seq)) {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {} acknowledged publishes",
            consumed.len(),
            acked.len()
        );
        match tokio::time::timeout(WAIT, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let seq = delivery.message.sequence;
                if delivery.message.delivery_count == 1 {
                    assert!(
                        seq > last_first_delivery,
                        "{seq} after {last_first_delivery}"
                    );
                    last_first_delivery = seq;
                }
                if let Some(before) = consumed.insert(seq, payload(&delivery)) {
                    // At least once: delivered again (its ack was lost in the failover), with
                    // the same content.
                    assert_eq!(before, payload(&delivery));
                }
                if let Err(error) = delivery.ack().await {
                    eprintln!("ack {seq}: {error}");
                }
            }
            Ok(Some(Err(_)) | None) | Err(_) => {
                last_first_delivery = 0;
                consumer = match topic.subscribe(options()).await {
                    Ok(consumer) => consumer,
                    Err(error) => {
                        eprintln!("subscribe: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
            }
        }
    }
    // Every acknowledged publish was consumed with its content, and nothing was stored twice.
    for (seq, body) in &acked {
        assert_eq!(consumed.get(seq), Some(body), "acknowledged publish {seq}");
    }
    let bodies: BTreeSet<&String> = consumed.values().collect();
    assert_eq!(bodies.len(), consumed.len(), "a publish stored twice");
}

/// A client that sends `subscribe` and half-closes (as Micro's clients and grpcurl may) still
/// gets its messages: the end of the request side only means "no more acks".
#[tokio::test]
async fn a_half_closed_request_stream_still_receives_messages() {
    let server = Server::start();
    let client = server.client("default").await;
    let mut raw = proto::stream_client::StreamClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let mut streams = Vec::new();
    for group in ["", "auto"] {
        let subscribe = proto::ConsumeRequest {
            request: Some(proto::consume_request::Request::Subscribe(
                proto::Subscribe {
                    topic: "half".into(),
                    group: group.into(),
                    auto_ack: true,
                    ..Default::default()
                },
            )),
        };
        let stream = raw
            .consume(tokio_stream::iter(vec![subscribe]))
            .await
            .unwrap()
            .into_inner();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    publish_n(&client, "half", 0..3).await;
    for mut stream in streams {
        for expected in 1..=3u64 {
            let response = tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("a delivery in time")
                .expect("the stream is open")
                .expect("no error");
            match response.response {
                Some(proto::consume_response::Response::Message(message)) => {
                    assert_eq!(message.sequence, expected)
                }
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }
}

/// Once `subscribe` returns, a new group exists and its start is fixed: a message published
/// right after it is the group's, one published before it (at `latest`) is not.
#[tokio::test]
async fn a_new_group_is_positioned_when_subscribe_returns() {
    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("positioned");
    topic.publish(Publish::new("before")).await.unwrap();
    for round in 0..20u64 {
        let mut consumer = topic
            .subscribe(SubscribeOptions::group(format!("g{round}")).start(Start::Latest))
            .await
            .unwrap();
        // The group is there as soon as the call returns (its start is fixed).
        let info = topic.info().await.unwrap();
        let name = format!("g{round}");
        let group = info.groups.iter().find(|g| g.name == name);
        assert_eq!(
            group.map(|g| g.next_sequence),
            Some(round + 2),
            "round {round}: {info:?}"
        );
        let published = topic.publish(Publish::new("after")).await.unwrap();
        let delivery = next(&mut consumer).await;
        assert_eq!(
            delivery.message.sequence, published.sequence,
            "round {round}"
        );
    }
    let info = topic.info().await.unwrap();
    assert_eq!(info.groups.len(), 20);
}

/// An ack the server never confirms (here the server is stopped with SIGSTOP; in a chaos run,
/// a leader that could not commit) fails with a timeout at the client's request deadline
/// instead of waiting for ever, and settling again once the server is back works.
#[tokio::test]
async fn an_unconfirmed_ack_times_out_at_the_request_deadline() {
    let server = Server::start();
    let client = Client::builder(&server.grpc)
        .request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let mut consumer = client
        .topic("stalled")
        .subscribe(SubscribeOptions::group("g").earliest())
        .await
        .unwrap();
    publish_n(&client, "stalled", 0..1).await;
    let delivery = next(&mut consumer).await;

    server.signal("STOP");
    let started = Instant::now();
    let outcome = tokio::time::timeout(WAIT, delivery.ack()).await;
    server.signal("CONT");
    let outcome = outcome.expect("the ack waited past its deadline");
    assert!(
        matches!(&outcome, Err(Error::Timeout { message }) if message.contains("may still apply")),
        "{outcome:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));

    tokio::time::timeout(WAIT, delivery.ack())
        .await
        .expect("the second ack waited past its deadline")
        .expect("the ack, sent again once the server is back");
    let info = client.topic("stalled").info().await.unwrap();
    assert_eq!(info.groups[0].ack_floor, 1, "{info:?}");
}

/// Acks repeated in one entry (a client may ack twice) free a message's credit once, and the
/// group goes on delivering what remains.
#[tokio::test]
async fn repeated_acks_in_one_step_are_harmless() {
    let server = Server::start();
    let client = server.client("acks").await;
    publish_n(&client, "t", 0..5).await;
    let mut subscription = client
        .topic("t")
        .subscribe(SubscribeOptions::group("g").earliest().max_in_flight(1))
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let delivery = next(&mut subscription).await;
        seen.push(delivery.message.sequence);
        delivery.ack_nowait().await.unwrap();
        delivery.ack_nowait().await.unwrap();
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    assert_quiet(&mut subscription, Duration::from_millis(300)).await;
    let info = client.topic("t").info().await.unwrap();
    let group = &info.groups[0];
    assert_eq!(
        (group.pending, group.lag, group.ack_floor),
        (0, 0, 5),
        "{group:?}"
    );
    assert_eq!((group.delivered, group.acked), (5, 5), "{group:?}");
}
