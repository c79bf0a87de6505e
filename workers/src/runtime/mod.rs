//! The runtime every service shares: consume, dedupe, outbox, retry, dead letter, metrics,
//! health and shutdown, written once.
//!
//! # Layout
//! - `handler`: the [`Worker`] trait a service implements and [`HandleError`].
//! - `store`: the database (WAL SQLite), migrations, inbox and outbox (its statements in
//!   `store_outbox.rs`).
//! - `checkpoint`: moving the write-ahead log into the database file, and starting it over.
//! - `process`: one input from delivery to ack; every ack decision is made there.
//! - `batch`: the batch writer, which applies the inputs waiting together in one transaction.
//! - `publish`: outbox rows to JetStream with `Nats-Msg-Id`, bounded retries.
//! - `run`: the consumer loop with bounded concurrency, relay, timers, drain on shutdown.
//! - `writer`: the connection every write goes through, one turn at a time.
//! - `writer_lock`: one writer at a time among replicas sharing a SQLite file.
//! - `metrics`, `http`: counters, `/metrics` and `/healthz`.

mod batch;
mod checkpoint;
mod handler;
pub mod http;
pub mod metrics;
pub mod process;
pub mod publish;
mod run;
pub mod store;
pub mod writer;
pub mod writer_lock;

pub use handler::{
    BatchError, BatchOutput, BatchWrite, HandleError, Input, Worker, apply_as_batch, preload_rows,
    saga_ids,
};
pub use run::{RunError, run, run_on};
