//! The workers' integration tests, one binary: `runtime`, the shared runtime with small test
//! services; `saga`, the ride saga end to end through all five workers; `binary`, the worker
//! binaries as an operator runs them. All against a real nats-server (and PostgreSQL where a
//! test or `RIDESAGA_TEST_DB=postgres` asks for it).

mod binary;
mod runtime;
mod saga;
mod support;
