//! The fraud tables' statements on PostgreSQL. The only parameter of the batch's statements,
//! `$1`, is JSON text: the writes' rows are objects, expanded by `jsonb_to_recordset` with
//! typed columns; the preload's entries are positional arrays (the parameter SQLite reads
//! too), typed once where they are expanded.

use sqlx::PgConnection;

use super::super::domain::FraudRules;
use super::{BlockRow, DeclineRow, RequestRow};
use crate::runtime::{BatchWrite, HandleError};

/// [`super::preload_sql`] on PostgreSQL. Every branch's columns are typed by the first one
/// (a bare `NULL` there would be text). Decisions and declines are looked up by ride, the
/// history by a scan of the rider's index backwards from `until`, stopped at the limit.
pub fn preload_sql(rules: &FraudRules) -> String {
    format!(
        "WITH q AS (SELECT e ->> 0 AS input_id, e ->> 1 AS ride, e ->> 2 AS rider, \
         (e ->> 3)::bigint AS requests_since, (e ->> 4)::bigint AS until, \
         (e ->> 5)::bigint AS declines_since, e ->> 6 AS declined_ride \
         FROM jsonb_array_elements($1::jsonb) AS input (e)) \
         SELECT q.input_id, 'own'::text AS what, r.ride_id, r.rider_id, r.requested_at_ms, \
         r.score, r.flagged, r.reasons, NULL::bigint AS declined_at_ms, \
         NULL::boolean AS blocked, NULL::text AS reason, NULL::bigint AS changed_at_ms \
         FROM q JOIN fraud_requests r ON r.ride_id = q.ride \
         UNION ALL SELECT q.input_id, 'block', NULL, b.rider_id, NULL, NULL, NULL, NULL, NULL, \
         b.blocked, b.reason, b.changed_at_ms FROM q JOIN fraud_blocklist b \
         ON b.rider_id = q.rider \
         UNION ALL SELECT q.input_id, 'recent', r.ride_id, r.rider_id, r.requested_at_ms, \
         r.score, r.flagged, r.reasons, NULL, NULL, NULL, NULL FROM q CROSS JOIN LATERAL \
         (SELECT s.ride_id, s.rider_id, s.requested_at_ms, s.score, s.flagged, s.reasons \
         FROM fraud_requests s WHERE s.rider_id = q.rider \
         AND s.requested_at_ms > q.requests_since AND s.requested_at_ms <= q.until \
         ORDER BY s.requested_at_ms DESC LIMIT {requests}) r \
         UNION ALL SELECT q.input_id, 'decline', d.ride_id, d.rider_id, NULL, NULL, NULL, NULL, \
         d.declined_at_ms, NULL, NULL, NULL FROM q CROSS JOIN LATERAL \
         (SELECT s.ride_id, s.rider_id, s.declined_at_ms FROM fraud_declines s \
         WHERE s.rider_id = q.rider \
         AND s.declined_at_ms > q.declines_since AND s.declined_at_ms <= q.until \
         ORDER BY s.declined_at_ms DESC LIMIT {declines}) d \
         UNION ALL SELECT q.input_id, 'own_decline', d.ride_id, d.rider_id, NULL, NULL, NULL, \
         NULL, d.declined_at_ms, NULL, NULL, NULL FROM q JOIN fraud_declines d \
         ON d.ride_id = q.declined_ride",
        requests = rules.max_requests,
        declines = rules.max_declines,
    )
}

/// Stores blocklist entries, replacing the rider's.
pub fn save_blocks(rows: &[BlockRow<'_>]) -> Result<BatchWrite, HandleError> {
    BatchWrite::new(
        "INSERT INTO fraud_blocklist (rider_id, blocked, reason, changed_at_ms) \
         SELECT rider_id, blocked, reason, changed_at_ms FROM jsonb_to_recordset($1::jsonb) \
         AS r (rider_id text, blocked boolean, reason text, changed_at_ms bigint) \
         ON CONFLICT (rider_id) DO UPDATE SET blocked = excluded.blocked, \
         reason = excluded.reason, changed_at_ms = excluded.changed_at_ms",
        rows,
    )
}

/// Inserts scored requests.
pub fn insert_requests(rows: &[RequestRow<'_>]) -> Result<BatchWrite, HandleError> {
    BatchWrite::new(
        "INSERT INTO fraud_requests (ride_id, rider_id, requested_at_ms, score, flagged, \
         reasons, scored_at_ms) SELECT ride_id, rider_id, requested_at_ms, score, flagged, \
         reasons, scored_at_ms FROM jsonb_to_recordset($1::jsonb) AS r (ride_id text, \
         rider_id text, requested_at_ms bigint, score bigint, flagged boolean, reasons text, \
         scored_at_ms bigint)",
        rows,
    )
}

/// Inserts declines.
pub fn insert_declines(rows: &[DeclineRow<'_>]) -> Result<BatchWrite, HandleError> {
    BatchWrite::new(
        "INSERT INTO fraud_declines (ride_id, rider_id, declined_at_ms) \
         SELECT ride_id, rider_id, declined_at_ms FROM jsonb_to_recordset($1::jsonb) \
         AS r (ride_id text, rider_id text, declined_at_ms bigint)",
        rows,
    )
}

/// [`super::prune`] on PostgreSQL: the oldest rows first, through the tables' age indexes.
pub async fn prune(
    conn: &mut PgConnection,
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
