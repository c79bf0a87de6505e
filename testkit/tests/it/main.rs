//! The harness's integration tests, one binary, against real nats-servers.

mod harness;
mod permissions;
mod provisioning;
mod redelivery;
