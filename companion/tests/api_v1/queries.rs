//! The query parameters (`sort`, `limit`, `count`, `interval`) and the young history.

use super::*;

both_trackers!(
    sort_mem_and_limit,
    count_and_interval,
    young_history_and_first_sample,
    new_process_is_listed_in_its_first_sample
);

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
    let all = pid_set(&[small1, big, small2]);
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[small1, big, small2]);
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
    service.wait_listed(&c, &[pid]);
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
    assert_eq!(api::pids(snapshots.last().unwrap()), pid_set(&[pid]));
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
    service.wait_listed(&c, &[idle]);
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
