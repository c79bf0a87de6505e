-- The runtime's tables, shared by every service's database.
-- inbox: ids of the messages already applied; the check and the state change commit together.
CREATE TABLE IF NOT EXISTS inbox (
    message_id  TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at);

-- outbox: messages a committed transaction produced and that are not yet stored by the server.
-- A row is deleted once the server acknowledged it; rows left behind by a crash are published
-- by the relay.
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    cause_id   TEXT,
    subject    TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_cause ON outbox (cause_id);
CREATE INDEX IF NOT EXISTS outbox_created_at ON outbox (created_at);
