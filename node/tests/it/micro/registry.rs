//! `registry.Registry` conformance (shared/MICRO_API.md §3.2, §11.5): register, get, list,
//! deregister, domains and `*`, identical re-registration as a keepalive, per-node watch
//! results with expiry, tenancy, and the same services through Strata's own registry.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::micro::registry as pb;
use strata_proto::micro::registry::registry_client::RegistryClient;

use super::{assert_micro_error, channel, open_stream, MicroChannel};
use crate::harness::{auth, Server};

pub fn service(name: &str, nodes: &[(&str, &str)], domain: &str, ttl: i64) -> pb::Service {
    pb::Service {
        name: name.into(),
        version: "latest".into(),
        metadata: HashMap::from([("kind".to_string(), "api".to_string())]),
        endpoints: vec![pb::Endpoint {
            name: "Greeter.Hello".into(),
            request: Some(pb::Value {
                name: "Request".into(),
                r#type: "Request".into(),
                values: vec![pb::Value {
                    name: "name".into(),
                    r#type: "string".into(),
                    values: vec![],
                }],
            }),
            response: None,
            metadata: HashMap::new(),
        }],
        nodes: nodes
            .iter()
            .map(|(id, address)| pb::Node {
                id: id.to_string(),
                address: address.to_string(),
                port: 0,
                metadata: HashMap::from([("protocol".to_string(), "grpc".to_string())]),
            })
            .collect(),
        options: Some(pb::Options {
            ttl,
            domain: domain.into(),
        }),
    }
}

fn options(domain: &str) -> Option<pb::Options> {
    Some(pb::Options {
        ttl: 0,
        domain: domain.into(),
    })
}

pub async fn get(
    registry: &mut RegistryClient<MicroChannel>,
    name: &str,
    domain: &str,
) -> Result<Vec<pb::Service>, tonic::Status> {
    registry
        .get_service(pb::GetRequest {
            service: name.into(),
            options: options(domain),
        })
        .await
        .map(|r| r.into_inner().services)
}

fn node_ids(service: &pb::Service) -> Vec<&str> {
    let mut ids: Vec<&str> = service.nodes.iter().map(|n| n.id.as_str()).collect();
    ids.sort();
    ids
}

/// The next watch result as (action, service, node ids), within `wait`.
async fn next(
    watch: &mut tonic::Streaming<pb::Result>,
    wait: Duration,
) -> (String, String, Vec<String>) {
    let result = tokio::time::timeout(wait, watch.message())
        .await
        .expect("no watch result in time")
        .expect("watch failed")
        .expect("watch ended");
    let service = result.service.unwrap();
    assert_eq!(service.options, Some(pb::Options::default()));
    (
        result.action,
        service.name,
        service.nodes.into_iter().map(|n| n.id).collect(),
    )
}

