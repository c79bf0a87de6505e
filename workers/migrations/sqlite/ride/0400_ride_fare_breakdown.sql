-- How a completed ride's fare is made up (cents; the parts add up to `fare_cents`).
ALTER TABLE rides ADD COLUMN fare_base_cents BIGINT;
ALTER TABLE rides ADD COLUMN fare_distance_cents BIGINT;
ALTER TABLE rides ADD COLUMN fare_time_cents BIGINT;
ALTER TABLE rides ADD COLUMN fare_surge_cents BIGINT;
