//! The notification service's tables: what it remembers per ride, and the record of every
//! notification called for, at most one per (ride, kind, recipient), with its delivery's
//! [`Status`]. Runs inside the runtime's transactions, on either backend: this module reads
//! and writes the rows, `sqlite` and `postgres` hold each backend's statements. A batch loads
//! its rides in one statement and saves them, and its records, with one statement each; ride
//! ids travel as one JSON array and rows to save as another, whatever their number. A
//! delivery's outcome updates its record with one statement of its own.

mod postgres;
mod sqlite;

use std::collections::{HashMap, HashSet};

use ridesaga_schemas::{
    CancelReason, DriverId, MessageId, NotificationKind, Recipient, RideId, Timestamp,
};
use serde::Serialize;

use super::domain::{Audience, Notice};
use crate::runtime::{BatchWrite, Conn, HandleError, Kind, Row, db};
use crate::services::rides::json_ids;

const KINDS: [NotificationKind; 7] = [
    NotificationKind::DriverAssigned,
    NotificationKind::RideConfirmed,
    NotificationKind::RideCancelled,
    NotificationKind::RideRejected,
    NotificationKind::Receipt,
    NotificationKind::PaymentFailed,
    NotificationKind::Refund,
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
pub async fn load(conn: &mut Conn<'_>, ride_id: &RideId) -> Result<Audience, HandleError> {
    let mut loaded = load_many(conn, &[ride_id.as_str()]).await?;
    loaded.remove(ride_id).unwrap_or(Ok(Audience::default()))
}

/// What notification knows about each ride among `ride_ids` it has heard of, in one
/// statement: the rides' rows and the notifications already sent for them. A row that cannot
/// be read is its ride's error, for the input that touches it.
pub async fn load_many(
    conn: &mut Conn<'_>,
    ride_ids: &[&str],
) -> Result<HashMap<RideId, Result<Audience, HandleError>>, HandleError> {
    let sql = load_sql(conn.kind());
    let rows = db::preload_rows(conn, sql, json_ids(ride_ids)?).await?;
    loaded(&rows)
}

/// The statement that reads what is known of the rides whose ids are in the JSON array given
/// (its only parameter, for the runtime's preload), and the notifications sent for them:
/// [`loaded`] reads the rows. Each row has the ride's id, `what` it is, and two texts `a` and
/// `b`: a ride's row (`ride`) has its driver and its cancel reason, a notification's
/// (`sent`, whatever its status) its kind and its recipient.
pub fn load_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => sqlite::LOAD,
        Kind::Postgres => postgres::LOAD,
    }
}

/// What rows of [`load_sql`] tell about their rides. A row that cannot be read is its ride's
/// error, for the input that touches it.
pub fn loaded(rows: &[Row]) -> Result<HashMap<RideId, Result<Audience, HandleError>>, HandleError> {
    let mut audiences: HashMap<RideId, Result<Audience, HandleError>> = HashMap::new();
    for row in rows {
        let ride_id = RideId::parse(row.get::<String>("ride_id")?).map_err(corrupt)?;
        let audience = audiences
            .entry(ride_id)
            .or_insert_with(|| Ok(Audience::default()));
        if let Ok(known) = audience
            && let Err(e) = add_row(known, row)
        {
            *audience = Err(e);
        }
    }
    Ok(audiences)
}

