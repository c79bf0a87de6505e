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
use sqlx::{AssertSqlSafe, Column as _, Row, SqliteConnection};

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
/// their order. The true nearest driver ranks below the first 16 only if 16 others sit within
/// that sliver of its distance (a ring a few metres wide in a city) with none nearer, and
/// even then the one chosen is at most that much farther. Sixteen rows also stay well under
/// the 50 that sqlx's SQLite thread streams back before it waits for the reader (64 did not).
const NEARBY_DRIVERS: i64 = 16;

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

/// A batch as its inputs see the tables: the rides its inputs name, read in one statement when
/// it begins, and every row its inputs have changed so far, kept here instead of written at
/// once. Each read of an input goes through the view, which lays those changes over what is
/// stored, so an input sees exactly what it would see had every input before it been saved;
/// the batch writes its changes once, in one round trip, when it ends ([`BatchView::save`]).
/// Reads that return several rows (the searches) ask the tables for as many more rows as the
/// batch has changed, drop those and put in the changed rows that qualify: the same rows,
/// in the same order, as the same statement would return on the saved tables.
#[derive(Debug, Default)]
pub struct BatchView {
    /// Rides read ahead: `None` for one not stored.
    ahead: HashMap<RideId, Option<FoundRide>>,
    /// Every ride and driver the batch changed, as it left them, and the correlation ids of
    /// those rides (`learnt`: the ones to store).
    changed: Loaded,
    /// The same rows as stored before the batch (absent: a row the batch creates).
    stored: State,
    /// Whether any cleared ride waited for a driver in the tables when the batch began
    /// (`None`: not known).
    rides_waiting: Option<bool>,
}

impl BatchView {
    /// Begins a batch whose inputs name `ride_ids` (duplicates allowed), with the rows of
    /// [`READ_AHEAD_SQL`] for them.
    pub fn read_ahead(ride_ids: &[&RideId], rows: &[SqliteRow]) -> Result<Self, StoreError> {
        let mut view = BatchView::default();
        for id in ride_ids {
            view.ahead.insert((*id).clone(), None);
        }
        for row in rows {
            if row
                .columns()
                .first()
                .is_some_and(|c| c.name() == "rides_waiting")
            {
                view.rides_waiting = Some(row.try_get(0)?);
                continue;
            }
            let found = found_ride(row)?;
            view.ahead.insert(found.ride.id.clone(), Some(found));
        }
        Ok(view)
    }

    /// The ride `ride_id` with its correlation id and, if assigned, its driver, as the batch
    /// has left them.
    async fn ride(
        &self,
        conn: &mut SqliteConnection,
        ride_id: &RideId,
    ) -> Result<Option<FoundRide>, StoreError> {
        let stored = match self.ahead.get(ride_id) {
            Some(found) => found.clone(),
            None => find_ride(conn, ride_id).await?,
        };
        let (ride, correlation, stored_driver) =
            match (self.changed.state.rides.get(ride_id), stored) {
                (Some(ride), stored) => {
                    let correlation = self.changed.correlations.of(ride_id).map(str::to_owned);
                    let stored_driver = stored.and_then(|found| found.driver);
                    (ride.clone(), correlation, stored_driver)
                }
                (None, Some(found)) => (found.ride, found.correlation, found.driver),
                (None, None) => return Ok(None),
            };
        let driver = match &ride.stage {
            Stage::Assigned { driver_id } => match self.changed.state.drivers.get(driver_id) {
                Some(driver) => Some(driver.clone()),
                None => match stored_driver.filter(|d| d.id == *driver_id) {
                    Some(driver) => Some(driver),
                    None => find_driver(conn, driver_id).await?,
                },
            },
            _ => None,
        };
        Ok(Some(FoundRide {
            ride,
            correlation,
            driver,
        }))
    }

    /// The driver `driver_id` as the batch has left them.
    async fn driver(
        &self,
        conn: &mut SqliteConnection,
        driver_id: &DriverId,
    ) -> Result<Option<Driver>, StoreError> {
        match self.changed.state.drivers.get(driver_id) {
            Some(driver) => Ok(Some(driver.clone())),
            None => find_driver(conn, driver_id).await,
        }
    }

