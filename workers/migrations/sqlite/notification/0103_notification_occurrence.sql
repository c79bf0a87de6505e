-- A notification's natural key is its ride, kind, recipient and occurrence: the occurrence is
-- empty for every kind but a refund, whose occurrence is its refund id, so each refund of a
-- ride is told once. SQLite cannot drop a table constraint: the table is rebuilt with the
-- wider one, keeping its rows (whose occurrence is empty).
CREATE TABLE notifications_next (
    ride_id                 TEXT NOT NULL,
    kind                    TEXT NOT NULL,
    recipient               TEXT NOT NULL,
    occurrence              TEXT NOT NULL DEFAULT '',
    recipient_id            TEXT NOT NULL,
    channel                 TEXT NOT NULL,
    text                    TEXT NOT NULL,
    message_id              TEXT NOT NULL,
    due_at_ms               BIGINT NOT NULL,
    status                  TEXT NOT NULL DEFAULT 'delivered'
        CHECK (status IN ('due', 'delivered', 'failed')),
    settled_at_ms           BIGINT,
    error                   TEXT,
    provider_id             TEXT,
    CONSTRAINT notifications_once UNIQUE (ride_id, kind, recipient, occurrence)
);
INSERT INTO notifications_next (ride_id, kind, recipient, occurrence, recipient_id, channel,
    text, message_id, due_at_ms, status, settled_at_ms, error, provider_id)
SELECT ride_id, kind, recipient, '', recipient_id, channel, text, message_id, due_at_ms,
    status, settled_at_ms, error, provider_id
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_next RENAME TO notifications;
