//! The contract between the shared runtime and a service: what a service implements, and how
//! its errors decide the fate of the message that caused them.

use std::future::Future;

use ridesaga_schemas::{Envelope, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;

/// What a handler failure means for the input message.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Worth retrying later (a gateway timeout, a busy database): the message is nak'ed with a
    /// delay that grows with its delivery count, up to the consumer's max_deliver.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying cannot help (a message no state machine accepts): the message goes to the
    /// dead-letter path with this reason and is terminated.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl From<sqlx::Error> for HandleError {
    fn from(e: sqlx::Error) -> Self {
        // A database error is assumed transient (locked, busy, I/O); a poison message that
        // breaks a constraint every time ends up in dead letters after max_deliver anyway.
        HandleError::Transient(format!("database: {e}"))
    }
}

/// A service's logic as the runtime sees it. Implementations keep no state in memory between
/// calls: everything lives in the service's database, reached through `conn`, which is inside
/// the transaction that also records the input in the inbox and the outputs in the outbox.
pub trait Worker: Send + Sync + 'static {
    /// Which service this is (consumer name, producer field, metrics label).
    fn service(&self) -> Service;

    /// The service's own tables. Versions start at 100: lower versions belong to the runtime's
    /// tables (inbox, outbox), which share the database and the migrations table.
    fn migrator(&self) -> &'static Migrator;

    /// Applies one input and returns the messages to publish. Called at most once per message
    /// id that commits (the runtime's inbox check runs first in the same transaction).
    fn apply<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a;

    /// Runs due timers (deadlines, retries). Called periodically by every replica, each time in
    /// its own transaction; outputs must carry ids derived from stable keys
    /// (`MessageId::derive_from_key`) so replicas that race emit identical messages.
    fn tick<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        let _ = (conn, now);
        async { Ok(Vec::new()) }
    }
}
