//! The HTTP endpoints (`/health`, `/ready`, `/metrics`), as CoreDNS's
//! `health`, `ready` and `prometheus` plugins serve them. They run on the
//! control-plane thread's runtime, never on a serving core.

use crate::operations::metrics::Scrape;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `/health`: 200 while every serving core runs, 503 once one has failed
/// (the kubelet then restarts the process).
pub fn health_router() -> axum::Router {
    axum::Router::new().route(
        "/health",
        axum::routing::get(|| async {
            if crate::operations::failure::core_failed() {
                (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "a serving core failed",
                )
            } else {
                (axum::http::StatusCode::OK, "OK")
            }
        }),
    )
}

/// `/ready`: 200 once every core holds the first sync, 503 before it and
/// during the lameduck period.
pub fn ready_router(ready: Arc<AtomicBool>) -> axum::Router {
    axum::Router::new().route(
        "/ready",
        axum::routing::get(move || {
            let ready = Arc::clone(&ready);
            async move {
                if ready.load(Ordering::Acquire) {
                    (axum::http::StatusCode::OK, "OK")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }
        }),
    )
}

/// `/metrics`: the scrape, in the OpenMetrics text format.
pub fn metrics_router(scrape: Arc<Scrape>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let scrape = Arc::clone(&scrape);
            async move {
                match scrape.render() {
                    Ok(body) => (
                        axum::http::StatusCode::OK,
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    ),
                    Err(_) => (
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        [(axum::http::header::CONTENT_TYPE, "text/plain")],
                        "metrics could not be encoded".to_string(),
                    ),
                }
            }
        }),
    )
}

/// Serves `router` on `addr` until the runtime stops; a listener that
/// cannot start is logged, and DNS keeps serving.
pub async fn serve_http(addr: SocketAddr, what: &'static str, router: axum::Router) {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(addr = %bound, "{what} endpoint listening");
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "{what} endpoint failed; DNS keeps serving");
            }
        }
        Err(error) => {
            tracing::error!(%addr, %error, "cannot listen for the {what} endpoint; DNS keeps serving, choose another address");
        }
    }
}
