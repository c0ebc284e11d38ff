//! `companion-bench`: measurements of the companion service on a simulated dense host.
//!
//! A small dispatcher: `bench` is the density benchmark (`bench/`), `soak` the soak test
//! (`soak/`), siblings over a shared [`kit`] (service runner, HTTP client, statistics, cleanup,
//! flags); both simulate their host with the `testbed` crate, as the end-to-end tests do.
//! `busy-worker` is the process the benchmark starts for "busy" container processes and is not
//! meant to be run by hand.

mod bench;
mod kit;
mod soak;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "companion-bench",
    about = "Measurements of the companion service on a simulated dense host (real cgroups, real processes)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The density benchmark: the service's CPU and memory per container process in each tracker
    /// mode, against the floor of reading /proc, with the API under load and the exec-to-visible
    /// latency. Needs root (cgroups, eBPF). Prints a table, appends to BENCHMARKS.md and draws
    /// docs/bench-cost.svg.
    Bench(Box<bench::BenchArgs>),

    /// The soak test: the service under sustained process churn (hundreds of processes started
    /// and exited per second across hundreds of containers, moves between containers,
    /// containers removed and created) and API load for --minutes; then checks no crash, no
    /// answer outside the specified ones, RSS back to its level before the churn, and the
    /// tracked set equal to a /proc scan. Prints PASS/FAIL per check; non-zero exit on any
    /// FAIL. Needs root.
    Soak(Box<soak::SoakArgs>),

    /// A container process that uses a little CPU: spins for `--work` every `--every`.
    #[command(hide = true)]
    BusyWorker(bench::host::BusyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(*args),
        Command::Soak(args) => soak::run(*args),
        Command::BusyWorker(args) => bench::host::busy_worker(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("companion-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}
