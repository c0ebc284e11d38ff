//! `/proc/PID/status`: `Key:\tvalue` lines, emitted with the Go-style names of v1.0.
//!
//! A line the file lacks (older kernels, or a field a kernel dropped) leaves 0 or `[]`; a line
//! that is present but malformed is an error, so a process is never reported with made-up values.

use serde::Serialize;

use super::{ParseError, lines, lossy};

/// The status fields of the v1.0 contract, in its order, with its names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
#[serde(rename_all = "PascalCase")]
pub struct Status {
    /// The real name, the same text as stat's `comm`: the kernel escapes a newline as `\n` and a
    /// backslash as `\\` in this file; the parser undoes that.
    pub name: String,
    pub state: String,
    pub tgid: u64,
    pub pid: u64,
    #[serde(rename = "PPid")]
    pub ppid: i64,
    pub tracer_pid: u64,
    pub real_uid: u64,
    pub effective_uid: u64,
    pub saved_set_uid: u64,
    pub filesystem_uid: u64,
    pub real_gid: u64,
    pub effective_gid: u64,
    pub saved_set_gid: u64,
    pub filesystem_gid: u64,
    #[serde(rename = "FDSize")]
    pub fd_size: u64,
    pub groups: Vec<i64>,
    pub vm_peak: u64,
    pub vm_size: u64,
    pub vm_lck: u64,
    #[serde(rename = "VmHWM")]
    pub vm_hwm: u64,
    #[serde(rename = "VmRSS")]
    pub vm_rss: u64,
    pub vm_data: u64,
    pub vm_stk: u64,
    pub vm_exe: u64,
    pub vm_lib: u64,
    #[serde(rename = "VmPTE")]
    pub vm_pte: u64,
    pub vm_swap: u64,
    pub threads: u64,
    #[serde(rename = "SigQLength")]
    pub sigq_length: u64,
    #[serde(rename = "SigQLimit")]
    pub sigq_limit: u64,
    pub sig_pnd: u64,
    pub shd_pnd: u64,
    pub sig_blk: u64,
    pub sig_ign: u64,
    pub sig_cgt: u64,
    pub cap_inh: u64,
    pub cap_prm: u64,
    pub cap_eff: u64,
    pub cap_bnd: u64,
    pub seccomp: u8,
    pub cpus_allowed: Vec<u32>,
    pub mems_allowed: Vec<u32>,
    pub voluntary_ctxt_switches: u64,
    pub nonvoluntary_ctxt_switches: u64,
}

