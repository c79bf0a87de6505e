//! The driver service's writes: every ride and driver that an input or a timer run changed,
//! one statement each, reservations behind their guards; and the pruning of ended rides.

use super::*;

/// Writes every ride and driver of `after` that differs from `before` (as loaded), and the
/// correlation ids the input brought.
pub async fn save(
    conn: &mut SqliteConnection,
    before: &State,
    after: &Loaded,
    now: Timestamp,
) -> Result<(), StoreError> {
    let correlations = &after.correlations;
    for (id, ride) in &after.state.rides {
        if before.rides.get(id) != Some(ride) || correlations.learnt.contains(id) {
            upsert_ride(conn, ride, correlations.of(id), now).await?;
        }
    }
    for (id, driver) in &after.state.drivers {
        match before.drivers.get(id) {
            None => insert_driver(conn, driver).await?,
            Some(old) if old != driver => update_driver(conn, old, driver).await?,
            Some(_) => {}
        }
    }
    Ok(())
}

/// Writes `ride`; a stored correlation id stays (the first one seen wins).
async fn upsert_ride(
    conn: &mut SqliteConnection,
    ride: &Ride,
    correlation: Option<&str>,
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
         cleared, stage, driver_id, reason, correlation_id, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
         ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
         pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
         match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
         stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
         correlation_id = COALESCE(driver_rides.correlation_id, excluded.correlation_id), \
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
    .bind(correlation)
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_driver(conn: &mut SqliteConnection, d: &Driver) -> Result<(), StoreError> {
    sqlx::query(concat!(
        "INSERT INTO drivers (",
        driver_columns!(""),
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

/// Writes the driver's row in one statement, guarded: it must still hold the ride it was
/// loaded with (none, to reserve; the old one, to release).
async fn update_driver(
    conn: &mut SqliteConnection,
    old: &Driver,
    new: &Driver,
) -> Result<(), StoreError> {
    macro_rules! guarded {
        ($guard:literal) => {
            concat!(
                "UPDATE drivers SET name = $2, lat = $3, lng = $4, online = $5, name_at_ms = $6, \
                 online_at_ms = $7, location_at_ms = $8, current_ride = $9 \
                 WHERE driver_id = $1 AND ",
                $guard
            )
        };
    }
    let what = match (&old.current_ride, &new.current_ride) {
        (None, Some(_)) => "reserve",
        (Some(_), ride) if *ride != old.current_ride => "release",
        _ => "update",
    };
    let sql = match &old.current_ride {
        None => guarded!("current_ride IS NULL"),
        Some(_) => guarded!("current_ride = $10"),
    };
    let mut done = sqlx::query(sql)
        .bind(new.id.as_str())
        .bind(&new.name)
        .bind(new.location.lat)
        .bind(new.location.lng)
        .bind(new.online)
        .bind(new.name_at)
        .bind(new.online_at)
        .bind(new.location_at)
        .bind(new.current_ride.as_ref().map(RideId::as_str));
    if let Some(old_ride) = &old.current_ride {
        done = done.bind(old_ride.as_str());
    }
    if done.execute(&mut *conn).await?.rows_affected() != 1 {
        return Err(StoreError::Conflict {
            driver_id: new.id.clone(),
            what,
        });
    }
    Ok(())
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
