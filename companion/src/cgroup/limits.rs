//! A container's CPU and memory limits and the kernel's counters of what enforcing them cost:
//! the text of the cgroup v1 and v2 files, parsed, and the figures over an interval.
//!
//! Parsers take bytes (a file read through a held descriptor) and answer a typed error for text
//! the kernel would not write; the reader turns that into an unknown (`None`) field.

use serde::Serialize;

/// Limits at or above this are "no limit" (cgroup v1 prints a page-rounded `i64::MAX`).
const UNLIMITED: u64 = 1 << 62;

/// Text that is not what the kernel writes in this file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("{file}: expected a number, found {text:?}")]
    NotANumber { file: &'static str, text: String },
    #[error("{file}: line {line:?} is not `key value`")]
    BadLine { file: &'static str, line: String },
    #[error("{file}: no {key}")]
    Missing {
        file: &'static str,
        key: &'static str,
    },
}

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(80).collect()
}

fn number(file: &'static str, bytes: &[u8]) -> Result<u64, FileError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| FileError::NotANumber {
            file,
            text: text_of(bytes),
        })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// A file holding one number (`memory.current`, `cpu.shares`, `memory.failcnt`, …).
pub fn parse_number(file: &'static str, text: &[u8]) -> Result<u64, FileError> {
    number(file, trim(text))
}

/// A byte limit: a number, or `max` (v2); v1's near-`i64::MAX` is no limit too. `None`: none.
pub fn parse_byte_limit(file: &'static str, text: &[u8]) -> Result<Option<u64>, FileError> {
    match trim(text) {
        b"max" => Ok(None),
        value => Ok(Some(number(file, value)?).filter(|&n| n < UNLIMITED)),
    }
}

/// v1 `cpu.cfs_quota_us`: microseconds per period, `-1` for none.
pub fn parse_cfs_quota(text: &[u8]) -> Result<Option<u64>, FileError> {
    const FILE: &str = "cpu.cfs_quota_us";
    match trim(text) {
        b"-1" => Ok(None),
        value => Ok(Some(number(FILE, value)?)),
    }
}

/// v2 `cpu.max`: `$MAX $PERIOD`, `max` for no quota. Answers (quota, period) in microseconds.
pub fn parse_cpu_max(text: &[u8]) -> Result<(Option<u64>, u64), FileError> {
    const FILE: &str = "cpu.max";
    let mut fields = trim(text)
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(FileError::BadLine {
            file: FILE,
            line: text_of(text),
        });
    };
    let quota = match quota {
        b"max" => None,
        value => Some(number(FILE, value)?),
    };
    Ok((quota, number(FILE, period)?))
}

/// The CPU cores a quota allows per period; `None` without a quota (or a nonsensical period).
pub fn cores(quota_us: Option<u64>, period_us: u64) -> Option<f64> {
    let quota = quota_us?;
    (period_us > 0).then(|| quota as f64 / period_us as f64)
}

/// `key value` lines (`cpu.stat`, `memory.events`, `memory.oom_control`): each pair in order.
/// Empty lines are skipped; any other line that is not two fields with a number is an error.
pub fn keyed<'a>(
    file: &'static str,
    text: &'a [u8],
) -> impl Iterator<Item = Result<(&'a [u8], u64), FileError>> {
    text.split(|&b| b == b'\n')
        .filter(|line| !trim(line).is_empty())
        .map(move |line| {
            let mut fields = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            match (fields.next(), fields.next(), fields.next()) {
                (Some(key), Some(value), None) => Ok((key, number(file, value)?)),
                _ => Err(FileError::BadLine {
                    file,
                    line: text_of(line),
                }),
            }
        })
}

/// CFS bandwidth counters of `cpu.stat` (v1: `throttled_time` in ns; v2: `throttled_usec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuStat {
    /// Enforcement periods that elapsed with the cgroup runnable.
    pub periods: u64,
    /// Of those, periods in which it was throttled.
    pub throttled_periods: u64,
    /// Total time its run queues spent throttled, in nanoseconds.
    pub throttled_ns: u64,
}

