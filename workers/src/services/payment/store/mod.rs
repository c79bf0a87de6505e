//! The payment service's tables: each ride's payment state, and the journal of gateway
//! operations (recorded `pending` when due, then their outcome). Runs inside the runtime's
//! transaction, on either backend: this module reads and writes the rows, `sqlite` and
//! `postgres` hold each backend's statements. A batch's payments load in one statement and
//! save in one, its journal entries in another; the ride ids travel as one JSON array and the
//! rows to save as another, whatever their number.

mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};

use ridesaga_schemas::{
    DriverId, Earnings, EarningsHoldStatus, FareBreakdown, RefundId, RideId, RideState, RiderId,
    Timestamp,
};
use serde::Serialize;

use super::domain::{Ending, Hold, Operation, Payment, Settlement, Trip};
use super::review::{self, ReviewState, Verdict};
use crate::runtime::{BatchWrite, Conn, HandleError, Kind, Row, db};
use crate::services::rows::{cents_from_column, cents_to_column, corrupt};
use crate::services::saga_states::json_ids;

/// The table an unreadable row is reported in.
const TABLE: &str = "payments";
/// The `ending` of a ride cancelled because the rider did not show; the other endings are
/// named as the ride's [`RideState`].
const RIDER_NO_SHOW: &str = "rider_no_show";

/// The ride's payment, or the empty state if payment has not heard of the ride.
pub async fn load(conn: &mut Conn<'_>, ride_id: &RideId) -> Result<Payment, HandleError> {
    let mut loaded = load_many(conn, &[ride_id.as_str()]).await?;
    match loaded.remove(ride_id) {
        Some(stored) => stored.map(|stored| stored.payment),
        None => Ok(Payment::default()),
    }
}

/// A ride's payment as stored, with the operations journaled for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub payment: Payment,
    /// Names of the operations journaled (`hold`, `capture`, `void`), pending or settled.
    pub journaled: Vec<String>,
    /// The saga's correlation id, as the first input about the ride carried it.
    pub correlation_id: Option<String>,
    /// Fraud's verdict on the completed ride and the ledger's last step with the share.
    pub review: ReviewState,
    /// The driver's share the ledger recorded for the ride's capture.
    pub driver_share: Option<u64>,
}

/// The payments among `ride_ids` that payment has heard of, with their journaled operations,
/// in one statement. A row that cannot be read is its ride's error, for the input that
/// touches it.
pub async fn load_many(
    conn: &mut Conn<'_>,
    ride_ids: &[&str],
) -> Result<HashMap<RideId, Result<Stored, HandleError>>, HandleError> {
    let sql = load_sql(conn.kind());
    let rows = db::preload_rows(conn, sql, json_ids(ride_ids)?).await?;
    loaded(&rows)
}

/// The columns every load selects, as [`loaded`] reads them; `journaled` is the JSON array of
/// the names of the operations journaled for the ride.
macro_rules! columns {
    () => {
        "ride_id, rider_id, payment_token, estimated_fare_cents, driver_assigned, ending, \
         fare_cents, hold, hold_id, hold_amount_cents, decline_code, decline_message, \
         settlement, captured_cents, capture_error, void_error, correlation_id, driver_id, \
         fare_base_cents, fare_distance_cents, fare_time_cents, fare_surge_cents, \
         commission_cents, refunds"
    };
}
use columns;

/// The review columns every load selects after [`columns!`]: the ride's row in
/// `payment_reviews` and the driver's share its capture appended to the ledger.
macro_rules! review_columns {
    () => {
        "(SELECT r.verdict FROM payment_reviews r WHERE r.ride_id = p.ride_id) AS verdict, \
         (SELECT r.earnings_hold FROM payment_reviews r WHERE r.ride_id = p.ride_id) \
         AS earnings_hold, \
         (SELECT r.hold_cents FROM payment_reviews r WHERE r.ride_id = p.ride_id) AS hold_cents, \
         (SELECT l.amount_cents FROM ledger_entries l \
         WHERE l.entry_id = p.ride_id || '/capture/driver') AS driver_share_cents"
    };
}
use review_columns;

