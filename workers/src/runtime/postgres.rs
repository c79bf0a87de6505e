//! PostgreSQL, the backend for replicas on many hosts: one database per service, reached by
//! every replica of the service over the network; nothing is shared through the file system.
//!
//! Replicas take turns to write as they do on SQLite: every write transaction (a batch, a
//! timer run, a clean-up) first takes the database's writer lock, a transaction-level advisory
//! lock released by its commit or rollback. The services' state machines rely on one writer at
//! a time (a driver is booked by the transaction that saw it free; fraud counts a rider's
//! requests before adding one), and the lock gives them that on any number of hosts, at the
//! price of one batch at a time per service, which group commit amortises. Statements run at
//! READ COMMITTED: each sees everything committed before it, so a transaction that holds the
//! lock sees every write of the holders before it.
//!
//! A batch costs five round trips whatever its size: `BEGIN` with the lock; one statement that
//! deletes the published outbox rows and records the inputs in the inbox; the service's
//! preload; one statement that runs the service's writes, stores the outputs and records the
//! effects (each a data-modifying `WITH` clause of one `INSERT`); `COMMIT`. Rows travel as
//! arrays (`unnest`) or as JSON documents, so a statement's text depends only on which kinds of
//! rows it stores, never on their number, and is prepared once per connection.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use ridesaga_schemas::{MessageId, RideId, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Row};

use super::db::{EffectRetry, InboxEntry, NewEffects, OpenError, Opened, OutboxRow, Row as AnyRow};
use super::effects::Effect;
use super::handler::BatchWrite;

static RUNTIME_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/runtime");

/// The advisory lock every write transaction of a service's database takes first (each
/// service has a database of its own, so one key serves all of them).
const WRITER_LOCK: i64 = 0x7269_6465_7361_6761; // "ridesaga"

/// A service's PostgreSQL database as a replica runs it: one pool, for reads and for the
/// writer's connection.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: PgPool,
}

impl Database {
    /// Connects to the database `url` names, with `pool` connections for reads besides the
    /// writer's, and migrates it.
    pub async fn open(
        url: &str,
        pool: u32,
        migrator: &'static Migrator,
    ) -> Result<Database, OpenError> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(pool.max(1) + 1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        migrate(&pool, migrator).await?;
        // The inbox's partitions of today and the next days, before the first batch needs them.
        let mut conn = pool.acquire().await?;
        begin(&mut conn).await?;
        let today = Timestamp::now().unix_millis().div_euclid(DAY_MS);
        for day in today..=today + DAYS_AHEAD {
            create_partition(&mut conn, day).await?;
        }
        commit(&mut conn).await?;
        Ok(Database { pool })
    }

    /// The writer's connection for one turn (the lock is taken by the transaction it opens).
    pub async fn turn(&self) -> Result<Turn, sqlx::Error> {
        Ok(Turn {
            conn: Some(self.pool.acquire().await?),
            pool: self.pool.clone(),
        })
    }
}

/// Runs the runtime's migrations (versions below 100) and the service's (100 and up) as one
/// set, in one migrations table.
/// Migrations applied by a newer release and unknown to this one are left alone, so that a
/// release rolled back runs on the database its successor migrated (migrations only add:
/// tables, and columns with defaults).
pub(crate) async fn migrate(
    pool: &PgPool,
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

/// One turn: a connection of the pool, to this holder alone until it is dropped.
#[derive(Debug)]
pub struct Turn {
    conn: Option<PoolConnection<Postgres>>,
    pool: PgPool,
}

impl Turn {
    /// The turn's connection, acquired again if a failure gave the last one back.
    pub async fn conn(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(self.pool.acquire().await?);
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Closes the connection instead of returning it to the pool: after a failure, which may
    /// have been the connection's (a restarted server, a cut link).
    pub fn give_back(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.close_on_drop();
        }
    }
}

/// Opens a write transaction and takes the writer lock, in one round trip.
pub(crate) async fn begin(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let sql = format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock({WRITER_LOCK})"
    );
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(conn)
        .await
        .map(|_| ())
}

