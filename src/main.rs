use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = ocimount::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match ocimount::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocimount: error: {e}");
            ExitCode::FAILURE
        }
    }
}
