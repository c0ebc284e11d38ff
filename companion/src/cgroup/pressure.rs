//! Pressure stall information (PSI) of a cgroup: `cpu.pressure`, `memory.pressure`,
//! `io.pressure`. The kernel keeps it per cgroup in the unified hierarchy only (on a hybrid host
//! too, even with no controller enabled there); a cgroup that exists only in v1 has none.

use serde::Serialize;

use super::limits::FileError;

/// One line of a pressure file: the share of time some (or all) of the cgroup's tasks were
/// stalled on the resource.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct StallLine {
    /// Percent of the last 10 s, as the kernel averages it.
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Total stall time since the cgroup was created, in microseconds.
    #[serde(skip)]
    pub total_us: u64,
}

/// A pressure file: `some` always; `full` for memory and io (and cpu since Linux 5.13).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    pub some: StallLine,
    pub full: Option<StallLine>,
}

impl Pressure {
    pub fn parse(file: &'static str, text: &[u8]) -> Result<Pressure, FileError> {
        let (mut some, mut full) = (None, None);
        for line in text.split(|&b| b == b'\n') {
            let mut fields = line
                .split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty());
            let slot = match fields.next() {
                None => continue,
                Some(b"some") => &mut some,
                Some(b"full") => &mut full,
                Some(_) => {
                    return Err(FileError::BadLine {
                        file,
                        line: String::from_utf8_lossy(line).chars().take(80).collect(),
                    });
                }
            };
            *slot = Some(stall_line(file, line, fields)?);
        }
        Ok(Pressure {
            some: some.ok_or(FileError::Missing { file, key: "some" })?,
            full,
        })
    }
}

fn stall_line<'a>(
    file: &'static str,
    line: &[u8],
    fields: impl Iterator<Item = &'a [u8]>,
) -> Result<StallLine, FileError> {
    let bad = || FileError::BadLine {
        file,
        line: String::from_utf8_lossy(line).chars().take(80).collect(),
    };
    let (mut avg10, mut avg60, mut avg300, mut total) = (None, None, None, None);
    for field in fields {
        let text = std::str::from_utf8(field).map_err(|_| bad())?;
        let (key, value) = text.split_once('=').ok_or_else(bad)?;
        let average = || {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(bad)
        };
        match key {
            "avg10" => avg10 = Some(average()?),
            "avg60" => avg60 = Some(average()?),
            "avg300" => avg300 = Some(average()?),
            "total" => total = Some(value.parse::<u64>().map_err(|_| bad())?),
            _ => {}
        }
    }
    match (avg10, avg60, avg300, total) {
        (Some(avg10), Some(avg60), Some(avg300), Some(total_us)) => Ok(StallLine {
            avg10,
            avg60,
            avg300,
            total_us,
        }),
        _ => Err(bad()),
    }
}

/// The three pressure files of a cgroup; each `None` when the kernel gives none.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PressureReading {
    pub cpu: Option<Pressure>,
    pub memory: Option<Pressure>,
    pub io: Option<Pressure>,
}

/// One stall line as the API shows it: the kernel's averages, its total, and the share of the
/// requested interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StallFigures {
    #[serde(flatten)]
    pub line: StallLine,
    /// Total stall time since the cgroup was created, in seconds.
    pub total_seconds: f64,
    /// Stall time in the interval, in seconds.
    pub interval_seconds: Option<f64>,
    /// Stall time in percent of the interval.
    pub interval_percent: Option<f64>,
}

/// One resource's figures: `full` is `null` where the kernel does not report it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ResourcePressure {
    pub some: StallFigures,
    pub full: Option<StallFigures>,
}

/// What `/api/v2/containers` shows of pressure: each resource `null` when unknown.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PressureFigures {
    pub cpu: Option<ResourcePressure>,
    pub memory: Option<ResourcePressure>,
    pub io: Option<ResourcePressure>,
}

