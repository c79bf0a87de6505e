//! The bench's integration tests, one binary, against the servers a run starts.

mod common;
mod database;
mod floor;
mod relay;
mod server;
