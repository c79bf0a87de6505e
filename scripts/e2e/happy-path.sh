#!/usr/bin/env bash
# Happy path: a ride is requested, confirmed, started and completed; the captured amount equals
# the fare; every message of the ride carries a trace context, all of them the ride's one
# trace. Uses ridectl only; needs NATS_URL and ridectl (or RIDECTL). City: Berlin.
set -euo pipefail
USAGE="scripts/e2e/happy-path.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 52.5200 13.4050)"
driver="d_hp_$RUN_ID"
driver_online "$driver" "Happy $RUN_ID" "$at"

ride="$(confirmed_ride "u_hp_$RUN_ID" "$at" "$(near 52.5100 13.4300)")"
log "ride $ride confirmed"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
done="$(rc ride complete "$ride" --expect completed --timeout "$E2E_TIMEOUT")"

expect_eq "driver" "$(json_field "$done" .driver_id)" "$driver"
fare="$(json_field "$done" .fare_cents)"
[[ "$fare" =~ ^[0-9]+$ && "$fare" -gt 0 ]] || fail "no fare on the completed ride: $fare"
expect_eq "captured cents" "$(json_field "$done" .captured_cents)" "$fare"

trace="$(rc saga trace "$ride")"
expect_eq "traces of the ride" "$(json_field "$trace" '.trace_ids | length')" 1
expect_eq "steps without a traceparent" \
  "$(json_field "$trace" '[.steps[] | select(.traceparent == null)] | length')" 0
log "ride $ride is trace $(json_field "$trace" .trace_id)"
finish
