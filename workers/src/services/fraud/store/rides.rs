//! The `fraud_rides` table: every completed ride fraud judged (the pairing rule counts them),
//! with its reasons when flagged and the operator's review once decided. Read and written
//! directly inside the batch's transaction, in input order, so an input sees what the inputs
//! before it wrote. The statements are the same text on both backends (`$n` parameters).

use ridesaga_schemas::{DriverId, ReviewDecision, RideId, RiderId};

use super::super::rides::Judged;
use super::corrupt;
use crate::runtime::{Conn, HandleError, Row};

/// Runs `$query` (a `sqlx::query(..)` with its binds) with `$method` on whichever backend
/// `$conn` is, giving rows as [`Row`]s where it reads any.
macro_rules! on_both {
    ($conn:expr, $query:expr, execute) => {
        match $conn {
            Conn::Sqlite(c) => $query.execute(&mut **c).await?.rows_affected(),
            Conn::Postgres(c) => $query.execute(&mut **c).await?.rows_affected(),
        }
    };
    ($conn:expr, $query:expr, fetch_optional) => {
        match $conn {
            Conn::Sqlite(c) => $query.fetch_optional(&mut **c).await?.map(Row::Sqlite),
            Conn::Postgres(c) => $query.fetch_optional(&mut **c).await?.map(Row::Postgres),
        }
    };
}

/// A completed ride as the table keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct FraudRide {
    pub driver_id: DriverId,
    pub rider_id: RiderId,
    pub completed_at_ms: i64,
    pub judged: Judged,
}

/// The ride, if fraud judged its completion.
pub async fn ride(conn: &mut Conn<'_>, ride_id: &RideId) -> Result<Option<FraudRide>, HandleError> {
    let sql = "SELECT driver_id, rider_id, completed_at_ms, reasons, decision \
               FROM fraud_rides WHERE ride_id = $1";
    let row = on_both!(
        conn,
        sqlx::query(sql).bind(ride_id.as_str()),
        fetch_optional
    );
    let Some(row) = row else { return Ok(None) };
    let bad = |e: &dyn ToString| HandleError::from(corrupt("fraud_rides", e.to_string()));
    let reasons: Option<String> = row.get("reasons")?;
    let reasons = match reasons {
        Some(text) => serde_json::from_str(&text).map_err(|e| bad(&e))?,
        None => Vec::new(),
    };
    let decision = match row.get::<Option<String>>("decision")?.as_deref() {
        None => None,
        Some("approve") => Some(ReviewDecision::Approve),
        Some("reject") => Some(ReviewDecision::Reject),
        Some(other) => return Err(bad(&format!("decision {other:?}"))),
    };
    Ok(Some(FraudRide {
        driver_id: DriverId::parse(row.get::<String>("driver_id")?).map_err(|e| bad(&e))?,
        rider_id: RiderId::parse(row.get::<String>("rider_id")?).map_err(|e| bad(&e))?,
        completed_at_ms: row.get("completed_at_ms")?,
        judged: Judged { reasons, decision },
    }))
}

/// Rides of `driver_id` with `rider_id` completed after `since_ms` and at or before
/// `until_ms`, other than `except`.
pub async fn pair_rides(
    conn: &mut Conn<'_>,
    driver_id: &DriverId,
    rider_id: &RiderId,
    (since_ms, until_ms): (i64, i64),
    except: &RideId,
) -> Result<u32, HandleError> {
    let sql = "SELECT COUNT(*) AS n FROM fraud_rides WHERE driver_id = $1 AND rider_id = $2 \
               AND completed_at_ms > $3 AND completed_at_ms <= $4 AND ride_id <> $5";
    let row = on_both!(
        conn,
        sqlx::query(sql)
            .bind(driver_id.as_str())
            .bind(rider_id.as_str())
            .bind(since_ms)
            .bind(until_ms)
            .bind(except.as_str()),
        fetch_optional
    );
    let n: i64 = match row {
        Some(row) => row.get("n")?,
        None => 0,
    };
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// Keeps a judged completion; returns whether it is new (a ride is judged once).
pub async fn insert(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
    ride: &FraudRide,
) -> Result<bool, HandleError> {
    let reasons = if ride.judged.reasons.is_empty() {
        None
    } else {
        Some(serde_json::to_string(&ride.judged.reasons).map_err(|e| corrupt("fraud_rides", e))?)
    };
    let sql = "INSERT INTO fraud_rides (ride_id, driver_id, rider_id, completed_at_ms, reasons) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (ride_id) DO NOTHING";
    Ok(on_both!(
        conn,
        sqlx::query(sql)
            .bind(ride_id.as_str())
            .bind(ride.driver_id.as_str())
            .bind(ride.rider_id.as_str())
            .bind(ride.completed_at_ms)
            .bind(reasons),
        execute
    ) == 1)
}

/// Records the review of a flagged ride not decided before; returns whether it did.
pub async fn decide(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
    decision: ReviewDecision,
    note: Option<&str>,
    at_ms: i64,
) -> Result<bool, HandleError> {
    let sql = "UPDATE fraud_rides SET decision = $1, note = $2, decided_at_ms = $3 \
               WHERE ride_id = $4 AND reasons IS NOT NULL AND decision IS NULL";
    Ok(on_both!(
        conn,
        sqlx::query(sql)
            .bind(decision.as_str())
            .bind(note)
            .bind(at_ms)
            .bind(ride_id.as_str()),
        execute
    ) == 1)
}

/// Deletes up to `limit` rides completed before `before_ms`, except flagged rides still
/// waiting for their review.
pub async fn prune(conn: &mut Conn<'_>, before_ms: i64, limit: i64) -> Result<u64, HandleError> {
    let sql = "DELETE FROM fraud_rides WHERE ride_id IN (SELECT ride_id FROM fraud_rides \
               WHERE completed_at_ms < $1 AND (reasons IS NULL OR decision IS NOT NULL) \
               ORDER BY completed_at_ms LIMIT $2)";
    Ok(on_both!(
        conn,
        sqlx::query(sql).bind(before_ms).bind(limit),
        execute
    ))
}
