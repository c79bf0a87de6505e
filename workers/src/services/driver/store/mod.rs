//! The driver service's tables (`migrations/<backend>/driver`): load the slice of state an
//! input or a timer can touch, and write back what changed. Reservations are written with
//! guards (`current_ride IS NULL` to reserve, `= ride` to release) on top of the schema's
//! uniqueness, so a logic slip or a concurrent writer fails the transaction instead of
//! double-booking.
//!
//! Each statement is a round trip to the database, so an input reads only what its outcome
//! can depend on (the driver search only for a ride that may be matched now), a ride comes with
//! its correlation id and, when assigned, its driver in one statement, and a batch reads the
//! rides its inputs name in one statement and writes only the rows that changed, once, when
//! it ends ([`BatchView`]).
//!
//! This module and its `search`, `view`, `write` and `rows` decide what to read and write, the
//! same on every backend. The statements are the backends': [`sqlite`] and [`postgres`] each
//! provide the functions that [`find_driver`] and the ones after it hand each call to, by the
//! connection's backend. Both return rows in the column order of [`driver_columns!`] and
//! [`ride_columns!`], which `rows` reads back from either.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ridesaga_schemas::{DriverId, GeoPoint, RideId, RiderId, Timestamp};

use crate::runtime::{Conn, Kind, Row};
use crate::services::rows::{Corrupt, corrupt};

use super::domain::{
    self, BoundingBox, Driver, Input, MatchRules, Ride, RideRequest, Stage, State,
};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row this code cannot read back.
    #[error(transparent)]
    Corrupt(#[from] Corrupt),
    /// A reservation guard found a driver's row in another state than the one loaded: one of
    /// `drivers` (the guarded writes of one save, `reserve d_1, release d_2`).
    #[error("a driver changed underneath this transaction ({drivers})")]
    Conflict { drivers: String },
}

/// Candidate drivers loaded around a pickup, nearest first by the equirectangular estimate of
/// [`available_drivers_in_box`]; the exact great-circle choice is made among them. Within 10 km
/// of a pickup below 70° of latitude, the estimate stays within 0.17 % of the great-circle
/// distance (0.08 % at Berlin's), so two drivers whose distances differ by more than that keep
/// their order. The true nearest driver ranks below the first 4 only if 4 others sit within
/// that sliver of its distance (a ring under a metre wide at 500 m) with none nearer, and even
/// then the one chosen is at most that much farther. Every row costs: sqlx's SQLite thread
/// hands rows back one at a time through a channel whose lock the reader contends for (a
/// fifth of the driver's futex calls at the maximum rate came from that with 16).
const NEARBY_DRIVERS: i64 = 4;

/// Waiting rides loaded around a driver who became available, earliest deadline first: the
/// domain offers the driver the first of them within the radius, and the limit stays generous
/// so that rides in the corners of the box (outside that circle) rarely crowd it out.
const NEARBY_RIDES: i64 = 64;

/// Radii of the searches for a driver before the whole radius, smallest first, in km. A search
/// reads every available driver in its box, so where drivers are dense the small circle
/// answers at a fraction of the rows (about 8 available drivers per km² in the benchmark's
/// city: some 6 in the first box, 120 in the second); where they are sparse, each step that
/// finds nobody inside its circle costs one more, cheap, statement.
const NEAR_FIRST_KM: [f64; 2] = [0.5, 2.0];

/// `$first, $rest...` qualified by `$t`, as one comma-separated literal.
macro_rules! columns {
    ($t:literal: $first:literal $(, $rest:literal)*) => {
        concat!($t, $first $(, ", ", $t, $rest)*)
    };
}

/// The columns of a driver, in the order [`driver_at`] reads them; `$t` qualifies them.
macro_rules! driver_columns {
    ($t:literal) => {
        columns!($t: "driver_id", "name", "lat", "lng", "online", "current_ride", "name_at_ms",
            "online_at_ms", "location_at_ms", "schedule", "schedule_at_ms")
    };
}

