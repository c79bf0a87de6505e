#!/usr/bin/env bash
# Refunds: a completed ride is refunded in part, then the rest; a third refund is refused with
# the reason (exit 1), as is one above what is left; the ledger's reversals show in `driver
# earnings` and `driver statement`; the rider is told of each of the two refunds once, and the
# audit stays clean. Uses ridectl only. City: Porto.
set -euo pipefail
USAGE="scripts/e2e/refund.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 41.1579 -8.6291)"
driver="d_rf_$RUN_ID"
driver_online "$driver" "Refunder $RUN_ID" "$at"

ride="$(confirmed_ride "u_rf_$RUN_ID" "$at" "$(near 41.1450 -8.6100)")"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
done="$(rc ride complete "$ride" --distance-km 4 --duration-min 10 --expect completed \
  --timeout "$E2E_TIMEOUT")"
fare="$(json_field "$done" .captured_cents)"
expect_eq "captured" "$fare" "$((250 + 4 * 120 + 10 * 30))"
commission="$(((fare * 20 + 50) / 100))"

# A partial refund; asked for again with its id, it is answered the same and made once.
part="$(rc ride refund "$ride" --amount 5.00 --reason "detour" --id "rf_a_$RUN_ID" \
  --timeout "$E2E_TIMEOUT")"
expect_eq "partial refund" "$(json_field "$part" .outcome)" "refunded"
expect_eq "partial amount" "$(json_field "$part" .refunded.amount_cents)" "500"
expect_eq "partial reversal" \
  "$(json_field "$part" '.refunded.reversal | .driver_cents + .commission_cents')" "500"
again="$(rc ride refund "$ride" --amount 5.00 --id "rf_a_$RUN_ID" --timeout "$E2E_TIMEOUT")"
expect_eq "the same refund id again" "$(json_field "$again" .refunded.refunded_cents)" "500"

# More than is left: refused, with the reason, exit 1.
if over="$(rc ride refund "$ride" --amount 1000 --timeout "$E2E_TIMEOUT" 2>/tmp/refund-over.$$)"; then
  fail "a refund above the capture was made: $over"
fi
expect_eq "over-refund refused" "$(json_field "$over" .refused.code)" "exceeds_capture"
grep -q "refused (exceeds_capture)" /tmp/refund-over.$$ \
  || fail "ridectl did not show the reason: $(cat /tmp/refund-over.$$)"
rm -f /tmp/refund-over.$$
log "ok: a refund above what is left is refused with the reason"

# The rest, without an amount.
rest="$(rc ride refund "$ride" --reason "complaint" --timeout "$E2E_TIMEOUT")"
expect_eq "the rest" "$(json_field "$rest" .refunded.amount_cents)" "$((fare - 500))"
expect_eq "all refunded" "$(json_field "$rest" .refunded.refunded_cents)" "$fare"
rest_id="$(json_field "$rest" .refunded.refund_id)"

# A third: nothing left.
if third="$(rc ride refund "$ride" --amount 0.01 --timeout "$E2E_TIMEOUT" 2>/dev/null)"; then
  fail "a third refund was made: $third"
fi
expect_eq "third refund refused" "$(json_field "$third" .refused.code)" "exceeds_capture"

shown="$(rc ride show "$ride")"
expect_eq "ride show: refunded" "$(json_field "$shown" .refunded_cents)" "$fare"
expect_eq "ride show: refunds" "$(json_field "$shown" '[.refunds[].outcome] | join(",")')" \
  "refunded,exceeds_capture,refunded,exceeds_capture"

earnings="$(rc driver earnings "$driver")"
expect_eq "earnings: entries" "$(json_field "$earnings" '[.entries[].kind] | join(",")')" \
  "capture,refund,refund"
expect_eq "earnings: refunded" "$(json_field "$earnings" .refunded_cents)" "$fare"
expect_eq "earnings: driver's net" "$(json_field "$earnings" .driver_cents)" "0"
expect_eq "earnings: commission's net" "$(json_field "$earnings" .commission_cents)" "0"

statement="$(rc driver statement "$driver" --date "$(date -u +%F)")"
expect_eq "statement: rides" "$(json_field "$statement" '[.rides[].ride_id] | join(",")')" "$ride"
expect_eq "statement: fare" "$(json_field "$statement" .rides[0].fare_cents)" "$fare"
expect_eq "statement: share" "$(json_field "$statement" .rides[0].driver_cents)" \
  "$((fare - commission))"
expect_eq "statement: commission" "$(json_field "$statement" .rides[0].commission_cents)" \
  "$commission"
expect_eq "statement: refunded" "$(json_field "$statement" .rides[0].refunded_cents)" "$fare"
expect_eq "statement: driver's net" "$(json_field "$statement" .total.net_driver_cents)" "0"
table="$("$RIDECTL" --output table driver statement "$driver")"
grep -q "net: driver 0.00, commission 0.00" <<<"$table" || fail "statement table: $table"
log "ok: the statement shows the ride, its refunds and the net"

# The rider is told of each refund (the audit below checks each was told once, once the saga
# settled); the refund asked for twice is told once.
told() {
  json_field "$(rc ride show "$ride")" \
    '[.notifications[] | select(.kind == "refund") | .refund_id] | join(",")'
}
deadline=$((SECONDS + 30))
until [[ "$(told)" == "rf_a_$RUN_ID,$rest_id" ]]; do
  ((SECONDS < deadline)) || fail "the rider was not told of both refunds: $(told)"
  sleep 0.5
done
sleep 1
expect_eq "refund notifications" "$(told)" "rf_a_$RUN_ID,$rest_id"
log "ok: the rider was told of each of the two refunds once"
finish
