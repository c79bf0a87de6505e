//! The runtime every service shares: consume, dedupe, outbox, retry, dead letter, metrics,
//! health and shutdown, written once.
//!
//! # Layout
//! - `handler`: the [`Worker`] trait a service implements and [`HandleError`].
//! - [`db`]: the storage seam: what the runtime and the services see of a service's database,
//!   whichever backend holds it.
//! - [`postgres`]: the backend for replicas on many hosts (a database per service, writers
//!   taking turns through an advisory lock).
//! - [`sqlite`]: the embedded backend (a WAL file per service, shared by the replicas on one
//!   host): opening, migrations, inbox, outbox, the writer, the checkpointer.
//! - [`effects`]: calls to the outside world, recorded with the input that made them due,
//!   performed after commit, settled in a transaction of their own.
//! - `handoff`: the effects a replica records, on their way to its executor once committed.
//! - `perform`: the effect executor, which claims, performs and settles them.
//! - `process`: one input from delivery to ack; every ack decision is made there.
//! - `batch`: the batch writer, which applies the inputs waiting together in one transaction.
//! - `publish`: outbox rows to JetStream with `Nats-Msg-Id`, bounded retries.
//! - `run`: the consumer loop with bounded concurrency, relay, timers, drain on shutdown.
//! - `metrics`, `http`: counters, `/metrics` and `/healthz`.
//! - [`trace`]: spans of the message path and their export over OTLP, off unless configured.

mod batch;
pub mod db;
pub mod effects;
mod handler;
mod handoff;
pub mod http;
pub mod metrics;
mod perform;
pub mod postgres;
pub mod process;
pub mod publish;
mod run;
mod saga_trace;
pub mod sqlite;
pub mod trace;

pub use db::{Conn, Database, EffectStatus, Kind, Row};
pub use effects::{Effect, EffectError, EffectOutcome, Finished, PendingEffect, Settled};
pub use handler::{
    BatchError, BatchOutput, BatchWrite, HandleError, Input, Worker, apply_as_batch, saga_ids,
};
pub use run::{RunError, run, run_on};
