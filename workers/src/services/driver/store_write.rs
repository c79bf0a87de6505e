//! The driver service's writes: every ride and driver that an input or a timer run changed,
//! one statement each and all in one round trip, reservations behind their guards; and the
//! pruning of ended rides.

use sqlx::Arguments;
use sqlx::sqlite::SqliteArguments;

use super::*;

/// The rows a save wrote.
#[derive(Debug, Default)]
pub struct Written {
    pub rides: Vec<RideId>,
    pub drivers: Vec<DriverId>,
}

/// Writes every ride and driver of `after` that differs from `before` (as loaded), and the
/// correlation ids the input brought: one statement per row, all sent as one query (one round
/// trip to the database). Each statement changes exactly one row unless a reservation guard
/// stops it, so fewer changes in all than statements means a guard did. Returns the rows it
/// wrote.
pub async fn save(
    conn: &mut SqliteConnection,
    before: &State,
    after: &Loaded,
    now: Timestamp,
) -> Result<Written, StoreError> {
    let correlations = &after.correlations;
    let mut writes = Writes::default();
    let mut written = Written::default();
    for (id, ride) in &after.state.rides {
        if before.rides.get(id) != Some(ride) || correlations.learnt.contains(id) {
            upsert_ride(&mut writes, ride, correlations.of(id), now)?;
            written.rides.push(id.clone());
        }
    }
    for (id, driver) in &after.state.drivers {
        match before.drivers.get(id) {
            None => insert_driver(&mut writes, driver)?,
            Some(old) if old != driver => update_driver(&mut writes, old, driver)?,
            Some(_) => continue,
        }
        written.drivers.push(id.clone());
    }
    if writes.statements == 0 {
        return Ok(written);
    }
    let done = sqlx::query_with(AssertSqlSafe(writes.sql), writes.args)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != writes.statements {
        if writes.guarded.is_empty() {
            return Err(StoreError::Corrupt {
                table: "driver_rides",
                problem: "a write changed no row, and none of them has a guard".into(),
            });
        }
        let drivers: Vec<String> = writes
            .guarded
            .iter()
            .map(|(driver_id, what)| format!("{what} {driver_id}"))
            .collect();
        return Err(StoreError::Conflict {
            drivers: drivers.join(", "),
        });
    }
    Ok(written)
}

/// Statements for one query, their positional parameters in order, and the reservation
/// guards among them.
#[derive(Default)]
struct Writes {
    sql: String,
    args: SqliteArguments,
    statements: u64,
    guarded: Vec<(DriverId, &'static str)>,
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writes")
            .field("sql", &self.sql)
            .field("statements", &self.statements)
            .finish_non_exhaustive()
    }
}

impl Writes {
    /// Adds a statement with positional (`?`) parameters.
    fn statement(&mut self, sql: &str) {
        if !self.sql.is_empty() {
            self.sql.push_str("; ");
        }
        self.sql.push_str(sql);
        self.statements += 1;
    }

    /// Adds the next parameter.
    fn bind<'t, T>(&mut self, value: T) -> Result<&mut Self, StoreError>
    where
        T: sqlx::Encode<'t, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite> + 't,
    {
        self.args
            .add(value)
            .map_err(|e| StoreError::Database(sqlx::Error::Encode(e)))?;
        Ok(self)
    }
}

/// Writes `ride`; a stored correlation id stays (the first one seen wins).
fn upsert_ride(
    writes: &mut Writes,
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
    writes.statement(
        "INSERT INTO driver_rides (ride_id, rider_id, pickup_lat, pickup_lng, match_deadline_ms, \
         cleared, stage, driver_id, reason, correlation_id, updated_at_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
         pickup_lat = excluded.pickup_lat, pickup_lng = excluded.pickup_lng, \
         match_deadline_ms = excluded.match_deadline_ms, cleared = excluded.cleared, \
         stage = excluded.stage, driver_id = excluded.driver_id, reason = excluded.reason, \
         correlation_id = COALESCE(driver_rides.correlation_id, excluded.correlation_id), \
         updated_at_ms = excluded.updated_at_ms",
    );
    writes
        .bind(ride.id.to_string())?
        .bind(request.map(|q| q.rider_id.to_string()))?
        .bind(request.map(|q| q.pickup.lat))?
        .bind(request.map(|q| q.pickup.lng))?
        .bind(request.map(|q| q.match_deadline.unix_millis()))?
        .bind(ride.cleared)?
        .bind(ride.stage.as_str())?
        .bind(driver_id.map(str::to_owned))?
        .bind(reason.map(str::to_owned))?
        .bind(correlation.map(str::to_owned))?
        .bind(now.unix_millis())?;
    Ok(())
}

fn insert_driver(writes: &mut Writes, d: &Driver) -> Result<(), StoreError> {
    writes.statement(concat!(
        "INSERT INTO drivers (",
        driver_columns!(""),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ));
    writes
        .bind(d.id.to_string())?
        .bind(d.name.clone())?
        .bind(d.location.lat)?
        .bind(d.location.lng)?
        .bind(d.online)?
        .bind(d.current_ride.as_ref().map(RideId::to_string))?
        .bind(d.name_at)?
        .bind(d.online_at)?
        .bind(d.location_at)?;
    Ok(())
}

/// Writes the driver's row, guarded: it must still hold the ride it was loaded with (none, to
/// reserve; the old one, to release).
fn update_driver(writes: &mut Writes, old: &Driver, new: &Driver) -> Result<(), StoreError> {
    let what = match (&old.current_ride, &new.current_ride) {
        (None, Some(_)) => "reserve",
        (Some(_), ride) if *ride != old.current_ride => "release",
        _ => "update",
    };
    writes.statement(match &old.current_ride {
        None => {
            "UPDATE drivers SET name = ?, lat = ?, lng = ?, online = ?, name_at_ms = ?, \
             online_at_ms = ?, location_at_ms = ?, current_ride = ? \
             WHERE driver_id = ? AND current_ride IS NULL"
        }
        Some(_) => {
            "UPDATE drivers SET name = ?, lat = ?, lng = ?, online = ?, name_at_ms = ?, \
             online_at_ms = ?, location_at_ms = ?, current_ride = ? \
             WHERE driver_id = ? AND current_ride = ?"
        }
    });
    writes
        .bind(new.name.clone())?
        .bind(new.location.lat)?
        .bind(new.location.lng)?
        .bind(new.online)?
        .bind(new.name_at)?
        .bind(new.online_at)?
        .bind(new.location_at)?
        .bind(new.current_ride.as_ref().map(RideId::to_string))?
        .bind(new.id.to_string())?;
    if let Some(old_ride) = &old.current_ride {
        writes.bind(old_ride.to_string())?;
    }
    writes.guarded.push((new.id.clone(), what));
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
