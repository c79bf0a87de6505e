//! The driver service's searches: available drivers near a pickup, waiting rides near a
//! driver, each as the batch in a [`BatchView`] has left the tables.

use super::*;

/// Available drivers near `pickup`, enough to contain the nearest one within the radius. Looks
/// in small circles first ([`NEAR_FIRST_KM`]): where drivers are dense, that answers with a
/// fraction of the rows the whole radius would scan; only when no driver is inside any of
/// them does the whole radius get searched.
pub(super) async fn add_available_drivers_near(
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
        limit = read_past(limit, view.stored_available_in(&bbox))
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
pub(super) async fn add_waiting_rides_near(
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
