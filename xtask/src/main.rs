//! Project tasks for companion, run as `cargo xtask TASK` (an alias in `.cargo/config.toml`).
//!
//! Developers and CI (`.ci/run`) run the same tasks, so all the logic lives here. Progress goes to
//! standard error; standard output carries only what a task produces (the binary path of `build`,
//! the service's own output under `run`).

mod bench;
mod build;
mod cmd;
mod docker;
mod lint;
mod setup;
mod test;

use std::{ffi::OsString, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project tasks for companion"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need on Debian 12 (as root): LLVM 22 dev packages,
    /// nightly rust-src and clippy, bpf-linker 0.13.0, and a tracefs mount. Each step is skipped
    /// when already satisfied.
    Setup,
    /// Set up, then build the release service; prints the path of target/release/companion.
    Build,
    /// Build, then replace xtask with the release service: `cargo xtask run -- ARGS`.
    Run {
        /// Arguments for companion, after `--`.
        #[arg(last = true)]
        args: Vec<OsString>,
    },
    /// rustfmt check, clippy on the workspace, and clippy on the eBPF crate (nightly, bpfel).
    Lint,
    /// The whole suite as CI runs it: setup, lint, release build, then
    /// a Docker engine (the running one, or a dockerd started and stopped by this run), then
    /// `cargo test --workspace --release` (the end-to-end tests run the binary Cargo builds for
    /// them), then a short soak of each tracker against the release binary (skipped when test
    /// arguments are given).
    Test {
        /// Extra arguments for `cargo test`, after `--` (a test name filter, or `-- --nocapture`).
        #[arg(last = true)]
        cargo_test_args: Vec<OsString>,
    },
    /// Set up, build, then run the density benchmark: `companion-bench bench ARGS`.
    Bench {
        /// Arguments for `companion-bench bench`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Set up, build, then run the soak test: `companion-bench soak ARGS`.
    Soak {
        /// Arguments for `companion-bench soak`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().task {
        Task::Setup => setup::setup(),
        Task::Build => build::build().map(|bin| println!("{}", bin.display())),
        Task::Run { args } => build::run(&args),
        Task::Lint => lint::lint(),
        Task::Test { cargo_test_args } => test::test(&cargo_test_args),
        Task::Bench { args } => bench::companion_bench("bench", &args),
        Task::Soak { args } => bench::companion_bench("soak", &args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
