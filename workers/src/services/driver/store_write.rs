//! The driver service's writes: every ride and driver that an input, a batch or a timer run
//! changed, in one round trip of three statements whose text never changes (the rows travel as
//! JSON arrays, expanded with `jsonb_each`), reservations behind their guards; and the pruning
//! of ended rides.

use serde_json::{Value, json};

use super::*;

/// A save's three statements, as one query; each takes one parameter, a JSON array of rows.
///
/// 1. Upserts the rides `[ride_id, rider_id, pickup_lat, pickup_lng, match_deadline_ms,
///    cleared, stage, driver_id, reason, correlation_id, updated_at_ms]`; a stored correlation
///    id stays (the first one seen wins).
/// 2. Inserts new drivers, in the order of [`driver_columns!`].
/// 3. Updates drivers (the columns of [`driver_columns!`], then the ride each was loaded
///    with), guarded: a row changes only if it still holds the ride it was loaded with (none,
///    to reserve; the old one, to release).
const SAVE_SQL: &str = concat!(
    "INSERT INTO driver_rides (ride_id, rider_id, pickup_lat, \
     pickup_lng, match_deadline_ms, cleared, stage, driver_id, reason, correlation_id, \
     updated_at_ms) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
     value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10 \
     FROM jsonb_each(?) WHERE true \
     ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
     pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
     match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
     stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
     correlation_id = COALESCE(driver_rides.correlation_id, excluded.correlation_id), \
     updated_at_ms = excluded.updated_at_ms; ",
    "INSERT INTO drivers (",
    driver_columns!(""),
    ") SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
     value ->> 6, value ->> 7, value ->> 8 FROM jsonb_each(?); ",
    "UPDATE drivers SET name = v.value ->> 1, \
     lat = v.value ->> 2, lng = v.value ->> 3, online = v.value ->> 4, \
     current_ride = v.value ->> 5, name_at_ms = v.value ->> 6, online_at_ms = v.value ->> 7, \
     location_at_ms = v.value ->> 8 FROM jsonb_each(?) AS v \
     WHERE drivers.driver_id = (v.value ->> 0) AND drivers.current_ride IS (v.value ->> 9)"
);

/// Writes every ride and driver of `after` that differs from `before` (as loaded), and the
/// correlation ids the input brought, in one query of three statements (one round trip to the
/// database; the same text whatever the rows, so it is prepared once). Each row changes
/// exactly one row of its table unless a reservation guard stops it, so fewer changes in all
/// than rows means a guard did.
pub async fn save(
    conn: &mut SqliteConnection,
    before: &State,
    after: &Loaded,
    now: Timestamp,
) -> Result<(), StoreError> {
    let correlations = &after.correlations;
    let mut rides = Vec::new();
    for (id, ride) in &after.state.rides {
        if before.rides.get(id) != Some(ride) || correlations.learnt.contains(id) {
            rides.push(ride_row(ride, correlations.of(id), now));
        }
    }
    let (mut inserts, mut updates, mut guarded) = (Vec::new(), Vec::new(), Vec::new());
    for (id, driver) in &after.state.drivers {
        match before.drivers.get(id) {
            None => inserts.push(driver_row(driver)),
            Some(old) if old != driver => {
                let mut row = driver_row(driver);
                row.push(json!(old.current_ride.as_ref().map(RideId::as_str)));
                updates.push(Value::Array(row));
                guarded.push(guard(old, driver));
            }
            Some(_) => {}
        }
    }
    let rows = rides.len() + inserts.len() + updates.len();
    if rows == 0 {
        return Ok(());
    }
    let array = |rows: Vec<Value>| Value::Array(rows).to_string();
    let inserts: Vec<Value> = inserts.into_iter().map(Value::Array).collect();
    let done = sqlx::query(SAVE_SQL)
        .bind(array(rides))
        .bind(array(inserts))
        .bind(array(updates))
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != rows as u64 {
        if guarded.is_empty() {
            return Err(StoreError::Corrupt {
                table: "driver_rides",
                problem: "a write changed no row, and none of them has a guard".into(),
            });
        }
        return Err(StoreError::Conflict {
            drivers: guarded.join(", "),
        });
    }
    Ok(())
}

/// A ride as [`SAVE_SQL`] reads it.
fn ride_row(ride: &Ride, correlation: Option<&str>, now: Timestamp) -> Value {
    let request = ride.request.as_ref();
    let (driver_id, reason) = match &ride.stage {
        Stage::Waiting | Stage::Unavailable => (None, None),
        Stage::Assigned { driver_id } => (Some(driver_id.as_str()), None),
        Stage::Released { driver_id, reason } => (Some(driver_id.as_str()), Some(reason.as_str())),
        Stage::Closed { reason } => (None, Some(reason.as_str())),
    };
    json!([
        ride.id.as_str(),
        request.map(|q| q.rider_id.as_str()),
        request.map(|q| q.pickup.lat),
        request.map(|q| q.pickup.lng),
        request.map(|q| q.match_deadline.unix_millis()),
        ride.cleared,
        ride.stage.as_str(),
        driver_id,
        reason,
        correlation,
        now.unix_millis(),
    ])
}

/// A driver in the order of [`driver_columns!`].
fn driver_row(d: &Driver) -> Vec<Value> {
    vec![
        json!(d.id.as_str()),
        json!(d.name),
        json!(d.location.lat),
        json!(d.location.lng),
        json!(d.online),
        json!(d.current_ride.as_ref().map(RideId::as_str)),
        json!(d.name_at),
        json!(d.online_at),
        json!(d.location_at),
    ]
}

/// What a guarded update does, for the error should its guard stop it: `reserve d_1`.
fn guard(old: &Driver, new: &Driver) -> String {
    let what = match (&old.current_ride, &new.current_ride) {
        (None, Some(_)) => "reserve",
        (Some(_), ride) if *ride != old.current_ride => "release",
        _ => "update",
    };
    format!("{what} {}", new.id)
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
