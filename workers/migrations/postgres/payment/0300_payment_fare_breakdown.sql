-- The completed ride's fare breakdown (cents; with `fare_cents` as the total), for the receipt.
ALTER TABLE payments ADD COLUMN fare_base_cents BIGINT;
ALTER TABLE payments ADD COLUMN fare_distance_cents BIGINT;
ALTER TABLE payments ADD COLUMN fare_time_cents BIGINT;
ALTER TABLE payments ADD COLUMN fare_surge_cents BIGINT;
