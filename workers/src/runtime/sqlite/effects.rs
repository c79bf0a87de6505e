//! The effects table's statements (see [`crate::runtime::effects`]): recording effects,
//! claiming the due ones, setting them up for another attempt and forgetting the settled ones.
//! The statement that records a batch's effects joins the query that closes the batch.

use super::*;
use crate::runtime::db::{EffectRetry, NewEffects, Row as AnyRow};
use ridesaga_schemas::RideId;

/// Effects `[id, kind, saga, request, recorded_ms, deadline_ms, claimed_until_ms]` (the one
/// parameter), due at once; an id already recorded keeps its first record.
pub(super) const EFFECTS_INSERT_SQL: &str = "INSERT INTO effects (effect_id, kind, saga_id, \
     request, attempts, recorded_at, next_at, deadline_at, claimed_until, traceparent, \
     tracestate) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, 0, value ->> 4, \
     value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8 \
     FROM jsonb_each(?) WHERE true ON CONFLICT (effect_id) DO NOTHING";

/// The rows [`EFFECTS_INSERT_SQL`] expands, for a transaction at `now`.
pub(super) fn effects_json(effects: NewEffects<'_>, now: Timestamp) -> Result<String, sqlx::Error> {
    let recorded = now.unix_millis();
    let deadline = effects.deadline_ms(now);
    let claimed = effects.claimed_until_ms(now);
    let rows: Vec<serde_json::Value> = effects
        .effects
        .iter()
        .map(|e| {
            serde_json::json!([
                e.id,
                e.kind,
                e.saga_id.as_ref().map(RideId::as_str),
                e.request,
                recorded,
                deadline,
                claimed,
                e.traceparent(),
                e.tracestate(),
            ])
        })
        .collect();
    json_array(&rows)
}

/// Records effects made due at `now`.
pub(crate) async fn effects_insert(
    conn: &mut SqliteConnection,
    effects: NewEffects<'_>,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(EFFECTS_INSERT_SQL)
        .bind(effects_json(effects, now)?)
        .execute(conn)
        .await
        .map(|_| ())
}

/// How many effects are pending, and whether one is due and unclaimed at `now_ms`.
pub(crate) async fn effects_pending(
    pool: &SqlitePool,
    now_ms: i64,
) -> Result<(i64, bool), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM effects), EXISTS (SELECT 1 FROM effects \
         WHERE next_at <= ?1 AND claimed_until <= ?1)",
    )
    .bind(now_ms)
    .fetch_one(pool)
    .await
}

/// Claims up to `limit` due and unclaimed effects until `until_ms`, earliest due first; their
/// rows, decoded by the runtime's `db`.
pub(crate) async fn effects_claim(
    conn: &mut SqliteConnection,
    now_ms: i64,
    until_ms: i64,
    limit: i64,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "UPDATE effects SET claimed_until = ?1 WHERE effect_id IN (SELECT effect_id FROM \
         effects WHERE next_at <= ?2 AND claimed_until <= ?2 ORDER BY next_at LIMIT ?3) \
         RETURNING effect_id, kind, saga_id, request, attempts, recorded_at, deadline_at, \
         traceparent, tracestate",
    )
    .bind(until_ms)
    .bind(now_ms)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(AnyRow::Sqlite).collect())
}

/// Forgets the effects whose ids are given; returns the ids that were recorded.
pub(crate) async fn effects_delete(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let deleted: Vec<String> = sqlx::query_scalar(
        "DELETE FROM effects WHERE effect_id IN (SELECT value FROM json_each(?)) \
         RETURNING effect_id",
    )
    .bind(json_array(ids)?)
    .fetch_all(conn)
    .await?;
    Ok(deleted.into_iter().collect())
}

/// Sets effects up for another attempt and clears their claims.
pub(crate) async fn effects_retry(
    conn: &mut SqliteConnection,
    retries: &[EffectRetry],
) -> Result<(), sqlx::Error> {
    let rows: Vec<(&str, u32, i64, &str)> = retries
        .iter()
        .map(|r| {
            (
                r.id.as_str(),
                r.attempts,
                r.next_at.unix_millis(),
                r.last_error.as_str(),
            )
        })
        .collect();
    sqlx::query(
        "UPDATE effects SET attempts = value ->> 1, next_at = value ->> 2, \
         last_error = value ->> 3, claimed_until = 0 FROM jsonb_each(?) \
         WHERE effect_id = value ->> 0",
    )
    .bind(json_array(&rows)?)
    .execute(conn)
    .await
    .map(|_| ())
}

/// Clears the claims of the effects whose ids are given.
pub(crate) async fn effects_release(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE effects SET claimed_until = 0 FROM jsonb_each(?) WHERE effect_id = value")
        .bind(json_array(ids)?)
        .execute(conn)
        .await
        .map(|_| ())
}

/// The rows of the pending effects of `saga`, oldest first (decoded by the runtime's `db`).
pub(crate) async fn effects_of_saga(
    pool: &SqlitePool,
    saga: &RideId,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT effect_id, kind, attempts, last_error, next_at, deadline_at FROM effects \
         WHERE saga_id = ? ORDER BY recorded_at, effect_id",
    )
    .bind(saga.as_str())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(AnyRow::Sqlite).collect())
}
