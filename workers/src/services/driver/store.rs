//! The driver service's tables (`migrations/driver`): load the slice of state an input or a
//! timer can touch, and write back what changed. Reservations are written with guards
//! (`current_ride IS NULL` to reserve, `= ride` to release) on top of the schema's uniqueness,
//! so a logic slip or a concurrent writer fails the transaction instead of double-booking.
//!
//! SQL is kept portable to PostgreSQL (`$n` parameters, `ON CONFLICT`, partial indexes).

use ridesaga_schemas::{DriverId, GeoPoint, RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{BoundingBox, Driver, Input, MatchRules, Ride, RideRequest, Stage, State};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row this code cannot read back.
    #[error("unreadable row in {table}: {problem}")]
    Corrupt {
        table: &'static str,
        problem: String,
    },
    /// A reservation guard found the driver's row in another state than the one loaded.
    #[error("driver {driver_id} changed underneath this transaction ({what})")]
    Conflict {
        driver_id: DriverId,
        what: &'static str,
    },
}

/// Most drivers (nearest first, by a flat-earth estimate) or rides (earliest deadline first)
/// loaded around one point; the exact great-circle choice is made among them.
const NEARBY_LIMIT: i64 = 64;

/// Radius of the first, small search for a driver, in km.
const NEAR_FIRST_KM: f64 = 2.0;

macro_rules! driver_columns {
    () => {
        "driver_id, name, lat, lng, online, current_ride, name_at_ms, online_at_ms, location_at_ms"
    };
}
macro_rules! ride_columns {
    () => {
        "ride_id, rider_id, pickup_lat, pickup_lng, match_deadline_ms, cleared, stage, driver_id, \
         reason"
    };
}

/// What `input` can read or change: the driver it names and the waiting rides near them, or
/// the ride it names, that ride's driver (and the rides near them, for a release) and the
/// available drivers near its pickup.
pub async fn load_for_input(
    conn: &mut SqliteConnection,
    input: &Input,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<State, StoreError> {
    let mut state = State::default();
    match input {
        Input::Register {
            driver_id,
            location,
            ..
        }
        | Input::Move {
            driver_id,
            location,
            ..
        } => {
            load_driver_side(conn, &mut state, driver_id, Some(*location), now, rules).await?;
        }
        Input::Online {
            driver_id,
            location,
            ..
        } => {
            load_driver_side(conn, &mut state, driver_id, *location, now, rules).await?;
        }
        Input::Offline { driver_id, .. } => {
            if let Some(driver) = find_driver(conn, driver_id).await? {
                state.drivers.insert(driver.id.clone(), driver);
            }
        }
        Input::Requested { ride_id, request } => {
            load_ride_side(conn, &mut state, ride_id, Some(request.pickup), now, rules).await?;
        }
        Input::Cleared { ride_id } | Input::Ended { ride_id, .. } => {
            load_ride_side(conn, &mut state, ride_id, None, now, rules).await?;
        }
    }
    Ok(state)
}

/// What a timer run can touch: up to `batch` waiting rides past their deadline, up to `batch`
/// waiting cleared rides before it (earliest first) and the available drivers near each.
pub async fn load_for_tick(
    conn: &mut SqliteConnection,
    now: Timestamp,
    rules: &MatchRules,
    batch: i64,
) -> Result<State, StoreError> {
    let mut state = State::default();
    let due = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(),
        " FROM driver_rides WHERE stage = 'waiting' AND match_deadline_ms <= $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let waiting = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(),
        " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    for row in due.iter().chain(&waiting) {
        let ride = ride_from_row(row)?;
        state.rides.insert(ride.id.clone(), ride);
    }
    let pickups: Vec<GeoPoint> = state
        .rides
        .values()
        .filter_map(|r| r.matchable(now).map(|q| q.pickup))
        .collect();
    for pickup in pickups {
        add_available_drivers_near(conn, &mut state, pickup, rules).await?;
    }
    Ok(state)
}

