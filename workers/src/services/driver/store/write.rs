//! The driver service's writes: every ride and driver that an input, a batch or a timer run
//! changed, in one round trip whose statements' text never changes (the rows travel as JSON
//! arrays), reservations behind their guards; and the pruning of ended rides.

use serde::Serialize;

use super::*;

/// What one save writes, in one round trip ([`save_rows`]); each row changes exactly one row
/// of its table unless a reservation guard stops it:
///
/// 1. `rides` are upserted; a stored correlation id stays (the first one seen wins);
/// 2. `new_drivers` are inserted;
/// 3. `changed_drivers` are updated, guarded: a row changes only if it still holds the ride
///    it was loaded with (`loaded_ride`: none, to reserve; the old one, to release).
#[derive(Debug, Default)]
pub(super) struct SaveRows<'a> {
    pub rides: Vec<RideRow<'a>>,
    pub new_drivers: Vec<DriverRow<'a>>,
    pub changed_drivers: Vec<GuardedDriverRow<'a>>,
}

impl SaveRows<'_> {
    fn len(&self) -> usize {
        self.rides.len() + self.new_drivers.len() + self.changed_drivers.len()
    }
}

/// A row of `driver_rides`, by column.
#[derive(Debug, Serialize)]
pub(super) struct RideRow<'a> {
    pub ride_id: &'a str,
    pub rider_id: Option<&'a str>,
    pub pickup_lat: Option<f64>,
    pub pickup_lng: Option<f64>,
    pub match_deadline_ms: Option<i64>,
    pub cleared: bool,
    pub stage: &'static str,
    pub driver_id: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub correlation_id: Option<&'a str>,
    pub updated_at_ms: i64,
    pub trip_km: Option<f64>,
}

/// A row of `drivers`, by column ([`driver_columns!`]).
#[derive(Debug, Serialize)]
pub(super) struct DriverRow<'a> {
    pub driver_id: &'a str,
    pub name: &'a str,
    pub lat: f64,
    pub lng: f64,
    pub online: bool,
    pub current_ride: Option<&'a str>,
    pub name_at_ms: i64,
    pub online_at_ms: i64,
    pub location_at_ms: i64,
    /// The schedule as the contract's JSON.
    pub schedule: Option<String>,
    pub schedule_at_ms: i64,
}

/// A driver's new row and the ride the driver held when loaded: the update's guard.
#[derive(Debug, Serialize)]
pub(super) struct GuardedDriverRow<'a> {
    #[serde(flatten)]
    pub row: DriverRow<'a>,
    pub loaded_ride: Option<&'a str>,
}

/// Writes every ride and driver of `after` that differs from `before` (as loaded), and the
/// correlation ids the input brought, in one round trip ([`SaveRows`]; the same statements
/// whatever the rows, so they are prepared once). Fewer changes in all than rows means a
/// guard stopped one.
pub async fn save(
    conn: &mut Conn<'_>,
    before: &State,
    after: &Loaded,
    now: Timestamp,
) -> Result<(), StoreError> {
    let correlations = &after.correlations;
    let mut rows = SaveRows::default();
    for (id, ride) in &after.state.rides {
        if before.rides.get(id) != Some(ride) || correlations.learnt.contains(id) {
            rows.rides.push(ride_row(ride, correlations.of(id), now));
        }
    }
    let mut guarded = Vec::new();
    for (id, driver) in &after.state.drivers {
        match before.drivers.get(id) {
            None => rows.new_drivers.push(driver_row(driver)),
            Some(old) if old != driver => {
                rows.changed_drivers.push(GuardedDriverRow {
                    row: driver_row(driver),
                    loaded_ride: old.current_ride.as_ref().map(RideId::as_str),
                });
                guarded.push(guard(old, driver));
            }
            Some(_) => {}
        }
    }
    let expected = rows.len();
    if expected == 0 {
        return Ok(());
    }
    let changed = save_rows(conn, &rows).await?;
    if changed != expected as u64 {
        if guarded.is_empty() {
            return Err(corrupt(
                "driver_rides",
                "a write changed no row, and none of them has a guard",
            )
            .into());
        }
        return Err(StoreError::Conflict {
            drivers: guarded.join(", "),
        });
    }
    Ok(())
}

fn ride_row<'a>(ride: &'a Ride, correlation: Option<&'a str>, now: Timestamp) -> RideRow<'a> {
    let request = ride.request.as_ref();
    let (driver_id, reason) = match &ride.stage {
        Stage::Waiting | Stage::Unavailable => (None, None),
        Stage::Assigned { driver_id } => (Some(driver_id.as_str()), None),
        Stage::Released { driver_id, reason } => (Some(driver_id.as_str()), Some(reason.as_str())),
        Stage::Closed { reason } => (None, Some(reason.as_str())),
    };
    RideRow {
        ride_id: ride.id.as_str(),
        rider_id: request.map(|q| q.rider_id.as_str()),
        pickup_lat: request.map(|q| q.pickup.lat),
        pickup_lng: request.map(|q| q.pickup.lng),
        match_deadline_ms: request.map(|q| q.match_deadline.unix_millis()),
        cleared: ride.cleared,
        stage: ride.stage.as_str(),
        driver_id,
        reason,
        correlation_id: correlation,
        updated_at_ms: now.unix_millis(),
        trip_km: request.map(|q| q.trip_km),
    }
}

fn driver_row(d: &Driver) -> DriverRow<'_> {
    DriverRow {
        driver_id: d.id.as_str(),
        name: &d.name,
        lat: d.location.lat,
        lng: d.location.lng,
        online: d.online,
        current_ride: d.current_ride.as_ref().map(RideId::as_str),
        name_at_ms: d.name_at,
        online_at_ms: d.online_at,
        location_at_ms: d.location_at,
        schedule: d
            .schedule
            .as_ref()
            .and_then(|s| serde_json::to_string(s).ok()),
        schedule_at_ms: d.schedule_at,
    }
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
