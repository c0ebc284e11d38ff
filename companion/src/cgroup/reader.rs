//! Reads a container's limits, throttling and pressure from its cgroup files with each sample.
//!
//! A container is the same cgroup path in every hierarchy (as runtimes create it, and as the
//! memory limit has always been found): the CPU files come from the hierarchy with the `cpu`
//! controller (v1 when mounted there, else v2), the memory files likewise, pressure from the
//! unified hierarchy. Like the process files, the files are opened once when a container is
//! first seen and read with a pread at offset 0 (a cgroup file regenerates its text then);
//! a file the kernel does not provide is left out, its figure unknown.

use std::{collections::HashMap, fs::File, io, path::PathBuf, sync::Arc};

use tracing::debug;

use super::{
    CgroupFs,
    limits::{
        self, CpuReading, CpuStat, FileError, MemoryEvents, MemoryReading, parse_byte_limit,
        parse_cfs_quota, parse_cpu_max, parse_number, parse_oom_control,
    },
    pressure::{Pressure, PressureReading},
};
use crate::{descriptors::Budget, procfs};

/// What one sample read of a container's cgroup files; `None` where unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CgroupReading {
    pub cpu: CpuReading,
    pub memory: MemoryReading,
    /// `None` when the cgroup has no pressure files (it exists only in v1, or PSI is off).
    pub pressure: Option<PressureReading>,
}

/// Why a file gave no figure.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The cgroup was removed (the container stopped) since its files were opened.
    #[error("the cgroup is gone")]
    Gone,
    #[error("reading {file}: {source}")]
    Io {
        file: &'static str,
        source: io::Error,
    },
    #[error(transparent)]
    Parse(#[from] FileError),
}

/// The files read, by what they hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Knob {
    CfsQuota,
    CfsPeriod,
    CpuShares,
    CpuMax,
    CpuWeight,
    CpuStat,
    MemoryLimit,
    MemoryMax,
    MemoryHigh,
    MemoryUsage,
    MemoryCurrent,
    MemswUsage,
    SwapCurrent,
    Failcnt,
    OomControl,
    MemoryEvents,
    CpuPressure,
    MemoryPressure,
    IoPressure,
}

const CPU_V1: &[Knob] = &[
    Knob::CfsQuota,
    Knob::CfsPeriod,
    Knob::CpuShares,
    Knob::CpuStat,
];
const CPU_V2: &[Knob] = &[Knob::CpuMax, Knob::CpuWeight, Knob::CpuStat];
const MEMORY_V1: &[Knob] = &[
    Knob::MemoryLimit,
    Knob::MemoryUsage,
    Knob::MemswUsage,
    Knob::Failcnt,
    Knob::OomControl,
];
const MEMORY_V2: &[Knob] = &[
    Knob::MemoryMax,
    Knob::MemoryHigh,
    Knob::MemoryCurrent,
    Knob::SwapCurrent,
    Knob::MemoryEvents,
];
const PRESSURE: &[Knob] = &[Knob::CpuPressure, Knob::MemoryPressure, Knob::IoPressure];

impl Knob {
    fn file(self) -> &'static str {
        match self {
            Knob::CfsQuota => "cpu.cfs_quota_us",
            Knob::CfsPeriod => "cpu.cfs_period_us",
            Knob::CpuShares => "cpu.shares",
            Knob::CpuMax => "cpu.max",
            Knob::CpuWeight => "cpu.weight",
            Knob::CpuStat => "cpu.stat",
            Knob::MemoryLimit => "memory.limit_in_bytes",
            Knob::MemoryMax => "memory.max",
            Knob::MemoryHigh => "memory.high",
            Knob::MemoryUsage => "memory.usage_in_bytes",
            Knob::MemoryCurrent => "memory.current",
            Knob::MemswUsage => "memory.memsw.usage_in_bytes",
            Knob::SwapCurrent => "memory.swap.current",
            Knob::Failcnt => "memory.failcnt",
            Knob::OomControl => "memory.oom_control",
            Knob::MemoryEvents => "memory.events",
            Knob::CpuPressure => "cpu.pressure",
            Knob::MemoryPressure => "memory.pressure",
            Knob::IoPressure => "io.pressure",
        }
    }
}

