//! `store.Store` conformance (shared/MICRO_API.md §2.2, §11.6): one node, a three-node
//! cluster through a follower, tenancy with tokens, and the same records through Strata's own
//! key-value API.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::micro::store as pb;
use strata_proto::micro::store::store_client::StoreClient;

use super::{assert_micro_error, channel, never_half_closed, MicroChannel};
use crate::harness::{auth, Server};

pub fn record(key: &str, value: &str, expiry: i64) -> pb::Record {
    pb::Record {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        expiry,
        metadata: HashMap::new(),
    }
}

fn write_options(database: &str, table: &str) -> Option<pb::WriteOptions> {
    Some(pb::WriteOptions {
        database: database.into(),
        table: table.into(),
    })
}

pub async fn write(store: &mut StoreClient<MicroChannel>, db: &str, table: &str, rec: pb::Record) {
    store
        .write(pb::WriteRequest {
            record: Some(rec),
            options: write_options(db, table),
        })
        .await
        .unwrap_or_else(|s| panic!("write: {s:?}"));
}

pub async fn read(
    store: &mut StoreClient<MicroChannel>,
    key: &str,
    options: pb::ReadOptions,
) -> Result<Vec<pb::Record>, tonic::Status> {
    store
        .read(pb::ReadRequest {
            key: key.into(),
            options: Some(options),
        })
        .await
        .map(|r| r.into_inner().records)
}

