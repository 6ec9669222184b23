//! The service registry through the SDK against real nodes: register, merge, versions,
//! deregister, keepalives, TTL expiry seen by watchers on every node, watch resume and initial
//! snapshots, leader failover under heartbeats, namespace isolation, the admin scope, bad input.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use strata_client::registry::{proto, Node, RegistryWatch, Service, WatchOptions};
use strata_client::{Client, Consistency, Error};

use crate::harness::{Cluster, Server};

const WAIT: Duration = Duration::from_secs(20);

fn node(id: &str, address: &str) -> Node {
    Node {
        id: id.into(),
        address: address.into(),
        ..Default::default()
    }
}

fn service(name: &str, version: &str, nodes: Vec<Node>) -> Service {
    Service {
        name: name.into(),
        version: version.into(),
        nodes,
        ..Default::default()
    }
}

fn node_ids(service: &Service) -> Vec<String> {
    service.nodes.iter().map(|n| n.id.clone()).collect()
}

/// (type, service, node id, expired, revision) of each event, in order.
type Seen = (&'static str, String, String, bool, u64);

fn kind(event: &proto::Event) -> &'static str {
    match proto::event::Type::try_from(event.r#type).unwrap() {
        proto::event::Type::Create => "create",
        proto::event::Type::Update => "update",
        proto::event::Type::Delete => "delete",
        proto::event::Type::Unspecified => "unspecified",
    }
}

fn seen(response: &proto::WatchResponse) -> Vec<Seen> {
    response
        .events
        .iter()
        .map(|event| {
            let service = event.service.as_ref().unwrap();
            assert_eq!(service.nodes.len(), 1, "an event names exactly one node");
            (
                kind(event),
                service.name.clone(),
                service.nodes[0].id.clone(),
                event.expired,
                response.revision,
            )
        })
        .collect()
}

/// The next events (skipping progress messages), or a panic after `timeout`.
async fn next_events(watch: &mut RegistryWatch, timeout: Duration) -> Vec<Seen> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let response = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("no registry event in time")
            .expect("the watch ended")
            .expect("the watch failed");
        if !response.events.is_empty() {
            return seen(&response);
        }
    }
}

/// Every event until `until` (inclusive) is seen, or a panic after `timeout`.
async fn events_until(
    watch: &mut RegistryWatch,
    until: impl Fn(&Seen) -> bool,
    timeout: Duration,
) -> Vec<Seen> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let events = next_events(watch, left).await;
        let done = events.iter().any(&until);
        all.extend(events);
        if done {
            return all;
        }
    }
}