/// A ride's review from the columns of [`review_columns!`].
fn review_of(row: &Row) -> Result<ReviewState, HandleError> {
    let verdict = match row.get::<Option<String>>("verdict")? {
        Some(text) => {
            Some(Verdict::parse(&text).ok_or_else(|| corrupt(TABLE, format!("verdict {text:?}")))?)
        }
        None => None,
    };
    let status = match row.get::<Option<String>>("earnings_hold")?.as_deref() {
        None => None,
        Some("held") => Some(EarningsHoldStatus::Held),
        Some("released") => Some(EarningsHoldStatus::Released),
        Some("forfeited") => Some(EarningsHoldStatus::Forfeited),
        Some(other) => return Err(corrupt(TABLE, format!("earnings hold {other:?}")).into()),
    };
    let cents = row
        .get::<Option<i64>>("hold_cents")?
        .map(|c| cents_from_column(TABLE, c))
        .transpose()?;
    Ok(ReviewState {
        verdict,
        hold: status.zip(cents),
    })
}

/// One row of [`save_reviews`]' JSON array.
#[derive(Debug, Serialize)]
struct ReviewRow<'a> {
    ride_id: &'a str,
    verdict: &'static str,
    earnings_hold: Option<&'static str>,
    hold_cents: Option<i64>,
    at_ms: i64,
}

/// Stores the reviews of the rides in `changed` (those with a verdict) in one statement on
/// `kind`.
pub fn save_reviews(
    kind: Kind,
    changed: &[(&RideId, &ReviewState, Timestamp)],
) -> Result<BatchWrite, HandleError> {
    let rows = changed
        .iter()
        .filter_map(|(ride_id, state, at)| {
            let verdict = state.verdict?;
            Some(
                state
                    .hold
                    .map(|(_, amount)| cents_to_column(TABLE, amount))
                    .transpose()
                    .map(|hold_cents| ReviewRow {
                        ride_id: ride_id.as_str(),
                        verdict: verdict.as_str(),
                        earnings_hold: state.hold.map(|(status, _)| status.as_str()),
                        hold_cents,
                        at_ms: at.unix_millis(),
                    }),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sql = match kind {
        Kind::Sqlite => sqlite::SAVE_REVIEWS,
        Kind::Postgres => postgres::SAVE_REVIEWS,
    };
    BatchWrite::new(sql, &rows)
}

/// The statement that reads the payments (and the operations journaled for each) of the
/// rides whose ids are in the JSON array given (its only parameter, for the runtime's
/// preload): [`loaded`] reads the rows.
pub fn load_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => sqlite::LOAD,
        Kind::Postgres => postgres::LOAD,
    }
}

/// The payments in rows of [`load_sql`]. A row that cannot be read is its ride's error, for
/// the input that touches it.
pub fn loaded(rows: &[Row]) -> Result<HashMap<RideId, Result<Stored, HandleError>>, HandleError> {
    let mut payments = HashMap::with_capacity(rows.len());
    for row in rows {
        let ride_id: String = row.get("ride_id")?;
        let ride_id = RideId::parse(ride_id).map_err(|e| corrupt(TABLE, e))?;
        let stored = decode(row).and_then(|payment| {
            let journaled: String = row.get("journaled")?;
            let journaled = serde_json::from_str(&journaled).map_err(|e| corrupt(TABLE, e))?;
            Ok(Stored {
                payment,
                journaled,
                correlation_id: row.get("correlation_id")?,
                review: review_of(row)?,
                driver_share: row
                    .get::<Option<i64>>("driver_share_cents")?
                    .map(|c| cents_from_column(TABLE, c))
                    .transpose()?,
            })
        });
        payments.insert(ride_id, stored);
    }
    Ok(payments)
}

/// A payment to save, with the saga's correlation id, and when it changed.
#[derive(Debug, Clone, Copy)]
pub struct Changed<'a> {
    pub ride_id: &'a RideId,
    pub payment: &'a Payment,
    pub correlation_id: Option<&'a str>,
    pub at: Timestamp,
}

