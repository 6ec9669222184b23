//! Logs (`STRATA_LOG`, to stderr) and, for `serve --otlp-endpoint`, the spans of every call
//! exported through OpenTelemetry (OTLP over gRPC, batched): `grpc` (named by the method) →
//! `raft.write` → `raft.propose` (the batch it joined) → `raft.log.append` → `raft.log.fsync` →
//! `raft.apply`. The append, fsync and apply spans run in openraft's and the log's own tasks,
//! so they are roots of their own, carrying the log indexes that tie them to a write.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The span pipeline when one was configured, to flush at exit.
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Installs the log output (filter: `STRATA_LOG`, else `default_level`).
pub fn init(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(log_filter(default_level))
        .with_writer(std::io::stderr)
        .init();
}

fn log_filter(default_level: &str) -> EnvFilter {
    EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new(default_level))
}

/// Installs the log output and, with `endpoint`, span export to that OTLP/gRPC collector
/// (`http://collector:4317`). The write path's spans are at debug level, so that without an
/// exporter they cost next to nothing; with one, Strata's own spans and events at debug and
/// above are exported, whatever `STRATA_LOG` says. Must run inside the server's Tokio runtime.
pub fn init_with_spans(default_level: &str, endpoint: &str, node_id: u64) -> anyhow::Result<()> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let exporter = OnRuntime {
        inner: exporter,
        runtime: tokio::runtime::Handle::current(),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("strata")
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.instance.id",
                    format!("node-{node_id}"),
                ))
                .build(),
        )
        .build();
    let tracer = provider.tracer("strata");
    let _ = PROVIDER.set(provider);
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(EnvFilter::new("strata=debug,strata_raft=debug,off"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(log_filter(default_level));
    tracing_subscriber::registry().with(logs).with(spans).init();
    tracing::info!(endpoint, "exporting spans over OTLP");
    Ok(())
}

/// Sends the spans still buffered (at shutdown). Blocks for up to 5 s.
pub fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("strata: exporting the last spans: {error}");
        }
    }
}

/// The OTLP exporter driven on the server's runtime: OpenTelemetry's batch processor exports
/// from a thread of its own, where the gRPC client (tonic, hyper) finds no Tokio reactor.
#[derive(Debug)]
struct OnRuntime {
    inner: opentelemetry_otlp::SpanExporter,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let mut batch = Some(batch);
        let done = match tokio::runtime::Handle::try_current() {
            // The batch processor's own thread: run the export on the server's runtime.
            Err(_) => Some(
                self.runtime
                    .block_on(self.inner.export(batch.take().expect("a batch"))),
            ),
            Ok(_) => None,
        };
        async move {
            match (done, batch) {
                (Some(result), _) => result,
                (None, Some(batch)) => self.inner.export(batch).await,
                (None, None) => Ok(()),
            }
        }
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
