//! The payment service's statements on SQLite. A batch's ride ids are expanded with
//! `json_each` and its rows to save with `jsonb_each`, whose `->>` gives each field its SQL
//! type.

use sqlx::SqliteConnection;

use super::columns;
use crate::runtime::Row;

/// [`super::load_sql`]: the payments of the rides whose ids are in the JSON array `?`.
pub const LOAD: &str = concat!(
    "SELECT ",
    columns!(),
    ", (SELECT json_group_array(o.operation) FROM payment_operations o \
     WHERE o.ride_id = p.ride_id) AS journaled, ",
    super::review_columns!(),
    " FROM payments p WHERE ride_id IN (SELECT value FROM json_each(?))"
);

/// [`super::save_many`]: inserts the payments of the JSON array `?` (objects of
/// `PaymentRow`'s fields), or updates them. `WHERE true` tells SQLite's parser that
/// `ON CONFLICT` is the upsert's, not the join's.
pub const SAVE: &str = "INSERT INTO payments (ride_id, rider_id, payment_token, \
     estimated_fare_cents, driver_assigned, ending, fare_cents, hold, hold_id, \
     hold_amount_cents, decline_code, decline_message, settlement, captured_cents, \
     capture_error, void_error, correlation_id, driver_id, fare_base_cents, \
     fare_distance_cents, fare_time_cents, fare_surge_cents, commission_cents, refunds, \
     created_at_ms, updated_at_ms) \
     SELECT value ->> 'ride_id', value ->> 'rider_id', value ->> 'payment_token', \
     value ->> 'estimated_fare_cents', value ->> 'driver_assigned', value ->> 'ending', \
     value ->> 'fare_cents', value ->> 'hold', value ->> 'hold_id', \
     value ->> 'hold_amount_cents', value ->> 'decline_code', value ->> 'decline_message', \
     value ->> 'settlement', value ->> 'captured_cents', value ->> 'capture_error', \
     value ->> 'void_error', value ->> 'correlation_id', value ->> 'driver_id', \
     value ->> 'fare_base_cents', value ->> 'fare_distance_cents', \
     value ->> 'fare_time_cents', value ->> 'fare_surge_cents', \
     value ->> 'commission_cents', value ->> 'refunds', \
     value ->> 'at_ms', value ->> 'at_ms' \
     FROM jsonb_each(?) WHERE true \
     ON CONFLICT (ride_id) DO UPDATE SET rider_id = excluded.rider_id, \
     payment_token = excluded.payment_token, \
     estimated_fare_cents = excluded.estimated_fare_cents, \
     driver_assigned = excluded.driver_assigned, ending = excluded.ending, \
     fare_cents = excluded.fare_cents, hold = excluded.hold, hold_id = excluded.hold_id, \
     hold_amount_cents = excluded.hold_amount_cents, decline_code = excluded.decline_code, \
     decline_message = excluded.decline_message, settlement = excluded.settlement, \
     captured_cents = excluded.captured_cents, capture_error = excluded.capture_error, \
     void_error = excluded.void_error, driver_id = excluded.driver_id, \
     fare_base_cents = excluded.fare_base_cents, \
     fare_distance_cents = excluded.fare_distance_cents, \
     fare_time_cents = excluded.fare_time_cents, fare_surge_cents = excluded.fare_surge_cents, \
     commission_cents = excluded.commission_cents, refunds = excluded.refunds, \
     correlation_id = COALESCE(payments.correlation_id, excluded.correlation_id), \
     updated_at_ms = excluded.updated_at_ms";

/// [`super::journal_many`]: inserts the operations of the JSON array `?` (objects of
/// `Journaled`'s fields).
pub const JOURNAL: &str = "INSERT INTO payment_operations (idempotency_key, ride_id, operation, \
     amount_cents, outcome, input_message_id, recorded_at_ms) \
     SELECT value ->> 'idempotency_key', value ->> 'ride_id', value ->> 'operation', \
     value ->> 'amount_cents', value ->> 'outcome', value ->> 'input_message_id', \
     value ->> 'recorded_at_ms' FROM jsonb_each(?)";

/// [`super::settle_journaled`]: the outcomes of the JSON array `rows` (objects of
/// `JournalOutcome`'s fields) on the operations still pending; the keys it changed.
pub async fn settle_journaled(
    conn: &mut SqliteConnection,
    rows: String,
    at_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE payment_operations SET outcome = r.value ->> 'outcome', \
         detail = r.value ->> 'detail', settled_at_ms = ?2 FROM jsonb_each(?1) AS r \
         WHERE idempotency_key = r.value ->> 'idempotency_key' AND outcome = 'pending' \
         RETURNING idempotency_key",
    )
    .bind(rows)
    .bind(at_ms)
    .fetch_all(conn)
    .await
}

/// [`super::operations`]: the operations journaled for the ride, by operation.
pub async fn operations(
    conn: &mut SqliteConnection,
    ride_id: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT operation, outcome FROM payment_operations WHERE ride_id = ? \
         ORDER BY operation",
    )
    .bind(ride_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::Sqlite).collect())
}

/// [`super::ledger_many`]: appends the ledger entries of the JSON array `?` (objects of
/// `LedgerEntry`'s fields); an entry already written stays as it is.
pub const LEDGER: &str = "INSERT INTO ledger_entries (entry_id, ride_id, driver_id, account, \
     amount_cents, operation, at_ms) \
     SELECT value ->> 'entry_id', value ->> 'ride_id', value ->> 'driver_id', \
     value ->> 'account', value ->> 'amount_cents', value ->> 'operation', value ->> 'at_ms' \
     FROM jsonb_each(?) WHERE true ON CONFLICT (entry_id) DO NOTHING";

/// [`super::ledger_of`]: the ride's ledger entries, by entry.
pub async fn ledger_of(
    conn: &mut SqliteConnection,
    ride_id: &str,
) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT entry_id, account, amount_cents, operation FROM ledger_entries \
         WHERE ride_id = ? ORDER BY entry_id",
    )
    .bind(ride_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::Sqlite).collect())
}

/// [`super::save_reviews`]: stores the reviews of the JSON array `?` (objects of
/// `ReviewRow`'s fields), replacing the ride's.
pub const SAVE_REVIEWS: &str = "INSERT INTO payment_reviews (ride_id, verdict, earnings_hold, \
     hold_cents, updated_at_ms) SELECT value ->> 'ride_id', value ->> 'verdict', \
     value ->> 'earnings_hold', value ->> 'hold_cents', value ->> 'at_ms' \
     FROM jsonb_each(?) WHERE true ON CONFLICT (ride_id) DO UPDATE SET \
     verdict = excluded.verdict, earnings_hold = excluded.earnings_hold, \
     hold_cents = excluded.hold_cents, updated_at_ms = excluded.updated_at_ms";