/// Saves every payment in `changed` in one statement on `kind`.
pub fn save_many(kind: Kind, changed: &[Changed<'_>]) -> Result<BatchWrite, HandleError> {
    let rows = changed
        .iter()
        .map(|c| payment_row(c))
        .collect::<Result<Vec<_>, _>>()?;
    let sql = match kind {
        Kind::Sqlite => sqlite::SAVE,
        Kind::Postgres => postgres::SAVE,
    };
    BatchWrite::new(sql, &rows)
}

/// One row of [`save_many`]'s JSON array.
#[derive(Debug, Serialize)]
struct PaymentRow<'a> {
    ride_id: &'a str,
    rider_id: Option<&'a str>,
    payment_token: Option<&'a str>,
    estimated_fare_cents: Option<i64>,
    driver_assigned: bool,
    ending: Option<&'static str>,
    fare_cents: Option<i64>,
    hold: &'static str,
    hold_id: Option<&'a str>,
    hold_amount_cents: Option<i64>,
    decline_code: Option<&'a str>,
    decline_message: Option<&'a str>,
    settlement: &'static str,
    captured_cents: Option<i64>,
    capture_error: Option<&'a str>,
    void_error: Option<&'a str>,
    correlation_id: Option<&'a str>,
    driver_id: Option<&'a str>,
    fare_base_cents: Option<i64>,
    fare_distance_cents: Option<i64>,
    fare_time_cents: Option<i64>,
    fare_surge_cents: Option<i64>,
    commission_cents: Option<i64>,
    /// The refunds as a JSON array; none while there is none.
    refunds: Option<String>,
    at_ms: i64,
}

fn payment_row<'a>(changed: &Changed<'a>) -> Result<PaymentRow<'a>, HandleError> {
    let cents = |amount: u64| cents_to_column(TABLE, amount);
    let &Changed {
        ride_id,
        payment,
        correlation_id,
        at,
    } = changed;
    let trip = payment.trip.as_ref();
    let (ending, fare_cents) = match payment.ending {
        None => (None, None),
        Some(Ending::Completed { fare_cents }) => (
            Some(RideState::Completed.as_str()),
            Some(cents(fare_cents)?),
        ),
        Some(Ending::Cancelled) => (Some(RideState::Cancelled.as_str()), None),
        // A value the first migration's comment does not list: the column takes any text.
        Some(Ending::RiderNoShow) => (Some(RIDER_NO_SHOW), None),
    };
    let mut row = PaymentRow {
        ride_id: ride_id.as_str(),
        rider_id: trip.map(|t| t.rider_id.as_str()),
        payment_token: trip.map(|t| t.payment_token.as_str()),
        estimated_fare_cents: trip.map(|t| cents(t.estimated_fare_cents)).transpose()?,
        driver_assigned: payment.driver_assigned,
        ending,
        fare_cents,
        hold: "none",
        hold_id: None,
        hold_amount_cents: None,
        decline_code: None,
        decline_message: None,
        settlement: "open",
        captured_cents: None,
        capture_error: None,
        void_error: None,
        correlation_id,
        driver_id: payment.driver_id.as_ref().map(DriverId::as_str),
        fare_base_cents: payment.fare.map(|f| cents(f.base_cents)).transpose()?,
        fare_distance_cents: payment.fare.map(|f| cents(f.distance_cents)).transpose()?,
        fare_time_cents: payment.fare.map(|f| cents(f.time_cents)).transpose()?,
        fare_surge_cents: payment.fare.map(|f| cents(f.surge_cents)).transpose()?,
        commission_cents: payment.commission_cents.map(cents).transpose()?,
        refunds: if payment.refunds.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&payment.refunds)
                    .map_err(|e| HandleError::Permanent(format!("refunds of {ride_id}: {e}")))?,
            )
        },
        at_ms: at.unix_millis(),
    };
    match &payment.hold {
        Hold::None => {}
        Hold::Pending => row.hold = "pending",
        Hold::Held {
            hold_id,
            amount_cents,
        } => {
            row.hold = "held";
            row.hold_id = Some(hold_id);
            row.hold_amount_cents = Some(cents(*amount_cents)?);
        }
        Hold::Declined { code, message } => {
            row.hold = "declined";
            row.decline_code = Some(code);
            row.decline_message = Some(message);
        }
    }
    match &payment.settlement {
        Settlement::Open => {}
        Settlement::Pending => row.settlement = "pending",
        Settlement::Captured { amount_cents } => {
            row.settlement = "captured";
            row.captured_cents = Some(cents(*amount_cents)?);
        }
        Settlement::Voided => row.settlement = "voided",
        Settlement::CaptureFailed { error } => {
            row.settlement = "capture_failed";
            row.capture_error = Some(error);
        }
        Settlement::VoidFailed { error } => {
            row.settlement = "void_failed";
            row.void_error = Some(error);
        }
    }
    Ok(row)
}

