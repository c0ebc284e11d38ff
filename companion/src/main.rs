use clap::Parser;

/// jemalloc keeps memory of different sizes apart and returns what is freed: after a burst of
/// container churn the service shrinks back, where glibc's allocator stayed at its peak
/// (fragmented by per-process allocations of processes that came and went).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Freed pages go back to the system after a second, without a background thread.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8] = b"dirty_decay_ms:1000,muzzy_decay_ms:0\0";

use companion::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        None => companion::service::run(cli.serve).inspect_err(|err| {
            // The service reports through its log; operators may only watch that.
            tracing::error!("{err:#}");
        }),
        Some(Command::Ps(args)) => companion::client::ps(&args),
        Some(Command::Top(args)) => companion::client::top(&args),
        Some(Command::Exits(args)) => companion::client::exits(&args),
        Some(Command::Health(args)) => companion::client::health(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("companion: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The HTTP/2 layer warns once per connection it closes for abuse (rapid resets); the server
    // logs those as one throttled line instead (RUST_LOG=h2=warn shows them all).
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if spec.contains("h2") => filter,
        _ => filter.add_directive("h2=error".parse().expect("a valid directive")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
