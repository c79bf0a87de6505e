//! Ridesaga's workers: five stateless services that run the ride saga over NATS JetStream.
//!
//! # Layout
//! - [`app`]: starting a service in-process or as a binary.
//! - [`config`]: typed settings from the environment.
//! - [`runtime`]: what every service shares (consumer loop, inbox/outbox, relay, timers,
//!   dead letters, metrics, health, graceful shutdown).
//! - [`services`]: one module per service with its pure domain logic and its storage.
//! - [`telemetry`]: log set-up.
//! - `src/bin/*-worker.rs`: one thin binary per service.

pub mod app;
pub mod config;
#[warn(unreachable_pub)]
pub mod runtime;
pub mod services;
pub mod telemetry;
#[cfg(test)]
pub(crate) mod testing;
