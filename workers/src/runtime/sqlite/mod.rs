//! SQLite, the embedded backend: opening a service's database file (WAL, so replicas on one
//! host can share it), migrations, and the runtime's inbox and outbox.
//!
//! # Layout
//! - this file: opening, migrations, the inbox and the statements that open and close a batch.
//! - [`outbox`]: the outbox's statements.
//! - [`effects`]: the effects table's statements.
//! - [`writer`]: the connection every write goes through, one turn at a time.
//! - [`writer_lock`]: one writer at a time among replicas sharing the file.
//! - [`checkpoint`]: moving the write-ahead log into the database file, and starting it over.

pub(crate) mod checkpoint;
pub(crate) mod writer;
pub mod writer_lock;

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use ridesaga_schemas::{Envelope, MessageId, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Column as _, Row, SqliteConnection, SqlitePool};

use crate::runtime::db::{InboxEntry, NewEffects, Opened, OutboxRow, Row as AnyRow};
use crate::runtime::handler::BatchWrite;
use writer::Writer;
use writer_lock::WriterLock;

pub(crate) static RUNTIME_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/runtime");

/// A service's SQLite database as a replica runs it: a pool for reads, the writer every write
/// goes through (taking turns with the other replicas on the file), and a connection of its own
/// for checkpoints, so a checkpoint never takes the writer's.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: SqlitePool,
    pub writer: Writer,
    pub checkpoints: SqlitePool,
}

impl Database {
    /// Opens the file `url` names with `pool` connections for reads and migrates it.
    pub async fn open(
        url: &str,
        pool: u32,
        migrator: &'static Migrator,
    ) -> Result<Database, crate::runtime::db::OpenError> {
        let path = database_path(url)?;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(sqlx::Error::Io)?;
        }
        let lock = WriterLock::beside(&path).map_err(sqlx::Error::Io)?;
        // Replicas that start together open and migrate one at a time: the first to open a new
        // file switches it to WAL, which a replica opening it at that moment can see as
        // "database is locked" whatever its busy timeout, and SQLite has no lock of its own
        // around migrations (a second replica would try to apply them again).
        let turn = lock.acquire().await.map_err(sqlx::Error::Io)?;
        let reads = open_with(url, pool, Checkpoints::Background).await?;
        migrate(&reads, migrator).await?;
        let writes = open_with(url, 1, Checkpoints::Background).await?;
        let checkpoints = open(url, 1).await?;
        drop(turn);
        Ok(Database {
            pool: reads,
            writer: Writer::new(writes, lock),
            checkpoints,
        })
    }
}

/// Opens (creating if needed) the database at `url` with WAL journaling, a busy timeout long
/// enough for several replicas to take turns, and `max_connections` connections.
pub async fn open(url: &str, max_connections: u32) -> Result<SqlitePool, sqlx::Error> {
    open_with(url, max_connections, Checkpoints::Automatic).await
}

/// Who moves the write-ahead log into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoints {
    /// SQLite, inside whichever commit crosses the threshold (the default).
    Automatic,
    /// A background task (`runtime::checkpoint`), so no input's commit waits for the checkpoint's
    /// fsync of the database file.
    Background,
}

/// [`open`], choosing who checkpoints.
pub(crate) async fn open_with(
    url: &str,
    max_connections: u32,
    checkpoints: Checkpoints,
) -> Result<SqlitePool, sqlx::Error> {
    let mut options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode survives process crashes (the ones redelivery must survive)
        // without an fsync per commit; an OS crash or power loss can lose the last commits,
        // as the broker's sync_interval can lose its last writes.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
        // A statement that changes rows inside a batch's transaction keeps the pages it
        // changes in a statement journal, to undo itself alone if it fails. Above 64 KiB
        // (a batch's inbox entries land on that many index pages) SQLite moves that journal
        // into a temporary file, created and deleted on every batch; in memory, it is not.
        .pragma("temp_store", "memory");
    if checkpoints == Checkpoints::Background {
        // When the log starts over (see `runtime::checkpoint`), a file grown larger than this
        // by a burst is cut back to it.
        options = options
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", (96 * 1024 * 1024).to_string());
    }
    if let Some(path) = options.get_filename().parent()
        && !path.as_os_str().is_empty()
    {
        std::fs::create_dir_all(path).map_err(sqlx::Error::Io)?;
    }
    SqlitePoolOptions::new()
        .max_connections(max_connections.max(1))
        // A ping before every acquire is a round trip to the connection's thread; an embedded
        // database has no network link to go stale, and a broken connection fails the next
        // statement anyway.
        .test_before_acquire(false)
        .connect_with(options)
        .await
}