impl Status {
    pub fn parse(text: &[u8]) -> Result<Status, ParseError> {
        let mut status = Status::default();
        for line in lines(text) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, value) = (&line[..colon], &line[colon + 1..]);
            // The value is tab-separated from the key; `Name` keeps everything after that tab,
            // other values are trimmed.
            let raw = value.strip_prefix(b"\t").unwrap_or(value);
            let value = value.trim_ascii();
            let s = &mut status;
            match key {
                b"Name" => s.name = lossy(&unescape_name(raw)),
                b"State" => s.state = lossy(value),
                b"Tgid" => s.tgid = decimal(value, "Tgid")?,
                b"Pid" => s.pid = decimal(value, "Pid")?,
                b"PPid" => s.ppid = decimal(value, "PPid")?,
                b"TracerPid" => s.tracer_pid = decimal(value, "TracerPid")?,
                b"Uid" => {
                    [
                        s.real_uid,
                        s.effective_uid,
                        s.saved_set_uid,
                        s.filesystem_uid,
                    ] = four(value, "Uid")?
                }
                b"Gid" => {
                    [
                        s.real_gid,
                        s.effective_gid,
                        s.saved_set_gid,
                        s.filesystem_gid,
                    ] = four(value, "Gid")?
                }
                b"FDSize" => s.fd_size = decimal(value, "FDSize")?,
                b"Groups" => s.groups = list(value, b' ', |w| decimal(w, "Groups"))?,
                b"VmPeak" => s.vm_peak = kilobytes(value, "VmPeak")?,
                b"VmSize" => s.vm_size = kilobytes(value, "VmSize")?,
                b"VmLck" => s.vm_lck = kilobytes(value, "VmLck")?,
                b"VmHWM" => s.vm_hwm = kilobytes(value, "VmHWM")?,
                b"VmRSS" => s.vm_rss = kilobytes(value, "VmRSS")?,
                b"VmData" => s.vm_data = kilobytes(value, "VmData")?,
                b"VmStk" => s.vm_stk = kilobytes(value, "VmStk")?,
                b"VmExe" => s.vm_exe = kilobytes(value, "VmExe")?,
                b"VmLib" => s.vm_lib = kilobytes(value, "VmLib")?,
                b"VmPTE" => s.vm_pte = kilobytes(value, "VmPTE")?,
                b"VmSwap" => s.vm_swap = kilobytes(value, "VmSwap")?,
                b"Threads" => s.threads = decimal(value, "Threads")?,
                b"SigQ" => {
                    let (length, limit) =
                        split_once(value, b'/').ok_or(ParseError::StatusField { key: "SigQ" })?;
                    s.sigq_length = decimal(length, "SigQ")?;
                    s.sigq_limit = decimal(limit, "SigQ")?;
                }
                b"SigPnd" => s.sig_pnd = hex(value, "SigPnd")?,
                b"ShdPnd" => s.shd_pnd = hex(value, "ShdPnd")?,
                b"SigBlk" => s.sig_blk = hex(value, "SigBlk")?,
                b"SigIgn" => s.sig_ign = hex(value, "SigIgn")?,
                b"SigCgt" => s.sig_cgt = hex(value, "SigCgt")?,
                b"CapInh" => s.cap_inh = hex(value, "CapInh")?,
                b"CapPrm" => s.cap_prm = hex(value, "CapPrm")?,
                b"CapEff" => s.cap_eff = hex(value, "CapEff")?,
                b"CapBnd" => s.cap_bnd = hex(value, "CapBnd")?,
                b"Seccomp" => s.seccomp = decimal(value, "Seccomp")?,
                b"Cpus_allowed" => {
                    s.cpus_allowed = list(value, b',', |w| hex_word(w, "Cpus_allowed"))?
                }
                b"Mems_allowed" => {
                    s.mems_allowed = list(value, b',', |w| hex_word(w, "Mems_allowed"))?
                }
                b"voluntary_ctxt_switches" => {
                    s.voluntary_ctxt_switches = decimal(value, "voluntary_ctxt_switches")?
                }
                b"nonvoluntary_ctxt_switches" => {
                    s.nonvoluntary_ctxt_switches = decimal(value, "nonvoluntary_ctxt_switches")?
                }
                _ => {}
            }
        }
        Ok(status)
    }
}

/// The name as the kernel wrote it before escaping it for the status file (`\n` for a newline,
/// `\\` for a backslash; `seq_escape_str` with `ESCAPE_SPACE | ESCAPE_SPECIAL` and only those two
/// characters). A backslash before anything else is kept as it is.
fn unescape_name(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let mut name = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied().peekable();
    while let Some(b) = bytes.next() {
        match (b, bytes.peek()) {
            (b'\\', Some(b'n')) => {
                name.push(b'\n');
                bytes.next();
            }
            (b'\\', Some(b'\\')) => {
                name.push(b'\\');
                bytes.next();
            }
            _ => name.push(b),
        }
    }
    std::borrow::Cow::Owned(name)
}

fn decimal<T: std::str::FromStr>(text: &[u8], key: &'static str) -> Result<T, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(ParseError::StatusField { key })
}

/// `  301936 kB`.
fn kilobytes(text: &[u8], key: &'static str) -> Result<u64, ParseError> {
    let number = text.strip_suffix(b"kB").unwrap_or(text).trim_ascii();
    decimal(number, key)
}

fn hex(text: &[u8], key: &'static str) -> Result<u64, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| u64::from_str_radix(text, 16).ok())
        .ok_or(ParseError::StatusField { key })
}

/// One 32-bit word of a CPU or memory-node mask.
fn hex_word(text: &[u8], key: &'static str) -> Result<u32, ParseError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|text| u32::from_str_radix(text, 16).ok())
        .ok_or(ParseError::StatusField { key })
}

/// Four whitespace-separated decimal ids (`Uid:`, `Gid:`).
fn four(text: &[u8], key: &'static str) -> Result<[u64; 4], ParseError> {
    let mut ids = [0; 4];
    let mut words = text
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    for id in &mut ids {
        *id = decimal(words.next().ok_or(ParseError::StatusField { key })?, key)?;
    }
    Ok(ids)
}

