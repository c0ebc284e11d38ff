//! Additions beside the v1.0 contract: container discovery, processes by container id prefix,
//! host facts, and the API document.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{Uri, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, v1};
use crate::{
    cgroup::Identity,
    exits::{ExitRecord, ExitTotals},
    inventory::ContainerSummary,
};

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

fn resolve(state: &AppState, prefix: &str) -> Result<ContainerSummary, ApiError> {
    let published = state.shared.load();
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

/// Query parameters of the exit routes.
#[derive(Debug, Deserialize)]
pub struct ExitsQuery {
    since: Option<String>,
    limit: Option<String>,
}

/// `limit` of the exit routes when the request gives none.
const DEFAULT_EXITS_LIMIT: usize = 100;

impl ExitsQuery {
    fn parse(
        query: Result<Query<ExitsQuery>, QueryRejection>,
    ) -> Result<(Option<jiff::Timestamp>, usize), ApiError> {
        let Query(query) = query.map_err(|err| ApiError::BadRequest(err.body_text()))?;
        let since = match query.since.as_deref() {
            None | Some("") => None,
            Some(text) => Some(text.parse::<jiff::Timestamp>().map_err(|err| {
                ApiError::BadRequest(format!(
                    "since={text:?} is not an RFC 3339 time (2026-12-01T13:00:00Z): {err}"
                ))
            })?),
        };
        let limit = match query.limit.as_deref() {
            None | Some("") => DEFAULT_EXITS_LIMIT,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit={text:?} is not a positive integer"))
                })?,
        };
        Ok((since, limit))
    }
}

/// `GET /api/v2/containers/{ref}/exits` answers this.
#[derive(Serialize)]
pub struct ContainerExits {
    pub container: Arc<str>,
    /// Whether the container still has processes (its entries outlive it).
    pub present: bool,
    #[serde(flatten)]
    pub totals: ExitTotals,
    /// Newest first.
    pub exits: Vec<Arc<ExitRecord>>,
}

/// `GET /api/v2/exits` answers this.
#[derive(Serialize)]
pub struct AllExits {
    /// Newest first, across containers (removed ones included).
    pub exits: Vec<Arc<ExitRecord>>,
}

/// `GET /api/v2/containers/{ref}/exits`: the processes that ended in one container, newest
/// first. `ref` is an id prefix or a cgroup path (`%2F`-encoded); a removed container is found
/// while the ledger holds its entries.
pub async fn container_exits(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    query: Result<Query<ExitsQuery>, QueryRejection>,
) -> Result<Json<ContainerExits>, ApiError> {
    let (since, limit) = ExitsQuery::parse(query)?;
    let path = resolve_with_ended(&state, &reference)?;
    let published = state.shared.load();
    let ledger = published.exits.containers.get(&path);
    Ok(Json(ContainerExits {
        present: ledger.is_none_or(|l| l.present),
        totals: ledger.map(|l| l.totals).unwrap_or_default(),
        exits: ledger
            .map(|l| l.newest_first(since).take(limit).cloned().collect())
            .unwrap_or_default(),
        container: path,
    }))
}

/// `GET /api/v2/exits`: the processes that ended in any container, newest first.
pub async fn exits(
    State(state): State<AppState>,
    query: Result<Query<ExitsQuery>, QueryRejection>,
) -> Result<Json<AllExits>, ApiError> {
    let (since, limit) = ExitsQuery::parse(query)?;
    let published = state.shared.load();
    Ok(Json(AllExits {
        exits: published.exits.newest_first(since, limit),
    }))
}

/// A container by id prefix or path among the listed ones, then among those only the exit
/// ledger still remembers.
fn resolve_with_ended(state: &AppState, reference: &str) -> Result<Arc<str>, ApiError> {
    let published = state.shared.load();
    if reference.starts_with('/') {
        let listed = published
            .inventory
            .containers
            .iter()
            .map(|c| &c.path)
            .chain(published.exits.containers.keys())
            .find(|path| ***path == *reference);
        return listed.cloned().ok_or_else(|| {
            ApiError::NoSuchContainer(format!("no container {reference} is listed or has exits"))
        });
    }
    let err = match resolve(state, reference) {
        Ok(container) => return Ok(container.path),
        Err(ApiError::NoSuchContainer(err)) => err,
        Err(err) => return Err(err),
    };
    let ended: Vec<&Arc<str>> = published
        .exits
        .containers
        .iter()
        .filter(|(path, c)| !c.present && Identity::of(path).matches_prefix(reference))
        .map(|(path, _)| path)
        .collect();
    match ended.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NoSuchContainer(err)),
        many => Err(ApiError::Ambiguous(format!(
            "{} removed containers have ids starting with {reference:?}",
            many.len()
        ))),
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