    /// Keeps what an input changed in `loaded` (relative to `before`, as it was loaded), for
    /// the inputs after it and for [`BatchView::save`].
    pub fn keep(&mut self, before: &State, loaded: &Loaded) {
        let learnt = &loaded.correlations.learnt;
        for (id, ride) in &loaded.state.rides {
            if before.rides.get(id) == Some(ride) && !learnt.contains(id) {
                continue;
            }
            if !self.changed.state.rides.contains_key(id)
                && let Some(stored) = before.rides.get(id)
            {
                self.stored.rides.insert(id.clone(), stored.clone());
            }
            self.changed.state.rides.insert(id.clone(), ride.clone());
            if let Some(correlation) = loaded.correlations.of(id) {
                let known = &mut self.changed.correlations.known;
                known.insert(id.clone(), correlation.to_owned());
            }
            if learnt.contains(id) {
                self.changed.correlations.learnt.insert(id.clone());
            }
        }
        for (id, driver) in &loaded.state.drivers {
            if before.drivers.get(id) == Some(driver) {
                continue;
            }
            if !self.changed.state.drivers.contains_key(id)
                && let Some(stored) = before.drivers.get(id)
            {
                self.stored.drivers.insert(id.clone(), stored.clone());
            }
            self.changed
                .state
                .drivers
                .insert(id.clone(), driver.clone());
        }
    }

