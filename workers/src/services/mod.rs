//! The five services. Each has pure domain logic (`domain.rs`, no I/O, unit- and
//! property-tested), its storage (`store.rs`, SQL against its own database) and its
//! [`Worker`](crate::runtime::Worker) implementation (`mod.rs`) that glues the two.

pub mod driver;
pub mod fraud;
pub mod notification;
pub mod payment;
pub mod ride;
mod rides;
