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
     fare_base_cents, fare_distance_cents, fare_time_cents, fare_surge_cents, \
     created_at_ms, updated_at_ms) \
     SELECT value ->> 'ride_id', value ->> 'rider_id', value ->> 'pickup_lat', \
     value ->> 'pickup_lng', value ->> 'dropoff_lat', value ->> 'dropoff_lng', \
     value ->> 'payment_token', value ->> 'distance_km', value ->> 'estimated_fare_cents', \
     value ->> 'match_deadline_ms', value ->> 'expires_at_ms', value ->> 'status', \
     value ->> 'cancel_reason', value ->> 'driver_id', value ->> 'hold', \
     value ->> 'started_at_ms', value ->> 'fare_cents', value ->> 'correlation_id', \
     value ->> 'requested_event_id', value ->> 'pickup_deadline_ms', \
     value ->> 'rider_wait_deadline_ms', value ->> 'fare_base_cents', \
     value ->> 'fare_distance_cents', value ->> 'fare_time_cents', \
     value ->> 'fare_surge_cents', value ->> 'at_ms', value ->> 'at_ms' \
     FROM jsonb_each(?) WHERE true ON CONFLICT (ride_id) DO UPDATE SET \
     expires_at_ms = excluded.expires_at_ms, status = excluded.status, \
     cancel_reason = excluded.cancel_reason, driver_id = excluded.driver_id, \
     hold = excluded.hold, started_at_ms = excluded.started_at_ms, \
     fare_cents = excluded.fare_cents, pickup_deadline_ms = excluded.pickup_deadline_ms, \
     rider_wait_deadline_ms = excluded.rider_wait_deadline_ms, \
     fare_base_cents = excluded.fare_base_cents, \
     fare_distance_cents = excluded.fare_distance_cents, \
     fare_time_cents = excluded.fare_time_cents, fare_surge_cents = excluded.fare_surge_cents, \
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

/// [`super::deadlines`]: rides with a deadline, those at or before `now_ms`, the earliest.
pub async fn deadlines(
    conn: &mut SqliteConnection,
    now_ms: i64,
) -> Result<(i64, i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN expires_at_ms <= ? THEN 1 ELSE 0 END), 0), \
         MIN(expires_at_ms) FROM rides WHERE expires_at_ms IS NOT NULL",
    )
    .bind(now_ms)
    .fetch_one(conn)
    .await
}

/// [`super::started_ride_of`]: the ride in progress of the driver `driver_id`.
pub async fn started_ride_of(
    conn: &mut SqliteConnection,
    driver_id: &str,
) -> Result<Option<Row>, sqlx::Error> {
    let sql = "SELECT ride_id, started_at_ms, route_km, route_points, route_seq, route_lat, route_lng, \
               route_first_lat, route_first_lng, route_first_at_ms, route_last_at_ms, \
               route_max_kmh, route_spread_km FROM rides WHERE driver_id = ? AND status = 'started' LIMIT 1";
    let row = sqlx::query(sql)
        .bind(driver_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Row::Sqlite))
}

/// [`super::record_point`]: the route's running total on the ride, and the position, once.
pub async fn record_point(
    conn: &mut SqliteConnection,
    point: &super::RoutePoint<'_>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let points = i64::from(point.route.points);
    sqlx::query(
        "UPDATE rides SET route_km = ?, route_points = ?, route_seq = ?, \
         route_lat = ?, route_lng = ?, route_first_lat = ?, route_first_lng = ?, \
         route_first_at_ms = ?, route_last_at_ms = ?, route_max_kmh = ?, route_spread_km = ? \
         WHERE ride_id = ?",
    )
    .bind(point.route.km)
    .bind(points)
    .bind(seq)
    .bind(point.point.lat)
    .bind(point.point.lng)
    .bind(point.route.first.map(|p| p.lat))
    .bind(point.route.first.map(|p| p.lng))
    .bind(point.route.first_at_ms)
    .bind(point.route.last_at_ms)
    .bind(point.route.max_speed_kmh)
    .bind(point.route.spread_km)
    .bind(point.ride_id.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO ride_route (ride_id, seq, lat, lng, at_ms) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (ride_id, seq) DO NOTHING",
    )
    .bind(point.ride_id.as_str())
    .bind(seq)
    .bind(point.point.lat)
    .bind(point.point.lng)
    .bind(point.at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`super::route_points`]: a ride's recorded positions in stream order.
pub async fn route_points(
    conn: &mut SqliteConnection,
    ride_id: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    let sql = "SELECT lat, lng, at_ms FROM ride_route WHERE ride_id = ? ORDER BY seq";
    let rows = sqlx::query(sql).bind(ride_id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Row::Sqlite).collect())
}