impl CpuStat {
    /// `None` when the file has no bandwidth counters (v2 without the cpu controller enabled).
    pub fn parse(file: &'static str, text: &[u8]) -> Result<Option<CpuStat>, FileError> {
        let (mut periods, mut throttled, mut time_ns) = (None, None, None);
        for pair in keyed(file, text) {
            let (key, value) = pair?;
            match key {
                b"nr_periods" => periods = Some(value),
                b"nr_throttled" => throttled = Some(value),
                b"throttled_time" => time_ns = Some(value),
                b"throttled_usec" => time_ns = Some(value.saturating_mul(1000)),
                _ => {}
            }
        }
        match (periods, throttled, time_ns) {
            (None, None, None) => Ok(None),
            (Some(periods), Some(throttled_periods), Some(throttled_ns)) => Ok(Some(CpuStat {
                periods,
                throttled_periods,
                throttled_ns,
            })),
            (None, ..) => Err(FileError::Missing {
                file,
                key: "nr_periods",
            }),
            (_, None, _) => Err(FileError::Missing {
                file,
                key: "nr_throttled",
            }),
            (.., None) => Err(FileError::Missing {
                file,
                key: "throttled time",
            }),
        }
    }
}

/// v2 `memory.events`: how often each memory boundary was hit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemoryEvents {
    /// Reclaimed below `memory.low` (under pressure from elsewhere).
    pub low: u64,
    /// Throttled for going over `memory.high`.
    pub high: u64,
    /// About to go over `memory.max`.
    pub max: u64,
    /// The OOM killer was invoked.
    pub oom: u64,
    /// Processes killed by it.
    pub oom_kill: u64,
}

impl MemoryEvents {
    pub fn parse(text: &[u8]) -> Result<MemoryEvents, FileError> {
        let mut events = MemoryEvents::default();
        for pair in keyed("memory.events", text) {
            let (key, value) = pair?;
            match key {
                b"low" => events.low = value,
                b"high" => events.high = value,
                b"max" => events.max = value,
                b"oom" => events.oom = value,
                b"oom_kill" => events.oom_kill = value,
                _ => {}
            }
        }
        Ok(events)
    }
}

/// v1 `memory.oom_control`: processes the OOM killer killed in the cgroup (`oom_kill`, since
/// Linux 4.13).
pub fn parse_oom_control(text: &[u8]) -> Result<Option<u64>, FileError> {
    for pair in keyed("memory.oom_control", text) {
        if let (b"oom_kill", value) = pair? {
            return Ok(Some(value));
        }
    }
    Ok(None)
}

/// What a container's cgroup says about its CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CpuReading {
    /// Cores the CFS quota allows; `None` without a quota or when unknown.
    pub limit_cores: Option<f64>,
    /// v1 `cpu.shares`.
    pub shares: Option<u64>,
    /// v2 `cpu.weight`.
    pub weight: Option<u64>,
    /// `None` when unknown (no file, or no bandwidth counters in it).
    pub stat: Option<CpuStat>,
}

/// What a container's cgroup says about its memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReading {
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2); `None` without one or when unknown.
    pub limit_bytes: Option<u64>,
    /// v2 `memory.high`: above it the cgroup is throttled and reclaimed.
    pub high_bytes: Option<u64>,
    /// `memory.usage_in_bytes` (v1) or `memory.current` (v2): page cache included.
    pub usage_bytes: Option<u64>,
    /// Swap in use, where the kernel accounts it (v1 `memsw` minus usage; v2 `memory.swap.current`).
    pub swap_bytes: Option<u64>,
    /// v1 `memory.failcnt`: times usage hit the limit.
    pub failcnt: Option<u64>,
    /// v2 `memory.events`.
    pub events: Option<MemoryEvents>,
    /// Processes killed by the OOM killer (v1 `memory.oom_control`, v2 `memory.events`).
    pub oom_kills: Option<u64>,
}

/// CPU throttling over an interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Throttling {
    /// Seconds between the two readings.
    pub interval_seconds: f64,
    /// Enforcement periods in the interval in which the container was runnable.
    pub periods: u64,
    /// Of those, periods in which it was throttled.
    pub throttled_periods: u64,
    /// `throttled_periods` in percent of `periods` (0 when none elapsed).
    pub throttled_percent: f64,
    /// Time its run queues spent throttled in the interval (summed over CPUs: a single busy
    /// thread capped at 0.2 cores is throttled about 0.8 s per second).
    pub throttled_seconds: f64,
}

