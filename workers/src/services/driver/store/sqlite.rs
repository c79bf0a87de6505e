//! The driver service's statements on SQLite (`migrations/sqlite/driver`). A batch's rows
//! travel as JSON arrays expanded with `jsonb_each` (see the runtime's statements for why not
//! `json_each`), each row a positional array.

use serde_json::{Value, json};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Column as _, Row as _, SqliteConnection};

use super::write::{DriverRow, GuardedDriverRow, RideRow};
use super::*;

/// The read-ahead statement ([`read_ahead_sql`]), with its positional parameter: first, in a
/// row of its own, whether any cleared ride waits; then a row of [`found_ride_sql!`] per ride.
pub(super) const READ_AHEAD_SQL: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM driver_rides WHERE stage = 'waiting' AND cleared) \
     AS rides_waiting; ",
    found_ride_sql!("r.ride_id IN (SELECT value FROM json_each(?))")
);

/// What a row of [`READ_AHEAD_SQL`] holds.
pub(super) fn read_ahead_row(row: &SqliteRow, ahead: &mut ReadAhead) -> Result<(), StoreError> {
    if row
        .columns()
        .first()
        .is_some_and(|c| c.name() == "rides_waiting")
    {
        ahead.rides_waiting = Some(row.try_get(0)?);
    } else {
        ahead.rides.push(found_ride(row, 0)?);
    }
    Ok(())
}

pub(super) async fn find_driver(
    conn: &mut SqliteConnection,
    driver_id: &DriverId,
) -> Result<Option<Driver>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        driver_columns!(""),
        " FROM drivers WHERE driver_id = $1"
    ))
    .bind(driver_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(|row| driver_at(row, 0)).transpose()
}

