//! Work a client triggers is bounded per entry: a prefix of any size is deleted in steps while
//! other clients go on.

use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_client::{Error, List, Txn};

use crate::harness::Server;

const KEYS: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_prefix_delete_goes_in_steps_and_stalls_no_one() {
    let server = Server::start();
    let client = server.client("default").await;
    let big = client.table("db", "big");
    let mut writers = Vec::new();
    for writer in 0..32 {
        let big = big.clone();
        writers.push(tokio::spawn(async move {
            for i in (writer..KEYS).step_by(32) {
                big.put(format!("doomed/{i:06}"), vec![b'x'; 100])
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    big.put("kept", "1").await.unwrap();

    // Atomic, so bounded: a transaction may not take the whole prefix.
    let error = big
        .txn(Txn::new().then(Txn::delete_prefix("doomed/")))
        .await
        .expect_err("a transaction deleted more than 10,000 keys");
    assert!(
        matches!(&error, Error::PreconditionFailed { message, .. } if message.contains("at most 10000")),
        "{error:?}"
    );
    assert!(
        big.get("doomed/000000").await.unwrap().is_some(),
        "the failed txn deleted"
    );

    // A bystander writes and reads throughout the delete.
    let before = big.put("marker", "1").await.unwrap().revision;
    let other = client.table("db", "other");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bystander = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut revisions = Vec::new();
            let mut slowest = Duration::ZERO;
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..5_000u32 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                let started = Instant::now();
                let put = other.put(format!("b{i}"), "v").await.unwrap();
                other.get(format!("b{i}")).await.unwrap().unwrap();
                slowest = slowest.max(started.elapsed());
                revisions.push(put.revision);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (revisions, slowest)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let deleted = big.delete_prefix("doomed/").await.unwrap();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (revisions, slowest) = bystander.await.unwrap();
    assert_eq!(deleted, KEYS as u64);
    println!("deleted {deleted} keys in {took:?}; the bystander's slowest put+get: {slowest:?}");
    // The history shows the steps: at least 20 revisions of at most 1,000 deletes each, and
    // the bystander's writes landed between them. None of them waited long.
    let mut watch = big.watch("doomed/", true, before + 1).await.unwrap();
    let mut steps = std::collections::BTreeMap::<u64, usize>::new();
    while steps.values().sum::<usize>() < KEYS {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch fell silent")
            .unwrap()
            .unwrap();
        if !response.events.is_empty() {
            *steps.entry(response.revision).or_default() += response.events.len();
        }
    }
    assert!(steps.len() >= 20, "{} revisions", steps.len());
    assert!(steps.values().all(|n| *n <= 1_000), "{steps:?}");
    let (first, last) = (*steps.keys().next().unwrap(), *steps.keys().last().unwrap());
    assert!(
        revisions.iter().any(|r| *r > first && *r < last),
        "no other write ran between the steps ({first}..{last})"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "a bystander waited {slowest:?}"
    );

    // Nothing is left under the prefix, and the rest of the table is untouched.
    let left = big.list(List::prefix("doomed/").limit(10)).await.unwrap();
    assert!(left.records.is_empty(), "{} keys left", left.records.len());
    assert!(big.get("kept").await.unwrap().is_some());
}

/// A consumer that stops reading holds at most its credit, and only for a while: once what
/// it was sent has sat unread for 30 s it is cut with `slow_reader`, and its messages go to
/// the group's other members.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_that_stops_reading_is_cut_with_a_clear_status() {
    use strata_client::stream::proto::{
        consume_request, consume_response, stream_client::StreamClient, ConsumeRequest, Subscribe,
    };
    use strata_client::stream::Publish;

    let server = Server::start();
    let client = server.client("default").await;
    let topic = client.topic("slow");
    topic.publish(Publish::new("first")).await.unwrap();
    let subscribe = ConsumeRequest {
        request: Some(consume_request::Request::Subscribe(Subscribe {
            topic: "slow".into(),
            group: "g".into(),
            max_in_flight: 200,
            heartbeat_ms: 1_000,
            ..Default::default()
        })),
    };
    let (_requests, inbound) = tokio::sync::mpsc::channel::<ConsumeRequest>(1);
    let inbound = futures::stream::iter([subscribe])
        .chain(tokio_stream::wrappers::ReceiverStream::new(inbound));
    let mut stream = StreamClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .consume(inbound)
        .await
        .unwrap()
        .into_inner();
    // More than the HTTP/2 windows and buffers hold: the rest waits in the session's queue.
    for _ in 0..150 {
        topic
            .publish(Publish::new(vec![b'm'; 128 * 1024]))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(36)).await;
    let mut read = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(response))) => {
                if let Some(consume_response::Response::Message(_)) = response.response {
                    read += 1;
                }
            }
            Ok(Some(Err(status))) => break status,
            other => panic!("after {read} messages: {other:?}"),
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(
        status.metadata().get("x-strata-error").unwrap(),
        "slow_reader"
    );
    assert!(read < 151, "every message arrived: nothing was cut");
    // The node serves on, and the group delivers to a member that reads.
    topic.publish(Publish::new("after")).await.unwrap();
}

/// A watch of a quiet key hears progress while the rest of the table is busy (the key-value
/// watch once had a pump of its own whose progress timer every unrelated event reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_watch_hears_progress_while_others_write() {
    use strata_client::proto::{kv_client::KvClient, WatchRequest};

    let server = Server::start();
    let table = server.client("default").await.table("", "");
    let mut watch = KvClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .watch(WatchRequest {
            key: b"quiet".to_vec(),
            progress_interval_ms: 300,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let writer = tokio::spawn(async move {
        for i in 0..60 {
            table.put(format!("busy/{i}"), "v").await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let started = Instant::now();
    let mut notices = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        let response = tokio::time::timeout(Duration::from_secs(2), watch.next())
            .await
            .expect("no progress for 2 s while others write")
            .unwrap()
            .unwrap();
        assert!(response.events.is_empty(), "an event of another key");
        notices.push(response.revision);
    }
    writer.await.unwrap();
    assert!(
        notices.len() >= 3,
        "{} progress notices in 2 s",
        notices.len()
    );
    assert!(
        notices.windows(2).all(|w| w[0] <= w[1]) && notices.last() > notices.first(),
        "progress does not move with the busy table: {notices:?}"
    );
}

/// A key-value watch on a node that falls behind and catches up by installing a snapshot
/// misses nothing: the install sends every watcher back to history (the watch once skipped
/// the revisions the snapshot carried).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watch_on_a_node_that_installs_a_snapshot_misses_nothing() {
    use crate::harness::Cluster;

    let cluster = Cluster::start(3, &["--snapshot-every-entries", "100"]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let lagging = (1..=3).find(|id| *id != leader).unwrap();
    let writer_node = (1..=3).find(|id| *id != lagging).unwrap();
    // A raw stream, not the SDK's watch: that one would reopen a silent stream from its last
    // revision and hide a server that skipped revisions.
    let mut watch = strata_client::proto::kv_client::KvClient::connect(format!(
        "http://{}",
        cluster.node(lagging).grpc
    ))
    .await
    .unwrap()
    .watch(strata_client::proto::WatchRequest {
        database: "db".into(),
        table: "t".into(),
        key: b"w/".to_vec(),
        prefix: true,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner();
    cluster.node(lagging).signal("STOP");
    // Far more entries than the leader keeps behind its snapshot (1,000): the paused node can
    // only come back by installing a snapshot.
    let table = cluster
        .node(writer_node)
        .client("default")
        .await
        .table("db", "t");
    const KEYS: usize = 1_500;
    for i in 0..KEYS {
        table.put(format!("w/{i:05}"), "v").await.unwrap();
    }
    cluster.node(lagging).signal("CONT");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < KEYS {
        assert!(
            Instant::now() < deadline,
            "{} of {KEYS} events after 30 s",
            seen.len()
        );
        let response = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("the watch fell silent")
            .unwrap()
            .unwrap();
        for event in response.events {
            seen.push(String::from_utf8(event.record.unwrap().key).unwrap());
        }
    }
    let expected: Vec<String> = (0..KEYS).map(|i| format!("w/{i:05}")).collect();
    assert_eq!(seen, expected, "events missing, repeated or out of order");
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let node = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == lagging)
        .cloned()
        .unwrap();
    assert!(
        node["snapshot_index"].as_u64().unwrap() > 0,
        "node {lagging} caught up without a snapshot: {node}"
    );
}

/// A registry listing reads a bounded number of nodes per answer: the native `ListServices`
/// answers in pages of whole services (which the SDK joins), and Micro's `List`, which has no
/// pages, refuses a registry over one page with RESOURCE_EXHAUSTED instead of reading it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn registry_listings_are_bounded_in_nodes() {
    use strata_client::registry::{proto, Node, Service};
    use strata_proto::micro::registry as micro;
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let service = |name: &str, nodes: usize| Service {
        name: name.into(),
        version: "1".into(),
        nodes: (0..nodes)
            .map(|i| Node {
                id: format!("{name}-{i}"),
                address: format!("10.0.{}.{}:80", i / 250, i % 250),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    // 10,001 nodes: a service more after an answer's 10,000.
    for (name, nodes) in [("alpha", 6_000), ("beta", 4_000), ("gamma", 1)] {
        registry
            .register(&service(name, nodes), Duration::from_secs(600))
            .await
            .unwrap();
    }
    let listed = registry
        .list_services(strata_client::Consistency::Linearizable)
        .await
        .unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alpha", "beta", "gamma"]);
    assert_eq!(listed.iter().map(|s| s.nodes.len()).sum::<usize>(), 10_001);

    // Pages of whole services, by hand: 2,000 nodes a page.
    let mut raw =
        proto::registry_client::RegistryClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
    let mut pages = Vec::new();
    let mut token = Vec::new();
    loop {
        let page = raw
            .list_services(proto::ListServicesRequest {
                page_token: token,
                page_nodes: 2_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        pages.push(
            page.services
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        );
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 10, "pages never end");
    }
    assert_eq!(pages, [vec!["alpha"], vec!["beta"], vec!["gamma"]]);

    let channel = crate::micro::channel(&server.grpc, None, None).await;
    let refused = match micro::registry_client::RegistryClient::new(channel)
        .list_services(micro::ListRequest {
            options: Some(micro::Options {
                ttl: 0,
                domain: "default".into(),
            }),
        })
        .await
    {
        Ok(listed) => panic!("listed {} services", listed.into_inner().services.len()),
        Err(status) => status,
    };
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("10000"), "{refused:?}");
    // Under the bound it lists.
    registry.deregister("gamma", "1", &[]).await.unwrap();
    let channel = crate::micro::channel(&server.grpc, None, None).await;
    let all = micro::registry_client::RegistryClient::new(channel)
        .list_services(micro::ListRequest {
            options: Some(micro::Options {
                ttl: 0,
                domain: "default".into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(all.len(), 2);
}

/// A hundred watchers that stop reading while 1 MiB values are written: each would queue 64
/// responses (64 MiB) without a byte bound. Queued bytes stay within the node's 256 MiB
/// (`strata_session_queued_bytes`), the server's resident memory stays bounded, and a
/// bystander's reads and writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watchers_that_stop_reading_hold_bounded_memory() {
    use strata_client::proto::{kv_client::KvClient, WatchRequest};
    const WATCHERS: usize = 100;
    const VALUES: usize = 64;
    let server = Server::start();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut stalled = Vec::new();
    for _ in 0..WATCHERS {
        let stream = KvClient::new(channel.clone())
            .watch(WatchRequest {
                database: "db".into(),
                table: "big".into(),
                key: b"v/".to_vec(),
                prefix: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        stalled.push(stream); // never read
    }
    let client = server.client("default").await;
    let big = client.table("db", "big");
    let value = vec![b'm'; 1_000_000];
    for i in 0..VALUES {
        big.put(format!("v/{i:03}"), value.clone()).await.unwrap();
    }
    // Let the pumps fill what they may.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, metrics) = server.http_get("/metrics");
    let queued: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("strata_session_queued_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("strata_session_queued_bytes in /metrics");
    assert!(queued <= 256 << 20, "{queued} bytes queued");
    assert!(
        queued >= 100 << 20,
        "the watchers did not fill their queues: {queued}"
    );
    let rss = server.rss_bytes();
    eprintln!("rss {} MiB with {} MiB queued", rss >> 20, queued >> 20);
    // Unbounded, the queues alone would be 100 x 64 x 1 MB = 6.4 GB.
    assert!(rss < 1_200 << 20, "resident memory {} MiB", rss >> 20);
    // A bystander goes on.
    let other = client.table("db", "other");
    let started = Instant::now();
    other.put("k", "v").await.unwrap();
    assert!(other.get("k").await.unwrap().is_some());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a bystander waited {:?}",
        started.elapsed()
    );
    drop(stalled);
}

/// On a three-node cluster, a prefix delete of 5,000 keys among a bystander's writes: no
/// election (the term stands), no node's memory grows past a bound, every other write stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_large_prefix_delete_on_a_cluster_causes_no_election() {
    use crate::harness::Cluster;
    const DOOMED: usize = 5_000;
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    let terms = |cluster: &Cluster| -> Vec<u64> {
        let status = cluster.cluster_cli(&["status"]).unwrap();
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["term"].as_u64().expect("every member answered"))
            .collect()
    };
    let client = cluster.node(leader).client("default").await;
    let big = client.table("db", "big");
    let mut writers = Vec::new();
    for writer in 0..16 {
        let big = big.clone();
        writers.push(tokio::spawn(async move {
            for i in (writer..DOOMED).step_by(16) {
                big.put(format!("doomed/{i:05}"), vec![b'x'; 100])
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let before = terms(&cluster);
    let other = client.table("db", "other");
    let bystander = tokio::spawn(async move {
        let mut written = Vec::new();
        for i in 0..200u32 {
            other.put(format!("b{i}"), "v").await.unwrap();
            written.push(format!("b{i}"));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        written
    });
    assert_eq!(big.delete_prefix("doomed/").await.unwrap(), DOOMED as u64);
    let written = bystander.await.unwrap();
    let after = terms(&cluster);
    assert_eq!(before, after, "an election happened during the delete");
    assert_eq!(cluster.wait_for_leader(Duration::from_secs(5)), leader);
    for id in 1..=3 {
        let rss = cluster.node(id).rss_bytes();
        assert!(rss < 1 << 30, "node {id} holds {} MiB", rss >> 20);
    }
    let other = client.table("db", "other");
    for key in written {
        assert!(
            other.get(key.clone()).await.unwrap().is_some(),
            "{key} lost"
        );
    }
}
