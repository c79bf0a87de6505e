#!/usr/bin/env bash
# Fake rides: a driver whose reported positions jump tens of kilometres in a second is flagged
# at completion; payment holds the driver's share until `fraud review --approve` releases it.
# A driver whose positions stay in place for minutes is flagged too, and `--reject` forfeits
# the share, which the driver's earnings then show forfeited. An ordinary ride is not flagged.
# A second review, or one of a ride fraud did not flag, is refused. The audit passes. Uses
# ridectl only. City: Graz.
set -euo pipefail
USAGE="scripts/e2e/fake-ride.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

from="$(near 47.0707 15.4395)"
to="$(near 47.0500 15.4600)"
driver="d_fk_$RUN_ID"
driver_online "$driver" "Faker $RUN_ID" "$(near 47.0750 15.4350)"

# A confirmed, started ride of this run's rider RIDER; prints its id.
started_ride() {
  local ride
  ride="$(confirmed_ride "$1" "$from" "$to")"
  rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
  echo "$ride"
}

# Completes RIDE, whose route must hold N positions; prints the completed ride. The ride
# service records positions as they come: give it a moment first.
complete_with() {
  local ride="$1" n="$2" done
  sleep 2
  done="$(rc ride complete "$ride" --expect completed --timeout "$E2E_TIMEOUT")"
  expect_eq "$ride route positions" "$(json_field "$done" .route_points)" "$n"
  echo "$done"
}

# Waits until `fraud review --all` shows RIDE's earnings as STATUS; prints its entry.
review_entry() {
  local ride="$1" status="$2" deadline=$((SECONDS + 30)) entry
  while :; do
    entry="$(rc fraud review --all | jq -c --arg r "$ride" '.[] | select(.ride_id == $r)')"
    if [[ -n "$entry" ]] && [[ "$(jq -r '.steps[-1][0] // empty' <<<"$entry")" == "$status" ]]; then
      echo "$entry"
      return
    fi
    ((SECONDS < deadline)) || fail "$ride: earnings never $status (last: ${entry:-not listed})"
    sleep 0.5
  done
}

# 1. Teleporting: pickup, 90 km north a second later, drop-off.
ride="$(started_ride "u_fk1_$RUN_ID")"
rc driver position "$driver" "$from" >/dev/null
rc driver position "$driver" "$(near 47.8800 15.4395)" >/dev/null
rc driver position "$driver" "$to" >/dev/null
done="$(complete_with "$ride" 3)"
share="$(json_field "$done" .driver_earned_cents)"
entry="$(review_entry "$ride" held)"
log "flagged: $(jq -r '.reasons | join("; ")' <<<"$entry")"
jq -e '.reasons[0] | startswith("impossible_speed")' <<<"$entry" >/dev/null ||
  fail "not flagged for its speed: $entry"
expect_eq "held share" "$(jq -r '.steps[0][1]' <<<"$entry")" "$share"
listed="$(rc fraud review | jq -r --arg r "$ride" '[.[] | select(.ride_id == $r)] | length')"
expect_eq "listed as awaiting review" "$listed" "1"
expect_eq "audit names it held" \
  "$(rc audit | jq -r --arg r "$ride" '.held_for_review | index($r) != null')" "true"

applied="$(rc fraud review "$ride" --approve --note "tunnel GPS glitch" --wait \
  --timeout "$E2E_TIMEOUT" | jq -r .applied)"
log "review applied: $applied"
entry="$(review_entry "$ride" released)"
expect_eq "released share" "$(jq -r '.steps[1][1]' <<<"$entry")" "$share"
expect_eq "decision" "$(jq -r .decision <<<"$entry")" "approve"
if out="$("$RIDECTL" fraud review "$ride" --reject 2>&1)"; then
  fail "a second review was accepted: $out"
fi
[[ "$out" == *"reviewed already"* ]] || fail "second review refused without saying why: $out"
log "ok: a second review is refused"

# 2. Never moved: the same spot reported for three minutes (times given), then completed.
ride2="$(started_ride "u_fk2_$RUN_ID")"
now_ms="$(($(date +%s) * 1000))"
for i in 0 1 2 3; do
  echo "$driver $from $((now_ms - 180000 + i * 60000))"
done | rc driver position --file - >/dev/null
share2="$(json_field "$(complete_with "$ride2" 4)" .driver_earned_cents)"
entry="$(review_entry "$ride2" held)"
jq -e '.reasons[0] | startswith("driver_never_moved")' <<<"$entry" >/dev/null ||
  fail "not flagged as never moved: $entry"
rc fraud review "$ride2" --reject --note "parked outside the rider's house" --wait \
  --timeout "$E2E_TIMEOUT" >/dev/null
entry="$(review_entry "$ride2" forfeited)"
expect_eq "decision" "$(jq -r .decision <<<"$entry")" "reject"
earnings="$(rc driver earnings "$driver")"
expect_eq "earnings forfeited" "$(json_field "$earnings" .forfeited_cents)" "$share2"
expect_eq "earnings held" "$(json_field "$earnings" .held_cents)" "0"

# 3. An ordinary ride, positions a minute apart along the way: not flagged.
ride3="$(started_ride "u_fk3_$RUN_ID")"
for i in 0 1 2; do
  at="$(awk -v i="$i" -v f="$from" -v t="$to" 'BEGIN {
    split(f, a, ","); split(t, b, ",");
    printf "%.5f,%.5f", a[1] + (b[1] - a[1]) * i / 2, a[2] + (b[2] - a[2]) * i / 2 }')"
  echo "$driver $at $((now_ms - 120000 + i * 60000))"
done | rc driver position --file - >/dev/null
complete_with "$ride3" 3 >/dev/null
sleep 2
flagged="$(rc fraud review --all | jq -r --arg r "$ride3" '[.[] | select(.ride_id == $r)] | length')"
expect_eq "ordinary ride flagged" "$flagged" "0"
if out="$("$RIDECTL" fraud review "$ride3" --approve 2>&1)"; then
  fail "a review of an unflagged ride was accepted: $out"
fi
[[ "$out" == *"not flagged"* ]] || fail "review of an unflagged ride refused without saying why: $out"
log "ok: a review of an unflagged ride is refused"
finish
