-- A confirmed ride must start before its pickup deadline or, once its driver reported arrival,
-- before its rider wait deadline; `expires_at_ms` holds whichever applies, so the timer that
-- expires unconfirmed rides also cancels confirmed rides that never start.
ALTER TABLE rides ADD COLUMN pickup_deadline_ms BIGINT;
ALTER TABLE rides ADD COLUMN rider_wait_deadline_ms BIGINT;

-- Rides confirmed before these deadlines existed get the default pickup deadline (20 minutes)
-- from their last change.
UPDATE rides
SET pickup_deadline_ms = updated_at_ms + 1200000,
    expires_at_ms = updated_at_ms + 1200000
WHERE status = 'confirmed';
