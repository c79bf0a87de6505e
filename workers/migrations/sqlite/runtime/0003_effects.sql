-- effects: calls to the outside world a committed transaction made due and that are not
-- settled yet (see `runtime::effects`). A row is recorded with the input that caused it and
-- deleted by the transaction that records its outcome, so the table holds only what is
-- pending. Times are milliseconds since the Unix epoch.
-- effect_id:     the operation's idempotency key at the outside party (e.g. `r_1/hold`).
-- attempts:      attempts made so far.
-- next_at:       not performed before (a transient failure moves it by the backoff).
-- deadline_at:   a transient failure after it settles the effect as given up.
-- claimed_until: a replica performs it until then (0: nobody); an expired claim is claimed
--                again, which is how a call a crash interrupted resumes.
CREATE TABLE effects (
    effect_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    saga_id       TEXT,
    request       TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    recorded_at   BIGINT NOT NULL,
    next_at       BIGINT NOT NULL,
    deadline_at   BIGINT NOT NULL,
    claimed_until BIGINT NOT NULL DEFAULT 0,
    last_error    TEXT
) WITHOUT ROWID;
-- Due and not claimed: `next_at <= now AND claimed_until <= now`, read in the index alone.
CREATE INDEX effects_due ON effects (next_at, claimed_until);
-- A saga's pending effects, for the control plane.
CREATE INDEX effects_saga ON effects (saga_id);
