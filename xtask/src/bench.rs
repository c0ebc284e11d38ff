//! `cargo xtask bench` and `cargo xtask soak`: the companion-bench crate against the release
//! service.

use std::{ffi::OsString, path::Path};

use anyhow::Result;

use crate::{build, cmd};

/// Sets up, builds the service, then runs `companion-bench MODE ARGS` against it.
pub fn companion_bench(mode: &str, args: &[OsString]) -> Result<()> {
    let bin = build::build()?;
    run_companion_bench(&bin, mode, args)
}

/// `cargo run --release --package companion-bench -- MODE ARGS` with COMPANION_BIN naming the
/// service binary `bin`.
pub fn run_companion_bench(bin: &Path, mode: &str, args: &[OsString]) -> Result<()> {
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
        .env("COMPANION_BIN", bin),
    )
}
