//! The tables of the report: one row builder per table, their headers, and the table itself
//! (aligned for a terminal, or Markdown); the original Go service's reference figures.

use std::{fmt::Write as _, time::Duration};

use super::super::{
    Settings, Tracker,
    peer::PeerResult,
    results::{PointResult, RunResult},
};

/// The original Go service (v0.1.4) on this machine kind, from the issue.
pub struct Reference {
    pub processes: usize,
    pub cpu_percent: f64,
    pub rss_mb: f64,
    pub us_per_process: Option<f64>,
}

pub const REFERENCE: [Reference; 2] = [
    Reference {
        processes: 1000,
        cpu_percent: 7.0,
        rss_mb: 541.0,
        us_per_process: None,
    },
    Reference {
        processes: 5000,
        cpu_percent: 36.0,
        rss_mb: 2600.0,
        us_per_process: Some(70.0),
    },
];

pub(super) fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub(super) fn n(v: usize) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn ok(pass: bool) -> &'static str {
    if pass { "✓" } else { "✗" }
}

/// A table, aligned for a terminal or as Markdown.
/// The first `left` columns are left-aligned, the others right-aligned.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>], markdown: bool, left: usize) -> String {
    let mut out = String::new();
    if markdown {
        let _ = writeln!(out, "| {} |", headers.join(" | "));
        let _ = writeln!(
            out,
            "|{}",
            headers.iter().map(|_| "---|").collect::<String>()
        );
        for row in rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        return out;
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(" ");
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i] - cell.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if i < left {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(headers.to_vec()));
    for row in rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One line per run, printed as the benchmark goes.
pub fn run_line(point: &PointResult, run: &RunResult) -> String {
    let w = &run.window;
    let f = &point.floor;
    let mut s = format!(
        "{:<6} {:>6.2} µs/process·sample ({:.0} µs/sample, {:.1} % of a core, {:.0} tracked), \
         RSS {:.1} MB (peak {:.1}), {} slipped",
        run.tracker.to_string(),
        w.us_per_process(),
        w.us_per_sample(),
        w.cpu_percent(),
        w.tracked,
        mb(w.memory.rss_kb),
        mb(w.memory.hwm_kb),
        w.slipped
    );
    // The base has no floor (no container processes).
    if f.rounds() > 0 {
        let _ = write!(
            s,
            "; ×{:.2} cadence floor, ×{:.2} open/read/close floor, ×{:.2} procfs floor",
            w.us_per_process() / f.cadence_us().max(1e-9),
            w.us_per_process() / f.open_read_close_us().max(1e-9),
            w.us_per_sample() / f.procfs_round_us().max(1e-9)
        );
    }
    for load in &run.load {
        let _ = write!(
            s,
            "; load ({}) {:.0} req/s p99 {:.1} ms, {} errors, {} slipped",
            mode(&load.result),
            load.result.rps(),
            load.result.p99_ms,
            load.result.errors(),
            load.slipped()
        );
    }
    if let Some(probe) = &run.probe {
        let _ = write!(
            s,
            "; exec-to-visible median {:.0} ms max {:.0} ms",
            probe.median_ms(),
            probe.max_ms()
        );
    }
    s
}

pub(super) fn cost_rows(point: &PointResult) -> Vec<Vec<String>> {
    let f = &point.floor;
    point
        .runs
        .iter()
        .map(|r| {
            let w = &r.window;
            vec![
                r.tracker.to_string(),
                format!("{:.0} ({})", w.tracked, w.containers),
                format!("{:.2}", w.cpu_percent()),
                format!("{:.0}", w.us_per_sample()),
                format!("{:.2}", w.us_per_process()),
                format!(
                    "{:.2}",
                    w.us_per_process() / f.open_read_close_us().max(1e-9)
                ),
                format!("{:.2}", w.us_per_process() / f.design_us().max(1e-9)),
                format!("{:.2}", w.us_per_process() / f.cadence_us().max(1e-9)),
                format!("{:.2}", w.us_per_sample() / f.procfs_round_us().max(1e-9)),
                w.sampler_thread_secs.map_or("–".into(), |s| {
                    format!("{:.0} %", 100.0 * s / w.cpu_secs.max(1e-9))
                }),
            ]
        })
        .collect()
}

