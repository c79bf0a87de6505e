//! Test harness for Ridesaga: a real `nats-server` with JetStream, one per test, on free loopback
//! ports with a temporary store, killed and cleaned up when the handle is dropped.
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
//! - [`config`]: finding the binary and writing the server's configuration file.
//! - [`probe`]: deciding when a freshly started server is ready.
//! - [`error`]: [`Error`], with the server's log tail when start-up fails.
//! - [`postgres`]: [`Postgres`], a throwaway PostgreSQL server shared by a test process, and a
//!   fresh database per test.

pub mod config;
pub mod error;
pub mod postgres;
pub mod probe;
pub mod server;

pub use config::find_nats_server;
pub use error::Error;
pub use postgres::Postgres;
pub use server::{Builder, NatsServer};
