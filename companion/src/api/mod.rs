//! The HTTP API: the v1.0 processes route, health, and the layers every request passes.

mod error;
mod events;
pub mod guard;
mod health;
pub mod history;
pub mod limits;
pub mod server;
mod ui;
pub mod v1;
pub mod v2;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use tokio::sync::Semaphore;
use tower_http::{compression::CompressionLayer, timeout::TimeoutLayer};

pub use error::ApiError;
pub use guard::TokenAuth;

use crate::{descriptors::OpenFiles, events::EventHub, metrics::HttpMetrics, store::Shared};

/// What every handler can see.
#[derive(Clone)]
pub struct AppState {
    pub shared: Shared,
    pub sample_period: Duration,
    pub http_metrics: Arc<HttpMetrics>,
    pub host: Arc<v2::Host>,
    /// What `/api/v2/events` streams.
    pub events: Arc<EventHub>,
    /// The open-file limit as set at start (`/healthz`).
    pub open_files: Arc<OpenFiles>,
}

/// How requests are admitted.
pub struct Admission {
    /// Required bearer token, if any.
    pub auth: Option<TokenAuth>,
    /// Requests handled at once, until their answer is sent; more get 503 straight away.
    pub max_in_flight: usize,
    pub request_timeout: Duration,
    /// Bytes of built answers waiting to be sent, in all (a quarter of it per connection).
    pub max_buffered_bytes: u32,
    /// Whether the web page is served at `/` (it holds no data: it is open without the token).
    pub ui: bool,
}

/// Every route. `tests::openapi_covers_every_route` keeps the OpenAPI document in step.
pub const ROUTES: [&str; 16] = [
    "/",
    "/ui/app.js",
    "/ui/app.css",
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/api/v1.0/{container}/processes",
    "/api/v2/host",
    "/api/v2/containers",
    "/api/v2/containers/{id}",
    "/api/v2/containers/{id}/processes",
    "/api/v2/containers/{id}/history",
    "/api/v2/history",
    "/api/v2/events",
    "/api/v2/containers/{id}/exits",
    "/api/v2/exits",
];

pub fn router(state: AppState, admission: &Admission) -> Router {
    let http_metrics = state.http_metrics.clone();
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(crate::metrics::handler))
        .route("/openapi.json", get(v2::openapi))
        // The v1.0 container part holds slashes: the handler parses the whole path.
        .route("/api/v1.0/{*rest}", get(v1::processes))
        .route("/api/v2/host", get(v2::host))
        .route("/api/v2/containers", get(v2::containers))
        .route("/api/v2/containers/{id}", get(v2::container))
        .route("/api/v2/containers/{id}/processes", get(v2::processes))
        .route("/api/v2/containers/{id}/history", get(history::one))
        .route("/api/v2/history", get(history::all))
        .route("/api/v2/containers/{id}/exits", get(v2::container_exits))
        .route("/api/v2/exits", get(v2::exits))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state.clone())
        .layer(middleware::from_fn_with_state(
            limits::ByteBudget::new(admission.max_buffered_bytes),
            limits::budget,
        ))
        .layer(CompressionLayer::new().gzip(true).deflate(true))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            admission.request_timeout,
        ))
        .layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(admission.max_in_flight)),
            limits::admit,
        ));
    // The event stream is long-lived: outside the in-flight limit, the request timeout and
    // compression (which would hold events back); the connection limit and the hub's own cap on
    // open streams bound how many there are, and a client that stops reading stalls its
    // connection, which the watchdog closes after the request timeout. Behind the token.
    let routes = routes.merge(
        Router::new()
            .route("/api/v2/events", get(events::events))
            .with_state(state),
    );
    let routes = match &admission.auth {
        Some(auth) => routes.layer(middleware::from_fn_with_state(
            auth.clone(),
            guard::require_token,
        )),
        None => routes,
    };
    // The page's files hold no data: served without the token (the page asks for it).
    let routes = if admission.ui {
        routes.merge(ui::router().layer(CompressionLayer::new().gzip(true).deflate(true)))
    } else {
        routes
    };
    routes
        .layer(middleware::from_fn(guard::request_shape))
        .layer(middleware::from_fn_with_state(http_metrics, count_requests))
}

/// Counts every answer by route template and status, rejections included.
async fn count_requests(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let response = next.run(request).await;
    metrics.count(&route, response.status().as_u16());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_is_valid_and_covers_every_route() {
        let doc: openapiv3::OpenAPI = serde_json::from_str(v2::OPENAPI).expect("valid OpenAPI 3.0");
        let mut documented: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
        let mut routes = ROUTES.to_vec();
        documented.sort_unstable();
        routes.sort_unstable();
        assert_eq!(documented, routes);
        for (path, item) in &doc.paths.paths {
            let item = item.as_item().expect("inline path item");
            assert!(item.get.is_some(), "{path} documents GET");
            let get = item.get.as_ref().unwrap();
            assert!(
                get.responses
                    .responses
                    .contains_key(&openapiv3::StatusCode::Code(200)),
                "{path}"
            );
        }
        for schema in [
            "Status",
            "Stat",
            "Process",
            "Snapshot",
            "ContainerSummary",
            "Host",
            "Health",
            "History",
            "ContainerHistory",
            "SampleEvent",
            "ProcessEvent",
            "Exit",
            "ContainerExits",
            "AllExits",
        ] {
            assert!(
                doc.components
                    .as_ref()
                    .unwrap()
                    .schemas
                    .contains_key(schema),
                "{schema}"
            );
        }
    }

    #[test]
    fn documented_keys_match_what_is_served() {
        let doc: serde_json::Value = serde_json::from_str(v2::OPENAPI).unwrap();
        let schemas = &doc["components"]["schemas"];
        let keys = |schema: &str| -> Vec<String> {
            schemas[schema]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let served = |value: serde_json::Value| -> Vec<String> {
            value.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys("Stat"),
            served(serde_json::to_value(crate::procfs::Stat::default()).unwrap())
        );
        assert_eq!(
            keys("Status"),
            served(serde_json::to_value(crate::procfs::Status::default()).unwrap())
        );
        let mut exit = keys("Exit");
        let mut served_exit = served(serde_json::to_value(crate::exits::tests::record()).unwrap());
        exit.sort_unstable();
        served_exit.sort_unstable();
        assert_eq!(exit, served_exit);
        let mut summary = keys("ContainerSummary");
        summary.sort_unstable();
        for key in served(serde_json::to_value(crate::exits::ExitTotals::default()).unwrap()) {
            assert!(
                summary.contains(&key),
                "{key} documented in ContainerSummary"
            );
        }
    }
}
