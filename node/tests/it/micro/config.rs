//! `config.Config` conformance (shared/MICRO_API.md §6.3, §11.8): one document per namespace,
//! dotted paths, deep merge, `"null"` for a missing path and 404 for a missing namespace,
//! secrets masked as `"[secret]"`, atomic Sets, tenancy, and the same documents through
//! Strata's own config API.

use serde_json::{json, Value};
use strata_proto::micro::config as pb;
use strata_proto::micro::config::config_client::ConfigClient;

use super::{assert_micro_error, channel, MicroChannel};
use crate::harness::{auth, Server};

async fn set(
    config: &mut ConfigClient<MicroChannel>,
    namespace: &str,
    path: &str,
    data: &str,
    secret: bool,
) -> Result<(), tonic::Status> {
    config
        .set(pb::SetRequest {
            namespace: namespace.into(),
            path: path.into(),
            value: Some(pb::Value {
                data: data.into(),
                format: String::new(),
            }),
            options: Some(pb::Options { secret }),
        })
        .await
        .map(|_| ())
}

async fn get(
    config: &mut ConfigClient<MicroChannel>,
    namespace: &str,
    path: &str,
    secret: bool,
) -> Result<Value, tonic::Status> {
    let value = config
        .get(pb::GetRequest {
            namespace: namespace.into(),
            path: path.into(),
            options: Some(pb::Options { secret }),
        })
        .await?
        .into_inner()
        .value
        .unwrap();
    Ok(serde_json::from_str(&value.data).unwrap())
}