/// The file a database URL names (`:memory:` for an in-memory database).
pub(crate) fn database_path(url: &str) -> Result<std::path::PathBuf, sqlx::Error> {
    Ok(SqliteConnectOptions::from_str(url)?
        .get_filename()
        .to_path_buf())
}

/// Runs the runtime's migrations (versions below 100) and the service's (100 and up) as one
/// set, so they share one migrations table without tripping over each other.
/// Migrations applied by a newer release and unknown to this one are left alone, so that a
/// release rolled back runs on the database its successor migrated (migrations only add:
/// tables, and columns with defaults).
pub async fn migrate(
    pool: &SqlitePool,
    service: &Migrator,
) -> Result<(), sqlx::migrate::MigrateError> {
    let all = RUNTIME_MIGRATOR
        .iter()
        .chain(service.iter())
        .cloned()
        .collect();
    let mut migrator = Migrator::with_migrations(all);
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

// The runtime's statements, each written once: alone, or joined into the multi-statement
// queries that open and close a batch. Rows travel as one JSON array (the parameter given),
// so the statement text is the same for any number of rows. Inserts expand it with
// `jsonb_each`, whose rows come out in SQLite's binary JSON: `value ->> n` then reads a field
// in place, where `json_each` would turn the whole row back into text for every field read.

/// Inbox entries `[occurred_ms, id, subject, received_ms]`; returns the ids that were new. An
/// id recorded before the inbox was keyed by occurrence (in `inbox_legacy`) is not new either.
macro_rules! inbox_insert_sql {
    ($rows:literal) => {
        concat!(
            "INSERT INTO inbox (occurred_at, message_id, subject, received_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(",
            $rows,
            ") WHERE NOT EXISTS (SELECT 1 FROM inbox_legacy WHERE message_id = value ->> 1) \
             ON CONFLICT (occurred_at, message_id) DO NOTHING RETURNING message_id AS inbox_new"
        )
    };
}

/// Outbox rows `[id, cause, subject, start, length, traceparent, tracestate]` (the third parameter), created at the
/// second, with their payloads in the first: one blob of every payload back to back, each row
/// naming its slice (1-based, in bytes). Payloads are JSON themselves; inside the rows' JSON
/// they were escaped by the runtime, parsed by SQLite and unescaped again for every row. The
/// parameters are positional, so the statement can follow a service's writes in the query
/// that closes a batch.
const OUTBOX_INSERT_SQL: &str = "INSERT INTO outbox (message_id, cause_id, subject, payload, \
     created_at, traceparent, tracestate) SELECT value ->> 0, value ->> 1, value ->> 2, \
     substr(?, value ->> 3, value ->> 4), ?, value ->> 5, value ->> 6 FROM jsonb_each(?) \
     WHERE true ON CONFLICT (message_id) DO NOTHING";

/// Deletes the outbox rows whose ids are in the parameter (positional, so that the statement
/// can open the query that opens a batch).
macro_rules! outbox_delete_sql {
    () => {
        "DELETE FROM outbox WHERE message_id IN (SELECT value FROM json_each(?))"
    };
}

/// Records `input` as applied; false when it already was (a duplicate or redelivery).
pub async fn inbox_insert(
    conn: &mut SqliteConnection,
    input: &Envelope,
    now: Timestamp,
) -> Result<bool, sqlx::Error> {
    let subject = input.subject();
    let inserted = inbox_insert_many(conn, &[InboxEntry::of(input, &subject, now)]).await?;
    Ok(!inserted.is_empty())
}

/// Records every entry as applied, in one statement, and returns the ids that were new (the
/// others were applied before; a message given twice is new once).
///
/// The rows travel as one JSON array expanded by `jsonb_each`, so the statement text is the
/// same for any number of rows: one prepared statement, one round trip to the database
/// thread, however large the batch.
pub(crate) async fn inbox_insert_many(
    conn: &mut SqliteConnection,
    entries: &[InboxEntry<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if entries.is_empty() {
        return Ok(HashSet::new());
    }
    let inserted: Vec<String> = sqlx::query_scalar(inbox_insert_sql!("$1"))
        .bind(inbox_json(entries)?)
        .fetch_all(conn)
        .await?;
    Ok(inserted.into_iter().collect())
}

/// Opens a batch's transaction on `conn` in one round trip to the database thread: `BEGIN
/// IMMEDIATE`, the delete of the outbox rows in `published`, the inbox entries (see
/// [`inbox_insert_many`], whose new ids it returns) and, if given, the service's preload
/// statement with its parameter. The transaction is managed with statements rather than
/// sqlx's `Transaction`, so that opening and closing it share round trips with work; the
/// caller ends it with [`close_batch`] or [`abort_batch`].
pub(crate) async fn open_batch(
    conn: &mut SqliteConnection,
    published: &[String],
    entries: &[InboxEntry<'_>],
    preload: Option<(&str, String)>,
) -> Result<Opened, sqlx::Error> {
    let opened: Result<Opened, sqlx::Error> = async {
        // Every parameter is positional: `?` binds the next argument across the statements.
        const OPEN_SQL: &str = concat!(
            "BEGIN IMMEDIATE; ",
            outbox_delete_sql!(),
            "; ",
            inbox_insert_sql!("?")
        );
        // Most batches have no published rows to delete (see the batch writer): without the
        // delete, the query has one statement fewer to run and to report back from the
        // connection's thread.
        const OPEN_KEEPING_SQL: &str = concat!("BEGIN IMMEDIATE; ", inbox_insert_sql!("?"));
        let deleting = !published.is_empty();
        let open = if deleting { OPEN_SQL } else { OPEN_KEEPING_SQL };
        let mut query = match &preload {
            Some((statement, _)) => sqlx::query(AssertSqlSafe(format!("{open}; {statement}"))),
            None => sqlx::query(open),
        };
        if deleting {
            query = query.bind(json_array(published)?);
        }
        let mut query = query.bind(inbox_json(entries)?);
        if let Some((_, parameter)) = preload {
            query = query.bind(parameter);
        }
        // The statements run in order: the inbox insert's rows (the new ids, in a column named
        // for them) come before the preload's.
        let mut opened = Opened::default();
        let mut rows = query.fetch(&mut *conn);
        while let Some(row) = rows.try_next().await? {
            let is_new_id = opened.preloaded.is_empty()
                && row
                    .columns()
                    .first()
                    .is_some_and(|c| c.name() == "inbox_new");
            if is_new_id {
                opened.fresh.insert(row.try_get(0)?);
            } else {
                opened.preloaded.push(AnyRow::Sqlite(row));
            }
        }
        Ok(opened)
    }
    .await;
    match opened {
        Ok(opened) => Ok(opened),
        Err(e) => {
            abort_batch(conn).await;
            Err(e)
        }
    }
}

/// Runs the service's `writes`, stores the batch's outputs (see [`outbox::outbox_insert_many`]) and
/// its effects (when it has some), and commits, in one round trip. On failure the transaction
/// is rolled back.
pub(crate) async fn close_batch(
    conn: &mut SqliteConnection,
    writes: &[BatchWrite],
    outputs: &[(Option<&str>, &OutboxRow)],
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let closed = async {
        let mut sql = String::new();
        for write in writes {
            sql.push_str(write.sql());
            sql.push_str("; ");
        }
        sql.push_str(OUTBOX_INSERT_SQL);
        if !effects.is_empty() {
            sql.push_str("; ");
            sql.push_str(EFFECTS_INSERT_SQL);
        }
        sql.push_str("; COMMIT");
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for write in writes {
            query = query.bind(write.rows());
        }
        let (payloads, rows) = outbox_rows(outputs)?;
        query = query.bind(payloads).bind(now.unix_millis()).bind(rows);
        if !effects.is_empty() {
            query = query.bind(effects_json(effects, now)?);
        }
        query.execute(&mut *conn).await
    }
    .await;
    if let Err(e) = closed {
        abort_batch(conn).await;
        return Err(e);
    }
    Ok(())
}

/// Rolls back a batch's transaction, if one is open (an error only means there was none).
pub(crate) async fn abort_batch(conn: &mut SqliteConnection) {
    if let Err(e) = sqlx::query("ROLLBACK").execute(conn).await {
        tracing::debug!(error = %e, "rollback found no open transaction");
    }
}

/// Inbox entries as the JSON array [`inbox_insert_sql!`] expands.
fn inbox_json(entries: &[InboxEntry<'_>]) -> Result<String, sqlx::Error> {
    let rows: Vec<(i64, &str, &str, i64)> = entries
        .iter()
        .map(|e| {
            (
                e.occurred.unix_millis(),
                e.id,
                e.subject,
                e.received.unix_millis(),
            )
        })
        .collect();
    json_array(&rows)
}

fn json_array<T: serde::Serialize>(rows: &[T]) -> Result<String, sqlx::Error> {
    serde_json::to_string(rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// Drops up to `limit` inbox entries that occurred and were received before `before_ms` (the
/// runtime's retention calls it until it drops fewer, each time in a short write turn). The
/// entries are found by their occurrence (the key's first column; a message is received after
/// it occurs), and one that occurred that long ago but was received since is kept.
pub(crate) async fn inbox_prune(
    conn: &mut SqliteConnection,
    before_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM inbox WHERE (occurred_at, message_id) IN (SELECT occurred_at, message_id \
         FROM inbox WHERE occurred_at < ?1 AND received_at < ?1 LIMIT ?2); \
         DELETE FROM inbox_legacy WHERE message_id IN (SELECT message_id FROM inbox_legacy \
         WHERE received_at < ?1 LIMIT ?2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Outbox rows and the oldest's `created_at`, pending effects and the oldest's `recorded_at`:
/// the metrics' sample, in one statement (the outbox's index on `created_at` finds its oldest).
pub(crate) async fn sample(
    pool: &SqlitePool,
) -> Result<(i64, Option<i64>, i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM outbox), (SELECT MIN(created_at) FROM outbox), \
         (SELECT COUNT(*) FROM effects), (SELECT MIN(recorded_at) FROM effects)",
    )
    .fetch_one(pool)
    .await
}

mod effects;
use effects::{EFFECTS_INSERT_SQL, effects_json};
pub(crate) use effects::{
    effects_claim, effects_delete, effects_insert, effects_of_saga, effects_pending,
    effects_release, effects_retry,
};
mod outbox;
pub use outbox::outbox_insert;
use outbox::outbox_rows;
pub(crate) use outbox::{outbox_delete, outbox_for_cause, outbox_stale};

/// Runs a service's preload statement `sql` with `parameter` on its own.
pub(crate) async fn preload_rows(
    conn: &mut SqliteConnection,
    sql: &str,
    parameter: String,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(parameter)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(AnyRow::Sqlite).collect())
}

/// Runs one of a service's writes on its own.
pub(crate) async fn execute(
    conn: &mut SqliteConnection,
    write: &BatchWrite,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(write.sql()))
        .bind(write.rows())
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests;
