//! `GET /healthz`: is the service sampling, with which tracker, and how well.

use std::time::{Duration, SystemTime};

use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;

use super::AppState;
use crate::{
    descriptors::OpenFiles,
    store::SamplingStats,
    tracker::{TrackerKind, TrackerStats},
};

#[derive(Serialize)]
pub struct Health {
    /// `ok`; `degraded` when the tracker fell back or lost events it has not repaired yet;
    /// `stale` when no sample was published for three periods (answered with 503).
    pub status: &'static str,
    pub tracker: TrackerKind,
    pub newest_sample_age_seconds: f64,
    pub sample_period_seconds: f64,
    pub samples_in_history: usize,
    pub history_capacity: usize,
    #[serde(flatten)]
    pub sampling: SamplingStats,
    #[serde(flatten)]
    pub tracker_stats: TrackerStats,
    /// The open-file limit, why it is what it is, and the sampler's share of it.
    pub open_files: OpenFiles,
}

pub async fn healthz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let published = state.shared.load();
    let age = published
        .history
        .newest()
        .map(|s| {
            SystemTime::now()
                .duration_since(s.timestamp)
                .unwrap_or_default()
        })
        .unwrap_or(Duration::MAX);
    let stale = age > state.sample_period * 3;
    let status = if stale {
        "stale"
    } else if published.tracker_stats.degraded.is_some() {
        "degraded"
    } else {
        "ok"
    };
    let code = if stale {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let health = Health {
        status,
        tracker: published.tracker,
        newest_sample_age_seconds: age.as_secs_f64(),
        sample_period_seconds: state.sample_period.as_secs_f64(),
        samples_in_history: published.history.len(),
        history_capacity: published.history.capacity(),
        sampling: published.sampling.clone(),
        tracker_stats: published.tracker_stats.clone(),
        open_files: (*state.open_files).clone(),
    };
    (code, Json(health))
}
