#!/usr/bin/env bash
# A request the ride service refuses (about 500 km, over the 200 km limit) is an outcome: the
# command is answered with the reason, the saga ends rejected (invalid_request) at once, the
# rider is told why, nothing is reserved or held, and the saga is never listed as stuck.
# City: Madrid (the refused trip goes to Barcelona).
set -euo pipefail
USAGE="scripts/e2e/refused-request.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 40.4168 -3.7038)"
driver="d_rr_$RUN_ID"
driver_online "$driver" "Refused $RUN_ID" "$at"

# Madrid to Barcelona: about 500 km.
out="$(rc ride request --rider "u_rr_$RUN_ID" --from "$at" --to 41.3874,2.1686 --card tok_visa \
  --expect refused --timeout "$E2E_TIMEOUT")"
ride="$(json_field "$out" .ride_id)"
expect_eq "outcome" "$(json_field "$out" .outcome)" "refused"
log "ride $ride refused"

# Without --expect the refusal is an error that says why (exit 1).
set +e
err="$(rc ride request --rider "u_rr2_$RUN_ID" --from "$at" --to 41.3874,2.1686 --card tok_visa \
  --wait --timeout "$E2E_TIMEOUT" 2>&1 >/dev/null)"
code=$?
set -e
expect_eq "exit code of an unexpected refusal" "$code" "1"
[[ "$err" == *"at most 200 km"* ]] || fail "the refusal does not say why: $err"

shown="$(rc ride show "$ride" --expect rejected:invalid_request)"
expect_eq "held cents" "$(json_field "$shown" .held_cents)" "0"
expect_eq "driver" "$(json_field "$shown" '.driver_id // "none"')" "none"

# The rider is told, once.
deadline=$((SECONDS + 30))
until [[ "$(rc ride show "$ride" | jq '[.notifications[] | select(.kind == "ride_rejected"
    and .recipient == "rider")] | length')" == 1 ]]; do
  ((SECONDS < deadline)) || fail "the rider of $ride was never told"
  sleep 0.3
done
log "ok: the rider was told"

sleep 1.5 # idle past --stuck-after: a saga still waiting would now be listed
stuck="$(rc saga list --state stuck --stuck-after 1s | jq --arg r "$ride" \
  '[.[] | select(.ride_id == $r)] | length')"
expect_eq "listed as stuck" "$stuck" "0"

# The driver stayed free: a valid request right after is confirmed with it.
next="$(rc ride request --rider "u_rr3_$RUN_ID" --from "$at" --to "$(near 40.4000 -3.6900)" \
  --card tok_visa --expect confirmed --timeout "$E2E_TIMEOUT")"
expect_eq "next ride's driver" "$(json_field "$next" .driver_id)" "$driver"
rc ride cancel "$(json_field "$next" .ride_id)" --expect cancelled:rider \
  --timeout "$E2E_TIMEOUT" >/dev/null
finish
