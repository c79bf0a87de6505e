-- The route of a ride in progress, from the driver's reported positions: every position kept in
-- `ride_route` (one row per positions-stream sequence, so a redelivered position is kept once),
-- and on the ride the running total the completion reads: distance, number of positions, the
-- last position and its stream sequence.
ALTER TABLE rides ADD COLUMN route_km DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_points BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_lat DOUBLE PRECISION;
ALTER TABLE rides ADD COLUMN route_lng DOUBLE PRECISION;

-- A position finds its driver's ride in progress.
CREATE INDEX rides_started_driver ON rides (driver_id) WHERE status = 'started';

CREATE TABLE ride_route (
    ride_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    lat         DOUBLE PRECISION NOT NULL,
    lng         DOUBLE PRECISION NOT NULL,
    at_ms       BIGINT NOT NULL,
    PRIMARY KEY (ride_id, seq)
);
