//! `broker.Broker` conformance (shared/MICRO_API.md §4, §11.9): publish and subscribe with
//! and without queues, topics apart per namespace, errors, never-half-closed subscriptions.

use std::collections::HashMap;
use std::time::Duration;

use strata_proto::micro::broker as pb;
use strata_proto::micro::broker::broker_client::BrokerClient;

use super::{assert_micro_error, channel, open_stream, MicroChannel};
use crate::harness::{auth, Server};

const WAIT: Duration = Duration::from_secs(10);

pub async fn subscribe(
    grpc: &str,
    token: Option<&str>,
    topic: &str,
    queue: &str,
) -> Result<tonic::Streaming<pb::Message>, tonic::Status> {
    open_stream(
        channel(grpc, token, None).await,
        "/broker.Broker/Subscribe",
        pb::SubscribeRequest {
            topic: topic.into(),
            queue: queue.into(),
        },
    )
    .await
}

pub async fn publish(broker: &mut BrokerClient<MicroChannel>, topic: &str, body: &str) {
    broker
        .publish(pb::PublishRequest {
            topic: topic.into(),
            message: Some(pb::Message {
                header: HashMap::from([("Micro-Topic".to_string(), topic.to_string())]),
                body: body.as_bytes().to_vec(),
            }),
        })
        .await
        .unwrap_or_else(|s| panic!("publish: {s:?}"));
}

pub async fn next(subscription: &mut tonic::Streaming<pb::Message>) -> pb::Message {
    tokio::time::timeout(WAIT, subscription.message())
        .await
        .expect("no message in time")
        .expect("subscription failed")
        .expect("subscription ended")
}

#[tokio::test]
async fn broker_fans_out_and_queues_share() {
    let server = Server::start();
    let mut broker = BrokerClient::new(channel(&server.grpc, None, None).await);
    let mut everyone_1 = subscribe(&server.grpc, None, "greetings", "")
        .await
        .unwrap();
    let mut everyone_2 = subscribe(&server.grpc, None, "greetings", "")
        .await
        .unwrap();
    let mut worker_a = subscribe(&server.grpc, None, "greetings", "workers")
        .await
        .unwrap();
    let mut worker_b = subscribe(&server.grpc, None, "greetings", "workers")
        .await
        .unwrap();
    for i in 0..6 {
        publish(&mut broker, "greetings", &format!("hello-{i}")).await;
    }
    for subscription in [&mut everyone_1, &mut everyone_2] {
        for i in 0..6 {
            let message = next(subscription).await;
            assert_eq!(message.body, format!("hello-{i}").as_bytes());
            assert_eq!(message.header["Micro-Topic"], "greetings");
        }
    }
    let mut shared = Vec::new();
    while shared.len() < 6 {
        tokio::select! {
            m = next(&mut worker_a) => shared.push(m.body),
            m = next(&mut worker_b) => shared.push(m.body),
        }
    }
    shared.sort();
    assert_eq!(
        shared,
        (0..6)
            .map(|i| format!("hello-{i}").into_bytes())
            .collect::<Vec<_>>(),
        "a queue's subscribers split the messages"
    );

    let missing = broker
        .publish(pb::PublishRequest {
            topic: "greetings".into(),
            message: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        assert_micro_error(&missing, "broker.Broker.Publish", 400),
        "Missing message"
    );
    let no_topic = subscribe(&server.grpc, None, "", "").await.unwrap_err();
    assert_micro_error(&no_topic, "broker.Broker.Subscribe", 400);
}

#[tokio::test]
async fn broker_topics_are_apart_per_namespace() {
    let server = Server::start_with(&["--auth", "on"]);
    let root = auth::root_token(&server.grpc, &[&server.data_dir]).await;
    let a = auth::account_token(&server.grpc, &root, "team-a", "svc", &[]).await;
    let b = auth::account_token(&server.grpc, &root, "team-b", "svc", &[]).await;
    let mut a_sub = subscribe(&server.grpc, Some(&a), "news", "").await.unwrap();
    let mut b_sub = subscribe(&server.grpc, Some(&b), "news", "").await.unwrap();
    let mut a_pub = BrokerClient::new(channel(&server.grpc, Some(&a), None).await);
    let mut b_pub = BrokerClient::new(channel(&server.grpc, Some(&b), None).await);
    publish(&mut a_pub, "news", "for-a").await;
    publish(&mut b_pub, "news", "for-b").await;
    assert_eq!(next(&mut a_sub).await.body, b"for-a");
    assert_eq!(next(&mut b_sub).await.body, b"for-b");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), a_sub.message())
            .await
            .is_err(),
        "team-a never sees team-b's messages"
    );
    // Without an account: 401.
    let anonymous = subscribe(&server.grpc, None, "news", "").await.unwrap_err();
    assert_micro_error(&anonymous, "broker.Broker.Subscribe", 401);
}
