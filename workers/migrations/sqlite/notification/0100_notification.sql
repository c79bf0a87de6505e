-- The notification service's state. Portable SQL (SQLite and PostgreSQL); instants are Unix
-- milliseconds in BIGINT.

-- What notification remembers about a ride between events.
CREATE TABLE notification_rides (
    ride_id                 TEXT PRIMARY KEY,
    driver_id               TEXT,
    cancel_reason           TEXT,
    updated_at_ms           BIGINT NOT NULL
);

-- Every notification sent: at most one per ride, kind and recipient.
CREATE TABLE notifications (
    ride_id                 TEXT NOT NULL,
    kind                    TEXT NOT NULL,
    recipient               TEXT NOT NULL,
    recipient_id            TEXT NOT NULL,
    channel                 TEXT NOT NULL,
    text                    TEXT NOT NULL,
    -- The id of the evt.notification.sent that announced it (also the log line's id).
    message_id              TEXT NOT NULL,
    sent_at_ms              BIGINT NOT NULL,
    CONSTRAINT notifications_once UNIQUE (ride_id, kind, recipient)
);
