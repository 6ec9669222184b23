//! Spans exported through OpenTelemetry: a node started with `--otlp-endpoint` sends the spans
//! of a write (API → propose → append → fsync → apply) to an OTLP/gRPC collector, here one this
//! test runs in process.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use crate::harness::Server;

/// Span names received, and the service names of their resources.
#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<BTreeSet<String>>>,
    services: Arc<Mutex<BTreeSet<String>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in request.into_inner().resource_spans {
            if let Some(resource) = &resource_spans.resource {
                for attribute in &resource.attributes {
                    if attribute.key == "service.name" {
                        self.services
                            .lock()
                            .unwrap()
                            .insert(format!("{:?}", attribute.value));
                    }
                }
            }
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    self.spans.lock().unwrap().insert(span.name);
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_exports_its_spans_to_the_configured_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let collector = Collector::default();
    let serving = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let server = Server::start_with(&["--otlp-endpoint", &format!("http://{address}")]);
    let table = server.client("default").await.table("db", "t");
    for i in 0..3 {
        table.put(format!("k{i}"), "v").await.unwrap();
    }
    let wanted = [
        "/strata.kv.v1.Kv/Put",
        "raft.write",
        "raft.propose",
        "raft.log.append",
        "raft.log.fsync",
        "raft.apply",
    ];
    // The batch exporter sends every 5 s.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans = collector.spans.lock().unwrap().clone();
        if wanted.iter().all(|name| spans.contains(*name)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans received in 30 s: {spans:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let services = collector.services.lock().unwrap().clone();
    assert!(
        services.iter().any(|s| s.contains("strata")),
        "service names {services:?}"
    );
    serving.abort();
}
