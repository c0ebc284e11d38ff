//! The soak's figures and its checks, as text.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{Figures, Settings, load::Kind, monitor::Phase};
use crate::kit::{
    machine::Machine,
    service::{Health, Stopped, describe_status},
};

fn mib(kb: u64) -> String {
    format!("{:.1} MiB", kb as f64 / 1024.0)
}

fn pct(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.1} %"))
}

/// The report and the number of failed checks.
pub fn text(settings: &Settings, machine: &Machine, f: &Figures) -> (String, usize) {
    let mut out = String::new();
    let o = &settings.host;
    let _ = writeln!(
        out,
        "\n== companion soak{} ({}) ==",
        if settings.quick { ", quick" } else { "" },
        settings.command
    );
    let _ = writeln!(
        out,
        "service: {} tracker, --sample-period {}, --history {}{}",
        settings.tracker,
        humantime::format_duration(settings.period),
        settings.history,
        if settings.service_args.is_empty() {
            String::new()
        } else {
            format!(", {}", settings.service_args.join(" "))
        }
    );
    let _ = writeln!(
        out,
        "host: {} containers ({} movers); churn {} processes/s ({:.0} % true, {:.0} % forking shells, \
         rest sleeps up to {}), {} moves/s, {} containers/min; API: {} clients {}",
        o.cgroups,
        o.movers,
        o.churn_rate,
        o.true_fraction * 100.0,
        o.fork_fraction * 100.0,
        humantime::format_duration(o.max_lifetime),
        o.moves_per_second,
        o.turnover_per_minute,
        settings.clients,
        settings.rate.map_or("back to back".into(), |r| format!(
            "at {r} requests/s in all"
        ))
    );
    let _ = writeln!(
        out,
        "machine: {}, {} cores, {:.0} GiB, kernel {}, revision {}; load average {} at start, {} at end",
        machine.cpu,
        machine.cores,
        machine.memory_gib,
        machine.kernel,
        machine.revision,
        machine.load_at_start,
        machine.load_at_end
    );
    if let Some(c) = &f.churn {
        let _ = writeln!(
            out,
            "machine CPU during the churn: {:.0} % of all {} cores busy = {:.0} % of a core: the \
             service {} of a core, the soak itself (with its churned processes) {:.0} %, \
             everything else on the machine about {:.0} %",
            c.machine_percent(),
            machine.cores,
            c.machine_percent() * machine.cores as f64,
            pct(c.service_percent()),
            c.own_percent(),
            (c.machine_percent() * machine.cores as f64
                - c.service_percent().unwrap_or(0.0)
                - c.own_percent())
            .max(0.0)
        );
    }

    // Duration.
    let _ = writeln!(out, "\nduration: {:.1} min in all", f.total_secs / 60.0);
    let _ = writeln!(
        out,
        "  setup {:.1}s, service start {:.1}s, full history after {:.1}s, cold window {:.1}s, warm-up churn and drain {:.1}s, baseline {:.1}s, churn {}, drain {:.1}s, after window {}",
        f.setup_secs,
        f.startup_secs,
        f.full_history_secs,
        f.cold.map_or(0.0, |w| w.span.secs()),
        f.warmup_secs,
        f.baseline.map_or(0.0, |w| w.span.secs()),
        f.churn.map_or("—".into(), |s| format!(
            "{:.1}s ({:.1}s starting processes, {:.1}s winding down)",
            s.secs(),
            f.host.churn_secs,
            f.host.wind_down_secs
        )),
        f.drain_secs,
        f.after
            .map_or("—".into(), |w| format!("{:.1}s", w.span.secs()))
    );

    // Churn.
    let h = &f.host;
    let churn_secs = h.churn_secs.max(1e-9);
    let _ = writeln!(
        out,
        "\nchurn: {} processes started ({:.0}/s): {} sleeps, {} trues, {} shells + {} children they forked",
        h.processes(),
        h.processes() as f64 / churn_secs,
        h.sleeps,
        h.trues,
        h.shells,
        h.forked
    );
    let _ = writeln!(
        out,
        "  reaped {} direct children; {} overdue killed; {} spawn failures{}; spawner behind schedule {} times",
        h.reaped,
        h.overdue_killed,
        h.spawn_failures,
        h.first_spawn_error
            .as_ref()
            .map_or(String::new(), |e| format!(" (first: {e})")),
        h.fell_behind
    );
    let _ = writeln!(
        out,
        "  moves: {} ({} of churned sleeps, {} of which had just exited; {} failed{})",
        h.moves,
        h.moves_of_churned,
        h.moves_raced_exit,
        h.move_failures,
        h.first_move_error
            .as_ref()
            .map_or(String::new(), |e| format!(": {e}"))
    );
    let _ = writeln!(
        out,
        "  containers: {} created ({} at start, {} during the churn), {} removed; {} leftover grandchildren killed",
        h.created,
        h.created_initially,
        h.created - h.created_initially,
        h.removed,
        h.strays_killed
    );

    // Requests.
    if let Some(load) = &f.load {
        let _ = writeln!(
            out,
            "\nrequests: {} in {:.1}s ({:.0}/s), {:.1} MiB received; by route and status (client side):",
            load.requests(),
            load.secs,
            load.requests() as f64 / load.secs.max(1e-9),
            load.bytes as f64 / 1048576.0
        );
        let mut by_kind: BTreeMap<Kind, Vec<(u16, u64)>> = BTreeMap::new();
        for ((kind, status), n) in &load.statuses {
            by_kind.entry(*kind).or_default().push((*status, *n));
        }
        for (kind, statuses) in &by_kind {
            let list: Vec<String> = statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
            let lat = load
                .latency_ms(*kind)
                .map_or(String::new(), |(p50, p99, max)| {
                    format!("; latency p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")
                });
            let _ = writeln!(out, "  {:<24} {}{}", kind.label(), list.join(", "), lat);
        }
        let _ = writeln!(
            out,
            "  v1.0 500 \"Container … not found\" as specified: {}",
            if load.not_found.is_empty() {
                "none".into()
            } else {
                load.not_found
                    .iter()
                    .map(|(why, n)| format!("{n} {}", why.label()))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        );
        let _ = writeln!(
            out,
            "  outside the specification: {} ({} transport errors)",
            load.unexpected, load.transport_errors
        );
        for e in &load.examples {
            let _ = writeln!(out, "    {e}");
        }
    }
    if let Some(s) = &f.scraped {
        let mut rows: Vec<String> = s
            .requests
            .iter()
            .map(|(route, status, n)| format!("{route} {status}: {n}"))
            .collect();
        rows.sort();
        let _ = writeln!(out, "  service side (/metrics): {}", rows.join(", "));
    }

    // Tracker and sampling.
    let delta = |a: &Option<Health>, b: &Option<Health>, get: fn(&Health) -> u64| match (a, b) {
        (Some(a), Some(b)) => Some(get(b).saturating_sub(get(a))),
        _ => None,
    };
    let show = |v: Option<u64>| v.map_or("n/a".into(), |v| v.to_string());
    let end = f.health_end.as_ref().or(f.observed.last.as_ref());
    let total = |get: fn(&Health) -> u64| end.map(get);
    let _ = writeln!(
        out,
        "\ntracker: events received {} during the churn ({} in all), lost {} ({}), reconciliations {} ({}), repairs {} ({})",
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h
            .events_received)),
        show(total(|h| h.events_received)),
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h
            .events_lost)),
        show(total(|h| h.events_lost)),
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h
            .reconciliations)),
        show(total(|h| h.reconciliations)),
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h.repairs)),
        show(total(|h| h.repairs)),
    );
    let ob = &f.observed;
    let _ = writeln!(
        out,
        "sampling: {} samples taken during the churn ({} in all), {} slipped ({} in all); /healthz status not ok in {} of {} polls{}",
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h
            .samples_taken)),
        show(total(|h| h.samples_taken)),
        show(delta(&f.health_churn_start, &f.health_churn_end, |h| h
            .samples_slipped)),
        show(total(|h| h.samples_slipped)),
        ob.not_ok,
        ob.polls,
        ob.first_not_ok
            .as_ref()
            .map_or(String::new(), |s| format!(" (first: {s})"))
    );
    let phases = [
        ("warm-up", Phase::Warmup),
        ("baseline", Phase::Baseline),
        ("churn", Phase::Churn),
        ("drain", Phase::Drain),
    ];
    let _ = writeln!(
        out,
        "  max sample duration (of the samples /healthz polls saw): {}{}",
        phases
            .iter()
            .map(|(name, p)| format!(
                "{name} {:.1} ms ({} seen)",
                ob.max_sample_secs[*p as usize] * 1000.0,
                ob.samples_seen[*p as usize]
            ))
            .collect::<Vec<_>>()
            .join(", "),
        f.scraped
            .as_ref()
            .and_then(|s| s.max_sample_bound.as_ref().map(|b| (b, s.samples)))
            .map_or(String::new(), |(b, n)| format!(
                "; histogram: all {n} samples ≤ {b} s"
            ))
    );
    let _ = writeln!(
        out,
        "  tracked processes: up to {}, containers up to {}",
        ob.max_tracked, ob.max_containers
    );

    // Memory and CPU.
    let peak = ob.rss_max(Phase::Churn);
    let _ = writeln!(
        out,
        "\nRSS: before {}, peak during the churn {} (VmHWM {}), after {}{}",
        f.baseline.and_then(|w| w.rss_kb).map_or("n/a".into(), mib),
        peak.map_or("n/a".into(), mib),
        f.hwm_kb.map_or("n/a".into(), mib),
        f.after.and_then(|w| w.rss_kb).map_or("n/a".into(), mib),
        match (
            f.baseline.and_then(|w| w.rss_kb),
            f.after.and_then(|w| w.rss_kb)
        ) {
            (Some(b), Some(a)) if b > 0 => format!(
                " ({:+.1} % of before)",
                100.0 * (a as f64 - b as f64) / b as f64
            ),
            _ => String::new(),
        }
    );
    let anon_peak = ob
        .rss
        .iter()
        .filter(|r| r.phase == Phase::Churn)
        .map(|r| r.anon_kb)
        .max();
    let _ = writeln!(
        out,
        "  of which anonymous (RssAnon): before {}, peak during the churn {}, after {}",
        f.baseline.and_then(|w| w.anon_kb).map_or("n/a".into(), mib),
        anon_peak.map_or("n/a".into(), mib),
        f.after.and_then(|w| w.anon_kb).map_or("n/a".into(), mib),
    );
    let heap = |h: Option<super::Heap>| {
        h.map_or("n/a".into(), |h| {
            format!(
                "{} in use, {} resident",
                mib(h.allocated / 1024),
                mib(h.resident / 1024)
            )
        })
    };
    let _ = writeln!(
        out,
        "  heap (the allocator's figures): before {}; after {}",
        heap(f.baseline.and_then(|w| w.heap)),
        heap(f.after.and_then(|w| w.heap)),
    );
    if f.cold.is_some() {
        let _ = writeln!(
            out,
            "  cold, before the warm-up churn: RSS {}, anonymous {}, heap {}",
            f.cold.and_then(|w| w.rss_kb).map_or("n/a".into(), mib),
            f.cold.and_then(|w| w.anon_kb).map_or("n/a".into(), mib),
            heap(f.cold.and_then(|w| w.heap)),
        );
    }
    let _ = writeln!(
        out,
        "service CPU (of one core): cold {}, baseline {}, churn {}, after {}",
        pct(f.cold.and_then(|w| w.span.service_percent())),
        pct(f.baseline.and_then(|w| w.span.service_percent())),
        pct(f.churn.and_then(|s| s.service_percent())),
        pct(f.after.and_then(|w| w.span.service_percent())),
    );
    let _ = writeln!(
        out,
        "service log: {} warnings, {} errors{}",
        f.log.warnings,
        f.log.errors,
        if f.log.messages.is_empty() {
            String::new()
        } else {
            format!(" ({})", f.log.messages.join("; "))
        }
    );

    // Checks.
    let mut checks: Vec<(bool, String, String)> = Vec::new();
    if let Some(why) = &f.aborted {
        checks.push((false, "the soak ran to its end".into(), why.clone()));
    }
    // 1. No crash.
    let crash = match (&ob.died, &f.stopped) {
        (Some((_, status)), _) => (
            false,
            format!(
                "the service died during the run ({})",
                describe_status(*status)
            ),
        ),
        (None, Some(Stopped::Exited { status, after })) => {
            let ok = libc::WIFEXITED(*status) && libc::WEXITSTATUS(*status) == 0;
            (
                ok,
                format!(
                    "alive throughout ({} checks every {} ms); SIGTERM → {} after {:.2}s",
                    ob.polls,
                    (settings.period / 4)
                        .clamp(
                            std::time::Duration::from_millis(50),
                            std::time::Duration::from_millis(250)
                        )
                        .as_millis(),
                    describe_status(*status),
                    after.as_secs_f64()
                ),
            )
        }
        (None, Some(Stopped::Killed)) => (false, "ignored SIGTERM for 10 s, killed".into()),
        (None, _) => (false, "its end was not observed".into()),
    };
    checks.push((crash.0, "no crash".into(), crash.1));
    // 2. Answers.
    match &f.load {
        Some(load) => {
            let ok = load.unexpected == 0 && ob.health_failures == 0;
            let twohundred: u64 = load
                .statuses
                .iter()
                .filter(|((_, s), _)| *s == 200)
                .map(|(_, n)| n)
                .sum();
            let mut detail = format!(
                "{} requests: {} × 200, {} × the specified v1.0 500 not-found, {} outside the specification; monitor /healthz polls failed: {}",
                load.requests(),
                twohundred,
                load.expected_not_found(),
                load.unexpected,
                ob.health_failures
            );
            for e in &ob.health_examples {
                let _ = write!(detail, "\n      {e}");
            }
            checks.push((
                ok,
                "no error responses other than the specified ones".into(),
                detail,
            ));
        }
        None => checks.push((
            false,
            "no error responses other than the specified ones".into(),
            "the load generator's results are missing".into(),
        )),
    }
    // 3. Memory.
    match (
        f.baseline.and_then(|w| w.rss_kb),
        f.after.and_then(|w| w.rss_kb),
    ) {
        (Some(before), Some(after)) => {
            let limit = before as f64 * (1.0 + settings.rss_tolerance / 100.0);
            checks.push((
                (after as f64) <= limit,
                format!("RSS back within {} % of before", settings.rss_tolerance),
                format!(
                    "before {}, peak {}, after {} (limit {})",
                    mib(before),
                    peak.map_or("n/a".into(), mib),
                    mib(after),
                    mib(limit as u64)
                ),
            ));
        }
        _ => checks.push((
            false,
            format!("RSS back within {} % of before", settings.rss_tolerance),
            "not measured".into(),
        )),
    }
    // 4. Tracked set.
    match &f.verification {
        Some(v) => {
            let mut detail = format!(
                "{} containers: {} processes in /proc, {} listed by the API{}; {} removed containers not listed{}",
                v.containers,
                v.processes_expected,
                v.processes_listed,
                if v.rounds > 1 {
                    format!(" ({} rounds)", v.rounds)
                } else {
                    String::new()
                },
                v.removed_checked.saturating_sub(v.removed_listed.len()),
                match &v.tracked {
                    Some(t) => format!(
                        "; /healthz tracked_processes {} within [{}, {}] of the host's /proc scans (attempt {}){}",
                        t.tracked_processes,
                        t.listed_low,
                        t.all_high,
                        t.attempts,
                        if t.consistent() {
                            ""
                        } else {
                            ": NOT consistent"
                        }
                    ),
                    None => String::new(),
                }
            );
            for m in v
                .mismatches
                .iter()
                .chain(&v.removed_listed)
                .chain(&v.v2_mismatches)
                .take(20)
            {
                let _ = write!(detail, "\n      {m}");
            }
            for m in v.transient.iter().take(10) {
                let _ = write!(detail, "\n      (transient) {m}");
            }
            checks.push((
                v.passed(),
                "the tracked set equals a /proc scan".into(),
                detail,
            ));
        }
        None => checks.push((
            false,
            "the tracked set equals a /proc scan".into(),
            "not checked".into(),
        )),
    }

    let _ = writeln!(out, "\nchecks:");
    let mut failed = 0;
    for (ok, name, detail) in &checks {
        if !ok {
            failed += 1;
        }
        let _ = writeln!(
            out,
            "  {} {name}: {detail}",
            if *ok { "PASS" } else { "FAIL" }
        );
    }
    let _ = writeln!(
        out,
        "\n{}",
        if failed == 0 {
            "soak: all checks passed".to_string()
        } else {
            format!("soak: {failed} check(s) FAILED")
        }
    );
    (out, failed)
}
