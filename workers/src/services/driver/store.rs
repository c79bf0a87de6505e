//! The driver service's tables (`migrations/driver`): load the slice of state an input or a
//! timer can touch, and write back what changed. Reservations are written with guards
//! (`current_ride IS NULL` to reserve, `= ride` to release) on top of the schema's uniqueness,
//! so a logic slip or a concurrent writer fails the transaction instead of double-booking.
//!
//! Each statement is a round trip to the database, so an input reads only what its outcome
//! can depend on (the driver search only for a ride that may be matched now), a ride comes with
//! its correlation id and, when assigned, its driver in one statement, and a batch reads the
//! rides its inputs name in one statement and writes only the rows that changed, once, when
//! it ends ([`BatchView`]).
//!
//! SQL is kept portable to PostgreSQL (`$n` parameters, `ON CONFLICT`, `UPDATE ... FROM`,
//! partial indexes) except for the JSON functions that expand a batch's rows, which the
//! PostgreSQL statements will spell with `jsonb_array_elements`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ridesaga_schemas::{DriverId, GeoPoint, RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, SqliteConnection};

use super::domain::{
    self, BoundingBox, Driver, Input, MatchRules, Ride, RideRequest, Stage, State,
};

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
            "online_at_ms", "location_at_ms")
    };
}

/// The columns of a ride and its correlation id, in the order [`ride_at`] reads them; `$t`
/// qualifies them.
macro_rules! ride_columns {
    ($t:literal) => {
        columns!($t: "ride_id", "rider_id", "pickup_lat", "pickup_lng", "match_deadline_ms",
            "cleared", "stage", "driver_id", "reason", "correlation_id")
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

/// Reads the rides whose ids are in the JSON array given (positional, for the runtime's
/// preload), each with its correlation id and driver: what a batch's inputs name, read ahead.
/// First, in a row of its own, whether any ride waits for a driver: where none did when the
/// batch began, an ending need not look for one near the driver it frees (most batches, in a
/// city with drivers to spare).
pub const READ_AHEAD_SQL: &str = concat!(
    "SELECT EXISTS (SELECT 1 FROM driver_rides WHERE stage = 'waiting' AND cleared) \
     AS rides_waiting; ",
    found_ride_sql!("r.ride_id IN (SELECT value FROM json_each(?))")
);

/// How many columns [`ride_columns!`] lists.
const RIDE_COLUMNS: usize = 10;

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

/// What `input` can read or change: the driver it names and the waiting rides near them; or
/// the ride it names and, only if that ride may be matched after the input, the available
/// drivers near its pickup; or, for an ending, the ride, its driver and, only if the ending
/// frees that driver, the waiting rides near them.
pub async fn load_for_input(
    conn: &mut SqliteConnection,
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
        Input::Offline { driver_id, .. } => {
            if let Some(driver) = view.driver(conn, driver_id).await? {
                loaded.state.drivers.insert(driver.id.clone(), driver);
            }
        }
        Input::Requested { ride_id, .. } | Input::Cleared { ride_id } => {
            // An assigned ride's driver plays no part in a request or a clearance.
            let found = view.ride(conn, ride_id).await?;
            let pickup = domain::pickup_to_match(found.as_ref().map(|f| &f.ride), input, now);
            if let Some(found) = found {
                loaded.add_ride(found.ride, found.correlation);
            }
            if let Some(pickup) = pickup {
                let state = &mut loaded.state;
                add_available_drivers_near(conn, view, state, pickup, rules, NEARBY_DRIVERS)
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
    conn: &mut SqliteConnection,
    now: Timestamp,
    rules: &MatchRules,
    batch: i64,
) -> Result<Loaded, StoreError> {
    let mut loaded = Loaded::default();
    let due = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(""),
        " FROM driver_rides WHERE stage = 'waiting' AND match_deadline_ms <= $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    let waiting = sqlx::query(concat!(
        "SELECT ",
        ride_columns!(""),
        " FROM driver_rides WHERE stage = 'waiting' AND cleared AND match_deadline_ms > $1 \
         ORDER BY match_deadline_ms, ride_id LIMIT $2"
    ))
    .bind(now.unix_millis())
    .bind(batch)
    .fetch_all(&mut *conn)
    .await?;
    for row in due.iter().chain(&waiting) {
        let (ride, correlation) = ride_at(row, 0)?;
        loaded.add_ride(ride, correlation);
    }
    let pickups: Vec<GeoPoint> = loaded
        .state
        .rides
        .values()
        .filter_map(|r| r.matchable(now).map(|q| q.pickup))
        .collect();
    // Rides matched earlier in the run may take some of a later ride's candidates: load as
    // many more as there are such rides.
    let limit = NEARBY_DRIVERS + i64::try_from(pickups.len()).unwrap_or(i64::MAX) - 1;
    let view = BatchView::default();
    for pickup in pickups {
        add_available_drivers_near(conn, &view, &mut loaded.state, pickup, rules, limit).await?;
    }
    Ok(loaded)
}

async fn load_driver_side(
    conn: &mut SqliteConnection,
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

async fn find_driver(
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

/// A stored ride, its correlation id and, if it is assigned, its driver.
#[derive(Debug, Clone)]
struct FoundRide {
    ride: Ride,
    correlation: Option<String>,
    driver: Option<Driver>,
}

/// The ride `ride_id`, its correlation id and its driver, in one statement.
async fn find_ride(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Option<FoundRide>, StoreError> {
    let row = sqlx::query(found_ride_sql!("r.ride_id = $1"))
        .bind(ride_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(found_ride).transpose()
}

/// A row of [`ride_columns!`] then [`driver_columns!`] (null when the ride has no driver).
fn found_ride(row: &SqliteRow) -> Result<FoundRide, StoreError> {
    let (ride, correlation) = ride_at(row, 0)?;
    let has_driver = row.try_get::<Option<String>, _>(RIDE_COLUMNS)?.is_some();
    let driver = if has_driver {
        Some(driver_at(row, RIDE_COLUMNS)?)
    } else {
        None
    };
    Ok(FoundRide {
        ride,
        correlation,
        driver,
    })
}

#[path = "store_search.rs"]
mod search;
use search::{add_available_drivers_near, add_waiting_rides_near};

#[path = "store_view.rs"]
mod view;
pub use view::BatchView;
use view::read_past;

#[path = "store_write.rs"]
mod write;
pub use write::{prune, save};

#[path = "store_rows.rs"]
mod rows;
use rows::{driver_at, ride_at};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
