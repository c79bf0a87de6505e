//! The storage seam: what the runtime and the services see of a service's database, whichever
//! backend holds it. Each backend lives in a module of its own ([`super::sqlite`],
//! [`super::postgres`]); this module
//! names what every backend provides and hands each call to the one in use:
//!
//! - [`Database`]: opening and migrating the service's database, the writer's [`Turn`],
//!   transactions for timers and clean-ups, the relay's read of rows left behind;
//! - the statements of a batch: [`open_batch`] (inbox entries and the service's preload),
//!   [`close_batch`] (the service's writes, the outbox rows, the commit), [`abort_batch`];
//! - the outbox and the inbox's retention;
//! - the effects table: recording, claiming, retrying and forgetting effects (see
//!   [`super::effects`]).
//!
//! Services reach their own tables through [`Conn`] (a connection inside the runtime's
//! transaction) and read what their preload returned as [`Row`]s; their stores choose the
//! statements by [`Conn::kind`].

use std::collections::HashSet;
use std::time::Duration;

use ridesaga_schemas::{Envelope, MessageId, RideId, Timestamp, TraceContext};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, PgConnection, Postgres, Sqlite, SqliteConnection, Type};
use tokio_util::sync::CancellationToken;

use super::effects::{Effect, PendingEffect};
use super::handler::BatchWrite;
use super::metrics::Sample;
use super::{postgres, sqlite};

/// Which database a service runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One file per service, shared by the replicas on one host (the default).
    Sqlite,
    /// One database per service, shared by replicas on any number of hosts.
    Postgres,
}

impl Kind {
    /// The backend a `DATABASE_URL` names, by its scheme.
    pub fn of_url(url: &str) -> Result<Kind, String> {
        match url.split_once(':').map(|(scheme, _)| scheme) {
            Some("sqlite") => Ok(Kind::Sqlite),
            Some("postgres" | "postgresql") => Ok(Kind::Postgres),
            _ => Err(format!(
                "unsupported database URL {url:?}: expected sqlite://PATH or \
                 postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            )),
        }
    }
}

/// A connection of the service's database, inside the transaction of the batch or timer run
/// that hands it over.
#[derive(Debug)]
pub enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Conn::Sqlite(_) => Kind::Sqlite,
            Conn::Postgres(_) => Kind::Postgres,
        }
    }

    /// The same connection, borrowed again (to hand to a call that takes it by value).
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

impl<'a, 'c: 'a> From<&'a mut Conn<'c>> for Conn<'a> {
    fn from(conn: &'a mut Conn<'c>) -> Self {
        conn.reborrow()
    }
}

/// A row of a service's preload statement.
#[derive(Debug)]
pub enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl Row {
    /// The column `name`, whichever backend read the row: a type both backends decode the
    /// same way (`String`, `i64`, `f64`, `bool` and their `Option`s).
    pub fn get<T>(&self, name: &str) -> Result<T, sqlx::Error>
    where
        T: Type<Sqlite>
            + for<'r> Decode<'r, Sqlite>
            + Type<Postgres>
            + for<'r> Decode<'r, Postgres>,
    {
        match self {
            Row::Sqlite(row) => sqlx::Row::try_get(row, name),
            Row::Postgres(row) => sqlx::Row::try_get(row, name),
        }
    }
}

/// A message waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub message_id: String,
    pub subject: String,
    pub payload: Vec<u8>,
    /// The trace context it is published with (its `traceparent` and `tracestate`).
    pub trace: Option<TraceContext>,
}

impl OutboxRow {
    pub fn from_envelope(envelope: &Envelope) -> Self {
        OutboxRow {
            message_id: envelope.id.to_string(),
            subject: envelope.subject(),
            payload: envelope.encode(),
            trace: None,
        }
    }

    /// The row's `traceparent`, as stored.
    pub fn traceparent(&self) -> Option<String> {
        self.trace.as_ref().map(TraceContext::traceparent)
    }

