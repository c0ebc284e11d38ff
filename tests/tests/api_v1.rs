//! The v1.0 API contract (/work/shared/spec/api-v1.0.md), end to end, for both trackers: every
//! test body below runs once with `--tracker procfs` and once with `--tracker ebpf`
//! (`procfs::<name>` and `ebpf::<name>`).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant, SystemTime},
};

use companion_tests::{
    Container, Hierarchy, Pid, Service, TestCgroup, Tracker, api, both_trackers, cpu_heavy,
    http::{self, Response},
    proc, spawn, unique_id, wait_for, wait_threads,
};
use nix::sys::signal::Signal;
use serde_json::Value;

both_trackers!(
    schema_keys_types_and_values,
    busy_process_gets_the_cpu_share,
    sort_mem_and_limit,
    count_and_interval,
    young_history_and_first_sample,
    new_process_is_listed_in_its_first_sample,
    errors_and_unlisted_processes,
    empty_snapshots_are_arrays,
    paths_methods_and_encoding,
    original_service_cases,
    naming_v1_cpu,
    naming_unified,
    odd_names_and_short_cmdline,
    threads_are_not_processes,
    healthz_reports_the_service,
    malformed_requests_do_not_hurt,
    shutdown_on_sigterm,
    shutdown_on_sigint,
    shutdown_with_a_stalled_client,
);

fn set(pids: &[Pid]) -> BTreeSet<Pid> {
    pids.iter().copied().collect()
}

/// Waits until the service lists exactly these processes in the newest sample of `container`.
fn wait_listed(service: &Service, container: &Container, pids: &[Pid]) {
    service.wait_pids(&container.path, Some(&set(pids)), service.patience());
}

fn assert_plain_text(r: &Response, what: &str) {
    assert_eq!(
        r.media_type().as_deref(),
        Some("text/plain"),
        "{what}: Content-Type {:?}, body {:?}",
        r.header("content-type"),
        r.text()
    );
}

/// The key → value map of /proc/PID/status.
fn proc_status(pid: Pid) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.trim().to_owned()))
        })
        .collect()
}

fn hex(text: &str) -> u64 {
    u64::from_str_radix(text, 16).unwrap_or_else(|_| panic!("hex {text:?}"))
}

fn hex_words(text: &str) -> Vec<u64> {
    text.split(',').map(hex).collect()
}

// ---------------------------------------------------------------------------------------------

/// Every key of the contract, its order, its JSON type, and the values against /proc.
fn schema_keys_types_and_values(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[pid]);

    let r = service.get(&c.api_path());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    // check_answer verifies keys, order and types of everything; here the values.
    let snapshots = api::check_answer(&r, &c.path, "");
    assert_eq!(snapshots.len(), 1, "one snapshot by default");
    let snapshot = &snapshots[0];
    let raw_ts = snapshot["timestamp"].as_str().unwrap();
    assert!(raw_ts.ends_with('Z'), "timestamp {raw_ts} is not UTC");
    let fraction = raw_ts.split('.').nth(1).unwrap_or("");
    assert!(
        fraction.len() > 1 && fraction.len() <= 10,
        "timestamp {raw_ts} has no sub-second part"
    );
    // UTC and now: a zone error is off by 30 min or more; a loaded host delays samples by
    // seconds at most.
    let age = SystemTime::now()
        .duration_since(api::timestamp(snapshot))
        .unwrap_or_else(|e| panic!("timestamp {raw_ts} is {:?} in the future", e.duration()));
    assert!(
        age < Duration::from_secs(60),
        "timestamp {raw_ts} is {age:?} old: not UTC?"
    );

    let processes = api::processes(snapshot);
    assert_eq!(processes.len(), 1);
    let p = &processes[0];
    assert_eq!(p["cmdline"], spawn::SLEEPER_CMDLINE);
    assert_eq!(p["cgroup"], c.path.as_str());

    // status against /proc/PID/status.
    let s = &p["status"];
    let ps = proc_status(pid);
    let me = u64::from(std::process::id());
    assert_eq!(s["Name"], "sleep");
    assert_eq!(s["State"], "S (sleeping)");
    assert_eq!(s["Tgid"], u64::from(pid));
    assert_eq!(s["Pid"], u64::from(pid));
    assert_eq!(s["PPid"], me);
    assert_eq!(s["TracerPid"], 0);
    let uids: Vec<u64> = ps["Uid"]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let gids: Vec<u64> = ps["Gid"]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    for (i, key) in ["RealUid", "EffectiveUid", "SavedSetUid", "FilesystemUid"]
        .iter()
        .enumerate()
    {
        assert_eq!(s[*key], uids[i], "{key}");
    }
    for (i, key) in ["RealGid", "EffectiveGid", "SavedSetGid", "FilesystemGid"]
        .iter()
        .enumerate()
    {
        assert_eq!(s[*key], gids[i], "{key}");
    }
    let groups: Vec<i64> = ps["Groups"]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(
        s["Groups"],
        serde_json::json!(groups),
        "Groups ([] when none)"
    );
    for key in [
        "FDSize", "VmPeak", "VmSize", "VmLck", "VmExe", "VmLib", "VmStk", "Threads",
    ] {
        let value: u64 = ps[key].split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(s[key], value, "status.{key}");
    }
    assert!(s["VmRSS"].as_u64().unwrap() > 0);
    let (_, sigq_limit) = ps["SigQ"].split_once('/').unwrap();
    assert_eq!(s["SigQLimit"], sigq_limit.parse::<u64>().unwrap());
    for (key, file_key) in [
        ("SigBlk", "SigBlk"),
        ("SigIgn", "SigIgn"),
        ("SigCgt", "SigCgt"),
        ("CapInh", "CapInh"),
        ("CapPrm", "CapPrm"),
        ("CapEff", "CapEff"),
        ("CapBnd", "CapBnd"),
    ] {
        assert_eq!(s[key], hex(&ps[file_key]), "status.{key} (hex in the file)");
    }
    assert_eq!(s["Seccomp"], ps["Seccomp"].parse::<u64>().unwrap());
    assert_eq!(
        s["CpusAllowed"],
        serde_json::json!(hex_words(&ps["Cpus_allowed"])),
        "CpusAllowed: each comma-separated hex word"
    );
    assert_eq!(
        s["MemsAllowed"],
        serde_json::json!(hex_words(&ps["Mems_allowed"])),
        "MemsAllowed: each comma-separated hex word"
    );

    // stat against /proc/PID/stat: the fields a sleeping process does not change.
    let st = &p["stat"];
    let (comm, fields) = proc::stat(pid).unwrap();
    assert_eq!(st["pid"], u64::from(pid));
    assert_eq!(st["comm"], format!("({})", String::from_utf8_lossy(&comm)));
    assert_eq!(st["comm"], "(sleep)");
    assert_eq!(st["state"], "S");
    // 1-based proc(5) field numbers of the stable fields.
    let by_number: [(&str, usize); 24] = [
        ("ppid", 4),
        ("pgrp", 5),
        ("session", 6),
        ("tty_nr", 7),
        ("tpgid", 8),
        ("flags", 9),
        ("priority", 18),
        ("nice", 19),
        ("num_threads", 20),
        ("starttime", 22),
        ("vsize", 23),
        ("rsslim", 25),
        ("startcode", 26),
        ("endcode", 27),
        ("startstack", 28),
        ("exit_signal", 38),
        ("rt_priority", 40),
        ("policy", 41),
        ("start_data", 45),
        ("end_data", 46),
        ("start_brk", 47),
        ("arg_start", 48),
        ("arg_end", 49),
        ("env_start", 50),
    ];
    for (key, number) in by_number {
        let text = &fields[number - 3];
        let expected: Value = if let Ok(v) = text.parse::<u64>() {
            v.into()
        } else {
            text.parse::<i64>().unwrap().into()
        };
        assert_eq!(st[key], expected, "stat.{key} (field {number}) = {text}");
    }
    assert_eq!(st["ppid"], me);
    assert_eq!(st["tpgid"].as_i64(), Some(-1), "tpgid is signed");
    assert_eq!(st["exit_signal"], 17);
    // rsslim is usually RLIM_INFINITY, which must come out exactly.
    assert_eq!(
        st["rsslim"].as_u64(),
        Some(fields[22].parse::<u64>().unwrap())
    );
    let raw = r.text();
    if fields[22] == "18446744073709551615" {
        assert!(
            raw.contains("\"rsslim\":18446744073709551615"),
            "rsslim printed exactly"
        );
    }
    // relativecpuusage is a plain JSON number.
    assert!(p["relativecpuusage"].is_number());
}

