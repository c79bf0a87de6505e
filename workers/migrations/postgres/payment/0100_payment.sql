-- The payment service's state: one row per ride with the facts payment has learned and what
-- became of the hold, plus a journal of the gateway calls that committed; on PostgreSQL, as on
-- SQLite. Amounts are cents in BIGINT, instants Unix milliseconds in BIGINT.
CREATE TABLE payments (
    ride_id                 TEXT PRIMARY KEY,
    -- From evt.ride.requested; NULL until it arrives.
    rider_id                TEXT,
    payment_token           TEXT,
    estimated_fare_cents    BIGINT,
    driver_assigned         BOOLEAN NOT NULL,
    -- NULL, 'completed' (with fare_cents) or 'cancelled' (also for rejected rides).
    ending                  TEXT,
    fare_cents              BIGINT,
    -- 'none', 'held' (hold_id, hold_amount_cents) or 'declined' (decline_code, decline_message).
    hold                    TEXT NOT NULL,
    hold_id                 TEXT,
    hold_amount_cents       BIGINT,
    decline_code            TEXT,
    decline_message         TEXT,
    -- 'open', 'captured' (captured_cents), 'voided' or 'capture_failed' (capture_error).
    settlement              TEXT NOT NULL,
    captured_cents          BIGINT,
    capture_error           TEXT,
    created_at_ms           BIGINT NOT NULL,
    updated_at_ms           BIGINT NOT NULL
);

-- One row per gateway operation that committed, keyed by the idempotency key sent to the
-- gateway (ride id + operation): a second hold or capture for a ride cannot commit.
CREATE TABLE payment_operations (
    idempotency_key         TEXT PRIMARY KEY,
    ride_id                 TEXT NOT NULL,
    operation               TEXT NOT NULL,
    amount_cents            BIGINT NOT NULL,
    outcome                 TEXT NOT NULL,
    input_message_id        TEXT NOT NULL,
    performed_at_ms         BIGINT NOT NULL
);