/// The journal's outcome of an operation made due and not settled yet.
pub const PENDING: &str = "pending";

/// A gateway operation made due, about to commit (as [`PENDING`]) with the state that made it
/// due.
#[derive(Debug, Clone, Serialize)]
pub struct Journaled {
    pub idempotency_key: String,
    pub ride_id: String,
    pub operation: &'static str,
    pub amount_cents: i64,
    pub outcome: &'static str,
    /// The input that made it due, or the key of the operation whose outcome did.
    pub input_message_id: String,
    pub recorded_at_ms: i64,
}

impl Journaled {
    /// `operation` of the ride, due since `now` because of `cause` (an input's id, or the
    /// key of the operation whose outcome made it due).
    pub fn pending(
        idempotency_key: String,
        ride_id: &RideId,
        operation: &Operation,
        cause: &str,
        now: Timestamp,
    ) -> Result<Self, HandleError> {
        Ok(Journaled {
            idempotency_key,
            ride_id: ride_id.to_string(),
            operation: operation.name(),
            amount_cents: cents_to_column(TABLE, operation.amount_cents())?,
            outcome: PENDING,
            input_message_id: cause.to_owned(),
            recorded_at_ms: now.unix_millis(),
        })
    }
}

/// Journals gateway operations in one statement on `kind`. The batch checked that none was
/// journaled before (see [`Stored::journaled`]); a key that was anyway fails the batch's
/// commit, since the primary key refuses it: state and journal would disagree, and no second
/// operation with a key may be made due.
pub fn journal_many(kind: Kind, operations: &[Journaled]) -> Result<BatchWrite, HandleError> {
    let sql = match kind {
        Kind::Sqlite => sqlite::JOURNAL,
        Kind::Postgres => postgres::JOURNAL,
    };
    BatchWrite::new(sql, operations)
}

/// How a journaled operation ended: its outcome, and what the gateway said beyond it (e.g.
/// why it failed).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct JournalOutcome<'a> {
    pub idempotency_key: &'a str,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// Records the outcomes of pending operations, settled at `now`, in one statement; returns the
