//! The notification service's statements on SQLite. A batch's ride ids are expanded with
//! `json_each` and its rows to save with `jsonb_each`, whose `->>` gives each field its SQL
//! type.

use sqlx::SqliteConnection;

/// [`super::load_sql`]: the rides whose ids are in the JSON object's `rides`, their
/// notifications, and the contact details of its `riders` and `drivers` and of the rides'
/// drivers. Its one `?` is the object: the runtime runs it after its own statements, whose
/// `?`s come first.
pub const LOAD: &str = "WITH p AS (SELECT ? AS j), \
     ids AS (SELECT value AS id FROM p, json_each(p.j, '$.rides')), \
     wanted AS (SELECT 'rider' AS recipient, value AS id FROM p, json_each(p.j, '$.riders') \
     UNION SELECT 'driver', value FROM p, json_each(p.j, '$.drivers') \
     UNION SELECT 'driver', driver_id FROM notification_rides \
     WHERE ride_id IN (SELECT id FROM ids) AND driver_id IS NOT NULL) \
     SELECT 'ride' AS what, ride_id AS id, driver_id AS a, cancel_reason AS b, NULL AS c \
     FROM notification_rides WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'sent', ride_id, kind, recipient, occurrence FROM notifications \
     WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'contact', recipient_id, email, phone, recipient \
     FROM notification_contacts WHERE (recipient, recipient_id) IN (SELECT recipient, id FROM wanted)";

/// [`super::save_contacts`]: inserts or replaces the contact details of the JSON array `?`
/// (objects of `ContactRow`'s fields).
pub const SAVE_CONTACTS: &str = "INSERT INTO notification_contacts (recipient, recipient_id, \
     email, phone, updated_at_ms) \
     SELECT value ->> 'recipient', value ->> 'recipient_id', value ->> 'email', \
     value ->> 'phone', value ->> 'updated_at_ms' FROM jsonb_each(?) \
     WHERE true ON CONFLICT (recipient, recipient_id) DO UPDATE SET email = excluded.email, \
     phone = excluded.phone, updated_at_ms = excluded.updated_at_ms";

/// [`super::save_many`]: inserts or updates the rides of the JSON array `?` (objects of
/// `RideRow`'s fields). `WHERE true` tells SQLite's parser that `ON CONFLICT` is the
/// upsert's, not the join's.
pub const SAVE: &str = "INSERT INTO notification_rides (ride_id, driver_id, cancel_reason, \
     updated_at_ms) \
     SELECT value ->> 'ride_id', value ->> 'driver_id', value ->> 'cancel_reason', \
     value ->> 'updated_at_ms' FROM jsonb_each(?) \
     WHERE true ON CONFLICT (ride_id) DO UPDATE SET driver_id = excluded.driver_id, \
     cancel_reason = excluded.cancel_reason, updated_at_ms = excluded.updated_at_ms";

/// [`super::record_many`]: records the notifications of the JSON array `?` (objects of
/// `Due`'s fields) as due, keeping a record already there.
pub const RECORD: &str = "INSERT INTO notifications (ride_id, kind, recipient, occurrence, \
     recipient_id, channel, text, message_id, due_at_ms, status) \
     SELECT value ->> 'ride_id', value ->> 'kind', value ->> 'recipient', \
     value ->> 'occurrence', value ->> 'recipient_id', value ->> 'channel', value ->> 'text', \
     value ->> 'message_id', value ->> 'due_at_ms', 'due' FROM jsonb_each(?) \
     WHERE true ON CONFLICT (ride_id, kind, recipient, occurrence) DO NOTHING";

/// [`super::count`]: how many notifications were recorded for the ride.
pub async fn count(conn: &mut SqliteConnection, ride_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = ?")
        .bind(ride_id)
        .fetch_one(conn)
        .await
}

/// [`super::settle`]: settles the deliveries of the JSON array `rows` (objects of
/// `SettleRow`'s fields) that are still due; the keys `(ride_id, kind, recipient, occurrence)`
/// it changed.
pub async fn settle(
    conn: &mut SqliteConnection,
    rows: String,
    at_ms: i64,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE notifications SET status = r.value ->> 'status', \
         channel = r.value ->> 'channel', provider_id = r.value ->> 'provider_id', \
         error = r.value ->> 'error', settled_at_ms = ?2 \
         FROM jsonb_each(?1) AS r WHERE ride_id = r.value ->> 'ride_id' \
         AND kind = r.value ->> 'kind' AND recipient = r.value ->> 'recipient' \
         AND occurrence = r.value ->> 'occurrence' \
         AND status = 'due' RETURNING ride_id, kind, recipient, occurrence",
    )
    .bind(rows)
    .bind(at_ms)
    .fetch_all(conn)
    .await
}

/// [`super::delivery`]: the channel and the provider's id of the notification whose key is
/// `[ride_id, kind, recipient, occurrence]`.
pub async fn delivery(
    conn: &mut SqliteConnection,
    [ride_id, kind, recipient, occurrence]: [&str; 4],
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, provider_id FROM notifications \
         WHERE ride_id = ? AND kind = ? AND recipient = ? AND occurrence = ?",
    )
    .bind(ride_id)
    .bind(kind)
    .bind(recipient)
    .bind(occurrence)
    .fetch_optional(conn)
    .await
}

/// [`super::count_with_status`]: how many of the ride's notifications have the status.
pub async fn count_with_status(
    conn: &mut SqliteConnection,
    ride_id: &str,
    status: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = ? AND status = ?")
        .bind(ride_id)
        .bind(status)
        .fetch_one(conn)
        .await
}
