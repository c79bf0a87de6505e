#!/usr/bin/env bash
# Rider cancels after confirmation: the hold is voided, the driver released and free for the
# next ride, which completes. City: Vienna.
set -euo pipefail
USAGE="scripts/e2e/rider-cancels.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 48.2082 16.3738)"
to="$(near 48.2000 16.3600)"
driver="d_rc_$RUN_ID"
driver_online "$driver" "Cancel $RUN_ID" "$at"

ride="$(rc ride request --rider "u_rc_$RUN_ID" --from "$at" --to "$to" --card tok_visa \
  --expect confirmed --timeout "$E2E_TIMEOUT" | jq -r .ride_id)"
cancelled="$(rc ride cancel "$ride" --expect cancelled:rider --timeout "$E2E_TIMEOUT")"
held="$(json_field "$cancelled" .held_cents)"
[[ "$held" -gt 0 ]] || fail "the confirmed ride held nothing"
expect_eq "voided cents" "$(json_field "$cancelled" .voided_cents)" "$held"
expect_eq "captured cents" "$(json_field "$cancelled" .captured_cents)" "0"
expect_eq "driver released" "$(json_field "$cancelled" .driver_released)" "true"

next="$(rc ride request --rider "u_rc2_$RUN_ID" --from "$at" --to "$to" --card tok_visa \
  --expect confirmed --timeout "$E2E_TIMEOUT")"
expect_eq "next ride's driver" "$(json_field "$next" .driver_id)" "$driver"
next="$(json_field "$next" .ride_id)"
rc ride start "$next" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
rc ride complete "$next" --expect completed --timeout "$E2E_TIMEOUT" >/dev/null
finish
