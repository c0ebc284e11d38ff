//! `/proc/PID/cmdline`: NUL-separated arguments.

use super::lossy;

/// How much of a command line is kept (flag `--cmdline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmdlineMode {
    /// Every argument.
    Full,
    /// The program alone: arguments, which often carry secrets, are dropped.
    Argv0,
    /// Nothing.
    None,
}

/// Whether the file holds a command line at all: kernel threads and zombies have none.
pub fn has_cmdline(raw: &[u8]) -> bool {
    raw.iter().any(|&b| b != 0)
}

/// The command line as `mode` keeps it.
pub fn render_cmdline(raw: &[u8], mode: CmdlineMode) -> String {
    match mode {
        CmdlineMode::Full => parse_cmdline(raw),
        CmdlineMode::Argv0 => {
            let first = raw
                .split(|&b| b == 0)
                .find(|arg| !arg.is_empty())
                .unwrap_or_default();
            parse_cmdline(first)
        }
        CmdlineMode::None => String::new(),
    }
}

/// Longest command line reported, in bytes; longer ones are cut (at a character boundary).
/// Command lines can reach megabytes; 32 KiB keeps responses and the history bounded.
pub const CMDLINE_LIMIT: usize = 32 * 1024;

/// Arguments joined by single spaces, trailing NULs dropped, invalid UTF-8 replaced by U+FFFD.
/// An empty file (kernel threads, zombies) gives an empty string.
pub fn parse_cmdline(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    let raw = &raw[..end.min(CMDLINE_LIMIT)];
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let mut text = lossy(&joined);
    if end > CMDLINE_LIMIT {
        // A cut may split a multi-byte character into a trailing U+FFFD; drop it.
        while text.ends_with('\u{fffd}') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_joined_by_spaces() {
        assert_eq!(
            parse_cmdline(b"python\0/opt/x.py\0--flag=a b\0"),
            "python /opt/x.py --flag=a b"
        );
        assert_eq!(parse_cmdline(b"sleep\x00100\x00\x00\x00"), "sleep 100");
    }

    #[test]
    fn one_character_argument_is_kept() {
        assert_eq!(parse_cmdline(b"a\0"), "a");
        assert_eq!(parse_cmdline(b"a"), "a");
    }

    #[test]
    fn empty_and_nul_only() {
        assert_eq!(parse_cmdline(b""), "");
        assert_eq!(parse_cmdline(b"\0\0"), "");
    }

    #[test]
    fn empty_arguments_in_the_middle_stay() {
        assert_eq!(parse_cmdline(b"a\0\0b\0"), "a  b");
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(parse_cmdline(b"\xffx\0y\0"), "\u{fffd}x y");
    }

    #[test]
    fn modes() {
        let raw = b"mysql\0--password=hunter2\0";
        assert_eq!(
            render_cmdline(raw, CmdlineMode::Full),
            "mysql --password=hunter2"
        );
        assert_eq!(render_cmdline(raw, CmdlineMode::Argv0), "mysql");
        assert_eq!(render_cmdline(raw, CmdlineMode::None), "");
        assert_eq!(render_cmdline(b"", CmdlineMode::Argv0), "");
        assert!(has_cmdline(raw));
        assert!(!has_cmdline(b"\0\0"));
        assert!(!has_cmdline(b""));
    }

    #[test]
    fn long_lines_are_cut_at_the_limit() {
        let mut raw = "é".repeat(CMDLINE_LIMIT).into_bytes();
        raw.push(0);
        let text = parse_cmdline(&raw);
        assert!(text.len() <= CMDLINE_LIMIT);
        assert!(text.chars().all(|c| c == 'é'));
        assert_eq!(text.len(), CMDLINE_LIMIT);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
                let _ = parse_cmdline(&bytes);
                let _ = render_cmdline(&bytes, CmdlineMode::Argv0);
                let _ = has_cmdline(&bytes);
            }

            #[test]
            fn round_trips(args in proptest::collection::vec("[^\\u{0}]{1,12}", 1..8)) {
                let mut raw = args.join("\0").into_bytes();
                raw.push(0);
                prop_assert_eq!(parse_cmdline(&raw), args.join(" "));
                prop_assert_eq!(render_cmdline(&raw, CmdlineMode::Argv0), args[0].clone());
                prop_assert!(has_cmdline(&raw));
            }
        }
    }
}
