//! The driver service's searches: available drivers near a pickup, waiting rides near a
//! driver, each as the batch in a [`BatchView`] has left the tables.

use super::*;

/// Available drivers near the pickup of `request`, enough to contain the nearest one within
/// the radius whose schedule lets them take it. Looks in small circles first
/// ([`NEAR_FIRST_KM`]): where drivers are dense, that answers with a fraction of the rows the
/// whole radius would scan; only when no such driver is inside any of them does the whole
/// radius get searched.
pub(super) async fn add_available_drivers_near(
    conn: &mut Conn<'_>,
    view: &BatchView,
    state: &mut State,
    request: &RideRequest,
    now: Timestamp,
    rules: &MatchRules,
    limit: i64,
) -> Result<(), StoreError> {
    let pickup = request.pickup;
    let allowed = |d: &Driver| domain::shift_allows(d, request, now, rules);
    let mut found = None;
    for radius_km in NEAR_FIRST_KM.into_iter().filter(|&km| km < rules.radius_km) {
        let drivers =
            eligible_drivers_in_view(conn, view, pickup, radius_km, limit, &allowed).await?;
        // A driver inside the circle is nearer than anyone outside its box, so the nearest
        // overall is among these. Corners of the box do not count.
        if drivers
            .iter()
            .any(|d| allowed(d) && d.location.distance_km(&pickup) <= radius_km)
        {
            found = Some(drivers);
            break;
        }
    }
    let drivers = match found {
        Some(drivers) => drivers,
        None => {
            eligible_drivers_in_view(conn, view, pickup, rules.radius_km, limit, &allowed).await?
        }
    };
    for driver in drivers {
        state.drivers.entry(driver.id.clone()).or_insert(driver);
    }
    Ok(())
}

/// What [`available_drivers_in_box`] asks a backend for: up
/// to `limit` drivers online and not reserved whose position is in `bbox`, nearest `pickup`
/// first by the equirectangular estimate `(lat - pickup.lat)² + (lng - pickup.lng)² ·
/// lng_scale`, computed in that order (as [`DriverSearch::estimate`] does), then by id.
#[derive(Debug, Clone, Copy)]
pub(super) struct DriverSearch {
    pub bbox: BoundingBox,
    pub pickup: GeoPoint,
    /// cos² of the pickup's latitude: a degree of longitude's length relative to a degree of
    /// latitude's, squared.
    pub lng_scale: f64,
    pub limit: i64,
}

impl DriverSearch {
    /// The order of the search for a driver at `location`.
    fn estimate(&self, location: GeoPoint) -> f64 {
        let (dlat, dlng) = (
            location.lat - self.pickup.lat,
            location.lng - self.pickup.lng,
        );
        dlat * dlat + dlng * dlng * self.lng_scale
    }
}

/// The available drivers in the box around `pickup` of `radius_km`, nearest first, until
/// `limit` of them are `allowed` (their schedule lets them take the ride) or the box has no
/// more: drivers off shift are read past, so that they never hide one on shift behind them.
/// Where no driver has a schedule, this is one statement, as before schedules.
async fn eligible_drivers_in_view(
    conn: &mut Conn<'_>,
    view: &BatchView,
    pickup: GeoPoint,
    radius_km: f64,
    limit: i64,
    allowed: &(dyn Fn(&Driver) -> bool + Sync),
) -> Result<Vec<Driver>, StoreError> {
    let mut read = limit;
    loop {
        let drivers = available_drivers_in_view(conn, view, pickup, radius_km, read).await?;
        let refused = drivers.iter().filter(|d| !allowed(d)).count();
        let exhausted = i64::try_from(drivers.len()).unwrap_or(i64::MAX) < read;
        if refused == 0 || exhausted {
            return Ok(drivers);
        }
        let eligible = drivers.len() - refused;
        if i64::try_from(eligible).unwrap_or(i64::MAX) >= limit {
            return Ok(drivers);
        }
        read = read.saturating_add(i64::try_from(refused).unwrap_or(i64::MAX));
    }
}

/// Up to `limit` available drivers in the box around `pickup` of `radius_km`, nearest first by
/// an equirectangular estimate (see [`NEARBY_DRIVERS`] for how exact), as the batch in `view`
/// has left them.
async fn available_drivers_in_view(
    conn: &mut Conn<'_>,
    view: &BatchView,
    pickup: GeoPoint,
    radius_km: f64,
    limit: i64,
) -> Result<Vec<Driver>, StoreError> {
    let bbox = BoundingBox::around(pickup, radius_km);
    let changed = &view.changed.state.drivers;
    let search = DriverSearch {
        bbox,
        pickup,
        lng_scale: pickup.lat.to_radians().cos().powi(2),
        limit: read_past(limit, view.stored_available_in(&bbox)),
    };
    let stored = available_drivers_in_box(conn, &search).await?;
    let mut drivers = Vec::with_capacity(stored.len());
    for driver in stored {
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
    drivers.sort_by(|a, b| {
        search
            .estimate(a.location)
            .total_cmp(&search.estimate(b.location))
            .then_with(|| a.id.cmp(&b.id))
    });
    drivers.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(drivers)
}

/// Waiting cleared rides before their deadline in the box around `place`, earliest first, as
/// the batch in `view` has left them.
pub(super) async fn add_waiting_rides_near(
    conn: &mut Conn<'_>,
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
    let stored = if view.rides_waiting == Some(false) {
        Vec::new()
    } else {
        let limit = read_past(NEARBY_RIDES, changed.len());
        waiting_rides_in_box(conn, &bbox, now, limit).await?
    };
    let mut rides = Vec::with_capacity(stored.len());
    for (ride, correlation) in stored {
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