/// The columns of a ride and its correlation id, in the order [`ride_at`] reads them; `$t`
/// qualifies them.
macro_rules! ride_columns {
    ($t:literal) => {
        columns!($t: "ride_id", "rider_id", "pickup_lat", "pickup_lng", "match_deadline_ms",
            "cleared", "stage", "driver_id", "reason", "correlation_id", "trip_km")
    };
}
/// The rides `$where` picks (on `driver_rides r`), each with its correlation id and, when
/// assigned, its driver: the columns [`found_ride`] reads.
macro_rules! found_ride_sql {
    ($where:literal) => {
        concat!(
            "SELECT ",
            ride_columns!("r."),
            ", ",
            driver_columns!("d."),
            " FROM driver_rides r LEFT JOIN drivers d \
             ON r.stage = 'assigned' AND d.driver_id = r.driver_id WHERE ",
            $where
        )
    };
}

/// How many columns [`ride_columns!`] lists.
const RIDE_COLUMNS: usize = 11;

/// The slice of state an input or a timer run can touch, as loaded, and the correlation ids of
/// its rides.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub state: State,
    pub correlations: Correlations,
}

impl Loaded {
    /// Adds a ride read by one of the load's queries; one read by an earlier query stays.
    fn add_ride(&mut self, ride: Ride, correlation: Option<String>) {
        if let Some(correlation) = correlation {
            self.correlations.known.insert(ride.id.clone(), correlation);
        }
        self.state.rides.entry(ride.id.clone()).or_insert(ride);
    }
}

/// The saga correlation id of each loaded ride that has one: the events published about a ride
/// carry it.
#[derive(Debug, Clone, Default)]
pub struct Correlations {
    known: BTreeMap<RideId, String>,
    /// Rides whose first correlation id arrived with this input: stored even if nothing else
    /// about the ride changed.
    learnt: BTreeSet<RideId>,
}

impl Correlations {
    pub fn of(&self, ride_id: &RideId) -> Option<&str> {
        self.known.get(ride_id).map(String::as_str)
    }

    /// Keeps `correlation_id` for the ride unless it has one: the first one seen wins, and a
    /// request and its clearance share it.
    pub fn remember(&mut self, ride_id: &RideId, correlation_id: &str) {
        if !self.known.contains_key(ride_id) {
            self.known
                .insert(ride_id.clone(), correlation_id.to_owned());
            self.learnt.insert(ride_id.clone());
        }
    }
}

/// What `input` can read or change: the driver it names and the waiting rides near them (a
/// registration, going online, a move, a schedule); or
/// the ride it names and, only if that ride may be matched after the input, the available
/// drivers near its pickup; or, for an ending, the ride, its driver and, only if the ending
/// frees that driver, the waiting rides near them.
pub async fn load_for_input(
    conn: &mut Conn<'_>,
    input: &Input,
    now: Timestamp,
    rules: &MatchRules,
    view: &BatchView,
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
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
            load_driver_side(
                conn,
                view,
                &mut loaded,
                driver_id,
                Some(*location),
                now,
                rules,
            )
            .await?;
        }
        Input::Online {
            driver_id,
            location,
            ..
        } => {
            load_driver_side(conn, view, &mut loaded, driver_id, *location, now, rules).await?;
        }
        Input::Schedule { driver_id, .. } => {
            // A schedule may put the driver on shift for a ride waiting near them.
            load_driver_side(conn, view, &mut loaded, driver_id, None, now, rules).await?;
        }
        Input::Offline { driver_id, .. } => {
            if let Some(driver) = view.driver(conn, driver_id).await? {
                loaded.state.drivers.insert(driver.id.clone(), driver);
            }
        }
        Input::Requested { ride_id, .. } | Input::Cleared { ride_id } => {
            // An assigned ride's driver plays no part in a request or a clearance.
            let found = view.ride(conn, ride_id).await?;
            let to_match = domain::pickup_to_match(found.as_ref().map(|f| &f.ride), input, now);
            if let Some(found) = found {
                loaded.add_ride(found.ride, found.correlation);
            }
            if let Some(request) = to_match {
                let state = &mut loaded.state;
                add_available_drivers_near(conn, view, state, &request, now, rules, NEARBY_DRIVERS)
                    .await?;
            }
        }
        Input::Ended { ride_id, .. } => {
            let Some(found) = view.ride(conn, ride_id).await? else {
                return Ok(loaded);
            };
            let freed = found
                .driver
                .as_ref()
                .filter(|driver| domain::ending_frees(&found.ride, driver))
                .map(|driver| driver.location);
            loaded.add_ride(found.ride, found.correlation);
            if let Some(driver) = found.driver {
                loaded.state.drivers.insert(driver.id.clone(), driver);
            }
            if let Some(place) = freed {
                add_waiting_rides_near(conn, view, &mut loaded, place, now, rules).await?;
            }
        }
    }
    Ok(loaded)
}

