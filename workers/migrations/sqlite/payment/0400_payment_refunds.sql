-- Refunds: the commission the ledger took from the capture (the proportion refunds reverse)
-- and every refund asked for, as a JSON array of objects (refund_id, amount_cents, reason,
-- status: 'pending', 'refunded' or 'refused' with code and reason). Each refund made adds two
-- ledger entries with operation 'refund' that reverse it: negative amounts off the driver's
-- share and off the commission, entry_id '<ride_id>/refund/<refund_id>/<account>'. A refund's
-- gateway call is journaled in payment_operations as operation 'refund', key
-- '<ride_id>/refund/<refund_id>', outcome 'refunded' or 'refund_refused' (detail: why).
ALTER TABLE payments ADD COLUMN commission_cents BIGINT;
ALTER TABLE payments ADD COLUMN refunds TEXT;
