//! The results as text (stdout) and Markdown (BENCHMARKS.md): machine, conditions, the floor,
//! both trackers, the sweeps, the original Go service's reference figures and the targets.

use std::{fmt::Write as _, fs, process::Command, time::Duration};

use super::{LoadOutcome, PointResult, RunResult, Settings, Sweep, Tracker, workspace_root};

pub const BENCHMARKS_HEADER: &str = "\
# Benchmarks

Results of the density benchmark (`cargo xtask bench`, i.e. `companion-bench bench`), newest at
the end. Each entry says when, on what machine and under which conditions it was measured.

How to read them: the service's CPU is utime+stime of its process over a window of whole
samples (from just after one sample was published to just after another; /healthz polls of the
benchmark included, about 1 %), divided by the samples taken (µs per sample) and by the container
processes it tracked (µs per container process per sample; on a shared machine that includes
other containers than the benchmark's). The floor is the bare cost of the same /proc reads made
by the benchmark itself in the same run, with plain system calls and no parsing (median of
several rounds, CPU time): open/read/close of stat+status; pread on descriptors kept open; the
service's design (pread within its descriptor budget, open/read/close beyond); and the procfs
tracker's (readdir /proc + cgroup of every process + stat/status of container processes).
Ratios to the floor hold on a noisy machine, absolute figures do not. RSS is VmRSS with the
history full; peak is VmHWM. The Go figures are the original service's, from the issue.
";

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

pub struct Machine {
    pub date: String,
    pub kernel: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub load_at_start: String,
    pub load_at_end: String,
    pub revision: String,
}

fn loadavg() -> String {
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| "unknown CPU".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            date: jiff::Timestamp::now()
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_kb / 1024.0 / 1024.0,
            load_at_start: loadavg(),
            load_at_end: String::new(),
            revision: revision(),
        }
    }

    /// Notes the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_at_end = loadavg();
    }
}

fn revision() -> String {
    let root = workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{rev} + local changes")
            } else {
                rev
            }
        }
        None => "unknown".into(),
    }
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn n(v: usize) -> String {
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

fn ok(pass: bool) -> &'static str {
    if pass { "✓" } else { "✗" }
}

/// A table, aligned for a terminal or as Markdown.
/// The first `left` columns are left-aligned, the others right-aligned.
fn table(headers: &[&str], rows: &[Vec<String>], markdown: bool, left: usize) -> String {
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
    let mut s = format!(
        "{:<6} {:>6.2} µs/process·sample ({:.0} µs/sample, {:.1} % of a core, {:.0} tracked), \
         RSS {:.1} MB (peak {:.1}), ×{:.2} open/read/close floor, ×{:.2} procfs floor, {} slipped",
        run.tracker.to_string(),
        w.us_per_process(),
        w.us_per_sample(),
        w.cpu_percent(),
        w.tracked,
        mb(w.memory.rss_kb),
        mb(w.memory.hwm_kb),
        w.us_per_process() / point.floor.open_read_close_us().max(1e-9),
        w.us_per_sample() / point.floor.procfs_round_us().max(1e-9),
        w.slipped
    );
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

fn cost_rows(point: &PointResult) -> Vec<Vec<String>> {
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
                format!("{:.2}", w.us_per_sample() / f.procfs_round_us().max(1e-9)),
                w.sampler_thread_secs.map_or("–".into(), |s| {
                    format!("{:.0} %", 100.0 * s / w.cpu_secs.max(1e-9))
                }),
            ]
        })
        .collect()
}

const COST_HEADERS: [&str; 9] = [
    "tracker",
    "tracked (containers)",
    "CPU % core",
    "µs/sample",
    "µs/proc·sample",
    "× o/r/c floor",
    "× design floor",
    "× procfs floor",
    "sampler thread",
];