fn keys(records: &[pb::Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

/// List as Micro's client calls it (never half-closed); the keys of its one response.
pub async fn list(grpc: &str, token: Option<&str>, options: pb::ListOptions) -> Vec<String> {
    let responses: Vec<pb::ListResponse> = never_half_closed(
        channel(grpc, token, None).await,
        "/store.Store/List",
        pb::ListRequest {
            options: Some(options),
        },
    )
    .await
    .unwrap_or_else(|s| panic!("list: {s:?}"));
    assert_eq!(responses.len(), 1, "List answers with exactly one message");
    responses.into_iter().next().unwrap().keys
}

pub fn list_options(db: &str, table: &str) -> pb::ListOptions {
    pb::ListOptions {
        database: db.into(),
        table: table.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn store_reads_writes_lists_and_deletes_with_micros_semantics() {
    let server = Server::start();
    let mut store = StoreClient::new(channel(&server.grpc, None, Some("micro")).await);

    // Upsert, last writer wins; metadata comes back as text fields.
    let mut first = record("user/alice", "1", 0);
    first.metadata.insert(
        "owner".into(),
        pb::Field {
            r#type: "string".into(),
            value: "ops".into(),
        },
    );
    write(&mut store, "acme", "users", first).await;
    write(&mut store, "acme", "users", record("user/alice", "2", 0)).await;
    let options = |prefix: bool, suffix: bool| pb::ReadOptions {
        database: "acme".into(),
        table: "users".into(),
        prefix,
        suffix,
        ..Default::default()
    };
    let got = read(&mut store, "user/alice", options(false, false))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].value.as_slice(), got[0].expiry), (&b"2"[..], 0));
    assert!(got[0].metadata.is_empty(), "a write replaces metadata too");
    let mut tagged = record("user/bob", "b", 0);
    tagged.metadata.insert(
        "team".into(),
        pb::Field {
            r#type: "int".into(),
            value: "7".into(),
        },
    );
    write(&mut store, "acme", "users", tagged).await;
    let bob = read(&mut store, "user/bob", options(false, false))
        .await
        .unwrap();
    assert_eq!(
        bob[0].metadata["team"],
        pb::Field {
            r#type: "string".into(),
            value: "7".into()
        },
        "only the value is kept, as in Micro"
    );

    // Not found is 404 with Micro's JSON, id and detail.
    let missing = read(&mut store, "user/nobody", options(false, false))
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&missing, "store.Store.Read", 404),
        "not found"
    );
    // A write without a record is 400 "no record specified".
    let empty = store
        .write(pb::WriteRequest {
            record: None,
            options: write_options("acme", "users"),
        })
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&empty, "store.Store.Write", 400),
        "no record specified"
    );
    let negative = store
        .write(pb::WriteRequest {
            record: Some(record("k", "v", -1)),
            options: write_options("acme", "users"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&negative, "store.Store.Write", 400);
    let bad_db = store
        .write(pb::WriteRequest {
            record: Some(record("k", "v", 0)),
            options: write_options("a/b", "users"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&bad_db, "store.Store.Write", 400);

    // Prefix and suffix filters come before limit and offset; order is by key, asc or desc.
    for key in [
        "user/carol",
        "user/dave",
        "user/erin",
        "team/ops",
        "team/dev",
    ] {
        write(&mut store, "acme", "users", record(key, key, 0)).await;
    }
    let users = read(&mut store, "user/", options(true, false))
        .await
        .unwrap();
    assert_eq!(
        keys(&users),
        [
            "user/alice",
            "user/bob",
            "user/carol",
            "user/dave",
            "user/erin"
        ]
    );
    let page = read(
        &mut store,
        "user/",
        pb::ReadOptions {
            limit: 2,
            offset: 1,
            order: "desc".into(),
            ..options(true, false)
        },
    )
    .await
    .unwrap();
    assert_eq!(keys(&page), ["user/dave", "user/carol"]);
    let ops = read(&mut store, "ops", options(false, true)).await.unwrap();
    assert_eq!(keys(&ops), ["team/ops"]);
    let both = read(&mut store, "user/", options(true, true))
        .await
        .unwrap();
    assert!(
        both.is_empty(),
        "a filtered read with no match is empty, not 404"
    );

    // List: keys only, one message, the same filters; never half-closed by Micro's client.
    let all = list(&server.grpc, None, list_options("acme", "users")).await;
    assert_eq!(all.len(), 7);
    assert_eq!(
        list(
            &server.grpc,
            None,
            pb::ListOptions {
                prefix: "team/".into(),
                order: "desc".into(),
                ..list_options("acme", "users")
            }
        )
        .await,
        ["team/ops", "team/dev"]
    );
    assert_eq!(
        list(
            &server.grpc,
            None,
            pb::ListOptions {
                prefix: "user/".into(),
                suffix: "e".into(),
                offset: 1,
                limit: 1,
                ..list_options("acme", "users")
            }
        )
        .await,
        ["user/dave"]
    );
    // Generated server-streaming clients (which do half-close) work too.
    let mut stream = store
        .list(pb::ListRequest {
            options: Some(list_options("acme", "users")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().keys.len(), 7);
    assert!(stream.message().await.unwrap().is_none());

    // Delete: absent keys succeed; a deleted key is 404.
    store
        .delete(pb::DeleteRequest {
            key: "user/nobody".into(),
            options: Some(pb::DeleteOptions {
                database: "acme".into(),
                table: "users".into(),
            }),
        })
        .await
        .unwrap();
    store
        .delete(pb::DeleteRequest {
            key: "user/erin".into(),
            options: Some(pb::DeleteOptions {
                database: "acme".into(),
                table: "users".into(),
            }),
        })
        .await
        .unwrap();
    let gone = read(&mut store, "user/erin", options(false, false))
        .await
        .unwrap_err();
    assert_micro_error(&gone, "store.Store.Read", 404);

    // Defaults: database and table "micro".
    store
        .write(pb::WriteRequest {
            record: Some(record("plain", "p", 0)),
            options: None,
        })
        .await
        .unwrap();
    let plain = read(
        &mut store,
        "plain",
        pb::ReadOptions {
            database: "micro".into(),
            table: "micro".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(plain[0].value, b"p");

    // Databases and tables holding records.
    write(&mut store, "acme", "orders", record("o1", "x", 0)).await;
    let databases = store
        .databases(pb::DatabasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .databases;
    assert_eq!(databases, ["acme", "micro"]);
    let tables = store
        .tables(pb::TablesRequest {
            database: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .tables;
    assert_eq!(tables, ["orders", "users"]);

    // A method this node does not have answers 501 in Micro's shape, not a bare status.
    let unknown: Result<Vec<pb::ListResponse>, _> = never_half_closed(
        channel(&server.grpc, None, None).await,
        "/store.Store/Nonexistent",
        pb::ListRequest::default(),
    )
    .await;
    assert_micro_error(&unknown.unwrap_err(), "store.Store.Nonexistent", 501);
}

#[tokio::test]
async fn store_expiry_is_seconds_to_live_and_remaining_seconds_on_read() {
    let server = Server::start();
    let mut store = StoreClient::new(channel(&server.grpc, None, None).await);
    write(&mut store, "acme", "t", record("short", "s", 2)).await;
    write(&mut store, "acme", "t", record("long", "l", 3600)).await;
    let options = pb::ReadOptions {
        database: "acme".into(),
        table: "t".into(),
        ..Default::default()
    };
    let short = read(&mut store, "short", options.clone()).await.unwrap();
    assert!((1..=2).contains(&short[0].expiry), "{}", short[0].expiry);
    let long = read(&mut store, "long", options.clone()).await.unwrap();
    assert!(
        (3599..=3600).contains(&long[0].expiry),
        "{}",
        long[0].expiry
    );
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let expired = read(&mut store, "short", options.clone())
        .await
        .unwrap_err();
    assert_micro_error(&expired, "store.Store.Read", 404);
    assert_eq!(
        list(&server.grpc, None, list_options("acme", "t")).await,
        ["long"],
        "expired keys are not listed"
    );
}

#[tokio::test]
async fn store_records_are_native_records_and_back() {
    let server = Server::start();
    let mut store = StoreClient::new(channel(&server.grpc, None, None).await);
    // Micro's database D, table T is namespace D, database D, table T.
    let native = server.client("acme").await;
    let table = native.table("acme", "users");
    table
        .put_with(strata_client::Put::new("from-native", "n").metadata("k", "v"))
        .await
        .unwrap();
    let got = read(
        &mut store,
        "from-native",
        pb::ReadOptions {
            database: "acme".into(),
            table: "users".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(got[0].value, b"n");
    assert_eq!(got[0].metadata["k"].value, "v");
    write(&mut store, "acme", "users", record("from-micro", "m", 60)).await;
    let record = table.get("from-micro").await.unwrap().unwrap();
    assert_eq!(record.value, b"m");
    assert!(record.expires_at_ms > 0, "the TTL is the native TTL");
    store
        .delete(pb::DeleteRequest {
            key: "from-native".into(),
            options: Some(pb::DeleteOptions {
                database: "acme".into(),
                table: "users".into(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(table.get("from-native").await.unwrap(), None);
}

#[tokio::test]
async fn store_tenancy_follows_authorize_admin() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    let service_secret =
        auth::create_account(&server.grpc, &root, "acme", "api", "service", &["service"]).await;
    let service = auth::login(&server.grpc, "acme", "api", &service_secret)
        .await
        .access_token;
    let user = auth::account_token(&server.grpc, &root, "acme", "alice", &[]).await;

    // A tenant's service reaches its own database...
    let mut acme = StoreClient::new(channel(&server.grpc, Some(&service), Some("acme")).await);
    write(&mut acme, "acme", "api", record("k", "v", 0)).await;
    // ...not another tenant's, nor the default one.
    for db in ["other", ""] {
        let denied = acme
            .write(pb::WriteRequest {
                record: Some(record("k", "v", 0)),
                options: write_options(db, "api"),
            })
            .await
            .unwrap_err();
        assert_micro_error(&denied, "store.Store.Write", 403);
    }
    let denied = acme.databases(pb::DatabasesRequest {}).await.unwrap_err();
    assert_micro_error(&denied, "store.Store.Databases", 403);
    // A tenant's plain user is no admin: 401, as Micro's AuthorizeAdmin answers.
    let mut alice = StoreClient::new(channel(&server.grpc, Some(&user), Some("acme")).await);
    let unauthorized = read(
        &mut alice,
        "k",
        pb::ReadOptions {
            database: "acme".into(),
            table: "api".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_micro_error(&unauthorized, "store.Store.Read", 401);
    // No token, or a bad one: 401 in Micro's shape from the identity layer.
    for token in [None, Some("garbage")] {
        let mut anonymous = StoreClient::new(channel(&server.grpc, token, None).await);
        let refused = anonymous
            .tables(pb::TablesRequest {
                database: "acme".into(),
            })
            .await
            .unwrap_err();
        assert_micro_error(&refused, "store.Store.Tables", 401);
    }
    // The super-tenant's admin reaches every database.
    let mut admin = StoreClient::new(channel(&server.grpc, Some(&root), None).await);
    let got = read(
        &mut admin,
        "k",
        pb::ReadOptions {
            database: "acme".into(),
            table: "api".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(got[0].value, b"v");
    let databases = admin
        .databases(pb::DatabasesRequest {})
        .await
        .unwrap()
        .into_inner()
        .databases;
    assert!(databases.contains(&"acme".to_string()), "{databases:?}");
}
