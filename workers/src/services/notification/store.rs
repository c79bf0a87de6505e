//! The notification service's tables: what it remembers per ride, and the record of every
//! notification sent, whose UNIQUE (ride, kind, recipient) makes each one happen once.
//! Runs inside the runtime's transaction; portable SQL (SQLite now, PostgreSQL later).

use ridesaga_schemas::{
    CancelReason, DriverId, MessageId, NotificationKind, Recipient, RideId, Timestamp,
};
use sqlx::{Row, SqliteConnection};

use super::domain::{Audience, Notice};
use crate::runtime::HandleError;

const KINDS: [NotificationKind; 5] = [
    NotificationKind::DriverAssigned,
    NotificationKind::RideConfirmed,
    NotificationKind::RideCancelled,
    NotificationKind::RideRejected,
    NotificationKind::Receipt,
];

const REASONS: [CancelReason; 4] = [
    CancelReason::Rider,
    CancelReason::NoDriver,
    CancelReason::PaymentDeclined,
    CancelReason::Expired,
];

/// What notification knows about the ride, including what it already sent.
pub async fn load(conn: &mut SqliteConnection, ride_id: &RideId) -> Result<Audience, HandleError> {
    let mut audience = Audience::default();
    // One round trip: the ride's row (if any) and the notifications already sent for it.
    let rows = sqlx::query(
        "SELECT 'ride' AS what, driver_id AS a, cancel_reason AS b \
         FROM notification_rides WHERE ride_id = $1 \
         UNION ALL SELECT 'sent', kind, recipient FROM notifications WHERE ride_id = $1",
    )
    .bind(ride_id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let a: Option<String> = row.try_get("a")?;
        let b: Option<String> = row.try_get("b")?;
        if row.try_get::<String, _>("what")? == "ride" {
            audience.driver_id = a.map(DriverId::parse).transpose().map_err(corrupt)?;
            audience.cancelled = b.map(|r| parse(&REASONS, &r, |x| x.as_str())).transpose()?;
            continue;
        }
        let kind = parse(&KINDS, a.as_deref().unwrap_or_default(), |k| k.as_str())?;
        let recipient = parse(
            &[Recipient::Rider, Recipient::Driver],
            b.as_deref().unwrap_or_default(),
            recipient_str,
        )?;
        audience.sent.insert((kind, recipient));
    }
    Ok(audience)
}

/// Saves what notification remembers about the ride (the sent set is saved by [`record`]).
pub async fn save(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    audience: &Audience,
    now: Timestamp,
) -> Result<(), HandleError> {
    sqlx::query(
        "INSERT INTO notification_rides (ride_id, driver_id, cancel_reason, updated_at_ms) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (ride_id) DO UPDATE SET \
         driver_id = excluded.driver_id, cancel_reason = excluded.cancel_reason, \
         updated_at_ms = excluded.updated_at_ms",
    )
    .bind(ride_id.as_str())
    .bind(audience.driver_id.as_ref().map(DriverId::as_str))
    .bind(audience.cancelled.map(CancelReason::as_str))
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a notification; `false` if this (ride, kind, recipient) was already sent, in which
/// case nothing must be delivered.
pub async fn record(
    conn: &mut SqliteConnection,
    ride_id: &RideId,
    notice: &Notice,
    channel: &str,
    message_id: &MessageId,
    now: Timestamp,
) -> Result<bool, HandleError> {
    let inserted = sqlx::query(
        "INSERT INTO notifications (ride_id, kind, recipient, recipient_id, channel, text, \
         message_id, sent_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (ride_id, kind, recipient) DO NOTHING",
    )
    .bind(ride_id.as_str())
    .bind(notice.kind.as_str())
    .bind(recipient_str(&notice.recipient))
    .bind(&notice.recipient_id)
    .bind(channel)
    .bind(&notice.text)
    .bind(message_id.as_str())
    .bind(now.unix_millis())
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(inserted == 1)
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