impl PressureFigures {
    /// The newest reading, with stall over the interval from `older` (`seconds` before) when
    /// it is known and its counters did not go back.
    pub fn of(
        newer: &PressureReading,
        older: Option<&PressureReading>,
        seconds: f64,
    ) -> PressureFigures {
        let line = |new: &StallLine, old: Option<&StallLine>| {
            let stalled = old
                .and_then(|old| new.total_us.checked_sub(old.total_us))
                .map(|us| us as f64 / 1e6);
            StallFigures {
                line: *new,
                total_seconds: new.total_us as f64 / 1e6,
                interval_seconds: stalled,
                interval_percent: stalled
                    .filter(|_| seconds > 0.0 && seconds.is_finite())
                    .map(|s| 100.0 * s / seconds),
            }
        };
        let resource = |new: &Option<Pressure>, old: Option<&Option<Pressure>>| {
            let new = new.as_ref()?;
            let old = old.and_then(Option::as_ref);
            Some(ResourcePressure {
                some: line(&new.some, old.map(|o| &o.some)),
                full: new
                    .full
                    .as_ref()
                    .map(|full| line(full, old.and_then(|o| o.full.as_ref()))),
            })
        };
        PressureFigures {
            cpu: resource(&newer.cpu, older.map(|o| &o.cpu)),
            memory: resource(&newer.memory, older.map(|o| &o.memory)),
            io: resource(&newer.io, older.map(|o| &o.io)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMORY: &[u8] = b"some avg10=4.21 avg60=2.03 avg300=0.94 total=4201129\n\
full avg10=0.21 avg60=0.82 avg300=0.63 total=3112286\n";

    #[test]
    fn parses_some_and_full() {
        let p = Pressure::parse("memory.pressure", MEMORY).unwrap();
        assert_eq!(
            p.some,
            StallLine {
                avg10: 4.21,
                avg60: 2.03,
                avg300: 0.94,
                total_us: 4201129
            }
        );
        assert_eq!(p.full.unwrap().total_us, 3112286);
        // Kernels before 5.13 write no `full` line for cpu.
        let cpu = Pressure::parse(
            "cpu.pressure",
            b"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
        .unwrap();
        assert_eq!(cpu.full, None);
    }

    #[test]
    fn rejects_what_the_kernel_never_writes() {
        for bad in [
            &b""[..],
            b"full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            b"some avg10=0.00 avg60=0.00 total=0\n",
            b"some avg10=x avg60=0.00 avg300=0.00 total=0\n",
            b"some avg10=NaN avg60=0.00 avg300=0.00 total=0\n",
            b"some avg10=-1 avg60=0.00 avg300=0.00 total=0\n",
            b"some avg10=0.00 avg60=0.00 avg300=0.00 total=-5\n",
            b"some avg10 avg60=0.00 avg300=0.00 total=0\n",
            b"half avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        ] {
            assert!(
                Pressure::parse("cpu.pressure", bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn figures_over_an_interval() {
        let at = |some_us, full_us| PressureReading {
            memory: Some(Pressure {
                some: StallLine {
                    total_us: some_us,
                    ..StallLine::default()
                },
                full: Some(StallLine {
                    total_us: full_us,
                    ..StallLine::default()
                }),
            }),
            ..PressureReading::default()
        };
        let f = PressureFigures::of(
            &at(2_500_000, 1_000_000),
            Some(&at(1_000_000, 500_000)),
            2.0,
        );
        assert_eq!(f.cpu, None);
        let memory = f.memory.unwrap();
        assert_eq!(memory.some.interval_seconds, Some(1.5));
        assert_eq!(memory.some.interval_percent, Some(75.0));
        assert_eq!(memory.full.unwrap().interval_percent, Some(25.0));
        assert_eq!(memory.some.total_seconds, 2.5);
        // No older reading, or a counter that went back: totals only.
        let alone = PressureFigures::of(&at(1, 1), None, 1.0).memory.unwrap();
        assert_eq!(alone.some.interval_seconds, None);
        let reset = PressureFigures::of(&at(1, 1), Some(&at(9, 9)), 1.0)
            .memory
            .unwrap();
        assert_eq!(reset.some.interval_percent, None);
    }

    #[test]
    fn this_host_root_pressure_parses_when_present() {
        // Whatever this host mounts: every pressure file of a cgroup v2 root parses.
        let mounts = crate::procfs::own_mounts().unwrap();
        for mount in mounts.into_iter().filter(|m| m.fs_type == "cgroup2") {
            for name in ["cpu.pressure", "memory.pressure", "io.pressure"] {
                if let Ok(bytes) = std::fs::read(mount.mount_point.join(name)) {
                    Pressure::parse("pressure", &bytes).unwrap();
                }
            }
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = Pressure::parse("io.pressure", &bytes);
            }

            #[test]
            fn psi_like_text_never_panics(
                lines in proptest::collection::vec("(some|full|x)( [a-z0-9]{0,6}=[0-9.eE+-]{0,12}){0,5}", 0..4)
            ) {
                let _ = Pressure::parse("io.pressure", lines.join("\n").as_bytes());
            }

            #[test]
            fn round_trips(
                a in 0u32..10000, b in 0u32..10000, c in 0u32..10000, total in any::<u64>(), full in any::<bool>()
            ) {
                let line = |kind| format!("{kind} avg10={}.{:02} avg60={}.{:02} avg300={}.{:02} total={total}\n",
                    a / 100, a % 100, b / 100, b % 100, c / 100, c % 100);
                let mut text = line("some");
                if full { text.push_str(&line("full")); }
                let p = Pressure::parse("cpu.pressure", text.as_bytes()).unwrap();
                prop_assert_eq!(p.some.total_us, total);
                prop_assert!((p.some.avg10 - f64::from(a) / 100.0).abs() < 1e-9);
                prop_assert_eq!(p.full.is_some(), full);
            }
        }
    }
}
