-- The runtime's tables, shared by every service's database.
-- inbox: ids of the messages already applied; the check and the state change commit together.
-- WITHOUT ROWID: the primary key is the only b-tree, one page write fewer per input (SQLite
-- syntax; the PostgreSQL migrations will use a plain primary key).
CREATE TABLE IF NOT EXISTS inbox (
    message_id  TEXT PRIMARY KEY,
    subject     TEXT NOT NULL,
    received_at BIGINT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox (received_at);

-- outbox: messages a committed transaction produced and that are not yet stored by the server.
-- Rows are deleted once the server acknowledged them, so the table stays small (the relay
-- scans it whole); rows left behind by a crash are published by the relay.
CREATE TABLE IF NOT EXISTS outbox (
    message_id TEXT PRIMARY KEY,
    cause_id   TEXT,
    subject    TEXT NOT NULL,
    payload    BLOB NOT NULL,
    created_at BIGINT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_cause ON outbox (cause_id);
