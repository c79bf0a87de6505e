-- Gateway operations are performed after the transaction that makes them due: the journal
-- records an operation as 'pending' when it becomes due (so it is never due twice) and its
-- outcome once it is settled. outcome: 'pending', then 'held', 'declined', 'captured',
-- 'capture_refused', 'voided', or 'failed' (refused for good) / 'gave_up' (unreachable until
-- the deadline), with the reason in detail.
ALTER TABLE payment_operations RENAME COLUMN performed_at_ms TO recorded_at_ms;
ALTER TABLE payment_operations ADD COLUMN settled_at_ms BIGINT;
ALTER TABLE payment_operations ADD COLUMN detail TEXT;
-- Operations journaled before this migration were performed when they were recorded.
UPDATE payment_operations SET settled_at_ms = recorded_at_ms;

-- The saga's correlation id, for the events that announce an operation's outcome. hold may
-- now be 'pending' too, and settlement 'pending' or 'void_failed' (void_error).
ALTER TABLE payments ADD COLUMN correlation_id TEXT;
ALTER TABLE payments ADD COLUMN void_error TEXT;
