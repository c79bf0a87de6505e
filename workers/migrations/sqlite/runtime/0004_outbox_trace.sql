-- The trace context (W3C `traceparent` and `tracestate`) each outbox row is published with, so
-- that the relay republishes a row left behind in its trace; and the one each effect was made
-- due under, so that its attempts and the events announcing its outcome stay in that trace.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
ALTER TABLE effects ADD COLUMN traceparent TEXT;
ALTER TABLE effects ADD COLUMN tracestate TEXT;
