//! The runtime every service shares: consume, dedupe, outbox, retry, dead letter, metrics,
//! health and shutdown, written once.
//!
//! # Public surface
//! What other crates (the binaries, tests, the benchmark) may use is what this module
//! re-exports (`pub use` below: the [`Worker`] trait and what its methods take and return,
//! [`run`] and [`run_on`]), plus two modules: [`db`] (the [`Database`] a service's side loop is
//! given, [`db::OutboxRow`]) and [`sqlite`] (opening and migrating a SQLite file, writing its
//! inbox and outbox, the writer lock, for tests that play a replica). Every other module is
//! private to the crate, and `unreachable_pub` keeps their items from claiming to be public.
//!
//! # Layout
//! - `handler`: the [`Worker`] trait a service implements and [`HandleError`].
//! - [`db`]: the storage seam: what the runtime and the services see of a service's database,
//!   whichever backend holds it.
//! - `postgres`: the backend for replicas on many hosts (a database per service, writers
//!   taking turns through an advisory lock).
//! - [`sqlite`]: the embedded backend (a WAL file per service, context by the replicas on one
//!   host): opening, migrations, inbox, outbox, the writer, the checkpointer.
//! - `effects`: calls to the outside world, recorded with the input that made them due,
//!   performed after commit, settled in a transaction of their own.
//! - `errors`: whether a database error may pass later, decided in one place.
//! - `handoff`: the effects a replica records, on their way to its executor once committed.
//! - `perform`: the effect executor, which claims, performs and settles them.
//! - `batch`: the batch writer, which applies the inputs waiting together in one transaction.
//! - `process`: one input from delivery to ack, through the batch writer; every ack decision
//!   is made there.
//! - `publish`: outbox rows to JetStream with `Nats-Msg-Id`, bounded retries.
//! - `run`: the consumer loop with bounded concurrency, relay, timers, drain on shutdown.
//! - `metrics`, `http`: counters, `/metrics` and `/healthz`.
//! - `trace`: spans of the message path and their export over OTLP, off unless configured.
//! - `saga_trace`: which span a ride's timer steps go under.

mod batch;
pub mod db;
pub(crate) mod effects;
mod errors;
mod handler;
mod handoff;
mod http;
pub(crate) mod metrics;
mod perform;
pub(crate) mod postgres;
mod process;
mod publish;
mod run;
mod saga_trace;
pub mod sqlite;
mod trace;

pub use db::{Conn, Database, Kind, Row};
pub use effects::{Effect, EffectError, EffectOutcome, Finished, PendingEffect, Settled};
pub use handler::{
    BatchError, BatchOutput, BatchWrite, HandleError, Input, Worker, handle_as_batch, saga_ids,
};
pub use metrics::{SagaDeadlines, SagaOutcome};
pub use run::{RunError, run, run_on};
