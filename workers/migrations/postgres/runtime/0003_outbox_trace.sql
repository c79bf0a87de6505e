-- The trace context (W3C `traceparent` and `tracestate`) each outbox row is published with, so
-- that the relay republishes a row left behind in its trace; and the one each effect was made
-- due under, so that its attempts and the events announcing its outcome stay in that trace.
-- saga_traces: for a ride in a trace other than its own (a caller's), the span of the last
-- input the service handled for it, under which its timers' steps are created.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
ALTER TABLE effects ADD COLUMN traceparent TEXT;
ALTER TABLE effects ADD COLUMN tracestate TEXT;
CREATE TABLE saga_traces (
    saga_id     TEXT PRIMARY KEY,
    traceparent TEXT NOT NULL,
    tracestate  TEXT,
    updated_at  BIGINT NOT NULL
);
