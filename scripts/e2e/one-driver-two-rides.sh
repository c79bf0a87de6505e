#!/usr/bin/env bash
# One driver, two concurrent requests: exactly one ride is confirmed; the other ends without
# that driver (cancelled no_driver after the match deadline: run the workers with a short
# RIDESAGA_MATCH_DEADLINE and E2E_TIMEOUT above it). City: Madrid.
set -euo pipefail
USAGE="scripts/e2e/one-driver-two-rides.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 40.4168 -3.7038)"
to="$(near 40.4000 -3.6900)"
driver="d_od_$RUN_ID"
driver_online "$driver" "Only $RUN_ID" "$at"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"; drivers_offline' EXIT
pids=()
for n in 1 2; do
  rc ride request --rider "u_od${n}_$RUN_ID" --from "$at" --to "$to" --card tok_visa \
    --id "r_od${n}_$RUN_ID" --wait --timeout "$E2E_TIMEOUT" >"$tmp/$n.json" &
  pids+=("$!")
done
for pid in "${pids[@]}"; do
  wait "$pid" || fail "a request did not come to rest (ridectl exit $?)"
done

confirmed=0
for n in 1 2; do
  state="$(jq -r .state "$tmp/$n.json")"
  log "ride r_od${n}_$RUN_ID: $(jq -r .label "$tmp/$n.json")"
  case "$state" in
    confirmed) confirmed=$((confirmed + 1)); winner="r_od${n}_$RUN_ID"
               expect_eq "winner's driver" "$(jq -r .driver_id "$tmp/$n.json")" "$driver" ;;
    cancelled|expired) [[ "$(jq -r '.driver_id // "none"' "$tmp/$n.json")" == "none" ]] ||
               fail "the losing ride had a driver assigned" ;;
    *) fail "unexpected state $state" ;;
  esac
done
expect_eq "confirmed rides" "$confirmed" "1"

rc ride start "$winner" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
rc ride complete "$winner" --expect completed --timeout "$E2E_TIMEOUT" >/dev/null
finish
