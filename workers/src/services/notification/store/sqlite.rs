//! The notification service's statements on SQLite. A batch's ride ids are expanded with
//! `json_each` and its rows to save with `jsonb_each`, whose `->>` gives each field its SQL
//! type.

use sqlx::SqliteConnection;

use super::SettleRow;

/// [`super::load_sql`]: the rides whose ids are in the JSON array `?`, and their
/// notifications.
pub const LOAD: &str = "WITH ids AS (SELECT value AS id FROM json_each(?)) \
     SELECT 'ride' AS what, ride_id, driver_id AS a, cancel_reason AS b \
     FROM notification_rides WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'sent', ride_id, kind, recipient FROM notifications \
     WHERE ride_id IN (SELECT id FROM ids)";

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
pub const RECORD: &str = "INSERT INTO notifications (ride_id, kind, recipient, recipient_id, \
     channel, text, message_id, due_at_ms, status) \
     SELECT value ->> 'ride_id', value ->> 'kind', value ->> 'recipient', \
     value ->> 'recipient_id', value ->> 'channel', value ->> 'text', \
     value ->> 'message_id', value ->> 'due_at_ms', 'due' FROM jsonb_each(?) \
     WHERE true ON CONFLICT (ride_id, kind, recipient) DO NOTHING";

/// [`super::count`]: how many notifications were recorded for the ride.
pub async fn count(conn: &mut SqliteConnection, ride_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = ?")
        .bind(ride_id)
        .fetch_one(conn)
        .await
}

/// [`super::settle`]: settles a delivery still due; how many records it changed (0 or 1).
pub async fn settle(conn: &mut SqliteConnection, row: &SettleRow<'_>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE notifications SET status = ?, channel = ?, error = ?, settled_at_ms = ? \
         WHERE ride_id = ? AND kind = ? AND recipient = ? AND status = 'due'",
    )
    .bind(row.status)
    .bind(row.channel)
    .bind(row.error)
    .bind(row.settled_at_ms)
    .bind(row.ride_id)
    .bind(row.kind)
    .bind(row.recipient)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
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