/// keys that were pending. One that is not (settled before, or never journaled) is left as it
/// is.
pub async fn settle_journaled(
    conn: &mut Conn<'_>,
    outcomes: &[JournalOutcome<'_>],
    now: Timestamp,
) -> Result<HashSet<String>, HandleError> {
    if outcomes.is_empty() {
        return Ok(HashSet::new());
    }
    let rows = serde_json::to_string(outcomes)
        .map_err(|e| HandleError::Permanent(format!("journal outcomes: {e}")))?;
    let at = now.unix_millis();
    let keys = match conn {
        Conn::Sqlite(conn) => sqlite::settle_journaled(conn, rows, at).await?,
        Conn::Postgres(conn) => postgres::settle_journaled(conn, rows, at).await?,
    };
    Ok(keys.into_iter().collect())
}

/// Operations journaled for a ride, as `(operation, outcome)` sorted by operation.
pub async fn operations(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
) -> Result<Vec<(String, String)>, HandleError> {
    let rows: Vec<Row> = match conn {
        Conn::Sqlite(conn) => sqlite::operations(conn, ride_id.as_str()).await?,
        Conn::Postgres(conn) => postgres::operations(conn, ride_id.as_str()).await?,
    };
    rows.iter()
        .map(|r| Ok((r.get("operation")?, r.get("outcome")?)))
        .collect()
}

/// A row of the columns `columns!` names, read by either backend.
fn decode(row: &Row) -> Result<Payment, HandleError> {
    let text = |name: &str| row.get::<Option<String>>(name);
    let amount = |name: &str| -> Result<Option<u64>, HandleError> {
        let cents = row.get::<Option<i64>>(name)?;
        Ok(cents.map(|c| cents_from_column(TABLE, c)).transpose()?)
    };
    let trip = match (
        text("rider_id")?,
        text("payment_token")?,
        amount("estimated_fare_cents")?,
    ) {
        (Some(rider), Some(payment_token), Some(estimated_fare_cents)) => Some(Trip {
            rider_id: RiderId::parse(rider).map_err(|e| corrupt(TABLE, e))?,
            payment_token,
            estimated_fare_cents,
        }),
        _ => None,
    };
    let ending = text("ending")?;
    let ending = match (ending.as_deref(), amount("fare_cents")?) {
        (None, _) => None,
        (Some(RIDER_NO_SHOW), _) => Some(Ending::RiderNoShow),
        (Some(name), fare_cents) => match (RideState::parse(name), fare_cents) {
            (Some(RideState::Completed), Some(fare_cents)) => {
                Some(Ending::Completed { fare_cents })
            }
            (Some(RideState::Cancelled), _) => Some(Ending::Cancelled),
            _ => return Err(corrupt(TABLE, format!("ending {ending:?}")).into()),
        },
    };
    let hold = match (text("hold")?.as_deref(), text("hold_id")?) {
        (Some("none"), _) => Hold::None,
        (Some("pending"), _) => Hold::Pending,
        (Some("held"), Some(hold_id)) => Hold::Held {
            hold_id,
            amount_cents: amount("hold_amount_cents")?.unwrap_or_default(),
        },
        (Some("declined"), _) => Hold::Declined {
            code: text("decline_code")?.unwrap_or_default(),
            message: text("decline_message")?.unwrap_or_default(),
        },
        (other, _) => return Err(corrupt(TABLE, format!("hold {other:?}")).into()),
    };
    let settlement = match text("settlement")?.as_deref() {
        Some("open") => Settlement::Open,
        Some("pending") => Settlement::Pending,
        Some("captured") => Settlement::Captured {
            amount_cents: amount("captured_cents")?.unwrap_or_default(),
        },
        Some("voided") => Settlement::Voided,
        Some("capture_failed") => Settlement::CaptureFailed {
            error: text("capture_error")?.unwrap_or_default(),
        },
        Some("void_failed") => Settlement::VoidFailed {
            error: text("void_error")?.unwrap_or_default(),
        },
        other => return Err(corrupt(TABLE, format!("settlement {other:?}")).into()),
    };
    Ok(Payment {
        trip,
        driver_assigned: row.get("driver_assigned")?,
        driver_id: text("driver_id")?
            .map(DriverId::parse)
            .transpose()
            .map_err(|e| corrupt(TABLE, e))?,
        fare: match (
            amount("fare_base_cents")?,
            amount("fare_distance_cents")?,
            amount("fare_time_cents")?,
            amount("fare_surge_cents")?,
            &ending,
        ) {
            (
                Some(base),
                Some(distance),
                Some(time),
                Some(surge),
                Some(Ending::Completed { fare_cents }),
            ) => Some(FareBreakdown {
                base_cents: base,
                distance_cents: distance,
                time_cents: time,
                surge_cents: surge,
                total_cents: *fare_cents,
            }),
            _ => None,
        },
        ending,
        hold,
        settlement,
        commission_cents: amount("commission_cents")?,
        refunds: match text("refunds")? {
            Some(refunds) => serde_json::from_str(&refunds).map_err(|e| corrupt(TABLE, e))?,
            None => Vec::new(),
        },
    })
}

/// One entry of the earnings ledger: an amount for the driver's or the platform's account,
/// written once per settled operation and account.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerEntry {
    pub entry_id: String,
    pub ride_id: String,
    pub driver_id: String,
    pub account: &'static str,
    pub amount_cents: i64,
    pub operation: &'static str,
    pub at_ms: i64,
}

