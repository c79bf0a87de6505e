//! The `ridectl` binary: parse the command line, run the command, print the whole error chain
//! and exit with the documented code (0 ok, 1 error, 2 usage, 3 unexpected saga state,
//! 4 timed out).

use std::process::ExitCode;

use clap::Parser;
use ridectl::cli::Cli;
use ridectl::{exit, output};

fn main() -> ExitCode {
    // Usage errors, --help and --version exit here (code 2 for usage errors).
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            output::report_error(&anyhow::Error::new(e).context("could not start"), &[]);
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(ridectl::run(cli)) {
        Ok(()) => ExitCode::from(exit::SUCCESS),
        Err(error) => {
            output::report_error(&error, &exit::hints(&error));
            ExitCode::from(exit::exit_code(&error))
        }
    }
}

/// Quiet unless `RIDECTL_LOG` is set (e.g. `RIDECTL_LOG=debug`); logs go to stderr.
fn init_tracing() {
    if let Ok(filter) = std::env::var("RIDECTL_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .try_init();
    }
}
