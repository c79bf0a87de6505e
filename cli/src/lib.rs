//! `ridectl`, the Ridesaga control plane: publishes ride, driver and fraud commands, follows
//! sagas live, inspects streams, consumers, workers and dead letters, and audits the saga
//! invariants from the event log.
//!
//! # Layout
//! - [`cli`]: every command and flag (clap derive), in one place.
//! - [`commands`]: one module per command group; [`commands::run`] dispatches.
//! - [`saga`]: pure folding of stored messages into saga state, `--wait` rest rules, timeline
//!   summaries and the audit invariants.
//! - [`nats`]: connecting, publishing with `Nats-Msg-Id`, scanning and following the stream.
//! - [`lag`]: consumer lag as KEDA's nats-jetstream scaler reads it from `/jsz`, and the
//!   replicas it would choose (pure).
//! - [`monitor`]: reading the NATS monitoring port (`/varz`, `/jsz`) of one or more nodes.
//! - [`output`]: tables, JSON, colours, stderr diagnostics.
//! - [`exit`]: the documented exit codes and `hint:` lines.
//! - [`duration`]: `500ms`, `30s`, `2m`.

pub mod cli;
pub mod commands;
pub mod exit;
pub mod lag;
pub mod monitor;
pub mod nats;
pub mod output;
pub mod saga;

pub use commands::run;
