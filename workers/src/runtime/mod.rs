//! The runtime every service shares: consume, dedupe, outbox, retry, dead letter, metrics,
//! health and shutdown, written once.

mod handler;

pub use handler::{HandleError, Worker};
