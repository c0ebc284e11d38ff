//! The HTTP API: the v1.0 processes route, health, and the layers every request passes.

mod error;
mod guard;
mod health;
pub mod server;
pub mod v1;

use std::time::Duration;

use axum::{Router, error_handling::HandleErrorLayer, http::StatusCode, middleware, routing::get};
use tower::{BoxError, ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;
pub use guard::TokenAuth;

use crate::sampler::Shared;

/// What every handler can see.
#[derive(Clone)]
pub struct AppState {
    pub shared: Shared,
    pub sample_period: Duration,
}

/// How requests are admitted.
pub struct Admission {
    /// Required bearer token, if any.
    pub auth: Option<TokenAuth>,
    /// Requests handled at once; more get 503 straight away.
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

pub fn router(state: AppState, admission: &Admission) -> Router {
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/api/v1.0/{*rest}", get(v1::processes))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            admission.request_timeout,
        ))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    ApiError::Unavailable("overloaded: too many requests in flight".into())
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(admission.max_in_flight)),
        );
    let routes = match &admission.auth {
        Some(auth) => routes.layer(middleware::from_fn_with_state(
            auth.clone(),
            guard::require_token,
        )),
        None => routes,
    };
    routes.layer(middleware::from_fn(guard::request_shape))
}