async fn load_driver_side(
    conn: &mut SqliteConnection,
    state: &mut State,
    driver_id: &DriverId,
    new_location: Option<GeoPoint>,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let stored = find_driver(conn, driver_id).await?;
    // Around both positions: a late command leaves the stored one in force.
    let places: Vec<GeoPoint> = stored
        .iter()
        .map(|d| d.location)
        .chain(new_location)
        .collect();
    if let Some(driver) = stored {
        state.drivers.insert(driver.id.clone(), driver);
    }
    for place in places {
        add_waiting_rides_near(conn, state, place, now, rules).await?;
    }
    Ok(())
}

async fn load_ride_side(
    conn: &mut SqliteConnection,
    state: &mut State,
    ride_id: &RideId,
    pickup: Option<GeoPoint>,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let ride = find_ride(conn, ride_id).await?;
    if let Some(Ride {
        stage: Stage::Assigned { driver_id },
        ..
    }) = &ride
    {
        // The driver a release frees, and the rides they may take next.
        load_driver_side(conn, state, driver_id, None, now, rules).await?;
    }
    let pickup = ride
        .as_ref()
        .and_then(|r| r.request.as_ref())
        .map(|q| q.pickup)
        .or(pickup);
    if let Some(ride) = ride {
        state.rides.insert(ride.id.clone(), ride);
    }
    if let Some(pickup) = pickup {
        add_available_drivers_near(conn, state, pickup, rules).await?;
    }
    Ok(())
}

async fn find_driver(
    conn: &mut SqliteConnection,
    driver_id: &DriverId,
) -> Result<Option<Driver>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        driver_columns!(),
        " FROM drivers WHERE driver_id = $1"
    ))
    .bind(driver_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(driver_from_row).transpose()
}

async fn find_ride(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Option<Ride>, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(),
        " FROM driver_rides WHERE ride_id = $1"
    ))
    .bind(ride_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(ride_from_row).transpose()
}

/// Available drivers near `pickup`, enough to contain the nearest one within the radius. Looks
/// in a small circle first ([`NEAR_FIRST_KM`]): where drivers are dense, that answers with a
/// fraction of the rows the whole radius would scan; only when no driver is inside it does the
/// whole radius get searched.
async fn add_available_drivers_near(
    conn: &mut SqliteConnection,
    state: &mut State,
    pickup: GeoPoint,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let mut drivers = if NEAR_FIRST_KM < rules.radius_km {
        available_drivers_in_box(conn, pickup, NEAR_FIRST_KM).await?
    } else {
        Vec::new()
    };
    // A driver inside the small circle is nearer than anyone outside the small box, so the
    // nearest overall is among these. Corners of the box do not count.
    if !drivers
        .iter()
        .any(|d| d.location.distance_km(&pickup) <= NEAR_FIRST_KM)
    {
        drivers = available_drivers_in_box(conn, pickup, rules.radius_km).await?;
    }
    for driver in drivers {
        state.drivers.entry(driver.id.clone()).or_insert(driver);
    }
    Ok(())
}

/// Available drivers in the box around `pickup` of `radius_km`, nearest first by an
/// equirectangular estimate (exact enough to keep the true nearest among the first
/// [`NEARBY_LIMIT`]).
async fn available_drivers_in_box(
    conn: &mut SqliteConnection,
    pickup: GeoPoint,
    radius_km: f64,
) -> Result<Vec<Driver>, StoreError> {
    let bbox = BoundingBox::around(pickup, radius_km);
    let lng_scale = pickup.lat.to_radians().cos().powi(2);
    let rows = sqlx::query(concat!(
        "SELECT ",
        driver_columns!(),
        " FROM drivers WHERE online AND current_ride IS NULL \
         AND lat BETWEEN $1 AND $2 AND lng BETWEEN $3 AND $4 \
         ORDER BY (lat - $5) * (lat - $5) + (lng - $6) * (lng - $6) * $7, driver_id LIMIT $8"
    ))
    .bind(bbox.min_lat)
    .bind(bbox.max_lat)
    .bind(bbox.min_lng)
    .bind(bbox.max_lng)
    .bind(pickup.lat)
    .bind(pickup.lng)
    .bind(lng_scale)
    .bind(NEARBY_LIMIT)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(driver_from_row).collect()
}

