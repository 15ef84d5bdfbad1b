//! `/healthz`, `/readyz` and `/metrics` (docs/reference.md, Operations and metrics), served by every process: on
//! `WEBSOCKET_PORT` by the edge, next to Socket.IO, and on `METRICS_PORT` by the workers.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` runs every readiness check and is
//! 503, naming the failing ones, when any fails or once shutdown has begun (so a load balancer
//! stops sending work before the process stops taking it).

use std::{future::Future, pin::Pin, sync::Arc};

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::shutdown::Shutdown;

type CheckFn = dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync;

/// The readiness checks of one process.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<(&'static str, Arc<CheckFn>)>,
    shutdown: Shutdown,
}

impl Readiness {
    pub fn new(shutdown: &Shutdown) -> Self {
        Self { checks: Vec::new(), shutdown: shutdown.clone() }
    }

    /// Adds a named check; it should answer within a couple of seconds.
    pub fn check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((name, Arc::new(move || Box::pin(check()))));
        self
    }

    /// The failing checks, empty when ready.
    pub async fn failing(&self) -> Vec<(&'static str, String)> {
        if self.shutdown.is_triggered() {
            return vec![("shutdown", "shutting down".into())];
        }
        let results = futures::future::join_all(
            self.checks.iter().map(|(name, check)| async move { (*name, check().await) }),
        )
        .await;
        results.into_iter().filter_map(|(name, result)| result.err().map(|e| (name, e))).collect()
    }
}

#[derive(Clone)]
struct HealthState {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// The contract's error body for a request no route takes: a path nothing serves is 404
/// `not_found`, a method the path does not take is 405 `method_not_allowed`, both with the
/// `{ error: { code, message } }` body every other refusal has. Set on a process's whole
/// router by [`crate::service::Process::serve_with`].
pub fn with_fallbacks(router: Router) -> Router {
    router.fallback(not_found).method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> impl IntoResponse {
    error(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> impl IntoResponse {
    error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
}

fn error(status: StatusCode, code: &str, message: &str) -> impl IntoResponse + use<> {
    (status, Json(serde_json::json!({ "error": { "code": code, "message": message } })))
}

/// The health routes, to merge into the process's router.
pub fn router(readiness: Readiness, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "alive" })) }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(HealthState { readiness, metrics })
}

async fn readyz(State(state): State<HealthState>) -> impl IntoResponse {
    let failing = state.readiness.failing().await;
    if failing.is_empty() {
        return (StatusCode::OK, Json(serde_json::json!({ "status": "ready" })));
    }
    let failing: serde_json::Map<_, _> = failing
        .into_iter()
        .map(|(name, reason)| (name.to_owned(), serde_json::Value::String(reason)))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "not ready", "failing": failing })))
}

async fn render_metrics(State(state): State<HealthState>) -> impl IntoResponse {
    crate::telemetry::collect_process_metrics();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render())
}
