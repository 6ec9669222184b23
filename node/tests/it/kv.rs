//! The key-value API through the SDK: every call, TTL, CAS races, namespaces, watches.

use std::time::Duration;

use futures::StreamExt;
use strata_client::proto::event::Type as EventType;
use strata_client::{Error, List, Put, Txn};

use crate::harness::Server;

#[tokio::test]
async fn put_get_list_delete_txn() {
    let server = Server::start();
    let client = server.client("default").await;
    let users = client.table("app", "users");

    let first = users
        .put_with(Put::new("alice", "1").metadata("owner", "ops"))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let second = users.put("alice", "2").await.unwrap();
    assert!(second.revision > first.revision);
    assert_eq!(second.version, 2);
    let record = users.get("alice").await.unwrap().unwrap();
    assert_eq!((record.value.as_slice(), record.version), (&b"2"[..], 2));
    assert_eq!(
        (record.create_revision, record.mod_revision),
        (first.revision, second.revision)
    );
    assert!(record.metadata.is_empty(), "a put replaces metadata too");
    assert_eq!(users.get("nobody").await.unwrap(), None);

    for name in ["bob", "carol", "dave", "erin", "alex"] {
        users.put(name, name.to_uppercase()).await.unwrap();
    }
    let keys = |records: Vec<strata_client::proto::Record>| {
        records
            .into_iter()
            .map(|r| String::from_utf8(r.key).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(users.list_all(List::prefix("a")).await.unwrap()),
        ["alex", "alice"]
    );
    assert_eq!(
        keys(users.list_all(List::all().suffix("e")).await.unwrap()),
        ["alice", "dave"]
    );
    assert_eq!(
        keys(
            users
                .list_all(List::all().descending().limit(2))
                .await
                .unwrap()
        ),
        ["erin", "dave", "carol", "bob", "alice", "alex"]
    );
    let page = users.list(List::all().limit(2).keys_only()).await.unwrap();
    assert_eq!(keys(page.records.clone()), ["alex", "alice"]);
    assert!(page.records.iter().all(|r| r.value.is_empty()));
    let next = users
        .list(
            List::all()
                .limit(2)
                .page_token(page.next_page_token.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(keys(next.records), ["bob", "carol"]);
    assert_eq!(
        keys(
            users
                .list_all(List::all().start_after("carol"))
                .await
                .unwrap()
        ),
        ["dave", "erin"]
    );

    assert_eq!(client.databases().await.unwrap(), ["app"]);
    assert_eq!(client.tables("app").await.unwrap(), ["users"]);

    assert_eq!(users.delete("bob").await.unwrap(), 1);
    assert_eq!(
        users.delete("bob").await.unwrap(),
        0,
        "deleting an absent key is not an error"
    );
    assert_eq!(users.delete_prefix("a").await.unwrap(), 2);
    assert_eq!(
        keys(users.list_all(List::all()).await.unwrap()),
        ["carol", "dave", "erin"]
    );

    // Txn: the success branch runs only when every compare holds.
    let carol = users.get("carol").await.unwrap().unwrap();
    let txn = Txn::new()
        .when(Txn::mod_revision_equals("carol", carol.mod_revision))
        .when(Txn::exists("zed", false))
        .then(Txn::put("carol", "C2"))
        .then(Txn::put("zed", "Z"))
        .then(Txn::get("carol"))
        .otherwise(Txn::get("carol"));
    let result = users.txn(txn.clone()).await.unwrap();
    assert!(result.succeeded);
    assert_eq!(result.results.len(), 3);
    // The same txn again fails its compares and runs the failure branch, changing nothing.
    let again = users.txn(txn).await.unwrap();
    assert!(!again.succeeded);
    assert_eq!(users.get("zed").await.unwrap().unwrap().version, 1);
    assert_eq!(users.get("carol").await.unwrap().unwrap().value, b"C2");

    // Delete with a stale expected revision fails and deletes nothing.
    let error = users
        .delete_if("carol", carol.mod_revision)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PreconditionFailed { .. }), "{error}");
    assert!(users.get("carol").await.unwrap().is_some());

    // Serializable reads see the same applied state on a single node.
    let read = users
        .get_with("carol", strata_client::Consistency::Serializable)
        .await
        .unwrap();
    assert_eq!(read.unwrap().value, b"C2");
}

#[tokio::test]
async fn create_only_and_compare_and_swap() {
    let server = Server::start();
    let table = server.client("default").await.table("db", "t");
    let created = table
        .put_with(Put::new("k", "v1").create_only())
        .await
        .unwrap();
    let error = table
        .put_with(Put::new("k", "v2").create_only())
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::AlreadyExists { mod_revision, .. } if mod_revision == created.revision),
        "{error}"
    );
    let error = table
        .put_with(Put::new("k", "v2").expect_mod_revision(created.revision + 100))
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::PreconditionFailed { current_revision, .. } if current_revision == created.revision),
        "{error}"
    );
    assert_eq!(table.get("k").await.unwrap().unwrap().value, b"v1");
    table
        .put_with(Put::new("k", "v2").expect_mod_revision(created.revision))
        .await
        .unwrap();
    table
        .put_with(Put::new("new", "x").expect_mod_revision(0))
        .await
        .unwrap();
    assert_eq!(table.get("k").await.unwrap().unwrap().value, b"v2");
}