/// Waiting cleared rides before their deadline in the box around `place`, earliest first.
async fn add_waiting_rides_near(
    conn: &mut SqliteConnection,
    state: &mut State,
    place: GeoPoint,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let bbox = BoundingBox::around(place, rules.radius_km);
    let rows = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(),
        " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
         AND pickup_lat BETWEEN $2 AND $3 AND pickup_lng BETWEEN $4 AND $5 \
         ORDER BY match_deadline_ms, ride_id LIMIT $6"
    ))
    .bind(now.unix_millis())
    .bind(bbox.min_lat)
    .bind(bbox.max_lat)
    .bind(bbox.min_lng)
    .bind(bbox.max_lng)
    .bind(NEARBY_LIMIT)
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let ride = ride_from_row(row)?;
        state.rides.entry(ride.id.clone()).or_insert(ride);
    }
    Ok(())
}

/// Writes every ride and driver that differs between `before` (as loaded) and `after`.
pub async fn save(
    conn: &mut SqliteConnection,
    before: &State,
    after: &State,
    now: Timestamp,
) -> Result<(), StoreError> {
    for (id, ride) in &after.rides {
        if before.rides.get(id) != Some(ride) {
            upsert_ride(conn, ride, now).await?;
        }
    }
    for (id, driver) in &after.drivers {
        match before.drivers.get(id) {
            None => insert_driver(conn, driver).await?,
            Some(old) if old != driver => update_driver(conn, old, driver).await?,
            Some(_) => {}
        }
    }
    Ok(())
}