#[tokio::test]
async fn registry_registers_gets_lists_and_deregisters_with_micros_semantics() {
    let server = Server::start();
    let mut registry = RegistryClient::new(channel(&server.grpc, None, None).await);
    registry
        .register(service(
            "greeter",
            &[("greeter-1", "10.0.0.1:8080")],
            "",
            90,
        ))
        .await
        .unwrap();
    registry
        .register(service(
            "greeter",
            &[("greeter-2", "10.0.0.2:8080")],
            "",
            90,
        ))
        .await
        .unwrap();
    registry
        .register(service(
            "billing",
            &[("billing-1", "10.0.1.1:8080")],
            "acme",
            90,
        ))
        .await
        .unwrap();

    // The domain defaults to "micro"; nodes of a version merge; metadata.domain everywhere.
    let got = get(&mut registry, "greeter", "").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(node_ids(&got[0]), ["greeter-1", "greeter-2"]);
    assert_eq!(got[0].metadata["domain"], "micro");
    assert_eq!(got[0].metadata["kind"], "api");
    assert!(got[0]
        .nodes
        .iter()
        .all(|n| n.metadata["domain"] == "micro" && n.metadata["protocol"] == "grpc"));
    assert_eq!(got[0].endpoints[0].name, "Greeter.Hello");
    assert_eq!(
        got[0].endpoints[0].request.as_ref().unwrap().values[0].name,
        "name"
    );
    // Domains are apart; "*" searches them all.
    let missing = get(&mut registry, "billing", "micro").await.unwrap_err();
    assert_eq!(
        assert_micro_error(&missing, "registry.Registry.GetService", 404),
        "service not found"
    );
    let everywhere = get(&mut registry, "billing", "*").await.unwrap();
    assert_eq!(everywhere[0].metadata["domain"], "acme");
    let listed = |services: Vec<pb::Service>| {
        services
            .into_iter()
            .map(|s| (s.metadata["domain"].clone(), s.name))
            .collect::<Vec<_>>()
    };
    let all = registry
        .list_services(pb::ListRequest {
            options: options("*"),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert_eq!(
        listed(all),
        [
            ("acme".to_string(), "billing".to_string()),
            ("micro".to_string(), "greeter".to_string())
        ]
    );
    let none = registry
        .list_services(pb::ListRequest {
            options: options("empty"),
        })
        .await
        .unwrap()
        .into_inner()
        .services;
    assert!(none.is_empty(), "an empty domain lists nothing, no error");

    // Deregister removes the nodes named; the last one takes the service with it.
    registry
        .deregister(service("greeter", &[("greeter-1", "")], "", 0))
        .await
        .unwrap();
    let got = get(&mut registry, "greeter", "").await.unwrap();
    assert_eq!(node_ids(&got[0]), ["greeter-2"]);
    registry
        .deregister(service("greeter", &[("greeter-2", "")], "", 0))
        .await
        .unwrap();
    assert_micro_error(
        &get(&mut registry, "greeter", "").await.unwrap_err(),
        "registry.Registry.GetService",
        404,
    );

    // Bad input: 400, nothing changed.
    let no_nodes = registry
        .deregister(service("billing", &[], "acme", 0))
        .await
        .unwrap_err();
    assert_micro_error(&no_nodes, "registry.Registry.Deregister", 400);
    for bad in [
        service("billing", &[("b", "10.0.1.1:8080")], "acme", -1),
        service("billing", &[], "acme", 90),
        service("", &[("b", "10.0.1.1:8080")], "acme", 90),
        service("billing", &[("b", "no port")], "acme", 90),
    ] {
        let refused = registry.register(bad).await.unwrap_err();
        assert_micro_error(&refused, "registry.Registry.Register", 400);
    }
    assert_eq!(
        node_ids(&get(&mut registry, "billing", "acme").await.unwrap()[0]),
        ["billing-1"]
    );
}

#[tokio::test]
async fn registry_watch_sends_per_node_results_and_expiry_deletes() {
    let server = Server::start();
    let mut registry = RegistryClient::new(channel(&server.grpc, None, None).await);
    // Registered before the watch: not sent (future changes only).
    registry
        .register(service("old", &[("old-1", "10.0.0.9:1")], "", 0))
        .await
        .unwrap();
    let mut watch = open_stream::<_, pb::Result>(
        channel(&server.grpc, None, None).await,
        "/registry.Registry/Watch",
        pb::WatchRequest {
            service: String::new(),
            options: options(""),
        },
    )
    .await
    .unwrap();
    let mut greeter = open_stream::<_, pb::Result>(
        channel(&server.grpc, None, None).await,
        "/registry.Registry/Watch",
        pb::WatchRequest {
            service: "greeter".into(),
            options: options(""),
        },
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(10);
    let first = service("greeter", &[("g-1", "10.0.0.1:8080")], "", 90);
    registry.register(first.clone()).await.unwrap();
    assert_eq!(
        next(&mut watch, wait).await,
        ("create".into(), "greeter".into(), vec!["g-1".into()])
    );
    // Micro's heartbeat: the same payload again is a keepalive, with no event.
    registry.register(first.clone()).await.unwrap();
    // A changed node is an update; a second node is a create of that node only.
    let mut changed = first.clone();
    changed.nodes[0].address = "10.0.0.1:9090".into();
    registry.register(changed).await.unwrap();
    assert_eq!(
        next(&mut watch, wait).await,
        ("update".into(), "greeter".into(), vec!["g-1".into()])
    );
    registry
        .register(service("greeter", &[("g-2", "10.0.0.2:8080")], "", 1))
        .await
        .unwrap();
    assert_eq!(
        next(&mut watch, wait).await,
        ("create".into(), "greeter".into(), vec!["g-2".into()])
    );
    // Another domain's change does not reach a watch of "micro".
    registry
        .register(service("greeter", &[("x-1", "10.0.0.3:8080")], "acme", 0))
        .await
        .unwrap();
    // g-2's TTL of 1 s runs out: a delete carrying the expired node.
    assert_eq!(
        next(&mut watch, wait).await,
        ("delete".into(), "greeter".into(), vec!["g-2".into()])
    );
    registry
        .register(service("other", &[("o-1", "10.0.0.4:1")], "", 0))
        .await
        .unwrap();
    assert_eq!(
        next(&mut watch, wait).await,
        ("create".into(), "other".into(), vec!["o-1".into()])
    );
    // The service-filtered watch saw greeter's changes only.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (action, name, nodes) = next(&mut greeter, wait).await;
        assert_eq!(name, "greeter");
        seen.push((action, nodes[0].clone()));
    }
    assert_eq!(
        seen,
        [
            ("create".to_string(), "g-1".to_string()),
            ("update".to_string(), "g-1".to_string()),
            ("create".to_string(), "g-2".to_string()),
            ("delete".to_string(), "g-2".to_string()),
        ]
    );
    // A registration with TTL 0 never expires: "old" is still there.
    assert_eq!(get(&mut registry, "old", "").await.unwrap().len(), 1);
}

#[tokio::test]
async fn registry_services_are_native_services_and_back() {
    let server = Server::start();
    let mut registry = RegistryClient::new(channel(&server.grpc, None, None).await);
    let native = server.client("acme").await.registry();
    native
        .register(
            &strata_client::registry::Service {
                name: "native".into(),
                version: "v1".into(),
                nodes: vec![strata_client::registry::Node {
                    id: "n-1".into(),
                    address: "10.1.0.1:1".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let got = get(&mut registry, "native", "acme").await.unwrap();
    assert_eq!(
        (got[0].version.as_str(), node_ids(&got[0])),
        ("v1", vec!["n-1"])
    );
    registry
        .register(service("micro-made", &[("m-1", "10.1.0.2:1")], "acme", 60))
        .await
        .unwrap();
    let seen = native
        .get_service("micro-made", strata_client::Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(seen[0].nodes[0].id, "m-1");
    assert_eq!(seen[0].ttl_seconds, 60);
    assert_eq!(seen[0].endpoints[0].name, "Greeter.Hello");
    native.deregister("native", "v1", &[]).await.unwrap();
    assert_micro_error(
        &get(&mut registry, "native", "acme").await.unwrap_err(),
        "registry.Registry.GetService",
        404,
    );
}

#[tokio::test]
async fn registry_tenancy_follows_authorize_and_authorize_admin() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    let secret =
        auth::create_account(&server.grpc, &root, "acme", "api", "service", &["service"]).await;
    let service_token = auth::login(&server.grpc, "acme", "api", &secret)
        .await
        .access_token;
    let user = auth::account_token(&server.grpc, &root, "acme", "alice", &[]).await;

    let mut acme = RegistryClient::new(channel(&server.grpc, Some(&service_token), None).await);
    acme.register(service("api", &[("api-1", "10.0.0.1:1")], "acme", 90))
        .await
        .unwrap();
    // Not in another domain, nor the default one, nor across all of them.
    let denied = acme
        .register(service("api", &[("api-1", "10.0.0.1:1")], "", 90))
        .await
        .unwrap_err();
    assert_micro_error(&denied, "registry.Registry.Register", 403);
    assert_micro_error(
        &get(&mut acme, "api", "*").await.unwrap_err(),
        "registry.Registry.GetService",
        403,
    );
    // A plain user of the tenant reads (Authorize) but does not write (AuthorizeAdmin).
    let mut alice = RegistryClient::new(channel(&server.grpc, Some(&user), None).await);
    assert_eq!(get(&mut alice, "api", "acme").await.unwrap().len(), 1);
    let refused = alice
        .register(service("api", &[("api-2", "10.0.0.2:1")], "acme", 90))
        .await
        .unwrap_err();
    assert_micro_error(&refused, "registry.Registry.Register", 401);
    // The super-tenant's admin sees every domain.
    let mut admin = RegistryClient::new(channel(&server.grpc, Some(&root), None).await);
    assert_eq!(get(&mut admin, "api", "*").await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_node_registers_itself_as_micros_services_when_asked() {
    let server = Server::start_with(&["--micro-register", "strata.example:7420"]);
    let mut registry = RegistryClient::new(channel(&server.grpc, None, None).await);
    for name in ["store", "registry", "events", "config", "auth", "broker"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let services = loop {
            match get(&mut registry, name, "micro").await {
                Ok(services) => break services,
                Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(status) => panic!("{name} not registered: {status:?}"),
            }
        };
        let node = &services[0].nodes[0];
        assert_eq!(node.address, "strata.example:7420", "{name}");
        assert_eq!(node.metadata["protocol"], "grpc", "{name}");
    }
}