/// Where a file is read from: a held descriptor, or its path while the budget is spent.
enum Source {
    Held(File),
    Path(PathBuf),
}

/// One container's files and its previous reading (shared by the samples when unchanged).
struct Files {
    files: Vec<(Knob, Source)>,
    held: usize,
    last: Option<Arc<CgroupReading>>,
}

/// Reads the cgroup files of every container, keeping their descriptors across samples.
pub struct CgroupReader {
    fs: CgroupFs,
    /// Descriptors this reader may take (shared with the sampler's process files); beyond,
    /// files are opened by path each time.
    budget: Budget,
    held: usize,
    containers: HashMap<Arc<str>, Files>,
    buf: Vec<u8>,
}

impl CgroupReader {
    pub fn new(fs: CgroupFs, budget: Budget) -> CgroupReader {
        CgroupReader {
            fs,
            budget,
            held: 0,
            containers: HashMap::new(),
            buf: Vec::with_capacity(512),
        }
    }

    /// Descriptors held open.
    pub fn open_descriptors(&self) -> usize {
        self.held
    }

    /// The reading of the cgroup at `path` now; `None` when it has no files this service reads
    /// or it was removed. An unchanged reading is the previous one, shared.
    pub fn read(&mut self, path: &Arc<str>) -> Option<Arc<CgroupReading>> {
        if !self.containers.contains_key(path) {
            let files = self.open(path)?;
            self.held += files.held;
            self.containers.insert(path.clone(), files);
        }
        let files = self.containers.get_mut(path).expect("just inserted");
        match read_all(files, &mut self.buf) {
            Ok(reading) => {
                let reading = match &files.last {
                    Some(last) if **last == reading => last.clone(),
                    _ => Arc::new(reading),
                };
                files.last = Some(reading.clone());
                Some(reading)
            }
            Err(ReadError::Gone) => {
                debug!(%path, "cgroup removed while its files were open");
                self.forget(path);
                None
            }
            Err(err) => {
                debug!(%path, %err, "cgroup files unreadable");
                None
            }
        }
    }

    /// Closes the files of containers for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let mut closed = 0;
        self.containers.retain(|path, files| {
            let kept = keep(path);
            if !kept {
                closed += files.held;
            }
            kept
        });
        self.held -= closed;
        self.budget.give(closed);
        crate::tracker::shrink_after_churn(&mut self.containers);
    }

    fn forget(&mut self, path: &str) {
        if let Some(files) = self.containers.remove(path) {
            self.held -= files.held;
            self.budget.give(files.held);
        }
    }

    /// Opens the files a container has; `None` when it has none of its directories.
    fn open(&self, path: &str) -> Option<Files> {
        let relative = path.trim_start_matches('/');
        let (cpu_knobs, memory_knobs) = (
            if self.fs.cpu_v1().is_some() {
                CPU_V1
            } else {
                CPU_V2
            },
            if self.fs.memory_v1().is_some() {
                MEMORY_V1
            } else {
                MEMORY_V2
            },
        );
        let places = [
            (self.fs.cpu_v1().or(self.fs.unified()), cpu_knobs),
            (self.fs.memory_v1().or(self.fs.unified()), memory_knobs),
            (self.fs.unified(), PRESSURE),
        ];
        let mut files = Files {
            files: Vec::new(),
            held: 0,
            last: None,
        };
        let mut found = false;
        for (mount, knobs) in places {
            let Some(dir) = mount.map(|m| m.join(relative)) else {
                continue;
            };
            if !dir.is_dir() {
                continue;
            }
            found = true;
            for &knob in knobs {
                let file = dir.join(knob.file());
                match File::open(&file) {
                    Ok(open) if self.budget.take(1) => {
                        files.files.push((knob, Source::Held(open)));
                        files.held += 1;
                    }
                    Ok(_) => files.files.push((knob, Source::Path(file))),
                    // Not provided by this kernel or hierarchy: the figure stays unknown.
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => debug!(file = %file.display(), %err, "cgroup file not opened"),
                }
            }
        }
        found.then_some(files)
    }
}

