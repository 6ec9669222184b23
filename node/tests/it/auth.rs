//! Identity and access control against real nodes with `--auth on`: every RPC of every service
//! refuses callers without a valid token and tenants that name another's namespace; tokens are
//! checked (and revoked, and ruled) alike on every node of a cluster.

use std::str::FromStr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use strata_client::{Client, Consistency, Error};
use strata_proto::auth::v1 as pb;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;
use tonic::Code;

use crate::harness::auth::{
    account_token, client as auth_client, create_account, login, root_token, short_token,
};
use crate::harness::{Cluster, Server};

/// Every method of every Strata service, as `/package.Service/Method`.
fn every_method() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(strata_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut paths = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert!(
        paths.len() > 40,
        "descriptor set has every service: {paths:?}"
    );
    paths
}

const PUBLIC: &[&str] = &[
    "/strata.auth.v1.Auth/Token",
    "/strata.auth.v1.Auth/Inspect",
    "/strata.auth.v1.Auth/PublicKey",
    "/auth.Auth/Token",
    "/auth.Auth/Inspect",
];

/// A named set of headers and the code a call with them must end with.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Code);

/// Calls `path` with an empty message and the given headers; the status it ends with.
async fn raw_call(grpc: &str, path: &str, headers: &[(&str, &str)]) -> Code {
    let mut client = crate::harness::raw_grpc(grpc).await;
    let mut request = tonic::Request::new(());
    for (name, value) in headers {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_str(name).unwrap(),
            MetadataValue::try_from(*value).unwrap(),
        );
    }
    let call = client.unary::<(), (), _>(
        request,
        PathAndQuery::from_str(path).unwrap(),
        tonic_prost::ProstCodec::default(),
    );
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => Code::DeadlineExceeded,
    }
}

/// The token with its payload's issuer changed, under the original signature.
fn with_issuer(token: &str, issuer: &str) -> String {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: serde_json::Value =
        serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    claims["iss"] = issuer.into();
    format!(
        "{}.{}.{}",
        parts[0],
        engine.encode(serde_json::to_vec(&claims).unwrap()),
        parts[2]
    )
}

async fn sdk(grpc: &str, token: &str, namespace: Option<&str>) -> Client {
    let mut builder = Client::builder(grpc)
        .token(token)
        .request_timeout(Duration::from_secs(10));
    if let Some(namespace) = namespace {
        builder = builder.namespace(namespace);
    }
    builder.connect().await.unwrap()
}