pub(super) async fn find_ride(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Option<FoundRide>, StoreError> {
    let row = sqlx::query(found_ride_sql!("r.ride_id = $1"))
        .bind(ride_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(|row| found_ride(row, 0)).transpose()
}

pub(super) async fn available_drivers_in_box(
    conn: &mut SqliteConnection,
    search: &DriverSearch,
) -> Result<Vec<Driver>, StoreError> {
    // The limit is written into the statement, not bound: SQLite re-prepares a statement
    // every time a parameter used as its LIMIT is bound.
    let sql = format!(
        concat!(
            "SELECT ",
            driver_columns!(""),
            " FROM drivers WHERE online AND current_ride IS NULL \
             AND lat BETWEEN $1 AND $2 AND lng BETWEEN $3 AND $4 \
             ORDER BY (lat - $5) * (lat - $5) + (lng - $6) * (lng - $6) * $7, driver_id \
             LIMIT {limit}"
        ),
        limit = search.limit
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(search.bbox.min_lat)
        .bind(search.bbox.max_lat)
        .bind(search.bbox.min_lng)
        .bind(search.bbox.max_lng)
        .bind(search.pickup.lat)
        .bind(search.pickup.lng)
        .bind(search.lng_scale)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| driver_at(row, 0)).collect()
}

pub(super) async fn waiting_rides_in_box(
    conn: &mut SqliteConnection,
    bbox: &BoundingBox,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    // A literal limit (see `available_drivers_in_box`).
    let sql = format!(
        concat!(
            "SELECT ",
            ride_columns!(""),
            " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
             AND pickup_lat BETWEEN $2 AND $3 AND pickup_lng BETWEEN $4 AND $5 \
             ORDER BY match_deadline_ms, ride_id LIMIT {limit}"
        ),
        limit = limit
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(now.unix_millis())
        .bind(bbox.min_lat)
        .bind(bbox.max_lat)
        .bind(bbox.min_lng)
        .bind(bbox.max_lng)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| ride_at(row, 0)).collect()
}

pub(super) async fn rides_past_deadline(
    conn: &mut SqliteConnection,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(""),
        " FROM driver_rides WHERE stage = 'waiting' AND match_deadline_ms <= $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| ride_at(row, 0)).collect()
}

pub(super) async fn rides_waiting_before_deadline(
    conn: &mut SqliteConnection,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(""),
        " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| ride_at(row, 0)).collect()
}

/// A save's three statements ([`SaveRows`]), as one query; each takes one parameter, a JSON
/// array of rows, each row a positional array:
///
/// 1. the rides, in the order of [`RideRow`]'s fields;
/// 2. the new drivers, in the order of [`driver_columns!`];
/// 3. the changed drivers, the same, then the ride each was loaded with (`IS`: equal, or
///    both null).
const SAVE_SQL: &str = concat!(
    "INSERT INTO driver_rides (ride_id, rider_id, pickup_lat, \
     pickup_lng, match_deadline_ms, cleared, stage, driver_id, reason, correlation_id, \
     updated_at_ms, trip_km) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, \
     value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, \
     value ->> 10, value ->> 11 \
     FROM jsonb_each(?) WHERE true \
     ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
     pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
     match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
     stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
     correlation_id = COALESCE(driver_rides.correlation_id, excluded.correlation_id), \
     updated_at_ms = excluded.updated_at_ms, trip_km = excluded.trip_km; ",
    "INSERT INTO drivers (",
    driver_columns!(""),
    ") SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10 FROM jsonb_each(?); ",
    "UPDATE drivers SET name = v.value ->> 1, \
     lat = v.value ->> 2, lng = v.value ->> 3, online = v.value ->> 4, \
     current_ride = v.value ->> 5, name_at_ms = v.value ->> 6, online_at_ms = v.value ->> 7, \
     location_at_ms = v.value ->> 8, schedule = v.value ->> 9, \
     schedule_at_ms = v.value ->> 10 FROM jsonb_each(?) AS v \
     WHERE drivers.driver_id = (v.value ->> 0) AND drivers.current_ride IS (v.value ->> 11)"
);

pub(super) async fn save_rows(
    conn: &mut SqliteConnection,
    rows: &SaveRows<'_>,
) -> Result<u64, StoreError> {
    let array = |rows: Vec<Value>| Value::Array(rows).to_string();
    let rides = rows.rides.iter().map(ride_array).collect();
    let inserts = rows
        .new_drivers
        .iter()
        .map(|d| Value::Array(driver_array(d)))
        .collect();
    let updates = rows.changed_drivers.iter().map(guarded_array).collect();
    let done = sqlx::query(SAVE_SQL)
        .bind(array(rides))
        .bind(array(inserts))
        .bind(array(updates))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

fn ride_array(r: &RideRow<'_>) -> Value {
    json!([
        r.ride_id,
        r.rider_id,
        r.pickup_lat,
        r.pickup_lng,
        r.match_deadline_ms,
        r.cleared,
        r.stage,
        r.driver_id,
        r.reason,
        r.correlation_id,
        r.updated_at_ms,
        r.trip_km,
    ])
}

fn driver_array(d: &DriverRow<'_>) -> Vec<Value> {
    vec![
        json!(d.driver_id),
        json!(d.name),
        json!(d.lat),
        json!(d.lng),
        json!(d.online),
        json!(d.current_ride),
        json!(d.name_at_ms),
        json!(d.online_at_ms),
        json!(d.location_at_ms),
        json!(d.schedule),
        json!(d.schedule_at_ms),
    ]
}

fn guarded_array(g: &GuardedDriverRow<'_>) -> Value {
    let mut row = driver_array(&g.row);
    row.push(json!(g.loaded_ride));
    Value::Array(row)
}

pub(super) async fn prune(
    conn: &mut SqliteConnection,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM driver_rides WHERE ride_id IN (SELECT ride_id FROM driver_rides \
         WHERE stage IN ('released', 'closed', 'unavailable') AND updated_at_ms < $1 \
         ORDER BY updated_at_ms LIMIT $2)",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
