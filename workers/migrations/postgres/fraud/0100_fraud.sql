-- The fraud service's tables: the blocklist, every scored request (velocity counts them; the
-- ride id key makes each ride scored once), and payment declines (one per ride).
-- Times are Unix ms (BIGINT); reasons are a JSON array in TEXT.

CREATE TABLE fraud_blocklist (
    rider_id      TEXT PRIMARY KEY,
    blocked       BOOLEAN NOT NULL,
    reason        TEXT,
    -- occurred_at (Unix ms) of the command that set it: last writer wins.
    changed_at_ms BIGINT NOT NULL
);

CREATE TABLE fraud_requests (
    ride_id         TEXT PRIMARY KEY,
    rider_id        TEXT NOT NULL,
    requested_at_ms BIGINT NOT NULL,
    score           BIGINT NOT NULL CHECK (score BETWEEN 0 AND 100),
    flagged         BOOLEAN NOT NULL,
    reasons         TEXT NOT NULL,
    scored_at_ms    BIGINT NOT NULL
);

CREATE INDEX fraud_requests_by_rider ON fraud_requests (rider_id, requested_at_ms);
-- Retention.
CREATE INDEX fraud_requests_by_age ON fraud_requests (scored_at_ms);

CREATE TABLE fraud_declines (
    ride_id        TEXT PRIMARY KEY,
    rider_id       TEXT NOT NULL,
    declined_at_ms BIGINT NOT NULL
);

CREATE INDEX fraud_declines_by_rider ON fraud_declines (rider_id, declined_at_ms);
CREATE INDEX fraud_declines_by_age ON fraud_declines (declined_at_ms);