/// Adds one row of [`load_sql`] to what is known about its ride.
fn add_row(audience: &mut Audience, row: &Row) -> Result<(), HandleError> {
    let a: Option<String> = row.get("a")?;
    let b: Option<String> = row.get("b")?;
    if row.get::<String>("what")? == "ride" {
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
/// in one statement on `kind` (the sent notifications are saved by [`record_many`]).
pub fn save_many(
    kind: Kind,
    changed: &[(&RideId, &Audience, Timestamp)],
) -> Result<BatchWrite, HandleError> {
    let rows: Vec<RideRow<'_>> = changed
        .iter()
        .map(|(ride_id, audience, at)| RideRow {
            ride_id: ride_id.as_str(),
            driver_id: audience.driver_id.as_ref().map(DriverId::as_str),
            cancel_reason: audience.cancelled.map(CancelReason::as_str),
            updated_at_ms: at.unix_millis(),
        })
        .collect();
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
    driver_id: Option<&'a str>,
    cancel_reason: Option<&'static str>,
    updated_at_ms: i64,
}

/// A notification called for, as recorded when it becomes due.
#[derive(Debug, Clone, Serialize)]
pub struct Due {
    pub ride_id: String,
    pub kind: &'static str,
    pub recipient: &'static str,
    pub recipient_id: String,
    pub channel: &'static str,
    pub text: String,
    /// The id of the `evt.notification.sent` that will announce it (and of its log line).
    pub message_id: String,
    pub due_at_ms: i64,
}

impl Due {
    pub fn new(
        ride_id: &RideId,
        notice: &Notice,
        channel: &'static str,
        message_id: &MessageId,
        now: Timestamp,
    ) -> Self {
        Due {
            ride_id: ride_id.to_string(),
            kind: notice.kind.as_str(),
            recipient: recipient_str(&notice.recipient),
            recipient_id: notice.recipient_id.clone(),
            channel,
            text: notice.text.clone(),
            message_id: message_id.to_string(),
            due_at_ms: now.unix_millis(),
        }
    }
}

/// Records the notifications that became due, in one statement on `kind`. The batch decided
/// they were new from what it loaded inside its transaction, which no other writer shares;
/// should one be there anyway, UNIQUE (ride, kind, recipient) keeps the first record.
pub fn record_many(kind: Kind, due: &[Due]) -> Result<BatchWrite, HandleError> {
    let sql = match kind {
        Kind::Sqlite => sqlite::RECORD,
        Kind::Postgres => postgres::RECORD,
    };
    BatchWrite::new(sql, due)
}

/// Where a notification's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Called for; its delivery has not settled.
    Due,
    /// The channel took it, and `evt.notification.sent` announced it.
    Delivered,
    /// The channel refused it, or could not be reached before the delivery's deadline.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Due => "due",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// Which notification: its ride, kind and recipient.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub ride_id: &'a RideId,
    pub kind: NotificationKind,
    pub recipient: Recipient,
}

/// How a delivery settled: by which channel, and why it failed if it did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub status: Status,
    pub channel: &'a str,
    pub error: Option<&'a str>,
}

/// A delivery to settle: which notification, and how it ended.
#[derive(Debug, Clone, Copy)]
pub struct Settling<'a> {
    pub key: Key<'a>,
    pub outcome: Outcome<'a>,
}

/// Settles the deliveries still due among `settling`, in one statement, and says of each
/// whether it was due: a delivery settled before (by another replica, or before a crash)
/// stays as it was.
pub async fn settle(
    conn: &mut Conn<'_>,
    settling: &[Settling<'_>],
    now: Timestamp,
) -> Result<Vec<bool>, HandleError> {
    if settling.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<SettleRow<'_>> = settling
        .iter()
        .map(|s| SettleRow {
            ride_id: s.key.ride_id.as_str(),
            kind: s.key.kind.as_str(),
            recipient: recipient_str(&s.key.recipient),
            status: s.outcome.status.as_str(),
            channel: s.outcome.channel,
            error: s.outcome.error,
        })
        .collect();
    let json = serde_json::to_string(&rows)
        .map_err(|e| HandleError::Permanent(format!("deliveries to settle: {e}")))?;
    let at = now.unix_millis();
    let settled: Vec<(String, String, String)> = match conn {
        Conn::Sqlite(conn) => sqlite::settle(conn, json, at).await?,
        Conn::Postgres(conn) => postgres::settle(conn, json, at).await?,
    };
    let settled: HashSet<(&str, &str, &str)> = settled
        .iter()
        .map(|(r, k, p)| (r.as_str(), k.as_str(), p.as_str()))
        .collect();
    Ok(rows
        .iter()
        .map(|r| settled.contains(&(r.ride_id, r.kind, r.recipient)))
        .collect())
}

/// One row of [`settle`]'s JSON array.
#[derive(Debug, Serialize)]
struct SettleRow<'a> {
    ride_id: &'a str,
    kind: &'static str,
    recipient: &'static str,
    status: &'static str,
    channel: &'a str,
    error: Option<&'a str>,
}

/// How many of the ride's notifications have `status`.
pub async fn count_with_status(
    conn: &mut Conn<'_>,
    ride_id: &RideId,
    status: Status,
) -> Result<i64, HandleError> {
    let (ride_id, status) = (ride_id.as_str(), status.as_str());
    Ok(match conn {
        Conn::Sqlite(conn) => sqlite::count_with_status(conn, ride_id, status).await?,
        Conn::Postgres(conn) => postgres::count_with_status(conn, ride_id, status).await?,
    })
}

/// How many notifications were recorded for the ride, whatever their status.
pub async fn count(conn: &mut Conn<'_>, ride_id: &RideId) -> Result<i64, HandleError> {
    let ride_id = ride_id.as_str();
    Ok(match conn {
        Conn::Sqlite(conn) => sqlite::count(conn, ride_id).await?,
        Conn::Postgres(conn) => postgres::count(conn, ride_id).await?,
    })
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
