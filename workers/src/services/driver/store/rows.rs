//! Reading the driver service's rows back into the domain's types, column by column in the
//! order of [`driver_columns!`] and [`ride_columns!`], from a row of either backend.

use sqlx::{ColumnIndex, Database, Decode, Type};

use super::*;

/// A type the store reads from a column of `DB`.
pub(super) trait Decodes<DB: Database>: Type<DB> + for<'r> Decode<'r, DB> {}

impl<DB: Database, T: Type<DB> + for<'r> Decode<'r, DB>> Decodes<DB> for T {}

/// The driver in the [`driver_columns!`] of `row` from column `first` on.
pub(super) fn driver_at<R>(row: &R, first: usize) -> Result<Driver, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    String: Decodes<R::Database>,
    f64: Decodes<R::Database>,
    i64: Decodes<R::Database>,
    bool: Decodes<R::Database>,
{
    let bad = |e: &dyn ToString| StoreError::from(corrupt("drivers", e.to_string()));
    let location =
        GeoPoint::new(row.try_get(first + 2)?, row.try_get(first + 3)?).map_err(|e| bad(&e))?;
    let current_ride: Option<String> = row.try_get(first + 5)?;
    let schedule: Option<String> = row.try_get(first + 9)?;
    Ok(Driver {
        id: DriverId::parse(row.try_get::<String, _>(first)?).map_err(|e| bad(&e))?,
        name: row.try_get(first + 1)?,
        location,
        online: row.try_get(first + 4)?,
        current_ride: current_ride
            .map(RideId::parse)
            .transpose()
            .map_err(|e| bad(&e))?,
        name_at: row.try_get(first + 6)?,
        online_at: row.try_get(first + 7)?,
        location_at: row.try_get(first + 8)?,
        schedule: schedule
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| bad(&e))?,
        schedule_at: row.try_get(first + 10)?,
    })
}

/// The ride and its correlation id in the [`ride_columns!`] of `row` from column `first` on.
pub(super) fn ride_at<R>(row: &R, first: usize) -> Result<StoredRide, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    String: Decodes<R::Database>,
    f64: Decodes<R::Database>,
    i64: Decodes<R::Database>,
    bool: Decodes<R::Database>,
{
    let bad = |e: &dyn ToString| StoreError::from(corrupt("driver_rides", e.to_string()));
    let id = RideId::parse(row.try_get::<String, _>(first)?).map_err(|e| bad(&e))?;
    let rider: Option<String> = row.try_get(first + 1)?;
    let lat: Option<f64> = row.try_get(first + 2)?;
    let lng: Option<f64> = row.try_get(first + 3)?;
    let deadline: Option<i64> = row.try_get(first + 4)?;
    // Rides stored before trips were kept count as no trip.
    let trip_km: Option<f64> = row.try_get(first + 10)?;
    let request = match (rider, lat, lng, deadline) {
        (Some(rider), Some(lat), Some(lng), Some(deadline)) => Some(RideRequest {
            rider_id: RiderId::parse(rider).map_err(|e| bad(&e))?,
            pickup: GeoPoint::new(lat, lng).map_err(|e| bad(&e))?,
            match_deadline: Timestamp::from_unix_millis(deadline),
            trip_km: trip_km.unwrap_or(0.0),
        }),
        _ => None,
    };
    let driver: Option<String> = row.try_get(first + 7)?;
    let driver = driver
        .map(DriverId::parse)
        .transpose()
        .map_err(|e| bad(&e))?;
    let reason: Option<String> = row.try_get(first + 8)?;
    let stage: String = row.try_get(first + 6)?;
    let stage = match (stage.as_str(), driver, reason) {
        ("waiting", _, _) => Stage::Waiting,
        ("assigned", Some(driver_id), _) => Stage::Assigned { driver_id },
        ("released", Some(driver_id), reason) => Stage::Released {
            driver_id,
            reason: reason.unwrap_or_default(),
        },
        ("closed", _, reason) => Stage::Closed {
            reason: reason.unwrap_or_default(),
        },
        ("unavailable", _, _) => Stage::Unavailable,
        (other, _, _) => return Err(bad(&format!("ride {id} has stage {other:?}"))),
    };
    let ride = Ride {
        id,
        request,
        cleared: row.try_get(first + 5)?,
        stage,
    };
    Ok((ride, row.try_get(first + 9)?))
}

/// A ride in the [`ride_columns!`] of `row` from column `first` on, then its driver in the
/// [`driver_columns!`] after them (null when the ride has no driver): a row of
/// [`found_ride_sql!`].
pub(super) fn found_ride<R>(row: &R, first: usize) -> Result<FoundRide, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    String: Decodes<R::Database>,
    f64: Decodes<R::Database>,
    i64: Decodes<R::Database>,
    bool: Decodes<R::Database>,
{
    let (ride, correlation) = ride_at(row, first)?;
    let driver_first = first + RIDE_COLUMNS;
    let has_driver = row.try_get::<Option<String>, _>(driver_first)?.is_some();
    let driver = if has_driver {
        Some(driver_at(row, driver_first)?)
    } else {
        None
    };
    Ok(FoundRide {
        ride,
        correlation,
        driver,
    })
}