#[tokio::test]
async fn concurrent_cas_has_exactly_one_winner() {
    let server = Server::start();
    let client = server.client("default").await;
    let table = client.table("db", "counter");
    let start = table.put("n", "0").await.unwrap();
    let mut revision = start.revision;
    for round in 1..=10 {
        let attempts = (0..8).map(|writer| {
            let table = table.clone();
            tokio::spawn(async move {
                table
                    .put_with(
                        Put::new("n", format!("{round}:{writer}")).expect_mod_revision(revision),
                    )
                    .await
            })
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<_> = results
            .into_iter()
            .filter_map(|r| r.unwrap().ok())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one CAS wins");
        let record = table.get("n").await.unwrap().unwrap();
        assert_eq!(record.mod_revision, winners[0].revision);
        assert_eq!(record.version, round + 1);
        revision = record.mod_revision;
    }
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let server = Server::start();
    let acme = server.client("acme").await.table("db", "t");
    let globex = server.client("globex").await.table("db", "t");
    acme.put("shared", "acme's").await.unwrap();
    globex.put("shared", "globex's").await.unwrap();
    assert_eq!(acme.get("shared").await.unwrap().unwrap().value, b"acme's");
    assert_eq!(
        globex.get("shared").await.unwrap().unwrap().value,
        b"globex's"
    );
    assert_eq!(acme.delete_prefix("").await.unwrap(), 1);
    assert_eq!(acme.get("shared").await.unwrap(), None);
    assert_eq!(
        globex.get("shared").await.unwrap().unwrap().value,
        b"globex's"
    );
    assert!(server
        .client("acme")
        .await
        .databases()
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        server.client("globex").await.databases().await.unwrap(),
        ["db"]
    );
    // The default namespace sees neither.
    assert_eq!(
        server
            .client("default")
            .await
            .table("db", "t")
            .get("shared")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn ttl_expiry_is_seen_by_get_and_watch() {
    let server = Server::start();
    let table = server.client("default").await.table("db", "sessions");
    let mut watch = table.watch("s/", true, 0).await.unwrap();
    let put = table
        .put_with(Put::new("s/1", "token").ttl(Duration::from_millis(700)))
        .await
        .unwrap();
    table.put("s/2", "forever").await.unwrap();
    let record = table
        .get("s/1")
        .await
        .unwrap()
        .expect("alive before its TTL");
    assert!(record.expires_at_ms > 0);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_expiry = false;
    while !saw_expiry {
        let response = tokio::time::timeout_at(deadline, watch.next())
            .await
            .expect("no expiry event within 10 s")
            .unwrap()
            .unwrap();
        for event in response.events {
            let key = event.record.as_ref().unwrap().key.clone();
            if event.r#type == EventType::Delete as i32 {
                assert_eq!(key, b"s/1");
                assert!(event.expired, "the delete says it came from expiry");
                assert!(response.revision > put.revision);
                saw_expiry = true;
            }
        }
    }
    assert_eq!(table.get("s/1").await.unwrap(), None);
    assert_eq!(table.get("s/2").await.unwrap().unwrap().value, b"forever");
}

#[tokio::test]
async fn expired_key_is_invisible_before_the_sweep_removes_it() {
    let server = Server::start();
    let table = server.client("default").await.table("db", "t");
    let soon = strata_raft::node::now_ms() + 300;
    table
        .put_with(Put::new("k", "v").expires_at_ms(soon))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Whether or not the leader's sweep has run yet, reads must not return it.
    assert_eq!(table.get("k").await.unwrap(), None);
    assert!(table.list_all(List::all()).await.unwrap().is_empty());
}

#[tokio::test]
async fn watch_replays_history_and_resumes_from_a_revision() {
    let server = Server::start();
    let table = server.client("default").await.table("db", "t");
    let first = table.put("w/a", "1").await.unwrap();
    table.put("other", "x").await.unwrap();
    table.put("w/b", "2").await.unwrap();
    table.delete("w/a").await.unwrap();

    let mut watch = table.watch("w/", true, first.revision).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let response = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        for event in response.events {
            let record = event.record.unwrap();
            seen.push((
                event.r#type,
                String::from_utf8(record.key).unwrap(),
                response.revision,
            ));
        }
        if seen.len() == 3 {
            table.put("w/c", "live").await.unwrap();
        }
    }
    let kinds: Vec<_> = seen.iter().map(|(t, k, _)| (*t, k.as_str())).collect();
    assert_eq!(
        kinds,
        [
            (EventType::Put as i32, "w/a"),
            (EventType::Put as i32, "w/b"),
            (EventType::Delete as i32, "w/a"),
            (EventType::Put as i32, "w/c"),
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "revisions strictly increase: {seen:?}"
    );

    // Resuming after the third event delivers only what followed it.
    let mut resumed = table.watch("w/", true, seen[2].2 + 1).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.revision, seen[3].2);
    // A single-key watch sees only its key.
    let mut single = table.watch("w/b", false, first.revision).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), single.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.events.len(), 1);
    assert_eq!(response.events[0].record.as_ref().unwrap().key, b"w/b");
}