fn is_gone(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENODEV | libc::ENOENT | libc::ESRCH)
    )
}

/// Reads and parses every file of a container. A file that fails or does not parse leaves
/// its figure unknown; a removed cgroup fails the whole reading with [`ReadError::Gone`].
fn read_all(files: &Files, buf: &mut Vec<u8>) -> Result<CgroupReading, ReadError> {
    let mut reading = CgroupReading::default();
    let (mut quota, mut period, mut memsw) = (None, None, None);
    for (knob, source) in &files.files {
        let result = match source {
            Source::Held(file) => procfs::pread_whole(file, buf),
            Source::Path(path) => procfs::read_path(path, buf),
        };
        if let Err(source) = result {
            if is_gone(&source) {
                return Err(ReadError::Gone);
            }
            let err = ReadError::Io {
                file: knob.file(),
                source,
            };
            debug!(%err, "cgroup figure unknown this sample");
            continue;
        }
        if let Err(err) = apply(
            *knob,
            buf,
            &mut reading,
            &mut quota,
            &mut period,
            &mut memsw,
        ) {
            debug!(%err, "cgroup figure unknown this sample");
        }
    }
    if let (Some(quota), Some(period)) = (quota, period) {
        reading.cpu.limit_cores = limits::cores(quota, period);
    }
    if let (Some(memsw), Some(usage)) = (memsw, reading.memory.usage_bytes) {
        reading.memory.swap_bytes = Some(memsw.saturating_sub(usage));
    }
    Ok(reading)
}

