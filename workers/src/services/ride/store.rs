//! The ride service's table: load and save a ride's state, and find rides whose deadline has
//! passed. Runs inside the runtime's transaction; portable SQL (SQLite now, PostgreSQL later).

use ridesaga_schemas::{CancelReason, DriverId, GeoPoint, MessageId, RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{Hold, Ride, Status};
use crate::runtime::HandleError;

/// Where a ride's saga came from: what timer outputs need for their causation and correlation.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub correlation_id: String,
    pub requested_event_id: MessageId,
}

const COLUMNS: &str = "ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, \
     payment_token, distance_km, estimated_fare_cents, match_deadline_ms, expires_at_ms, status, \
     cancel_reason, driver_id, hold, started_at_ms, fare_cents, correlation_id, \
     requested_event_id";

/// The ride, if this service has seen it.
pub async fn load(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Option<(Ride, Origin)>, HandleError> {
    let sql = format!("SELECT {COLUMNS} FROM rides WHERE ride_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ride_id.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| decode(&row).map(|(_, ride, origin)| (ride, origin)))
        .transpose()
}

/// Up to `limit` rides whose expiry is due at `now`, oldest deadline first. The partial index
/// on `expires_at_ms` keeps this a range scan over waiting rides only.
pub async fn due(
    conn: &mut SqliteConnection,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<(RideId, Ride, Origin)>, HandleError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM rides WHERE expires_at_ms IS NOT NULL AND expires_at_ms <= $1 \
         ORDER BY expires_at_ms LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(now.unix_millis())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(decode).collect()
}

/// Records a new ride.
pub async fn insert(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    ride: &Ride,
    origin: &Origin,
    now: Timestamp,
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO rides (ride_id, rider_id, pickup_lat, pickup_lng, dropoff_lat, dropoff_lng, \
         payment_token, distance_km, estimated_fare_cents, match_deadline_ms, status, hold, \
         correlation_id, requested_event_id, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(ride_id.as_str())
    .bind(ride.rider_id.as_str())
    .bind(ride.pickup.lat)
    .bind(ride.pickup.lng)
    .bind(ride.dropoff.lat)
    .bind(ride.dropoff.lng)
    .bind(&ride.payment_token)
    .bind(ride.distance_km)
    .bind(cents(ride.estimated_fare_cents)?)
    .bind(ride.match_deadline.unix_millis())
    .bind(ride.status.as_str())
    .bind(hold_str(ride.hold))
    .bind(&origin.correlation_id)
    .bind(origin.requested_event_id.as_str())
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    update(conn, ride_id, ride, now).await
}

/// Saves the changing part of a ride's state.
pub async fn update(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    ride: &Ride,
    now: Timestamp,
) -> Result<(), HandleError> {
    let expires_at = (ride.status == Status::Requested).then(|| ride.expires_at.unix_millis());
    let cancel_reason = match ride.status {
        Status::Cancelled(reason) => Some(reason.as_str()),
        _ => None,
    };
    sqlx::query(
        "UPDATE rides SET expires_at_ms = $2, status = $3, cancel_reason = $4, driver_id = $5, \
         hold = $6, started_at_ms = $7, fare_cents = $8, updated_at_ms = $9 WHERE ride_id = $1",
    )
    .bind(ride_id.as_str())
    .bind(expires_at)
    .bind(ride.status.as_str())
    .bind(cancel_reason)
    .bind(ride.driver_id.as_ref().map(DriverId::as_str))
    .bind(hold_str(ride.hold))
    .bind(ride.started_at.map(Timestamp::unix_millis))
    .bind(ride.fare_cents.map(cents).transpose()?)
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn decode(row: &SqliteRow) -> Result<(RideId, Ride, Origin), HandleError> {
    let text = |name: &str| row.try_get::<String, _>(name);
    let point = |lat: &str, lng: &str| -> Result<GeoPoint, HandleError> {
        GeoPoint::new(row.try_get(lat)?, row.try_get(lng)?).map_err(corrupt)
    };
    let match_deadline = Timestamp::from_unix_millis(row.try_get("match_deadline_ms")?);
    let expires_at: Option<i64> = row.try_get("expires_at_ms")?;
    let status = status_from(&text("status")?, row.try_get("cancel_reason")?)?;
    let ride = Ride {
        rider_id: RiderId::parse(text("rider_id")?).map_err(corrupt)?,
        pickup: point("pickup_lat", "pickup_lng")?,
        dropoff: point("dropoff_lat", "dropoff_lng")?,
        payment_token: text("payment_token")?,
        distance_km: row.try_get("distance_km")?,
        estimated_fare_cents: from_cents(row.try_get("estimated_fare_cents")?)?,
        match_deadline,
        // Only rides still waiting keep their expiry; the others never look at it.
        expires_at: expires_at.map_or(match_deadline, Timestamp::from_unix_millis),
        status,
        driver_id: row
            .try_get::<Option<String>, _>("driver_id")?
            .map(DriverId::parse)
            .transpose()
            .map_err(corrupt)?,
        hold: hold_from(&text("hold")?)?,
        started_at: row
            .try_get::<Option<i64>, _>("started_at_ms")?
            .map(Timestamp::from_unix_millis),
        fare_cents: row
            .try_get::<Option<i64>, _>("fare_cents")?
            .map(from_cents)
            .transpose()?,
    };
    let origin = Origin {
        correlation_id: text("correlation_id")?,
        requested_event_id: MessageId::parse(text("requested_event_id")?).map_err(corrupt)?,
    };
    let ride_id = RideId::parse(text("ride_id")?).map_err(corrupt)?;
    Ok((ride_id, ride, origin))
}

fn status_from(status: &str, reason: Option<String>) -> Result<Status, HandleError> {
    Ok(match (status, reason.as_deref()) {
        ("requested", _) => Status::Requested,
        ("confirmed", _) => Status::Confirmed,
        ("started", _) => Status::Started,
        ("completed", _) => Status::Completed,
        ("rejected", _) => Status::Rejected,
        ("cancelled", Some(reason)) => Status::Cancelled(reason_from(reason)?),
        _ => return Err(corrupt(format!("status {status:?} with reason {reason:?}"))),
    })
}

fn reason_from(reason: &str) -> Result<CancelReason, HandleError> {
    [
        CancelReason::Rider,
        CancelReason::NoDriver,
        CancelReason::PaymentDeclined,
        CancelReason::Expired,
    ]
    .into_iter()
    .find(|r| r.as_str() == reason)
    .ok_or_else(|| corrupt(format!("cancel reason {reason:?}")))
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
        other => Err(corrupt(format!("hold {other:?}"))),
    }
}

fn cents(amount: u64) -> Result<i64, HandleError> {
    i64::try_from(amount).map_err(|_| corrupt(format!("amount {amount} does not fit BIGINT")))
}

fn from_cents(amount: i64) -> Result<u64, HandleError> {
    u64::try_from(amount).map_err(|_| corrupt(format!("negative amount {amount}")))
}

/// A row this code cannot read: retrying will not help.
fn corrupt(what: impl std::fmt::Display) -> HandleError {
    HandleError::Permanent(format!("unreadable row in rides: {what}"))
}