#[tokio::test]
async fn watch_of_compacted_history_fails_with_the_oldest_revision() {
    // A tiny history window so compaction happens within a short test.
    let server = Server::start_with(&["--history-retain-revisions", "16"]);
    let table = server.client("default").await.table("db", "t");
    for i in 0..100 {
        table.put(format!("k{i}"), "v").await.unwrap();
    }
    let error = match table.watch("k", true, 1).await {
        Err(error) => error,
        Ok(mut stream) => stream.next().await.unwrap().unwrap_err(),
    };
    match error {
        Error::Compacted {
            oldest_revision, ..
        } => {
            assert!(oldest_revision > 1);
            // Watching from the oldest available revision works.
            let mut watch = table.watch("k", true, oldest_revision).await.unwrap();
            let response = tokio::time::timeout(Duration::from_secs(10), watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(response.revision >= oldest_revision);
        }
        other => panic!("expected Compacted, got {other}"),
    }
}

/// A revision larger than one response (here 24 values of 64 KiB in one transaction) comes in
/// fragments of about 1 MiB, all but the last marked; the SDK joins them and delivers the
/// revision whole, and a watch resumed at that revision gets it again whole and moves on.
#[tokio::test]
async fn a_revision_too_large_for_one_response_comes_in_fragments_and_whole_through_the_sdk() {
    use strata_client::proto::{kv_client::KvClient, WatchRequest};

    let server = Server::start();
    let client = server.client("default").await;
    let table = client.table("", "");
    let before = table.put("marker", "m").await.unwrap().revision;

    let mut raw = KvClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .watch(WatchRequest {
            key: b"big/".to_vec(),
            prefix: true,
            start_revision: before + 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut sdk = table.watch("big/", true, before + 1).await.unwrap();

    let mut txn = Txn::new();
    for i in 0..24 {
        txn = txn.then(Txn::put(format!("big/{i:02}"), vec![b'v'; 64 * 1024]));
    }
    let revision = table.txn(txn).await.unwrap().revision;

    let mut fragments = Vec::new();
    loop {
        let response = tokio::time::timeout(Duration::from_secs(20), raw.next())
            .await
            .expect("a response within 20 s")
            .unwrap()
            .unwrap();
        if response.events.is_empty() {
            continue; // a progress notice
        }
        assert_eq!(response.revision, revision);
        let size = prost::Message::encoded_len(&response);
        assert!(size < 1_200_000, "a fragment of {size} bytes");
        let last = !response.fragment;
        fragments.push(response);
        if last {
            break;
        }
    }
    assert!(fragments.len() >= 2, "{} responses", fragments.len());
    let events: usize = fragments.iter().map(|r| r.events.len()).sum();
    assert_eq!(events, 24);

    let whole = next_with_events(&mut sdk).await;
    assert_eq!(
        (whole.revision, whole.events.len(), whole.fragment),
        (revision, 24, false)
    );

    // Resumed at the big revision: it again, whole, then what comes after.
    let mut resumed = table.watch("big/", true, revision).await.unwrap();
    let again = next_with_events(&mut resumed).await;
    assert_eq!((again.revision, again.events.len()), (revision, 24));
    let after = table.put("big/after", "x").await.unwrap().revision;
    let next = next_with_events(&mut resumed).await;
    assert_eq!((next.revision, next.events.len()), (after, 1));
}

async fn next_with_events(
    watch: &mut strata_client::WatchStream,
) -> strata_client::proto::WatchResponse {
    loop {
        let response = tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("a response within 20 s")
            .unwrap()
            .unwrap();
        if !response.events.is_empty() {
            return response;
        }
    }
}
