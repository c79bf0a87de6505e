//! The ride service's statements on PostgreSQL. A batch's ride ids are expanded with
//! `jsonb_array_elements_text` and its changed rides with `jsonb_to_recordset`, which types
//! each field by the column list it is given.

use sqlx::PgConnection;

use super::columns;
use crate::runtime::Row;

/// [`super::load_sql`]: the rides whose ids are in the JSON array `$1`.
pub const LOAD: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM rides WHERE ride_id IN (SELECT jsonb_array_elements_text($1::jsonb))"
);

/// [`super::save_many`]: inserts the rides of the JSON array `$1` (objects of `RideRow`'s
/// fields), or updates their changing part.
pub const SAVE: &str = "INSERT INTO rides (ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, \
     dropoff_lng, payment_token, distance_km, estimated_fare_cents, match_deadline_ms, \
     expires_at_ms, status, cancel_reason, driver_id, hold, started_at_ms, fare_cents, \
     correlation_id, requested_event_id, pickup_deadline_ms, rider_wait_deadline_ms, \
     fare_base_cents, fare_distance_cents, fare_time_cents, fare_surge_cents, \
     created_at_ms, updated_at_ms) \
     SELECT ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, \
     payment_token, distance_km, estimated_fare_cents, match_deadline_ms, expires_at_ms, \
     status, cancel_reason, driver_id, hold, started_at_ms, fare_cents, correlation_id, \
     requested_event_id, pickup_deadline_ms, rider_wait_deadline_ms, fare_base_cents, \
     fare_distance_cents, fare_time_cents, fare_surge_cents, at_ms, at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, rider_id TEXT, \
     pickup_lat DOUBLE PRECISION, pickup_lng DOUBLE PRECISION, \
     dropoff_lat DOUBLE PRECISION, dropoff_lng DOUBLE PRECISION, payment_token TEXT, \
     distance_km DOUBLE PRECISION, estimated_fare_cents BIGINT, match_deadline_ms BIGINT, \
     expires_at_ms BIGINT, status TEXT, cancel_reason TEXT, driver_id TEXT, hold TEXT, \
     started_at_ms BIGINT, fare_cents BIGINT, correlation_id TEXT, requested_event_id TEXT, \
     pickup_deadline_ms BIGINT, rider_wait_deadline_ms BIGINT, fare_base_cents BIGINT, \
     fare_distance_cents BIGINT, fare_time_cents BIGINT, fare_surge_cents BIGINT, \
     at_ms BIGINT) \
     ON CONFLICT (ride_id) DO UPDATE SET \
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
    conn: &mut PgConnection,
    now_ms: i64,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    let sql = concat!(
        "SELECT ",
        columns!(),
        " FROM rides WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1 \
         ORDER BY expires_at_ms LIMIT $2"
    );
    let rows = sqlx::query(sql)
        .bind(now_ms)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(Row::Postgres).collect())
}

/// [`super::deadlines`]: rides with a deadline, those at or before `now_ms`, the earliest.
pub async fn deadlines(
    conn: &mut PgConnection,
    now_ms: i64,
) -> Result<(i64, i64, Option<i64>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), COALESCE(SUM(CASE WHEN expires_at_ms <= $1 THEN 1 ELSE 0 END), 0)::bigint, \
         MIN(expires_at_ms) FROM rides WHERE expires_at_ms IS NOT NULL",
    )
    .bind(now_ms)
    .fetch_one(conn)
    .await
}

/// [`super::started_ride_of`]: the ride in progress of the driver `driver_id`.
pub async fn started_ride_of(
    conn: &mut PgConnection,
    driver_id: &str,
) -> Result<Option<Row>, sqlx::Error> {
    let sql = "SELECT ride_id, started_at_ms, route_km, route_points, route_seq, route_lat, route_lng, \
               route_first_lat, route_first_lng, route_first_at_ms, route_last_at_ms, \
               route_max_kmh, route_spread_km FROM rides WHERE driver_id = $1 AND status = 'started' LIMIT 1";
    let row = sqlx::query(sql)
        .bind(driver_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Row::Postgres))
}

/// [`super::record_point`]: the route's running total on the ride, and the position, once.
pub async fn record_point(
    conn: &mut PgConnection,
    point: &super::RoutePoint<'_>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    let points = i64::from(point.route.points);
    sqlx::query(
        "UPDATE rides SET route_km = $1, route_points = $2, route_seq = $3, \
         route_lat = $4, route_lng = $5, route_first_lat = $6, route_first_lng = $7, \
         route_first_at_ms = $8, route_last_at_ms = $9, route_max_kmh = $10, \
         route_spread_km = $11 WHERE ride_id = $12",
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
        "INSERT INTO ride_route (ride_id, seq, lat, lng, at_ms) VALUES ($1, $2, $3, $4, $5) \
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
pub async fn route_points(conn: &mut PgConnection, ride_id: &str) -> Result<Vec<Row>, sqlx::Error> {
    let sql = "SELECT lat, lng, at_ms FROM ride_route WHERE ride_id = $1 ORDER BY seq";
    let rows = sqlx::query(sql).bind(ride_id).fetch_all(conn).await?;
    Ok(rows.into_iter().map(Row::Postgres).collect())
}
