//! HTTP endpoints for operators: liveness, readiness, Prometheus metrics and the web
//! dashboard (`dashboard.rs`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use super::metrics::Metrics;

#[derive(Clone)]
struct HttpState {
    node: strata_raft::RaftNode,
    metrics: Metrics,
    dashboard: super::dashboard::Dashboard,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    node: strata_raft::RaftNode,
    metrics: Metrics,
    dashboard: super::dashboard::Dashboard,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(render_metrics))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/dashboard") }),
        )
        .route("/dashboard", get(dashboard_page))
        .route("/api/v1/dashboard", get(dashboard_view))
        .with_state(HttpState {
            node,
            metrics,
            dashboard,
        });
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

/// The page: self-contained, allowed to talk only to this node.
async fn dashboard_page() -> ([(&'static str, &'static str); 5], &'static str) {
    (
        [
            ("content-type", "text/html; charset=utf-8"),
            (
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; frame-ancestors 'none'",
            ),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
        ],
        super::dashboard::PAGE,
    )
}

async fn dashboard_view(
    State(state): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> (StatusCode, [(&'static str, &'static str); 2], String) {
    let (status, body) = state.dashboard.view(&headers).await;
    (
        status,
        [
            ("content-type", "application/json"),
            ("cache-control", "no-store"),
        ],
        body,
    )
}
