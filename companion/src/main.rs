use clap::Parser;

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
