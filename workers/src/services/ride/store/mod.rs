//! The ride service's table: load and save rides' state (a batch's rides in one statement
//! each), and find rides whose deadline has passed. Runs inside the runtime's transaction, on
//! either backend: this module reads and writes the rows, `sqlite` and `postgres` hold
//! each backend's statements. A batch's ride ids travel as one JSON array, and its changed
//! rides as another, whatever their number.

mod postgres;
mod sqlite;

use std::collections::HashMap;

use ridesaga_schemas::{
    CancelReason, DriverId, FareBreakdown, GeoPoint, MessageId, RideId, RideState, RiderId,
    Timestamp,
};
use serde::Serialize;

use super::domain::{Hold, Ride, Status};
use super::route::Route;
use crate::runtime::metrics::SagaDeadlines;
use crate::runtime::{BatchWrite, Conn, HandleError, Kind, Row, db};
use crate::services::rows::{cents_from_column, cents_to_column, corrupt};
use crate::services::saga_states::json_ids;

/// The table an unreadable row is reported in.
const TABLE: &str = "rides";

/// Where a ride's saga came from: what timer outputs need for their causation and correlation.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub correlation_id: String,
    pub requested_event_id: MessageId,
}

/// The columns every read selects, as [`decode`] reads them.
macro_rules! columns {
    () => {
        "ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, \
         payment_token, distance_km, estimated_fare_cents, match_deadline_ms, expires_at_ms, \
         status, cancel_reason, driver_id, hold, started_at_ms, fare_cents, correlation_id, \
         requested_event_id, pickup_deadline_ms, rider_wait_deadline_ms, route_km, route_points, \
         route_seq, route_lat, route_lng, fare_base_cents, fare_distance_cents, fare_time_cents, \
         fare_surge_cents, route_first_lat, route_first_lng, route_first_at_ms, \
         route_last_at_ms, route_max_kmh, route_spread_km"
    };
}
use columns;

/// The statement that reads the rides whose ids are in the JSON array given (its only
/// parameter, for the runtime's preload): [`loaded`] reads the rows.
pub fn load_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => sqlite::LOAD,
        Kind::Postgres => postgres::LOAD,
    }
}

/// The ride, if this service has seen it.
pub async fn load(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
) -> Result<Option<(Ride, Origin)>, HandleError> {
    let mut loaded = load_many(conn, &[ride_id.as_str()]).await?;
    loaded.remove(ride_id).transpose()
}

/// The rides among `ride_ids` this service has seen, in one statement. A row that cannot be
/// read is its ride's error, for the input that touches it.
pub async fn load_many(conn: &mut Conn<'_>, ride_ids: &[&str]) -> Result<Loaded, HandleError> {
    let sql = load_sql(conn.kind());
    let rows = db::preload_rows(conn, sql, json_ids(ride_ids)?).await?;
    loaded(&rows)
}

/// Rides as a batch loads them: a row that could not be read is its ride's error.
pub type Loaded = HashMap<RideId, Result<(Ride, Origin), HandleError>>;

/// The rides in rows of [`load_sql`]. A row that cannot be read is its ride's error, for the
/// input that touches it.
pub fn loaded(rows: &[Row]) -> Result<Loaded, HandleError> {
    let mut rides = HashMap::with_capacity(rows.len());
    for row in rows {
        let ride_id: String = row.get("ride_id")?;
        let ride_id = RideId::parse(ride_id).map_err(|e| corrupt(TABLE, e))?;
        let decoded = decode(row).map(|(_, ride, origin)| (ride, origin));
        rides.insert(ride_id, decoded);
    }
    Ok(rides)
}

/// Up to `limit` rides whose deadline is due at `now` (expiry, pickup or rider wait), oldest
/// deadline first. The partial index on `expires_at_ms` keeps this a range scan over waiting
/// rides only.
pub async fn due(
    conn: &mut Conn<'_>,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<(RideId, Ride, Origin)>, HandleError> {
    let now = now.unix_millis();
    let rows: Vec<Row> = match conn {
        Conn::Sqlite(conn) => sqlite::due(conn, now, limit).await?,
        Conn::Postgres(conn) => postgres::due(conn, now, limit).await?,
    };
    rows.iter().map(decode).collect()
}

