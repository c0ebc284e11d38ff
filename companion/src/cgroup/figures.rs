//! What the API shows of a container's cgroup: its limits, and throttling, memory and
//! pressure over an interval, from two readings of the history.

use serde::Serialize;

use super::{
    limits::{MemoryEvents, Throttling},
    pressure::PressureFigures,
    reader::CgroupReading,
};

/// The container's limits; each `null` when it has none or it is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Limits {
    /// CPU cores the CFS quota allows (`cpu.cfs_quota_us / cpu.cfs_period_us`, v2 `cpu.max`).
    pub cpu_cores: Option<f64>,
    /// v1 `cpu.shares` (relative weight under contention; 1024 by default).
    pub cpu_shares: Option<u64>,
    /// v2 `cpu.weight` (1 to 10000; 100 by default).
    pub cpu_weight: Option<u64>,
    /// `memory.limit_in_bytes` (v1) or `memory.max` (v2).
    pub memory_bytes: Option<u64>,
    /// v2 `memory.high`: above it the container is throttled and reclaimed.
    pub memory_high_bytes: Option<u64>,
}

/// The cgroup's own memory accounting (page cache included), against its limit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemoryFigures {
    pub usage_bytes: Option<u64>,
    /// `usage_bytes` in percent of the limit; `null` without a limit.
    pub percent_of_limit: Option<f64>,
    /// Swap in use, where the kernel accounts it.
    pub swap_bytes: Option<u64>,
    /// v1 `memory.failcnt`: times usage hit the limit.
    pub failcnt: Option<u64>,
    /// Processes the OOM killer killed in the cgroup.
    pub oom_kills: Option<u64>,
    /// v2 `memory.events`.
    pub events: Option<MemoryEvents>,
}

/// A container's cgroup figures, as `/api/v2/containers` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct CgroupFigures {
    pub limits: Limits,
    /// CFS throttling over the interval; `null` when unknown (no bandwidth counters, or no
    /// reading at the interval's start).
    pub throttling: Option<Throttling>,
    /// `null` when the memory controller's files are not readable for this container.
    pub memory: Option<MemoryFigures>,
    /// Pressure stall information; `null` where the kernel keeps none for this cgroup (it
    /// exists only in cgroup v1, or PSI is disabled).
    pub pressure: Option<PressureFigures>,
}

impl CgroupFigures {
    /// The figures of the `newer` reading, with throttling and stall over the `seconds` since
    /// `older`.
    pub fn of(
        newer: Option<&CgroupReading>,
        older: Option<&CgroupReading>,
        seconds: f64,
    ) -> CgroupFigures {
        let Some(newer) = newer else {
            return CgroupFigures::default();
        };
        let (cpu, memory) = (&newer.cpu, &newer.memory);
        let known = *memory != Default::default();
        CgroupFigures {
            limits: Limits {
                cpu_cores: cpu.limit_cores,
                cpu_shares: cpu.shares,
                cpu_weight: cpu.weight,
                memory_bytes: memory.limit_bytes,
                memory_high_bytes: memory.high_bytes,
            },
            throttling: older
                .and_then(|o| o.cpu.stat.as_ref())
                .zip(cpu.stat.as_ref())
                .and_then(|(old, new)| Throttling::between(old, new, seconds)),
            memory: known.then(|| MemoryFigures {
                usage_bytes: memory.usage_bytes,
                percent_of_limit: memory
                    .usage_bytes
                    .zip(memory.limit_bytes)
                    .filter(|(_, limit)| *limit > 0)
                    .map(|(usage, limit)| 100.0 * usage as f64 / limit as f64),
                swap_bytes: memory.swap_bytes,
                failcnt: memory.failcnt,
                oom_kills: memory.oom_kills,
                events: memory.events,
            }),
            pressure: newer
                .pressure
                .as_ref()
                .map(|p| PressureFigures::of(p, older.and_then(|o| o.pressure.as_ref()), seconds)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::{
        limits::{CpuReading, CpuStat, MemoryReading},
        pressure::{Pressure, PressureReading, StallLine},
    };

    fn reading(periods: u64, throttled: u64, ns: u64, stall_us: u64) -> CgroupReading {
        CgroupReading {
            cpu: CpuReading {
                limit_cores: Some(0.5),
                shares: Some(1024),
                weight: None,
                stat: Some(CpuStat {
                    periods,
                    throttled_periods: throttled,
                    throttled_ns: ns,
                }),
            },
            memory: MemoryReading {
                limit_bytes: Some(1000),
                usage_bytes: Some(250),
                ..MemoryReading::default()
            },
            pressure: Some(PressureReading {
                cpu: Some(Pressure {
                    some: StallLine {
                        total_us: stall_us,
                        ..StallLine::default()
                    },
                    full: None,
                }),
                ..PressureReading::default()
            }),
        }
    }

    #[test]
    fn over_an_interval() {
        let old = reading(100, 10, 1_000_000_000, 1_000_000);
        let new = reading(120, 28, 1_500_000_000, 1_400_000);
        let f = CgroupFigures::of(Some(&new), Some(&old), 2.0);
        assert_eq!(f.limits.cpu_cores, Some(0.5));
        let t = f.throttling.unwrap();
        assert_eq!((t.periods, t.throttled_periods), (20, 18));
        assert!((t.throttled_seconds - 0.5).abs() < 1e-9);
        assert_eq!(f.memory.unwrap().percent_of_limit, Some(25.0));
        let cpu = f.pressure.unwrap().cpu.unwrap();
        assert_eq!(cpu.some.interval_percent, Some(20.0));
        assert_eq!(f.pressure.unwrap().memory, None);
    }

    #[test]
    fn unknowns_stay_null() {
        assert_eq!(CgroupFigures::of(None, None, 1.0), CgroupFigures::default());
        let new = reading(1, 0, 0, 0);
        let f = CgroupFigures::of(Some(&new), None, 1.0);
        assert_eq!(f.throttling, None, "no older reading");
        let bare = CgroupReading::default();
        let f = CgroupFigures::of(Some(&bare), Some(&bare), 1.0);
        assert_eq!((f.memory, f.pressure, f.throttling), (None, None, None));
        let json = serde_json::to_value(f).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "limits": {"cpu_cores": null, "cpu_shares": null, "cpu_weight": null,
                           "memory_bytes": null, "memory_high_bytes": null},
                "throttling": null, "memory": null, "pressure": null
            })
        );
    }
}