/// What a timer run can touch: up to `batch` waiting rides past their deadline, up to `batch`
/// waiting cleared rides before it (earliest first) and the available drivers near each.
pub async fn load_for_tick(
    conn: &mut Conn<'_>,
    now: Timestamp,
    rules: &MatchRules,
    batch: i64,
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    let due = rides_past_deadline(conn, now, batch).await?;
    let waiting = rides_waiting_before_deadline(conn, now, batch).await?;
    for (ride, correlation) in due.into_iter().chain(waiting) {
        loaded.add_ride(ride, correlation);
    }
    let requests: Vec<RideRequest> = loaded
        .state
        .rides
        .values()
        .filter_map(|r| r.matchable(now).cloned())
        .collect();
    // Rides matched earlier in the run may take some of a later ride's candidates: load as
    // many more as there are such rides.
    let limit = NEARBY_DRIVERS + i64::try_from(requests.len()).unwrap_or(i64::MAX) - 1;
    let view = BatchView::default();
    for request in requests {
        add_available_drivers_near(conn, &view, &mut loaded.state, &request, now, rules, limit)
            .await?;
    }
    Ok(loaded)
}

async fn load_driver_side(
    conn: &mut Conn<'_>,
    view: &BatchView,
    loaded: &mut Loaded,
    driver_id: &DriverId,
    new_location: Option<GeoPoint>,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let stored = view.driver(conn, driver_id).await?;
    // Around both positions: a late command leaves the stored one in force.
    let places: Vec<GeoPoint> = stored
        .iter()
        .map(|d| d.location)
        .chain(new_location)
        .collect();
    if let Some(driver) = stored {
        loaded.state.drivers.insert(driver.id.clone(), driver);
    }
    for place in places {
        add_waiting_rides_near(conn, view, loaded, place, now, rules).await?;
    }
    Ok(())
}

/// A stored ride, its correlation id and, if it is assigned, its driver.
#[derive(Debug, Clone)]
struct FoundRide {
    ride: Ride,
    correlation: Option<String>,
    driver: Option<Driver>,
}

/// A stored ride and its correlation id.
type StoredRide = (Ride, Option<String>);

// What each backend provides, under the same names: `READ_AHEAD_SQL` and `read_ahead_row`
// (what one of its rows holds), and a function for each of those below.

/// The statement that reads a batch's rides ahead on `kind` (the service's preload): the
/// rides whose ids are in the JSON array given, each with its correlation id and driver, and
/// whether any cleared ride waits for a driver. Where none did when the batch began, an ending
/// need not look for one near the driver it frees (most batches, in a city with drivers to
/// spare).
pub fn read_ahead_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => sqlite::READ_AHEAD_SQL,
        Kind::Postgres => postgres::READ_AHEAD_SQL,
    }
}

