//! `cargo xtask build` and `cargo xtask run`: the release service binary.

use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};

use crate::{cmd, setup};

/// Sets up, then builds the release binary; returns its path.
pub fn build() -> Result<PathBuf> {
    setup::setup()?;
    build_release()
}

/// `cargo build --release --package companion` (its build script builds the eBPF programs).
pub fn build_release() -> Result<PathBuf> {
    cmd::run(&mut cmd::cargo([
        "build",
        "--release",
        "--package",
        "companion",
    ]))?;
    let bin = cmd::release_binary();
    if !bin.is_file() {
        bail!("the build succeeded but {} does not exist", bin.display());
    }
    Ok(bin)
}

/// Builds, then replaces this process with the service: it keeps our pid, standard streams and
/// signals (Ctrl-C reaches it directly), and its exit code is the one the caller sees.
pub fn run(args: &[OsString]) -> Result<()> {
    let bin = build()?;
    let err = Command::new(&bin).args(args).exec();
    Err(err).with_context(|| format!("could not execute {}", bin.display()))
}
