#!/usr/bin/env bash
# Driver earnings: a completed ride's fare carries its breakdown, the capture is split into the
# driver's share and the platform's commission (20 % by default), and `driver earnings` shows
# them, within --since/--until. Uses ridectl only. City: Lisbon.
set -euo pipefail
USAGE="scripts/e2e/driver-earnings.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 38.7223 -9.1393)"
driver="d_ea_$RUN_ID"
driver_online "$driver" "Earner $RUN_ID" "$at"

ride="$(confirmed_ride "u_ea_$RUN_ID" "$at" "$(near 38.7100 -9.1500)")"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
done="$(rc ride complete "$ride" --distance-km 4 --duration-min 10 --expect completed \
  --timeout "$E2E_TIMEOUT")"
fare="$(json_field "$done" .fare_cents)"
expect_eq "fare" "$fare" "$((250 + 4 * 120 + 10 * 30))"
expect_eq "fare breakdown" \
  "$(json_field "$done" '.fare | "\(.base_cents) \(.distance_cents) \(.time_cents) \(.surge_cents)"')" \
  "250 480 300 0"
expect_eq "captured cents" "$(json_field "$done" .captured_cents)" "$fare"

earnings="$(rc driver earnings "$driver")"
commission="$(((fare * 20 + 50) / 100))"
expect_eq "rides earned" "$(json_field "$earnings" .rides)" "1"
expect_eq "captured for the driver" "$(json_field "$earnings" .captured_cents)" "$fare"
expect_eq "commission" "$(json_field "$earnings" .commission_cents)" "$commission"
expect_eq "driver's share" "$(json_field "$earnings" .driver_cents)" "$((fare - commission))"
expect_eq "entry's ride" "$(json_field "$earnings" '.entries[0].ride_id')" "$ride"
expect_eq "earnings since an hour from now" \
  "$(json_field "$(rc driver earnings "$driver" --since "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)")" .rides)" "0"
expect_eq "earnings until an hour ago" \
  "$(json_field "$(rc driver earnings "$driver" --until 1h)" .rides)" "0"
shown="$("$RIDECTL" --output table ride show "$ride")"
grep -q "earnings.*$driver" <<<"$shown" || fail "ride show has no earnings row: $shown"
grep -q "fare breakdown" <<<"$shown" || fail "ride show has no fare breakdown: $shown"
log "ok: ride show lists the fare breakdown and the earnings"
finish
