//! The payment service's tables: each ride's payment state, and the journal of gateway calls.
//! Runs inside the runtime's transaction; portable SQL (SQLite now, PostgreSQL later).

use ridesaga_schemas::{MessageId, RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{Ending, Hold, Operation, Payment, Settlement, Trip};
use crate::runtime::HandleError;

/// The ride's payment, or the empty state if payment has not heard of the ride.
pub async fn load(conn: &mut SqliteConnection, ride_id: &RideId) -> Result<Payment, HandleError> {
    let row = sqlx::query(
        "SELECT rider_id, payment_token, estimated_fare_cents, driver_assigned, ending, \
         fare_cents, hold, hold_id, hold_amount_cents, decline_code, decline_message, \
         settlement, captured_cents, capture_error FROM payments WHERE ride_id = $1",
    )
    .bind(ride_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    row.map_or_else(|| Ok(Payment::default()), |row| decode(&row))
}

/// Saves the ride's payment.
pub async fn save(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    payment: &Payment,
    now: Timestamp,
) -> Result<(), HandleError> {
    let trip = payment.trip.as_ref();
    let (ending, fare) = match payment.ending {
        None => (None, None),
        Some(Ending::Completed { fare_cents }) => (Some("completed"), Some(cents(fare_cents)?)),
        Some(Ending::Cancelled) => (Some("cancelled"), None),
    };
    let (hold, hold_id, hold_amount, code, message) = match &payment.hold {
        Hold::None => ("none", None, None, None, None),
        Hold::Held {
            hold_id,
            amount_cents,
        } => (
            "held",
            Some(hold_id),
            Some(cents(*amount_cents)?),
            None,
            None,
        ),
        Hold::Declined { code, message } => ("declined", None, None, Some(code), Some(message)),
    };
    let (settlement, captured, error) = match &payment.settlement {
        Settlement::Open => ("open", None, None),
        Settlement::Captured { amount_cents } => ("captured", Some(cents(*amount_cents)?), None),
        Settlement::Voided => ("voided", None, None),
        Settlement::CaptureFailed { error } => ("capture_failed", None, Some(error)),
    };
    sqlx::query(
        "INSERT INTO payments (ride_id, rider_id, payment_token, estimated_fare_cents, \
         driver_assigned, ending, fare_cents, hold, hold_id, hold_amount_cents, decline_code, \
         decline_message, settlement, captured_cents, capture_error, created_at_ms, \
         updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) \
         ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
         payment_token = excluded.payment_token, \
         estimated_fare_cents = excluded.estimated_fare_cents, \
         driver_assigned = excluded.driver_assigned, ending = excluded.ending, \
         fare_cents = excluded.fare_cents, hold = excluded.hold, hold_id = excluded.hold_id, \
         hold_amount_cents = excluded.hold_amount_cents, decline_code = excluded.decline_code, \
         decline_message = excluded.decline_message, settlement = excluded.settlement, \
         captured_cents = excluded.captured_cents, capture_error = excluded.capture_error, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(ride_id.as_str())
    .bind(trip.map(|t| t.rider_id.as_str()))
    .bind(trip.map(|t| t.payment_token.as_str()))
    .bind(trip.map(|t| cents(t.estimated_fare_cents)).transpose()?)
    .bind(payment.driver_assigned)
    .bind(ending)
    .bind(fare)
    .bind(hold)
    .bind(hold_id)
    .bind(hold_amount)
    .bind(code)
    .bind(message)
    .bind(settlement)
    .bind(captured)
    .bind(error)
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Journals a gateway operation that is about to commit with the state it produced. A second
/// operation with the same idempotency key means state and journal disagree: a bug that
/// retrying cannot fix.
pub async fn journal(
    conn: &mut SqliteConnection,
    idempotency_key: &str,
    ride_id: &RideId,
    operation: &Operation,
    outcome: &str,
    input: &MessageId,
    now: Timestamp,
) -> Result<(), HandleError> {
    let inserted = sqlx::query(
        "INSERT INTO payment_operations (idempotency_key, ride_id, operation, amount_cents, \
         outcome, input_message_id, performed_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(idempotency_key)
    .bind(ride_id.as_str())
    .bind(operation.name())
    .bind(cents(operation.amount_cents())?)
    .bind(outcome)
    .bind(input.as_str())
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Err(HandleError::Permanent(format!(
            "gateway operation {idempotency_key} was already journaled"
        )));
    }
    Ok(())
}

/// Operations journaled for a ride, as `(operation, outcome)` sorted by operation.
pub async fn operations(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
) -> Result<Vec<(String, String)>, HandleError> {
    let rows = sqlx::query(
        "SELECT operation, outcome FROM payment_operations WHERE ride_id = $1 \
         ORDER BY operation",
    )
    .bind(ride_id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("operation")?, r.try_get("outcome")?)))
        .collect()
}

fn decode(row: &SqliteRow) -> Result<Payment, HandleError> {
    let text = |name: &str| row.try_get::<Option<String>, _>(name);
    let amount = |name: &str| -> Result<Option<u64>, HandleError> {
        row.try_get::<Option<i64>, _>(name)?
            .map(from_cents)
            .transpose()
    };
    let trip = match (
        text("rider_id")?,
        text("payment_token")?,
        amount("estimated_fare_cents")?,
    ) {
        (Some(rider), Some(payment_token), Some(estimated_fare_cents)) => Some(Trip {
            rider_id: RiderId::parse(rider).map_err(corrupt)?,
            payment_token,
            estimated_fare_cents,
        }),
        _ => None,
    };
    let ending = match (text("ending")?.as_deref(), amount("fare_cents")?) {
        (None, _) => None,
        (Some("completed"), Some(fare_cents)) => Some(Ending::Completed { fare_cents }),
        (Some("cancelled"), _) => Some(Ending::Cancelled),
        (other, _) => return Err(corrupt(format!("ending {other:?}"))),
    };
    let hold = match (text("hold")?.as_deref(), text("hold_id")?) {
        (Some("none"), _) => Hold::None,
        (Some("held"), Some(hold_id)) => Hold::Held {
            hold_id,
            amount_cents: amount("hold_amount_cents")?.unwrap_or_default(),
        },
        (Some("declined"), _) => Hold::Declined {
            code: text("decline_code")?.unwrap_or_default(),
            message: text("decline_message")?.unwrap_or_default(),
        },
        (other, _) => return Err(corrupt(format!("hold {other:?}"))),
    };
    let settlement = match text("settlement")?.as_deref() {
        Some("open") => Settlement::Open,
        Some("captured") => Settlement::Captured {
            amount_cents: amount("captured_cents")?.unwrap_or_default(),
        },
        Some("voided") => Settlement::Voided,
        Some("capture_failed") => Settlement::CaptureFailed {
            error: text("capture_error")?.unwrap_or_default(),
        },
        other => return Err(corrupt(format!("settlement {other:?}"))),
    };
    Ok(Payment {
        trip,
        driver_assigned: row.try_get("driver_assigned")?,
        ending,
        hold,
        settlement,
    })
}

fn cents(amount: u64) -> Result<i64, HandleError> {
    i64::try_from(amount).map_err(|_| corrupt(format!("amount {amount} does not fit BIGINT")))
}

fn from_cents(amount: i64) -> Result<u64, HandleError> {
    u64::try_from(amount).map_err(|_| corrupt(format!("negative amount {amount}")))
}

fn corrupt(what: impl std::fmt::Display) -> HandleError {
    HandleError::Permanent(format!("unreadable row in payments: {what}"))
}