    /// The row's `tracestate`, as stored.
    pub fn tracestate(&self) -> Option<&str> {
        self.trace.as_ref().and_then(|t| t.state.as_deref())
    }

    /// The trace context stored as `traceparent` and `tracestate` (none if it does not parse).
    pub fn trace_of(
        traceparent: Option<String>,
        tracestate: Option<String>,
    ) -> Option<TraceContext> {
        TraceContext::parse(&traceparent?, tracestate.as_deref()).ok()
    }
}

/// Effects a transaction records: each is due at once and may be retried until `deadline`
/// after the transaction's time. With a `claim`, they are recorded claimed for that long by
/// the replica that records them, whose executor gets them in memory once the transaction
/// commits ([`NewEffects::pending`]); without one, any replica's executor claims them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewEffects<'a> {
    pub effects: &'a [Effect],
    pub deadline: Duration,
    pub claim: Duration,
}

impl NewEffects<'_> {
    /// No effects.
    #[cfg(test)]
    pub(crate) const NONE: NewEffects<'static> = NewEffects {
        effects: &[],
        deadline: Duration::ZERO,
        claim: Duration::ZERO,
    };

    pub(crate) fn is_empty(&self) -> bool {
        self.effects.is_empty()
    }

    /// The effects as recorded by a transaction at `now`.
    pub(crate) fn pending(&self, now: Timestamp) -> Vec<PendingEffect> {
        let deadline = Timestamp::from_unix_millis(self.deadline_ms(now));
        self.effects
            .iter()
            .map(|effect| PendingEffect {
                effect: effect.clone(),
                attempts: 0,
                recorded_at: now,
                deadline,
            })
            .collect()
    }

    /// Until when the effects are claimed, in milliseconds, for a transaction at `now` (0:
    /// unclaimed).
    pub(crate) fn claimed_until_ms(&self, now: Timestamp) -> i64 {
        if self.claim.is_zero() {
            return 0;
        }
        now.unix_millis()
            .saturating_add(i64::try_from(self.claim.as_millis()).unwrap_or(i64::MAX))
    }

    /// The effects' deadline, in milliseconds, for a transaction at `now`.
    pub(crate) fn deadline_ms(&self, now: Timestamp) -> i64 {
        now.unix_millis()
            .saturating_add(i64::try_from(self.deadline.as_millis()).unwrap_or(i64::MAX))
    }
}

/// An effect to try again: its claim is cleared and it is due at `next_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EffectRetry {
    pub id: String,
    /// Attempts made so far.
    pub attempts: u32,
    pub next_at: Timestamp,
    pub last_error: String,
}

/// A pending effect as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct EffectStatus {
    pub kind: String,
    pub id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Why the last attempt failed, if one did.
    pub last_error: Option<String>,
    /// Not performed again before this.
    pub next_at: Timestamp,
    /// A transient failure after this settles it as given up.
    pub deadline: Timestamp,
}

/// A row of a backend's `effects_of_saga` (`effect_id`, `kind`, `attempts`, `last_error`,
/// `next_at`, `deadline_at`) as the control plane shows it.
fn effect_status(row: &Row) -> Result<EffectStatus, sqlx::Error> {
    Ok(EffectStatus {
        kind: row.get("kind")?,
        id: row.get("effect_id")?,
        attempts: u32::try_from(row.get::<i64>("attempts")?).unwrap_or(0),
        last_error: row.get("last_error")?,
        next_at: Timestamp::from_unix_millis(row.get("next_at")?),
        deadline: Timestamp::from_unix_millis(row.get("deadline_at")?),
    })
}

