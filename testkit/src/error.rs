//! Why the harness could not give a test its server.

use std::{io, path::PathBuf, time::Duration};

/// Everything that can go wrong while starting, probing or connecting to a test server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable `nats-server` binary.
    #[error(
        "nats-server binary not found (tried: {tried}); run scripts/setup or set NATS_SERVER_BIN"
    )]
    BinaryNotFound { tried: String },

    /// A file-system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },

    /// The server process ended before it was ready.
    #[error("nats-server ({binary}) exited during start-up with {status}\n{log_tail}")]
    Exited {
        binary: PathBuf,
        status: std::process::ExitStatus,
        log_tail: String,
    },

    /// The server kept running but did not become ready in time.
    #[error("nats-server did not become ready within {timeout:?}: {waiting_for}\n{log_tail}")]
    NotReady {
        timeout: Duration,
        waiting_for: String,
        log_tail: String,
    },

    /// The server's ports file could not be read.
    #[error("unreadable ports file {path}: {reason}")]
    PortsFile { path: PathBuf, reason: String },

    /// The server is stopped; [`crate::NatsServer::restart`] it first.
    #[error("nats-server is not running")]
    NotRunning,

    /// PostgreSQL could not be found, set up or started.
    #[error("PostgreSQL: could not {step}: {reason}")]
    Postgres { step: String, reason: String },

    /// Connecting a client failed.
    #[error("could not connect to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
}

impl Error {
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let action = action.into();
        move |source| Error::Io { action, source }
    }
}