pub(super) const COST_HEADERS: [&str; 10] = [
    "tracker",
    "tracked (containers)",
    "CPU % core",
    "µs/sample",
    "µs/proc·sample",
    "× o/r/c floor",
    "× design floor",
    "× cadence floor",
    "× procfs floor",
    "sampler thread",
];

pub(super) fn memory_rows(point: &PointResult, period: Duration) -> Vec<Vec<String>> {
    point
        .runs
        .iter()
        .map(|r| {
            let w = &r.window;
            vec![
                r.tracker.to_string(),
                format!(
                    "{:.1} → {:.1}",
                    mb(w.memory_begin.rss_kb),
                    mb(w.memory.rss_kb)
                ),
                format!("{:.1}", mb(w.memory.hwm_kb)),
                format!("{:.1}", mb(r.memory_end.rss_kb)),
                format!(
                    "{:.1} / {:.1}",
                    1e3 * w.watch.mean_last_sample(),
                    1e3 * w.watch.max_last_sample
                ),
                format!("{:.2}", w.watch.max_age / period.as_secs_f64()),
                format!("{} / {}", w.samples, w.slipped),
                w.open_descriptors.to_string(),
                format!("{} / {}", w.events, w.events_lost),
                format!("{:.1} / {:.0}", r.startup_secs, r.warmup_secs),
            ]
        })
        .collect()
}

pub(super) const MEMORY_HEADERS: [&str; 10] = [
    "tracker",
    "RSS MB (window start → end)",
    "peak MB",
    "RSS MB at end",
    "sample ms mean/max",
    "max age (periods)",
    "samples / slipped",
    "open fds",
    "events / lost",
    "start-up / warm-up s",
];

pub(super) fn floor_line(point: &PointResult) -> String {
    let f = &point.floor;
    format!(
        "floor (median of {} rounds, CPU time, over the benchmark's {} container processes): \
         stat+status open/read/close {:.2} µs/process \
         ({:.2} µs wall); pread on open fds {:.2} µs/process ({} processes within the fd budget); \
         service design (pread within budget, open/read/close beyond) {:.2} µs/process; procfs \
         tracker (readdir + cgroup of {} processes + stat/status of {} in containers) {:.0} µs/round \
         = {:.2} µs per container process; cadence floor (the design's reads of the {} processes, \
         one round every {}, median of {} rounds) {:.2} µs/process",
        f.rounds(),
        n(f.processes),
        f.open_read_close_us(),
        f.open_read_close_wall_us(),
        f.pread_us(),
        n(f.pread_processes),
        f.design_us(),
        n(f.procfs_listed),
        n(f.procfs_in_containers),
        f.procfs_round_us(),
        f.procfs_us_per_container_process(),
        n(f.processes),
        humantime::format_duration(f.cadence_gap),
        f.cadence_rounds(),
        f.cadence_us()
    )
}

/// One line for the peer's measurement, printed as the benchmark goes.
pub fn peer_line(point: &PointResult, peer: &PeerResult) -> String {
    format!(
        "{:.0} µs/scrape over {} scrapes ({:.2} µs per process listed, {:.2} per container \
         process), {} processes listed, scrape {:.0} ms mean / {:.0} max, RSS {:.1} MB",
        peer.us_per_scrape(),
        peer.scrapes,
        peer.us_per_process(),
        peer.us_per_scrape() / point.shape.container_processes().max(1) as f64,
        n(peer.groups),
        peer.mean_scrape_ms,
        peer.max_scrape_ms,
        mb(peer.rss_kb)
    )
}

