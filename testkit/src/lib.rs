//! Test harness for Ridesaga: a real `nats-server` with JetStream (or a three-node cluster of
//! them), one per test, on free loopback ports with a temporary store, killed and cleaned up
//! when the handle is dropped. Every server authenticates its clients with the installation's
//! identities (account `RIDESAGA`, a seed per identity); `client()` connects as
//! `ridectl-admin`, `client_as` and `env` as any identity.
//!
//! ```no_run
//! # async fn example() -> Result<(), ridesaga_testkit::Error> {
//! let mut server = ridesaga_testkit::NatsServer::start().await?;
//! let client = server.client().await?;
//! // ... publish, consume ...
//! server.stop(); // a crash: the store stays
//! server.restart().await?; // same port, same store; `client` reconnects by itself
//! # drop(client);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`server`]: [`NatsServer`], its [`Builder`], start, stop, restart and clean-up.
//! - [`cluster`]: [`NatsCluster`], three routed nodes (`n0`..`n2`) with JetStream; kill and
//!   restart one, wait until a meta leader is agreed on.
//! - [`auth`]: the identities every server authenticates (an NKEY seed per identity, the
//!   accounts and permissions of `ridesaga_schemas::auth`) and, on request, TLS.
//! - [`config`]: finding the binary and writing the server's configuration file.
//! - [`probe`]: deciding when a freshly started server is ready; `/jsz`'s meta leader.
//! - [`error`]: [`Error`], with the server's log tail when start-up fails.
//! - [`postgres`]: [`Postgres`], a throwaway PostgreSQL server shared by a test process, and a
//!   fresh database per test.
//! - [`mail`]: [`SmtpServer`], aiosmtpd on a free port writing to a temporary maildir;
//!   stoppable and restartable.
//! - [`sms`]: [`SmsReceiver`], an HTTP server that answers like an SMS provider and records
//!   what it was sent; it fails on demand.
//! - [`ports`]: loopback ports below the ephemeral range, so a stopped server's port is still
//!   free when it restarts.
//! - `system` (feature `system`): `System`, the five workers in-process on a server of their
//!   own (or a cluster), each service stoppable, restartable and scalable.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod mail;
pub mod ports;
pub mod postgres;
pub mod probe;
pub mod server;
pub mod sms;
#[cfg(feature = "system")]
pub mod system;

pub use auth::{Credentials, Identity, Tls};
pub use cluster::NatsCluster;
pub use config::find_nats_server;
pub use error::Error;
pub use mail::SmtpServer;
pub use postgres::Postgres;
pub use server::{Builder, NatsServer};
pub use sms::SmsReceiver;
