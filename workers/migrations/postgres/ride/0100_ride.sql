-- The ride service's state on PostgreSQL: one row per ride, the state machine's state in plain
-- columns, as on SQLite. Instants are Unix milliseconds in BIGINT, amounts are cents in BIGINT,
-- distances DOUBLE PRECISION.
CREATE TABLE rides (
    ride_id                 TEXT PRIMARY KEY,
    rider_id                TEXT NOT NULL,
    pickup_lat              DOUBLE PRECISION NOT NULL,
    pickup_lng              DOUBLE PRECISION NOT NULL,
    dropoff_lat             DOUBLE PRECISION NOT NULL,
    dropoff_lng             DOUBLE PRECISION NOT NULL,
    payment_token           TEXT NOT NULL,
    distance_km             DOUBLE PRECISION NOT NULL,
    estimated_fare_cents    BIGINT NOT NULL,
    match_deadline_ms       BIGINT NOT NULL,
    -- When the ride expires unless confirmed; NULL once it no longer waits, so the timer's
    -- partial index holds only rides that can still expire.
    expires_at_ms           BIGINT,
    status                  TEXT NOT NULL,
    cancel_reason           TEXT,
    driver_id               TEXT,
    hold                    TEXT NOT NULL,
    started_at_ms           BIGINT,
    fare_cents              BIGINT,
    -- The saga's correlation id and the evt.ride.requested id, for timer outputs.
    correlation_id          TEXT NOT NULL,
    requested_event_id      TEXT NOT NULL,
    created_at_ms           BIGINT NOT NULL,
    updated_at_ms           BIGINT NOT NULL
);

CREATE INDEX rides_expires_at ON rides (expires_at_ms) WHERE expires_at_ms IS NOT NULL;