/// One line for a `--sampler-threads` run, printed as the benchmark goes.
pub fn threads_line(threads: usize, run: &RunResult) -> String {
    let w = &run.window;
    format!(
        "--sampler-threads {threads}: sample {:.1} ms mean / {:.1} max, {:.0} µs CPU/sample, \
         {} threads used",
        1e3 * w.watch.mean_last_sample(),
        1e3 * w.watch.max_last_sample,
        w.us_per_sample(),
        threads_used(run)
    )
}

/// The point past the default scenario where the eBPF service ran under paced API load (the
/// largest shape).
pub(super) fn load_point(results: &[PointResult]) -> Option<&PointResult> {
    results
        .iter()
        .rfind(|p| !p.full && p.runs.iter().any(|r| !r.load.is_empty()))
}

/// A reason on one line: a service's failure carries its log's tail; its first line says what
/// happened, the log's first error line why.
pub(super) fn first_line(why: &str) -> String {
    let mut lines = why.lines().map(str::trim);
    let first = lines.next().unwrap_or_default().trim_end_matches(':');
    match lines.find(|l| l.starts_with("error")) {
        Some(error) => format!("{first}: {error}"),
        None => first.to_string(),
    }
}

/// The threads the newest sample used, as /healthz said at the end of the window.
pub(super) fn threads_used(run: &RunResult) -> String {
    match run.window.watch.last.as_ref().map(|h| h.sampler_threads) {
        Some(t) if t > 0 => t.to_string(),
        _ => "–".into(),
    }
}

/// The service's base RSS (KB): the run of `tracker` on the host without container processes.
pub(super) fn base_rss_kb(results: &[PointResult], tracker: Tracker) -> Option<u64> {
    let base = results.iter().find(|p| p.is_base())?;
    Some(base.run(tracker)?.window.memory.rss_kb)
}

/// KB of RSS per container process above the base.
pub(super) fn kb_per_process(
    results: &[PointResult],
    point: &PointResult,
    run: &RunResult,
) -> Option<f64> {
    let base = base_rss_kb(results, run.tracker)?;
    let processes = point.shape.container_processes().max(1) as f64;
    Some((run.window.memory.rss_kb as f64 - base as f64) / processes)
}

/// The eBPF (or `tracker`) cost per process at 5,000 container processes, the no-cliff reference.
pub(super) fn at_5000(points: &[&PointResult], tracker: Tracker) -> Option<f64> {
    let p = points
        .iter()
        .find(|p| p.shape.container_processes() == 5000)?;
    Some(p.run(tracker)?.window.us_per_process())
}

/// The container sweep, one row per point and tracker.
pub(super) fn container_sweep_rows(
    results: &[PointResult],
    points: &[&PointResult],
    trackers: &[Tracker],
    period: Duration,
) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for &t in trackers {
        let reference = at_5000(points, t);
        let mut previous: Option<(usize, u64)> = None;
        for p in points {
            let Some(r) = p.run(t) else { continue };
            let w = &r.window;
            let procs = p.shape.container_processes();
            let slope = previous.map_or("–".to_string(), |(n0, rss0)| {
                format!(
                    "{:.2}",
                    (w.memory.rss_kb as f64 - rss0 as f64) / (procs as f64 - n0 as f64).max(1.0)
                )
            });
            previous = Some((procs, w.memory.rss_kb));
            let max_ms = 1e3 * w.watch.max_last_sample;
            rows.push(vec![
                n(procs),
                n(p.shape.containers),
                t.to_string(),
                format!("{:.0}", w.us_per_sample()),
                format!("{:.2}", w.us_per_process()),
                format!("{:.2}", w.us_per_process() / p.floor.cadence_us().max(1e-9)),
                format!(
                    "{:.2}",
                    w.us_per_process() / p.floor.cadence_with_cgroups_us().max(1e-9)
                ),
                format!("{:.2}", w.us_per_process() / p.floor.design_us().max(1e-9)),
                reference.map_or("–".into(), |r| format!("{:.2}", w.us_per_process() / r)),
                format!("{:.1} / {:.1}", 1e3 * w.watch.mean_last_sample(), max_ms),
                ok(max_ms <= period.as_secs_f64() * 1e3 / 2.0).to_string(),
                format!("{:.1}", mb(w.memory.rss_kb)),
                kb_per_process(results, p, r).map_or("–".into(), |k| format!("{k:.2}")),
                slope,
            ]);
        }
    }
    rows
}

