//! `/proc/PID/stat`: one line, `pid (comm) state field…`.
//!
//! The name (`comm`) may hold spaces, parentheses, `) (` and newlines, and need not be UTF-8, so
//! it is everything between the first `(` and the *last* `)` of the file; the numbers follow the
//! last `)`. Kernels older than the field list below print fewer fields: missing ones are 0.

use serde::Serialize;

use super::{ParseError, lossy};

/// Declares `Stat` with the contract's 52 keys, in order, and the parser of the numeric fields
/// that follow `state`. One list, so the JSON order and the parse order cannot drift apart.
macro_rules! stat_fields {
    ($($field:ident: $ty:ty),* $(,)?) => {
        /// The parsed stat line, serialised with the v1.0 keys and order.
        #[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
        #[cfg_attr(test, derive(serde::Deserialize))]
        pub struct Stat {
            pub pid: u64,
            /// The name with its parentheses, as v1.0 clients expect: `"(python)"`.
            pub comm: String,
            pub state: String,
            $(pub $field: $ty,)*
        }

        impl Stat {
            /// Parses the fields after `state`. Every kernel prints at least up to `starttime`;
            /// the later ones are missing on old kernels and left at 0.
            fn parse_numbers<'a>(
                stat: &mut Stat,
                mut fields: impl Iterator<Item = &'a [u8]>,
            ) -> Result<(), ParseError> {
                let mut required = true;
                $(
                    match fields.next() {
                        Some(text) => {
                            stat.$field = parse_number(text)
                                .ok_or(ParseError::StatField { field: stringify!($field) })?;
                        }
                        None if required => {
                            return Err(ParseError::StatField { field: stringify!($field) });
                        }
                        None => {}
                    }
                    if stringify!($field) == "starttime" {
                        required = false;
                    }
                )*
                let _ = required;
                Ok(())
            }
        }
    };
}

stat_fields! {
    ppid: i64,
    pgrp: i64,
    session: i64,
    tty_nr: i64,
    tpgid: i64,
    flags: u64,
    minflt: u64,
    cminflt: u64,
    majflt: u64,
    cmajflt: u64,
    utime: u64,
    stime: u64,
    cutime: i64,
    cstime: i64,
    priority: i64,
    nice: i64,
    num_threads: i64,
    itrealvalue: i64,
    starttime: u64,
    vsize: u64,
    rss: i64,
    rsslim: u64,
    startcode: u64,
    endcode: u64,
    startstack: u64,
    kstkesp: u64,
    kstkeip: u64,
    signal: u64,
    blocked: u64,
    sigignore: u64,
    sigcatch: u64,
    wchan: u64,
    nswap: u64,
    cnswap: u64,
    exit_signal: i64,
    processor: i64,
    rt_priority: u64,
    policy: u64,
    delayacct_blkio_ticks: u64,
    guest_time: u64,
    cguest_time: i64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
    exit_code: i64,
}

impl Stat {
    pub fn parse(text: &[u8]) -> Result<Stat, ParseError> {
        let open = text.iter().position(|&b| b == b'(');
        let close = text.iter().rposition(|&b| b == b')');
        let (open, close) = match (open, close) {
            (Some(open), Some(close)) if open < close => (open, close),
            _ => return Err(ParseError::StatNoComm),
        };
        let pid = parse_number(text[..open].trim_ascii())
            .ok_or(ParseError::StatField { field: "pid" })?;
        let mut comm = String::with_capacity(close - open + 1);
        comm.push('(');
        comm.push_str(&lossy(&text[open + 1..close]));
        comm.push(')');

        let mut fields = text[close + 1..]
            .split(|b| b.is_ascii_whitespace())
            .filter(|field| !field.is_empty());
        let state = fields
            .next()
            .map(lossy)
            .ok_or(ParseError::StatField { field: "state" })?;
        let mut stat = Stat {
            pid,
            comm,
            state,
            ..Stat::default()
        };
        Stat::parse_numbers(&mut stat, &mut fields)?;
        Ok(stat)
    }

    /// CPU time of all threads, user plus system, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        self.utime.saturating_add(self.stime)
    }
}

