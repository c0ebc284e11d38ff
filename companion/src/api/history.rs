//! CPU over the whole history, sample by sample: what the web page draws as sparklines.
//!
//! `GET /api/v2/history`: every listed container's CPU per sample; `GET
//! /api/v2/containers/{id}/history`: one container's, and each of its processes'. Values are
//! percent of one core over the interval that ends at each sample (as `cpu_percent` of
//! `/api/v2/containers`), `null` where there is no such interval (the first sample, a process or
//! container not yet there).

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Serialize, Serializer};

use super::{ApiError, AppState, v2};
use crate::{
    history::History,
    model::{ProcessSample, Sample},
    procfs::Pid,
};

/// `GET /api/v2/history`.
#[derive(Debug, Serialize)]
pub struct AllSeries {
    /// The samples' times, oldest first; every series has one value per time.
    #[serde(serialize_with = "times")]
    pub times: Vec<SystemTime>,
    pub containers: Vec<ContainerSeries>,
}

#[derive(Debug, Serialize)]
pub struct ContainerSeries {
    pub path: Arc<str>,
    pub cpu_percent: Vec<Option<Percent>>,
}

/// `GET /api/v2/containers/{id}/history`.
#[derive(Debug, Serialize)]
pub struct OneSeries {
    pub path: Arc<str>,
    #[serde(serialize_with = "times")]
    pub times: Vec<SystemTime>,
    pub cpu_percent: Vec<Option<Percent>>,
    /// The container's listed processes of the newest sample, by pid.
    pub processes: Vec<ProcessSeries>,
}

#[derive(Debug, Serialize)]
pub struct ProcessSeries {
    pub pid: Pid,
    /// Start time in clock ticks after boot: with the pid, which process this is.
    pub starttime: u64,
    pub cpu_percent: Vec<Option<Percent>>,
}

/// A percentage rounded to a tenth, to keep the answer small.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Percent(pub f64);

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64((self.0 * 10.0).round() / 10.0)
    }
}

pub async fn all(State(state): State<AppState>) -> Json<AllSeries> {
    let published = state.shared.load();
    let paths: Vec<Arc<str>> = published
        .inventory
        .containers
        .iter()
        .map(|c| c.path.clone())
        .collect();
    Json(all_series(
        &published.history,
        &paths,
        state.host.clock_ticks_per_second,
    ))
}

pub async fn one(
    State(state): State<AppState>,
    Path(reference): Path<String>,
) -> Result<Json<OneSeries>, ApiError> {
    let container = v2::resolve(&state, &reference)?;
    let published = state.shared.load();
    Ok(Json(one_series(
        &published.history,
        &container.path,
        state.host.clock_ticks_per_second,
    )))
}

/// Seconds between each sample and the one before it (`None` for the first).
fn intervals(history: &History) -> Vec<Option<f64>> {
    let mut previous: Option<SystemTime> = None;
    history
        .samples()
        .map(|s| {
            let seconds = previous
                .and_then(|p| s.timestamp.duration_since(p).ok())
                .map(|d| d.as_secs_f64())
                .filter(|&secs| secs > 0.0);
            previous = Some(s.timestamp);
            seconds
        })
        .collect()
}

fn percent(ticks: u64, ticks_per_second: u64, seconds: f64) -> Percent {
    Percent(100.0 * ticks as f64 / ticks_per_second.max(1) as f64 / seconds)
}

/// CPU of each of `paths`, per sample.
pub fn all_series(history: &History, paths: &[Arc<str>], ticks_per_second: u64) -> AllSeries {
    let index: HashMap<&str, usize> = paths.iter().enumerate().map(|(i, p)| (&**p, i)).collect();
    let intervals = intervals(history);
    let mut series: Vec<Vec<Option<Percent>>> = vec![vec![None; intervals.len()]; paths.len()];
    for (at, (sample, seconds)) in history.samples().zip(&intervals).enumerate() {
        let Some(seconds) = *seconds else { continue };
        for (path, _, totals) in sample.containers() {
            if let Some(&i) = index.get(&**path) {
                series[i][at] = Some(percent(totals.cpu_ticks, ticks_per_second, seconds));
            }
        }
    }
    AllSeries {
        times: history.samples().map(|s| s.timestamp).collect(),
        containers: paths
            .iter()
            .cloned()
            .zip(series)
            .map(|(path, cpu_percent)| ContainerSeries { path, cpu_percent })
            .collect(),
    }
}