impl Throttling {
    /// From an older and a newer `cpu.stat`; `None` when the counters went back (the cgroup
    /// was replaced by one of the same name).
    pub fn between(older: &CpuStat, newer: &CpuStat, interval_seconds: f64) -> Option<Throttling> {
        let periods = newer.periods.checked_sub(older.periods)?;
        let throttled_periods = newer
            .throttled_periods
            .checked_sub(older.throttled_periods)?;
        let throttled_ns = newer.throttled_ns.checked_sub(older.throttled_ns)?;
        Some(Throttling {
            interval_seconds,
            periods,
            throttled_periods,
            throttled_percent: if periods == 0 {
                0.0
            } else {
                100.0 * throttled_periods as f64 / periods as f64
            },
            throttled_seconds: throttled_ns as f64 / 1e9,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_numbers_and_limits() {
        assert_eq!(parse_number("memory.current", b"1048576\n"), Ok(1048576));
        assert!(parse_number("memory.current", b"").is_err());
        assert!(parse_number("memory.current", b"-3\n").is_err());
        assert_eq!(parse_byte_limit("memory.max", b"max\n"), Ok(None));
        assert_eq!(
            parse_byte_limit("memory.max", b"67108864\n"),
            Ok(Some(64 << 20))
        );
        assert_eq!(
            parse_byte_limit("memory.limit_in_bytes", b"9223372036854771712\n"),
            Ok(None)
        );
        assert_eq!(
            parse_byte_limit("memory.max", b"lots\n"),
            Err(FileError::NotANumber {
                file: "memory.max",
                text: "lots".into()
            })
        );
    }

    #[test]
    fn cpu_quota_both_versions() {
        assert_eq!(parse_cfs_quota(b"-1\n"), Ok(None));
        assert_eq!(parse_cfs_quota(b"20000\n"), Ok(Some(20000)));
        assert!(parse_cfs_quota(b"-2\n").is_err());
        assert_eq!(parse_cpu_max(b"max 100000\n"), Ok((None, 100000)));
        assert_eq!(parse_cpu_max(b"50000 100000\n"), Ok((Some(50000), 100000)));
        assert!(parse_cpu_max(b"50000\n").is_err());
        assert!(parse_cpu_max(b"50000 100000 7\n").is_err());
        assert!(parse_cpu_max(b"half 100000\n").is_err());
        assert_eq!(cores(Some(20000), 100000), Some(0.2));
        assert_eq!(cores(Some(150000), 100000), Some(1.5));
        assert_eq!(cores(None, 100000), None);
        assert_eq!(cores(Some(1), 0), None);
    }

    #[test]
    fn cpu_stat_v1_v2_and_hybrid_unified() {
        let v1 = b"nr_periods 120\nnr_throttled 100\nthrottled_time 81234567\nnr_bursts 0\nburst_time 0\n";
        assert_eq!(
            CpuStat::parse("cpu.stat", v1),
            Ok(Some(CpuStat {
                periods: 120,
                throttled_periods: 100,
                throttled_ns: 81234567
            }))
        );
        let v2 = b"usage_usec 1000\nuser_usec 800\nsystem_usec 200\nnr_periods 10\nnr_throttled 4\nthrottled_usec 3000\nnr_bursts 0\nburst_usec 0\n";
        assert_eq!(
            CpuStat::parse("cpu.stat", v2),
            Ok(Some(CpuStat {
                periods: 10,
                throttled_periods: 4,
                throttled_ns: 3_000_000
            }))
        );
        // The unified hierarchy of a hybrid host: usage only, no bandwidth control.
        let unified =
            b"usage_usec 225542166\nuser_usec 186364406\nsystem_usec 39177759\nnice_usec 0\n";
        assert_eq!(CpuStat::parse("cpu.stat", unified), Ok(None));
        assert_eq!(
            CpuStat::parse("cpu.stat", b"nr_periods 3\nthrottled_time 9\n"),
            Err(FileError::Missing {
                file: "cpu.stat",
                key: "nr_throttled"
            })
        );
        assert!(CpuStat::parse("cpu.stat", b"nr_periods\n").is_err());
        assert!(CpuStat::parse("cpu.stat", b"nr_periods x\n").is_err());
    }

    #[test]
    fn memory_events_and_oom_control() {
        let events =
            b"low 0\nhigh 12\nmax 40\noom 2\noom_kill 1\noom_group_kill 0\nsock_throttled 0\n";
        assert_eq!(
            MemoryEvents::parse(events),
            Ok(MemoryEvents {
                low: 0,
                high: 12,
                max: 40,
                oom: 2,
                oom_kill: 1
            })
        );
        assert!(MemoryEvents::parse(b"low zero\n").is_err());
        assert_eq!(
            parse_oom_control(b"oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"),
            Ok(Some(3))
        );
        assert_eq!(
            parse_oom_control(b"oom_kill_disable 0\nunder_oom 0\n"),
            Ok(None),
            "kernels before 4.13"
        );
    }

    #[test]
    fn throttling_over_an_interval() {
        let older = CpuStat {
            periods: 100,
            throttled_periods: 80,
            throttled_ns: 5_000_000_000,
        };
        let newer = CpuStat {
            periods: 110,
            throttled_periods: 89,
            throttled_ns: 5_800_000_000,
        };
        let t = Throttling::between(&older, &newer, 1.0).unwrap();
        assert_eq!((t.periods, t.throttled_periods), (10, 9));
        assert!((t.throttled_percent - 90.0).abs() < 1e-9);
        assert!((t.throttled_seconds - 0.8).abs() < 1e-9);
        let idle = Throttling::between(&newer, &newer, 1.0).unwrap();
        assert_eq!(idle.throttled_percent, 0.0);
        assert_eq!(Throttling::between(&newer, &older, 1.0), None, "reset");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = parse_number("f", &bytes);
                let _ = parse_byte_limit("f", &bytes);
                let _ = parse_cfs_quota(&bytes);
                let _ = parse_cpu_max(&bytes);
                let _ = CpuStat::parse("cpu.stat", &bytes);
                let _ = MemoryEvents::parse(&bytes);
                let _ = parse_oom_control(&bytes);
            }

            #[test]
            fn keyed_like_text_never_panics(
                lines in proptest::collection::vec("[a-z_]{0,16}( [0-9-]{0,22}){0,3}", 0..12)
            ) {
                let text = lines.join("\n");
                let _ = CpuStat::parse("cpu.stat", text.as_bytes());
                let _ = MemoryEvents::parse(text.as_bytes());
                let _ = parse_oom_control(text.as_bytes());
            }

            #[test]
            fn cpu_max_round_trips(quota in proptest::option::of(0u64..10_000_000), period in 1u64..1_000_000) {
                let text = match quota {
                    Some(q) => format!("{q} {period}\n"),
                    None => format!("max {period}\n"),
                };
                prop_assert_eq!(parse_cpu_max(text.as_bytes()), Ok((quota, period)));
            }

            #[test]
            fn cpu_stat_round_trips(p in any::<u64>(), t in any::<u64>(), ns in any::<u64>()) {
                let text = format!("nr_periods {p}\nnr_throttled {t}\nthrottled_time {ns}\n");
                prop_assert_eq!(
                    CpuStat::parse("cpu.stat", text.as_bytes()),
                    Ok(Some(CpuStat { periods: p, throttled_periods: t, throttled_ns: ns }))
                );
            }

            #[test]
            fn throttling_is_never_nan(
                a in any::<(u64, u64, u64)>(), b in any::<(u64, u64, u64)>(), secs in 0.0f64..100.0
            ) {
                let stat = |(periods, throttled_periods, throttled_ns)| CpuStat { periods, throttled_periods, throttled_ns };
                if let Some(t) = Throttling::between(&stat(a), &stat(b), secs) {
                    prop_assert!(t.throttled_percent.is_finite() && t.throttled_seconds.is_finite());
                }
            }
        }
    }
}
