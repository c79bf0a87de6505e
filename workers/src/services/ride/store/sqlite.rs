//! The ride service's statements on SQLite. A batch's ride ids are expanded with `json_each`
//! and its changed rides with `jsonb_each`, whose `->>` gives each field its SQL type.

use sqlx::SqliteConnection;

use super::columns;
use crate::runtime::Row;

/// [`super::load_sql`]: the rides whose ids are in the JSON array `?`.
pub const LOAD: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM rides WHERE ride_id IN (SELECT value FROM json_each(?))"
);

/// [`super::save_many`]: inserts the rides of the JSON array `?` (objects of `RideRow`'s
/// fields), or updates their changing part. `WHERE true` tells SQLite's parser that
/// `ON CONFLICT` is the upsert's, not the join's.
pub const SAVE: &str = "INSERT INTO rides (ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, \
     dropoff_lng, payment_token, distance_km, estimated_fare_cents, match_deadline_ms, \
     expires_at_ms, status, cancel_reason, driver_id, hold, started_at_ms, fare_cents, \
     correlation_id, requested_event_id, pickup_deadline_ms, rider_wait_deadline_ms, \
     created_at_ms, updated_at_ms) \
     SELECT value ->> 'ride_id', value ->> 'rider_id', value ->> 'pickup_lat', \
     value ->> 'pickup_lng', value ->> 'dropoff_lat', value ->> 'dropoff_lng', \
     value ->> 'payment_token', value ->> 'distance_km', value ->> 'estimated_fare_cents', \
     value ->> 'match_deadline_ms', value ->> 'expires_at_ms', value ->> 'status', \
     value ->> 'cancel_reason', value ->> 'driver_id', value ->> 'hold', \
     value ->> 'started_at_ms', value ->> 'fare_cents', value ->> 'correlation_id', \
     value ->> 'requested_event_id', value ->> 'pickup_deadline_ms', \
     value ->> 'rider_wait_deadline_ms', value ->> 'at_ms', value ->> 'at_ms' \
     FROM jsonb_each(?) WHERE true ON CONFLICT (ride_id) DO UPDATE SET \
     expires_at_ms = excluded.expires_at_ms, status = excluded.status, \
     cancel_reason = excluded.cancel_reason, driver_id = excluded.driver_id, \
     hold = excluded.hold, started_at_ms = excluded.started_at_ms, \
     fare_cents = excluded.fare_cents, pickup_deadline_ms = excluded.pickup_deadline_ms, \
     rider_wait_deadline_ms = excluded.rider_wait_deadline_ms, \
     updated_at_ms = excluded.updated_at_ms";

/// [`super::due`]: up to `limit` rides whose deadline is at or before `now_ms`.
pub async fn due(
    conn: &mut SqliteConnection,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM rides WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= ? \
         ORDER BY expires_at_ms LIMIT ?"
    );
    let rows = sqlx::query(sql)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(Row::Sqlite).collect())
}