pub(super) const CONTAINER_SWEEP_HEADERS: [&str; 14] = [
    "container procs",
    "containers",
    "tracker",
    "µs/sample",
    "µs/proc·sample",
    "× cadence floor",
    "× cadence floor with cgroup files",
    "× back-to-back floor",
    "µs/proc vs 5,000",
    "sample ms mean / max",
    "max ≤ ½ period",
    "RSS MB",
    "KB/proc above base",
    "slope KB/proc",
];

/// The floors and the peer at each point of the container sweep.
pub(super) fn floor_peer_rows(points: &[&PointResult]) -> Vec<Vec<String>> {
    points
        .iter()
        .map(|p| {
            let f = &p.floor;
            let mut row = vec![
                n(p.shape.container_processes()),
                n(f.procfs_listed),
                format!("{:.2}", f.design_us()),
                format!("{:.2}", f.cadence_us()),
                format!("{:.2}", f.cadence_with_cgroups_us()),
                format!("{:.0}", f.procfs_round_us()),
            ];
            match &p.peer {
                Some(Ok(peer)) => {
                    row.push(format!("{:.0}", peer.us_per_scrape()));
                    row.push(format!("{:.2}", peer.us_per_process()));
                    row.push(format!(
                        "{:.2}",
                        peer.us_per_scrape() / p.shape.container_processes().max(1) as f64
                    ));
                    row.push(format!("{} ({})", n(peer.groups), peer.scrapes));
                    row.push(format!(
                        "{:.0} / {:.0}",
                        peer.mean_scrape_ms, peer.max_scrape_ms
                    ));
                    row.push(format!("{:.1}", mb(peer.rss_kb)));
                }
                _ => row.extend(std::iter::repeat_n("–".to_string(), 6)),
            }
            row
        })
        .collect()
}

pub(super) const FLOOR_PEER_HEADERS: [&str; 12] = [
    "container procs",
    "host procs listed",
    "back-to-back floor µs/proc",
    "cadence floor µs/proc",
    "cadence floor with cgroup files µs/proc",
    "procfs floor µs/round",
    "peer µs/scrape",
    "peer µs/listed proc·scrape",
    "peer µs/container proc·scrape",
    "peer processes listed (scrapes)",
    "peer scrape ms mean / max",
    "peer RSS MB",
];

/// The `--sampler-threads` runs, with the speed-up over the first.
pub(super) fn threads_rows(point: &PointResult) -> Vec<Vec<String>> {
    let first = point.threads.iter().find_map(|(_, r)| r.as_ref().ok());
    point
        .threads
        .iter()
        .map(|(threads, outcome)| match outcome {
            Ok(r) => {
                let w = &r.window;
                let (speedup, cpu) = first.map_or(("–".into(), "–".into()), |f| {
                    (
                        format!(
                            "{:.2}",
                            f.window.watch.mean_last_sample()
                                / w.watch.mean_last_sample().max(1e-9)
                        ),
                        format!(
                            "{:.2}",
                            w.us_per_sample() / f.window.us_per_sample().max(1e-9)
                        ),
                    )
                });
                vec![
                    threads.to_string(),
                    threads_used(r),
                    format!(
                        "{:.1} / {:.1}",
                        1e3 * w.watch.mean_last_sample(),
                        1e3 * w.watch.max_last_sample
                    ),
                    format!("{:.0}", w.us_per_sample()),
                    format!("{:.2}", w.us_per_process()),
                    speedup,
                    cpu,
                ]
            }
            Err(why) => {
                let mut row = vec![
                    threads.to_string(),
                    format!("not measured: {}", first_line(why)),
                ];
                row.extend(std::iter::repeat_n("–".to_string(), 5));
                row
            }
        })
        .collect()
}

