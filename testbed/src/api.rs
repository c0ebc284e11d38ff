//! The v1.0 contract as checks on answers: keys, order, types, sorting and the share invariants.

use std::{
    collections::BTreeSet,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use crate::{http::Response, proc::Pid};

/// A JSON type of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    Str,
    U64,
    I64,
    U8,
    /// Array of i64.
    ArrI64,
    /// Array of u32.
    ArrU32,
}

/// The keys of a Process, in order.
pub const PROCESS_KEYS: [&str; 5] = ["status", "stat", "cmdline", "relativecpuusage", "cgroup"];

/// `status`: 44 keys, in order, with their types.
pub const STATUS_KEYS: [(&str, Ty); 44] = [
    ("Name", Ty::Str),
    ("State", Ty::Str),
    ("Tgid", Ty::U64),
    ("Pid", Ty::U64),
    ("PPid", Ty::I64),
    ("TracerPid", Ty::U64),
    ("RealUid", Ty::U64),
    ("EffectiveUid", Ty::U64),
    ("SavedSetUid", Ty::U64),
    ("FilesystemUid", Ty::U64),
    ("RealGid", Ty::U64),
    ("EffectiveGid", Ty::U64),
    ("SavedSetGid", Ty::U64),
    ("FilesystemGid", Ty::U64),
    ("FDSize", Ty::U64),
    ("Groups", Ty::ArrI64),
    ("VmPeak", Ty::U64),
    ("VmSize", Ty::U64),
    ("VmLck", Ty::U64),
    ("VmHWM", Ty::U64),
    ("VmRSS", Ty::U64),
    ("VmData", Ty::U64),
    ("VmStk", Ty::U64),
    ("VmExe", Ty::U64),
    ("VmLib", Ty::U64),
    ("VmPTE", Ty::U64),
    ("VmSwap", Ty::U64),
    ("Threads", Ty::U64),
    ("SigQLength", Ty::U64),
    ("SigQLimit", Ty::U64),
    ("SigPnd", Ty::U64),
    ("ShdPnd", Ty::U64),
    ("SigBlk", Ty::U64),
    ("SigIgn", Ty::U64),
    ("SigCgt", Ty::U64),
    ("CapInh", Ty::U64),
    ("CapPrm", Ty::U64),
    ("CapEff", Ty::U64),
    ("CapBnd", Ty::U64),
    ("Seccomp", Ty::U8),
    ("CpusAllowed", Ty::ArrU32),
    ("MemsAllowed", Ty::ArrU32),
    ("VoluntaryCtxtSwitches", Ty::U64),
    ("NonvoluntaryCtxtSwitches", Ty::U64),
];

/// `stat`: 52 keys, in order, with their types.
pub const STAT_KEYS: [(&str, Ty); 52] = [
    ("pid", Ty::U64),
    ("comm", Ty::Str),
    ("state", Ty::Str),
    ("ppid", Ty::I64),
    ("pgrp", Ty::I64),
    ("session", Ty::I64),
    ("tty_nr", Ty::I64),
    ("tpgid", Ty::I64),
    ("flags", Ty::U64),
    ("minflt", Ty::U64),
    ("cminflt", Ty::U64),
    ("majflt", Ty::U64),
    ("cmajflt", Ty::U64),
    ("utime", Ty::U64),
    ("stime", Ty::U64),
    ("cutime", Ty::I64),
    ("cstime", Ty::I64),
    ("priority", Ty::I64),
    ("nice", Ty::I64),
    ("num_threads", Ty::I64),
    ("itrealvalue", Ty::I64),
    ("starttime", Ty::U64),
    ("vsize", Ty::U64),
    ("rss", Ty::I64),
    ("rsslim", Ty::U64),
    ("startcode", Ty::U64),
    ("endcode", Ty::U64),
    ("startstack", Ty::U64),
    ("kstkesp", Ty::U64),
    ("kstkeip", Ty::U64),
    ("signal", Ty::U64),
    ("blocked", Ty::U64),
    ("sigignore", Ty::U64),
    ("sigcatch", Ty::U64),
    ("wchan", Ty::U64),
    ("nswap", Ty::U64),
    ("cnswap", Ty::U64),
    ("exit_signal", Ty::I64),
    ("processor", Ty::I64),
    ("rt_priority", Ty::U64),
    ("policy", Ty::U64),
    ("delayacct_blkio_ticks", Ty::U64),
    ("guest_time", Ty::U64),
    ("cguest_time", Ty::I64),
    ("start_data", Ty::U64),
    ("end_data", Ty::U64),
    ("start_brk", Ty::U64),
    ("arg_start", Ty::U64),
    ("arg_end", Ty::U64),
    ("env_start", Ty::U64),
    ("env_end", Ty::U64),
    ("exit_code", Ty::I64),
];