async fn upsert_ride(
    conn: &mut SqliteConnection,
    ride: &Ride,
    now: Timestamp,
) -> Result<(), StoreError> {
    let request = ride.request.as_ref();
    let (driver_id, reason) = match &ride.stage {
        Stage::Waiting | Stage::Unavailable => (None, None),
        Stage::Assigned { driver_id } => (Some(driver_id.as_str()), None),
        Stage::Released { driver_id, reason } => (Some(driver_id.as_str()), Some(reason.as_str())),
        Stage::Closed { reason } => (None, Some(reason.as_str())),
    };
    sqlx::query(
        "INSERT INTO driver_rides (ride_id, rider_id, pickup_lat, pickup_lng, match_deadline_ms, \
         cleared, stage, driver_id, reason, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
         pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
         match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
         stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(ride.id.as_str())
    .bind(request.map(|q| q.rider_id.as_str()))
    .bind(request.map(|q| q.pickup.lat))
    .bind(request.map(|q| q.pickup.lng))
    .bind(request.map(|q| q.match_deadline.unix_millis()))
    .bind(ride.cleared)
    .bind(ride.stage.as_str())
    .bind(driver_id)
    .bind(reason)
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_driver(conn: &mut SqliteConnection, d: &Driver) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO drivers (",
        driver_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(d.id.as_str())
    .bind(&d.name)
    .bind(d.location.lat)
    .bind(d.location.lng)
    .bind(d.online)
    .bind(d.current_ride.as_ref().map(RideId::as_str))
    .bind(d.name_at)
    .bind(d.online_at)
    .bind(d.location_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn update_driver(
    conn: &mut SqliteConnection,
    old: &Driver,
    new: &Driver,
) -> Result<(), StoreError> {
    let conflict = |what| StoreError::Conflict {
        driver_id: new.id.clone(),
        what,
    };
    let done = sqlx::query(
        "UPDATE drivers SET name = $2, lat = $3, lng = $4, online = $5, name_at_ms = $6, \
         online_at_ms = $7, location_at_ms = $8 WHERE driver_id = $1",
    )
    .bind(new.id.as_str())
    .bind(&new.name)
    .bind(new.location.lat)
    .bind(new.location.lng)
    .bind(new.online)
    .bind(new.name_at)
    .bind(new.online_at)
    .bind(new.location_at)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(conflict("row gone"));
    }
    let new_ride = new.current_ride.as_ref().map(RideId::as_str);
    let (done, what) = match &old.current_ride {
        old_ride if *old_ride == new.current_ride => return Ok(()),
        None => {
            let sql = "UPDATE drivers SET current_ride = $2 \
                       WHERE driver_id = $1 AND current_ride IS NULL";
            let done = sqlx::query(sql).bind(new.id.as_str()).bind(new_ride);
            (done.execute(&mut *conn).await?, "reserve")
        }
        Some(old_ride) => {
            let sql = "UPDATE drivers SET current_ride = $3 \
                       WHERE driver_id = $1 AND current_ride = $2";
            let done = sqlx::query(sql)
                .bind(new.id.as_str())
                .bind(old_ride.as_str())
                .bind(new_ride);
            (done.execute(&mut *conn).await?, "release")
        }
    };
    if done.rows_affected() != 1 {
        return Err(conflict(what));
    }
    Ok(())
}

/// Keeps the saga's correlation id for the events published about the ride (the first one
/// seen wins; requested and cleared share it).
pub async fn remember_correlation(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    correlation_id: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE driver_rides SET correlation_id = $2 WHERE ride_id = $1 AND correlation_id IS NULL",
    )
    .bind(ride_id.as_str())
    .bind(correlation_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn correlation_of(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Option<String>, StoreError> {
    let found: Option<Option<String>> =
        sqlx::query_scalar("SELECT correlation_id FROM driver_rides WHERE ride_id = $1")
            .bind(ride_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(found.flatten())
}

/// Deletes up to `limit` ended rides last changed before `before`; returns how many.
pub async fn prune(
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

fn corrupt(table: &'static str, problem: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        problem: problem.to_string(),
    }
}

fn driver_from_row(row: &SqliteRow) -> Result<Driver, StoreError> {
    let bad = |e: &dyn ToString| corrupt("drivers", e.to_string());
    let location = GeoPoint::new(row.try_get("lat")?, row.try_get("lng")?).map_err(|e| bad(&e))?;
    let current_ride: Option<String> = row.try_get("current_ride")?;
    Ok(Driver {
        id: DriverId::parse(row.try_get::<String, _>("driver_id")?).map_err(|e| bad(&e))?,
        name: row.try_get("name")?,
        location,
        online: row.try_get("online")?,
        current_ride: current_ride
            .map(RideId::parse)
            .transpose()
            .map_err(|e| bad(&e))?,
        name_at: row.try_get("name_at_ms")?,
        online_at: row.try_get("online_at_ms")?,
        location_at: row.try_get("location_at_ms")?,
    })
}

fn ride_from_row(row: &SqliteRow) -> Result<Ride, StoreError> {
    let bad = |e: &dyn ToString| corrupt("driver_rides", e.to_string());
    let id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(|e| bad(&e))?;
    let rider: Option<String> = row.try_get("rider_id")?;
    let lat: Option<f64> = row.try_get("pickup_lat")?;
    let lng: Option<f64> = row.try_get("pickup_lng")?;
    let deadline: Option<i64> = row.try_get("match_deadline_ms")?;
    let request = match (rider, lat, lng, deadline) {
        (Some(rider), Some(lat), Some(lng), Some(deadline)) => Some(RideRequest {
            rider_id: RiderId::parse(rider).map_err(|e| bad(&e))?,
            pickup: GeoPoint::new(lat, lng).map_err(|e| bad(&e))?,
            match_deadline: Timestamp::from_unix_millis(deadline),
        }),
        _ => None,
    };
    let driver: Option<String> = row.try_get("driver_id")?;
    let driver = driver
        .map(DriverId::parse)
        .transpose()
        .map_err(|e| bad(&e))?;
    let reason: Option<String> = row.try_get("reason")?;
    let stage: String = row.try_get("stage")?;
    let stage = match (stage.as_str(), driver, reason) {
        ("waiting", _, _) => Stage::Waiting,
        ("assigned", Some(driver_id), _) => Stage::Assigned { driver_id },
        ("released", Some(driver_id), reason) => Stage::Released {
            driver_id,
            reason: reason.unwrap_or_default(),
        },
        ("closed", _, reason) => Stage::Closed {
            reason: reason.unwrap_or_default(),
        },
        ("unavailable", _, _) => Stage::Unavailable,
        (other, _, _) => return Err(bad(&format!("ride {id} has stage {other:?}"))),
    };
    Ok(Ride {
        id,
        request,
        cleared: row.try_get("cleared")?,
        stage,
    })
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
