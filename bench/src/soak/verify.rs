//! The end-of-soak check that the tracked set equals the truth: for each of the soak's live
//! containers, the PIDs the v1.0 API lists equal the PIDs in its `cgroup.procs` that /proc shows
//! with a non-empty command line and a VmRSS above 0 (what the specification lists); removed
//! containers are not listed any more; /api/v2/containers agrees; /healthz `tracked_processes`
//! lies between the host's listed container processes and all of them, by a /proc scan made
//! around it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use testbed::{
    CgroupMount,
    proc::{all_pids, is_listable, listable_in},
};

use crate::kit::{
    cleanup,
    http::Conn,
    service::{self, Health},
};

#[derive(Clone, Debug, Default)]
pub struct Verification {
    /// Rounds run (a round whose two /proc reads differ, or that finds a mismatch, is retried).
    pub rounds: usize,
    pub containers: usize,
    pub processes_expected: usize,
    pub processes_listed: usize,
    /// Differences in the last round, one line per container.
    pub mismatches: Vec<String>,
    /// Differences of earlier rounds that a later one no longer showed.
    pub transient: Vec<String>,
    pub removed_checked: usize,
    /// Removed containers the API still lists (v1.0 200, or in /api/v2/containers).
    pub removed_listed: Vec<String>,
    /// Disagreements of /api/v2/containers with the scan (missing, extra, process counts).
    pub v2_mismatches: Vec<String>,
    /// Host-wide: /healthz tracked_processes and the bounds of the scans around it.
    pub tracked: Option<TrackedCheck>,
    pub health: Option<Health>,
}

#[derive(Clone, Debug, Default)]
pub struct TrackedCheck {
    pub tracked_processes: u64,
    /// Container processes of the whole host the API would list (fewest of the two scans).
    pub listed_low: usize,
    /// All processes in a container, listed or not (most of the two scans).
    pub all_high: usize,
    pub attempts: usize,
    /// Processes listed in the soak's own containers by the API.
    pub soak_listed: usize,
}

impl TrackedCheck {
    pub fn consistent(&self) -> bool {
        let t = self.tracked_processes as usize;
        t >= self.listed_low && t <= self.all_high && t >= self.soak_listed
    }
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
            && self.removed_listed.is_empty()
            && self.v2_mismatches.is_empty()
            && self.tracked.as_ref().is_some_and(TrackedCheck::consistent)
    }
}

/// Waits until the service has published `n` samples after now.
async fn samples_after(conn: &mut Conn, n: u64, period: Duration) -> anyhow::Result<Health> {
    let first = service::health(conn).await?;
    let timeout = period * (n as u32 * 4 + 20);
    let deadline = Instant::now() + timeout;
    loop {
        cleanup::check()?;
        tokio::time::sleep(period / 4).await;
        let h = service::health(conn).await?;
        if h.samples_taken >= first.samples_taken + n {
            return Ok(h);
        }
        if Instant::now() > deadline {
            bail!("the service published fewer than {n} samples in {timeout:?}");
        }
    }
}

/// The pids of the newest snapshot of a container; empty for a 500 "not found".
async fn api_pids(conn: &mut Conn, name: &str) -> anyhow::Result<Option<BTreeSet<u32>>> {
    let path = format!("/api/v1.0/{}/processes", name.trim_start_matches('/'));
    let (status, body) = conn.get_within(&path, Duration::from_secs(15)).await?;
    match status.as_u16() {
        200 => {
            let v: serde_json::Value =
                serde_json::from_slice(&body).with_context(|| format!("parsing {path}"))?;
            let newest = v
                .as_array()
                .and_then(|a| a.last())
                .context("an empty answer")?;
            let pids = newest["processes"]
                .as_array()
                .context("no processes array")?
                .iter()
                .filter_map(|p| p["status"]["Pid"].as_u64())
                .map(|p| p as u32)
                .collect();
            Ok(Some(pids))
        }
        500 if body == format!("Container {name} not found").as_bytes() => Ok(None),
        _ => bail!(
            "{status} for {path}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        ),
    }
}

/// The whole host: (container processes listed, all container processes) by /proc.
fn host_scan(mount: &CgroupMount) -> (usize, usize) {
    let (mut listed_n, mut all) = (0, 0);
    for pid in all_pids() {
        if mount
            .cgroup_of(pid)
            .is_some_and(|c| c != "/" && !c.is_empty())
        {
            all += 1;
            if is_listable(pid) {
                listed_n += 1;
            }
        }
    }
    (listed_n, all)
}

pub struct VerifyInput<'a> {
    pub mount: &'a CgroupMount,
    pub base_name: String,
    pub live: Vec<(Arc<str>, PathBuf)>,
    pub removed: Vec<Arc<str>>,
    pub period: Duration,
}