#[tokio::test]
async fn every_rpc_refuses_missing_bad_and_foreign_credentials() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let a = account_token(&server.grpc, &root, "team-a", "alice", &["admin"]).await;
    let b = account_token(&server.grpc, &root, "team-b", "bob", &["admin"]).await;
    let forged = with_issuer(&b, "team-a");
    let bearer = |t: &str| format!("Bearer {t}");
    let (bearer_b, bearer_forged) = (bearer(&b), bearer(&forged));
    let methods = every_method();
    for path in &methods {
        if PUBLIC.contains(&path.as_str()) || path.starts_with("/grpc.") {
            continue;
        }
        let cases: [Case; 5] = [
            (
                "no token",
                vec![("x-strata-namespace", "team-a")],
                Code::Unauthenticated,
            ),
            (
                "garbage",
                vec![("authorization", "Bearer not.a.jwt")],
                Code::Unauthenticated,
            ),
            (
                "forged issuer",
                vec![("authorization", bearer_forged.as_str())],
                Code::Unauthenticated,
            ),
            (
                "other tenant's namespace",
                vec![
                    ("authorization", bearer_b.as_str()),
                    ("x-strata-namespace", "team-a"),
                ],
                Code::PermissionDenied,
            ),
            (
                "every namespace",
                vec![
                    ("authorization", bearer_b.as_str()),
                    ("x-strata-namespace", "*"),
                ],
                Code::PermissionDenied,
            ),
        ];
        for (name, headers, expected) in cases {
            assert_eq!(
                raw_call(&server.grpc, path, &headers).await,
                expected,
                "{path}: {name}"
            );
        }
    }
    // Membership changes are for super-tenant admins, whatever a tenant admin's scopes.
    for path in [
        "/strata.cluster.v1.Cluster/AddLearner",
        "/strata.cluster.v1.Cluster/Promote",
        "/strata.cluster.v1.Cluster/Remove",
        "/strata.namespace.v1.Namespaces/SetLimits",
    ] {
        assert_eq!(
            raw_call(&server.grpc, path, &[("authorization", &bearer(&a))]).await,
            Code::PermissionDenied,
            "{path}"
        );
    }

    // What team-a writes, team-b cannot see, list, watch or change from its own namespace.
    let (ca, cb) = (
        sdk(&server.grpc, &a, None).await,
        sdk(&server.grpc, &b, None).await,
    );
    let mut watch_b = cb.table("db", "t").watch("sec", true, 0).await.unwrap();
    ca.table("db", "t").put("secret", "a-only").await.unwrap();
    ca.topic("orders")
        .publish(strata_client::stream::Publish::new("a"))
        .await
        .unwrap();
    ca.config()
        .set("app", "", &serde_json::json!({"k": 1}))
        .await
        .unwrap();
    assert_eq!(cb.table("db", "t").get("secret").await.unwrap(), None);
    assert!(cb.databases().await.unwrap().is_empty());
    assert!(cb.topics("").await.unwrap().is_empty());
    assert!(matches!(
        cb.config().get("app", "").await,
        Err(Error::NotFound(_))
    ));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch_b.next())
            .await
            .is_err(),
        "team-b's watch saw team-a's write"
    );
    // A super-tenant admin may name team-a and sees its data.
    let admin = sdk(&server.grpc, &root, Some("team-a")).await;
    let record = admin.table("db", "t").get("secret").await.unwrap().unwrap();
    assert_eq!(record.value, b"a-only");
    // Tenants cannot manage each other's accounts, nor use another's account list.
    let listed = auth_client(&server.grpc, Some(&b), None)
        .await
        .list_accounts(pb::ListAccountsRequest {})
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(
        listed.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["bob"]
    );
    assert!(listed.iter().all(|a| a.secret.is_empty()));
    let denied = auth_client(&server.grpc, Some(&b), None)
        .await
        .delete_account(pb::DeleteAccountRequest { id: "alice".into() })
        .await;
    // In team-b there is no alice: the refusal names only its own namespace.
    assert_eq!(denied.unwrap_err().code(), Code::NotFound);
    assert!(cb.table("db", "t").get("secret").await.unwrap().is_none());
}

#[tokio::test]
async fn accounts_without_admin_scope_are_bounded_by_rules() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let admin = account_token(&server.grpc, &root, "acme", "ops", &["admin"]).await;
    let reader = account_token(&server.grpc, &root, "acme", "reader", &["read"]).await;
    // Without rules of its own, any acme account may call.
    let client = sdk(&server.grpc, &reader, None).await;
    client.table("d", "t").put("k", "v").await.unwrap();
    // Readers may read; nobody else may do anything but what rules grant.
    let rule = |id: &str, scope: &str, endpoint: &str, access: pb::Access, priority: i32| {
        pb::CreateRuleRequest {
            rule: Some(pb::Rule {
                id: id.into(),
                scope: scope.into(),
                resource: Some(pb::Resource {
                    r#type: "service".into(),
                    name: "kv".into(),
                    endpoint: endpoint.into(),
                }),
                access: access as i32,
                priority,
            }),
        }
    };
    // A non-admin cannot create rules.
    assert_eq!(
        auth_client(&server.grpc, Some(&reader), None)
            .await
            .create_rule(rule("r", "*", "*", pb::Access::Granted, 0))
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let mut rules = auth_client(&server.grpc, Some(&admin), None).await;
    rules
        .create_rule(rule("read", "read", "Kv.Get", pb::Access::Granted, 10))
        .await
        .unwrap();
    rules
        .create_rule(rule("admins", "admin", "*", pb::Access::Granted, 5))
        .await
        .unwrap();
    assert_eq!(
        rules
            .create_rule(rule("read", "*", "*", pb::Access::Granted, 0))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );
    let record = client.table("d", "t").get("k").await.unwrap().unwrap();
    assert_eq!(record.value, b"v");
    assert!(matches!(
        client.table("d", "t").put("k", "w").await,
        Err(Error::PermissionDenied(_))
    ));
    let ops = sdk(&server.grpc, &admin, None).await;
    ops.table("d", "t").put("k", "w").await.unwrap();
    // A deny of higher priority wins over the admin grant.
    rules
        .create_rule(rule("freeze", "*", "Kv.Put", pb::Access::Denied, 100))
        .await
        .unwrap();
    assert!(matches!(
        ops.table("d", "t").put("k", "x").await,
        Err(Error::PermissionDenied(_))
    ));
    rules
        .delete_rule(pb::DeleteRuleRequest {
            id: "freeze".into(),
        })
        .await
        .unwrap();
    ops.table("d", "t").put("k", "x").await.unwrap();
    let listed = rules
        .list_rules(pb::ListRulesRequest {})
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(
        listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["admins", "read"]
    );
    // Rules of acme do not touch the super-tenant's admin.
    sdk(&server.grpc, &root, Some("acme"))
        .await
        .table("d", "t")
        .put("k", "root")
        .await
        .unwrap();
}

