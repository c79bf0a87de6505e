//! Starting a service: from settings to a running worker, in-process (tests, benchmarks) or as
//! a process with signal handling (the binaries).

use std::process::ExitCode;

use ridesaga_schemas::Service;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, RuntimeConfig, Settings};
use crate::runtime::{self, RunError};
use crate::services::{
    driver::DriverService, fraud::FraudService, notification::NotificationService,
    payment::PaymentService, ride::RideService,
};

/// Why a service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Runs one service until `shutdown` is cancelled.
pub async fn run(
    service: Service,
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let config = RuntimeConfig::load(service.name(), &settings)?;
    match service {
        Service::Ride => runtime::run(RideService::load(&settings)?, config, shutdown).await?,
        Service::Driver => runtime::run(DriverService::load(&settings)?, config, shutdown).await?,
        Service::Fraud => runtime::run(FraudService::load(&settings)?, config, shutdown).await?,
        Service::Payment => {
            runtime::run(PaymentService::load(&settings)?, config, shutdown).await?
        }
        Service::Notification => {
            runtime::run(NotificationService::load(&settings)?, config, shutdown).await?
        }
    }
    Ok(())
}

/// The body of every worker binary: logs, a runtime, SIGTERM/Ctrl-C to drain, and the exit
/// code (0 after a clean drain, 1 on error, with the whole cause chain logged).
pub fn main(service: Service) -> ExitCode {
    crate::telemetry::init("info");
    let settings = Settings::from_env();
    let built = crate::config::runtime_threads(&settings).map(|threads| {
        let mut builder = if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        };
        builder.enable_all().build()
    });
    let runtime = match built {
        Ok(Ok(runtime)) => runtime,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "could not start the async runtime");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            tracing::error!(service = %service, "{e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        match run(service, settings, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(service = %service, "{:#}", anyhow::Error::from(e));
                ExitCode::FAILURE
            }
        }
    })
}

async fn stop_on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}
