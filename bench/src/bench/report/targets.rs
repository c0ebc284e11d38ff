//! The targets of the issue, each checked against what the run measured.

use super::{
    super::{
        Settings, Tracker, Warmup,
        results::{LoadOutcome, PointResult},
    },
    tables::*,
};

pub(super) struct Target {
    pub(super) what: String,
    pub(super) measured: String,
    pub(super) pass: Option<bool>,
}

pub(super) fn targets(settings: &Settings, results: &[PointResult]) -> Vec<Target> {
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
                        if matches!(settings.warmup, Warmup::Full) {
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