/// What the read-ahead statement returned.
#[derive(Debug, Default)]
struct ReadAhead {
    /// Whether any cleared ride waited for a driver (`None`: no row said).
    rides_waiting: Option<bool>,
    rides: Vec<FoundRide>,
}

fn read_ahead(rows: &[Row]) -> Result<ReadAhead, StoreError> {
    let mut ahead = ReadAhead::default();
    for row in rows {
        match row {
            Row::Sqlite(row) => sqlite::read_ahead_row(row, &mut ahead)?,
            Row::Postgres(row) => postgres::read_ahead_row(row, &mut ahead)?,
        }
    }
    Ok(ahead)
}

/// The driver `driver_id`, as stored.
async fn find_driver(
    conn: &mut Conn<'_>,
    driver_id: &DriverId,
) -> Result<Option<Driver>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::find_driver(c, driver_id).await,
        Conn::Postgres(c) => postgres::find_driver(c, driver_id).await,
    }
}

/// The ride `ride_id`, its correlation id and its driver, in one statement.
async fn find_ride(conn: &mut Conn<'_>, ride_id: &RideId) -> Result<Option<FoundRide>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::find_ride(c, ride_id).await,
        Conn::Postgres(c) => postgres::find_ride(c, ride_id).await,
    }
}

/// The stored drivers `search` asks for.
async fn available_drivers_in_box(
    conn: &mut Conn<'_>,
    search: &DriverSearch,
) -> Result<Vec<Driver>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::available_drivers_in_box(c, search).await,
        Conn::Postgres(c) => postgres::available_drivers_in_box(c, search).await,
    }
}

/// Up to `limit` stored waiting cleared rides before their deadline (after `now`) with their
/// pickup in `bbox`, earliest deadline first, then by id.
async fn waiting_rides_in_box(
    conn: &mut Conn<'_>,
    bbox: &BoundingBox,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::waiting_rides_in_box(c, bbox, now, limit).await,
        Conn::Postgres(c) => postgres::waiting_rides_in_box(c, bbox, now, limit).await,
    }
}

/// Up to `limit` waiting rides whose deadline is at or before `now`, earliest first, then by
/// id.
async fn rides_past_deadline(
    conn: &mut Conn<'_>,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::rides_past_deadline(c, now, limit).await,
        Conn::Postgres(c) => postgres::rides_past_deadline(c, now, limit).await,
    }
}

/// Up to `limit` waiting cleared rides whose deadline is after `now`, earliest first, then by
/// id.
async fn rides_waiting_before_deadline(
    conn: &mut Conn<'_>,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoredRide>, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::rides_waiting_before_deadline(c, now, limit).await,
        Conn::Postgres(c) => postgres::rides_waiting_before_deadline(c, now, limit).await,
    }
}

/// Writes `rows` in one round trip (see [`SaveRows`]); returns how many rows changed.
async fn save_rows(conn: &mut Conn<'_>, rows: &SaveRows<'_>) -> Result<u64, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::save_rows(c, rows).await,
        Conn::Postgres(c) => postgres::save_rows(c, rows).await,
    }
}

/// Deletes up to `limit` ended rides (released, closed, unavailable) last changed before
/// `before`, oldest first; returns how many.
pub async fn prune(conn: &mut Conn<'_>, before: Timestamp, limit: i64) -> Result<u64, StoreError> {
    match conn {
        Conn::Sqlite(c) => sqlite::prune(c, before, limit).await,
        Conn::Postgres(c) => postgres::prune(c, before, limit).await,
    }
}

mod postgres;
mod sqlite;

mod search;
use search::{DriverSearch, add_available_drivers_near, add_waiting_rides_near};

mod view;
pub use view::BatchView;
use view::read_past;

mod write;
use write::SaveRows;
pub use write::save;

mod rows;
use rows::{driver_at, found_ride, ride_at};

#[cfg(test)]
mod tests;
