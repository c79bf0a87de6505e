-- The ride's assigned driver, whose earnings a capture records, and the earnings ledger:
-- append-only, two entries per capture (the driver's share and the platform's commission)
-- that add up to the amount captured. An entry is never changed; a correction is a new entry.
ALTER TABLE payments ADD COLUMN driver_id TEXT;

CREATE TABLE ledger_entries (
    -- '<ride_id>/<operation>/<account>': a settled operation's entries are written once.
    entry_id        TEXT PRIMARY KEY,
    ride_id         TEXT NOT NULL,
    driver_id       TEXT NOT NULL,
    -- 'driver' (the driver's share) or 'platform' (the commission).
    account         TEXT NOT NULL,
    amount_cents    BIGINT NOT NULL,
    operation       TEXT NOT NULL,
    at_ms           BIGINT NOT NULL
);

CREATE INDEX ledger_entries_driver ON ledger_entries (driver_id, at_ms);