pub(super) const THREADS_HEADERS: [&str; 7] = [
    "--sampler-threads",
    "threads used",
    "sample ms mean / max",
    "CPU µs/sample",
    "CPU µs/proc·sample",
    "speed-up (mean duration)",
    "CPU × first",
];

/// "max" for back-to-back clients, else the paced rate.
pub(super) fn mode(result: &super::super::load::LoadResult) -> String {
    match result.rate {
        Some(rate) => format!("paced {rate:.0}/s"),
        None => "max".into(),
    }
}

pub(super) fn load_rows(point: &PointResult, period: Duration) -> Vec<Vec<String>> {
    point
        .runs
        .iter()
        .flat_map(|r| r.load.iter().map(move |l| (r, l)))
        .map(|(r, l)| {
            let idle_cpu = r.window.cpu_secs / r.window.wall_secs.max(1e-9) * l.result.secs;
            let per_req = 1e6 * (l.cpu_secs - idle_cpu).max(0.0) / l.result.requests.max(1) as f64;
            vec![
                r.tracker.to_string(),
                mode(&l.result),
                l.result.clients.to_string(),
                format!("{:.0}", l.result.rps()),
                format!("{:.2}", l.result.p50_ms),
                format!("{:.2}", l.result.p90_ms),
                format!("{:.2}", l.result.p99_ms),
                format!("{:.1}", l.result.max_ms),
                format!(
                    "{:.2} / {:.2}",
                    l.result.check_p99_ms, l.result.history_p99_ms
                ),
                format!(
                    "{:.1}",
                    l.result.bytes as f64 / 1024.0 / l.result.requests.max(1) as f64
                ),
                l.result.errors().to_string(),
                l.slipped().to_string(),
                format!("{:.2}", l.watch.max_age / period.as_secs_f64()),
                format!("{:.1}", 1e3 * l.watch.max_last_sample),
                format!("{:.0}", 100.0 * l.cpu_secs / l.result.secs.max(1e-9)),
                format!("{per_req:.0}"),
            ]
        })
        .collect()
}

pub(super) const LOAD_HEADERS: [&str; 16] = [
    "tracker",
    "load",
    "clients",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "max ms",
    "p99 check/history ms",
    "mean body KiB",
    "errors",
    "slipped",
    "max age (periods)",
    "max sample ms",
    "service CPU %",
    "service µs/req",
];

pub(super) fn probe_rows(point: &PointResult) -> Vec<Vec<String>> {
    point
        .runs
        .iter()
        .filter_map(|r| {
            let p = r.probe.as_ref()?;
            Some(vec![
                r.tracker.to_string(),
                p.trials.to_string(),
                format!("{:.0}", p.median_ms()),
                format!("{:.0}", p.max_ms()),
                p.missed.to_string(),
            ])
        })
        .collect()
}

pub(super) const PROBE_HEADERS: [&str; 5] = ["tracker", "trials", "median ms", "max ms", "missed"];

/// Sweep rows: one per point of a sweep (the default point included), sorted by `key`.
pub(super) fn sweep_rows(points: &[&PointResult], trackers: &[Tracker]) -> Vec<Vec<String>> {
    points
        .iter()
        .map(|p| {
            let mut row = vec![
                n(p.shape.container_processes()),
                n(p.shape.hosts),
                format!("{:.2}", p.floor.design_us()),
                format!("{:.0}", p.floor.procfs_round_us()),
            ];
            for &t in trackers {
                match p.run(t) {
                    Some(r) => {
                        let w = &r.window;
                        row.push(format!("{:.0}", w.us_per_sample()));
                        row.push(format!("{:.2}", w.us_per_process()));
                        row.push(format!("{:.2}", w.cpu_percent()));
                        row.push(format!("{:.1}", mb(w.memory.rss_kb)));
                        row.push(format!("{:.1}", 1e3 * w.watch.max_last_sample));
                    }
                    None => row.extend(std::iter::repeat_n("–".to_string(), 5)),
                }
            }
            row
        })
        .collect()
}

