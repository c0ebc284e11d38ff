//! The answer's schema: keys, types and values against /proc, and the CPU share of a busy process.

use super::*;

both_trackers!(
    schema_keys_types_and_values,
    busy_process_gets_the_cpu_share
);

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

/// Every key of the contract, its order, its JSON type, and the values against /proc.
fn schema_keys_types_and_values(tracker: Tracker) {
    let cg = TestCgroup::new();
    let c = cg.container(&[Hierarchy::Cpu]);
    let pid = cg.spawn(&[&c], spawn::sleeper());
    let service = Service::with_tracker(tracker, &[]);
    service.wait_listed(&c, &[pid]);

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
    service.wait_listed(&c, &[idle1, busy, idle2]);
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
