//! Additions beside the v1.0 contract: container discovery, processes by container id prefix,
//! host facts, and the API document.

use axum::{
    Json,
    extract::{Path, State},
    http::{Uri, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{ApiError, AppState, v1};
use crate::inventory::ContainerSummary;

/// `GET /api/v2/containers`: every container with a listed process.
pub async fn containers(State(state): State<AppState>) -> Json<Vec<ContainerSummary>> {
    Json(state.shared.load().inventory.containers.clone())
}

/// `GET /api/v2/containers/{id}`: one container by a unique prefix of its id.
pub async fn container(
    State(state): State<AppState>,
    Path(prefix): Path<String>,
) -> Result<Json<ContainerSummary>, ApiError> {
    Ok(Json(resolve(&state, &prefix)?))
}

/// `GET /api/v2/containers/{id}/processes`: the v1.0 answer, for a container named by a unique
/// prefix of its id; same query parameters.
pub async fn processes(
    State(state): State<AppState>,
    Path(prefix): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let container = resolve(&state, &prefix)?;
    let query = v1::Query::parse(uri.query())?;
    let published = state.shared.load();
    let body = v1::render(&published.history, &container.path, &query)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The container `reference` names: a unique prefix of its id, or its cgroup path (starting
/// with `/`, exact).
pub(super) fn resolve(state: &AppState, prefix: &str) -> Result<ContainerSummary, ApiError> {
    let published = state.shared.load();
    if prefix.starts_with('/') {
        return published
            .inventory
            .containers
            .iter()
            .find(|c| &*c.path == prefix)
            .cloned()
            .ok_or_else(|| {
                ApiError::NoSuchContainer(format!("no container {prefix} with listed processes"))
            });
    }
    match published.inventory.by_id_prefix(prefix).as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NoSuchContainer(format!(
            "no container id starts with {prefix:?}"
        ))),
        many => {
            const SHOWN: usize = 5;
            let mut listed: Vec<&str> = many.iter().take(SHOWN).map(|c| &*c.path).collect();
            if many.len() > SHOWN {
                listed.push("…");
            }
            Err(ApiError::Ambiguous(format!(
                "{} containers have ids starting with {prefix:?}: {}",
                many.len(),
                listed.join(", ")
            )))
        }
    }
}

/// Facts about the host that clients need to present processes (`companion ps`).
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub memory_total_bytes: u64,
    /// Boot time, seconds since the Unix epoch: a process started `starttime / clock_ticks`
    /// seconds after it.
    pub boot_time_seconds: u64,
    pub clock_ticks_per_second: u64,
    pub page_size_bytes: u64,
    pub sample_period_seconds: f64,
    pub history_capacity: usize,
}

/// `GET /api/v2/host`.
pub async fn host(State(state): State<AppState>) -> Json<Host> {
    Json((*state.host).clone())
}

/// The OpenAPI description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
