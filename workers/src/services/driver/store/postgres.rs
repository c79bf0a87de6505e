//! The driver service's statements on PostgreSQL (`migrations/postgres/driver`). Every one is
//! a single statement (the extended protocol prepares one at a time), so what SQLite does in
//! two or three statements of one query is one statement here: a join for the read-ahead,
//! data-modifying `WITH` clauses for a save. A batch's rows travel as JSON arrays of objects,
//! expanded with `jsonb_to_recordset` into typed columns.
//!
//! Searches order as SQLite does: the same arithmetic on `DOUBLE PRECISION`, ids compared byte
//! by byte (the schema's `COLLATE "C"`). The writer lock every write transaction takes
//! (`runtime::postgres`) serialises the replicas' transactions; the guards of a save still
//! stop a write that finds a driver in another state than the one loaded.

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row as _};

use super::*;

/// The read-ahead statement ([`read_ahead_sql`]): whether any cleared ride waits, on every
/// row, joined with a row of [`found_ride_sql!`] per ride (one row with a null ride when the
/// batch names no stored ride).
pub(super) const READ_AHEAD_SQL: &str = concat!(
    "SELECT w.rides_waiting, f.* FROM (SELECT EXISTS (SELECT 1 FROM driver_rides \
     WHERE stage = 'waiting' AND cleared) AS rides_waiting) AS w LEFT JOIN (",
    found_ride_sql!("r.ride_id IN (SELECT jsonb_array_elements_text($1::jsonb))"),
    ") AS f ON true"
);

/// What a row of [`READ_AHEAD_SQL`] holds.
pub(super) fn read_ahead_row(row: &PgRow, ahead: &mut ReadAhead) -> Result<(), StoreError> {
    ahead.rides_waiting = Some(row.try_get(0)?);
    if row.try_get::<Option<String>, _>(1)?.is_some() {
        ahead.rides.push(found_ride(row, 1)?);
    }
    Ok(())
}

pub(super) async fn find_driver(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
    ride_id: &RideId,
) -> Result<Option<FoundRide>, StoreError> {
    let row = sqlx::query(found_ride_sql!("r.ride_id = $1"))
        .bind(ride_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(|row| found_ride(row, 0)).transpose()
}

/// How far a coordinate is from the pickup's (`$col - $param`), as the search's order squares
/// it, but no less than 1e-120°: PostgreSQL refuses a product that underflows to zero (the
/// square of 1e-170°, say), where SQLite and Rust give zero. The order is theirs but between
/// coordinates within 1e-120° of the pickup's.
macro_rules! offset {
    ($col:literal, $param:literal) => {
        concat!("greatest(abs(", $col, " - ", $param, "), 1e-120::float8)")
    };
}

pub(super) async fn available_drivers_in_box(
    conn: &mut PgConnection,
    search: &DriverSearch,
) -> Result<Vec<Driver>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        driver_columns!(""),
        " FROM drivers WHERE online AND current_ride IS NULL \
         AND lat BETWEEN $1 AND $2 AND lng BETWEEN $3 AND $4 ORDER BY ",
        offset!("lat", "$5"),
        " * ",
        offset!("lat", "$5"),
        " + ",
        offset!("lng", "$6"),
        " * ",
        offset!("lng", "$6"),
        " * $7, driver_id LIMIT $8"
    ))
    .bind(search.bbox.min_lat)
    .bind(search.bbox.max_lat)
    .bind(search.bbox.min_lng)
    .bind(search.bbox.max_lng)
    .bind(search.pickup.lat)
    .bind(search.pickup.lng)
    .bind(search.lng_scale)
    .bind(search.limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| driver_at(row, 0)).collect()
}

pub(super) async fn waiting_rides_in_box(
    conn: &mut PgConnection,
    bbox: &BoundingBox,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    let rows = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(""),
        " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
         AND pickup_lat BETWEEN $2 AND $3 AND pickup_lng BETWEEN $4 AND $5 \
         ORDER BY match_deadline_ms, ride_id LIMIT $6"
    ))
    .bind(now.unix_millis())
    .bind(bbox.min_lat)
    .bind(bbox.max_lat)
    .bind(bbox.min_lng)
    .bind(bbox.max_lng)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|row| ride_at(row, 0)).collect()
}

