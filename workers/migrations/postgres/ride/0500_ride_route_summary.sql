-- What the completion summarises of a ride's route for the fraud rules, kept running beside
-- the distance: the first position and when it was reported, when the last one was, the
-- highest speed between consecutive positions and the farthest any position got from the
-- first.
ALTER TABLE rides ADD COLUMN route_first_lat DOUBLE PRECISION;
ALTER TABLE rides ADD COLUMN route_first_lng DOUBLE PRECISION;
ALTER TABLE rides ADD COLUMN route_first_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_last_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_max_kmh DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE rides ADD COLUMN route_spread_km DOUBLE PRECISION NOT NULL DEFAULT 0;
