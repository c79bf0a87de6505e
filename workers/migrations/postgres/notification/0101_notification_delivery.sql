-- Notifications are delivered after the transaction that calls for them: a record is `due`
-- from that transaction until its delivery settles as `delivered` or `failed`. The record
-- still exists once per ride, kind and recipient whatever its status, so a notification is
-- never due twice. Records already here were delivered in the transaction that made them.
ALTER TABLE notifications RENAME COLUMN sent_at_ms TO due_at_ms;
ALTER TABLE notifications ADD COLUMN status TEXT NOT NULL DEFAULT 'delivered'
    CHECK (status IN ('due', 'delivered', 'failed'));
-- When the delivery settled; NULL while due.
ALTER TABLE notifications ADD COLUMN settled_at_ms BIGINT;
-- Why a failed delivery failed.
ALTER TABLE notifications ADD COLUMN error TEXT;
UPDATE notifications SET settled_at_ms = due_at_ms;