/// One busy loop and two idle processes: the busy one gets ~100 % with sort=cpu.
fn busy_process_gets_the_cpu_share(tracker: Tracker) {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let idle1 = cg.spawn(&[&c], spawn::sleeper());
    let busy = cg.spawn(&[&c], spawn::busy_loop());
    let idle2 = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[idle1, busy, idle2]);
    // A window of 5 samples (1 s) that lies entirely after the start of the processes.
    service.wait_samples(6);

    let snapshot = service.wait_until("the busy loop to get > 90 %", service.patience() * 2, |s| {
        let snapshots = s.snapshots(&c.path, "sort=cpu&interval=5");
        let last = snapshots.last().unwrap().clone();
        let first = &api::processes(&last)[0];
        if api::pid(first) == busy && api::share(first) > 90.0 {
            Ok(last)
        } else {
            Err(format!("sorted by cpu: {:?}", shares(&last)))
        }
    });
    let list = api::processes(&snapshot);
    assert_eq!(api::pid(&list[0]), busy, "busy process first");
    assert_eq!(list[0]["cmdline"], spawn::BUSY_CMDLINE);
    for idle in &list[1..] {
        assert!(
            api::share(idle) < 5.0,
            "idle process {} has {} %",
            api::pid(idle),
            api::share(idle)
        );
    }
    // Nobody left the container: the listed shares account for all of its CPU.
    let sum = api::share_sum(&snapshot);
    assert!((99.9..=100.0 + 1e-6).contains(&sum), "shares sum to {sum}");

    // Every window length gives a valid split (checked by the harness) with the busy one first.
    for query in [
        "sort=cpu",
        "sort=cpu&interval=2",
        "sort=cpu&count=3&interval=3",
    ] {
        let snapshots = service.snapshots(&c.path, query);
        let last = snapshots.last().unwrap();
        assert_eq!(
            api::pid(&api::processes(last)[0]),
            busy,
            "{query}: {:?}",
            shares(last)
        );
    }
}

fn shares(snapshot: &Value) -> Vec<(Pid, f64)> {
    api::processes(snapshot)
        .iter()
        .map(|p| (api::pid(p), api::share(p)))
        .collect()
}

