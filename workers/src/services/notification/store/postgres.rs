//! The notification service's statements on PostgreSQL. A batch's ride ids are expanded with
//! `jsonb_array_elements_text` and its rows to save with `jsonb_to_recordset`, which types
//! each field by the column list it is given.

use sqlx::PgConnection;

/// [`super::load_sql`]: the rides whose ids are in the JSON array `$1`, and their
/// notifications.
pub const LOAD: &str = "WITH ids AS (SELECT jsonb_array_elements_text($1::jsonb) AS id) \
     SELECT 'ride' AS what, ride_id, driver_id AS a, cancel_reason AS b \
     FROM notification_rides WHERE ride_id IN (SELECT id FROM ids) \
     UNION ALL SELECT 'sent', ride_id, kind, recipient FROM notifications \
     WHERE ride_id IN (SELECT id FROM ids)";

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
/// `Sent`'s fields), keeping a record already there.
pub const RECORD: &str = "INSERT INTO notifications (ride_id, kind, recipient, recipient_id, \
     channel, text, message_id, sent_at_ms) \
     SELECT ride_id, kind, recipient, recipient_id, channel, text, message_id, sent_at_ms \
     FROM jsonb_to_recordset($1::jsonb) AS r (ride_id TEXT, kind TEXT, recipient TEXT, \
     recipient_id TEXT, channel TEXT, text TEXT, message_id TEXT, sent_at_ms BIGINT) \
     ON CONFLICT (ride_id, kind, recipient) DO NOTHING";

/// [`super::count`]: how many notifications were recorded for the ride.
pub async fn count(conn: &mut PgConnection, ride_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM notifications WHERE ride_id = $1")
        .bind(ride_id)
        .fetch_one(conn)
        .await
}