impl LedgerEntry {
    /// The two entries of a capture's split: the driver's share and the commission.
    pub fn of_capture(
        ride_id: &RideId,
        earnings: &Earnings,
        at: Timestamp,
    ) -> Result<[LedgerEntry; 2], HandleError> {
        let entry = |account: &'static str, amount: u64| -> Result<LedgerEntry, HandleError> {
            Ok(LedgerEntry {
                entry_id: format!("{ride_id}/capture/{account}"),
                ride_id: ride_id.to_string(),
                driver_id: earnings.driver_id.to_string(),
                account,
                amount_cents: cents_to_column(TABLE, amount)?,
                operation: "capture",
                at_ms: at.unix_millis(),
            })
        };
        Ok([
            entry("driver", earnings.driver_cents)?,
            entry("platform", earnings.commission_cents)?,
        ])
    }

    /// The two entries that reverse a refund: its parts off the driver's share and off the
    /// commission, as negative amounts.
    pub fn of_refund(
        ride_id: &RideId,
        refund_id: &RefundId,
        reversal: &Earnings,
        at: Timestamp,
    ) -> Result<[LedgerEntry; 2], HandleError> {
        let entry = |account: &'static str, amount: u64| -> Result<LedgerEntry, HandleError> {
            Ok(LedgerEntry {
                entry_id: format!("{ride_id}/refund/{refund_id}/{account}"),
                ride_id: ride_id.to_string(),
                driver_id: reversal.driver_id.to_string(),
                account,
                amount_cents: -cents_to_column(TABLE, amount)?,
                operation: "refund",
                at_ms: at.unix_millis(),
            })
        };
        Ok([
            entry("driver", reversal.driver_cents)?,
            entry("platform", reversal.commission_cents)?,
        ])
    }
}

/// The ledger entries of a ride, as `(entry_id, account, amount_cents, operation)` by entry.
pub async fn ledger_of(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
) -> Result<Vec<(String, String, i64, String)>, HandleError> {
    let rows: Vec<Row> = match conn {
        Conn::Sqlite(conn) => sqlite::ledger_of(conn, ride_id.as_str()).await?,
        Conn::Postgres(conn) => postgres::ledger_of(conn, ride_id.as_str()).await?,
    };
    rows.iter()
        .map(|r| {
            Ok((
                r.get("entry_id")?,
                r.get("account")?,
                r.get("amount_cents")?,
                r.get("operation")?,
            ))
        })
        .collect()
}

impl LedgerEntry {
    /// The two entries of a step with a flagged ride's driver's share (see [`review`]).
    pub fn of_hold_step(
        ride_id: &RideId,
        driver_id: &DriverId,
        (status, amount): (EarningsHoldStatus, u64),
        at: Timestamp,
    ) -> Result<[LedgerEntry; 2], HandleError> {
        let operation = match status {
            EarningsHoldStatus::Held => "hold",
            EarningsHoldStatus::Released => "release",
            EarningsHoldStatus::Forfeited => "forfeit",
        };
        let entry = |(account, amount_cents): (&'static str, i64)| LedgerEntry {
            entry_id: format!("{ride_id}/{operation}/{account}"),
            ride_id: ride_id.to_string(),
            driver_id: driver_id.to_string(),
            account,
            amount_cents,
            operation,
            at_ms: at.unix_millis(),
        };
        let [a, b] = review::entries(status, cents_to_column(TABLE, amount)?);
        Ok([entry(a), entry(b)])
    }
}

/// Appends `entries` to the ledger in one statement on `kind`.
pub fn ledger_many(kind: Kind, entries: &[LedgerEntry]) -> Result<BatchWrite, HandleError> {
    let sql = match kind {
        Kind::Sqlite => sqlite::LEDGER,
        Kind::Postgres => postgres::LEDGER,
    };
    BatchWrite::new(sql, entries)
}