/// Puts one file's figures into the reading. The v1 quota and period, and v1 memory+swap, are
/// kept aside: they mean something only together.
fn apply(
    knob: Knob,
    text: &[u8],
    reading: &mut CgroupReading,
    quota: &mut Option<Option<u64>>,
    period: &mut Option<u64>,
    memsw: &mut Option<u64>,
) -> Result<(), FileError> {
    let file = knob.file();
    let (cpu, memory) = (&mut reading.cpu, &mut reading.memory);
    match knob {
        Knob::CfsQuota => *quota = Some(parse_cfs_quota(text)?),
        Knob::CfsPeriod => *period = Some(parse_number(file, text)?),
        Knob::CpuMax => {
            let (q, p) = parse_cpu_max(text)?;
            (*quota, *period) = (Some(q), Some(p));
        }
        Knob::CpuShares => cpu.shares = Some(parse_number(file, text)?),
        Knob::CpuWeight => cpu.weight = Some(parse_number(file, text)?),
        Knob::CpuStat => cpu.stat = CpuStat::parse(file, text)?,
        Knob::MemoryLimit | Knob::MemoryMax => memory.limit_bytes = parse_byte_limit(file, text)?,
        Knob::MemoryHigh => memory.high_bytes = parse_byte_limit(file, text)?,
        Knob::MemoryUsage | Knob::MemoryCurrent => {
            memory.usage_bytes = Some(parse_number(file, text)?)
        }
        Knob::MemswUsage => *memsw = Some(parse_number(file, text)?),
        Knob::SwapCurrent => memory.swap_bytes = Some(parse_number(file, text)?),
        Knob::Failcnt => memory.failcnt = Some(parse_number(file, text)?),
        Knob::OomControl => memory.oom_kills = parse_oom_control(text)?,
        Knob::MemoryEvents => {
            let events = MemoryEvents::parse(text)?;
            memory.events = Some(events);
            memory.oom_kills = Some(events.oom_kill);
        }
        Knob::CpuPressure | Knob::MemoryPressure | Knob::IoPressure => {
            let parsed = Pressure::parse(file, text)?;
            let psi = reading
                .pressure
                .get_or_insert_with(PressureReading::default);
            let slot = match knob {
                Knob::CpuPressure => &mut psi.cpu,
                Knob::MemoryPressure => &mut psi.memory,
                _ => &mut psi.io,
            };
            *slot = Some(parsed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_of(mount: &std::path::Path, path: &str) -> PathBuf {
        mount.join(path.trim_start_matches('/'))
    }

    /// A fake host: `cpu` and `memory` v1 hierarchies and a unified one, as directories.
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            Fake {
                dir: tempfile::tempdir().unwrap(),
            }
        }

        fn write(&self, hierarchy: &str, path: &str, file: &str, text: &str) {
            let dir = dir_of(&self.dir.path().join(hierarchy), path);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(file), text).unwrap();
        }

        fn fs(&self, hybrid: bool) -> CgroupFs {
            let at = |name: &str| self.dir.path().join(name);
            let mut mounts = vec![("cgroup2".to_owned(), at("unified"), vec![])];
            if hybrid {
                mounts.push(("cgroup".to_owned(), at("cpu"), vec!["cpu".to_owned()]));
                mounts.push(("cgroup".to_owned(), at("memory"), vec!["memory".to_owned()]));
            }
            CgroupFs::from_mounts(mounts)
        }
    }

    const PSI: &str = "some avg10=1.50 avg60=0.50 avg300=0.10 total=2000000\n\
full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";

    #[test]
    fn hybrid_host_v1_limits_and_unified_pressure() {
        let fake = Fake::new();
        let c = "/docker/abc";
        fake.write("cpu", c, "cpu.cfs_quota_us", "20000\n");
        fake.write("cpu", c, "cpu.cfs_period_us", "100000\n");
        fake.write("cpu", c, "cpu.shares", "512\n");
        fake.write(
            "cpu",
            c,
            "cpu.stat",
            "nr_periods 50\nnr_throttled 45\nthrottled_time 4000000000\n",
        );
        fake.write("memory", c, "memory.limit_in_bytes", "67108864\n");
        fake.write("memory", c, "memory.usage_in_bytes", "41943040\n");
        fake.write("memory", c, "memory.memsw.usage_in_bytes", "42991616\n");
        fake.write("memory", c, "memory.failcnt", "7\n");
        fake.write(
            "memory",
            c,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        for file in ["cpu.pressure", "memory.pressure", "io.pressure"] {
            fake.write("unified", c, file, PSI);
        }
        // Files of the other version that must not be read on this host.
        fake.write("unified", c, "cpu.max", "max 100000\n");
        fake.write("unified", c, "memory.max", "1\n");

        let mut reader = CgroupReader::new(fake.fs(true), Budget::new(1000));
        let r = reader.read(&Arc::from(c)).unwrap();
        assert_eq!(r.cpu.limit_cores, Some(0.2));
        assert_eq!(r.cpu.shares, Some(512));
        assert_eq!(r.cpu.weight, None);
        assert_eq!(
            r.cpu.stat,
            Some(CpuStat {
                periods: 50,
                throttled_periods: 45,
                throttled_ns: 4_000_000_000
            })
        );
        assert_eq!(r.memory.limit_bytes, Some(64 << 20));
        assert_eq!(r.memory.usage_bytes, Some(40 << 20));
        assert_eq!(r.memory.swap_bytes, Some(1 << 20));
        assert_eq!(r.memory.failcnt, Some(7));
        assert_eq!(r.memory.oom_kills, Some(1));
        assert_eq!(r.memory.high_bytes, None);
        let pressure = r.pressure.unwrap();
        assert_eq!(pressure.cpu.unwrap().some.total_us, 2_000_000);
        assert_eq!(pressure.io.unwrap().full.unwrap().avg10, 0.0);
        assert_eq!(reader.open_descriptors(), 12);

        // Unchanged: the same reading, shared. Changed: read through the held descriptors.
        let again = reader.read(&Arc::from(c)).unwrap();
        assert!(Arc::ptr_eq(&r, &again));
        fake.write("cpu", c, "cpu.cfs_quota_us", "-1\n");
        let changed = reader.read(&Arc::from(c)).unwrap();
        assert_eq!(changed.cpu.limit_cores, None);

        reader.retain(|_| false);
        assert_eq!(reader.open_descriptors(), 0);
    }

    #[test]
    fn v1_only_cgroup_has_no_pressure() {
        let fake = Fake::new();
        fake.write("cpu", "/lxc/old", "cpu.cfs_quota_us", "-1\n");
        fake.write("cpu", "/lxc/old", "cpu.cfs_period_us", "100000\n");
        std::fs::create_dir_all(fake.dir.path().join("unified")).unwrap();
        let mut reader = CgroupReader::new(fake.fs(true), Budget::new(1000));
        let r = reader.read(&Arc::from("/lxc/old")).unwrap();
        assert_eq!(r.pressure, None);
        assert_eq!(r.cpu.limit_cores, None);
        assert_eq!(r.memory, MemoryReading::default());
        assert_eq!(reader.read(&Arc::from("/lxc/none")), None);
    }

    #[test]
    fn pure_v2_host() {
        let fake = Fake::new();
        let c = "/system.slice/docker-abc.scope";
        for (file, text) in [
            ("cpu.max", "50000 100000\n"),
            ("cpu.weight", "100\n"),
            (
                "cpu.stat",
                "usage_usec 10\nnr_periods 4\nnr_throttled 1\nthrottled_usec 250\n",
            ),
            ("memory.max", "max\n"),
            ("memory.high", "33554432\n"),
            ("memory.current", "1048576\n"),
            ("memory.swap.current", "0\n"),
            (
                "memory.events",
                "low 0\nhigh 3\nmax 2\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            ("memory.pressure", PSI),
        ] {
            fake.write("unified", c, file, text);
        }
        let mut reader = CgroupReader::new(fake.fs(false), Budget::new(1000));
        let r = reader.read(&Arc::from(c)).unwrap();
        assert_eq!(r.cpu.limit_cores, Some(0.5));
        assert_eq!(r.cpu.weight, Some(100));
        assert_eq!(r.cpu.stat.unwrap().throttled_ns, 250_000);
        assert_eq!(r.memory.limit_bytes, None);
        assert_eq!(r.memory.high_bytes, Some(32 << 20));
        assert_eq!(r.memory.swap_bytes, Some(0));
        assert_eq!(r.memory.events.unwrap().high, 3);
        assert_eq!(r.memory.oom_kills, Some(1));
        assert_eq!(r.memory.failcnt, None);
        let pressure = r.pressure.unwrap();
        assert_eq!((pressure.cpu, pressure.io), (None, None));
        assert!(pressure.memory.is_some());
    }

    #[test]
    fn beyond_the_budget_files_are_read_by_path_and_bad_text_is_unknown() {
        let fake = Fake::new();
        let c = "/docker/x";
        fake.write("unified", c, "memory.current", "12\n");
        fake.write("unified", c, "memory.max", "a lot\n");
        fake.write("unified", c, "cpu.stat", "nr_periods\n");
        let mut reader = CgroupReader::new(fake.fs(false), Budget::new(1));
        let r = reader.read(&Arc::from(c)).unwrap();
        assert_eq!(reader.open_descriptors(), 1);
        assert_eq!(r.memory.usage_bytes, Some(12));
        assert_eq!(r.memory.limit_bytes, None);
        assert_eq!(r.cpu.stat, None);
        fake.write("unified", c, "memory.max", "4096\n");
        assert_eq!(
            reader.read(&Arc::from(c)).unwrap().memory.limit_bytes,
            Some(4096)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            /// Whatever the files hold, reading answers (never panics), with unknown figures.
            #[test]
            fn hostile_files_never_panic(texts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 19)) {
                let fake = Fake::new();
                let names = CPU_V1.iter().chain(MEMORY_V1).chain(PRESSURE).map(|k| ("hybrid", k))
                    .chain(CPU_V2.iter().chain(MEMORY_V2).map(|k| ("v2", k)));
                for ((kind, knob), text) in names.zip(&texts) {
                    let hierarchy = match (kind, knob) {
                        ("hybrid", k) if CPU_V1.contains(k) => "cpu",
                        ("hybrid", k) if MEMORY_V1.contains(k) => "memory",
                        _ => "unified",
                    };
                    let dir = dir_of(&fake.dir.path().join(hierarchy), "/c");
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(dir.join(knob.file()), text).unwrap();
                }
                for hybrid in [true, false] {
                    let mut reader = CgroupReader::new(fake.fs(hybrid), Budget::new(100));
                    prop_assert!(reader.read(&Arc::from("/c")).is_some());
                }
            }
        }
    }
}
