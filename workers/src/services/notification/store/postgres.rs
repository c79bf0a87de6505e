//! The notification service's statements on PostgreSQL. A batch's ride ids are expanded with
//! `jsonb_array_elements_text` and its rows to save with `jsonb_to_recordset`, which types
//! each field by the column list it is given.

use sqlx::PgConnection;

/// [`super::load_sql`]: the rides whose ids are in the JSON object's `rides`, their
/// notifications, and the contact details of its `riders` and `drivers` and of the rides'
/// drivers.
pub const LOAD: &str = "WITH ids AS (SELECT jsonb_array_elements_text($1::jsonb -> 'rides') AS id), \
     wanted AS (SELECT 'rider'::text AS recipient, \
     jsonb_array_elements_text($1::jsonb -> 'riders') AS id \
     UNION SELECT 'driver', jsonb_array_elements_text($1::jsonb -> 'drivers') \
     UNION SELECT 'driver', driver_id FROM notification_rides \
     WHERE ride_id IN (SELECT id FROM ids) AND driver_id IS NOT NULL) \
     SELECT 'ride' AS what, ride_id AS id, driver_id AS a, cancel_reason AS b, NULL::text AS c \
     FROM notification_rides WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'sent', ride_id, kind, recipient, occurrence FROM notifications \
     WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'contact', recipient_id, email, phone, recipient \
     FROM notification_contacts WHERE (recipient, recipient_id) IN (SELECT recipient, id FROM wanted)";

/// [`super::save_contacts`]: inserts or replaces the contact details of the JSON array `$1`
/// (objects of `ContactRow`'s fields).
pub const SAVE_CONTACTS: &str = "INSERT INTO notification_contacts (recipient, recipient_id, \
     email, phone, updated_at_ms) \
     SELECT recipient, recipient_id, email, phone, updated_at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (recipient TEXT, recipient_id TEXT, email TEXT, \
     phone TEXT, updated_at_ms BIGINT) \
     ON CONFLICT (recipient, recipient_id) DO UPDATE SET email = excluded.email, \
     phone = excluded.phone, updated_at_ms = excluded.updated_at_ms";

/// [`super::save_many`]: inserts or updates the rides of the JSON array `$1` (objects of
/// `RideRow`'s fields).
pub const SAVE: &str = "INSERT INTO notification_rides (ride_id, driver_id, cancel_reason, \
     updated_at_ms) \
     SELECT ride_id, driver_id, cancel_reason, updated_at_ms \
     FROM jsonb_to_recordset($1::jsonb) \
     AS r (ride_id TEXT, driver_id TEXT, cancel_reason TEXT, updated_at_ms BIGINT) \
     ON CONFLICT (ride_id) DO UPDATE SET driver_id = excluded.driver_id, \
     cancel_reason = excluded.cancel_reason, updated_at_ms = excluded.updated_at_ms";

/// [`super::record_many`]: records the notifications of the JSON array `$1` (objects of
/// `Due`'s fields) as due, keeping a record already there.
pub const RECORD: &str = "INSERT INTO notifications (ride_id, kind, recipient, occurrence, \
     recipient_id, channel, text, message_id, due_at_ms, status) \
     SELECT ride_id, kind, recipient, occurrence, recipient_id, channel, text, message_id, \
     due_at_ms, 'due' \
     FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, kind TEXT, recipient TEXT, \
     occurrence TEXT, recipient_id TEXT, channel TEXT, text TEXT, message_id TEXT, \
     due_at_ms BIGINT) \
     ON CONFLICT (ride_id, kind, recipient, occurrence) DO NOTHING";

/// [`super::count`]: how many notifications were recorded for the ride.
pub async fn count(conn: &mut PgConnection, ride_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = $1")
        .bind(ride_id)
        .fetch_one(conn)
        .await
}

/// [`super::settle`]: settles the deliveries of the JSON array `rows` (objects of
/// `SettleRow`'s fields) that are still due; the keys `(ride_id, kind, recipient, occurrence)`
/// it changed.
pub async fn settle(
    conn: &mut PgConnection,
    rows: String,
    at_ms: i64,
) -> Result<Vec<(String, String, String, String)>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE notifications n SET status = r.status, channel = r.channel, \
         provider_id = r.provider_id, error = r.error, settled_at_ms = $2 \
         FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, kind TEXT, recipient TEXT, \
         occurrence TEXT, status TEXT, channel TEXT, provider_id TEXT, error TEXT) \
         WHERE n.ride_id = r.ride_id AND n.kind = r.kind AND n.recipient = r.recipient \
         AND n.occurrence = r.occurrence \
         AND n.status = 'due' RETURNING n.ride_id, n.kind, n.recipient, n.occurrence",
    )
    .bind(rows)
    .bind(at_ms)
    .fetch_all(conn)
    .await
}

/// [`super::delivery`]: the channel and the provider's id of the notification whose key is
/// `[ride_id, kind, recipient, occurrence]`.
pub async fn delivery(
    conn: &mut PgConnection,
    [ride_id, kind, recipient, occurrence]: [&str; 4],
) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT channel, provider_id FROM notifications \
         WHERE ride_id = $1 AND kind = $2 AND recipient = $3 AND occurrence = $4",
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
    conn: &mut PgConnection,
    ride_id: &str,
    status: &str,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = $1 AND status = $2")
        .bind(ride_id)
        .bind(status)
        .fetch_one(conn)
        .await
}