async fn delete(
    config: &mut ConfigClient<MicroChannel>,
    namespace: &str,
    path: &str,
) -> Result<(), tonic::Status> {
    config
        .delete(pb::DeleteRequest {
            namespace: namespace.into(),
            path: path.into(),
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn config_gets_sets_merges_and_deletes_with_micros_semantics() {
    let server = Server::start();
    let mut config = ConfigClient::new(channel(&server.grpc, None, None).await);

    // A namespace without a document: 404 "Not found" on Get, Read and Delete.
    let missing = get(&mut config, "acme", "a", false).await.unwrap_err();
    assert_eq!(
        assert_micro_error(&missing, "config.Config.Get", 404),
        "Not found"
    );
    let missing = config
        .read(pb::ReadRequest {
            namespace: "acme".into(),
            path: String::new(),
        })
        .await
        .unwrap_err();
    assert_micro_error(&missing, "config.Config.Read", 404);
    assert_micro_error(
        &delete(&mut config, "acme", "a").await.unwrap_err(),
        "config.Config.Delete",
        404,
    );

    // Objects deep-merge; other values replace the subtree at the path.
    set(
        &mut config,
        "acme",
        "",
        r#"{"db":{"host":"a","port":5432}}"#,
        false,
    )
    .await
    .unwrap();
    set(&mut config, "acme", "db", r#"{"user":"app"}"#, false)
        .await
        .unwrap();
    set(&mut config, "acme", "features.beta", "true", false)
        .await
        .unwrap();
    assert_eq!(
        get(&mut config, "acme", "", false).await.unwrap(),
        json!({"db": {"host": "a", "port": 5432, "user": "app"}, "features": {"beta": true}})
    );
    set(&mut config, "acme", "db", "\"replaced\"", false)
        .await
        .unwrap();
    assert_eq!(
        get(&mut config, "acme", "db", false).await.unwrap(),
        json!("replaced")
    );
    // A missing path is null, not an error.
    assert_eq!(
        get(&mut config, "acme", "no.such.path", false)
            .await
            .unwrap(),
        Value::Null
    );

    // Bad input: 400, nothing changed.
    let no_value = config
        .set(pb::SetRequest {
            namespace: "acme".into(),
            path: "x".into(),
            value: None,
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&no_value, "config.Config.Set", 400),
        "invalid change"
    );
    let not_json = set(&mut config, "acme", "x", "{nope", false)
        .await
        .unwrap_err();
    assert_micro_error(&not_json, "config.Config.Set", 400);
    assert_eq!(
        get(&mut config, "acme", "x", false).await.unwrap(),
        Value::Null
    );

    // Secrets: sealed, masked unless asked for.
    set(
        &mut config,
        "acme",
        "creds",
        r#"{"password":"hunter2","user":"u"}"#,
        true,
    )
    .await
    .unwrap();
    assert_eq!(
        get(&mut config, "acme", "creds", false).await.unwrap(),
        json!({"password": "[secret]", "user": "[secret]"})
    );
    assert_eq!(
        get(&mut config, "acme", "creds.password", true)
            .await
            .unwrap(),
        json!("hunter2")
    );
    let read = config
        .read(pb::ReadRequest {
            namespace: "acme".into(),
            path: "creds".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .change
        .unwrap();
    assert_eq!(
        (read.namespace.as_str(), read.path.as_str()),
        ("acme", "creds")
    );
    let change_set = read.change_set.unwrap();
    assert_eq!(change_set.format, "json");
    assert_eq!(
        serde_json::from_str::<Value>(&change_set.data).unwrap(),
        json!({"password": "[secret]", "user": "[secret]"}),
        "Read always masks"
    );

    // Delete removes a subtree; a missing path is a no-op.
    delete(&mut config, "acme", "features.beta").await.unwrap();
    delete(&mut config, "acme", "features.gone").await.unwrap();
    assert_eq!(
        get(&mut config, "acme", "features", false).await.unwrap(),
        json!({})
    );

    // The namespace defaults to "micro".
    set(&mut config, "", "a", "1", false).await.unwrap();
    assert_eq!(
        get(&mut config, "micro", "a", false).await.unwrap(),
        json!(1)
    );
}

#[tokio::test]
async fn config_sets_in_one_namespace_never_lose_each_other() {
    let server = Server::start();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let grpc = server.grpc.clone();
        tasks.push(tokio::spawn(async move {
            let mut config = ConfigClient::new(channel(&grpc, None, None).await);
            set(
                &mut config,
                "acme",
                &format!("keys.k{i}"),
                &i.to_string(),
                false,
            )
            .await
            .unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut config = ConfigClient::new(channel(&server.grpc, None, None).await);
    let keys = get(&mut config, "acme", "keys", false).await.unwrap();
    assert_eq!(keys.as_object().unwrap().len(), 24, "{keys}");
}

#[tokio::test]
async fn config_documents_are_native_documents_and_back() {
    let server = Server::start();
    let mut config = ConfigClient::new(channel(&server.grpc, None, None).await);
    // Micro's namespace N is the native document N in namespace N.
    let native = server.client("acme").await.config();
    native
        .set("acme", "from.native", &json!("n"))
        .await
        .unwrap();
    assert_eq!(
        get(&mut config, "acme", "from.native", false)
            .await
            .unwrap(),
        json!("n")
    );
    set(&mut config, "acme", "from.micro", r#"{"a":1}"#, false)
        .await
        .unwrap();
    assert_eq!(
        native.get("acme", "from").await.unwrap(),
        json!({"native": "n", "micro": {"a": 1}})
    );
    set(&mut config, "acme", "token", "\"t0p\"", true)
        .await
        .unwrap();
    assert_eq!(
        native.get_with_secrets("acme", "token").await.unwrap(),
        json!("t0p"),
        "sealed once, readable both ways"
    );
}

#[tokio::test]
async fn config_tenancy_follows_authorize_admin() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    let secret =
        auth::create_account(&server.grpc, &root, "acme", "api", "service", &["service"]).await;
    let service = auth::login(&server.grpc, "acme", "api", &secret)
        .await
        .access_token;
    let user = auth::account_token(&server.grpc, &root, "acme", "alice", &[]).await;

    let mut acme = ConfigClient::new(channel(&server.grpc, Some(&service), None).await);
    set(&mut acme, "acme", "a", "1", false).await.unwrap();
    for namespace in ["other", ""] {
        let denied = set(&mut acme, namespace, "a", "1", false)
            .await
            .unwrap_err();
        assert_micro_error(&denied, "config.Config.Set", 403);
    }
    let mut alice = ConfigClient::new(channel(&server.grpc, Some(&user), None).await);
    let refused = get(&mut alice, "acme", "a", false).await.unwrap_err();
    assert_micro_error(&refused, "config.Config.Get", 401);
    let mut admin = ConfigClient::new(channel(&server.grpc, Some(&root), None).await);
    assert_eq!(get(&mut admin, "acme", "a", false).await.unwrap(), json!(1));
}