/// The rides waiting on a deadline at `now` (those whose saga is neither finished nor in
/// progress), those past it, and how far past it the earliest deadline is: an index-only read
/// of the partial index on `expires_at_ms`, for the metrics.
pub async fn deadlines(conn: &mut Conn<'_>, now: Timestamp) -> Result<SagaDeadlines, sqlx::Error> {
    let now = now.unix_millis();
    let (waiting, overdue, earliest) = match conn {
        Conn::Sqlite(conn) => sqlite::deadlines(conn, now).await?,
        Conn::Postgres(conn) => postgres::deadlines(conn, now).await?,
    };
    Ok(SagaDeadlines {
        waiting,
        overdue,
        most_overdue_ms: earliest.map_or(0, |deadline| (now - deadline).max(0)),
    })
}

/// A ride to save: its state, its origin and when it changed.
#[derive(Debug, Clone, Copy)]
pub struct Changed<'a> {
    pub ride_id: &'a RideId,
    pub ride: &'a Ride,
    pub origin: &'a Origin,
    pub at: Timestamp,
}

/// Saves every ride in `changed` in one statement on `kind`: a new ride is inserted whole, a
/// known one has its changing part updated (rider, places, fare estimate and origin never
/// change).
pub fn save_many(kind: Kind, changed: &[Changed<'_>]) -> Result<BatchWrite, HandleError> {
    let rows = changed.iter().map(row_of).collect::<Result<Vec<_>, _>>()?;
    let sql = match kind {
        Kind::Sqlite => sqlite::SAVE,
        Kind::Postgres => postgres::SAVE,
    };
    BatchWrite::new(sql, &rows)
}

/// One row of [`save_many`]'s JSON array.
#[derive(Debug, Serialize)]
struct RideRow<'a> {
    ride_id: &'a str,
    rider_id: &'a str,
    pickup_lat: f64,
    pickup_lng: f64,
    dropoff_lat: f64,
    dropoff_lng: f64,
    payment_token: &'a str,
    distance_km: f64,
    estimated_fare_cents: i64,
    match_deadline_ms: i64,
    expires_at_ms: Option<i64>,
    status: &'static str,
    cancel_reason: Option<&'static str>,
    driver_id: Option<&'a str>,
    hold: &'static str,
    started_at_ms: Option<i64>,
    fare_cents: Option<i64>,
    correlation_id: &'a str,
    requested_event_id: &'a str,
    pickup_deadline_ms: Option<i64>,
    rider_wait_deadline_ms: Option<i64>,
    fare_base_cents: Option<i64>,
    fare_distance_cents: Option<i64>,
    fare_time_cents: Option<i64>,
    fare_surge_cents: Option<i64>,
    at_ms: i64,
}

fn row_of<'a>(changed: &Changed<'a>) -> Result<RideRow<'a>, HandleError> {
    let cents = |amount: u64| cents_to_column(TABLE, amount);
    let Changed {
        ride_id,
        ride,
        origin,
        at,
    } = *changed;
    Ok(RideRow {
        ride_id: ride_id.as_str(),
        rider_id: ride.rider_id.as_str(),
        pickup_lat: ride.pickup.lat,
        pickup_lng: ride.pickup.lng,
        dropoff_lat: ride.dropoff.lat,
        dropoff_lng: ride.dropoff.lng,
        payment_token: &ride.payment_token,
        distance_km: ride.distance_km,
        estimated_fare_cents: cents(ride.estimated_fare_cents)?,
        match_deadline_ms: ride.match_deadline.unix_millis(),
        // Only rides the timer may still act on keep a deadline, so its index holds only them:
        // the expiry of a requested ride, the pickup or rider wait deadline of a confirmed one.
        expires_at_ms: ride.deadline().map(Timestamp::unix_millis),
        status: ride.status.as_str(),
        cancel_reason: match ride.status {
            Status::Cancelled(reason) => Some(reason.as_str()),
            _ => None,
        },
        driver_id: ride.driver_id.as_ref().map(DriverId::as_str),
        hold: hold_str(ride.hold),
        started_at_ms: ride.started_at.map(Timestamp::unix_millis),
        fare_cents: ride.fare_cents.map(cents).transpose()?,
        correlation_id: &origin.correlation_id,
        requested_event_id: origin.requested_event_id.as_str(),
        pickup_deadline_ms: ride.pickup_deadline.map(Timestamp::unix_millis),
        rider_wait_deadline_ms: ride.rider_wait_deadline.map(Timestamp::unix_millis),
        fare_base_cents: ride.fare.map(|f| cents(f.base_cents)).transpose()?,
        fare_distance_cents: ride.fare.map(|f| cents(f.distance_cents)).transpose()?,
        fare_time_cents: ride.fare.map(|f| cents(f.time_cents)).transpose()?,
        fare_surge_cents: ride.fare.map(|f| cents(f.surge_cents)).transpose()?,
        at_ms: at.unix_millis(),
    })
}

