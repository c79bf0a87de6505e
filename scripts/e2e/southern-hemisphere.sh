#!/usr/bin/env bash
# A ride south of the equator and west of Greenwich, positions typed with their minus signs as
# separate arguments (`--at -23.55,-46.63`): registered, moved, requested, completed and
# captured like any other. City: São Paulo.
set -euo pipefail
USAGE="scripts/e2e/southern-hemisphere.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

# near() shifts north-east; both coordinates stay negative here.
at="$(near -23.5505 -46.6333)"
[[ "$at" == -*,-* ]] || fail "expected a south-west position, got $at"
driver="d_sp_$RUN_ID"
rc driver register "$driver" --name "Sul $RUN_ID" --at "$(near -23.5600 -46.6400)" \
  --wait --timeout "$E2E_TIMEOUT" >/dev/null
rc driver online "$driver" --at "$(near -23.5550 -46.6350)" --wait --timeout "$E2E_TIMEOUT" >/dev/null
rc driver move "$driver" --at "$at" --wait --timeout "$E2E_TIMEOUT" >/dev/null
DRIVERS+=("$driver")
log "driver $driver online at $at"

ride="$(confirmed_ride "u_sp_$RUN_ID" "$at" "$(near -23.5870 -46.6580)")"
log "ride $ride confirmed"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
done="$(rc ride complete "$ride" --expect completed --timeout "$E2E_TIMEOUT")"

expect_eq "driver" "$(json_field "$done" .driver_id)" "$driver"
fare="$(json_field "$done" .fare_cents)"
[[ "$fare" =~ ^[0-9]+$ && "$fare" -gt 0 ]] || fail "no fare on the completed ride: $fare"
expect_eq "captured cents" "$(json_field "$done" .captured_cents)" "$fare"
finish