/// sort=mem orders by VmRSS (ties by pid); limit keeps N only with a sort.
fn sort_mem_and_limit(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let small1 = cg.spawn(&[&c], spawn::sleeper());
    // ~48 MiB resident: the bytes are written, so the pages are touched.
    let big = cg.spawn(
        &[&c],
        spawn::python_code("import time\nb = b'x' * (48 << 20)\ntime.sleep(1000)\n"),
    );
    let small2 = cg.spawn(&[&c], spawn::sleeper());
    let all = set(&[small1, big, small2]);
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[small1, big, small2]);
    service.wait_until("the big process to be resident", service.patience(), |s| {
        let snapshot = s.snapshots(&c.path, "").pop().unwrap();
        match api::find(&snapshot, big).map(api::vm_rss) {
            Some(rss) if rss > 40_000 => Ok(()),
            rss => Err(format!("VmRSS {rss:?}")),
        }
    });

    // The harness checks the order of every answer against its `sort`; here the content.
    let by_mem = service.snapshots(&c.path, "sort=mem").pop().unwrap();
    assert_eq!(api::pids(&by_mem), all);
    assert_eq!(api::pid(&api::processes(&by_mem)[0]), big, "largest first");
    let order =
        |snapshot: &Value| -> Vec<Pid> { api::processes(snapshot).iter().map(api::pid).collect() };
    assert_eq!(
        order(&by_mem)[1..],
        {
            let mut rest = vec![small1, small2];
            let rss = |pid| api::vm_rss(api::find(&by_mem, pid).unwrap());
            rest.sort_by_key(|&pid| (std::cmp::Reverse(rss(pid)), pid));
            rest
        }[..],
        "then by VmRSS descending, ties by ascending pid"
    );

    let limited = service
        .snapshots(&c.path, "sort=mem&limit=2")
        .pop()
        .unwrap();
    assert_eq!(order(&limited).len(), 2, "limit=2 keeps two");
    assert_eq!(api::pid(&api::processes(&limited)[0]), big);
    let one = service
        .snapshots(&c.path, "sort=cpu&limit=1")
        .pop()
        .unwrap();
    assert_eq!(order(&one).len(), 1, "sort=cpu&limit=1 keeps one");
    let huge = service
        .snapshots(&c.path, "sort=mem&limit=1000")
        .pop()
        .unwrap();
    assert_eq!(api::pids(&huge), all, "a limit above the count keeps all");

    // Without a sort the limit is ignored and the order is by ascending pid.
    for query in [
        "",
        "limit=1",
        "limit=2",
        "sort=",
        "sort=&limit=1",
        "count=1",
    ] {
        let snapshot = service.snapshots(&c.path, query).pop().unwrap();
        let got = order(&snapshot);
        let expected: Vec<Pid> = all.iter().copied().collect();
        assert_eq!(got, expected, "{query:?}: all, by ascending pid");
    }
    // Invalid limits mean "all".
    for query in ["sort=mem&limit=0", "sort=mem&limit=-1", "sort=mem&limit=x"] {
        let snapshot = service.snapshots(&c.path, query).pop().unwrap();
        assert_eq!(api::pids(&snapshot), all, "{query}: all");
    }
    // The first of a repeated parameter counts.
    let snapshot = service
        .snapshots(&c.path, "sort=mem&limit=1&limit=3")
        .pop()
        .unwrap();
    assert_eq!(order(&snapshot), vec![big], "limit=1&limit=3 is limit=1");
    let snapshot = service
        .snapshots(&c.path, "sort=mem&sort=cpu&limit=1")
        .pop()
        .unwrap();
    assert_eq!(
        order(&snapshot),
        vec![big],
        "sort=mem&sort=cpu sorts by mem"
    );
}

/// Fetches `queries` within one publication: a reference `count=K&interval=1` before and after
/// must name the same samples. Returns the reference timestamps (oldest first) and each query's
/// snapshot timestamps.
fn within_one_sample(
    service: &Service,
    container: &str,
    reference: usize,
    queries: &[&str],
) -> (Vec<SystemTime>, Vec<Vec<SystemTime>>) {
    let reference_query = format!("count={reference}&interval=1");
    let times = |query: &str| -> Vec<SystemTime> {
        service
            .snapshots(container, query)
            .iter()
            .map(api::timestamp)
            .collect()
    };
    for _ in 0..50 {
        let before = times(&reference_query);
        let answers: Vec<Vec<SystemTime>> = queries.iter().map(|q| times(q)).collect();
        if times(&reference_query) == before {
            return (before, answers);
        }
    }
    panic!("could not fetch {queries:?} within one sample period in 50 tries");
}

