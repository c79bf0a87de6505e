//! Ridesaga's benchmark: the whole system's saga throughput, latency and cost, measured in
//! the same run and on the same nats-server as the broker's own limit, so that the headline
//! figure is a ratio that holds on a noisy machine. `scripts/bench` builds the release
//! binaries and runs `ridesaga-bench`; `BENCHMARKS.md` explains the figures.
//!
//! # Layout
//! - [`cli`]: options and the durations and sizes they resolve to.
//! - [`run`]: the phases of a run, in order, and the processes they need; the A/B rounds
//!   against a baseline build and the backlog drain.
//! - [`server`]: the run's own nats-server with the repository's `nats.conf`.
//! - [`fleet`]: the worker processes, one or more replicas of each service.
//! - [`database`]: the PostgreSQL cluster of a `--db postgres` run.
//! - [`process`]: starting, watching and stopping child processes.
//! - [`relay`]: the broker's ceiling, a raw JetStream relay pipelined like the workers.
//! - [`generator`]: riders and drivers: starts sagas at a pace and times them.
//! - [`city`]: where drivers wait and trips go.
//! - [`consumers`]: the service consumers' delivery counters.
//! - [`procfs`]: CPU time and memory from `/proc`.
//! - [`profile`]: an optional `perf` profile of the maximum-rate phase.
//! - [`hops`]: latency hop by hop, from the saga stream's store times.
//! - [`stats`]: rates and times.
//! - [`results`]: what a run measured (written as JSON), the figures derived from it, the
//!   summary line.
//! - [`report`]: the Markdown report rendered from the results, and the latest-figures block
//!   of `BENCHMARKS.md`.
//! - [`table`]: the Markdown table writer.
//! - [`notes`]: the run's conditions and problems.

pub mod city;
pub mod cli;
pub mod consumers;
pub mod database;
pub mod fleet;
pub mod floor;
pub mod generator;
pub mod hops;
pub mod notes;
pub mod process;
pub mod procfs;
pub mod profile;
pub mod relay;
pub mod report;
pub mod results;
pub mod run;
pub mod server;
pub mod stats;
pub mod table;
