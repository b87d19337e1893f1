use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let helper = argv
        .first()
        .is_some_and(ocimount::cli::mount_helper::is_helper);
    let cli = if helper {
        match ocimount::cli::mount_helper::translate(&argv) {
            Ok(args) => ocimount::cli::Cli::parse_from(args),
            Err(e) => {
                eprintln!("mount.fuse.ocimount: error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        ocimount::cli::Cli::parse()
    };
    // ureq logs the wire at TRACE, unredacted: the Authorization headers
    // and token request bodies that carry registry credentials (a
    // helper's password, an identity token) must not reach a log, so its
    // TRACE events are dropped whatever RUST_LOG asks (DEBUG, which ureq
    // redacts, stays).
    let no_wire = tracing_subscriber::filter::filter_fn(|meta| {
        !(*meta.level() == tracing::Level::TRACE && meta.target().starts_with("ureq"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn".into())
                // fuser warns at every unmount that its own umount found
                // nothing left to unmount (the kernel already had).
                .add_directive("fuser::session=error".parse().expect("a valid directive")),
        )
        .with_writer(std::io::stderr)
        .finish()
        .with(no_wire)
        .init();
    match ocimount::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ocimount: error: {e}");
            ExitCode::FAILURE
        }
    }
}
