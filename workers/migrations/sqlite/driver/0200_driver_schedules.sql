-- Driver schedules: the whole schedule as the contract's JSON (DriverSchedule), null for a
-- driver without one (matched whenever available), and the occurred_at (Unix ms) of the
-- newest schedule command applied (last writer wins). Rides keep their planned trip's length,
-- which decides whether a scheduled driver's shift is long enough for them.
ALTER TABLE drivers ADD COLUMN schedule TEXT;
ALTER TABLE drivers ADD COLUMN schedule_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE driver_rides ADD COLUMN trip_km DOUBLE PRECISION;