/// Polls `check` on every node until it holds for all of them (within 15 s).
async fn on_every_node<F, Fut>(endpoints: &[String], what: &str, check: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    for endpoint in endpoints {
        while !check(endpoint.clone()).await {
            assert!(
                Instant::now() < deadline,
                "{what}: not on {endpoint} in 15 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn put_code(endpoint: &str, token: &str) -> Code {
    let client = sdk(endpoint, token, None).await;
    match client.table("d", "t").put("k", "v").await {
        Ok(_) => Code::Ok,
        Err(Error::Unauthenticated(_)) => Code::Unauthenticated,
        Err(Error::PermissionDenied(_)) => Code::PermissionDenied,
        // A node that has not applied the bootstrap yet: retry.
        Err(Error::Unavailable { .. }) => Code::Unavailable,
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn tokens_are_checked_alike_on_every_node_of_a_cluster() {
    let cluster = Cluster::start(3, &["--auth", "on"]);
    let endpoints = cluster.endpoints();
    let dirs: Vec<std::path::PathBuf> = (1..=3).map(|id| cluster.data_dir(id)).collect();
    let dirs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
    let (first, second, third) = (&endpoints[0], &endpoints[1], &endpoints[2]);
    let root = root_token(first, &dirs).await;
    let secret = create_account(first, &root, "acme", "svc", "service", &["service"]).await;
    // Issued on one node, accepted on every node.
    let token = login(second, "acme", "svc", &secret).await;
    on_every_node(&endpoints, "a fresh token works", |e| {
        let token = token.access_token.clone();
        async move { put_code(&e, &token).await == Code::Ok }
    })
    .await;

    // Tampered, wrong-key, malformed and expired tokens: refused everywhere.
    let wrong_key = {
        let key = strata_auth::KeyMaterial::generate().unwrap();
        let account = strata_auth::Account {
            id: "svc".into(),
            name: "svc".into(),
            kind: strata_auth::AccountKind::Service,
            scopes: vec!["service".into()],
            metadata: Default::default(),
            issuer: "acme".into(),
            secret_hash: String::new(),
            generation: 0,
            created_ms: 0,
        };
        strata_auth::Signer::new(&key)
            .issue(&account, strata_auth::token::now_s(), 600)
            .unwrap()
            .0
    };
    let short = short_token(first, "acme", "svc", &secret, 1).await;
    for endpoint in &endpoints {
        for (name, bad) in [
            ("tampered", with_issuer(&token.access_token, "micro")),
            ("wrong key", wrong_key.clone()),
            ("malformed", "eyJhbGciOiJSUzI1NiJ9.e30.AAAA".to_string()),
        ] {
            assert_eq!(
                put_code(endpoint, &bad).await,
                Code::Unauthenticated,
                "{name} on {endpoint}"
            );
        }
    }
    // Expiry plus the 5 s clock leeway.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for endpoint in &endpoints {
        assert_eq!(
            put_code(endpoint, &short).await,
            Code::Unauthenticated,
            "expired on {endpoint}"
        );
    }

    // Revoked on the third node: refused on all (once applied there).
    auth_client(third, Some(&token.access_token), None)
        .await
        .revoke(pb::RevokeRequest {
            token: token.access_token.clone(),
        })
        .await
        .unwrap();
    on_every_node(&endpoints, "a revoked token is refused", |e| {
        let token = token.access_token.clone();
        async move { put_code(&e, &token).await == Code::Unauthenticated }
    })
    .await;
    // The refresh token still works, from any node; revoked, it does not.
    let refreshed = auth_client(second, None, None)
        .await
        .token(pb::TokenRequest {
            refresh_token: token.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(put_code(third, &refreshed.access_token).await, Code::Ok);

    // A rule made on one node applies on all.
    auth_client(second, Some(&root), Some("acme"))
        .await
        .create_rule(pb::CreateRuleRequest {
            rule: Some(pb::Rule {
                id: "no-writes".into(),
                scope: "*".into(),
                resource: Some(pb::Resource {
                    r#type: "service".into(),
                    name: "kv".into(),
                    endpoint: "Kv.Put".into(),
                }),
                access: pb::Access::Denied as i32,
                priority: 1,
            }),
        })
        .await
        .unwrap();
    on_every_node(&endpoints, "a new deny rule", |e| {
        let token = refreshed.access_token.clone();
        async move { put_code(&e, &token).await == Code::PermissionDenied }
    })
    .await;

    // A changed secret ends earlier tokens and refresh tokens everywhere.
    let changed = auth_client(first, Some(&root), Some("acme"))
        .await
        .change_secret(pb::ChangeSecretRequest {
            id: "svc".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_ne!(changed.secret, secret);
    on_every_node(&endpoints, "tokens of an old secret", |e| {
        let token = refreshed.access_token.clone();
        async move { put_code(&e, &token).await == Code::Unauthenticated }
    })
    .await;
    let stale_refresh = auth_client(third, None, None)
        .await
        .token(pb::TokenRequest {
            refresh_token: token.refresh_token.clone(),
            ..Default::default()
        })
        .await;
    assert_eq!(stale_refresh.unwrap_err().code(), Code::Unauthenticated);
    let wrong_secret = auth_client(third, None, None)
        .await
        .token(pb::TokenRequest {
            id: "svc".into(),
            secret: secret.clone(),
            namespace: "acme".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(wrong_secret.unwrap_err().code(), Code::Unauthenticated);

    // A deleted account's tokens stop everywhere.
    let fresh = login(third, "acme", "svc", &changed.secret).await;
    auth_client(first, Some(&root), Some("acme"))
        .await
        .delete_account(pb::DeleteAccountRequest { id: "svc".into() })
        .await
        .unwrap();
    on_every_node(&endpoints, "a deleted account's token", |e| {
        let token = fresh.access_token.clone();
        async move { put_code(&e, &token).await == Code::Unauthenticated }
    })
    .await;
}

#[tokio::test]
async fn local_mode_without_auth_acts_as_admin_and_basic_credentials_work_with_it_on() {
    // Off (the default for one node): no token needed, any namespace, "*" for registry reads.
    let open = Server::start();
    let client = open.client("anything").await;
    client.table("d", "t").put("k", "v").await.unwrap();
    open.client("*")
        .await
        .registry()
        .list_services(Consistency::Linearizable)
        .await
        .unwrap();
    assert!(!open.data_dir.join("root.credentials").exists());
    let no_tokens = auth_client(&open.grpc, None, None)
        .await
        .token(pb::TokenRequest {
            id: "root".into(),
            secret: "whatever-it-is".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(no_tokens.code(), Code::FailedPrecondition);
    assert!(no_tokens.message().contains("auth is off"), "{no_tokens:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&open.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "the data directory is its owner's only"
    );

    // On: Basic id:secret (namespace/id) is accepted like a token, a wrong secret is not.
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let secret = create_account(&server.grpc, &root, "acme", "app", "user", &[]).await;
    use base64::Engine;
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("acme/app:{s}"))
        )
    };
    let path = "/strata.kv.v1.Kv/Get";
    // Past the gate, an empty Get is refused for its empty key: INVALID_ARGUMENT.
    assert_eq!(
        raw_call(&server.grpc, path, &[("authorization", &basic(&secret))]).await,
        Code::InvalidArgument
    );
    assert_eq!(
        raw_call(
            &server.grpc,
            path,
            &[("authorization", &basic("wrong-secret-123"))]
        )
        .await,
        Code::Unauthenticated
    );
    // Inspect tells who a token is; a bad token is refused.
    let token = login(&server.grpc, "acme", "app", &secret)
        .await
        .access_token;
    let inspected = auth_client(&server.grpc, None, None)
        .await
        .inspect(pb::InspectRequest { token })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(
        (inspected.id.as_str(), inspected.issuer.as_str()),
        ("app", "acme")
    );
    assert_eq!(
        auth_client(&server.grpc, None, None)
            .await
            .inspect(pb::InspectRequest { token: "x".into() })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let key = auth_client(&server.grpc, None, None)
        .await
        .public_key(pb::PublicKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(key.pem.starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[tokio::test]
async fn the_cli_logs_in_and_manages_accounts_rules_and_tokens() {
    let server = Server::start_with(&["--auth", "on"]);
    let (namespace, id, secret) = crate::harness::auth::root_credentials(&[&server.data_dir]);
    let token_file = server.data_dir.with_file_name("token.json");
    // Before login: refused, and the message says what to do.
    let (ok, _, stderr) = server.cli_in("kv", &["get", "k"], None);
    assert!(!ok);
    assert!(stderr.contains("strata login"), "{stderr}");
    let (ok, stdout, stderr) = server.cli_in(
        "login",
        &["--namespace", &namespace, "--id", &id, "--secret-file", "-"],
        Some(&secret),
    );
    assert!(ok, "login: {stderr}");
    assert!(stdout.contains("logged in as root"), "{stdout}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(!std::fs::read_to_string(&token_file)
        .unwrap()
        .contains(&secret));

    let (ok, stdout, stderr) = server.cli_in(
        "account",
        &[
            "create",
            "app",
            "--namespace",
            "acme",
            "--scope",
            "admin",
            "--json",
        ],
        None,
    );
    assert!(ok, "account create: {stderr}");
    let created: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let app_secret = created["secret"].as_str().unwrap().to_string();
    let (ok, stdout, _) = server.cli_in("account", &["list", "--namespace", "acme"], None);
    assert!(ok);
    assert!(
        stdout.contains("acme/app") && !stdout.contains(&app_secret),
        "{stdout}"
    );
    let (ok, _, stderr) = server.cli_in(
        "rule",
        &[
            "create",
            "frozen",
            "--namespace",
            "acme",
            "--resource",
            "service:kv:Kv.Put",
            "--access",
            "deny",
            "--priority",
            "5",
        ],
        None,
    );
    assert!(ok, "rule create: {stderr}");
    let (ok, stdout, _) = server.cli_in("rule", &["list", "--namespace", "acme"], None);
    assert!(
        ok && stdout.contains("frozen\tdeny\tservice:kv:Kv.Put"),
        "{stdout}"
    );
    // Membership status works with the saved login (the cluster CLI uses it too).
    let (ok, _, stderr) = server.cli_in("cluster", &["status"], None);
    assert!(ok, "cluster status: {stderr}");

    // As the new account: the rule holds; inspect names it; revoke ends it.
    let (ok, _, stderr) = server.cli_in(
        "login",
        &["--namespace", "acme", "--id", "app", "--secret-file", "-"],
        Some(&app_secret),
    );
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = server.cli_in("kv", &["put", "k", "v"], None);
    assert!(
        !ok && (stderr.contains("PermissionDenied") || stderr.contains("permission denied")),
        "{stderr}"
    );
    let (ok, stdout, _) = server.cli_in("token", &["inspect"], None);
    assert!(ok && stdout.contains("acme/app"), "{stdout}");
    let (ok, token, _) = server.cli_in("token", &["issue"], None);
    assert!(ok);
    let (ok, _, stderr) = server.cli_in("token", &["revoke", token.trim()], None);
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = server.cli_in("kv", &["get", "k"], None);
    assert!(!ok && stderr.contains("revoked"), "{stderr}");
    let (ok, pem, _) = server.cli_in("token", &["key"], None);
    assert!(ok && pem.starts_with("-----BEGIN PUBLIC KEY-----"));
}

/// The first error a watch ends with, within `bound`.
async fn watch_end(watch: &mut strata_client::WatchStream, bound: Duration) -> Option<Error> {
    tokio::time::timeout(bound, async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                Some(Err(error)) => return Some(error),
                None => return None,
            }
        }
    })
    .await
    .expect("the watch stayed open")
}

#[tokio::test]
async fn long_lived_calls_end_when_their_token_expires_or_is_revoked() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let secret = create_account(&server.grpc, &root, "acme", "w", "user", &[]).await;
    let short = short_token(&server.grpc, "acme", "w", &secret, 1).await;
    let client = sdk(&server.grpc, &short, None).await;
    let started = Instant::now();
    let mut watch = client.table("d", "t").watch("k", true, 0).await.unwrap();
    let end = watch_end(&mut watch, Duration::from_secs(20)).await;
    assert!(matches!(end, Some(Error::Unauthenticated(_))), "{end:?}");
    // Not before the token's expiry plus the leeway every node allows (5 s).
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );

    // Revoked: the stream ends within a recheck or two.
    let long = login(&server.grpc, "acme", "w", &secret).await.access_token;
    let client = sdk(&server.grpc, &long, None).await;
    let mut watch = client.table("d", "t").watch("k", true, 0).await.unwrap();
    client.table("d", "t").put("k", "v").await.unwrap();
    assert!(watch.next().await.unwrap().is_ok());
    auth_client(&server.grpc, Some(&root), Some("acme"))
        .await
        .revoke(pb::RevokeRequest {
            token: long.clone(),
        })
        .await
        .unwrap();
    let revoked_at = Instant::now();
    let end = watch_end(&mut watch, Duration::from_secs(10)).await;
    match end {
        Some(Error::Unauthenticated(message)) => assert!(message.contains("revoked"), "{message}"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(4));

    // Opened with Basic id and secret: the stream ends when its account's secret changes.
    use base64::Engine;
    use strata_proto::kv::v1 as kv;
    let basic = MetadataValue::try_from(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("acme/w:{secret}"))
    ))
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut raw =
        kv::kv_client::KvClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
            r.metadata_mut().insert("authorization", basic.clone());
            Ok(r)
        });
    let mut stream = raw
        .watch(kv::WatchRequest {
            database: "d".into(),
            table: "t".into(),
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    auth_client(&server.grpc, Some(&root), Some("acme"))
        .await
        .change_secret(pb::ChangeSecretRequest {
            id: "w".into(),
            old_secret: secret.clone(),
            new_secret: "a-brand-new-secret-42".into(),
        })
        .await
        .unwrap();
    let changed_at = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the Basic stream stayed open after its secret changed");
    assert_eq!(end.map(|s| s.code()), Some(Code::Unauthenticated));
    assert!(changed_at.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn the_sdk_logs_in_and_keeps_its_token_fresh() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = root_token(&server.grpc, &[&server.data_dir]).await;
    let secret = create_account(&server.grpc, &root, "acme", "app", "service", &["service"]).await;
    let client = Client::builder(&server.grpc)
        .credentials("acme", "app", &secret)
        .token_lifetime(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    // Ten seconds is past the first token's expiry and the 5 s leeway: it was renewed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut writes = 0;
    while Instant::now() < deadline {
        client
            .table("d", "t")
            .put("k", writes.to_string())
            .await
            .unwrap_or_else(|e| panic!("write {writes}: {e}"));
        writes += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wrong = Client::builder(&server.grpc)
        .credentials("acme", "app", "not-the-secret-at-all")
        .connect()
        .await;
    assert!(matches!(wrong, Err(Error::Unauthenticated(_))));
}
