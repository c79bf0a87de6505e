#!/usr/bin/env bash
# Card declined: tok_chargeDeclined cancels the ride (payment_declined) and releases the driver,
# who then takes the next ride. City: Rome.
set -euo pipefail
USAGE="scripts/e2e/card-declined.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 41.9028 12.4964)"
to="$(near 41.8900 12.4800)"
driver="d_cd_$RUN_ID"
driver_online "$driver" "Declined $RUN_ID" "$at"

declined="$(rc ride request --rider "u_cd_$RUN_ID" --from "$at" --to "$to" \
  --card tok_chargeDeclined --expect cancelled:payment_declined --timeout "$E2E_TIMEOUT")"
expect_eq "driver released" "$(json_field "$declined" .driver_released)" "true"
expect_eq "captured cents" "$(json_field "$declined" .captured_cents)" "0"

next="$(rc ride request --rider "u_cd2_$RUN_ID" --from "$at" --to "$to" \
  --card tok_visa --expect confirmed --timeout "$E2E_TIMEOUT")"
expect_eq "next ride's driver" "$(json_field "$next" .driver_id)" "$driver"
rc ride cancel "$(json_field "$next" .ride_id)" --expect cancelled:rider \
  --timeout "$E2E_TIMEOUT" >/dev/null
finish