/// A row of a backend's `effects_claim` (`effect_id`, `kind`, `saga_id`, `request`,
/// `attempts`, `recorded_at`, `deadline_at`, `traceparent`, `tracestate`) as the executor
/// performs it.
fn pending_effect(row: &Row) -> Result<PendingEffect, sqlx::Error> {
    Ok(PendingEffect {
        effect: Effect {
            id: row.get("effect_id")?,
            kind: row.get("kind")?,
            saga_id: row
                .get::<Option<String>>("saga_id")?
                .and_then(|saga| RideId::parse(saga).ok()),
            request: row.get("request")?,
            trace: OutboxRow::trace_of(row.get("traceparent")?, row.get("tracestate")?),
        },
        attempts: u32::try_from(row.get::<i64>("attempts")?).unwrap_or(0),
        recorded_at: Timestamp::from_unix_millis(row.get("recorded_at")?),
        deadline: Timestamp::from_unix_millis(row.get("deadline_at")?),
    })
}

/// One input for the inbox: the message (its id and occurrence time, which together identify
/// it), its subject, and when it was received.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InboxEntry<'a> {
    pub id: &'a str,
    pub subject: &'a str,
    pub occurred: Timestamp,
    pub received: Timestamp,
}

impl<'a> InboxEntry<'a> {
    /// The entry for `input` (whose subject is `subject`), received at `received`.
    pub(crate) fn of(input: &'a Envelope, subject: &'a str, received: Timestamp) -> Self {
        InboxEntry {
            id: input.id.as_str(),
            subject,
            occurred: input.occurred_at,
            received,
        }
    }
}

/// What the statements that open a batch returned.
#[derive(Debug, Default)]
pub(crate) struct Opened {
    /// The inbox entries that were new.
    pub fresh: HashSet<String>,
    /// The rows of the service's preload statement, if it was given one.
    pub preloaded: Vec<Row>,
}

/// Why a service's database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Url(String),
    #[error("{0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A service's database, open and migrated; clones share it.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(sqlite::Database),
    Postgres(postgres::Database),
}

impl Database {
    /// Opens the database `url` names (see [`Kind::of_url`]) with `pool` connections for reads,
    /// and runs the runtime's migrations and the service's (`migrator` of the backend).
    pub async fn open(
        url: &str,
        pool: u32,
        migrator: impl Fn(Kind) -> &'static Migrator,
    ) -> Result<Database, OpenError> {
        match Kind::of_url(url).map_err(OpenError::Url)? {
            Kind::Sqlite => Ok(Database::Sqlite(
                sqlite::Database::open(url, pool, migrator(Kind::Sqlite)).await?,
            )),
            Kind::Postgres => Ok(Database::Postgres(
                postgres::Database::open(url, pool, migrator(Kind::Postgres)).await?,
            )),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Database::Sqlite(_) => Kind::Sqlite,
            Database::Postgres(_) => Kind::Postgres,
        }
    }

    /// Waits for the writer's turn: the one connection writes go through, to its holder alone
    /// until the turn drops.
    pub(crate) async fn turn(&self) -> Result<Turn, sqlx::Error> {
        match self {
            Database::Sqlite(db) => Ok(Turn::Sqlite(
                db.writer.turn().await.map_err(sqlx::Error::Io)?,
            )),
            Database::Postgres(db) => Ok(Turn::Postgres(db.turn().await?)),
        }
    }

    /// Runs `write` in the writer's turn, in a transaction of its own, and commits when it
    /// succeeds; rolls back on any failure. For the writes beside the batches: timers, deletes
    /// of published outbox rows, the inbox's retention.
    pub async fn transaction<T, E>(
        &self,
        write: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        match self {
            Database::Sqlite(db) => {
                db.writer
                    .transaction(async |conn| write(&mut Conn::Sqlite(conn)).await)
                    .await
            }
            Database::Postgres(db) => {
                let mut turn = db.turn().await?;
                let done: Result<T, E> = async {
                    let conn = turn.conn().await?;
                    postgres::begin(conn).await?;
                    let value = write(&mut Conn::Postgres(&mut *conn)).await?;
                    postgres::commit(conn).await?;
                    Ok(value)
                }
                .await;
                if done.is_err() {
                    if let Ok(conn) = turn.conn().await {
                        postgres::abort_batch(conn).await;
                    }
                    turn.give_back();
                }
                done
            }
        }
    }

