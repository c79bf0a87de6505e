//! `ridectl`'s integration tests, one binary, each module against real nats-servers.

mod bad_inputs;
mod commands;
mod common;
mod identities;
mod sagas;
mod scale;
mod scripted_saga;