    /// Writes every row the batch changed, in one round trip (see [`save`]).
    pub async fn save(
        &self,
        conn: &mut SqliteConnection,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        save(conn, &self.stored, &self.changed, now)
            .await
            .map(|_| ())
    }
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

/// Available drivers near `pickup`, enough to contain the nearest one within the radius. Looks
/// in small circles first ([`NEAR_FIRST_KM`]): where drivers are dense, that answers with a
/// fraction of the rows the whole radius would scan; only when no driver is inside any of
/// them does the whole radius get searched.
async fn add_available_drivers_near(
    conn: &mut SqliteConnection,
    view: &BatchView,
    state: &mut State,
    pickup: GeoPoint,
    rules: &MatchRules,
    limit: i64,
) -> Result<(), StoreError> {
    let mut found = None;
    for radius_km in NEAR_FIRST_KM.into_iter().filter(|&km| km < rules.radius_km) {
        let drivers = available_drivers_in_box(conn, view, pickup, radius_km, limit).await?;
        // A driver inside the circle is nearer than anyone outside its box, so the nearest
        // overall is among these. Corners of the box do not count.
        if drivers
            .iter()
            .any(|d| d.location.distance_km(&pickup) <= radius_km)
        {
            found = Some(drivers);
            break;
        }
    }
    let drivers = match found {
        Some(drivers) => drivers,
        None => available_drivers_in_box(conn, view, pickup, rules.radius_km, limit).await?,
    };
    for driver in drivers {
        state.drivers.entry(driver.id.clone()).or_insert(driver);
    }
    Ok(())
}

/// Up to `limit` available drivers in the box around `pickup` of `radius_km`, nearest first by
/// an equirectangular estimate (see [`NEARBY_DRIVERS`] for how exact), as the batch in `view`
/// has left them.
async fn available_drivers_in_box(
    conn: &mut SqliteConnection,
    view: &BatchView,
    pickup: GeoPoint,
    radius_km: f64,
    limit: i64,
) -> Result<Vec<Driver>, StoreError> {
    let bbox = BoundingBox::around(pickup, radius_km);
    let lng_scale = pickup.lat.to_radians().cos().powi(2);
    let changed = &view.changed.state.drivers;
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
        limit = read_past(limit, changed.len())
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(bbox.min_lat)
        .bind(bbox.max_lat)
        .bind(bbox.min_lng)
        .bind(bbox.max_lng)
        .bind(pickup.lat)
        .bind(pickup.lng)
        .bind(lng_scale)
        .fetch_all(&mut *conn)
        .await?;
    let mut drivers = Vec::with_capacity(rows.len());
    for row in &rows {
        let driver = driver_at(row, 0)?;
        if !changed.contains_key(&driver.id) {
            drivers.push(driver);
        }
    }
    if changed.is_empty() {
        return Ok(drivers);
    }
    // The statement's filter and order, on the rows the batch changed.
    drivers.extend(
        changed
            .values()
            .filter(|d| d.online && d.current_ride.is_none() && bbox.contains(d.location))
            .cloned(),
    );
    let estimate = |d: &Driver| {
        let (lat, lng) = (d.location.lat, d.location.lng);
        (lat - pickup.lat) * (lat - pickup.lat)
            + (lng - pickup.lng) * (lng - pickup.lng) * lng_scale
    };
    drivers.sort_by(|a, b| {
        estimate(a)
            .total_cmp(&estimate(b))
            .then_with(|| a.id.cmp(&b.id))
    });
    drivers.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(drivers)
}

/// Waiting cleared rides before their deadline in the box around `place`, earliest first, as
/// the batch in `view` has left them.
async fn add_waiting_rides_near(
    conn: &mut SqliteConnection,
    view: &BatchView,
    loaded: &mut Loaded,
    place: GeoPoint,
    now: Timestamp,
    rules: &MatchRules,
) -> Result<(), StoreError> {
    let bbox = BoundingBox::around(place, rules.radius_km);
    let changed = &view.changed.state.rides;
    // The tables are as the batch found them (its changes are in `view`): if no ride waited
    // then, the statement would return nothing.
    let rows = if view.rides_waiting == Some(false) {
        Vec::new()
    } else {
        waiting_rides_in_box(conn, &bbox, now, read_past(NEARBY_RIDES, changed.len())).await?
    };
    let mut rides = Vec::with_capacity(rows.len());
    for row in &rows {
        let (ride, correlation) = ride_at(row, 0)?;
        if !changed.contains_key(&ride.id) {
            rides.push((ride, correlation));
        }
    }
    if !changed.is_empty() {
        // The statement's filter and order, on the rides the batch changed.
        let deadline_ms = |ride: &Ride| {
            ride.request
                .as_ref()
                .map(|q| q.match_deadline.unix_millis())
        };
        rides.extend(
            changed
                .values()
                .filter(|ride| {
                    ride.stage == Stage::Waiting
                        && ride.cleared
                        && ride.request.as_ref().is_some_and(|q| {
                            q.match_deadline.unix_millis() > now.unix_millis()
                                && bbox.contains(q.pickup)
                        })
                })
                .map(|ride| {
                    let correlation = view.changed.correlations.of(&ride.id).map(str::to_owned);
                    (ride.clone(), correlation)
                }),
        );
        rides.sort_by(|(a, _), (b, _)| {
            deadline_ms(a)
                .cmp(&deadline_ms(b))
                .then_with(|| a.id.cmp(&b.id))
        });
        rides.truncate(usize::try_from(NEARBY_RIDES).unwrap_or(usize::MAX));
    }
    for (ride, correlation) in rides {
        loaded.add_ride(ride, correlation);
    }
    Ok(())
}

/// Up to `limit` stored waiting cleared rides before their deadline in `bbox`, earliest
/// deadline first.
async fn waiting_rides_in_box(
    conn: &mut SqliteConnection,
    bbox: &BoundingBox,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<SqliteRow>, StoreError> {
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
    Ok(rows)
}

/// The LIMIT of a search that must return `limit` rows besides any of the `changed` rows a
/// batch holds in memory: `limit` itself when there are none, else the next power of two
/// above their sum. The limit is part of the statement's text, and sqlx keeps a prepared
/// statement per text; with a limit per count of changed rows, the searches of a large batch
/// prepared dozens of statements and kept evicting one another from that cache.
fn read_past(limit: i64, changed: usize) -> i64 {
    if changed == 0 {
        return limit;
    }
    let wanted = u64::try_from(limit).unwrap_or(0) + changed as u64;
    i64::try_from(wanted.next_power_of_two()).unwrap_or(i64::MAX)
}

#[path = "store_write.rs"]
mod write;
pub use write::{prune, save};

#[path = "store_rows.rs"]
mod rows;
use rows::{driver_at, ride_at};

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