    /// Up to `limit` outbox rows created before `before_ms`: left behind by a crash or a failed
    /// publish. Read outside the writer's turn.
    pub(crate) async fn outbox_stale(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<OutboxRow>, sqlx::Error> {
        match self {
            Database::Sqlite(db) => sqlite::outbox_stale(&db.pool, before_ms, limit).await,
            Database::Postgres(db) => postgres::outbox_stale(&db.pool, before_ms, limit).await,
        }
    }

    /// How many effects are pending, and whether one of them is due and unclaimed at
    /// `now_ms`: a read outside the writer's turn, so that a replica with nothing to perform
    /// takes no turn to find out.
    pub(crate) async fn effects_pending(&self, now_ms: i64) -> Result<(i64, bool), sqlx::Error> {
        match self {
            Database::Sqlite(db) => sqlite::effects_pending(&db.pool, now_ms).await,
            Database::Postgres(db) => postgres::effects_pending(&db.pool, now_ms).await,
        }
    }

    /// The outbox's and the effects' figures for the metrics at `now_ms`: one read outside the
    /// writer's turn.
    pub(crate) async fn sample(&self, now_ms: i64) -> Result<Sample, sqlx::Error> {
        let (outbox_rows, outbox_oldest, effects_pending, effects_oldest) = match self {
            Database::Sqlite(db) => sqlite::sample(&db.pool).await?,
            Database::Postgres(db) => postgres::sample(&db.pool).await?,
        };
        let age = |oldest: Option<i64>| oldest.map_or(0, |at| (now_ms - at).max(0));
        Ok(Sample {
            outbox_rows,
            outbox_oldest_ms: age(outbox_oldest),
            effects_pending,
            effects_oldest_ms: age(effects_oldest),
        })
    }

    /// Runs `read` on a connection of the read pool, outside the writer's turn and outside
    /// any transaction: for figures that may lag the writes a little.
    pub async fn read<T>(
        &self,
        read: impl AsyncFnOnce(&mut Conn<'_>) -> Result<T, sqlx::Error>,
    ) -> Result<T, sqlx::Error> {
        match self {
            Database::Sqlite(db) => {
                let mut conn = db.pool.acquire().await?;
                read(&mut Conn::Sqlite(&mut conn)).await
            }
            Database::Postgres(db) => {
                let mut conn = db.pool.acquire().await?;
                read(&mut Conn::Postgres(&mut conn)).await
            }
        }
    }

    /// The pending effects of `saga`, oldest first. Read outside the writer's turn.
    pub(crate) async fn effects_of_saga(
        &self,
        saga: &RideId,
    ) -> Result<Vec<EffectStatus>, sqlx::Error> {
        match self {
            Database::Sqlite(db) => sqlite::effects_of_saga(&db.pool, saga).await,
            Database::Postgres(db) => postgres::effects_of_saga(&db.pool, saga).await,
        }?
        .iter()
        .map(effect_status)
        .collect()
    }

    /// What the backend runs beside the worker until `stop` (SQLite's checkpointer).
    pub(crate) async fn maintain(&self, stop: CancellationToken) {
        match self {
            Database::Sqlite(db) => {
                sqlite::checkpoint::checkpoint_loop(db.checkpoints.clone(), db.writer.clone(), stop)
                    .await
            }
            // The server keeps its own log; nothing to run beside the worker.
            Database::Postgres(_) => stop.cancelled().await,
        }
    }

    /// Closes every connection (when the replica stops).
    pub(crate) async fn close(&self) {
        match self {
            Database::Sqlite(db) => {
                db.writer.close().await;
                db.pool.close().await;
                db.checkpoints.close().await;
            }
            Database::Postgres(db) => db.pool.close().await,
        }
    }
}

/// The writer's turn (see [`Database::turn`]).
#[derive(Debug)]
pub(crate) enum Turn {
    Sqlite(sqlite::writer::Turn),
    Postgres(postgres::Turn),
}

impl Turn {
    /// The writer's connection.
    pub(crate) async fn conn(&mut self) -> Result<Conn<'_>, sqlx::Error> {
        match self {
            Turn::Sqlite(turn) => Ok(Conn::Sqlite(turn.conn().await?)),
            Turn::Postgres(turn) => Ok(Conn::Postgres(turn.conn().await?)),
        }
    }

    /// Gives the connection back to its pool, which tests it (and replaces it if it is broken)
    /// before the next turn: for after a failure, which may have been the connection's.
    pub(crate) fn give_back(&mut self) {
        match self {
            Turn::Sqlite(turn) => turn.give_back(),
            Turn::Postgres(turn) => turn.give_back(),
        }
    }
}

/// Opens a batch's transaction on `conn`: deletes the outbox rows in `published`, records
/// every entry in the inbox (returning the ids that were new) and runs the service's preload
/// statement with its parameter, if given. The caller ends the transaction with
/// [`close_batch`] or [`abort_batch`].
pub(crate) async fn open_batch(
    conn: &mut Conn<'_>,
    published: &[String],
    entries: &[InboxEntry<'_>],
    preload: Option<(&str, String)>,
) -> Result<Opened, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::open_batch(c, published, entries, preload).await,
        Conn::Postgres(c) => postgres::open_batch(c, published, entries, preload).await,
    }
}

