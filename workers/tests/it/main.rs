//! The workers' integration tests, one binary: `runtime`, the shared runtime with small test
//! services; `saga`, the ride saga end to end through all five workers; `binary`, the worker
//! binaries as an operator runs them; `filters`, each service's consumer filter against what
//! its worker handles. All but `filters` against a real nats-server (and PostgreSQL where a
//! test or `RIDESAGA_TEST_DB=postgres` asks for it).

mod binary;
mod filters;
mod runtime;
mod saga;
mod support;
