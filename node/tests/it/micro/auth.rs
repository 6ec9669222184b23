//! `auth.Auth`, `auth.Accounts` and `auth.Rules` conformance (shared/MICRO_API.md §7.3): the
//! same accounts, rules and tokens as Strata's own auth API, Micro's defaults and error codes,
//! Authorize/AuthorizeAdmin per call.

use std::collections::HashMap;

use strata_proto::micro::auth as pb;
use strata_proto::micro::auth::accounts_client::AccountsClient;
use strata_proto::micro::auth::auth_client::AuthClient;
use strata_proto::micro::auth::rules_client::RulesClient;
use strata_proto::micro::store as store_pb;
use strata_proto::micro::store::store_client::StoreClient;

use super::{assert_micro_error, channel};
use crate::harness::{auth, Server};

fn options(namespace: &str) -> Option<pb::Options> {
    Some(pb::Options {
        namespace: namespace.into(),
    })
}

#[tokio::test]
async fn micro_auth_issues_inspects_and_refreshes_tokens() {
    let server = Server::start_with(&["--auth", "on"]);
    let (namespace, id, secret) = auth::root_credentials(&[&server.data_dir]);
    assert_eq!(namespace, "micro");
    // Token needs no token; the namespace defaults to "micro".
    let mut anonymous = AuthClient::new(channel(&server.grpc, None, None).await);
    let token = loop {
        match anonymous
            .token(pb::TokenRequest {
                id: id.clone(),
                secret: secret.clone(),
                token_expiry: 600,
                ..Default::default()
            })
            .await
        {
            Ok(answer) => break answer.into_inner().token.unwrap(),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(status) => panic!("token: {status:?}"),
        }
    };
    assert!(token.expiry - token.created >= 590 && token.expiry - token.created <= 600);
    assert!(!token.refresh_token.is_empty());
    // The token works on every API, Micro's and Strata's own.
    let mut store = StoreClient::new(channel(&server.grpc, Some(&token.access_token), None).await);
    store
        .write(store_pb::WriteRequest {
            record: Some(store_pb::Record {
                key: "k".into(),
                value: b"v".to_vec(),
                ..Default::default()
            }),
            options: None,
        })
        .await
        .unwrap();
    // Micro's clients may send the token as the secret of Basic credentials.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{}", token.access_token))
    );
    let mut basic_store = StoreClient::new(channel(&server.grpc, Some(&basic), None).await);
    basic_store
        .read(store_pb::ReadRequest {
            key: "k".into(),
            options: None,
        })
        .await
        .unwrap();
    let account = anonymous
        .inspect(pb::InspectRequest {
            token: token.access_token.clone(),
            options: None,
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(
        (
            account.id.as_str(),
            account.issuer.as_str(),
            account.r#type.as_str()
        ),
        (id.as_str(), "micro", "user")
    );
    assert!(account.scopes.contains(&"admin".to_string()));
    assert!(account.secret.is_empty());
    let bad = anonymous
        .inspect(pb::InspectRequest {
            token: "garbage".into(),
            options: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&bad, "auth.Auth.Inspect", 400),
        "invalid token provided"
    );
    let wrong = anonymous
        .token(pb::TokenRequest {
            id: id.clone(),
            secret: "wrong".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_micro_error(&wrong, "auth.Auth.Token", 400);
    let empty = anonymous
        .token(pb::TokenRequest::default())
        .await
        .unwrap_err();
    assert_micro_error(&empty, "auth.Auth.Token", 400);
    // A refresh token buys a new access token.
    let refreshed = anonymous
        .token(pb::TokenRequest {
            refresh_token: token.refresh_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert!(!refreshed.access_token.is_empty());
}

#[tokio::test]
async fn micro_accounts_and_rules_follow_micros_authorization() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    // Generate: the namespace from options, else the micro-namespace header.
    let mut admin = AuthClient::new(channel(&server.grpc, Some(&root), Some("acme")).await);
    let service = admin
        .generate(pb::GenerateRequest {
            id: "api".into(),
            r#type: "service".into(),
            scopes: vec!["service".into()],
            metadata: HashMap::from([("team".to_string(), "core".to_string())]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(service.issuer, "acme", "namespace from micro-namespace");
    assert!(!service.secret.is_empty(), "the plaintext secret, once");
    let user = admin
        .generate(pb::GenerateRequest {
            id: "alice".into(),
            options: options("acme"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(user.r#type, "user", "the default type");
    let again = admin
        .generate(pb::GenerateRequest {
            id: "alice".into(),
            options: options("acme"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_micro_error(&again, "auth.Auth.Generate", 400);
    let no_id = admin
        .generate(pb::GenerateRequest::default())
        .await
        .unwrap_err();
    assert_micro_error(&no_id, "auth.Auth.Generate", 400);

    // The service account administers its namespace through Micro's API.
    let service_token = auth::login(&server.grpc, "acme", "api", &service.secret)
        .await
        .access_token;
    let mut accounts = AccountsClient::new(channel(&server.grpc, Some(&service_token), None).await);
    let listed = accounts
        .list(pb::ListAccountsRequest {
            options: options("acme"),
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let mut ids: Vec<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["alice", "api"]);
    assert!(listed.iter().all(|a| a.secret.is_empty()));
    let foreign = accounts
        .list(pb::ListAccountsRequest {
            options: options("micro"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&foreign, "auth.Accounts.List", 403);
    let itself = accounts
        .delete(pb::DeleteAccountRequest {
            id: "api".into(),
            options: options("acme"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&itself, "auth.Accounts.Delete", 400);

    // While the namespace has no rules, a plain user reads them (Authorize) and changes its
    // own secret, but lists no accounts (AuthorizeAdmin: 401).
    let alice = auth::login(&server.grpc, "acme", "alice", &user.secret)
        .await
        .access_token;
    let mut alice_rules = RulesClient::new(channel(&server.grpc, Some(&alice), None).await);
    let seen = alice_rules
        .list(pb::ListRequest {
            options: options("acme"),
        })
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert!(seen.is_empty());
    let mut alice_accounts = AccountsClient::new(channel(&server.grpc, Some(&alice), None).await);
    let refused = alice_accounts
        .list(pb::ListAccountsRequest {
            options: options("acme"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&refused, "auth.Accounts.List", 401);
    alice_accounts
        .change_secret(pb::ChangeSecretRequest {
            id: "alice".into(),
            old_secret: user.secret.clone(),
            new_secret: "a-new-secret-of-alice".into(),
            options: options("acme"),
        })
        .await
        .unwrap();
    auth::login(&server.grpc, "acme", "alice", "a-new-secret-of-alice").await;

    let mut rules = RulesClient::new(channel(&server.grpc, Some(&service_token), None).await);
    let rule = pb::Rule {
        id: "readers".into(),
        scope: "reader".into(),
        resource: Some(pb::Resource {
            name: "store".into(),
            r#type: "service".into(),
            endpoint: "Store.Read".into(),
        }),
        access: pb::Access::Granted as i32,
        priority: 5,
    };
    rules
        .create(pb::CreateRequest {
            rule: Some(rule.clone()),
            options: options("acme"),
        })
        .await
        .unwrap();
    let duplicate = rules
        .create(pb::CreateRequest {
            rule: Some(rule.clone()),
            options: options("acme"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&duplicate, "auth.Rules.Create", 400);
    let incomplete = rules
        .create(pb::CreateRequest {
            rule: Some(pb::Rule {
                access: 0,
                ..rule.clone()
            }),
            options: options("acme"),
        })
        .await
        .unwrap_err();
    assert_micro_error(&incomplete, "auth.Rules.Create", 400);
    let listed_rules = rules
        .list(pb::ListRequest {
            options: options("acme"),
        })
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(listed_rules, [rule]);

    // Deleting rules and accounts; a missing rule is success.
    for id in ["readers", "never-was"] {
        rules
            .delete(pb::DeleteRequest {
                id: id.into(),
                options: options("acme"),
            })
            .await
            .unwrap();
    }
    accounts
        .delete(pb::DeleteAccountRequest {
            id: "alice".into(),
            options: options("acme"),
        })
        .await
        .unwrap();
    let left = accounts
        .list(pb::ListAccountsRequest {
            options: options("acme"),
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(left.len(), 1);
}
