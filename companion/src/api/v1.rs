//! `GET /api/v1.0/<container>/processes`: the v1.0 contract, kept exactly for its clients.

use std::borrow::Cow;

use axum::{
    extract::State,
    http::{Uri, header},
    response::{IntoResponse, Response},
};
use percent_encoding::percent_decode_str;
use serde::{Serialize, Serializer};

use super::{ApiError, AppState};
use crate::{
    history::{History, Snapshot},
    model::ProcessSample,
    procfs::{Stat, Status},
};

pub const PREFIX: &str = "/api/v1.0/";
const SUFFIX: &str = "/processes";

/// The parsed query string of a processes request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub count: usize,
    pub interval: usize,
    pub sort: Sort,
    pub limit: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Ascending pid (no `sort`, or an empty one).
    Pid,
    /// `relativecpuusage`, descending.
    Cpu,
    /// `status.VmRSS`, descending.
    Mem,
}

impl Query {
    /// Parses a raw query string the way v1.0 clients expect: the first of repeated parameters
    /// counts, numbers parse like Go's `strconv.Atoi` (`+2` is 2), bad numbers fall back to
    /// their defaults, and only `sort` can make a request fail.
    pub fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut count = None;
        let mut interval = None;
        let mut sort = None;
        let mut limit = None;
        for pair in raw.unwrap_or("").split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match &*decode(key) {
                "count" => &mut count,
                "interval" => &mut interval,
                "sort" => &mut sort,
                "limit" => &mut limit,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(decode(value).into_owned());
            }
        }
        let positive = |value: Option<String>| {
            value
                .and_then(|v| v.parse::<i64>().ok())
                .filter(|&n| n >= 1)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        let sort = match sort.as_deref() {
            None | Some("") => Sort::Pid,
            Some("cpu") => Sort::Cpu,
            Some("mem") => Sort::Mem,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "unknown sort {other:?}: use sort=cpu or sort=mem"
                )));
            }
        };
        Ok(Query {
            count: positive(count).unwrap_or(1),
            interval: positive(interval).unwrap_or(1),
            sort,
            limit: positive(limit).filter(|_| sort != Sort::Pid),
        })
    }
}

/// Percent-decoding without turning `+` into a space, so `count=+2` means 2.
fn decode(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

/// The container named by a request path, or why there is none. `None` when the path is not a
/// processes path at all (404).
pub fn container_of_path(path: &str) -> Result<Option<String>, ApiError> {
    let path = decode(path);
    let Some(container) = path
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
    else {
        return Ok(None);
    };
    if let Some(bad) = container
        .split('/')
        .find(|segment| segment.is_empty() || *segment == "." || *segment == "..")
    {
        let reason = if bad.is_empty() {
            "an empty segment".to_owned()
        } else {
            format!("a {bad:?} segment")
        };
        return Err(ApiError::BadRequest(format!(
            "bad container path /{container}: it has {reason}"
        )));
    }
    Ok(Some(format!("/{container}")))
}

/// The handler: answers from the published history only, never from /proc.
pub async fn processes(State(state): State<AppState>, uri: Uri) -> Result<Response, ApiError> {
    let container = container_of_path(uri.path())?.ok_or(ApiError::NotFound)?;
    let query = Query::parse(uri.query())?;
    let published = state.shared.load();
    let body = render(&published.history, &container, &query)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// The JSON body for a query.
pub fn render(history: &History, container: &str, query: &Query) -> Result<Vec<u8>, ApiError> {
    let snapshots = history.snapshots(container, query.count, query.interval)?;
    let body: Vec<SnapshotJson<'_>> = snapshots
        .into_iter()
        .map(|snapshot| SnapshotJson::new(snapshot, query))
        .collect();
    let mut json = serde_json::to_vec(&body)
        .map_err(|err| ApiError::Unavailable(format!("encoding: {err}")))?;
    // Held until sent, and counted by its length against the budget of waiting answers.
    json.shrink_to_fit();
    Ok(json)
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    #[serde(serialize_with = "rfc3339_nanos")]
    timestamp: std::time::SystemTime,
    processes: Vec<ProcessJson<'a>>,
}

impl<'a> SnapshotJson<'a> {
    fn new(snapshot: Snapshot<'a>, query: &Query) -> Self {
        let mut processes = snapshot.processes;
        let by_pid = |p: &ProcessSample| p.info.pid;
        match query.sort {
            // Already by ascending pid.
            Sort::Pid => {}
            Sort::Cpu => processes.sort_by(|(a, a_share), (b, b_share)| {
                b_share.total_cmp(a_share).then(by_pid(a).cmp(&by_pid(b)))
            }),
            Sort::Mem => processes.sort_by(|(a, _), (b, _)| {
                b.rss_kb().cmp(&a.rss_kb()).then(by_pid(a).cmp(&by_pid(b)))
            }),
        }
        if let Some(limit) = query.limit {
            processes.truncate(limit);
        }
        SnapshotJson {
            timestamp: snapshot.sample.timestamp,
            processes: processes
                .into_iter()
                .map(|(p, share)| ProcessJson {
                    status: p.status.as_deref().unwrap_or(&UNREADABLE_STATUS),
                    stat: &p.stat,
                    cmdline: &p.info.cmdline,
                    relativecpuusage: Percent(share),
                    cgroup: &p.info.container,
                })
                .collect(),
        }
    }
}

/// Shown for a process whose status file could not be read: every field at its zero value.
static UNREADABLE_STATUS: std::sync::LazyLock<Status> = std::sync::LazyLock::new(Status::default);

/// One process, with the v1.0 keys in the v1.0 order.
#[derive(Serialize)]
struct ProcessJson<'a> {
    status: &'a Status,
    stat: &'a Stat,
    cmdline: &'a str,
    relativecpuusage: Percent,
    cgroup: &'a str,
}

/// A percentage printed like Go prints a float64: whole numbers without a fraction (`0`, `100`).
struct Percent(f64);

impl Serialize for Percent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = self.0;
        if value.fract() == 0.0 && (0.0..=1e15).contains(&value) {
            serializer.serialize_u64(value as u64)
        } else {
            serializer.serialize_f64(value)
        }
    }
}