/// A decimal number as the kernel prints it (optionally signed).
fn parse_number<T: std::str::FromStr>(text: &[u8]) -> Option<T> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASH: &[u8] = b"4242 (bash) S 1 4242 4242 34816 4250 4194304 1130 5320 0 3 2 4 \
        12 9 20 0 1 0 123456 8654848 1221 18446744073709551615 94 95 140 0 0 0 65536 \
        3686404 1266761467 1 0 0 17 1 0 0 0 0 0 97 98 99 100 101 102 103 0\n";

    #[test]
    fn every_field_in_order() {
        let stat = Stat::parse(BASH).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.comm, "(bash)");
        assert_eq!(stat.state, "S");
        assert_eq!(stat.ppid, 1);
        assert_eq!(stat.tty_nr, 34816);
        assert_eq!(stat.tpgid, 4250);
        assert_eq!(stat.utime, 2);
        assert_eq!(stat.stime, 4);
        assert_eq!(stat.cutime, 12);
        assert_eq!(stat.cstime, 9);
        assert_eq!(stat.priority, 20);
        assert_eq!(stat.starttime, 123456);
        assert_eq!(stat.rsslim, u64::MAX);
        assert_eq!(stat.sigcatch, 1266761467);
        assert_eq!(stat.exit_signal, 17);
        assert_eq!(stat.processor, 1);
        assert_eq!(stat.start_data, 97);
        assert_eq!(stat.env_end, 103);
        assert_eq!(stat.exit_code, 0);
        assert_eq!(stat.cpu_ticks(), 6);
    }

    #[test]
    fn json_keys_are_the_contract_in_order() {
        let json = serde_json::to_value(Stat::parse(BASH).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(keys.len(), 52);
        assert_eq!(&keys[..4], ["pid", "comm", "state", "ppid"]);
        assert_eq!(keys[51], "exit_code");
        assert_eq!(json["rsslim"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn hostile_names() {
        for (name, expected) in [
            (&b"a b"[..], "(a b)"),
            (b") (", "() ()"),
            (b"x) S 1 2 (y", "(x) S 1 2 (y)"),
            (b"new\nline", "(new\nline)"),
            (b"((", "((()"),
            (b"", "()"),
        ] {
            let mut line = b"77 (".to_vec();
            line.extend_from_slice(name);
            line.extend_from_slice(b") R 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 99 0 0\n");
            let stat = Stat::parse(&line).unwrap();
            assert_eq!(
                stat.comm,
                expected,
                "name {:?}",
                String::from_utf8_lossy(name)
            );
            assert_eq!(stat.state, "R");
            assert_eq!(stat.ppid, 1);
            assert_eq!(stat.utime, 5);
            assert_eq!(stat.starttime, 99);
        }
    }

    #[test]
    fn invalid_utf8_name_becomes_replacement_characters() {
        let mut line = b"5 (".to_vec();
        line.extend_from_slice(&[0xff; 15]);
        line.extend_from_slice(b") S 1 5 5 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 9 0 0\n");
        let stat = Stat::parse(&line).unwrap();
        assert_eq!(stat.comm, format!("({})", "\u{fffd}".repeat(15)));
    }

    #[test]
    fn short_line_of_an_old_kernel_leaves_zeros() {
        let stat =
            Stat::parse(b"9 (init) S 0 1 1 0 -1 4202752 1 2 3 4 5 6 7 8 20 0 1 0 3\n").unwrap();
        assert_eq!(stat.starttime, 3);
        assert_eq!(stat.vsize, 0);
        assert_eq!(stat.exit_code, 0);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(Stat::parse(b""), Err(ParseError::StatNoComm));
        assert_eq!(Stat::parse(b"12 no name S 1"), Err(ParseError::StatNoComm));
        assert_eq!(Stat::parse(b"12 )x( S"), Err(ParseError::StatNoComm));
        assert_eq!(
            Stat::parse(b"x (a) S 1"),
            Err(ParseError::StatField { field: "pid" })
        );
        assert_eq!(
            Stat::parse(b"1 (a)"),
            Err(ParseError::StatField { field: "state" })
        );
        assert_eq!(
            Stat::parse(b"1 (a) S one"),
            Err(ParseError::StatField { field: "ppid" })
        );
        assert_eq!(
            Stat::parse(b"1 (a) S 1 1 1 1 1 -5 0 0 0 0 0 0 0 0 0 0 0 0 0"),
            Err(ParseError::StatField { field: "flags" })
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The kernel's rendering of a stat line, for round trips.
        fn render(stat: &Stat, comm: &[u8]) -> Vec<u8> {
            let mut line = format!("{} (", stat.pid).into_bytes();
            line.extend_from_slice(comm);
            line.extend_from_slice(format!(") {}", stat.state).as_bytes());
            let value = serde_json::to_value(stat).unwrap();
            for (key, value) in value.as_object().unwrap().iter().skip(3) {
                let _ = key;
                line.extend_from_slice(format!(" {value}").as_bytes());
            }
            line.push(b'\n');
            line
        }

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = Stat::parse(&bytes);
            }

            #[test]
            fn never_panics_on_stat_like_lines(
                pid in any::<u32>(),
                comm in proptest::collection::vec(any::<u8>(), 0..20),
                rest in "[ 0-9a-zA-Z()-]{0,200}",
            ) {
                let mut line = format!("{pid} (").into_bytes();
                line.extend_from_slice(&comm);
                line.extend_from_slice(b") ");
                line.extend_from_slice(rest.as_bytes());
                let _ = Stat::parse(&line);
            }

            #[test]
            fn round_trips(
                comm in "[^\u{0}]{0,16}",
                state in "[RSDZTtXxKWPI]",
                numbers in proptest::collection::vec(any::<i64>(), 49),
            ) {
                let mut value = serde_json::to_value(Stat::default()).unwrap();
                let object = value.as_object_mut().unwrap();
                let keys: Vec<String> = object.keys().skip(3).cloned().collect();
                const SIGNED: [&str; 16] = [
                    "ppid", "pgrp", "session", "tty_nr", "tpgid", "cutime", "cstime", "priority",
                    "nice", "num_threads", "itrealvalue", "rss", "exit_signal", "processor",
                    "cguest_time", "exit_code",
                ];
                let signed = |key: &str| SIGNED.contains(&key);
                for (key, n) in keys.iter().zip(&numbers) {
                    object[key.as_str()] = if signed(key) {
                        serde_json::json!(n)
                    } else {
                        serde_json::json!(n.unsigned_abs())
                    };
                }
                object["pid"] = serde_json::json!(numbers[0].unsigned_abs() >> 32);
                object["comm"] = serde_json::json!(format!("({comm})"));
                object["state"] = serde_json::json!(state);
                let expected: Stat = serde_json::from_value(value).unwrap();
                let parsed = Stat::parse(&render(&expected, comm.as_bytes())).unwrap();
                prop_assert_eq!(parsed, expected);
            }
        }
    }
}