async fn watch_all(client: &Client) -> RegistryWatch {
    client
        .registry()
        .watch(WatchOptions {
            progress_interval: Some(Duration::from_millis(200)),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn register_merges_nodes_by_id_across_versions_and_deregisters() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let ttl = Duration::from_secs(60);

    let first = registry
        .register(
            &service("greeter", "1.0.0", vec![node("a", "h:1"), node("b", "h:2")]),
            ttl,
        )
        .await
        .unwrap();
    assert!(first.changed);
    assert_eq!((first.created, first.updated), (2, 0));
    // Another node of the same version merges in; the others stay.
    let merged = registry
        .register(&service("greeter", "1.0.0", vec![node("c", "h:3")]), ttl)
        .await
        .unwrap();
    assert_eq!((merged.created, merged.updated), (1, 0));
    assert!(merged.revision > first.revision);
    registry
        .register(&service("greeter", "2.0.0", vec![node("d", "h:4")]), ttl)
        .await
        .unwrap();
    // An identical registration is a keepalive: nothing written.
    let keepalive = registry
        .register(&service("greeter", "1.0.0", vec![node("a", "h:1")]), ttl)
        .await
        .unwrap();
    assert!(!keepalive.changed);
    assert_eq!(keepalive.revision, 0);
    let (_, metrics) = server.http_get("/metrics");
    assert!(
        metrics.contains("strata_registry_registrations_total{kind=\"keepalive\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("strata_registry_registrations_total{kind=\"written\"} 3"));
    assert!(metrics.contains("strata_registry_leases 4"), "{metrics}");
    // A node whose address changed is updated in place.
    let moved = registry
        .register(&service("greeter", "1.0.0", vec![node("a", "h:9")]), ttl)
        .await
        .unwrap();
    assert_eq!((moved.created, moved.updated), (0, 1));

    for consistency in [Consistency::Linearizable, Consistency::Serializable] {
        let versions = registry.get_service("greeter", consistency).await.unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        assert_eq!(versions[0].version, "1.0.0");
        assert_eq!(node_ids(&versions[0]), ["a", "b", "c"]);
        assert_eq!(versions[0].nodes[0].address, "h:9");
        assert_eq!(versions[0].ttl_seconds, 60);
        assert_eq!(versions[0].namespace, "default");
        assert_eq!(versions[1].version, "2.0.0");
        assert_eq!(node_ids(&versions[1]), ["d"]);
    }
    registry
        .register(&service("other", "", vec![node("x", "h:5")]), ttl)
        .await
        .unwrap();
    let listed: Vec<(String, String)> = registry
        .list_services(Consistency::Linearizable)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.name, s.version))
        .collect();
    assert_eq!(
        listed,
        [
            ("greeter".to_string(), "1.0.0".to_string()),
            ("greeter".into(), "2.0.0".into()),
            ("other".into(), "latest".into()),
        ]
    );

    // Deregistering some nodes leaves the rest; the last node takes its version along.
    assert_eq!(
        registry
            .deregister("greeter", "1.0.0", &["a".into()])
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        registry
            .deregister("greeter", "1.0.0", &["a".into()])
            .await
            .unwrap(),
        0,
        "again: nothing there"
    );
    assert_eq!(
        registry.deregister("greeter", "2.0.0", &[]).await.unwrap(),
        1
    );
    let versions = registry
        .get_service("greeter", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(node_ids(&versions[0]), ["b", "c"]);
    assert_eq!(
        registry.deregister("greeter", "1.0.0", &[]).await.unwrap(),
        2
    );
    assert!(matches!(
        registry
            .get_service("greeter", Consistency::Linearizable)
            .await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn watch_resumes_from_a_revision_and_can_start_from_a_snapshot() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let ttl = Duration::from_secs(60);
    let r1 = registry
        .register(&service("s", "1", vec![node("a", "h:1")]), ttl)
        .await
        .unwrap()
        .revision;
    // A list names the revision it reflects, so a cache can list, then watch from after it.
    let (listed_at, listed) = registry
        .list_services_at(Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!((listed_at, listed.len()), (r1, 1));

    let mut live = registry
        .watch(WatchOptions {
            service: Some("s".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut snapshot = registry
        .watch(WatchOptions {
            service: Some("s".into()),
            initial_snapshot: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut unrelated = registry
        .watch(WatchOptions {
            service: Some("unrelated".into()),
            progress_interval: Some(Duration::from_millis(100)),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, snapshot.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.snapshot && first.snapshot_complete, "{first:?}");
    assert_eq!(first.revision, r1);
    assert_eq!(
        seen(&first),
        [("create", "s".into(), "a".into(), false, r1)]
    );

    let r2 = registry
        .register(&service("s", "1", vec![node("b", "h:2")]), ttl)
        .await
        .unwrap()
        .revision;
    // A keepalive emits nothing: the next event either watcher sees is the update after it.
    registry
        .register(&service("s", "1", vec![node("a", "h:1")]), ttl)
        .await
        .unwrap();
    let r3 = registry
        .register(&service("s", "1", vec![node("a", "h:3")]), ttl)
        .await
        .unwrap()
        .revision;
    let removed = registry.deregister("s", "1", &["b".into()]).await.unwrap();
    assert_eq!(removed, 1);
    let expected_tail = [
        ("create", "s".to_string(), "b".to_string(), false, r2),
        ("update", "s".into(), "a".into(), false, r3),
    ];
    for watch in [&mut live, &mut snapshot] {
        let events = events_until(watch, |e| e.0 == "delete", WAIT).await;
        assert_eq!(events[..2], expected_tail[..], "{events:?}");
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!((events[2].0, events[2].2.as_str()), ("delete", "b"));
    }
    // Resuming from r2 replays r2 onwards, in order, nothing before it.
    let mut resumed = registry
        .watch(WatchOptions {
            service: Some("s".into()),
            start_revision: r2,
            ..Default::default()
        })
        .await
        .unwrap();
    let events = events_until(&mut resumed, |e| e.0 == "delete", WAIT).await;
    assert_eq!(events[..2], expected_tail[..]);
    assert_eq!(events.len(), 3);
    // The watcher of another service saw only progress messages, which advanced.
    let deadline = Instant::now() + WAIT;
    loop {
        let response = unrelated.next().await.unwrap().unwrap();
        assert!(response.events.is_empty(), "{response:?}");
        if response.revision >= r3 {
            break;
        }
        assert!(Instant::now() < deadline, "progress did not advance");
    }
    // Asking for a snapshot and a start revision at once makes no sense.
    assert!(matches!(
        registry
            .watch(WatchOptions {
                start_revision: 1,
                initial_snapshot: true,
                ..Default::default()
            })
            .await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn a_change_of_service_info_is_one_event_for_the_version() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let ttl = Duration::from_secs(60);
    let mut watch = registry
        .watch(WatchOptions {
            service: Some("s".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let three = service(
        "s",
        "1",
        vec![node("a", "h:1"), node("b", "h:2"), node("c", "h:3")],
    );
    registry.register(&three, ttl).await.unwrap();
    let mut owned = service("s", "1", vec![node("a", "h:1")]);
    owned.metadata.insert("owner".into(), "payments".into());
    let changed = registry.register(&owned, ttl).await.unwrap();
    assert!(changed.changed);
    assert_eq!(
        (changed.created, changed.updated),
        (0, 0),
        "no node changed"
    );
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.events.len(), 3);
    let second = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.revision, changed.revision);
    assert_eq!(
        second.events.len(),
        1,
        "one event, not one per node: {second:?}"
    );
    assert_eq!(kind(&second.events[0]), "update");
    let version = second.events[0].service.as_ref().unwrap();
    assert!(version.nodes.is_empty());
    assert_eq!(version.metadata["owner"], "payments");
    let stored = registry
        .get_service("s", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(stored[0].metadata["owner"], "payments");
    assert_eq!(stored[0].nodes.len(), 3);
    // The same info again is a keepalive.
    assert!(!registry.register(&owned, ttl).await.unwrap().changed);
}

#[tokio::test]
async fn ttl_expiry_deletes_nodes_unless_refreshed() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let mut watch = watch_all(&client).await;
    registry
        .register(
            &service("short", "1", vec![node("x", "h:1")]),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let kept = service("kept", "1", vec![node("y", "h:2")]);
    registry
        .register(&kept, Duration::from_secs(2))
        .await
        .unwrap();
    let started = Instant::now();
    // Refresh `kept` well within its TTL for 5 s; `short` must go meanwhile.
    let mut deletes = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        let refreshed = registry
            .register(&kept, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(!refreshed.changed, "a refresh writes nothing");
        if let Ok(Some(Ok(response))) =
            tokio::time::timeout(Duration::from_millis(400), watch.next()).await
        {
            deletes.extend(seen(&response).into_iter().filter(|e| e.0 == "delete"));
        }
    }
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert_eq!(
        (deletes[0].1.as_str(), deletes[0].2.as_str(), deletes[0].3),
        ("short", "x", true)
    );
    assert!(matches!(
        registry
            .get_service("short", Consistency::Linearizable)
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        node_ids(
            &registry
                .get_service("kept", Consistency::Linearizable)
                .await
                .unwrap()[0]
        ),
        ["y"]
    );
    // Without refreshes it goes too, no sooner than its TTL.
    let stopped = Instant::now();
    let events = events_until(&mut watch, |e| e.0 == "delete", WAIT).await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(1_500),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(
        events.last().map(|e| (e.2.as_str(), e.3)),
        Some(("y", true))
    );
}

#[tokio::test]
async fn a_kept_registration_outlives_its_ttl_until_deregistered() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let kept = registry
        .keep_registered(
            service("kept", "1", vec![node("k1", "h:1"), node("k2", "h:2")]),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(kept.first().created, 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let versions = registry
        .get_service("kept", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        node_ids(&versions[0]),
        ["k1", "k2"],
        "refreshed past three TTLs"
    );
    assert_eq!(kept.last_error(), None);
    assert_eq!(kept.deregister().await.unwrap(), 2);
    assert!(matches!(
        registry
            .get_service("kept", Consistency::Linearizable)
            .await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn expiry_reaches_watchers_on_every_node_of_a_cluster() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_for_leader(WAIT);
    let mut clients = Vec::new();
    let mut watches = Vec::new();
    for server in cluster.nodes.values() {
        let client = server.client("default").await;
        watches.push(watch_all(&client).await);
        clients.push(client);
    }
    let registered = clients[1]
        .registry()
        .register(
            &service("ephemeral", "1", vec![node("n1", "h:1")]),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    for (index, watch) in watches.iter_mut().enumerate() {
        let events = events_until(watch, |e| e.0 == "delete", WAIT).await;
        assert_eq!(
            events[0],
            (
                "create",
                "ephemeral".into(),
                "n1".into(),
                false,
                registered.revision
            ),
            "node {index}"
        );
        let delete = events.last().unwrap();
        assert_eq!((delete.2.as_str(), delete.3), ("n1", true), "node {index}");
        assert!(delete.4 > registered.revision);
    }
    for client in &clients {
        assert!(matches!(
            client
                .registry()
                .get_service("ephemeral", Consistency::Serializable)
                .await,
            Err(Error::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn leader_failover_during_heartbeats_expires_no_healthy_node() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(WAIT);
    let survivor = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    let client = Client::builder(cluster.endpoints().join(","))
        .request_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_secs(6);
    let healthy: Vec<Service> = (0..20)
        .map(|i| service("healthy", "1", vec![node(&format!("h{i}"), "h:1")]))
        .collect();
    let abandoned: Vec<Service> = (0..5)
        .map(|i| service("abandoned", "1", vec![node(&format!("a{i}"), "h:1")]))
        .collect();
    let mut last = 0;
    for service in healthy.iter().chain(&abandoned) {
        last = client
            .registry()
            .register(service, ttl)
            .await
            .unwrap()
            .revision;
    }
    // From just after the registrations (the survivor may not have applied them yet), with the
    // default progress interval (10 s): the drain below ends when events stop.
    let mut watch = cluster
        .node(survivor)
        .client("default")
        .await
        .registry()
        .watch(WatchOptions {
            start_revision: last + 1,
            ..Default::default()
        })
        .await
        .unwrap();

    // Every node heartbeats once a second from a task of its own (as services do), the
    // abandoned ones only until the leader dies; the healthy ones for 20 s in all.
    let abandon = Arc::new(AtomicBool::new(false));
    let begun = Instant::now();
    let mut heartbeats = Vec::new();
    for (service, healthy) in healthy
        .iter()
        .map(|s| (s.clone(), true))
        .chain(abandoned.iter().map(|s| (s.clone(), false)))
    {
        let (registry, abandon) = (client.registry(), abandon.clone());
        heartbeats.push(tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, 0u32);
            while begun.elapsed() < Duration::from_secs(20) {
                if !healthy && abandon.load(Ordering::SeqCst) {
                    break;
                }
                let beat = Instant::now();
                match registry.register(&service, ttl).await {
                    Ok(result) => assert!(
                        !result.changed,
                        "a heartbeat {:?} into the run changed {service:?}: {result:?}",
                        begun.elapsed()
                    ),
                    Err(_) => failed += 1,
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1).saturating_sub(beat.elapsed())).await;
            }
            (sent, failed)
        }));
    }
    // Past a whole TTL after the registrations: a leader that judged by registration time
    // rather than by the keepalives it saw itself would expire every node at once.
    tokio::time::sleep(Duration::from_secs(8)).await;
    abandon.store(true, Ordering::SeqCst);
    cluster.node_mut(leader).kill9();
    let new_leader = cluster.wait_for_leader(WAIT);
    assert_ne!(new_leader, leader);
    let (mut sent, mut failed) = (0, 0);
    for heartbeat in heartbeats {
        let (s, f) = heartbeat.await.unwrap();
        sent += s;
        failed += f;
    }
    eprintln!("heartbeats: {sent} sent, {failed} failed around the failover");

    // The new leader expired the abandoned nodes (it does expire), none of the healthy.
    let mut deleted = BTreeSet::new();
    while let Ok(Some(Ok(response))) =
        tokio::time::timeout(Duration::from_millis(500), watch.next()).await
    {
        for event in seen(&response) {
            assert_eq!(event.0, "delete", "{event:?}");
            assert_eq!(event.1, "abandoned", "a healthy node expired: {event:?}");
            deleted.insert(event.2);
        }
    }
    assert_eq!(deleted.len(), 5, "{deleted:?}");
    let versions = client
        .registry()
        .get_service("healthy", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(versions[0].nodes.len(), 20);
}

#[tokio::test]
async fn namespaces_are_isolated_and_only_an_admin_sees_all() {
    let server = Server::start();
    let (a, b) = (server.client("team-a").await, server.client("team-b").await);
    let mut watch_a = watch_all(&a).await;
    let ttl = Duration::from_secs(60);
    a.registry()
        .register(&service("api", "1", vec![node("a1", "a:1")]), ttl)
        .await
        .unwrap();
    b.registry()
        .register(&service("api", "1", vec![node("b1", "b:1")]), ttl)
        .await
        .unwrap();
    b.registry()
        .register(&service("only-b", "1", vec![node("b2", "b:2")]), ttl)
        .await
        .unwrap();
    let in_a = a
        .registry()
        .get_service("api", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(node_ids(&in_a[0]), ["a1"]);
    assert_eq!(in_a[0].namespace, "team-a");
    assert!(matches!(
        a.registry()
            .get_service("only-b", Consistency::Linearizable)
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(
        b.registry()
            .list_services(Consistency::Linearizable)
            .await
            .unwrap()
            .len(),
        2
    );
    assert!(
        b.registry()
            .deregister("api", "1", &["a1".into()])
            .await
            .unwrap()
            == 0
    );
    // team-a's watcher saw its own node and nothing of team-b's.
    let events = next_events(&mut watch_a, WAIT).await;
    assert_eq!(
        events,
        [("create", "api".into(), "a1".into(), false, events[0].4)]
    );
    a.registry()
        .register(&service("api", "1", vec![node("a2", "a:2")]), ttl)
        .await
        .unwrap();
    assert_eq!(next_events(&mut watch_a, WAIT).await[0].2, "a2");

    // Every namespace ("*") needs a super-tenant admin: with auth off (this server) every
    // caller is one; with auth on, only the root account's token and its like.
    let secured = Server::start_with(&["--auth", "on"]);
    let root = crate::harness::auth::root_token(&secured.grpc, &[&secured.data_dir]).await;
    let tenant =
        crate::harness::auth::account_token(&secured.grpc, &root, "team-a", "alice", &["admin"])
            .await;
    let denied = Client::builder(secured.grpc.clone())
        .namespace("*")
        .token(tenant)
        .connect()
        .await
        .unwrap();
    assert!(matches!(
        denied
            .registry()
            .list_services(Consistency::Linearizable)
            .await,
        Err(Error::PermissionDenied(_))
    ));
    let no_token = secured.client("*").await;
    assert!(matches!(
        no_token
            .registry()
            .list_services(Consistency::Linearizable)
            .await,
        Err(Error::Unauthenticated(_))
    ));
    let secured_admin = Client::builder(secured.grpc.clone())
        .namespace("*")
        .token(root)
        .connect()
        .await
        .unwrap();
    secured_admin
        .registry()
        .list_services(Consistency::Linearizable)
        .await
        .unwrap();
    let admin = server.client("*").await;
    let everything: BTreeSet<(String, String)> = admin
        .registry()
        .list_services(Consistency::Linearizable)
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.namespace, s.name))
        .collect();
    assert_eq!(
        everything,
        BTreeSet::from([
            ("team-a".into(), "api".into()),
            ("team-b".into(), "api".into()),
            ("team-b".into(), "only-b".into()),
        ])
    );
    let api = admin
        .registry()
        .get_service("api", Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(api.len(), 2);
    let mut admin_watch = watch_all(&admin).await;
    b.registry()
        .register(&service("api", "1", vec![node("b3", "b:3")]), ttl)
        .await
        .unwrap();
    assert_eq!(next_events(&mut admin_watch, WAIT).await[0].2, "b3");
    // "*" is for registry reads only: never for writes, nor other services.
    assert!(matches!(
        admin
            .registry()
            .register(&service("api", "1", vec![node("z", "z:1")]), ttl)
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        admin.table("default", "default").get("k").await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let server = Server::start_with(&["--registry-max-nodes", "3"]);
    let client = server.client("default").await;
    let registry = client.registry();
    let ttl = Duration::from_secs(60);
    registry
        .register(
            &service("svc", "1", vec![node("n1", "h:1"), node("n2", "h:2")]),
            ttl,
        )
        .await
        .unwrap();
    let long = "x".repeat(65);
    let cases: Vec<(&str, Service, Duration)> = vec![
        ("empty name", service("", "1", vec![node("n", "h:1")]), ttl),
        (
            "long name",
            service(&long, "1", vec![node("n", "h:1")]),
            ttl,
        ),
        (
            "bad version",
            service("svc", &long, vec![node("n", "h:1")]),
            ttl,
        ),
        ("no nodes", service("svc", "1", vec![]), ttl),
        (
            "empty node id",
            service("svc", "1", vec![node("", "h:1")]),
            ttl,
        ),
        (
            "long node id",
            service("svc", "1", vec![node(&"i".repeat(257), "h:1")]),
            ttl,
        ),
        (
            "duplicate ids",
            service("svc", "1", vec![node("n9", "h:1"), node("n9", "h:2")]),
            ttl,
        ),
        ("no port", service("svc", "1", vec![node("n9", "h")]), ttl),
        ("port 0", service("svc", "1", vec![node("n9", "h:0")]), ttl),
        // A TTL of 0 through the SDK is a permanent registration (see
        // a_zero_ttl_registers_nodes_that_never_expire); on the wire, 0 without `permanent`
        // is refused (sdk/go's TestPermanentRegistrations).
        (
            "ttl over a day",
            service("svc", "1", vec![node("n9", "h:1")]),
            Duration::from_secs(86_401),
        ),
    ];
    for (what, bad, ttl) in cases {
        match registry.register(&bad, ttl).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(!message.is_empty(), "{what}");
            }
            other => panic!("{what}: expected INVALID_ARGUMENT, got {other:?}"),
        }
    }
    // Past --registry-max-nodes (3), counting every version of the service.
    match registry
        .register(
            &service("svc", "2", vec![node("n3", "h:3"), node("n4", "h:4")]),
            ttl,
        )
        .await
    {
        Err(Error::Status(status)) => {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted);
            assert!(
                status.message().contains("limit is 3"),
                "{}",
                status.message()
            );
        }
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
    let versions = registry
        .get_service("svc", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(
        versions.len(),
        1,
        "nothing of the refused registrations: {versions:?}"
    );
    assert_eq!(node_ids(&versions[0]), ["n1", "n2"]);
    assert_eq!(
        registry
            .list_services(Consistency::Linearizable)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        registry.deregister("", "1", &[]).await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_catches_up_by_snapshot_has_the_registry_and_config() {
    let mut cluster = Cluster::start(3, &["--snapshot-every-entries", "50"]);
    cluster.wait_for_leader(WAIT);
    let client = Client::builder(cluster.endpoints().join(","))
        .connect()
        .await
        .unwrap();
    let ttl = Duration::from_secs(600);
    let mut last = 0;
    for i in 0..120 {
        let one = service("bulk", "1", vec![node(&format!("b{i}"), "h:1")]);
        last = client
            .registry()
            .register(&one, ttl)
            .await
            .unwrap()
            .revision;
    }
    client
        .config()
        .set("app", "db", &serde_json::json!({"port": 5432}))
        .await
        .unwrap();

    cluster.start_joining(4);
    let addr = cluster.peer_addrs[&4].clone();
    cluster
        .cluster_cli(&["add-learner", "--node-id", "4", "--peer-addr", &addr])
        .unwrap();
    cluster.wait_for_applied(last + 1, Duration::from_secs(30));
    let status = cluster.cluster_cli(&["status"]).unwrap();
    let learner = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == 4)
        .unwrap()
        .clone();
    assert!(
        learner["snapshot_index"].as_u64().unwrap() > 0,
        "node 4 caught up without a snapshot: {learner}"
    );
    let fresh = cluster.node(4).client("default").await;
    let versions = fresh
        .registry()
        .get_service("bulk", Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(versions[0].nodes.len(), 120);
    assert_eq!(
        fresh
            .config()
            .get_with("app", "db.port", false, Consistency::Serializable)
            .await
            .unwrap(),
        serde_json::json!(5432)
    );
    // Its watchers follow changes made after the install, and history came with the snapshot.
    let mut watch = watch_all(&fresh).await;
    client
        .registry()
        .deregister("bulk", "1", &["b7".into()])
        .await
        .unwrap();
    let events = next_events(&mut watch, WAIT).await;
    assert_eq!((events[0].0, events[0].2.as_str()), ("delete", "b7"));
    let mut replay = fresh
        .registry()
        .watch(WatchOptions {
            start_revision: last,
            ..Default::default()
        })
        .await
        .unwrap();
    let events = next_events(&mut replay, WAIT).await;
    assert_eq!(
        events,
        [("create", "bulk".into(), "b119".into(), false, last)]
    );
}

/// A TTL of zero registers the nodes as permanent (Micro's TTL 0): no lease, no expiry; they
/// go only when deregistered. Keeping one registered makes no sense and is refused.
#[tokio::test]
async fn a_zero_ttl_registers_nodes_that_never_expire() {
    let server = Server::start();
    let client = server.client("default").await;
    let registry = client.registry();
    let db = service("db", "1", vec![node("db-1", "10.0.0.9:5432")]);
    registry.register(&db, Duration::ZERO).await.unwrap();
    let found = registry
        .get_service("db", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].ttl_seconds, 0, "a permanent node has no TTL");
    assert!(matches!(
        registry.keep_registered(db.clone(), Duration::ZERO).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(registry.deregister("db", "1", &[]).await.unwrap(), 1);
}