fn rfc3339_nanos<S: Serializer>(time: &std::time::SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_nanos(*time))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> Query {
        Query::parse(Some(raw)).unwrap()
    }

    #[test]
    fn defaults() {
        assert_eq!(
            Query::parse(None).unwrap(),
            Query {
                count: 1,
                interval: 1,
                sort: Sort::Pid,
                limit: None
            }
        );
        assert_eq!(q(""), q("count=&interval=&sort=&limit="));
    }

    #[test]
    fn numbers_like_atoi() {
        assert_eq!(q("count=+2").count, 2);
        assert_eq!(q("count=%2B2").count, 2);
        assert_eq!(q("count=3&count=5").count, 3);
        for bad in [
            "0",
            "-1",
            "x",
            "1.5",
            " 2",
            "2 ",
            "99999999999999999999",
            "0x10",
            "1_0",
        ] {
            assert_eq!(q(&format!("count={bad}")).count, 1, "count={bad}");
            assert_eq!(q(&format!("interval={bad}")).interval, 1, "interval={bad}");
        }
        assert_eq!(q("interval=7").interval, 7);
    }

    #[test]
    fn sort_and_limit() {
        assert_eq!(q("sort=cpu").sort, Sort::Cpu);
        assert_eq!(q("sort=mem&limit=3").limit, Some(3));
        assert_eq!(q("sort=mem&limit=0").limit, None);
        assert_eq!(q("sort=mem&limit=-4").limit, None);
        assert_eq!(q("sort=mem&limit=x").limit, None);
        // Limit only applies with a sort.
        assert_eq!(q("limit=3").limit, None);
        assert_eq!(q("sort=cpu&sort=bogus").sort, Sort::Cpu);
        for bad in ["bogus", "CPU", "cpu ", "pid"] {
            let err = Query::parse(Some(&format!("sort={bad}"))).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("cpu") && text.contains("mem"), "{text}");
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn paths() {
        let ok = |path: &str| container_of_path(path).unwrap().unwrap();
        assert_eq!(ok("/api/v1.0/docker/abc/processes"), "/docker/abc");
        assert_eq!(
            ok("/api/v1.0/system.slice/docker-7dc0bad.scope/processes"),
            "/system.slice/docker-7dc0bad.scope"
        );
        assert_eq!(ok("/api/v1.0/a@b:c+d_e-f/processes"), "/a@b:c+d_e-f");
        assert_eq!(ok("/api/v1.0/docker%2Fabc/processes"), "/docker/abc");
        assert_eq!(ok("/api/v1.0/sp%20ace/processes"), "/sp ace");
        for not_found in [
            "/",
            "/api/v1.0/processes",
            "/api/v1.0/docker/abc",
            "/api/v1.0/docker/abc/processes/",
            "/api/v1.1/docker/abc/processes",
            "/api/v1.0/docker/abc/stats",
        ] {
            assert!(
                container_of_path(not_found).unwrap().is_none(),
                "{not_found}"
            );
        }
        for bad in [
            "/api/v1.0//processes",
            "/api/v1.0/docker//abc/processes",
            "/api/v1.0/docker/../etc/processes",
            "/api/v1.0/docker/%2e%2e/processes",
            "/api/v1.0/./processes",
            "/api/v1.0/docker/abc//processes",
        ] {
            let err = container_of_path(bad).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn percent_like_go() {
        let json = |v| serde_json::to_string(&Percent(v)).unwrap();
        assert_eq!(json(0.0), "0");
        assert_eq!(json(100.0), "100");
        assert_eq!(json(12.5), "12.5");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn paths_never_panic(path in "\\PC{0,200}") {
                let _ = container_of_path(&path);
                let _ = container_of_path(&format!("{PREFIX}{path}{SUFFIX}"));
            }

            #[test]
            fn queries_never_fail_but_for_sort(query in "\\PC{0,200}") {
                if let Err(err) = Query::parse(Some(&query)) {
                    prop_assert!(err.to_string().contains("sort"));
                }
            }

            #[test]
            fn container_paths_round_trip(segments in proptest::collection::vec("[a-zA-Z0-9_@:+-][a-zA-Z0-9_.@:+ -]{0,20}", 1..5)) {
                let container = segments.join("/");
                prop_assume!(!segments.iter().any(|s| s == "." || s == ".."));
                let encoded: String = percent_encoding::utf8_percent_encode(&container, percent_encoding::CONTROLS)
                    .to_string()
                    .replace(' ', "%20");
                let parsed = container_of_path(&format!("{PREFIX}{encoded}{SUFFIX}")).unwrap();
                prop_assert_eq!(parsed, Some(format!("/{container}")));
            }

            #[test]
            fn numbers_round_trip(count in 1i64..1000, interval in 1i64..1000, limit in 1i64..1000) {
                let query = Query::parse(Some(&format!("count={count}&interval=+{interval}&sort=mem&limit={limit}"))).unwrap();
                prop_assert_eq!(query, Query { count: count as usize, interval: interval as usize, sort: Sort::Mem, limit: Some(limit as usize) });
            }
        }
    }
}
