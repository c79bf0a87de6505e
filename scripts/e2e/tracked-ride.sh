#!/usr/bin/env bash
# Tracked ride: the driver reports positions (one at a time, then a batch from stdin) to the
# positions stream; `ride track` shows the way to the pickup, then the distance travelled; the
# completion takes the recorded route's distance over the reported one and the capture equals
# the fare, whose breakdown adds up. Uses ridectl only. City: Vienna.
set -euo pipefail
USAGE="scripts/e2e/tracked-ride.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

from="$(near 48.2082 16.3738)"
to="$(near 48.1900 16.3900)"
driver="d_tr_$RUN_ID"
driver_online "$driver" "Tracked $RUN_ID" "$(near 48.2150 16.3700)"

ride="$(confirmed_ride "u_tr_$RUN_ID" "$from" "$to")"
log "ride $ride confirmed"

# On the way to the pickup: one position, as a phone sends it.
rc driver position "$driver" "$(near 48.2120 16.3720)" >/dev/null
track="$(rc ride track "$ride" --once)"
expect_eq "tracked state" "$(json_field "$track" .state)" "confirmed"
expect_eq "tracked driver" "$(json_field "$track" .driver_id)" "$driver"
to_pickup="$(json_field "$track" .to_pickup_km)"
awk -v km="$to_pickup" 'BEGIN { exit !(km > 0.1 && km < 2) }' ||
  fail "distance to the pickup: $to_pickup"
[[ "$(json_field "$track" .eta_min)" != null ]] || fail "no ETA before the pickup: $track"

rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
# The trip: a batch of positions from stdin, pickup to drop-off, each with the time the phone
# took it (two minutes apart, the last now), as a phone sends what it kept while offline.
points=("$from" "$(near 48.2030 16.3780)" "$(near 48.1960 16.3840)" "$to")
now_ms=$(($(date +%s) * 1000))
for i in "${!points[@]}"; do
  echo "$driver ${points[$i]} $((now_ms - (${#points[@]} - 1 - i) * 120000))"
done | rc driver position --file - >/dev/null
track="$(rc ride track "$ride" --once)"
expect_eq "tracked state" "$(json_field "$track" .state)" "started"
travelled="$(json_field "$track" .travelled_km)"
awk -v km="$travelled" 'BEGIN { exit !(km > 1 && km < 5) }' ||
  fail "distance travelled: $travelled"
expect_eq "distance to the drop-off" "$(json_field "$track" .to_dropoff_km)" "0"

# The ride service records positions as they come; give it a moment before the completion.
sleep 2
done="$(rc ride complete "$ride" --distance-km 50 --expect completed --timeout "$E2E_TIMEOUT")"
expect_eq "distance source" "$(json_field "$done" .distance_source)" "route"
expect_eq "route positions" "$(json_field "$done" .route_points)" "4"
distance="$(json_field "$done" .distance_km)"
awk -v km="$distance" -v t="$travelled" 'BEGIN { d = km - t; exit !(d < 0.001 && d > -0.001) }' ||
  fail "completed distance $distance is not the route's $travelled"
fare="$(json_field "$done" .fare_cents)"
expect_eq "captured cents" "$(json_field "$done" .captured_cents)" "$fare"
expect_eq "fare breakdown total" "$(json_field "$done" .fare.total_cents)" "$fare"
expect_eq "fare parts add up" \
  "$(json_field "$done" '.fare | .base_cents + .distance_cents + .time_cents + .surge_cents')" \
  "$fare"

track="$(rc ride track "$ride")"
expect_eq "tracked after the end" "$(json_field "$track" .distance_source)" "route"

# A plausible route at town speeds: fraud judges the completion and does not flag it.
sleep 2
flagged="$(rc fraud review --all | jq --arg ride "$ride" '[.[] | select(.ride_id == $ride)] | length')"
expect_eq "rides flagged for review" "$flagged" "0"
finish
