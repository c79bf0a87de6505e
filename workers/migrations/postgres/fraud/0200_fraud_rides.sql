-- Completed rides fraud judged: the pairing rule counts a driver's rides with a rider in a
-- window; a flagged ride keeps its reasons (a JSON array; NULL: not flagged) and, once an
-- operator reviewed it, the decision ('approve' or 'reject') and its note. One row per ride.
CREATE TABLE fraud_rides (
    ride_id         TEXT PRIMARY KEY,
    driver_id       TEXT NOT NULL,
    rider_id        TEXT NOT NULL,
    completed_at_ms BIGINT NOT NULL,
    reasons         TEXT,
    decision        TEXT,
    note            TEXT,
    decided_at_ms   BIGINT
);

CREATE INDEX fraud_rides_by_pair ON fraud_rides (driver_id, rider_id, completed_at_ms);
-- Retention.
CREATE INDEX fraud_rides_by_age ON fraud_rides (completed_at_ms);