/// Runs the check: up to `rounds` rounds, each after fresh samples.
pub async fn run(
    conn: &mut Conn,
    input: VerifyInput<'_>,
    rounds: usize,
) -> anyhow::Result<Verification> {
    let mut v = Verification {
        containers: input.live.len(),
        ..Verification::default()
    };
    let mut earlier: Vec<String> = Vec::new();
    for round in 1..=rounds {
        v.rounds = round;
        let before: BTreeMap<Arc<str>, BTreeSet<u32>> = input
            .live
            .iter()
            .map(|(name, dir)| (name.clone(), listable_in(dir)))
            .collect();
        // Two samples after the read: the newest sample began after it.
        samples_after(conn, 2, input.period).await?;
        let mut listed_now: BTreeMap<Arc<str>, BTreeSet<u32>> = BTreeMap::new();
        for (name, _) in &input.live {
            let pids = api_pids(conn, name).await?.unwrap_or_default();
            listed_now.insert(name.clone(), pids);
        }
        let after: BTreeMap<Arc<str>, BTreeSet<u32>> = input
            .live
            .iter()
            .map(|(name, dir)| (name.clone(), listable_in(dir)))
            .collect();
        if before != after {
            earlier.push(format!(
                "round {round}: the cgroups changed while the API was read; retried"
            ));
            continue;
        }
        v.mismatches.clear();
        v.processes_expected = after.values().map(BTreeSet::len).sum();
        v.processes_listed = listed_now.values().map(BTreeSet::len).sum();
        for (name, want) in &after {
            let got = &listed_now[name];
            if want != got {
                let missing: Vec<u32> = want.difference(got).copied().collect();
                let extra: Vec<u32> = got.difference(want).copied().collect();
                v.mismatches.push(format!(
                    "{name}: /proc has {want:?}, the API lists {got:?} (missing {missing:?}, extra {extra:?})"
                ));
            }
        }
        if v.mismatches.is_empty() {
            break;
        }
        earlier.extend(v.mismatches.iter().map(|m| format!("round {round}: {m}")));
    }
    if v.mismatches.is_empty() {
        v.transient = earlier;
    }

    // Removed containers: not listed by v1.0, not in /api/v2/containers.
    for name in &input.removed {
        v.removed_checked += 1;
        if let Some(pids) = api_pids(conn, name).await? {
            v.removed_listed
                .push(format!("{name}: removed, yet v1.0 lists {pids:?}"));
        }
    }
    let (status, body) = conn
        .get_within("/api/v2/containers", Duration::from_secs(15))
        .await?;
    if status.as_u16() != 200 {
        bail!("/api/v2/containers: {status}");
    }
    let listed_v2: serde_json::Value =
        serde_json::from_slice(&body).context("parsing /api/v2/containers")?;
    let mut v2: BTreeMap<String, u64> = BTreeMap::new();
    for c in listed_v2
        .as_array()
        .context("/api/v2/containers: not an array")?
    {
        let path = c["path"].as_str().unwrap_or_default();
        if path.starts_with(&input.base_name) {
            v2.insert(path.to_string(), c["processes"].as_u64().unwrap_or(0));
        }
    }
    let truth: BTreeMap<String, usize> = input
        .live
        .iter()
        .map(|(name, dir)| (name.to_string(), listable_in(dir).len()))
        .filter(|(_, n)| *n > 0)
        .collect();
    for (name, n) in &truth {
        match v2.get(name) {
            Some(&listed) if listed as usize == *n => {}
            Some(listed) => v.v2_mismatches.push(format!(
                "{name}: {listed} processes in /api/v2/containers, {n} in /proc"
            )),
            None => v.v2_mismatches.push(format!(
                "{name}: {n} processes in /proc, missing from /api/v2/containers"
            )),
        }
    }
    let removed: BTreeSet<&str> = input.removed.iter().map(|n| &**n).collect();
    for name in v2.keys() {
        if removed.contains(name.as_str()) {
            v.removed_listed
                .push(format!("{name}: removed, yet in /api/v2/containers"));
        } else if !truth.contains_key(name) {
            v.v2_mismatches.push(format!(
                "{name}: in /api/v2/containers without a process in /proc"
            ));
        }
    }

    // Host-wide: tracked_processes between two scans. Other tests may run on the machine, so a
    // few attempts.
    let soak_listed = v.processes_listed;
    let mut check = TrackedCheck::default();
    for attempt in 1..=5 {
        let first = host_scan(input.mount);
        let h = samples_after(conn, 2, input.period).await?;
        let second = host_scan(input.mount);
        check = TrackedCheck {
            tracked_processes: h.tracked_processes,
            listed_low: first.0.min(second.0),
            all_high: first.1.max(second.1),
            attempts: attempt,
            soak_listed,
        };
        v.health = Some(h);
        if check.consistent() {
            break;
        }
    }
    v.tracked = Some(check);
    Ok(v)
}
