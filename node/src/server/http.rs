//! HTTP endpoints for operators: liveness, readiness and Prometheus metrics.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    node: strata_raft::RaftNode,
    metrics: Metrics,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    node: strata_raft::RaftNode,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(HttpState { node, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Ready when a leader is known, so writes and linearizable reads can be served.
async fn ready(State(state): State<HttpState>) -> (StatusCode, String) {
    let metrics = state.node.raft.metrics().borrow().clone();
    match metrics.current_leader {
        Some(leader) => (StatusCode::OK, format!("ready: leader is node {leader}\n")),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no leader known\n".into(),
        ),
    }
}

async fn render_metrics(
    State(state): State<HttpState>,
) -> ([(&'static str, &'static str); 1], String) {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(&state.node).await,
    )
}
