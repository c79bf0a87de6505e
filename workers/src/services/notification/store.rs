//! The notification service's tables: what it remembers per ride, and the record of every
//! notification sent, at most one per (ride, kind, recipient). Runs inside the runtime's
//! transaction: a batch loads its rides in one statement and saves them, and its records, with
//! one statement each. Ride ids travel as one JSON array expanded by `json_each` and rows
//! to save as one expanded by `jsonb_each`, both SQLite's; the rest is portable SQL.

use ridesaga_schemas::{
    CancelReason, DriverId, MessageId, NotificationKind, Recipient, RideId, Timestamp,
};
use std::collections::HashMap;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{Audience, Notice};
use crate::runtime::{BatchWrite, HandleError};
use crate::services::rides::json_ids;

const KINDS: [NotificationKind; 6] = [
    NotificationKind::DriverAssigned,
    NotificationKind::RideConfirmed,
    NotificationKind::RideCancelled,
    NotificationKind::RideRejected,
    NotificationKind::Receipt,
    NotificationKind::PaymentFailed,
];

const REASONS: [CancelReason; 6] = [
    CancelReason::Rider,
    CancelReason::NoDriver,
    CancelReason::PaymentDeclined,
    CancelReason::Expired,
    CancelReason::DriverNoShow,
    CancelReason::RiderNoShow,
];

/// What notification knows about the ride, including what it already sent.
pub async fn load(conn: &mut SqliteConnection, ride_id: &RideId) -> Result<Audience, HandleError> {
    let mut loaded = load_many(conn, &[ride_id.as_str()]).await?;
    loaded.remove(ride_id).unwrap_or(Ok(Audience::default()))
}

/// What notification knows about each ride among `ride_ids` it has heard of, in one
/// statement: the rides' rows and the notifications already sent for them. A row that cannot
/// be read is its ride's error, for the input that touches it.
pub async fn load_many(
    conn: &mut SqliteConnection,
    ride_ids: &[&str],
) -> Result<HashMap<RideId, Result<Audience, HandleError>>, HandleError> {
    let rows = sqlx::query(LOAD_SQL)
        .bind(json_ids(ride_ids)?)
        .fetch_all(&mut *conn)
        .await?;
    loaded(rows)
}

/// Reads what is known of the rides whose ids are in the JSON array given (positional, for the
/// runtime's preload), and the notifications sent for them: [`loaded`] reads the rows.
pub const LOAD_SQL: &str = "WITH ids AS (SELECT value AS id FROM json_each(?)) \
     SELECT 'ride' AS what, ride_id, driver_id AS a, cancel_reason AS b \
     FROM notification_rides WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'sent', ride_id, kind, recipient FROM notifications \
     WHERE ride_id IN (SELECT id FROM ids)";

/// What rows of [`LOAD_SQL`] tell about their rides. A row that cannot be read is its ride's
/// error, for the input that touches it.
pub fn loaded(
    rows: Vec<SqliteRow>,
) -> Result<HashMap<RideId, Result<Audience, HandleError>>, HandleError> {
    let mut audiences: HashMap<RideId, Result<Audience, HandleError>> = HashMap::new();
    for row in rows {
        let ride_id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(corrupt)?;
        let audience = audiences
            .entry(ride_id)
            .or_insert_with(|| Ok(Audience::default()));
        if let Ok(known) = audience
            && let Err(e) = add_row(known, &row)
        {
            *audience = Err(e);
        }
    }
    Ok(audiences)
}

/// Adds one row of [`load_many`] to what is known about its ride.
fn add_row(audience: &mut Audience, row: &SqliteRow) -> Result<(), HandleError> {
    let a: Option<String> = row.try_get("a")?;
    let b: Option<String> = row.try_get("b")?;
    if row.try_get::<String, _>("what")? == "ride" {
        audience.driver_id = a.map(DriverId::parse).transpose().map_err(corrupt)?;
        audience.cancelled = b.map(|r| parse(&REASONS, &r, |x| x.as_str())).transpose()?;
        return Ok(());
    }
    let kind = parse(&KINDS, a.as_deref().unwrap_or_default(), |k| k.as_str())?;
    let recipient = parse(
        &[Recipient::Rider, Recipient::Driver],
        b.as_deref().unwrap_or_default(),
        recipient_str,
    )?;
    audience.sent.insert((kind, recipient));
    Ok(())
}

