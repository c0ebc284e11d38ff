//! Additions beside the v1.0 contract: container discovery, processes by container name or id
//! prefix, host facts, and the API document.

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

/// A container summary, with the runtime's labels when asked for (`?labels=true`).
#[derive(Serialize)]
pub struct ContainerView<'a> {
    #[serde(flatten)]
    summary: &'a ContainerSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    labels: Option<&'a std::collections::BTreeMap<String, String>>,
}

/// `labels=true|false` (default false); other parameters are ignored.
fn wants_labels(query: Option<&str>) -> Result<bool, ApiError> {
    let value = query
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == "labels")
        .map(|(_, value)| value);
    match value {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "labels={other:?}: use labels=true or labels=false"
        ))),
    }
}

fn view(summary: &ContainerSummary, labels: bool) -> ContainerView<'_> {
    ContainerView {
        summary,
        labels: labels.then_some(&summary.names.labels),
    }
}

/// `GET /api/v2/containers?interval=N&labels=true`: every container with a listed process, its
/// CPU, throttling and pressure over the last N samples (default 1), with the runtime's labels
/// when asked for.
pub async fn containers(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let labels = wants_labels(uri.query())?;
    let interval = interval_of(&state, &uri)?;
    let published = state.shared.load();
    let containers = &published.inventory.containers;
    let over: Vec<ContainerSummary>;
    let summaries: &[ContainerSummary] = if interval == 1 {
        containers
    } else {
        let tps = state.host.clock_ticks_per_second;
        over = containers
            .iter()
            .map(|c| c.over(&published.history, interval, tps))
            .collect();
        &over
    };
    let views: Vec<ContainerView<'_>> = summaries.iter().map(|c| view(c, labels)).collect();
    Ok(Json(views).into_response())
}

/// `GET /api/v2/containers/{ref}?interval=N&labels=true`: one container by its name or a unique
/// prefix of its id.
pub async fn container(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let labels = wants_labels(uri.query())?;
    let interval = interval_of(&state, &uri)?;
    let mut container = resolve(&state, &reference)?;
    if interval != 1 {
        let tps = state.host.clock_ticks_per_second;
        container = container.over(&state.shared.load().history, interval, tps);
    }
    Ok(Json(view(&container, labels)).into_response())
}

/// The `interval` parameter, read as v1.0 reads it; it must stay within the history.
fn interval_of(state: &AppState, uri: &Uri) -> Result<usize, ApiError> {
    let interval = v1::Query::parse(uri.query())?.interval;
    let capacity = state.shared.load().history.capacity();
    if interval >= capacity {
        return Err(ApiError::BadRequest(format!(
            "interval={interval} reaches past the history of {capacity} samples"
        )));
    }
    Ok(interval)
}

/// `GET /api/v2/containers/{ref}/processes`: the v1.0 answer, for a container named by its name
/// or a unique prefix of its id; same query parameters.
pub async fn processes(
    State(state): State<AppState>,
    Path(reference): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let container = resolve(&state, &reference)?;
    let query = v1::Query::parse(uri.query())?;
    let published = state.shared.load();
    let body = v1::render(&published.history, &container.path, &query)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The container `reference` names: its cgroup path (starting with `/`, exact), or what
/// [`Inventory::by_reference`](crate::inventory::Inventory::by_reference) resolves (an id, a
/// name, a unique id prefix).
pub(super) fn resolve(state: &AppState, reference: &str) -> Result<ContainerSummary, ApiError> {
    let published = state.shared.load();
    if reference.starts_with('/') {
        return published
            .inventory
            .containers
            .iter()
            .find(|c| &*c.path == reference)
            .cloned()
            .ok_or_else(|| {
                ApiError::NoSuchContainer(format!("no container {reference} with listed processes"))
            });
    }
    match published.inventory.by_reference(reference).as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(ApiError::NoSuchContainer(format!(
            "no container is named {reference:?} or has an id starting with it"
        ))),
        many => {
            const SHOWN: usize = 5;
            let mut listed: Vec<String> = many
                .iter()
                .take(SHOWN)
                .map(|c| match &c.names.name {
                    Some(name) => format!("{} ({name})", c.path),
                    None => c.path.to_string(),
                })
                .collect();
            if many.len() > SHOWN {
                listed.push("…".into());
            }
            Err(ApiError::Ambiguous(format!(
                "{} containers match {reference:?}: {}",
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