/// count and interval: spacing, order, the history bound, defaults and invalid values.
fn count_and_interval(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &["--history", "10"]);
    wait_listed(&service, &c, &[pid]);
    service.wait_history(10);

    // Each query and the samples its snapshots must be, as indices into a reference of the
    // last 9 samples (8 is the newest), oldest first.
    let cases: [(&str, &[usize]); 18] = [
        ("count=3&interval=2", &[4, 6, 8]),
        ("", &[8]),
        ("count=1", &[8]),
        ("count=0", &[8]),
        ("count=-1", &[8]),
        ("count=x", &[8]),
        ("count=", &[8]),
        ("count=2&interval=0", &[7, 8]),
        ("count=2&interval=-1", &[7, 8]),
        ("count=2&interval=x", &[7, 8]),
        ("count=+2", &[7, 8]),
        ("count=%2B2", &[7, 8]),
        ("count=2&count=3", &[7, 8]),
        ("count=3&interval=2&interval=1", &[4, 6, 8]),
        ("interval=3&count=3", &[2, 5, 8]),
        ("count=9", &[0, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("count=3&interval=3", &[2, 5, 8]),
        ("count=4&interval=2", &[2, 4, 6, 8]),
    ];
    let queries: Vec<&str> = cases.iter().map(|(q, _)| *q).collect();
    let (t, got) = within_one_sample(&service, &c.path, 9, &queries);
    assert_eq!(t.len(), 9);
    for ((query, expect), got) in cases.iter().zip(&got) {
        let expected: Vec<SystemTime> = expect.iter().map(|&i| t[i]).collect();
        assert_eq!(
            got, &expected,
            "{query:?}: snapshots at reference samples {expect:?} (oldest first, last = newest)"
        );
    }

    // The samples are one period apart; snapshots of interval=2 two periods.
    let period = service.period.as_secs_f64();
    let gaps: Vec<f64> = t
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap().as_secs_f64())
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let spaced: Vec<f64> = got[0]
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap().as_secs_f64())
        .collect();
    // Samples are due every period; one that overran makes the schedule skip a tick (counted
    // as slipped), so upper bounds only hold when nothing slipped since the start.
    let slipped = service.health()["samples_slipped"].as_u64().unwrap() > 0;
    assert!(
        median >= 0.7 * period && (slipped || median <= 1.5 * period),
        "median gap between samples {median}s, period {period}s, slipped {slipped}: {gaps:?}"
    );
    for gap in &spaced {
        assert!(*gap >= 1.5 * period, "count=3&interval=2 gaps {spaced:?}");
        if !slipped {
            assert!(
                *gap <= 2.5 * period,
                "count=3&interval=2 gaps {spaced:?}, samples {gaps:?}"
            );
        }
    }

    // count × interval must stay ≤ H − 1 = 9.
    for query in [
        "count=10",
        "interval=10",
        "count=2&interval=5",
        "count=5&interval=2",
        "count=100",
        "interval=100",
        "count=9223372036854775807&interval=2",
        "count=4&interval=4611686018427387904",
        "count=4294967296&interval=4294967296",
    ] {
        let r = service.processes(&c.path, query).unwrap_err();
        assert_eq!(r.status, 500, "{query}: {}", r.text());
        assert_eq!(r.text(), "Wrong offset and interval combination", "{query}");
        assert_plain_text(&r, query);
    }
    // Out-of-range numbers are invalid, hence defaults.
    let snapshots = service.snapshots(&c.path, "count=99999999999999999999&interval=1");
    assert_eq!(snapshots.len(), 1, "count out of range → 1");
}

/// The first sample exists before the listener accepts; snapshots before it are left out.
fn young_history_and_first_sample(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    // A long period keeps the history young for the whole test.
    let service = Service::with_tracker(tracker, &["--sample-period", "2s"]);
    // The very first request after readiness already lists the process.
    let snapshots = service.snapshots(&c.path, "");
    assert_eq!(api::pids(snapshots.last().unwrap()), set(&[pid]));
    let in_history = service.health()["samples_in_history"].as_u64().unwrap() as usize;
    assert!(in_history >= 1);
    for query in ["count=50", "count=5&interval=10", "count=59"] {
        let snapshots = service.snapshots(&c.path, query);
        let now = service.health()["samples_in_history"].as_u64().unwrap() as usize;
        assert!(
            !snapshots.is_empty() && snapshots.len() <= now,
            "{query}: {} snapshots with {now} samples in the history",
            snapshots.len()
        );
        let newest = service.snapshots(&c.path, "");
        assert_eq!(
            api::timestamp(snapshots.last().unwrap()),
            api::timestamp(newest.last().unwrap()),
            "{query}: the last snapshot is the newest sample"
        );
    }
    // A window reaching before the first sample starts at the oldest one: shares stay valid
    // (the harness checks them).
    service.snapshots(&c.path, "interval=50&sort=cpu");
}

/// A process born inside the window is listed from the first sample that can see it (the
/// original waited for two), and its share counts all of its CPU since it started.
fn new_process_is_listed_in_its_first_sample(tracker: Tracker) {
    let _quiet = cpu_heavy();
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let idle = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[idle]);
    service.wait_samples(3);

    for attempt in 1..=3 {
        let spawned = cg.spawn(&[&c], spawn::busy_loop());
        let exec_done = SystemTime::now();
        service.wait_until("the new process", service.patience(), |s| {
            let pids = s.pids(&c.path).unwrap_or_default();
            if pids.contains(&spawned) {
                Ok(())
            } else {
                Err(format!("{pids:?}"))
            }
        });
        service.wait_samples(2);
        let snapshots = service.snapshots(&c.path, "count=6&interval=1");
        let born_after: Vec<&Value> = snapshots
            .iter()
            .filter(|s| api::timestamp(s) > exec_done)
            .collect();
        assert!(born_after.len() >= 2, "{} snapshots", born_after.len());
        for snapshot in &born_after {
            assert!(
                api::find(snapshot, spawned).is_some(),
                "a sample begun after the process started does not list it: {:?}",
                api::pids(snapshot)
            );
        }
        let first = api::find(born_after[0], spawned).unwrap();
        let ticks =
            first["stat"]["utime"].as_u64().unwrap() + first["stat"]["stime"].as_u64().unwrap();
        cg.kill(spawned);
        if ticks == 0 {
            // Sampled before it ran a tick: its share is undefined by its CPU; try again.
            eprintln!("attempt {attempt}: the first sample saw no CPU time yet");
            continue;
        }
        // The idle process used nothing: everything the container used since the window
        // opened is the newcomer's, from its start.
        assert!(
            api::share(first) > 90.0,
            "a process born in the window with {ticks} ticks has {} % in its first sample \
             (its CPU since start must count)",
            api::share(first)
        );
        return;
    }
    panic!("three new busy processes ran no tick before their first sample");
}