fn list<T>(
    text: &[u8],
    separator: u8,
    parse: impl Fn(&[u8]) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    text.split(|&b| b == separator || b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .map(parse)
        .collect()
}

fn split_once(text: &[u8], separator: u8) -> Option<(&[u8], &[u8])> {
    let at = text.iter().position(|&b| b == separator)?;
    Some((&text[..at], &text[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODERN: &[u8] = b"Name:\tmy: prog\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t812\n\
Ngid:\t0\nPid:\t812\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1001\t1002\t1003\n\
Gid:\t100\t101\t102\t103\nFDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t812\nNSpid:\t812\n\
VmPeak:\t  301936 kB\nVmSize:\t  265152 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\n\
VmHWM:\t   20140 kB\nVmRSS:\t   20140 kB\nRssAnon:\t   10000 kB\nVmData:\t  254376 kB\n\
VmStk:\t     136 kB\nVmExe:\t    1940 kB\nVmLib:\t    1904 kB\nVmPTE:\t     108 kB\n\
VmSwap:\t       7 kB\nThreads:\t6\nSigQ:\t3/15424\nSigPnd:\t0000000000000001\n\
ShdPnd:\t0000000000000002\nSigBlk:\t0000000000010000\nSigIgn:\t0000000000384004\n\
SigCgt:\tffffffffffc1feff\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nNoNewPrivs:\t0\nSeccomp:\t2\n\
Seccomp_filters:\t1\nCpus_allowed:\tffffffff,00000003\nCpus_allowed_list:\t0-1,32-63\n\
Mems_allowed:\t00000000,00000001\nMems_allowed_list:\t0\nvoluntary_ctxt_switches:\t346\n\
nonvoluntary_ctxt_switches:\t88\n";

    #[test]
    fn every_field() {
        let s = Status::parse(MODERN).unwrap();
        assert_eq!(s.name, "my: prog");
        assert_eq!(s.state, "S (sleeping)");
        assert_eq!((s.tgid, s.pid, s.ppid, s.tracer_pid), (812, 812, 1, 0));
        assert_eq!(
            [
                s.real_uid,
                s.effective_uid,
                s.saved_set_uid,
                s.filesystem_uid
            ],
            [1000, 1001, 1002, 1003]
        );
        assert_eq!(
            [
                s.real_gid,
                s.effective_gid,
                s.saved_set_gid,
                s.filesystem_gid
            ],
            [100, 101, 102, 103]
        );
        assert_eq!(s.fd_size, 64);
        assert_eq!(s.groups, [4, 24, 27]);
        assert_eq!((s.vm_peak, s.vm_size, s.vm_lck), (301936, 265152, 0));
        assert_eq!(
            (s.vm_hwm, s.vm_rss, s.vm_data, s.vm_stk),
            (20140, 20140, 254376, 136)
        );
        assert_eq!(
            (s.vm_exe, s.vm_lib, s.vm_pte, s.vm_swap),
            (1940, 1904, 108, 7)
        );
        assert_eq!(s.threads, 6);
        assert_eq!((s.sigq_length, s.sigq_limit), (3, 15424));
        assert_eq!((s.sig_pnd, s.shd_pnd, s.sig_blk), (1, 2, 0x10000));
        assert_eq!((s.sig_ign, s.sig_cgt), (0x384004, 0xffffffffffc1feff));
        assert_eq!(
            (s.cap_inh, s.cap_prm, s.cap_eff, s.cap_bnd),
            (0, 0x1ffffffffff, 0x1ffffffffff, 0x1ffffffffff)
        );
        assert_eq!(s.seccomp, 2);
        assert_eq!(s.cpus_allowed, [4294967295, 3]);
        assert_eq!(s.mems_allowed, [0, 1]);
        assert_eq!(
            (s.voluntary_ctxt_switches, s.nonvoluntary_ctxt_switches),
            (346, 88)
        );
    }

    #[test]
    fn json_has_the_44_contract_keys_in_order() {
        let json = serde_json::to_value(Status::parse(MODERN).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let expected = [
            "Name",
            "State",
            "Tgid",
            "Pid",
            "PPid",
            "TracerPid",
            "RealUid",
            "EffectiveUid",
            "SavedSetUid",
            "FilesystemUid",
            "RealGid",
            "EffectiveGid",
            "SavedSetGid",
            "FilesystemGid",
            "FDSize",
            "Groups",
            "VmPeak",
            "VmSize",
            "VmLck",
            "VmHWM",
            "VmRSS",
            "VmData",
            "VmStk",
            "VmExe",
            "VmLib",
            "VmPTE",
            "VmSwap",
            "Threads",
            "SigQLength",
            "SigQLimit",
            "SigPnd",
            "ShdPnd",
            "SigBlk",
            "SigIgn",
            "SigCgt",
            "CapInh",
            "CapPrm",
            "CapEff",
            "CapBnd",
            "Seccomp",
            "CpusAllowed",
            "MemsAllowed",
            "VoluntaryCtxtSwitches",
            "NonvoluntaryCtxtSwitches",
        ];
        assert_eq!(keys, expected);
    }

    #[test]
    fn missing_lines_leave_zeros() {
        let s = Status::parse(b"Name:\tkworker/0:1\nState:\tI (idle)\nPid:\t9\n").unwrap();
        assert_eq!(s.name, "kworker/0:1");
        assert_eq!(s.pid, 9);
        assert_eq!(s.vm_rss, 0);
        assert!(s.groups.is_empty());
        assert!(s.cpus_allowed.is_empty());
        assert_eq!(Status::parse(b"").unwrap(), Status::default());
    }

    #[test]
    fn empty_groups_and_escaped_names() {
        let s = Status::parse(b"Name:\ta\\nb c\nGroups:\t\n").unwrap();
        assert_eq!(s.name, "a\nb c", "the real name, as stat's comm shows it");
        assert!(s.groups.is_empty());
        // A backslash is written doubled; a lone one (never written by the kernel) is kept.
        let s = Status::parse(b"Name:\ta\\\\nb\\x\\\n").unwrap();
        assert_eq!(s.name, "a\\nb\\x\\");
    }

    #[test]
    fn malformed_values_are_errors() {
        for (text, key) in [
            (&b"Pid:\tx\n"[..], "Pid"),
            (b"Uid:\t1\t2\n", "Uid"),
            (b"VmRSS:\tlots kB\n", "VmRSS"),
            (b"SigQ:\t12\n", "SigQ"),
            (b"SigBlk:\tzz\n", "SigBlk"),
            (b"Cpus_allowed:\t1,fffffffff\n", "Cpus_allowed"),
            (b"Seccomp:\t300\n", "Seccomp"),
        ] {
            assert_eq!(Status::parse(text), Err(ParseError::StatusField { key }));
        }
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The kernel's rendering of a status file, for round trips.
        fn render(s: &Status) -> String {
            let words = |v: &[u32]| {
                v.iter()
                    .map(|w| format!("{w:08x}"))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let groups = s.groups.iter().map(|g| format!("{g} ")).collect::<String>();
            format!(
                "Name:\t{}\nUmask:\t0022\nState:\t{}\nTgid:\t{}\nNgid:\t0\nPid:\t{}\nPPid:\t{}\n\
                 TracerPid:\t{}\nUid:\t{}\t{}\t{}\t{}\nGid:\t{}\t{}\t{}\t{}\nFDSize:\t{}\nGroups:\t{}\n\
                 VmPeak:\t{:8} kB\nVmSize:\t{:8} kB\nVmLck:\t{:8} kB\nVmPin:\t       0 kB\n\
                 VmHWM:\t{:8} kB\nVmRSS:\t{:8} kB\nVmData:\t{:8} kB\nVmStk:\t{:8} kB\n\
                 VmExe:\t{:8} kB\nVmLib:\t{:8} kB\nVmPTE:\t{:8} kB\nVmSwap:\t{:8} kB\n\
                 Threads:\t{}\nSigQ:\t{}/{}\nSigPnd:\t{:016x}\nShdPnd:\t{:016x}\nSigBlk:\t{:016x}\n\
                 SigIgn:\t{:016x}\nSigCgt:\t{:016x}\nCapInh:\t{:016x}\nCapPrm:\t{:016x}\n\
                 CapEff:\t{:016x}\nCapBnd:\t{:016x}\nSeccomp:\t{}\nCpus_allowed:\t{}\n\
                 Cpus_allowed_list:\t0-1\nMems_allowed:\t{}\nMems_allowed_list:\t0\n\
                 voluntary_ctxt_switches:\t{}\nnonvoluntary_ctxt_switches:\t{}\n",
                s.name.replace('\\', "\\\\").replace('\n', "\\n"),
                s.state,
                s.tgid,
                s.pid,
                s.ppid,
                s.tracer_pid,
                s.real_uid,
                s.effective_uid,
                s.saved_set_uid,
                s.filesystem_uid,
                s.real_gid,
                s.effective_gid,
                s.saved_set_gid,
                s.filesystem_gid,
                s.fd_size,
                groups,
                s.vm_peak,
                s.vm_size,
                s.vm_lck,
                s.vm_hwm,
                s.vm_rss,
                s.vm_data,
                s.vm_stk,
                s.vm_exe,
                s.vm_lib,
                s.vm_pte,
                s.vm_swap,
                s.threads,
                s.sigq_length,
                s.sigq_limit,
                s.sig_pnd,
                s.shd_pnd,
                s.sig_blk,
                s.sig_ign,
                s.sig_cgt,
                s.cap_inh,
                s.cap_prm,
                s.cap_eff,
                s.cap_bnd,
                s.seccomp,
                words(&s.cpus_allowed),
                words(&s.mems_allowed),
                s.voluntary_ctxt_switches,
                s.nonvoluntary_ctxt_switches,
            )
        }

        fn any_status() -> impl Strategy<Value = Status> {
            (
                (
                    "[^\n\u{0}]{0,15}",
                    "[RSDZT] \\([a-z]{1,9}\\)",
                    proptest::collection::vec(any::<u64>(), 12),
                ),
                (any::<i64>(), proptest::collection::vec(any::<i64>(), 0..8)),
                proptest::collection::vec(any::<u64>(), 24),
                (
                    any::<u8>(),
                    proptest::collection::vec(any::<u32>(), 1..4),
                    proptest::collection::vec(any::<u32>(), 1..3),
                ),
            )
                .prop_map(
                    |((name, state, ids), (ppid, groups), n, (seccomp, cpus, mems))| Status {
                        name: name.trim_end().to_owned(),
                        state,
                        tgid: ids[0],
                        pid: ids[1],
                        ppid,
                        tracer_pid: ids[2],
                        real_uid: ids[3],
                        effective_uid: ids[4],
                        saved_set_uid: ids[5],
                        filesystem_uid: ids[6],
                        real_gid: ids[7],
                        effective_gid: ids[8],
                        saved_set_gid: ids[9],
                        filesystem_gid: ids[10],
                        fd_size: ids[11],
                        groups,
                        vm_peak: n[0],
                        vm_size: n[1],
                        vm_lck: n[2],
                        vm_hwm: n[3],
                        vm_rss: n[4],
                        vm_data: n[5],
                        vm_stk: n[6],
                        vm_exe: n[7],
                        vm_lib: n[8],
                        vm_pte: n[9],
                        vm_swap: n[10],
                        threads: n[11],
                        sigq_length: n[12],
                        sigq_limit: n[13],
                        sig_pnd: n[14],
                        shd_pnd: n[15],
                        sig_blk: n[16],
                        sig_ign: n[17],
                        sig_cgt: n[18],
                        cap_inh: n[19],
                        cap_prm: n[20],
                        cap_eff: n[21],
                        cap_bnd: n[22],
                        seccomp,
                        cpus_allowed: cpus,
                        mems_allowed: mems,
                        voluntary_ctxt_switches: n[23],
                        nonvoluntary_ctxt_switches: n[0] / 3,
                    },
                )
        }

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
                let _ = Status::parse(&bytes);
            }

            #[test]
            fn never_panics_on_status_like_lines(
                lines in proptest::collection::vec(("(Name|Uid|Gid|VmRSS|SigQ|Groups|Cpus_allowed|Seccomp|SigBlk|[A-Za-z_]{1,12})", "[\t 0-9a-fkB/,x-]{0,40}"), 0..30)
            ) {
                let text: String = lines.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
                let _ = Status::parse(text.as_bytes());
            }

            #[test]
            fn round_trips(status in any_status()) {
                prop_assert_eq!(Status::parse(render(&status).as_bytes()).unwrap(), status);
            }
        }
    }
}
