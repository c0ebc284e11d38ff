//! The HTTP API: the v1.0 processes route, health, and the server around them.

mod error;
mod health;
pub mod v1;

use std::{net::SocketAddr, time::Duration};

use axum::{Router, routing::get};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tracing::info;

pub use error::ApiError;

use crate::sampler::Shared;

/// What every handler can see.
#[derive(Clone)]
pub struct AppState {
    pub shared: Shared,
    pub sample_period: Duration,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/api/v1.0/{*rest}", get(v1::processes))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
}

/// Serves until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr: SocketAddr = listener.local_addr()?;
    info!(%addr, "serving the API");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