fn type_ok(value: &Value, ty: Ty) -> bool {
    match ty {
        Ty::Str => value.is_string(),
        Ty::U64 => value.is_u64(),
        Ty::I64 => value.is_i64(),
        Ty::U8 => value.as_u64().is_some_and(|v| v <= 255),
        Ty::ArrI64 => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_i64)),
        Ty::ArrU32 => value.as_array().is_some_and(|a| {
            a.iter()
                .all(|v| v.as_u64().is_some_and(|n| n <= 0xffff_ffff))
        }),
    }
}

fn keys(value: &Value) -> Vec<&str> {
    value
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// Checks one object against a key list: exactly these keys, in this order, with these types.
pub fn check_keys(what: &str, value: &Value, expected: &[(&str, Ty)]) -> Result<(), String> {
    let got = keys(value);
    let want: Vec<&str> = expected.iter().map(|(k, _)| *k).collect();
    if got != want {
        return Err(format!(
            "{what}: keys {got:?}, expected exactly {want:?} in this order"
        ));
    }
    for (key, ty) in expected {
        if !type_ok(&value[*key], *ty) {
            return Err(format!("{what}.{key} = {} is not {ty:?}", value[*key]));
        }
    }
    Ok(())
}

/// Checks one Process object's shape.
pub fn check_process(process: &Value) -> Result<(), String> {
    let got = keys(process);
    if got != PROCESS_KEYS {
        return Err(format!(
            "process keys {got:?}, expected exactly {PROCESS_KEYS:?}"
        ));
    }
    check_keys("status", &process["status"], &STATUS_KEYS)?;
    check_keys("stat", &process["stat"], &STAT_KEYS)?;
    if !process["cmdline"].is_string() || !process["cgroup"].is_string() {
        return Err(format!("cmdline or cgroup not a string: {process}"));
    }
    let comm = process["stat"]["comm"].as_str().unwrap_or("");
    if !(comm.starts_with('(') && comm.ends_with(')') && comm.len() >= 2) {
        return Err(format!("stat.comm {comm:?} lacks its parentheses"));
    }
    if process["stat"]["pid"] != process["status"]["Pid"] {
        return Err(format!(
            "stat.pid {} != status.Pid {}",
            process["stat"]["pid"], process["status"]["Pid"]
        ));
    }
    Ok(())
}

pub fn pid(process: &Value) -> Pid {
    process["stat"]["pid"].as_u64().expect("stat.pid") as Pid
}

pub fn share(process: &Value) -> f64 {
    process["relativecpuusage"]
        .as_f64()
        .expect("relativecpuusage is a number")
}

pub fn vm_rss(process: &Value) -> u64 {
    process["status"]["VmRSS"].as_u64().expect("VmRSS")
}

/// The processes array of a snapshot.
pub fn processes(snapshot: &Value) -> &Vec<Value> {
    snapshot["processes"]
        .as_array()
        .expect("processes is an array")
}

/// The listed pids of a snapshot.
pub fn pids(snapshot: &Value) -> BTreeSet<Pid> {
    processes(snapshot).iter().map(pid).collect()
}

/// The listed process with this pid, if any.
pub fn find(snapshot: &Value, wanted: Pid) -> Option<&Value> {
    processes(snapshot).iter().find(|p| pid(p) == wanted)
}

/// Sum of the listed shares.
pub fn share_sum(snapshot: &Value) -> f64 {
    processes(snapshot).iter().map(share).sum()
}

/// The first value of a query parameter, raw.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Parses an RFC 3339 UTC timestamp `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
pub fn parse_timestamp(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("timestamp {text:?} is not RFC 3339 UTC (…Z)");
    let b = text.as_bytes();
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return Err(bad());
    }
    let digits = |range: std::ops::Range<usize>| -> Result<u64, String> {
        let s = text.get(range).ok_or_else(bad)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return Err(bad());
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return Err(bad());
    }
    let nanos = match &text[19..text.len() - 1] {
        "" => 0,
        fraction => {
            let digits = fraction.strip_prefix('.').ok_or_else(bad)?;
            if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit())
            {
                return Err(bad());
            }
            format!("{digits:0<9}").parse::<u64>().map_err(|_| bad())?
        }
    };
    let days = days_from_civil(year as i64, month as i64, day as i64);
    let secs = days * 86_400 + (hour * 3600 + minute * 60 + second) as i64;
    Ok(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The timestamp of a snapshot.
pub fn timestamp(snapshot: &Value) -> SystemTime {
    parse_timestamp(
        snapshot["timestamp"]
            .as_str()
            .expect("timestamp is a string"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Checks a 200 answer of the processes route against every invariant of the contract and
/// returns its snapshots:
/// - `Content-Type: application/json`; a non-empty JSON array of snapshots, each exactly
///   `{timestamp, processes}`, timestamps RFC 3339 UTC and strictly increasing, oldest first;
/// - every Process has the contract's keys, order and types, `cgroup` = the container, unique
///   pids;
/// - shares are finite, in [0, 100], and sum to at most 100;
/// - the order follows `sort` (ascending pid without it), ties by ascending pid; `limit` is kept.
pub fn check_answer(r: &Response, container: &str, query: &str) -> Vec<Value> {
    let fail = |why: String| -> ! {
        panic!(
            "{container}?{query}: {why}\nbody: {}",
            crate::http::truncate(&r.text(), 4000)
        )
    };
    if r.media_type().as_deref() != Some("application/json") {
        fail(format!(
            "Content-Type {:?}, expected application/json",
            r.header("content-type")
        ));
    }
    let value = r.json();
    let Some(snapshots) = value.as_array() else {
        fail("not a JSON array".into())
    };
    if snapshots.is_empty() {
        fail("an empty array of snapshots".into());
    }
    let sort = query_param(query, "sort").unwrap_or("");
    let limit = query_param(query, "limit")
        .and_then(|l| l.trim_start_matches('+').parse::<i64>().ok())
        .filter(|&l| l > 0 && !sort.is_empty());
    let mut previous: Option<SystemTime> = None;
    for snapshot in snapshots {
        if keys(snapshot) != ["timestamp", "processes"] {
            fail(format!(
                "snapshot keys {:?}, expected [timestamp, processes]",
                keys(snapshot)
            ));
        }
        let ts = snapshot["timestamp"].as_str().unwrap_or_default();
        let ts = parse_timestamp(ts).unwrap_or_else(|e| fail(e));
        if previous.is_some_and(|p| p >= ts) {
            fail("timestamps are not strictly increasing (oldest first)".into());
        }
        previous = Some(ts);
        let Some(list) = snapshot["processes"].as_array() else {
            fail(format!(
                "processes is {}, not an array",
                snapshot["processes"]
            ))
        };
        let mut seen = BTreeSet::new();
        let mut sum = 0.0;
        for process in list {
            check_process(process).unwrap_or_else(|e| fail(e));
            if process["cgroup"] != container {
                fail(format!(
                    "process {} has cgroup {}, asked for {container}",
                    pid(process),
                    process["cgroup"]
                ));
            }
            if !seen.insert(pid(process)) {
                fail(format!("pid {} listed twice", pid(process)));
            }
            let s = share(process);
            if !s.is_finite() || !(0.0..=100.0 + 1e-9).contains(&s) {
                fail(format!("share {s} of {} out of [0, 100]", pid(process)));
            }
            sum += s;
        }
        if sum > 100.0 + 1e-6 * list.len() as f64 {
            fail(format!("shares sum to {sum} > 100"));
        }
        if let Some(limit) = limit
            && list.len() as i64 > limit
        {
            fail(format!("{} processes with limit={limit}", list.len()));
        }
        for pair in list.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let ordered = match sort {
                "cpu" => share(a) > share(b) || (share(a) == share(b) && pid(a) < pid(b)),
                "mem" => vm_rss(a) > vm_rss(b) || (vm_rss(a) == vm_rss(b) && pid(a) < pid(b)),
                _ => pid(a) < pid(b),
            };
            if !ordered {
                fail(format!(
                    "order (sort={sort:?}) broken between pid {} and pid {}",
                    pid(a),
                    pid(b)
                ));
            }
        }
    }
    snapshots.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = parse_timestamp("2026-11-28T08:58:33.081870827Z").unwrap();
        let d = t.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), 1_795_856_313);
        assert_eq!(d.subsec_nanos(), 81_870_827);
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
        assert!(parse_timestamp("2026-11-28T08:58:33.081870827+01:00").is_err());
        assert!(parse_timestamp("2026-11-28 08:58:33Z").is_err());
        assert!(parse_timestamp("2026-11-28T08:58:33.Z").is_err());
    }
}
