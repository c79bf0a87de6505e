//! The five services. Each has pure domain logic (`domain.rs`, no I/O, unit- and
//! property-tested), its storage (`store/`: a typed store over its own database, with each
//! backend's statements in `sqlite.rs` and `postgres.rs`) and its
//! [`Worker`](crate::runtime::Worker) implementation (`mod.rs`) that glues the two.

pub mod driver;
pub mod fraud;
pub mod notification;
pub mod payment;
pub mod ride;
mod rows;
mod saga_states;