/// A row of the columns `columns!` names, read by either backend.
fn decode(row: &Row) -> Result<(RideId, Ride, Origin), HandleError> {
    let text = |name: &str| row.get::<String>(name);
    let point = |lat: &str, lng: &str| -> Result<GeoPoint, HandleError> {
        Ok(GeoPoint::new(row.get(lat)?, row.get(lng)?).map_err(|e| corrupt(TABLE, e))?)
    };
    let instant = |name: &str| -> Result<Option<Timestamp>, sqlx::Error> {
        Ok(row
            .get::<Option<i64>>(name)?
            .map(Timestamp::from_unix_millis))
    };
    let match_deadline = Timestamp::from_unix_millis(row.get("match_deadline_ms")?);
    let expires_at: Option<i64> = row.get("expires_at_ms")?;
    let status = status_from(&text("status")?, row.get("cancel_reason")?)?;
    let ride = Ride {
        rider_id: RiderId::parse(text("rider_id")?).map_err(|e| corrupt(TABLE, e))?,
        pickup: point("pickup_lat", "pickup_lng")?,
        dropoff: point("dropoff_lat", "dropoff_lng")?,
        payment_token: text("payment_token")?,
        distance_km: row.get("distance_km")?,
        estimated_fare_cents: cents_from_column(TABLE, row.get("estimated_fare_cents")?)?,
        match_deadline,
        // Only requested rides keep their expiry there; the others never look at it.
        expires_at: match (status, expires_at) {
            (Status::Requested, Some(ms)) => Timestamp::from_unix_millis(ms),
            _ => match_deadline,
        },
        status,
        driver_id: row
            .get::<Option<String>>("driver_id")?
            .map(DriverId::parse)
            .transpose()
            .map_err(|e| corrupt(TABLE, e))?,
        hold: hold_from(&text("hold")?)?,
        started_at: instant("started_at_ms")?,
        fare_cents: row
            .get::<Option<i64>>("fare_cents")?
            .map(|c| cents_from_column(TABLE, c))
            .transpose()?,
        pickup_deadline: instant("pickup_deadline_ms")?,
        rider_wait_deadline: instant("rider_wait_deadline_ms")?,
        route: route_of(row)?,
        fare: fare_of(row)?,
    };
    let origin = Origin {
        correlation_id: text("correlation_id")?,
        requested_event_id: MessageId::parse(text("requested_event_id")?)
            .map_err(|e| corrupt(TABLE, e))?,
    };
    let ride_id = RideId::parse(text("ride_id")?).map_err(|e| corrupt(TABLE, e))?;
    Ok((ride_id, ride, origin))
}

/// The fare breakdown columns of a ride's row: all set (a completed ride) or none.
fn fare_of(row: &Row) -> Result<Option<FareBreakdown>, HandleError> {
    let part = |name: &str| -> Result<Option<u64>, HandleError> {
        let cents = row.get::<Option<i64>>(name)?;
        Ok(cents.map(|c| cents_from_column(TABLE, c)).transpose()?)
    };
    let parts = (
        part("fare_base_cents")?,
        part("fare_distance_cents")?,
        part("fare_time_cents")?,
        part("fare_surge_cents")?,
        part("fare_cents")?,
    );
    match parts {
        (Some(base), Some(distance), Some(time), Some(surge), Some(total)) => {
            Ok(Some(FareBreakdown {
                base_cents: base,
                distance_cents: distance,
                time_cents: time,
                surge_cents: surge,
                total_cents: total,
            }))
        }
        _ => Ok(None),
    }
}

/// The route columns of a ride's row.
fn route_of(row: &Row) -> Result<Route, HandleError> {
    let last = match (
        row.get::<Option<f64>>("route_lat")?,
        row.get::<Option<f64>>("route_lng")?,
    ) {
        (Some(lat), Some(lng)) => Some(GeoPoint::new(lat, lng).map_err(|e| corrupt(TABLE, e))?),
        _ => None,
    };
    let first = match (
        row.get::<Option<f64>>("route_first_lat")?,
        row.get::<Option<f64>>("route_first_lng")?,
    ) {
        (Some(lat), Some(lng)) => Some(GeoPoint::new(lat, lng).map_err(|e| corrupt(TABLE, e))?),
        _ => None,
    };
    Ok(Route {
        km: row.get("route_km")?,
        points: u32::try_from(row.get::<i64>("route_points")?).map_err(|e| corrupt(TABLE, e))?,
        seq: u64::try_from(row.get::<i64>("route_seq")?).map_err(|e| corrupt(TABLE, e))?,
        last,
        first,
        first_at_ms: row.get("route_first_at_ms")?,
        last_at_ms: row.get("route_last_at_ms")?,
        max_speed_kmh: row.get("route_max_kmh")?,
        spread_km: row.get("route_spread_km")?,
    })
}

