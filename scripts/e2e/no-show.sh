#!/usr/bin/env bash
# No-shows: a confirmed ride that never starts is cancelled by the ride service once its pickup
# deadline passes (driver_no_show: the driver released, the hold voided, a late start refused);
# a ride whose driver reports arrival but whose rider never shows is cancelled once the rider
# wait ends (rider_no_show). Run the workers with a short RIDESAGA_PICKUP_DEADLINE and
# RIDESAGA_RIDER_WAIT (e.g. 15s and 4s; no RIDESAGA_NO_SHOW_FEE_CENTS, so the hold is voided)
# and E2E_TIMEOUT above them. City: Oslo.
set -euo pipefail
USAGE="scripts/e2e/no-show.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

# Whole seconds in a duration such as 60s, 2m, 1h or 500ms (rounded up).
seconds_of() {
  awk -v d="$1" 'BEGIN {
    n = d + 0; unit = d; sub(/^[0-9.]+/, "", unit)
    f = (unit == "ms") ? 0.001 : (unit == "m") ? 60 : (unit == "h") ? 3600 : 1
    s = n * f; printf "%d\n", (s == int(s)) ? s : int(s) + 1
  }'
}

# Polls `ride show RIDE` until the jq condition FILTER holds, then prints that JSON. Nothing
# is sent: the ride service's timer moves these rides on. Fails after E2E_TIMEOUT.
await_ride() {
  local ride="$1" filter="$2" deadline shown
  deadline=$((SECONDS + $(seconds_of "$E2E_TIMEOUT")))
  while :; do
    shown="$(rc ride show "$ride")" || fail "ridectl ride show $ride failed"
    if jq -e "$filter" >/dev/null <<<"$shown"; then
      printf '%s\n' "$shown"
      return 0
    fi
    ((SECONDS < deadline)) ||
      fail "ride $ride: '$filter' did not hold within $E2E_TIMEOUT (last: $(json_field "$shown" .label))"
    sleep 0.5
  done
}

# Ended, with the driver released and every hold voided.
compensated='.state == "cancelled" and .driver_released and .voided_cents == .held_cents'

at="$(near 59.9139 10.7522)"
to="$(near 59.9000 10.7300)"
driver="d_ns_$RUN_ID"
driver_online "$driver" "Noshow $RUN_ID" "$at"

# 1. Confirmed, then nobody reports arrival or starts the ride.
absent="$(rc ride request --rider "u_ns1_$RUN_ID" --from "$at" --to "$to" --card tok_visa \
  --expect confirmed --timeout "$E2E_TIMEOUT")"
[[ "$(json_field "$absent" .deadline)" != null ]] || fail "the confirmed ride shows no deadline"
absent="$(json_field "$absent" .ride_id)"
log "ride $absent confirmed; waiting for its pickup deadline"
shown="$(await_ride "$absent" "$compensated")"
expect_eq "reason" "$(json_field "$shown" .reason)" "driver_no_show"
held="$(json_field "$shown" .held_cents)"
[[ "$held" -gt 0 ]] || fail "the confirmed ride held nothing"
expect_eq "voided cents" "$(json_field "$shown" .voided_cents)" "$held"
expect_eq "captured cents" "$(json_field "$shown" .captured_cents)" "0"
rc ride show "$absent" --expect cancelled:driver_no_show >/dev/null
rc ride start "$absent" >/dev/null
await_ride "$absent" '[.refusals[] | select(.command == "cmd.ride.start")] | length == 1' >/dev/null
log "ok: a start after the cancellation is refused"

# 2. The driver (released above) takes the next ride and arrives; the rider never shows.
waiting="$(rc ride request --rider "u_ns2_$RUN_ID" --from "$at" --to "$to" --card tok_visa \
  --expect confirmed --timeout "$E2E_TIMEOUT")"
expect_eq "next ride's driver" "$(json_field "$waiting" .driver_id)" "$driver"
waiting="$(json_field "$waiting" .ride_id)"
arrived="$(rc ride arrive "$waiting" --expect confirmed --timeout "$E2E_TIMEOUT")"
expect_eq "driver arrived" "$(json_field "$arrived" .driver_arrived)" "true"
log "driver at the pickup of $waiting; waiting for the rider wait to end"
shown="$(await_ride "$waiting" "$compensated")"
expect_eq "reason" "$(json_field "$shown" .reason)" "rider_no_show"
expect_eq "captured cents" "$(json_field "$shown" .captured_cents)" "0"
finish
