#!/usr/bin/env bash
# Driver schedules: a driver whose only shift is in two days is passed over for a farther one on
# shift; bad schedules are refused by ridectl with the reason; `driver schedule show` lists the
# windows and the next shifts in the driver's zone; the end of a shift (here: a new schedule
# without the current shift) never releases a driver during a ride; `driver show` gives the
# state, the current ride, the position and the shift; a cleared schedule lifts every
# restriction. Uses ridectl only. City: Athens.
set -euo pipefail
USAGE="scripts/e2e/driver-schedule.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

zone="Europe/Athens"
pickup="$(near 37.9838 23.7275)"
dropoff="$(near 37.9750 23.7350)"
off="d_so_$RUN_ID"
on="d_sn_$RUN_ID"
driver_online "$off" "Later $RUN_ID" "$(near 37.9845 23.7280)"
driver_online "$on" "Today $RUN_ID" "$(near 37.9880 23.7320)"

# Two days away either side: a day ahead or behind in any zone, whatever the host's zone data.
later="$(TZ="$zone" date -d '+2 days' +%F)"
earlier="$(TZ="$zone" date -d '-2 days' +%F)"
wait=(--wait --timeout "$E2E_TIMEOUT")

# Refused before anything is published, with the reason.
refused() {
  local what="$1" want="$2" out
  shift 2
  if out="$("$RIDECTL" driver schedule set "$off" "$@" 2>&1)"; then
    fail "$what: accepted"
  fi
  grep -q "$want" <<<"$out" || fail "$what: $out"
  log "ok: refused $what"
}
refused "an unknown zone" "unknown time zone" --zone Mars/Olympus --weekly "mon 08:00-16:00"
refused "a shift ending before it starts" "ends before it starts" \
  --zone "$zone" --shift "${later}T18:00/${later}T08:00"
refused "an empty window" "is empty" --zone "$zone" --weekly "mon 08:00-08:00"
refused "a day that is not one" "not a day of the week" --zone "$zone" --weekly "xyz 08:00-16:00"
refused "a schedule without a zone" "time zone" --weekly "mon 08:00-16:00"

# The nearer driver works in two days only; the farther one every day, all day.
rc driver schedule set "$off" --zone "$zone" --shift "${later}T08:00/${later}T16:00" \
  "${wait[@]}" >/dev/null
printf 'zone %s\n# every day, all day\nweekly mon-sun 00:00-24:00\n' "$zone" |
  rc driver schedule set "$on" --file - "${wait[@]}" >/dev/null
shown="$(rc driver schedule show "$off")"
expect_eq "off-shift driver's zone" "$(json_field "$shown" .schedule.zone)" "$zone"
expect_eq "off-shift driver's next shift is not now" "$(json_field "$shown" '.next_shifts[0].current')" "false"
expect_eq "off-shift driver's next shift starts" \
  "$(json_field "$shown" '.next_shifts[0].start' | cut -d' ' -f2-3)" "$later 08:00"
shown="$(rc driver schedule show "$on")"
expect_eq "on-shift driver's windows" "$(json_field "$shown" '.schedule.weekly | length')" "7"
expect_eq "on-shift driver is on shift" "$(json_field "$shown" '.next_shifts[0].current')" "true"
"$RIDECTL" --output table driver schedule show "$off" | grep -q "$later 08:00" ||
  fail "the table does not show the coming shift"

ride="$(confirmed_ride "u_sc_$RUN_ID" "$pickup" "$dropoff")"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
expect_eq "driver of the ride" "$(json_field "$(rc ride show "$ride")" .driver_id)" "$on"
shown="$(rc driver show "$on")"
expect_eq "driver state" "$(json_field "$shown" .state)" "on ride"
expect_eq "driver's current ride" "$(json_field "$shown" .current_ride)" "$ride"
expect_eq "driver's shift is current" "$(json_field "$shown" .shift.current)" "true"
expect_eq "off-shift driver's state" "$(json_field "$(rc driver show "$off")" .state)" "off shift"

# The shift ends under way: the new schedule has only a shift two days ago. The ride goes on.
rc driver schedule set "$on" --zone "$zone" --shift "${earlier}T08:00/${earlier}T16:00" \
  "${wait[@]}" >/dev/null
sleep 2
shown="$(rc driver show "$on")"
expect_eq "driver still on the ride after their shift" "$(json_field "$shown" .current_ride)" "$ride"
rc ride complete "$ride" --distance-km 1.2 --duration-min 5 --expect completed \
  --timeout "$E2E_TIMEOUT" >/dev/null
expect_eq "driver after the ride, off shift" "$(json_field "$(rc driver show "$on")" .state)" "off shift"

# Cleared: the nearer driver is matched whenever online again.
rc driver schedule clear "$off" "${wait[@]}" >/dev/null
expect_eq "cleared schedule" "$(json_field "$(rc driver schedule show "$off")" .scheduled)" "false"
expect_eq "unscheduled driver's state" "$(json_field "$(rc driver show "$off")" .state)" "available"
second="$(rc ride request --rider "u_sc2_$RUN_ID" --from "$pickup" --to "$dropoff" \
  --card tok_visa --expect confirmed --timeout "$E2E_TIMEOUT" | jq -r .ride_id)"
expect_eq "driver of the second ride" "$(json_field "$(rc ride show "$second")" .driver_id)" "$off"
rc ride cancel "$second" --expect cancelled --timeout "$E2E_TIMEOUT" >/dev/null
finish