/// The ride `driver_id` drives now (started, not completed), with its route so far.
pub async fn started_ride_of(
    conn: &mut Conn<'_>,
    driver_id: &DriverId,
) -> Result<Option<StartedRide>, HandleError> {
    let row = match conn {
        Conn::Sqlite(conn) => sqlite::started_ride_of(conn, driver_id.as_str()).await?,
        Conn::Postgres(conn) => postgres::started_ride_of(conn, driver_id.as_str()).await?,
    };
    let Some(row) = row else { return Ok(None) };
    let ride_id = RideId::parse(row.get::<String>("ride_id")?).map_err(|e| corrupt(TABLE, e))?;
    Ok(Some(StartedRide {
        ride_id,
        started_at_ms: row.get::<Option<i64>>("started_at_ms")?.unwrap_or(0),
        route: route_of(&row)?,
    }))
}

/// A driver's ride in progress: when it started (the ride service's clock, Unix ms) and its
/// route so far.
#[derive(Debug, Clone)]
pub struct StartedRide {
    pub ride_id: RideId,
    pub started_at_ms: i64,
    pub route: Route,
}

/// One position recorded on a ride's route: the running total on the ride, the position in
/// `ride_route` (once per stream sequence).
#[derive(Debug, Clone, Copy)]
pub struct RoutePoint<'a> {
    pub ride_id: &'a RideId,
    pub route: &'a Route,
    pub point: GeoPoint,
    pub at_ms: i64,
}

/// Stores a position recorded on a ride's route.
pub async fn record_point(conn: &mut Conn<'_>, point: RoutePoint<'_>) -> Result<(), HandleError> {
    let seq = i64::try_from(point.route.seq).map_err(|e| corrupt(TABLE, e))?;
    match conn {
        Conn::Sqlite(conn) => sqlite::record_point(conn, &point, seq).await?,
        Conn::Postgres(conn) => postgres::record_point(conn, &point, seq).await?,
    }
    Ok(())
}

/// The positions recorded on a ride's route, in order.
pub async fn route_points(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
) -> Result<Vec<(GeoPoint, i64)>, HandleError> {
    let rows = match conn {
        Conn::Sqlite(conn) => sqlite::route_points(conn, ride_id.as_str()).await?,
        Conn::Postgres(conn) => postgres::route_points(conn, ride_id.as_str()).await?,
    };
    rows.iter()
        .map(|row| {
            let point =
                GeoPoint::new(row.get("lat")?, row.get("lng")?).map_err(|e| corrupt(TABLE, e))?;
            Ok((point, row.get("at_ms")?))
        })
        .collect()
}

fn status_from(status: &str, reason: Option<String>) -> Result<Status, HandleError> {
    Ok(match (RideState::parse(status), reason.as_deref()) {
        (Some(RideState::Requested), _) => Status::Requested,
        (Some(RideState::Confirmed), _) => Status::Confirmed,
        (Some(RideState::Started), _) => Status::Started,
        (Some(RideState::Completed), _) => Status::Completed,
        (Some(RideState::Rejected), _) => Status::Rejected,
        (Some(RideState::Cancelled), Some(reason)) => Status::Cancelled(reason_from(reason)?),
        _ => {
            return Err(corrupt(TABLE, format!("status {status:?} with reason {reason:?}")).into());
        }
    })
}

fn reason_from(reason: &str) -> Result<CancelReason, HandleError> {
    [
        CancelReason::Rider,
        CancelReason::NoDriver,
        CancelReason::PaymentDeclined,
        CancelReason::Expired,
        CancelReason::DriverNoShow,
        CancelReason::RiderNoShow,
    ]
    .into_iter()
    .find(|r| r.as_str() == reason)
    .ok_or_else(|| corrupt(TABLE, format!("cancel reason {reason:?}")).into())
}

fn hold_str(hold: Hold) -> &'static str {
    match hold {
        Hold::Pending => "pending",
        Hold::Authorized => "authorized",
        Hold::Declined => "declined",
    }
}

fn hold_from(hold: &str) -> Result<Hold, HandleError> {
    match hold {
        "pending" => Ok(Hold::Pending),
        "authorized" => Ok(Hold::Authorized),
        "declined" => Ok(Hold::Declined),
        other => Err(corrupt(TABLE, format!("hold {other:?}")).into()),
    }
}