/// Runs the service's `writes`, stores the batch's outputs (each with the id of the input
/// that caused it) and its effects, and commits. On failure the transaction is rolled back.
pub(crate) async fn close_batch(
    conn: &mut Conn<'_>,
    writes: &[BatchWrite],
    outputs: &[(Option<&str>, &OutboxRow)],
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::close_batch(c, writes, outputs, effects, now).await,
        Conn::Postgres(c) => postgres::close_batch(c, writes, outputs, effects, now).await,
    }
}

/// Rolls back a batch's transaction, if one is open.
pub(crate) async fn abort_batch(conn: &mut Conn<'_>) {
    match conn {
        Conn::Sqlite(c) => sqlite::abort_batch(c).await,
        Conn::Postgres(c) => postgres::abort_batch(c).await,
    }
}

/// The outputs of an input applied before that are still waiting in the outbox.
pub(crate) async fn outbox_for_cause(
    conn: &mut Conn<'_>,
    cause: &MessageId,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::outbox_for_cause(c, cause).await,
        Conn::Postgres(c) => postgres::outbox_for_cause(c, cause).await,
    }
}

/// Stores `rows` in the outbox, caused by `cause` (none for a timer's outputs).
pub(crate) async fn outbox_insert(
    conn: &mut Conn<'_>,
    cause: Option<&MessageId>,
    rows: &[OutboxRow],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::outbox_insert(c, cause, rows, now).await,
        Conn::Postgres(c) => postgres::outbox_insert(c, cause, rows, now).await,
    }
}

/// Deletes the outbox rows whose ids are given (the server stored them).
pub(crate) async fn outbox_delete(conn: &mut Conn<'_>, ids: &[String]) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::outbox_delete(c, ids).await,
        Conn::Postgres(c) => postgres::outbox_delete(c, ids).await,
    }
}

/// Stores what a transaction beside the batches produced at `now`: `rows` (caused by no
/// input), the `effects` it made due and the `retries` it scheduled; one statement on
/// PostgreSQL.
pub(crate) async fn store_outputs(
    conn: &mut Conn<'_>,
    rows: &[OutboxRow],
    effects: NewEffects<'_>,
    retries: &[EffectRetry],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(_) => {
            outbox_insert(conn, None, rows, now).await?;
            effects_insert(conn, effects, now).await?;
            effects_retry(conn, retries).await
        }
        Conn::Postgres(c) => {
            let outputs: Vec<(Option<&str>, &OutboxRow)> =
                rows.iter().map(|row| (None, row)).collect();
            postgres::store_all(c, &[], &outputs, effects, retries, now).await
        }
    }
}

