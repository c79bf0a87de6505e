-- The runtime's tables, in every service's database.
-- inbox: the messages already applied, keyed by when each occurred and its id (both set once by
-- its producer); the check and the state change commit together. Partitioned by the day of
-- occurrence, so the retention drops whole days (`inbox_d<days since the epoch>`, made ahead
-- of time by the runtime); a message whose day has no partition lands in the default one.
CREATE TABLE inbox (
    occurred_at BIGINT NOT NULL,
    message_id  TEXT NOT NULL,
    subject     TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (occurred_at, message_id)
) PARTITION BY RANGE (occurred_at);
CREATE TABLE inbox_default PARTITION OF inbox DEFAULT;

-- outbox: messages a committed transaction produced and that the server has not stored yet.
-- Rows are deleted once the server acknowledged them; rows left behind by a crash are
-- published by the relay.
CREATE TABLE outbox (
    message_id TEXT PRIMARY KEY,
    cause_id   TEXT,
    subject    TEXT NOT NULL,
    payload    BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX outbox_cause ON outbox (cause_id);
CREATE INDEX outbox_created_at ON outbox (created_at);
