//! The notification service's tables: what it remembers per ride, the record of every
//! notification called for, at most one per (ride, kind, recipient, occurrence: see
//! [`Notice::occurrence`]), with its delivery's [`Status`], and how to reach each rider and
//! driver (`notification_contacts`). Runs inside the runtime's transactions, on either
//! backend: this module reads
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
use super::routes::Contact;
use crate::runtime::{BatchWrite, Conn, HandleError, Kind, Row, db};
use crate::services::rows::corrupt;

const KINDS: [NotificationKind; 7] = [
    NotificationKind::DriverAssigned,
    NotificationKind::RideConfirmed,
    NotificationKind::RideCancelled,
    NotificationKind::RideRejected,
    NotificationKind::Receipt,
    NotificationKind::PaymentFailed,
    NotificationKind::Refund,
];

/// The table an unreadable row is reported in.
const TABLE: &str = "notifications";

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
    let mut loaded = load_many(conn, &Wanted::rides(&[ride_id.as_str()])).await?;
    loaded
        .rides
        .remove(ride_id)
        .unwrap_or(Ok(Audience::default()))
}

/// How to reach the rider or driver `recipient_id`, if a registration said.
pub async fn contact(
    conn: &mut Conn<'_>,
    recipient: Recipient,
    recipient_id: &str,
) -> Result<Option<Contact>, HandleError> {
    let mut wanted = Wanted::default();
    match recipient {
        Recipient::Rider => wanted.riders.push(recipient_id),
        Recipient::Driver => wanted.drivers.push(recipient_id),
    }
    let mut loaded = load_many(conn, &wanted).await?;
    Ok(loaded
        .contacts
        .remove(&(recipient, recipient_id.to_owned())))
}

/// What a batch loads: its rides, and the riders and drivers its inputs name (the drivers the
/// rides' records name are added by the statement).
#[derive(Debug, Default, Serialize)]
pub struct Wanted<'a> {
    pub rides: Vec<&'a str>,
    pub riders: Vec<&'a str>,
    pub drivers: Vec<&'a str>,
}

impl<'a> Wanted<'a> {
    pub fn rides(ride_ids: &[&'a str]) -> Self {
        Wanted {
            rides: ride_ids.to_vec(),
            ..Wanted::default()
        }
    }

    /// The JSON object [`load_sql`] takes.
    pub fn json(&self) -> Result<String, HandleError> {
        serde_json::to_string(self)
            .map_err(|e| HandleError::Permanent(format!("what to load: {e}")))
    }
}

/// What one load read: the rides (a row that cannot be read is its ride's error, for the
/// input that touches it) and the contact details of the riders and drivers.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rides: HashMap<RideId, Result<Audience, HandleError>>,
    pub contacts: HashMap<(Recipient, String), Contact>,
}

/// What notification knows about `wanted`, in one statement: the rides' rows and the
/// notifications already sent for them, and the contact details of the riders and drivers
/// named, and of the drivers of those rides.
pub async fn load_many(conn: &mut Conn<'_>, wanted: &Wanted<'_>) -> Result<Loaded, HandleError> {
    let sql = load_sql(conn.kind());
    let rows = db::preload_rows(conn, sql, wanted.json()?).await?;
    loaded(&rows)
}

/// The statement that reads what [`Wanted`] asks for (its JSON object is the only parameter,
/// for the runtime's preload): [`loaded`] reads the rows. Each row has `what` it is, an `id`
/// and three texts `a`, `b`, `c`: a ride's row (`ride`, its id) has its driver and its cancel
/// reason, a notification's (`sent`, its ride's id, whatever its status) its kind, its
/// recipient and its occurrence, a contact's (`contact`, the recipient's id) the email address, the phone number
/// and `rider` or `driver`.
pub fn load_sql(kind: Kind) -> &'static str {
    match kind {
        Kind::Sqlite => sqlite::LOAD,
        Kind::Postgres => postgres::LOAD,
    }
}

/// What rows of [`load_sql`] tell.
pub fn loaded(rows: &[Row]) -> Result<Loaded, HandleError> {
    let mut loaded = Loaded::default();
    for row in rows {
        let id: String = row.get("id")?;
        if row.get::<String>("what")? == "contact" {
            let recipient: Option<String> = row.get("c")?;
            let recipient = parse(
                &[Recipient::Rider, Recipient::Driver],
                recipient.as_deref().unwrap_or_default(),
                recipient_str,
            )?;
            let contact = Contact {
                email: row.get("a")?,
                phone: row.get("b")?,
            };
            loaded.contacts.insert((recipient, id), contact);
            continue;
        }
        let ride_id = RideId::parse(id).map_err(|e| corrupt(TABLE, e))?;
        let audience = loaded
            .rides
            .entry(ride_id)
            .or_insert_with(|| Ok(Audience::default()));
        if let Ok(known) = audience
            && let Err(e) = add_row(known, row)
        {
            *audience = Err(e);
        }
    }
    Ok(loaded)
}