/// 500s: unknown containers and containers with only unlisted processes (a zombie).
fn errors_and_unlisted_processes(tracker: Tracker) {
    let cg = TestCgroup::new();
    let zombie_only = cg.container(&[Hierarchy::Cpu]);
    let mixed = cg.container(&[Hierarchy::Cpu]);
    let zombie = cg.spawn(&[&zombie_only], spawn::command("/bin/true"));
    let zombie2 = cg.spawn(&[&mixed], spawn::command("/bin/true"));
    let alive = cg.spawn(&[&mixed], spawn::sleeper());
    for z in [zombie, zombie2] {
        wait_for("a zombie", Duration::from_secs(5), || {
            match proc::state(z) {
                Some(s) if s == "Z" => Ok(()),
                s => Err(format!("state {s:?}")),
            }
        });
    }
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &mixed, &[alive]);
    service.wait_samples(2);
    assert_eq!(proc::state(zombie).as_deref(), Some("Z"), "still a zombie");
    for query in [
        "",
        "sort=cpu&count=2",
        "count=2&interval=2&sort=mem&limit=1",
    ] {
        let r = service.processes(&zombie_only.path, query).unwrap_err();
        assert_eq!(
            r.status,
            500,
            "a container with only a zombie: {}",
            r.text()
        );
        assert_eq!(
            r.text(),
            format!("Container {} not found", zombie_only.path)
        );
        assert_plain_text(&r, "not found");
    }
    assert_eq!(
        service.pids(&mixed.path),
        Some(set(&[alive])),
        "the zombie is not listed"
    );

    let unknown = format!("/docker/{}", unique_id());
    let r = service.processes(&unknown, "").unwrap_err();
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), format!("Container {unknown} not found"));
    // A parent of a container is another container (exact match only).
    let parent = format!("/{}", cg.prefix());
    let r = service.processes(&parent, "").unwrap_err();
    assert_eq!(
        (r.status, r.text()),
        (500, format!("Container {parent} not found"))
    );
}

/// `processes` is always an array: `[]` in snapshots before a container's first process;
/// 500 once every process exited.
fn empty_snapshots_are_arrays(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let service = Service::with_tracker(tracker, &[]);
    service.wait_history(8);
    let before_spawn = SystemTime::now();
    let pid = cg.spawn(&[&c], spawn::sleeper());
    wait_listed(&service, &c, &[pid]);

    let r = service.get(&format!("{}?count=30", c.api_path()));
    assert_eq!(r.status, 200, "{}", r.text());
    // Raw check: never `null`.
    assert!(
        !r.text().contains("\"processes\":null"),
        "processes must be [] not null: {}",
        r.text()
    );
    let snapshots = api::check_answer(&r, &c.path, "count=30");
    assert!(snapshots.len() >= 9, "{} snapshots", snapshots.len());
    let mut empty = 0;
    for pair in snapshots.windows(2) {
        // A sample's pass ends before the next one begins: if the next began before the spawn,
        // this one cannot have seen the process.
        if api::timestamp(&pair[1]) < before_spawn {
            assert_eq!(
                pair[0]["processes"],
                serde_json::json!([]),
                "a snapshot before the first process"
            );
            empty += 1;
        }
    }
    assert!(empty >= 3, "only {empty} snapshots before the spawn");
    assert_eq!(
        api::pids(snapshots.last().unwrap()),
        set(&[pid]),
        "the newest lists it"
    );

    // All processes gone: the newest sample has none, so 500, whatever the count.
    cg.kill(pid);
    service.wait_pids(&c.path, None, service.patience());
    let r = service.processes(&c.path, "count=8").unwrap_err();
    assert_eq!(
        (r.status, r.text()),
        (500, format!("Container {} not found", c.path))
    );
}

/// Path validation, 404 and 405, HEAD, percent-encoding and `sort` errors.
fn paths_methods_and_encoding(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[pid]);

    for path in [
        "/api/v1.0/docker/../x/processes",
        "/api/v1.0/docker//x/processes",
        "/api/v1.0//processes",
        "/api/v1.0/./processes",
        "/api/v1.0/docker/./x/processes",
        "/api/v1.0/docker/x//processes",
        "/api/v1.0/docker/%2e%2e/processes",
        "/api/v1.0/docker%2F%2Fx/processes",
        "/api/v1.0/../../etc/processes",
    ] {
        let r = service.get(path);
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        assert_plain_text(&r, path);
        assert!(!r.text().trim().is_empty(), "{path}: 400 needs a reason");
    }

    // `/` is the web page (tests/web.rs).
    for path in [
        "/api",
        "/api/v1.0",
        "/api/v1.0/",
        "/api/v1.0/processes",
        "/api/v1.1/docker/x/processes",
        "/api/v1.0/docker/x",
        "/api/v1.0/docker/x/processes/",
        "/api/v1.0/docker/x/stats",
        "/nonexistent",
        "/favicon.ico",
    ] {
        let r = service.get(path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_plain_text(&r, path);
    }

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let r = service.request(method, &c.api_path(), "Content-Length: 0\r\n");
        assert_eq!(r.status, 405, "{method}: {}", r.text());
    }

    // HEAD: 200 and no body at all.
    let raw = http::exchange_raw(
        service.addr,
        format!(
            "HEAD {} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            c.api_path()
        )
        .as_bytes(),
    )
    .unwrap();
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let r = http::parse_response(&raw).unwrap();
    assert_eq!(r.status, 200, "HEAD");
    assert_eq!(
        raw.len(),
        head_end + 4,
        "HEAD sent a body: {:?}",
        String::from_utf8_lossy(&raw)
    );

    // %2F and other percent-encoded bytes are decoded before matching.
    let relative = &c.path[1..];
    for encoded in [
        relative.replace('/', "%2F"),
        relative.replace('/', "%2f"),
        relative.replacen('c', "%63", 1),
        http::encode_path(relative).replace('-', "%2D"),
    ] {
        let path = format!("/api/v1.0/{encoded}/processes");
        let r = service.get(&path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        let snapshots = api::check_answer(&r, &c.path, "");
        assert_eq!(api::pids(snapshots.last().unwrap()), set(&[pid]), "{path}");
    }

    for sort in ["bogus", "CPU", "pid", "cpu%20", "rss"] {
        let r = service
            .processes(&c.path, &format!("sort={sort}"))
            .unwrap_err();
        assert_eq!(r.status, 400, "sort={sort}: {}", r.text());
        assert!(
            r.text().contains("cpu") && r.text().contains("mem"),
            "sort={sort}: the error names cpu and mem: {:?}",
            r.text()
        );
        assert_plain_text(&r, "bad sort");
    }
}

