//! The report as text (stdout) and Markdown (BENCHMARKS.md): machine, conditions, the floor,
//! both trackers, the sweeps, the reference figures, the targets and notes.

use std::{fmt::Write as _, time::Duration};

use super::{
    super::{Settings, Sweep, Tracker, results::PointResult},
    tables::*,
    targets::targets,
};
use crate::kit::{machine::Machine, workspace_root};

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
tracker's (readdir /proc + cgroup of every process + stat/status of container processes). These
rounds run back to back; the cadence floor makes the design's reads once per sample period, as
the service does (the kernel's data of the processes is then no longer cache-warm). Ratios to
the floor hold on a noisy machine, absolute figures do not. RSS is VmRSS with the history full;
peak is VmHWM; memory per process is (RSS − the service's RSS on the same host without
container processes) / container processes. The peer is Debian's prometheus-process-exporter
over the same host, one group per process, scraped once per period: its CPU per scrape. The Go
figures are the original service's, from the issue.
";

pub(super) fn conditions(settings: &Settings, results: &[PointResult]) -> String {
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

pub(super) fn body(
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
        if let Some(Ok(peer)) = &default.peer {
            let _ = writeln!(
                out,
                "peer (prometheus-process-exporter, one group per process, over the same host): {}\n",
                peer_line(default, peer)
            );
        }
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
        if hosts_axis {
            let headers = sweep_headers(&settings.trackers);
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            out.push_str(&table(
                &headers,
                &sweep_rows(&points, &settings.trackers),
                md,
                0,
            ));
            continue;
        }
        let bases: Vec<String> = settings
            .trackers
            .iter()
            .filter_map(|&t| Some(format!("{t} {:.1} MB", mb(base_rss_kb(results, t)?))))
            .collect();
        if !bases.is_empty() {
            let _ = writeln!(
                out,
                "The service's base (no container processes, {} host processes, history full): RSS {}. \
                 \"µs/proc vs 5,000\" is the no-cliff ratio; the slope is the RSS added per process \
                 from the previous point.\n",
                n(settings.shape.hosts),
                bases.join(", ")
            );
        }
        out.push_str(&table(
            &CONTAINER_SWEEP_HEADERS,
            &container_sweep_rows(results, &points, &settings.trackers, period),
            md,
            0,
        ));
        let _ = writeln!(
            out,
            "\nThe floors (CPU time of the benchmark's own reads, same processes, same run; the \
             cadence floor reads once every {}) and the peer ({}, one group per process, \
             scraped once every {}; its CPU per scrape, per process it listed, and per container \
             process for comparison):\n",
            humantime::format_duration(settings.floor_gap),
            settings
                .peer
                .as_ref()
                .map_or("not run".into(), |p| p.display().to_string()),
            humantime::format_duration(period)
        );
        out.push_str(&table(
            &FLOOR_PEER_HEADERS,
            &floor_peer_rows(&points),
            md,
            0,
        ));
    }
    if let Some(point) = results.iter().find(|p| !p.threads.is_empty()) {
        h(
            &mut out,
            &format!(
                "Sampler threads: the eBPF service with --sampler-threads N at {} container processes (warm-up {}, then {} samples; sample duration from /healthz)",
                n(point.shape.container_processes()),
                settings.threads_warmup(),
                (settings.measure.as_secs_f64() / period.as_secs_f64()).round()
            ),
        );
        out.push_str(&table(&THREADS_HEADERS, &threads_rows(point), md, 1));
    }
    if let Some(point) = load_point(results) {
        h(
            &mut out,
            &format!(
                "API load at {} container processes: {} clients, paced (latency from the scheduled send), while sampling",
                n(point.shape.container_processes()),
                settings.clients
            ),
        );
        out.push_str(&table(&LOAD_HEADERS, &load_rows(point, period), md, 1));
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
            "\nAbove {} container processes the service (like the design and cadence floors) reads the \
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
pub(super) fn notes(results: &[PointResult]) -> Vec<String> {
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

pub(super) fn nofile() -> u64 {
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
