//! Micro's APIs against a three-node cluster, through a follower: writes forwarded to the
//! leader, reads linearizable on every node.

use std::time::Duration;

use strata_proto::micro::config as config_pb;
use strata_proto::micro::config::config_client::ConfigClient;
use strata_proto::micro::events as events_pb;
use strata_proto::micro::registry::registry_client::RegistryClient;
use strata_proto::micro::store as pb;
use strata_proto::micro::store::store_client::StoreClient;

use super::broker;
use super::channel;
use super::registry::{get, service};
use super::store::{list, list_options, read, record, write};
use crate::harness::Cluster;

#[tokio::test]
async fn micro_apis_through_a_follower_of_a_three_node_cluster() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.wait_for_leader(Duration::from_secs(30));
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader)
        .unwrap();
    let other = cluster
        .nodes
        .keys()
        .copied()
        .find(|id| *id != leader && *id != follower)
        .unwrap();
    let follower_grpc = &cluster.node(follower).grpc;
    // A broker subscriber on one node hears a publish made through another.
    let mut subscriber = broker::subscribe(&cluster.node(other).grpc, None, "fanout", "")
        .await
        .unwrap();
    let mut publisher = strata_proto::micro::broker::broker_client::BrokerClient::new(
        channel(follower_grpc, None, None).await,
    );
    broker::publish(&mut publisher, "fanout", "across").await;
    assert_eq!(broker::next(&mut subscriber).await.body, b"across");
    let mut store = StoreClient::new(channel(follower_grpc, None, None).await);
    for i in 0..20 {
        write(
            &mut store,
            "acme",
            "t",
            record(&format!("k{i:02}"), &i.to_string(), 0),
        )
        .await;
    }
    let mut registry = RegistryClient::new(channel(follower_grpc, None, None).await);
    registry
        .register(service("greeter", &[("g-1", "10.0.0.1:1")], "", 90))
        .await
        .unwrap();
    let mut config = ConfigClient::new(channel(follower_grpc, None, None).await);
    config
        .set(config_pb::SetRequest {
            namespace: "acme".into(),
            path: "a.b".into(),
            value: Some(config_pb::Value {
                data: "42".into(),
                format: String::new(),
            }),
            options: None,
        })
        .await
        .unwrap();
    let mut events =
        events_pb::stream_client::StreamClient::new(channel(follower_grpc, None, None).await);
    events
        .publish(events_pb::PublishRequest {
            topic: "cluster-events".into(),
            payload: b"e".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Every node sees every acknowledged write at once.
    for id in [follower, other, leader] {
        let grpc = &cluster.node(id).grpc;
        let mut store = StoreClient::new(channel(grpc, None, None).await);
        let all = read(
            &mut store,
            "k",
            pb::ReadOptions {
                database: "acme".into(),
                table: "t".into(),
                prefix: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(all.len(), 20, "node {id}");
        assert_eq!(list(grpc, None, list_options("acme", "t")).await.len(), 20);
        let mut registry = RegistryClient::new(channel(grpc, None, None).await);
        assert_eq!(get(&mut registry, "greeter", "").await.unwrap().len(), 1);
        let mut config = ConfigClient::new(channel(grpc, None, None).await);
        let value = config
            .get(config_pb::GetRequest {
                namespace: "acme".into(),
                path: "a.b".into(),
                options: None,
            })
            .await
            .unwrap()
            .into_inner()
            .value
            .unwrap();
        assert_eq!(value.data, "42", "node {id}");
        // A group on each node replays the event from the start of time.
        let mut consume =
            events_pb::stream_client::StreamClient::new(channel(grpc, None, None).await)
                .consume(events_pb::ConsumeRequest {
                    topic: "cluster-events".into(),
                    group: format!("g{id}"),
                    offset: 1,
                    auto_ack: true,
                    retry_limit: -1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
        let event = tokio::time::timeout(Duration::from_secs(10), consume.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(event.payload, b"e", "node {id}");
    }
}