/// The four API cases the original service's own tests check.
fn original_service_cases(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[pid]);

    assert_eq!(service.get("/api/v1.0/unknown").status, 404);
    let r = service.get("/api/v1.0/docker/unknown-container/processes");
    assert_eq!(r.status, 500);
    assert_eq!(r.text(), "Container /docker/unknown-container not found");
    for query in ["interval=100", "count=100"] {
        let r = service.processes(&c.path, query).unwrap_err();
        assert_eq!(r.status, 500, "{query}");
        assert_eq!(r.text(), "Wrong offset and interval combination");
    }
    for query in ["", "sort=mem", "sort=cpu"] {
        let snapshots = service.snapshots(&c.path, query);
        assert_eq!(api::pids(snapshots.last().unwrap()), set(&[pid]), "{query}");
    }
}

/// Container names on the v1 `cpu` hierarchy: Docker, systemd, Kubernetes, odd characters;
/// exact match only; other hierarchies do not name the container.
fn naming_v1_cpu(tracker: Tracker) {
    let cg = TestCgroup::new();
    let id = unique_id();
    // A pod uid as systemd escapes it (dashes become underscores), carrying the id's marker.
    let uid = format!(
        "{}_{}_{}_{}_{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    let docker = cg.container_at(&format!("/docker/{}", unique_id()), &[Hierarchy::Cpu]);
    let systemd = cg.container_at(
        &format!("/system.slice/docker-{}.scope", unique_id()),
        &[Hierarchy::Cpu],
    );
    let pod = format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice");
    let k8s = cg.container_at(
        &format!("{pod}/cri-containerd-{}.scope", unique_id()),
        &[Hierarchy::Cpu],
    );
    let odd = cg.container_named("svc@1:x+y_z-w.scope", &[Hierarchy::Cpu]);
    let parent = cg.container_named("parent", &[Hierarchy::Cpu]);
    let child = cg.container_named("parent/child", &[Hierarchy::Cpu]);
    // One process in four hierarchies under four different paths: only `cpu` names it.
    let in_cpu = cg.container_named("in-cpu", &[Hierarchy::Cpu]);
    let in_cpuacct = cg.container_named("in-cpuacct", &[Hierarchy::Cpuacct]);
    let in_cpuset = cg.container_named("in-cpuset", &[Hierarchy::Cpuset]);
    let in_unified = cg.container_named("in-unified", &[Hierarchy::Unified]);

    let mut expected = Vec::new();
    for c in [&docker, &systemd, &k8s, &odd, &parent, &child] {
        expected.push((c, cg.spawn(&[c], spawn::sleeper())));
    }
    let spread = cg.spawn(
        &[&in_cpuset, &in_cpuacct, &in_unified, &in_cpu],
        spawn::sleeper(),
    );
    expected.push((&in_cpu, spread));
    assert_eq!(
        proc::cgroup_path(spread, "cpuset").as_deref(),
        Some(in_cpuset.path.as_str())
    );

    let service = Service::with_tracker(tracker, &[]);
    for (c, pid) in &expected {
        wait_listed(&service, c, &[*pid]);
        let snapshot = service.snapshots(&c.path, "").pop().unwrap();
        assert_eq!(api::processes(&snapshot)[0]["cgroup"], c.path.as_str());
    }
    // Parents list nothing of their children; other hierarchies name no container.
    for path in [
        pod.as_str(),
        "/kubepods.slice",
        in_cpuacct.path.as_str(),
        in_cpuset.path.as_str(),
        in_unified.path.as_str(),
    ] {
        assert_eq!(service.pids(path), None, "{path} must be not found");
    }
    // The same with the naming forced to v1-cpu.
    drop(service);
    let service = Service::with_tracker(tracker, &["--cgroup-hierarchy", "v1-cpu"]);
    wait_listed(&service, &in_cpu, &[spread]);
    assert_eq!(service.pids(&in_cpuset.path), None);
    assert_eq!(service.pids(&in_unified.path), None);
}

/// `--cgroup-hierarchy unified`: the v2 path names the container, even on a hybrid host.
fn naming_unified(tracker: Tracker) {
    let cg = TestCgroup::new();
    let v2 = cg.container(&[Hierarchy::Unified]);
    let v1 = cg.container(&[Hierarchy::Cpu]);
    let v2_only = cg.container(&[Hierarchy::Unified]);
    let v1_only = cg.container(&[Hierarchy::Cpu]);
    let parent = cg.container_named("parent", &[Hierarchy::Unified]);
    let child = cg.container_named("parent/child", &[Hierarchy::Unified]);
    let both = cg.spawn(&[&v1, &v2], spawn::sleeper());
    let only_v2 = cg.spawn(&[&v2_only], spawn::sleeper());
    let only_v1 = cg.spawn(&[&v1_only], spawn::sleeper());
    let in_parent = cg.spawn(&[&parent], spawn::sleeper());
    let in_child = cg.spawn(&[&child], spawn::sleeper());
    let service = Service::with_tracker(tracker, &["--cgroup-hierarchy", "unified"]);
    wait_listed(&service, &v2, &[both]);
    wait_listed(&service, &v2_only, &[only_v2]);
    wait_listed(&service, &parent, &[in_parent]);
    wait_listed(&service, &child, &[in_child]);
    let snapshot = service.snapshots(&v2.path, "").pop().unwrap();
    assert_eq!(api::processes(&snapshot)[0]["cgroup"], v2.path.as_str());
    assert_eq!(service.pids(&v1.path), None, "the v1 path names nothing");
    assert_eq!(service.pids(&v1_only.path), None);
    // A process only in a v1 cgroup is at the v2 root here: a host process, never listed.
    assert_eq!(
        proc::cgroup_path(only_v1, "").as_deref(),
        Some(proc::cgroup_path(std::process::id(), "").unwrap().as_str())
    );
}

/// A name with a newline and `) (`, a name that is not UTF-8, a one-character command line.
fn odd_names_and_short_cmdline(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let other = cg.container(&[Hierarchy::Cpu]);
    let dir = cg.temp_dir();
    let (weird_cmd, weird_path) = spawn::weird_name_sleeper(&dir);
    let weird = cg.spawn(&[&c], weird_cmd);
    let (latin_cmd, _) = spawn::named_sleeper(&dir, b"x\xffy");
    let latin = cg.spawn(&[&c], latin_cmd);
    let short = cg.spawn(&[&c], spawn::one_char_cmdline());
    let normal = cg.spawn(&[&other], spawn::sleeper());
    assert_eq!(proc::cmdline(short).as_deref(), Some("c"));

    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[weird, latin, short]);
    let snapshot = service.snapshots(&c.path, "").pop().unwrap();

    let w = api::find(&snapshot, weird).unwrap();
    assert_eq!(
        w["stat"]["comm"], "(a) (b\nc)",
        "comm between the first ( and the last )"
    );
    assert_eq!(
        w["stat"]["state"], "S",
        "fields after the comm are parsed right"
    );
    assert_eq!(w["stat"]["ppid"], u64::from(std::process::id()));
    assert_eq!(
        w["stat"]["starttime"],
        proc::stat_field(weird, 22).unwrap().parse::<u64>().unwrap()
    );
    assert_eq!(
        w["status"]["Name"],
        proc::status_field(weird, "Name").unwrap().as_str(),
        "status.Name is the whole Name line"
    );
    assert_eq!(
        w["cmdline"],
        format!("{} 1000", weird_path.display()).as_str()
    );

    let l = api::find(&snapshot, latin).unwrap();
    let comm = l["stat"]["comm"].as_str().unwrap();
    assert!(
        comm.starts_with("(x") && comm.ends_with("y)") && comm.contains('\u{fffd}'),
        "a non-UTF-8 name is replaced, not dropped: {comm:?}"
    );
    assert_eq!(l["stat"]["state"], "S");

    let s = api::find(&snapshot, short).unwrap();
    assert_eq!(
        s["cmdline"], "c",
        "a single one-character argument is listed"
    );

    // The service keeps serving, and serves the right data.
    assert_eq!(service.healthz()["status"], "ok");
    for _ in 0..3 {
        assert_eq!(service.pids(&other.path), Some(set(&[normal])));
        assert_eq!(service.pids(&c.path), Some(set(&[weird, latin, short])));
        service.wait_samples(1);
    }
}

