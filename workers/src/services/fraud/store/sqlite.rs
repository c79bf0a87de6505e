//! The fraud tables' statements on SQLite. The batch's statements expand their JSON parameter
//! with `jsonb_each`, as the runtime's do: rows are positional arrays, read in place with
//! `value ->> n`.

use sqlx::SqliteConnection;

use super::super::domain::FraudRules;
use super::{BlockRow, DeclineRow, RequestRow};
use crate::runtime::{BatchWrite, HandleError};

/// [`super::preload_sql`] on SQLite. The limits are written into the statement, not bound:
/// SQLite re-prepares a statement every time a parameter used as its LIMIT is bound. Every
/// lookup is by an index: decisions and declines by ride, the history through the rider's
/// index in time order, then by ride.
pub fn preload_sql(rules: &FraudRules) -> String {
    format!(
        "WITH q AS MATERIALIZED (SELECT value ->> 0 AS input_id, value ->> 1 AS ride, \
         value ->> 2 AS rider, value ->> 3 AS requests_since, value ->> 4 AS until, \
         value ->> 5 AS declines_since, value ->> 6 AS declined_ride FROM jsonb_each(?)) \
         SELECT q.input_id, 'own' AS what, r.ride_id, r.rider_id, r.requested_at_ms, r.score, \
         r.flagged, r.reasons, NULL AS declined_at_ms, NULL AS blocked, NULL AS reason, \
         NULL AS changed_at_ms FROM q JOIN fraud_requests r ON r.ride_id = q.ride \
         UNION ALL SELECT q.input_id, 'block', NULL, b.rider_id, NULL, NULL, NULL, NULL, NULL, \
         b.blocked, b.reason, b.changed_at_ms FROM q JOIN fraud_blocklist b \
         ON b.rider_id = q.rider \
         UNION ALL SELECT q.input_id, 'recent', r.ride_id, r.rider_id, r.requested_at_ms, \
         r.score, r.flagged, r.reasons, NULL, NULL, NULL, NULL FROM q JOIN fraud_requests r \
         ON r.ride_id IN (SELECT s.ride_id FROM fraud_requests s WHERE s.rider_id = q.rider \
         AND s.requested_at_ms > q.requests_since AND s.requested_at_ms <= q.until \
         ORDER BY s.requested_at_ms DESC LIMIT {requests}) \
         UNION ALL SELECT q.input_id, 'decline', d.ride_id, d.rider_id, NULL, NULL, NULL, NULL, \
         d.declined_at_ms, NULL, NULL, NULL FROM q JOIN fraud_declines d \
         ON d.ride_id IN (SELECT s.ride_id FROM fraud_declines s WHERE s.rider_id = q.rider \
         AND s.declined_at_ms > q.declines_since AND s.declined_at_ms <= q.until \
         ORDER BY s.declined_at_ms DESC LIMIT {declines}) \
         UNION ALL SELECT q.input_id, 'own_decline', d.ride_id, d.rider_id, NULL, NULL, NULL, \
         NULL, d.declined_at_ms, NULL, NULL, NULL FROM q JOIN fraud_declines d \
         ON d.ride_id = q.declined_ride",
        requests = rules.max_requests,
        declines = rules.max_declines,
    )
}

/// Stores blocklist entries, replacing the rider's.
pub fn save_blocks(rows: &[BlockRow<'_>]) -> Result<BatchWrite, HandleError> {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| (r.rider_id, r.blocked, r.reason, r.changed_at_ms))
        .collect();
    BatchWrite::new(
        "INSERT INTO fraud_blocklist (rider_id, blocked, reason, changed_at_ms) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?) \
         WHERE true ON CONFLICT (rider_id) DO UPDATE SET blocked = excluded.blocked, \
         reason = excluded.reason, changed_at_ms = excluded.changed_at_ms",
        &rows,
    )
}

/// Inserts scored requests.
pub fn insert_requests(rows: &[RequestRow<'_>]) -> Result<BatchWrite, HandleError> {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.ride_id,
                r.rider_id,
                r.requested_at_ms,
                r.score,
                r.flagged,
                &r.reasons,
                r.scored_at_ms,
            )
        })
        .collect();
    BatchWrite::new(
        "INSERT INTO fraud_requests (ride_id, rider_id, requested_at_ms, score, flagged, \
         reasons, scored_at_ms) SELECT value ->> 0, value ->> 1, value ->> 2, \
         value ->> 3, value ->> 4, value ->> 5, value ->> 6 FROM jsonb_each(?)",
        &rows,
    )
}

/// Inserts declines.
pub fn insert_declines(rows: &[DeclineRow<'_>]) -> Result<BatchWrite, HandleError> {
    let rows: Vec<_> = rows
        .iter()
        .map(|r| (r.ride_id, r.rider_id, r.declined_at_ms))
        .collect();
    BatchWrite::new(
        "INSERT INTO fraud_declines (ride_id, rider_id, declined_at_ms) \
         SELECT value ->> 0, value ->> 1, value ->> 2 FROM jsonb_each(?)",
        &rows,
    )
}

/// [`super::prune`] on SQLite: the oldest rows first, through the tables' age indexes.
pub async fn prune(
    conn: &mut SqliteConnection,
    before_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let requests = sqlx::query(
        "DELETE FROM fraud_requests WHERE ride_id IN (SELECT ride_id FROM fraud_requests \
         WHERE scored_at_ms < $1 ORDER BY scored_at_ms LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let declines = sqlx::query(
        "DELETE FROM fraud_declines WHERE ride_id IN (SELECT ride_id FROM fraud_declines \
         WHERE declined_at_ms < $1 ORDER BY declined_at_ms LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(requests.rows_affected() + declines.rows_affected())
}
