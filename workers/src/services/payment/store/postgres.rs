//! The payment service's statements on PostgreSQL. A batch's ride ids are expanded with
//! `jsonb_array_elements_text` and its rows to save with `jsonb_to_recordset`, which types
//! each field by the column list it is given.

use sqlx::PgConnection;

use super::columns;
use crate::runtime::Row;

/// [`super::load_sql`]: the payments of the rides whose ids are in the JSON array `$1`.
/// `journaled` is JSON text, as SQLite's `json_group_array` gives it (`[]` when there is
/// none).
pub const LOAD: &str = concat!(
    "SELECT ",
    columns!(),
    ", (SELECT COALESCE(json_agg(o.operation), '[]')::text FROM payment_operations o \
     WHERE o.ride_id = p.ride_id) AS journaled, ",
    super::review_columns!(),
    " FROM payments p WHERE ride_id IN (SELECT jsonb_array_elements_text($1::jsonb))"
);

/// [`super::save_many`]: inserts the payments of the JSON array `$1` (objects of
/// `PaymentRow`'s fields), or updates them.
pub const SAVE: &str = "INSERT INTO payments (ride_id, rider_id, payment_token, \
     estimated_fare_cents, driver_assigned, ending, fare_cents, hold, hold_id, \
     hold_amount_cents, decline_code, decline_message, settlement, captured_cents, \
     capture_error, void_error, correlation_id, driver_id, fare_base_cents, \
     fare_distance_cents, fare_time_cents, fare_surge_cents, commission_cents, refunds, \
     created_at_ms, updated_at_ms) \
     SELECT ride_id, rider_id, payment_token, estimated_fare_cents, driver_assigned, ending, \
     fare_cents, hold, hold_id, hold_amount_cents, decline_code, decline_message, settlement, \
     captured_cents, capture_error, void_error, correlation_id, driver_id, fare_base_cents, \
     fare_distance_cents, fare_time_cents, fare_surge_cents, commission_cents, refunds, \
     at_ms, at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, rider_id TEXT, \
     payment_token TEXT, estimated_fare_cents BIGINT, driver_assigned BOOLEAN, ending TEXT, \
     fare_cents BIGINT, hold TEXT, hold_id TEXT, hold_amount_cents BIGINT, \
     decline_code TEXT, decline_message TEXT, settlement TEXT, captured_cents BIGINT, \
     capture_error TEXT, void_error TEXT, correlation_id TEXT, driver_id TEXT, \
     fare_base_cents BIGINT, fare_distance_cents BIGINT, fare_time_cents BIGINT, \
     fare_surge_cents BIGINT, commission_cents BIGINT, refunds TEXT, at_ms BIGINT) \
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

/// [`super::journal_many`]: inserts the operations of the JSON array `$1` (objects of
/// `Journaled`'s fields).
pub const JOURNAL: &str = "INSERT INTO payment_operations (idempotency_key, ride_id, operation, \
     amount_cents, outcome, input_message_id, recorded_at_ms) \
     SELECT idempotency_key, ride_id, operation, amount_cents, outcome, input_message_id, \
     recorded_at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (idempotency_key TEXT, ride_id TEXT, \
     operation TEXT, amount_cents BIGINT, outcome TEXT, input_message_id TEXT, \
     recorded_at_ms BIGINT)";

/// [`super::settle_journaled`]: the outcomes of the JSON array `rows` (objects of
/// `JournalOutcome`'s fields) on the operations still pending; the keys it changed.
pub async fn settle_journaled(
    conn: &mut PgConnection,
    rows: String,
    at_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE payment_operations o SET outcome = r.outcome, detail = r.detail, \
         settled_at_ms = $2 \
         FROM jsonb_to_recordset($1::jsonb) AS r (idempotency_key TEXT, outcome TEXT, detail TEXT) \
         WHERE o.idempotency_key = r.idempotency_key AND o.outcome = 'pending' \
         RETURNING o.idempotency_key",
    )
    .bind(rows)
    .bind(at_ms)
    .fetch_all(conn)
    .await
}

/// [`super::operations`]: the operations journaled for the ride, by operation.
pub async fn operations(conn: &mut PgConnection, ride_id: &str) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT operation, outcome FROM payment_operations WHERE ride_id = $1 \
         ORDER BY operation",
    )
    .bind(ride_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::Postgres).collect())
}

/// [`super::ledger_many`]: appends the ledger entries of the JSON array `$1` (objects of
/// `LedgerEntry`'s fields); an entry already written stays as it is.
pub const LEDGER: &str = "INSERT INTO ledger_entries (entry_id, ride_id, driver_id, account, \
     amount_cents, operation, at_ms) \
     SELECT entry_id, ride_id, driver_id, account, amount_cents, operation, at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (entry_id TEXT, ride_id TEXT, driver_id TEXT, \
     account TEXT, amount_cents BIGINT, operation TEXT, at_ms BIGINT) \
     ON CONFLICT (entry_id) DO NOTHING";

/// [`super::ledger_of`]: the ride's ledger entries, by entry.
pub async fn ledger_of(conn: &mut PgConnection, ride_id: &str) -> Result<Vec<Row>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT entry_id, account, amount_cents, operation FROM ledger_entries \
         WHERE ride_id = $1 ORDER BY entry_id",
    )
    .bind(ride_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::Postgres).collect())
}

/// [`super::save_reviews`]: stores the reviews of the JSON array `$1` (objects of
/// `ReviewRow`'s fields), replacing the ride's.
pub const SAVE_REVIEWS: &str = "INSERT INTO payment_reviews (ride_id, verdict, earnings_hold, \
     hold_cents, updated_at_ms) SELECT ride_id, verdict, earnings_hold, hold_cents, at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, verdict TEXT, \
     earnings_hold TEXT, hold_cents BIGINT, at_ms BIGINT) \
     ON CONFLICT (ride_id) DO UPDATE SET verdict = excluded.verdict, \
     earnings_hold = excluded.earnings_hold, hold_cents = excluded.hold_cents, \
     updated_at_ms = excluded.updated_at_ms";