/// Saves what notification remembers about each ride in `changed` (`(ride, audience, when)`),
/// in one statement (the sent notifications are saved by [`record_many`]).
pub fn save_many(changed: &[(&RideId, &Audience, Timestamp)]) -> Result<BatchWrite, HandleError> {
    let rows: Vec<(&str, Option<&str>, Option<&str>, i64)> = changed
        .iter()
        .map(|(ride_id, audience, at)| {
            (
                ride_id.as_str(),
                audience.driver_id.as_ref().map(DriverId::as_str),
                audience.cancelled.map(CancelReason::as_str),
                at.unix_millis(),
            )
        })
        .collect();
    BatchWrite::new(
        "INSERT INTO notification_rides (ride_id, driver_id, cancel_reason, updated_at_ms) \
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?) \
         WHERE true ON CONFLICT (ride_id) DO UPDATE SET driver_id = excluded.driver_id, \
         cancel_reason = excluded.cancel_reason, updated_at_ms = excluded.updated_at_ms",
        &rows,
    )
}

/// A notification sent, as recorded.
#[derive(Debug, Clone, Serialize)]
pub struct Sent {
    pub ride_id: String,
    pub kind: &'static str,
    pub recipient: &'static str,
    pub recipient_id: String,
    pub channel: &'static str,
    pub text: String,
    /// The id of the `evt.notification.sent` announcing it.
    pub message_id: String,
    pub sent_at_ms: i64,
}

impl Sent {
    pub fn new(
        ride_id: &RideId,
        notice: &Notice,
        channel: &'static str,
        message_id: &MessageId,
        now: Timestamp,
    ) -> Self {
        Sent {
            ride_id: ride_id.to_string(),
            kind: notice.kind.as_str(),
            recipient: recipient_str(&notice.recipient),
            recipient_id: notice.recipient_id.clone(),
            channel,
            text: notice.text.clone(),
            message_id: message_id.to_string(),
            sent_at_ms: now.unix_millis(),
        }
    }
}

/// Records the notifications sent, in one statement. The batch decided they were new from
/// what it loaded inside its transaction, which no other writer shares; should one be there
/// anyway, UNIQUE (ride, kind, recipient) keeps the first record.
pub fn record_many(sent: &[Sent]) -> Result<BatchWrite, HandleError> {
    BatchWrite::new(
        "INSERT INTO notifications (ride_id, kind, recipient, recipient_id, channel, text, \
         message_id, sent_at_ms) \
         SELECT value ->> 'ride_id', value ->> 'kind', value ->> 'recipient', \
         value ->> 'recipient_id', value ->> 'channel', value ->> 'text', \
         value ->> 'message_id', value ->> 'sent_at_ms' FROM jsonb_each(?) \
         WHERE true ON CONFLICT (ride_id, kind, recipient) DO NOTHING",
        sent,
    )
}

/// How many notifications were recorded for the ride.
pub async fn count(conn: &mut SqliteConnection, ride_id: &RideId) -> Result<i64, HandleError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM notifications WHERE ride_id = $1")
        .bind(ride_id.as_str())
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get("n")?)
}

/// `rider` or `driver`.
pub fn recipient_str(recipient: &Recipient) -> &'static str {
    match recipient {
        Recipient::Rider => "rider",
        Recipient::Driver => "driver",
    }
}

fn parse<T: Copy>(
    all: &[T],
    text: &str,
    name: impl Fn(&T) -> &'static str,
) -> Result<T, HandleError> {
    all.iter()
        .find(|x| name(x) == text)
        .copied()
        .ok_or_else(|| corrupt(format!("unknown value {text:?}")))
}

fn corrupt(what: impl std::fmt::Display) -> HandleError {
    HandleError::Permanent(format!("unreadable row in notifications: {what}"))
}
