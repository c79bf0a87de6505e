//! A batch's view of the driver service's tables: what its inputs changed so far, kept in
//! memory and laid over what is stored for the inputs after them, until the batch saves it.

use super::*;

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
    pub(super) changed: Loaded,
    /// The same rows as stored before the batch (absent: a row the batch creates).
    stored: State,
    /// Whether any cleared ride waited for a driver in the tables when the batch began
    /// (`None`: not known).
    pub(super) rides_waiting: Option<bool>,
}

impl BatchView {
    /// Begins a batch whose inputs name `ride_ids` (duplicates allowed), with the rows of
    /// the read-ahead statement ([`read_ahead_sql`]) for them.
    pub fn read_ahead(ride_ids: &[&RideId], rows: &[Row]) -> Result<Self, StoreError> {
        let ahead = read_ahead(rows)?;
        let mut view = BatchView {
            rides_waiting: ahead.rides_waiting,
            ..BatchView::default()
        };
        for id in ride_ids {
            view.ahead.insert((*id).clone(), None);
        }
        for found in ahead.rides {
            view.ahead.insert(found.ride.id.clone(), Some(found));
        }
        Ok(view)
    }

    /// The ride `ride_id` with its correlation id and, if assigned, its driver, as the batch
    /// has left them.
    pub(super) async fn ride(
        &self,
        conn: &mut Conn<'_>,
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
    pub(super) async fn driver(
        &self,
        conn: &mut Conn<'_>,
        driver_id: &DriverId,
    ) -> Result<Option<Driver>, StoreError> {
        match self.changed.state.drivers.get(driver_id) {
            Some(driver) => Ok(Some(driver.clone())),
            None => find_driver(conn, driver_id).await,
        }
    }

    /// How many of the drivers the batch changed the tables still show as available inside
    /// `bbox`: the rows a search may read only to drop them.
    pub(super) fn stored_available_in(&self, bbox: &BoundingBox) -> usize {
        self.stored
            .drivers
            .values()
            .filter(|d| d.online && d.current_ride.is_none() && bbox.contains(d.location))
            .count()
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
    pub async fn save(&self, conn: &mut Conn<'_>, now: Timestamp) -> Result<(), StoreError> {
        save(conn, &self.stored, &self.changed, now)
            .await
            .map(|_| ())
    }
}

/// The LIMIT of a search that must return `limit` rows besides any of the `changed` rows a
/// batch holds in memory: `limit` itself when there are none, else the next power of two
/// above their sum. The limit is part of the statement's text, and sqlx keeps a prepared
/// statement per text; with a limit per count of changed rows, the searches of a large batch
/// prepared dozens of statements and kept evicting one another from that cache.
pub(super) fn read_past(limit: i64, changed: usize) -> i64 {
    if changed == 0 {
        return limit;
    }
    let wanted = u64::try_from(limit).unwrap_or(0) + changed as u64;
    i64::try_from(wanted.next_power_of_two()).unwrap_or(i64::MAX)
}
