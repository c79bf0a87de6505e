-- A notification's natural key is its ride, kind, recipient and occurrence: the occurrence is
-- empty for every kind but a refund, whose occurrence is its refund id, so each refund of a
-- ride is told once. Rows already here keep an empty occurrence.
ALTER TABLE notifications ADD COLUMN occurrence TEXT NOT NULL DEFAULT '';
ALTER TABLE notifications DROP CONSTRAINT notifications_once;
ALTER TABLE notifications ADD CONSTRAINT notifications_once
    UNIQUE (ride_id, kind, recipient, occurrence);