/// CPU of the container at `path` and of each of its listed processes, per sample.
pub fn one_series(history: &History, path: &Arc<str>, ticks_per_second: u64) -> OneSeries {
    let all = all_series(history, std::slice::from_ref(path), ticks_per_second);
    let samples: Vec<&Arc<Sample>> = history.samples().collect();
    let intervals = intervals(history);
    let current: Vec<&ProcessSample> = samples
        .last()
        .map(|newest| {
            newest
                .container(path)
                .iter()
                .filter(|p| p.listed())
                .collect()
        })
        .unwrap_or_default();
    let processes = current
        .into_iter()
        .map(|process| {
            let info = &process.info;
            let ticks_at = |sample: &Sample| -> Option<u64> {
                let in_container = sample.container(path);
                let at = in_container
                    .binary_search_by_key(&info.pid, |p| p.info.pid)
                    .ok()?;
                let found = &in_container[at];
                found.info.same_process(info).then(|| found.cpu_ticks())
            };
            let cpu_percent = (0..samples.len())
                .map(|at| {
                    let seconds = intervals[at]?;
                    let now = ticks_at(samples[at])?;
                    let before = match ticks_at(samples[at - 1]) {
                        Some(before) => before,
                        // Born after the previous sample began: all its CPU is recent.
                        None if info.starttime >= samples[at - 1].boot_ticks => 0,
                        None => return None,
                    };
                    Some(percent(
                        now.saturating_sub(before),
                        ticks_per_second,
                        seconds,
                    ))
                })
                .collect();
            ProcessSeries {
                pid: info.pid,
                starttime: info.starttime,
                cpu_percent,
            }
        })
        .collect();
    let mut containers = all.containers;
    OneSeries {
        path: path.clone(),
        times: all.times,
        cpu_percent: containers.pop().map(|c| c.cpu_percent).unwrap_or_default(),
        processes,
    }
}

fn times<S: Serializer>(times: &[SystemTime], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(times.iter().map(|t| {
        jiff::Timestamp::try_from(*t)
            .map(|ts| ts.to_string())
            .unwrap_or_default()
    }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        model::{ProcessInfo, Sampled},
        procfs::{Stat, Status},
    };

    fn process(pid: Pid, starttime: u64, container: &str, cpu: u64) -> ProcessSample {
        ProcessSample::new(
            Arc::new(ProcessInfo {
                pid,
                starttime,
                container: container.into(),
                cmdline: "x".into(),
                has_cmdline: Some(true),
            }),
            Arc::new(Stat {
                pid: pid.into(),
                utime: cpu,
                starttime,
                ..Stat::default()
            }),
            Some(Arc::new(Status {
                vm_rss: 1,
                ..Status::default()
            })),
        )
    }

    /// Samples one second apart (100 ticks), each `(pid, starttime, cpu ticks, recent ticks)`.
    fn history(samples: &[&[(Pid, u64, u64, u64)]]) -> History {
        let mut history = History::new(10);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for (n, rows) in samples.iter().enumerate() {
            let sampled = rows
                .iter()
                .map(|&(pid, starttime, cpu, recent)| Sampled {
                    process: process(pid, starttime, "/c", cpu),
                    recent_ticks: recent,
                })
                .collect();
            history = history.with(Sample::new(
                start + Duration::from_secs(n as u64),
                1000 + 100 * n as u64,
                sampled,
                Vec::new(),
            ));
        }
        history
    }

    #[test]
    fn per_sample_percent_of_a_core() {
        // pid 1 busy (100 ticks a second), pid 2 born during the third sample with 30 ticks.
        let history = history(&[
            &[(1, 500, 0, 0)],
            &[(1, 500, 100, 100)],
            &[(1, 500, 200, 100), (2, 1150, 30, 30)],
        ]);
        let path: Arc<str> = "/c".into();
        let one = one_series(&history, &path, 100);
        let values = |v: &[Option<Percent>]| v.iter().map(|p| p.map(|p| p.0)).collect::<Vec<_>>();
        assert_eq!(values(&one.cpu_percent), [None, Some(100.0), Some(130.0)]);
        assert_eq!(one.processes.len(), 2);
        assert_eq!(
            values(&one.processes[0].cpu_percent),
            [None, Some(100.0), Some(100.0)]
        );
        assert_eq!(
            values(&one.processes[1].cpu_percent),
            [None, None, Some(30.0)]
        );
        let json = serde_json::to_value(&one).unwrap();
        assert_eq!(json["times"][0], "2023-11-14T22:13:20Z");
        assert_eq!(json["processes"][1]["cpu_percent"][2], 30.0);

        let all = all_series(&history, &[path.clone(), "/gone".into()], 100);
        assert_eq!(values(&all.containers[0].cpu_percent)[2], Some(130.0));
        assert_eq!(values(&all.containers[1].cpu_percent), [None, None, None]);
    }

    #[test]
    fn a_reused_pid_is_another_process() {
        let history = history(&[&[(1, 500, 400, 0)], &[(1, 1050, 10, 10)]]);
        let one = one_series(&history, &"/c".into(), 100);
        assert_eq!(
            one.processes[0].cpu_percent[1].map(|p| p.0),
            Some(10.0),
            "not 10 - 400"
        );
    }
}