fn memory_rows(point: &PointResult, period: Duration) -> Vec<Vec<String>> {
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

const MEMORY_HEADERS: [&str; 10] = [
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

fn floor_line(point: &PointResult) -> String {
    let f = &point.floor;
    format!(
        "floor (median of {} rounds, CPU time, over the benchmark's {} container processes): \
         stat+status open/read/close {:.2} µs/process \
         ({:.2} µs wall); pread on open fds {:.2} µs/process ({} processes within the fd budget); \
         service design (pread within budget, open/read/close beyond) {:.2} µs/process; procfs \
         tracker (readdir + cgroup of {} processes + stat/status of {} in containers) {:.0} µs/round \
         = {:.2} µs per container process",
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
        f.procfs_us_per_container_process()
    )
}

/// "max" for back-to-back clients, else the paced rate.
fn mode(result: &super::load::LoadResult) -> String {
    match result.rate {
        Some(rate) => format!("paced {rate:.0}/s"),
        None => "max".into(),
    }
}

fn load_rows(point: &PointResult, period: Duration) -> Vec<Vec<String>> {
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

const LOAD_HEADERS: [&str; 16] = [
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

fn probe_rows(point: &PointResult) -> Vec<Vec<String>> {
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

const PROBE_HEADERS: [&str; 5] = ["tracker", "trials", "median ms", "max ms", "missed"];

/// Sweep rows: one per point of a sweep (the default point included), sorted by `key`.
fn sweep_rows(points: &[&PointResult], trackers: &[Tracker]) -> Vec<Vec<String>> {
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

fn sweep_headers(trackers: &[Tracker]) -> Vec<String> {
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

/// The sweep points along one axis: same shape as the default except `hosts` (or except the
/// container count).
fn sweep_points<'a>(
    results: &'a [PointResult],
    settings: &Settings,
    hosts_axis: bool,
) -> Vec<&'a PointResult> {
    let d = settings.shape;
    let mut points: Vec<&PointResult> = results
        .iter()
        .filter(|p| {
            if hosts_axis {
                p.shape.containers == d.containers && p.shape.per_container == d.per_container
            } else {
                p.shape.hosts == d.hosts && p.shape.per_container == d.per_container
            }
        })
        .collect();
    if hosts_axis {
        points.sort_by_key(|p| p.shape.hosts);
    } else {
        points.sort_by_key(|p| p.shape.containers);
    }
    points
}

struct Target {
    what: String,
    measured: String,
    pass: Option<bool>,
}

fn targets(settings: &Settings, results: &[PointResult]) -> Vec<Target> {
    let mut out = Vec::new();
    let period = settings.period.as_secs_f64();
    let Some(default) = results.iter().find(|p| p.full) else {
        return out;
    };
    if let Some(r) = default.run(Tracker::Ebpf) {
        let us = r.window.us_per_process();
        out.push(Target {
            what: "eBPF: service CPU ≤ 8 µs per container process per sample (stretch ≤ 4)".into(),
            measured: format!(
                "{us:.2} µs at {} container processes{}",
                n(default.shape.container_processes()),
                if us <= 4.0 { " (stretch met)" } else { "" }
            ),
            pass: Some(us <= 8.0),
        });
    }
    let hosts = sweep_points(results, settings, true);
    let lo = hosts.first().and_then(|p| Some((p, p.run(Tracker::Ebpf)?)));
    let hi = hosts.last().and_then(|p| Some((p, p.run(Tracker::Ebpf)?)));
    match (lo, hi) {
        (Some((pl, a)), Some((ph, b))) if ph.shape.hosts > pl.shape.hosts => {
            // Raw µs per container process, and the same divided by the design floor measured
            // at that point (the floor does not depend on host processes, so the ratio takes
            // the machine's drift out); the target is judged on the ratio.
            let (ua, ub) = (a.window.us_per_process(), b.window.us_per_process());
            let (ra, rb) = (
                ua / pl.floor.design_us().max(1e-9),
                ub / ph.floor.design_us().max(1e-9),
            );
            let raw = (ub - ua) / ua.max(1e-9);
            let change = (rb - ra) / ra.max(1e-9);
            out.push(Target {
                what: format!(
                    "eBPF: CPU changes < 10 % from {} to {} host processes",
                    n(pl.shape.hosts),
                    n(ph.shape.hosts)
                ),
                measured: format!(
                    "{ra:.2} → {rb:.2} × the design floor ({:+.1} %); raw {ua:.2} → {ub:.2} µs per container process per sample ({:+.1} %)",
                    100.0 * change,
                    100.0 * raw
                ),
                pass: Some(change.abs() < 0.10),
            });
        }
        _ => out.push(Target {
            what: "eBPF: CPU changes < 10 % from 0 to 10,000 host processes".into(),
            measured: "not measured (run with --sweep hosts or all)".into(),
            pass: None,
        }),
    }
    if let Some(r) = default.run(Tracker::Procfs) {
        let ratio = r.window.us_per_sample() / default.floor.procfs_round_us().max(1e-9);
        out.push(Target {
            what: "procfs tracker within 1.3× of its own floor".into(),
            measured: format!(
                "{ratio:.2}× ({:.0} µs/sample vs {:.0} µs/round)",
                r.window.us_per_sample(),
                default.floor.procfs_round_us()
            ),
            pass: Some(ratio <= 1.3),
        });
    }
    let at_5000 = results
        .iter()
        .filter(|p| p.shape.container_processes() == 5000)
        .max_by_key(|p| p.full);
    for t in &settings.trackers {
        let what = format!("{t}: RSS ≤ 64 MB with full history at 5,000 container processes");
        match at_5000.and_then(|p| p.run(*t)) {
            Some(r) => {
                let rss = mb(r.window.memory.rss_kb);
                out.push(Target {
                    what,
                    measured: format!(
                        "{rss:.1} MB (peak {:.1} MB; {:.1} MB after load){}",
                        mb(r.window.memory.hwm_kb),
                        mb(r.memory_end.rss_kb),
                        if matches!(settings.warmup, super::Warmup::Full) {
                            ""
                        } else {
                            " — history not full (--warmup)"
                        }
                    ),
                    pass: Some(rss <= 64.0),
                });
            }
            None => out.push(Target {
                what,
                measured: "no run at 5,000 container processes".into(),
                pass: None,
            }),
        }
    }
    for r in &default.runs {
        if r.load.is_empty() {
            continue;
        }
        // Throughput from the back-to-back phase; p99 from the paced phase when there is one
        // (at saturation, latency is clients ÷ throughput by Little's law); no sample may slip
        // or be late by more than half a period in either.
        let max = r.load.iter().find(|l| l.result.rate.is_none());
        let paced = r.load.iter().find(|l| l.result.rate.is_some());
        let judged = paced.or(max).expect("non-empty");
        let rps = max.unwrap_or(judged).result.rps();
        let worst_age = r.load.iter().map(|l| l.watch.max_age).fold(0.0, f64::max);
        let slipped: u64 = r.load.iter().map(LoadOutcome::slipped).sum();
        let errors: u64 = r.load.iter().map(|l| l.result.errors()).sum();
        let pass = judged.result.p99_ms <= 10.0
            && rps >= 5000.0
            && judged.result.clients >= 100
            && paced.is_none_or(|p| p.result.rps() >= 0.95 * p.result.rate.unwrap_or(0.0))
            && slipped == 0
            && worst_age - period <= period / 2.0;
        out.push(Target {
            what: format!(
                "{}: API p99 ≤ 10 ms and ≥ 5,000 req/s with 100 clients, no sample late by more than half a period",
                r.tracker
            ),
            measured: format!(
                "p99 {:.2} ms ({}), {:.0} req/s (max), {} clients, {} errors, {} slipped, newest sample at most {:.2} periods old",
                judged.result.p99_ms,
                mode(&judged.result),
                rps,
                judged.result.clients,
                errors,
                slipped,
                worst_age / period
            ),
            pass: Some(pass),
        });
    }
    for r in &default.runs {
        if let Some(p) = &r.probe {
            let limit = period * 1e3 + 100.0;
            out.push(Target {
                what: format!(
                    "{}: exec-to-visible within one sample period + 100 ms ({limit:.0} ms)",
                    r.tracker
                ),
                measured: format!(
                    "median {:.0} ms, max {:.0} ms over {} trials ({} missed)",
                    p.median_ms(),
                    p.max_ms(),
                    p.trials,
                    p.missed
                ),
                pass: Some(p.missed == 0 && p.max_ms() <= limit),
            });
        }
    }
    out
}

fn reference_rows(results: &[PointResult]) -> Vec<Vec<String>> {
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

const REFERENCE_HEADERS: [&str; 6] = [
    "container procs",
    "Go: CPU % core",
    "Go: µs/proc·sample",
    "Go: RSS MB",
    "ebpf: CPU / µs per proc / RSS",
    "procfs: CPU / µs per proc / RSS",
];

fn conditions(settings: &Settings, results: &[PointResult]) -> String {
    let busy = results.iter().find(|p| p.full).map_or(0, |p| p.busy);
    format!(
        "{}sample period {}, history {}, warmup: {}, measurement {} ({} samples); container \
         processes idle `sleep`s{}; churn {}/s; cgroups: Docker layout under a benchmark prefix; \
         the service ran as a child process, alone on the machine's {} cores with the benchmark \
         (which polled /healthz every {} during measurements)",
        if settings.quick {
            "--quick smoke run (figures not meaningful); "
        } else {
            ""
        },
        humantime::format_duration(settings.period),
        settings.history,
        settings.warmup,
        humantime::format_duration(settings.measure),
        (settings.measure.as_secs_f64() / settings.period.as_secs_f64()).round(),
        if busy > 0 {
            format!(", {busy} busy ({:.0} %)", settings.busy_fraction * 100.0)
        } else {
            String::new()
        },
        settings.churn,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        humantime::format_duration(settings.health_poll),
    )
}

fn body(
    settings: &Settings,
    machine: &Machine,
    results: &[PointResult],
    elapsed: Duration,
    md: bool,
) -> String {
    let mut out = String::new();
    let h = |out: &mut String, title: &str| {
        if md {
            let _ = writeln!(out, "\n### {title}\n");
        } else {
            let _ = writeln!(out, "\n{title}");
        }
    };
    let period = settings.period;
    let _ = writeln!(
        out,
        "{}machine: {}, {} cores, {:.1} GiB, kernel {}; load average at start {}, at the end {}; workspace at {}",
        if md { "- " } else { "" },
        machine.cpu,
        machine.cores,
        machine.memory_gib,
        machine.kernel,
        machine.load_at_start,
        machine.load_at_end,
        machine.revision
    );
    let _ = writeln!(
        out,
        "{}conditions: {}",
        if md { "- " } else { "" },
        conditions(settings, results)
    );
    let _ = writeln!(
        out,
        "{}command: `{}`; took {:.1} min",
        if md { "- " } else { "" },
        settings.command,
        elapsed.as_secs_f64() / 60.0
    );
    if let Some(default) = results.iter().find(|p| p.full) {
        h(
            &mut out,
            &format!(
                "Default scenario: {} containers × {} = {} container processes, {} host processes",
                n(default.shape.containers),
                default.shape.per_container,
                n(default.shape.container_processes()),
                n(default.shape.hosts)
            ),
        );
        let _ = writeln!(out, "{}\n", floor_line(default));
        out.push_str(&table(&COST_HEADERS, &cost_rows(default), md, 1));
        let _ = writeln!(out);
        out.push_str(&table(
            &MEMORY_HEADERS,
            &memory_rows(default, period),
            md,
            1,
        ));
        let _ = writeln!(
            out,
            "\n(RSS with the history full, at the start and the end of the measurement; peak = VmHWM then; \
             \"at end\" = after the load and the probe. Start-up = until the service listened, \
             its first sample included; warm-up = until the history was full.)"
        );
        let load = load_rows(default, period);
        if !load.is_empty() {
            h(
                &mut out,
                &format!(
                    "API load: {} concurrent keep-alive clients, {} back to back (max) then {} paced (latency from the scheduled send), {:.0} % `sort=cpu&limit=5&interval=30` / {:.0} % `count=10`, random containers",
                    settings.clients,
                    humantime::format_duration(settings.load_duration),
                    humantime::format_duration(settings.load_duration),
                    settings.load_mix * 100.0,
                    (1.0 - settings.load_mix) * 100.0
                ),
            );
            out.push_str(&table(&LOAD_HEADERS, &load, md, 1));
            let errors: Vec<String> = default
                .runs
                .iter()
                .flat_map(|r| {
                    r.load.iter().filter_map(move |l| {
                        Some(format!(
                            "{} ({}): {}",
                            r.tracker,
                            mode(&l.result),
                            l.result.first_error.as_ref()?
                        ))
                    })
                })
                .collect();
            if !errors.is_empty() {
                let _ = writeln!(out, "\nfirst errors: {}", errors.join("; "));
            }
        }
        let probe = probe_rows(default);
        if !probe.is_empty() {
            h(
                &mut out,
                &format!(
                    "Exec-to-visible: a process execs inside a container; the API is polled every {} until it lists it",
                    humantime::format_duration(settings.probe_poll)
                ),
            );
            out.push_str(&table(&PROBE_HEADERS, &probe, md, 1));
        }
    }
    for (axis, hosts_axis) in [("container processes", false), ("host processes", true)] {
        let wanted = match settings.sweep {
            Sweep::All => true,
            Sweep::None => false,
            Sweep::Containers => !hosts_axis,
            Sweep::Hosts => hosts_axis,
        };
        let points = sweep_points(results, settings, hosts_axis);
        if !wanted || points.len() < 2 {
            continue;
        }
        h(&mut out, &format!("Sweep over {axis}"));
        let headers = sweep_headers(&settings.trackers);
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        out.push_str(&table(
            &headers,
            &sweep_rows(&points, &settings.trackers),
            md,
            0,
        ));
    }
    h(
        &mut out,
        "The original Go service (v0.1.4) on this machine kind, with its 60-sample history full (reference figures from the issue)",
    );
    out.push_str(&table(&REFERENCE_HEADERS, &reference_rows(results), md, 1));
    h(&mut out, "Targets");
    let rows: Vec<Vec<String>> = targets(settings, results)
        .into_iter()
        .map(|t| vec![t.pass.map_or("–", ok).to_string(), t.what, t.measured])
        .collect();
    out.push_str(&table(&["", "target", "measured"], &rows, md, 3));
    if results
        .iter()
        .any(|p| p.shape.container_processes() > p.floor.pread_processes)
    {
        let _ = writeln!(
            out,
            "\nAbove {} container processes the service (like the design floor) reads the \
             processes beyond its descriptor budget with open/read/close: the open-file limit is \
             {}.",
            n(results
                .iter()
                .map(|p| p.floor.pread_processes)
                .max()
                .unwrap_or(0)),
            nofile()
        );
    }
    let notes = notes(results);
    if !notes.is_empty() {
        h(&mut out, "Notes");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// Things worth a second look: service warnings, losses, repairs, fallbacks.
fn notes(results: &[PointResult]) -> Vec<String> {
    let mut out = Vec::new();
    // Container processes that were not the benchmark's (other tests, leftovers): the service
    // tracks them too, which changes the per-sample figures and the memory.
    let foreign = results
        .iter()
        .flat_map(|p| {
            p.runs
                .iter()
                .map(move |r| r.window.tracked - p.shape.container_processes() as f64)
        })
        .fold(0.0, f64::max);
    if foreign >= 50.0 {
        out.push(format!(
            "up to {foreign:.0} container processes of other containers were on the host during \
             the run: the service tracked them too (per-process figures divide by what it \
             tracked; the floor's procfs round covers them as well)"
        ));
    }
    for p in results {
        for (tracker, why) in &p.failed {
            out.push(format!(
                "{tracker} at {} container / {} host processes: not measured, the service did not start: {}",
                n(p.shape.container_processes()),
                n(p.shape.hosts),
                why.lines().next().unwrap_or_default()
            ));
        }
        for r in &p.runs {
            let w = &r.window;
            let at = format!(
                "{} at {} container / {} host processes",
                r.tracker,
                n(p.shape.container_processes()),
                n(p.shape.hosts)
            );
            if r.log.warnings + r.log.errors > 0 {
                out.push(format!(
                    "{at}: the service logged {} warnings and {} errors ({})",
                    r.log.warnings,
                    r.log.errors,
                    r.log.messages.join("; ")
                ));
            }
            if w.events_lost > 0 || w.repairs > 0 || w.reconciliations > 0 {
                out.push(format!(
                    "{at}: {} events lost, {} reconciliations, {} repairs during the measurement",
                    w.events_lost, w.reconciliations, w.repairs
                ));
            }
            if let Some(d) = &r.degraded {
                out.push(format!("{at}: degraded: {d}"));
            }
            if let (Tracker::Ebpf, Some((runs, ns))) = (r.tracker, w.bpf)
                && runs > 0
            {
                out.push(format!(
                            "{at}: kernel-side BPF programs ran {:.0} times/s, {:.0} ns per run ({:.3} % of a core, charged to the processes that fork/exec/exit, not to the service); {} events received",
                            runs as f64 / w.wall_secs,
                            ns as f64 / runs as f64,
                            100.0 * ns as f64 / 1e9 / w.wall_secs,
                            w.events
                        ));
            }
        }
    }
    out
}

pub fn text(
    settings: &Settings,
    machine: &Machine,
    results: &[PointResult],
    elapsed: Duration,
) -> String {
    format!(
        "\ncompanion density benchmark — {}\n{}",
        machine.date,
        body(settings, machine, results, elapsed, false)
    )
}

pub fn markdown(
    settings: &Settings,
    machine: &Machine,
    results: &[PointResult],
    elapsed: Duration,
    churned: u64,
) -> String {
    let mut out = format!(
        "\n## {} — {}, {} cores\n\n",
        machine.date, machine.cpu, machine.cores
    );
    out.push_str(&body(settings, machine, results, elapsed, true));
    if churned > 0 {
        let _ = writeln!(out, "\n(churn started {churned} processes in all)");
    }
    if settings.plot_written(results) {
        let _ = writeln!(
            out,
            "\n![service CPU per sample against container processes]({})",
            settings
                .svg
                .strip_prefix(workspace_root())
                .unwrap_or(&settings.svg)
                .display()
        );
    }
    out
}

fn nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscall on a local struct.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_max
}

impl Settings {
    /// Whether the run produced the cost plot (the container sweep, two sizes at least).
    pub fn plot_written(&self, results: &[PointResult]) -> bool {
        matches!(self.sweep, Sweep::Containers | Sweep::All)
            && sweep_points(results, self, false).len() >= 2
    }
}

pub fn container_sweep<'a>(
    results: &'a [PointResult],
    settings: &Settings,
) -> Vec<&'a PointResult> {
    sweep_points(results, settings, false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