/// Adds one ride or notification row of [`load_sql`] to what is known about its ride.
fn add_row(audience: &mut Audience, row: &Row) -> Result<(), HandleError> {
    let a: Option<String> = row.get("a")?;
    let b: Option<String> = row.get("b")?;
    if row.get::<String>("what")? == "ride" {
        audience.driver_id = a
            .map(DriverId::parse)
            .transpose()
            .map_err(|e| corrupt(TABLE, e))?;
        audience.cancelled = b.map(|r| parse(&REASONS, &r, |x| x.as_str())).transpose()?;
        return Ok(());
    }
    let kind = parse(&KINDS, a.as_deref().unwrap_or_default(), |k| k.as_str())?;
    let recipient = parse(
        &[Recipient::Rider, Recipient::Driver],
        b.as_deref().unwrap_or_default(),
        recipient_str,
    )?;
    let occurrence: Option<String> = row.get("c")?;
    audience
        .sent
        .insert((kind, recipient, occurrence.unwrap_or_default()));
    Ok(())
}

/// Saves the contact details of the riders and drivers in `changed` (`(recipient, id,
/// details, when)`), in one statement on `kind`.
pub fn save_contacts(
    kind: Kind,
    changed: &[(Recipient, &str, &Contact, Timestamp)],
) -> Result<BatchWrite, HandleError> {
    let rows: Vec<ContactRow<'_>> = changed
        .iter()
        .map(|(recipient, id, contact, at)| ContactRow {
            recipient: recipient_str(recipient),
            recipient_id: id,
            email: contact.email.as_deref(),
            phone: contact.phone.as_deref(),
            updated_at_ms: at.unix_millis(),
        })
        .collect();
    let sql = match kind {
        Kind::Sqlite => sqlite::SAVE_CONTACTS,
        Kind::Postgres => postgres::SAVE_CONTACTS,
    };
    BatchWrite::new(sql, &rows)
}

/// One row of [`save_contacts`]'s JSON array.
#[derive(Debug, Serialize)]
struct ContactRow<'a> {
    recipient: &'static str,
    recipient_id: &'a str,
    email: Option<&'a str>,
    phone: Option<&'a str>,
    updated_at_ms: i64,
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
    /// [`Notice::occurrence`].
    pub occurrence: String,
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
            occurrence: notice.occurrence().to_owned(),
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
/// should one be there anyway, UNIQUE (ride, kind, recipient, occurrence) keeps the first
/// record.
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

/// Which notification: its ride, kind, recipient and occurrence ([`Notice::occurrence`]).
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub ride_id: &'a RideId,
    pub kind: NotificationKind,
    pub recipient: Recipient,
    pub occurrence: &'a str,
}

/// How a delivery settled: by which channel, the id the channel's outside party gave it,
/// and why it failed if it did.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub status: Status,
    pub channel: &'a str,
    pub provider_id: Option<&'a str>,
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
            occurrence: s.key.occurrence,
            status: s.outcome.status.as_str(),
            channel: s.outcome.channel,
            provider_id: s.outcome.provider_id,
            error: s.outcome.error,
        })
        .collect();
    let json = serde_json::to_string(&rows)
        .map_err(|e| HandleError::Permanent(format!("deliveries to settle: {e}")))?;
    let at = now.unix_millis();
    let settled: Vec<(String, String, String, String)> = match conn {
        Conn::Sqlite(conn) => sqlite::settle(conn, json, at).await?,
        Conn::Postgres(conn) => postgres::settle(conn, json, at).await?,
    };
    let settled: HashSet<(&str, &str, &str, &str)> = settled
        .iter()
        .map(|(r, k, p, o)| (r.as_str(), k.as_str(), p.as_str(), o.as_str()))
        .collect();
    Ok(rows
        .iter()
        .map(|r| settled.contains(&(r.ride_id, r.kind, r.recipient, r.occurrence)))
        .collect())
}

/// One row of [`settle`]'s JSON array.
#[derive(Debug, Serialize)]
struct SettleRow<'a> {
    ride_id: &'a str,
    kind: &'static str,
    recipient: &'static str,
    occurrence: &'a str,
    status: &'static str,
    channel: &'a str,
    provider_id: Option<&'a str>,
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

/// The channel and the outside party's id of the notification `key`.
pub async fn delivery(
    conn: &mut Conn<'_>,
    key: Key<'_>,
) -> Result<Option<(String, Option<String>)>, HandleError> {
    let key = [
        key.ride_id.as_str(),
        key.kind.as_str(),
        recipient_str(&key.recipient),
        key.occurrence,
    ];
    Ok(match conn {
        Conn::Sqlite(conn) => sqlite::delivery(conn, key).await?,
        Conn::Postgres(conn) => postgres::delivery(conn, key).await?,
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
        .ok_or_else(|| corrupt(TABLE, format!("unknown value {text:?}")).into())
}
