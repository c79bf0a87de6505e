-- Fraud's verdict on a completed ride and where its driver's share stands: 'flagged',
-- 'approve' or 'reject'; the ledger's last step with the share ('held', 'released',
-- 'forfeited') and its amount. The steps themselves are entries in `ledger_entries`.
CREATE TABLE payment_reviews (
    ride_id         TEXT PRIMARY KEY,
    verdict         TEXT NOT NULL,
    earnings_hold   TEXT,
    hold_cents      BIGINT,
    updated_at_ms   BIGINT NOT NULL
);