pub(super) async fn rides_past_deadline(
    conn: &mut PgConnection,
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
    conn: &mut PgConnection,
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

/// The columns of a [`DriverRow`] in `jsonb_to_recordset`.
macro_rules! driver_record {
    () => {
        "driver_id text, name text, lat float8, lng float8, online boolean, \
         current_ride text, name_at_ms bigint, online_at_ms bigint, location_at_ms bigint, \
         schedule text, schedule_at_ms bigint"
    };
}

/// A save ([`SaveRows`]) as one statement: `$1` the rides, `$2` the new drivers, `$3` the
/// changed drivers (each with `loaded_ride`, the guard: equal, or both null), each a JSON
/// array of objects keyed by column. Returns how many rows the three writes changed.
///
/// The planner expects a hundred rows of a JSON document, and for as many would rather scan
/// `drivers` whole than look each up; the update also names its drivers by id (`= ANY`),
/// which it looks up in the primary key.
const SAVE_SQL: &str = concat!(
    "WITH rides AS (INSERT INTO driver_rides (ride_id, rider_id, pickup_lat, pickup_lng, \
     match_deadline_ms, cleared, stage, driver_id, reason, correlation_id, updated_at_ms, \
     trip_km) \
     SELECT * FROM jsonb_to_recordset($1::jsonb) AS r (ride_id text, rider_id text, \
     pickup_lat float8, pickup_lng float8, match_deadline_ms bigint, cleared boolean, \
     stage text, driver_id text, reason text, correlation_id text, updated_at_ms bigint, \
     trip_km float8) \
     ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
     pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
     match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
     stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
     correlation_id = COALESCE(driver_rides.correlation_id, excluded.correlation_id), \
     updated_at_ms = excluded.updated_at_ms, trip_km = excluded.trip_km RETURNING 1), ",
    "new_drivers AS (INSERT INTO drivers (",
    driver_columns!(""),
    ") SELECT * FROM jsonb_to_recordset($2::jsonb) AS d (",
    driver_record!(),
    ") RETURNING 1), ",
    "changed_drivers AS (UPDATE drivers SET name = u.name, lat = u.lat, lng = u.lng, \
     online = u.online, current_ride = u.current_ride, name_at_ms = u.name_at_ms, \
     online_at_ms = u.online_at_ms, location_at_ms = u.location_at_ms, \
     schedule = u.schedule, schedule_at_ms = u.schedule_at_ms \
     FROM jsonb_to_recordset($3::jsonb) AS u (",
    driver_record!(),
    ", loaded_ride text) WHERE drivers.driver_id = ANY (ARRAY (SELECT \
     jsonb_array_elements($3::jsonb) ->> 'driver_id')) AND drivers.driver_id = u.driver_id \
     AND drivers.current_ride IS NOT DISTINCT FROM u.loaded_ride RETURNING 1) ",
    "SELECT (SELECT count(*) FROM rides) + (SELECT count(*) FROM new_drivers) \
     + (SELECT count(*) FROM changed_drivers)"
);

pub(super) async fn save_rows(
    conn: &mut PgConnection,
    rows: &SaveRows<'_>,
) -> Result<u64, StoreError> {
    let changed: i64 = sqlx::query_scalar(SAVE_SQL)
        .bind(json(&rows.rides)?)
        .bind(json(&rows.new_drivers)?)
        .bind(json(&rows.changed_drivers)?)
        .fetch_one(&mut *conn)
        .await?;
    Ok(u64::try_from(changed).unwrap_or(0))
}

/// `rows` as a JSON array of objects.
fn json<T: serde::Serialize>(rows: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Database(sqlx::Error::Encode(e.into())))
}

/// The ids to delete as an array (`= ANY`): as a subquery (`IN`), a plan made for any limit
/// joins it with a scan of the whole table.
pub(super) async fn prune(
    conn: &mut PgConnection,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM driver_rides WHERE ride_id = ANY (ARRAY (SELECT ride_id FROM driver_rides \
         WHERE stage IN ('released', 'closed', 'unavailable') AND updated_at_ms < $1 \
         ORDER BY updated_at_ms LIMIT $2))",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