/// Only thread-group leaders are listed; threads never appear as processes.
fn threads_are_not_processes(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let before = cg.spawn(&[&c], spawn::threaded(4));
    let service = Service::with_tracker(tracker, &[]);
    let after = cg.spawn(&[&c], spawn::threaded(4));
    let tids_before = wait_threads(before, 5);
    let tids_after = wait_threads(after, 5);
    let all_threads_started = SystemTime::now();
    wait_listed(&service, &c, &[before, after]);
    service.wait_samples(4);
    let snapshots = service.snapshots(&c.path, "count=3");
    for snapshot in &snapshots {
        let complete = api::timestamp(snapshot) > all_threads_started;
        for p in api::processes(snapshot) {
            let pid = api::pid(p);
            assert_eq!(proc::tgid(pid), Some(pid), "listed pid {pid} is a thread");
            if complete {
                assert_eq!(p["status"]["Threads"], 5);
                assert_eq!(p["stat"]["num_threads"], 5);
            }
        }
        let listed = api::pids(snapshot);
        for tid in tids_before.iter().chain(&tids_after) {
            if *tid != before && *tid != after {
                assert!(!listed.contains(tid), "thread {tid} listed as a process");
            }
        }
    }
    assert!(api::timestamp(&snapshots[0]) > all_threads_started);
}

