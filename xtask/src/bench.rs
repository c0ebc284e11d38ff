//! `cargo xtask bench` and `cargo xtask soak`: the companion-bench crate against the release
//! service.

use std::ffi::OsString;

use anyhow::Result;

use crate::{build, cmd};

/// Sets up, builds the service, then `cargo run --release --package companion-bench -- MODE ARGS`
/// with COMPANION_BIN naming the service binary.
pub fn companion_bench(mode: &str, args: &[OsString]) -> Result<()> {
    let bin = build::build()?;
    cmd::run(
        cmd::cargo([
            "run",
            "--release",
            "--package",
            "companion-bench",
            "--",
            mode,
        ])
        .args(args)
        .env("COMPANION_BIN", &bin),
    )
}
