-- How notifications reach riders and drivers: the email address and phone number of their
-- latest registrations (a registration that leaves one out keeps the one known).
CREATE TABLE notification_contacts (
    recipient               TEXT NOT NULL CHECK (recipient IN ('rider', 'driver')),
    recipient_id            TEXT NOT NULL,
    email                   TEXT,
    phone                   TEXT,
    updated_at_ms           BIGINT NOT NULL,
    PRIMARY KEY (recipient, recipient_id)
);
-- The id the channel's outside party gave a delivered notification (the email's Message-ID,
-- the SMS provider's message id); NULL for the log.
ALTER TABLE notifications ADD COLUMN provider_id TEXT;