/// /healthz: status, tracker, counts and freshness.
fn healthz_reports_the_service(tracker: Tracker) {
    let cg = TestCgroup::new();
    let a = cg.container(&[Hierarchy::Cpu]);
    let b = cg.container(&[Hierarchy::Cpu]);
    let pa = cg.spawn(&[&a], spawn::sleeper());
    let pb1 = cg.spawn(&[&b], spawn::sleeper());
    let pb2 = cg.spawn(&[&b], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &a, &[pa]);
    wait_listed(&service, &b, &[pb1, pb2]);

    let r = service.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.media_type().as_deref(), Some("application/json"));
    let h = r.json();
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["tracker"], tracker.name(), "{h}");
    assert!(h["tracked_processes"].as_u64().unwrap() >= 3, "{h}");
    assert!(h["containers"].as_u64().unwrap() >= 2, "{h}");
    let period = service.period.as_secs_f64();
    let age = h["newest_sample_age_seconds"].as_f64().unwrap();
    assert!(
        (0.0..2.0 * period + 0.5).contains(&age),
        "newest sample {age}s old with a {period}s period: {h}"
    );
    assert_eq!(h["sample_period_seconds"].as_f64(), Some(period), "{h}");
    let in_history = h["samples_in_history"].as_u64().unwrap();
    assert!(in_history >= 1 && in_history <= h["history_capacity"].as_u64().unwrap());
    for key in [
        "samples_taken",
        "events_received",
        "events_lost",
        "reconciliations",
        "repairs",
    ] {
        assert!(h[key].is_u64(), "{key} in {h}");
    }
    assert!(h["degraded"].is_null(), "{h}");
    // It keeps sampling.
    let taken = h["samples_taken"].as_u64().unwrap();
    service.wait_samples(2);
    assert!(service.health()["samples_taken"].as_u64().unwrap() >= taken + 2);
}

/// Malformed and hostile requests: none crashes the service, hangs it, or makes it serve wrong
/// data afterwards.
fn malformed_requests_do_not_hurt(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    wait_listed(&service, &c, &[pid]);

    // A client that sends half a request and waits: others are still served meanwhile.
    let mut stalled = TcpStream::connect(service.addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();

    let long_path = format!("/api/v1.0/{}/processes", "a/".repeat(40_000));
    let long_query = format!("{}?{}", c.api_path(), "count=1&".repeat(20_000));
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "y".repeat(1 << 20)
    );
    let raws: Vec<Vec<u8>> = vec![
        b"GARBAGE\r\n\r\n".to_vec(),
        b"\x00\x01\x02\xff\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /api/v1.0/%zz/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET /api/v1.0/%ff%fe/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        b"GET /api/v1.0/a%00b/processes HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        b"GET /api/v1.0/%/processes?count=%&sort=% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            .to_vec(),
        format!(
            "GET {}?count=%ff&interval=%00&sort=&limit=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            c.api_path()
        )
        .into_bytes(),
        format!("GET {long_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        format!("GET {long_query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes(),
        big_header.into_bytes(),
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\nabc"
            .to_vec(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n"
            .to_vec(),
    ];
    for raw in &raws {
        let began = Instant::now();
        // Any answer, or a closed connection, is fine; a hang or a crash is not.
        let _ = service.exchange(raw);
        assert!(
            began.elapsed() < Duration::from_secs(12),
            "a malformed request took {:?}: {:?}",
            began.elapsed(),
            http::truncate(&String::from_utf8_lossy(raw), 200)
        );
        let r = service.get("/healthz");
        assert_eq!(
            r.status,
            200,
            "after {:?}",
            http::truncate(&String::from_utf8_lossy(raw), 200)
        );
    }
    // A connection closed half-way through a request.
    {
        let mut s = TcpStream::connect(service.addr).unwrap();
        s.write_all(b"GET /api/v1.0/docker/x/proc").unwrap();
    }
    // HTTP/1.0 without Host still works.
    let r = service
        .exchange(format!("GET {} HTTP/1.0\r\n\r\n", c.api_path()).as_bytes())
        .unwrap();
    assert_eq!(r.status, 200, "HTTP/1.0: {}", r.text());
    // Invalid parameters fall back to defaults.
    let r = service
        .exchange(
            format!(
                "GET {}?count=%ff&interval=%00&limit=%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                c.api_path()
            )
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(r.status, 200, "invalid numbers are defaults: {}", r.text());
    let snapshots = api::check_answer(&r, &c.path, "");
    assert_eq!(snapshots.len(), 1);

    // Still alive and right.
    assert_eq!(service.pids(&c.path), Some(set(&[pid])));
    assert_eq!(service.healthz()["status"], "ok");
    // The stalled client got nothing wrong either: finish its request.
    stalled.write_all(b"Connection: close\r\n\r\n").unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stalled.read_to_end(&mut answer);
    if !answer.is_empty() {
        let r = http::parse_response(&answer).unwrap();
        assert!(
            r.status == 200 || r.status == 408,
            "stalled client: {}",
            r.status
        );
    }
}

fn assert_prompt_exit(service: &mut Service, signal: Signal) {
    let (status, took) = service
        .stop_with(signal, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit within 5s of {signal}"));
    assert!(
        status.success(),
        "exit status after {signal}: {status}; log:\n{}",
        service.log_text()
    );
    assert!(
        took < Duration::from_secs(3),
        "{signal}: exit took {took:?}"
    );
}

/// SIGTERM: graceful shutdown, exit 0, promptly, with an idle keep-alive connection open.
fn shutdown_on_sigterm(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    service.wait_samples(1);
    // An idle keep-alive connection that already got its answer.
    let mut idle = TcpStream::connect(service.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 512];
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    assert_prompt_exit(&mut service, Signal::SIGTERM);
}

/// SIGINT (Ctrl-C): the same.
fn shutdown_on_sigint(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    service.wait_samples(1);
    assert_prompt_exit(&mut service, Signal::SIGINT);
}

/// A client that sent half a request and went quiet must not hold the shutdown.
fn shutdown_with_a_stalled_client(tracker: Tracker) {
    let mut service = Service::with_tracker(tracker, &[]);
    let mut stalled = TcpStream::connect(service.addr).unwrap();
    stalled
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Let the service read what was sent.
    std::thread::sleep(Duration::from_millis(200));
    assert_prompt_exit(&mut service, Signal::SIGTERM);
    drop(stalled);
}
