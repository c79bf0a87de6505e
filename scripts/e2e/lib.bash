# Shared by the end-to-end saga scripts (sourced, not run). Every script drives the system only
# through ridectl, with --output json and exit codes (--expect), uses ids unique to the run and
# drivers in its own city, so the scripts can run at the same time against one shared system.
#
# Needs: NATS_URL (e.g. `source .run/env`), ridectl on PATH or RIDECTL=/path/to/ridectl, jq.
# E2E_TIMEOUT bounds each wait (default 60s).

SCRIPT="$(basename "$0")"
RIDECTL="${RIDECTL:-ridectl}"
E2E_TIMEOUT="${E2E_TIMEOUT:-60s}"
RUN_ID="$RANDOM$$"
DRIVERS=()

log() { printf '%s: %s\n' "$SCRIPT" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

usage_check() {
  case "${1:-}" in
    -h|--help) sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    "") ;;
    *) printf 'usage: %s\n' "$USAGE" >&2; exit 2 ;;
  esac
  command -v "$RIDECTL" >/dev/null 2>&1 || fail "ridectl not found: put it on PATH or set RIDECTL"
  command -v jq >/dev/null 2>&1 || fail "jq is needed to read ridectl's JSON"
  [[ -n "${NATS_URL:-}" ]] || fail "NATS_URL is not set (source .run/env)"
}

# ridectl with JSON output.
rc() { "$RIDECTL" --output json "$@"; }

# A point near LAT,LNG, shifted by this run's id so runs of the same script do not share
# positions (about 50 m steps, at most ~5 km).
near() {
  awk -v lat="$1" -v lng="$2" -v n="$((RUN_ID % 100))" \
    'BEGIN { printf "%.5f,%.5f", lat + n * 0.0005, lng + n * 0.0005 }'
}

# Registers a driver at a point (with any further registration arguments, e.g. --email) and
# puts it online, waiting until the driver service has both: driver_online ID NAME AT [ARGS...].
driver_online() {
  local id="$1" name="$2" at="$3"
  rc driver register "$id" --name "$name" --at "$at" "${@:4}" --wait --timeout "$E2E_TIMEOUT" \
    >/dev/null
  rc driver online "$id" --wait --timeout "$E2E_TIMEOUT" >/dev/null
  DRIVERS+=("$id")
  log "driver $id online at $at"
}

# A ride of RIDER from FROM to TO with a card that pays, once confirmed; prints its id:
# confirmed_ride RIDER FROM TO.
confirmed_ride() {
  rc ride request --rider "$1" --from "$2" --to "$3" --card tok_visa --expect confirmed \
    --timeout "$E2E_TIMEOUT" | jq -r .ride_id
}

# Waits up to SECONDS until COUNT notifications of RIDE were sent, then prints those sent (one
# JSON object a line): sent_notifications RIDE COUNT SECONDS.
sent_notifications() {
  local ride="$1" count="$2" deadline=$((SECONDS + $3)) sent
  while :; do
    sent="$(rc events tail "evt.notification.sent.$ride" --since 10m --no-follow)"
    (($(jq -s 'length' <<<"$sent") >= count || SECONDS > deadline)) && break
    sleep 0.5
  done
  printf '%s\n' "$sent"
}

# Takes this run's drivers offline again so later runs do not match them.
drivers_offline() {
  local id
  for id in "${DRIVERS[@]}"; do
    rc driver offline "$id" --wait --timeout 10s >/dev/null 2>&1 || log "could not take $id offline"
  done
}
trap drivers_offline EXIT

# Reads one field from a JSON document: json_field DOC FILTER.
json_field() { jq -r "$2" <<<"$1"; }

expect_eq() {
  local what="$1" got="$2" want="$3"
  [[ "$got" == "$want" ]] || fail "$what: got $got, want $want"
  log "ok: $what = $got"
}

# The audit of the whole event log must pass.
finish() {
  rc audit >/dev/null || fail "ridectl audit found invariant violations (see above)"
  log "PASS"
}