pub(crate) async fn commit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("COMMIT").execute(conn).await.map(|_| ())
}

/// Opens a batch's transaction (see the module's documentation for its round trips).
pub(crate) async fn open_batch(
    conn: &mut PgConnection,
    published: &[String],
    entries: &[InboxEntry<'_>],
    preload: Option<(&str, String)>,
) -> Result<Opened, sqlx::Error> {
    let opened = async {
        begin(&mut *conn).await?;
        let fresh = if entries.is_empty() {
            outbox_delete(&mut *conn, published).await?;
            HashSet::new()
        } else {
            inbox_insert_many(&mut *conn, entries, published).await?
        };
        let preloaded = match preload {
            Some((sql, parameter)) => preload_rows(&mut *conn, sql, parameter).await?,
            None => Vec::new(),
        };
        Ok(Opened { fresh, preloaded })
    }
    .await;
    if opened.is_err() {
        abort_batch(conn).await;
    }
    opened
}

/// Records every entry in the inbox and returns the ids that were new; forgets the outbox rows
/// whose ids are in `published` in the same statement.
async fn inbox_insert_many(
    conn: &mut PgConnection,
    entries: &[InboxEntry<'_>],
    published: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let occurred: Vec<i64> = entries.iter().map(|e| e.occurred.unix_millis()).collect();
    let ids: Vec<&str> = entries.iter().map(|e| e.id).collect();
    let subjects: Vec<&str> = entries.iter().map(|e| e.subject).collect();
    let received: Vec<i64> = entries.iter().map(|e| e.received.unix_millis()).collect();
    let insert = "INSERT INTO inbox (occurred_at, message_id, subject, received_at) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[]) \
         ON CONFLICT DO NOTHING RETURNING message_id";
    let query = if published.is_empty() {
        sqlx::query_scalar(AssertSqlSafe(insert.to_owned()))
    } else {
        let sql =
            format!("WITH published AS (DELETE FROM outbox WHERE message_id = ANY($5)) {insert}");
        sqlx::query_scalar(AssertSqlSafe(sql))
    };
    let mut query = query.bind(occurred).bind(ids).bind(subjects).bind(received);
    if !published.is_empty() {
        query = query.bind(published);
    }
    let inserted: Vec<String> = query.fetch_all(conn).await?;
    Ok(inserted.into_iter().collect())
}

/// Runs the service's `writes`, stores the batch's outputs and effects, and commits. On
/// failure the transaction is rolled back.
pub(crate) async fn close_batch(
    conn: &mut PgConnection,
    writes: &[BatchWrite],
    outputs: &[(Option<&str>, &OutboxRow)],
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let closed = async {
        store_all(&mut *conn, writes, outputs, effects, &[], now).await?;
        commit(&mut *conn).await
    }
    .await;
    if closed.is_err() {
        abort_batch(conn).await;
    }
    closed
}

/// What a write transaction stores at its end, in one statement: the service's `writes`, each
/// in a `WITH` clause (its `$1` renumbered), the `effects` and the `retries` likewise, then the
/// `outputs` (`(cause, row)`) in the `INSERT` the clauses belong to. The clauses see the
/// transaction as it was before the statement and must touch different rows, which they do:
/// each service write saves one table's rows, and the effects recorded are not those retried.
pub(crate) async fn store_all(
    conn: &mut PgConnection,
    writes: &[BatchWrite],
    outputs: &[(Option<&str>, &OutboxRow)],
    effects: NewEffects<'_>,
    retries: &[EffectRetry],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if writes.is_empty() && outputs.is_empty() && effects.is_empty() && retries.is_empty() {
        return Ok(());
    }
    let mut clauses = Vec::new();
    for (n, write) in writes.iter().enumerate() {
        let sql = write.sql().replace("$1", &format!("${}", n + 1));
        clauses.push(format!("w{n} AS ({sql})"));
    }
    let mut next = writes.len() + 1;
    let mut parameters = |count: usize| {
        let first = next;
        next += count;
        first
    };
    let o = parameters(7);
    let e = (!effects.is_empty()).then(|| parameters(9));
    if let Some(e) = e {
        clauses.push(format!(
            "effects_recorded AS (INSERT INTO effects (effect_id, kind, saga_id, request, \
             attempts, recorded_at, next_at, deadline_at, claimed_until, traceparent, \
             tracestate) SELECT id, kind, saga, request, 0, ${t}, ${t}, ${d}, ${c}, tp, ts \
             FROM unnest(${e}::text[], ${k}::text[], ${s}::text[], ${r}::text[], \
             ${tp}::text[], ${ts}::text[]) AS t (id, kind, saga, request, tp, ts) \
             ON CONFLICT (effect_id) DO NOTHING)",
            k = e + 1,
            s = e + 2,
            r = e + 3,
            t = e + 4,
            d = e + 5,
            c = e + 6,
            tp = e + 7,
            ts = e + 8,
        ));
    }
    let r = (!retries.is_empty()).then(|| parameters(4));
    if let Some(r) = r {
        clauses.push(format!(
            "effects_retried AS (UPDATE effects SET attempts = t.attempts, \
             next_at = t.next_at, last_error = t.last_error, claimed_until = 0 \
             FROM unnest(${r}::text[], ${a}::int[], ${n}::bigint[], ${l}::text[]) \
             AS t (id, attempts, next_at, last_error) WHERE effect_id = t.id)",
            a = r + 1,
            n = r + 2,
            l = r + 3,
        ));
    }
    let with = if clauses.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", clauses.join(", "))
    };
    let sql = format!(
        "{with}INSERT INTO outbox (message_id, cause_id, subject, payload, created_at, \
         traceparent, tracestate) SELECT id, cause, subject, payload, ${t}, tp, ts \
         FROM unnest(${o}::text[], ${c}::text[], ${s}::text[], ${p}::bytea[], ${tp}::text[], \
         ${ts}::text[]) AS t (id, cause, subject, payload, tp, ts) \
         ON CONFLICT (message_id) DO NOTHING",
        c = o + 1,
        s = o + 2,
        p = o + 3,
        t = o + 4,
        tp = o + 5,
        ts = o + 6,
    );
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for write in writes {
        query = query.bind(write.rows());
    }
    let ids: Vec<&str> = outputs.iter().map(|(_, r)| r.message_id.as_str()).collect();
    let causes: Vec<Option<&str>> = outputs.iter().map(|(cause, _)| *cause).collect();
    let subjects: Vec<&str> = outputs.iter().map(|(_, r)| r.subject.as_str()).collect();
    let payloads: Vec<&[u8]> = outputs.iter().map(|(_, r)| r.payload.as_slice()).collect();
    let (parents, states) = trace_columns(outputs);
    query = query
        .bind(ids)
        .bind(causes)
        .bind(subjects)
        .bind(payloads)
        .bind(now.unix_millis())
        .bind(parents)
        .bind(states);
    if e.is_some() {
        let list = effects.effects;
        query = query
            .bind(list.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .bind(list.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .bind(
                list.iter()
                    .map(|e| e.saga_id.as_ref().map(RideId::as_str))
                    .collect::<Vec<_>>(),
            )
            .bind(list.iter().map(|e| e.request.as_str()).collect::<Vec<_>>())
            .bind(now.unix_millis())
            .bind(effects.deadline_ms(now))
            .bind(effects.claimed_until_ms(now))
            .bind(list.iter().map(Effect::traceparent).collect::<Vec<_>>())
            .bind(list.iter().map(Effect::tracestate).collect::<Vec<_>>());
    }
    if r.is_some() {
        query = query
            .bind(retries.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(
                retries
                    .iter()
                    .map(|r| i32::try_from(r.attempts).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(
                retries
                    .iter()
                    .map(|r| r.next_at.unix_millis())
                    .collect::<Vec<_>>(),
            )
            .bind(
                retries
                    .iter()
                    .map(|r| r.last_error.as_str())
                    .collect::<Vec<_>>(),
            );
    }
    query.execute(conn).await.map(|_| ())
}

/// Rolls back a batch's transaction, if one is open.
pub(crate) async fn abort_batch(conn: &mut PgConnection) {
    if let Err(e) = sqlx::raw_sql("ROLLBACK").execute(conn).await {
        tracing::debug!(error = %e, "rollback failed");
    }
}

/// Stores outputs caused by `cause`; an output already stored (same id) is kept once.
pub(crate) async fn outbox_insert(
    conn: &mut PgConnection,
    cause: Option<&MessageId>,
    rows: &[OutboxRow],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let entries: Vec<(Option<&str>, &OutboxRow)> = rows
        .iter()
        .map(|row| (cause.map(MessageId::as_str), row))
        .collect();
    outbox_insert_many(conn, &entries, now).await
}

/// Stores the outputs of several inputs (`(cause, row)`) in one statement.
async fn outbox_insert_many(
    conn: &mut PgConnection,
    entries: &[(Option<&str>, &OutboxRow)],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = entries.iter().map(|(_, r)| r.message_id.as_str()).collect();
    let causes: Vec<Option<&str>> = entries.iter().map(|(cause, _)| *cause).collect();
    let subjects: Vec<&str> = entries.iter().map(|(_, r)| r.subject.as_str()).collect();
    let payloads: Vec<&[u8]> = entries.iter().map(|(_, r)| r.payload.as_slice()).collect();
    let (parents, states) = trace_columns(entries);
    sqlx::query(
        "INSERT INTO outbox (message_id, cause_id, subject, payload, created_at, traceparent, \
         tracestate) SELECT id, cause, subject, payload, $5, tp, ts \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $6::text[], $7::text[]) \
         AS t (id, cause, subject, payload, tp, ts) \
         ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(ids)
    .bind(causes)
    .bind(subjects)
    .bind(payloads)
    .bind(now.unix_millis())
    .bind(parents)
    .bind(states)
    .execute(conn)
    .await?;
    Ok(())
}

/// The outputs of `cause` still waiting in the outbox.
pub(crate) async fn outbox_for_cause(
    conn: &mut PgConnection,
    cause: &MessageId,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT message_id, subject, payload, traceparent, tracestate FROM outbox WHERE cause_id = $1")
        .bind(cause.as_str())
        .fetch_all(conn)
        .await?;
    rows.iter().map(outbox_row).collect()
}

/// Up to `limit` outbox rows created before `before_ms`, oldest first.
pub(crate) async fn outbox_stale(
    pool: &PgPool,
    before_ms: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT message_id, subject, payload, traceparent, tracestate FROM outbox WHERE created_at < $1 \
         ORDER BY created_at LIMIT $2",
    )
    .bind(before_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(outbox_row).collect()
}

/// The `traceparent` and `tracestate` columns of outbox rows.
fn trace_columns(
    rows: &[(Option<&str>, &OutboxRow)],
) -> (Vec<Option<String>>, Vec<Option<String>>) {
    rows.iter()
        .map(|(_, r)| (r.traceparent(), r.tracestate().map(str::to_owned)))
        .unzip()
}

fn outbox_row(row: &sqlx::postgres::PgRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        message_id: row.try_get("message_id")?,
        subject: row.try_get("subject")?,
        payload: row.try_get("payload")?,
        trace: OutboxRow::trace_of(row.try_get("traceparent")?, row.try_get("tracestate")?),
    })
}

/// Forgets rows the server has stored, in one statement whatever their number.
pub(crate) async fn outbox_delete(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox WHERE message_id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Records effects made due at `now`, in one statement; an id already recorded keeps its
/// first record.
pub(crate) async fn effects_insert(
    conn: &mut PgConnection,
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = effects.effects.iter().map(|e| e.id.as_str()).collect();
    let kinds: Vec<&str> = effects.effects.iter().map(|e| e.kind.as_str()).collect();
    let sagas: Vec<Option<&str>> = effects
        .effects
        .iter()
        .map(|e| e.saga_id.as_ref().map(RideId::as_str))
        .collect();
    let requests: Vec<&str> = effects.effects.iter().map(|e| e.request.as_str()).collect();
    sqlx::query(
        "INSERT INTO effects (effect_id, kind, saga_id, request, attempts, recorded_at, \
         next_at, deadline_at, claimed_until, traceparent, tracestate) \
         SELECT id, kind, saga, request, 0, $5, $5, $6, $7, tp, ts \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $8::text[], $9::text[]) \
         AS t (id, kind, saga, request, tp, ts) ON CONFLICT (effect_id) DO NOTHING",
    )
    .bind(ids)
    .bind(kinds)
    .bind(sagas)
    .bind(requests)
    .bind(now.unix_millis())
    .bind(effects.deadline_ms(now))
    .bind(effects.claimed_until_ms(now))
    .bind(
        effects
            .effects
            .iter()
            .map(Effect::traceparent)
            .collect::<Vec<_>>(),
    )
    .bind(
        effects
            .effects
            .iter()
            .map(Effect::tracestate)
            .collect::<Vec<_>>(),
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// How many effects are pending, and whether one is due and unclaimed at `now_ms`.
pub(crate) async fn effects_pending(
    pool: &PgPool,
    now_ms: i64,
) -> Result<(i64, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM effects), EXISTS (SELECT 1 FROM effects \
         WHERE next_at <= $1 AND claimed_until <= $1)",
    )
    .bind(now_ms)
    .fetch_one(pool)
    .await
}

/// Outbox rows and the oldest's `created_at`, pending effects and the oldest's `recorded_at`:
/// the metrics' sample, in one statement (the outbox's index on `created_at` finds its oldest).
pub(crate) async fn sample(
    pool: &PgPool,
) -> Result<(i64, Option<i64>, i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox), (SELECT min(created_at) FROM outbox), \
         (SELECT count(*) FROM effects), (SELECT min(recorded_at) FROM effects)",
    )
    .fetch_one(pool)
    .await
}

/// Claims up to `limit` due and unclaimed effects until `until_ms`, earliest due first; their
/// rows, decoded by the runtime's `db`. Runs in the writer's turn, so no other replica claims
/// meanwhile.
pub(crate) async fn effects_claim(
    conn: &mut PgConnection,
    now_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE effects SET claimed_until = $1 WHERE effect_id IN (SELECT effect_id FROM \
         effects WHERE next_at <= $2 AND claimed_until <= $2 ORDER BY next_at LIMIT $3) \
         RETURNING effect_id, kind, saga_id, request, attempts::bigint AS attempts, recorded_at, deadline_at, \
         traceparent, tracestate",
    )
    .bind(until_ms)
    .bind(now_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(AnyRow::Postgres).collect())
}

/// Forgets the effects whose ids are given; returns the ids that were recorded.
pub(crate) async fn effects_delete(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let deleted: Vec<String> =
        sqlx::query_scalar("DELETE FROM effects WHERE effect_id = ANY($1) RETURNING effect_id")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(deleted.into_iter().collect())
}

/// Sets effects up for another attempt and clears their claims.
pub(crate) async fn effects_retry(
    conn: &mut PgConnection,
    retries: &[EffectRetry],
) -> Result<(), sqlx::Error> {
    let ids: Vec<&str> = retries.iter().map(|r| r.id.as_str()).collect();
    let attempts: Vec<i32> = retries
        .iter()
        .map(|r| i32::try_from(r.attempts).unwrap_or(i32::MAX))
        .collect();
    let next: Vec<i64> = retries.iter().map(|r| r.next_at.unix_millis()).collect();
    let errors: Vec<&str> = retries.iter().map(|r| r.last_error.as_str()).collect();
    sqlx::query(
        "UPDATE effects SET attempts = t.attempts, next_at = t.next_at, \
         last_error = t.last_error, claimed_until = 0 \
         FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[]) \
         AS t (id, attempts, next_at, last_error) WHERE effect_id = t.id",
    )
    .bind(ids)
    .bind(attempts)
    .bind(next)
    .bind(errors)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Clears the claims of the effects whose ids are given.
pub(crate) async fn effects_release(
    conn: &mut PgConnection,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE effects SET claimed_until = 0 WHERE effect_id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The rows of the pending effects of `saga`, oldest first (decoded by the runtime's `db`).
pub(crate) async fn effects_of_saga(
    pool: &PgPool,
    saga: &RideId,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT effect_id, kind, attempts::bigint AS attempts, last_error, next_at, deadline_at FROM effects \
         WHERE saga_id = $1 ORDER BY recorded_at, effect_id",
    )
    .bind(saga.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AnyRow::Postgres).collect())
}

/// A day in milliseconds: the inbox's partitions each hold the messages that occurred on one
/// day (UTC), named `inbox_d<days since the Unix epoch>`.
const DAY_MS: i64 = 24 * 3600 * 1000;
/// Days of partitions made ready ahead of time: rows never wait for one to be created.
const DAYS_AHEAD: i64 = 2;

/// The inbox's retention, one step: makes sure the partitions of today and the next days exist,
/// drops the partitions whose whole day is before `before_ms` (a whole day goes at the cost of
/// a catalog change, however many rows it holds), and deletes up to `limit` entries older than
/// that from the default partition, where a message lands whose day had no partition. Runs in
/// the writer's turn, so replicas do this one at a time.
pub(crate) async fn inbox_prune(
    conn: &mut PgConnection,
    now_ms: i64,
    before_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let today = now_ms.div_euclid(DAY_MS);
    for day in today..=today + DAYS_AHEAD {
        create_partition(&mut *conn, day).await?;
    }
    let partitions: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'inbox'",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut dropped = 0;
    for name in partitions {
        let Some(day) = name
            .strip_prefix("inbox_d")
            .and_then(|d| d.parse::<i64>().ok())
        else {
            continue;
        };
        if (day + 1) * DAY_MS <= before_ms {
            let rows: i64 =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {name}")))
                    .fetch_one(&mut *conn)
                    .await?;
            sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {name}")))
                .execute(&mut *conn)
                .await?;
            dropped += rows as u64;
        }
    }
    let deleted = sqlx::query(
        "DELETE FROM inbox_default WHERE (occurred_at, message_id) IN (SELECT occurred_at, \
         message_id FROM inbox_default WHERE occurred_at < $1 AND received_at < $1 LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(dropped + deleted.rows_affected())
}

/// Creates the partition of `day` unless it exists. When the default partition already holds
/// rows of that day (their partition was missing when they came), the day stays there: a
/// savepoint keeps the refusal from aborting the transaction.
async fn create_partition(conn: &mut PgConnection, day: i64) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SAVEPOINT partition; \
         CREATE TABLE IF NOT EXISTS inbox_d{day} PARTITION OF inbox \
         FOR VALUES FROM ({from}) TO ({to}); \
         RELEASE SAVEPOINT partition",
        from = day * DAY_MS,
        to = (day + 1) * DAY_MS,
    );
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
        tracing::debug!(error = %e, day, "the day's inbox entries stay in the default partition");
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT partition; RELEASE SAVEPOINT partition")
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Runs a service's preload statement: its only parameter, `$1`, is the JSON text given.
pub(crate) async fn preload_rows(
    conn: &mut PgConnection,
    sql: &str,
    parameter: String,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(parameter)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(AnyRow::Postgres).collect())
}

/// Runs one of a service's writes: its only parameter, `$1`, is the JSON array of its rows.
pub(crate) async fn execute(
    conn: &mut PgConnection,
    write: &BatchWrite,
) -> Result<(), sqlx::Error> {
    sqlx::query(AssertSqlSafe(write.sql()))
        .bind(write.rows())
        .execute(conn)
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Connection;

    static NO_TABLES: Migrator = Migrator::DEFAULT;

    fn entry<'a>(id: &'a str, occurred: i64, received: i64) -> InboxEntry<'a> {
        InboxEntry {
            id,
            subject: "cmd.test",
            occurred: Timestamp::from_unix_millis(occurred),
            received: Timestamp::from_unix_millis(received),
        }
    }

    async fn ids(conn: &mut PgConnection) -> Vec<String> {
        sqlx::query_scalar("SELECT message_id FROM inbox ORDER BY message_id")
            .fetch_all(conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_database_a_newer_release_migrated_still_opens_with_an_older_one() {
        use std::borrow::Cow;

        use sqlx::SqlSafeStr;
        use sqlx::migrate::{Migration, MigrationType};

        let url = ridesaga_testkit::Postgres::shared()
            .unwrap()
            .create_database("newer")
            .unwrap();
        // The newer release: this release's migrations and one more of its own.
        let mut newer: Vec<Migration> = RUNTIME_MIGRATOR.iter().cloned().collect();
        newer.push(Migration::new(
            9_000,
            Cow::Borrowed("a later release's table"),
            MigrationType::Simple,
            "CREATE TABLE later (id TEXT PRIMARY KEY)".into_sql_str(),
            false,
        ));
        let pool = PgPool::connect(&url).await.unwrap();
        Migrator::with_migrations(newer).run(&pool).await.unwrap();
        pool.close().await;

        // This release opens it: the unknown migration is left alone, its table kept.
        let db = Database::open(&url, 1, &NO_TABLES).await.unwrap();
        let later: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM later")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(later, 0);
    }

    #[tokio::test]
    async fn retention_drops_whole_days_and_what_the_default_partition_holds_before_the_horizon() {
        let url = ridesaga_testkit::Postgres::shared()
            .unwrap()
            .create_database("retention")
            .unwrap();
        let db = Database::open(&url, 1, &NO_TABLES).await.unwrap();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        let now = Timestamp::now().unix_millis();
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        let old_day = today - 5 * DAY_MS;
        begin(&mut conn).await.unwrap();
        create_partition(&mut conn, old_day / DAY_MS).await.unwrap();
        let entries = [
            entry("m_today", today + 1, now),
            entry("m_old_day", old_day + 10, old_day + 20),
            // No partition for its day: it lands in the default partition.
            entry("m_older", today - 9 * DAY_MS, today - 9 * DAY_MS),
            // Occurred long ago but received since the horizon: kept.
            entry("m_late", today - 9 * DAY_MS, now),
        ];
        let fresh = inbox_insert_many(&mut conn, &entries, &[]).await.unwrap();
        assert_eq!(fresh.len(), 4);
        commit(&mut conn).await.unwrap();
        let placed: Vec<(String, String)> = sqlx::query_as(
            "SELECT message_id, tableoid::regclass::text FROM inbox ORDER BY message_id",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let day = |ms: i64| format!("inbox_d{}", ms / DAY_MS);
        assert_eq!(
            placed,
            [
                ("m_late".to_owned(), "inbox_default".to_owned()),
                ("m_old_day".to_owned(), day(old_day)),
                ("m_older".to_owned(), "inbox_default".to_owned()),
                ("m_today".to_owned(), day(today)),
            ]
        );

        let horizon = today - DAY_MS;
        begin(&mut conn).await.unwrap();
        let forgotten = inbox_prune(&mut conn, now, horizon, 1_000).await.unwrap();
        commit(&mut conn).await.unwrap();
        assert_eq!(forgotten, 2);
        assert_eq!(ids(&mut conn).await, ["m_late", "m_today"]);
        let days: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'inbox' ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert!(!days.contains(&day(old_day)), "{days:?}");
        for ahead in 0..=DAYS_AHEAD {
            assert!(days.contains(&day(today + ahead * DAY_MS)), "{days:?}");
        }
        // A message seen before is still known after the retention, on any day.
        begin(&mut conn).await.unwrap();
        let again = inbox_insert_many(&mut conn, &[entry("m_today", today + 1, now)], &[])
            .await
            .unwrap();
        commit(&mut conn).await.unwrap();
        assert!(again.is_empty());
        db.pool.close().await;
    }
}
