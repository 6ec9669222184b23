//! What operators and generic tools see: gRPC reflection, health, readiness and metrics.

use futures::StreamExt;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

use crate::harness::Server;

#[tokio::test]
async fn reflection_lists_and_describes_the_kv_service() {
    let server = Server::start();
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "strata.kv.v1.Kv".into(),
            )),
        },
    ];
    let mut responses = client
        .server_reflection_info(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let listed = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("expected a service list, got {listed:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"strata.kv.v1.Kv"), "{names:?}");
    let described = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = described.message_response else {
        panic!("expected a file descriptor, got {described:?}");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = Server::start();
    let table = server.client("default").await.table("db", "t");
    table.put("k", "v").await.unwrap();
    table.get("missing").await.unwrap();
    server
        .client("shop")
        .await
        .topic("orders")
        .publish(strata_client::stream::Publish::new("m"))
        .await
        .unwrap();

    assert_eq!(server.http_get("/healthz").0, 200);
    let (code, body) = server.http_get("/readyz");
    assert_eq!(code, 200, "{body}");
    let (code, metrics) = server.http_get("/metrics");
    assert_eq!(code, 200);
    for expected in [
        r#"strata_grpc_requests_total{code="OK",method="Put",namespace="default"} 1"#,
        r#"strata_grpc_requests_total{code="NOT_FOUND",method="Get",namespace="default"} 1"#,
        r#"strata_grpc_requests_total{code="OK",method="stream.Publish",namespace="shop"} 1"#,
        r#"strata_grpc_request_duration_seconds_count{method="Put"} 1"#,
        r#"strata_grpc_namespace_request_duration_seconds_count{namespace="shop"} 1"#,
        r#"strata_raft{field="is_leader"} 1"#,
        r#"strata_raft{field="commit_index"}"#,
        r#"strata_stream_topic_messages{namespace="shop",topic="orders"} 1"#,
        r#"strata_stream_topic_last_sequence{namespace="shop",topic="orders"} 1"#,
        r#"strata_raft_applied_entries_total "#,
        r#"strata_raft_log_fsync_duration_seconds_count "#,
        r#"strata_rocksdb_sst_bytes{cf="kv"} "#,
        r#"strata_rocksdb_write_stopped 0"#,
        r#"strata_process_open_fds "#,
        r#"strata_process_resident_memory_bytes "#,
    ] {
        assert!(
            metrics.contains(expected),
            "metrics lack {expected:?}:\n{metrics}"
        );
    }
    let applied: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"strata_raft{field="applied_index"} "#))
        .expect("applied index gauge")
        .parse()
        .unwrap();
    assert!(applied >= 2, "applied index {applied}");
}

/// Consumer progress per group (issue 21): what an operator needs to see a stall, in
/// TopicInfo (and so `strata stream info`) and in the metrics.
#[tokio::test]
async fn group_progress_is_in_topic_info_and_metrics() {
    use futures::StreamExt;
    use strata_client::stream::{Publish, SubscribeOptions};
    let server = Server::start();
    let client = server.client("shop").await;
    let topic = client.topic("orders");
    for n in 0..3 {
        topic.publish(Publish::new(format!("m{n}"))).await.unwrap();
    }
    let mut subscription = topic
        .subscribe(SubscribeOptions::group("billing").earliest())
        .await
        .unwrap();
    for _ in 0..3 {
        let delivery = subscription.next().await.unwrap().unwrap();
        delivery.ack().await.unwrap();
    }
    drop(subscription);
    for n in 3..5 {
        topic.publish(Publish::new(format!("m{n}"))).await.unwrap();
    }
    let info = topic.info().await.unwrap();
    let group = info.groups.iter().find(|g| g.name == "billing").unwrap();
    assert_eq!((group.delivered, group.acked), (3, 3), "{group:?}");
    assert_eq!((group.lag, group.pending), (2, 0), "{group:?}");
    assert!(group.last_delivery_ms > 0 && group.last_ack_ms >= group.last_delivery_ms);
    assert_billing_group(
        &server,
        &[("lag", 2), ("pending", 0), ("delivered", 3), ("acked", 3)],
    );
}

/// The metrics show these fields of group `billing` of shop/orders.
fn assert_billing_group(server: &Server, fields: &[(&str, u64)]) {
    let (_, metrics) = server.http_get("/metrics");
    for (field, value) in fields {
        let line = format!(
            r#"strata_stream_group{{field="{field}",group="billing",namespace="shop",topic="orders"}} {value}"#
        );
        assert!(metrics.contains(&line), "metrics lack {line:?}:\n{metrics}");
    }
}

/// Redeliveries are counted per group (a nacked message delivered again), in the metrics.
#[tokio::test]
async fn redeliveries_are_counted_per_group() {
    use futures::StreamExt;
    use strata_client::stream::{Publish, SubscribeOptions};
    let server = Server::start();
    let topic = server.client("shop").await.topic("orders");
    topic.publish(Publish::new("m0")).await.unwrap();
    let mut subscription = topic
        .subscribe(SubscribeOptions::group("billing").earliest())
        .await
        .unwrap();
    let first = subscription.next().await.unwrap().unwrap();
    first.nack(std::time::Duration::ZERO).await.unwrap();
    let again = subscription.next().await.unwrap().unwrap();
    assert_eq!(again.message.sequence, first.message.sequence);
    again.ack().await.unwrap();
    drop(subscription);
    assert_billing_group(
        &server,
        &[
            ("redelivered", 1),
            ("delivered", 2),
            ("acked", 1),
            ("dead_lettered", 0),
        ],
    );
}