pub(super) fn sweep_headers(trackers: &[Tracker]) -> Vec<String> {
    let mut h: Vec<String> = vec![
        "container procs".into(),
        "host procs".into(),
        "design floor µs/proc".into(),
        "procfs floor µs/round".into(),
    ];
    for t in trackers {
        h.push(format!("{t} µs/sample"));
        h.push(format!("{t} µs/proc"));
        h.push(format!("{t} CPU %"));
        h.push(format!("{t} RSS MB"));
        h.push(format!("{t} max sample ms"));
    }
    h
}

/// The sweep points along one axis: same shape as the default except `hosts`, or except the
/// container processes (whose containers hold fewer processes at the small end, see
/// `Settings::container_shape`). The base (no container processes) is on neither.
pub(super) fn sweep_points<'a>(
    results: &'a [PointResult],
    settings: &Settings,
    hosts_axis: bool,
) -> Vec<&'a PointResult> {
    let d = settings.shape;
    let mut points: Vec<&PointResult> = results
        .iter()
        .filter(|p| !p.is_base())
        .filter(|p| {
            if hosts_axis {
                p.shape.containers == d.containers && p.shape.per_container == d.per_container
            } else {
                p.shape.hosts == d.hosts
            }
        })
        .collect();
    if hosts_axis {
        points.sort_by_key(|p| p.shape.hosts);
    } else {
        points.sort_by_key(|p| p.shape.container_processes());
    }
    points
}

pub(super) fn reference_rows(results: &[PointResult]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for reference in &REFERENCE {
        let point = results
            .iter()
            .filter(|p| p.shape.container_processes() == reference.processes)
            .max_by_key(|p| p.full);
        let mut row = vec![
            n(reference.processes),
            format!("{:.0} %", reference.cpu_percent),
            reference.us_per_process.map_or(
                "~".to_string()
                    + &format!(
                        "{:.0}",
                        reference.cpu_percent * 1e4 / reference.processes as f64
                    ),
                |u| format!("~{u:.0}"),
            ),
            format!("{:.0}", reference.rss_mb),
        ];
        for t in [Tracker::Ebpf, Tracker::Procfs] {
            match point.and_then(|p| p.run(t)) {
                Some(r) => {
                    let w = &r.window;
                    row.push(format!(
                        "{:.2} % / {:.2} µs / {:.1} MB ({:.0}× less CPU, {:.0}× less RSS)",
                        w.cpu_percent(),
                        w.us_per_process(),
                        mb(w.memory.rss_kb),
                        reference.cpu_percent / w.cpu_percent().max(1e-9),
                        reference.rss_mb / mb(w.memory.rss_kb).max(1e-9)
                    ));
                }
                None => row.push("–".into()),
            }
        }
        rows.push(row);
    }
    rows
}

pub(super) const REFERENCE_HEADERS: [&str; 6] = [
    "container procs",
    "Go: CPU % core",
    "Go: µs/proc·sample",
    "Go: RSS MB",
    "ebpf: CPU / µs per proc / RSS",
    "procfs: CPU / µs per proc / RSS",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_on_one_line() {
        let why = "the service exited (exit code 2); its log x.log:\nerror: unexpected argument\n\nUsage: …";
        assert_eq!(
            first_line(why),
            "the service exited (exit code 2); its log x.log: error: unexpected argument"
        );
        assert_eq!(first_line("plain"), "plain");
    }

    #[test]
    fn thousands() {
        assert_eq!(n(0), "0");
        assert_eq!(n(999), "999");
        assert_eq!(n(1000), "1,000");
        assert_eq!(n(1234567), "1,234,567");
    }

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]], false, 1);
        assert_eq!(t, " a    bb\n xyz   1\n");
        let m = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]], true, 1);
        assert_eq!(m, "| a | bb |\n|---|---|\n| xyz | 1 |\n");
    }
}