/// Records effects made due at `now`; an id already recorded keeps its first record.
pub(crate) async fn effects_insert(
    conn: &mut Conn<'_>,
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if effects.is_empty() {
        return Ok(());
    }
    match conn {
        Conn::Sqlite(c) => sqlite::effects_insert(c, effects, now).await,
        Conn::Postgres(c) => postgres::effects_insert(c, effects, now).await,
    }
}

/// Claims up to `limit` effects due and unclaimed at `now_ms`, earliest due first, until
/// `until_ms`, and returns them.
pub(crate) async fn effects_claim(
    conn: &mut Conn<'_>,
    now_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<PendingEffect>, sqlx::Error> {
    let rows = match conn {
        Conn::Sqlite(c) => sqlite::effects_claim(c, now_ms, until_ms, limit).await?,
        Conn::Postgres(c) => postgres::effects_claim(c, now_ms, until_ms, limit).await?,
    };
    rows.iter().map(pending_effect).collect()
}

/// Forgets the effects whose ids are given; returns the ids that were still recorded (the
/// others were settled already, by another replica).
pub(crate) async fn effects_delete(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    match conn {
        Conn::Sqlite(c) => sqlite::effects_delete(c, ids).await,
        Conn::Postgres(c) => postgres::effects_delete(c, ids).await,
    }
}

/// Clears the claims of the effects whose ids are given, so any replica claims them next.
pub(crate) async fn effects_release(
    conn: &mut Conn<'_>,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    match conn {
        Conn::Sqlite(c) => sqlite::effects_release(c, ids).await,
        Conn::Postgres(c) => postgres::effects_release(c, ids).await,
    }
}

/// Sets effects up for another attempt: their attempts, when, the last error; clears their
/// claims.
pub(crate) async fn effects_retry(
    conn: &mut Conn<'_>,
    retries: &[EffectRetry],
) -> Result<(), sqlx::Error> {
    if retries.is_empty() {
        return Ok(());
    }
    match conn {
        Conn::Sqlite(c) => sqlite::effects_retry(c, retries).await,
        Conn::Postgres(c) => postgres::effects_retry(c, retries).await,
    }
}

/// The inbox's retention, one step: forgets up to `limit` entries (or, on PostgreSQL, whole
/// days) of messages that occurred and were received before `before_ms`; returns how many
/// entries went. `now_ms` lets a backend prepare for what comes (PostgreSQL's partitions of
/// the days ahead).
pub(crate) async fn inbox_prune(
    conn: &mut Conn<'_>,
    now_ms: i64,
    before_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::inbox_prune(c, before_ms, limit).await,
        Conn::Postgres(c) => postgres::inbox_prune(c, now_ms, before_ms, limit).await,
    }
}

/// Runs a service's preload statement on its own: what `handle_batch` does when the runtime did
/// not run it with the statements that open the batch.
pub(crate) async fn preload_rows(
    conn: &mut Conn<'_>,
    sql: &str,
    parameter: String,
) -> Result<Vec<Row>, sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::preload_rows(c, sql, parameter).await,
        Conn::Postgres(c) => postgres::preload_rows(c, sql, parameter).await,
    }
}

/// Runs one of a service's writes on its own (in a timer, or for a batch of one).
pub(crate) async fn execute(conn: &mut Conn<'_>, write: &BatchWrite) -> Result<(), sqlx::Error> {
    match conn {
        Conn::Sqlite(c) => sqlite::execute(c, write).await,
        Conn::Postgres(c) => postgres::execute(c, write).await,
    }
}
