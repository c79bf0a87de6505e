#!/usr/bin/env bash
# Replicas and a scale-down: a backlog behind a stopped payment worker is drained by three
# replicas; then two of them get SIGTERM while rides keep coming, and nothing is lost.
#  1. The ride worker is restarted with long deadlines (RIDESAGA_MATCH_DEADLINE 300s,
#     RIDESAGA_CONFIRM_GRACE 60s, RIDESAGA_PICKUP_DEADLINE 600s), so that no ride expires
#     while payment is down, whatever the system was started with.
#  2. E2E_BACKLOG drivers (default 300) online; payment-worker stopped with SIGTERM;
#     E2E_BACKLOG rides requested: each gets a driver, and its request and assignment wait on
#     payment's consumer (2 x E2E_BACKLOG pending, every other consumer idle).
#  3. `scripts/up --only payment --replicas 3` (gateway latency 20ms, so calls are in flight):
#     the three drain the backlog, each handling part of it (ridectl services); every ride is
#     started and completed; each ends completed, its hold, capture, driver release and
#     receipt each stored once; `ridectl audit --settle 0s` finds every saga ended and nothing
#     broken (one capture per ride, equal to its fare; every rider told; no driver twice).
#  4. E2E_SCALE_DOWN more rides (default 150), four requests at a time; once a third of them
#     are requested, payment-worker-2 and -3 get SIGTERM together and must drain and exit while
#     the rest are requested; every ride completes as above, one payment replica is left,
#     nothing is dead-lettered, and the audit is clean.
# The default backlog is smaller than the 2,000 sagas of the saga test (`cargo test -p
# ridesaga-workers --test it saga::replicas::a_backlog_drains`) and of `scripts/bench --backlog 2000
# --replicas 3`, since ridectl runs as a process per command here; E2E_BACKLOG=2000
# E2E_SCALE_DOWN=500 E2E_TIMEOUT=120s runs it at that size (about two minutes on 2 cores).
# Needs a system of its own started by scripts/up (it stops and starts workers through the
# pid files in RIDESAGA_RUN_DIR, default .run, and scripts/up); scripts/test gives every e2e
# script one. City: Prague.
set -euo pipefail
USAGE="scripts/e2e/replicas-backlog.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
RUN_DIR="${RIDESAGA_RUN_DIR:-$ROOT/.run}"
BACKLOG="${E2E_BACKLOG:-300}"
SCALE_DOWN="${E2E_SCALE_DOWN:-150}"
[[ "$BACKLOG" =~ ^[1-9][0-9]*$ && "$SCALE_DOWN" =~ ^[1-9][0-9]*$ ]] ||
  fail "E2E_BACKLOG and E2E_SCALE_DOWN must be positive numbers"
[[ -f "$RUN_DIR/pids/payment-worker.pid" ]] ||
  fail "no payment-worker recorded in $RUN_DIR/pids: start the system with scripts/up (RIDESAGA_RUN_DIR)"
# scripts/up again, on the server and databases the system runs on.
up_args=(--db "$(cat "$RUN_DIR/db" 2>/dev/null || echo sqlite)")
[[ -f "$RUN_DIR/cluster-ports" ]] && up_args+=(--cluster)
tmp="$(mktemp -d)"

# alive PID: the process exists and is not a zombie.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ ! -r "/proc/$1/stat" ]] || [[ "$(sed 's/^.*) //' "/proc/$1/stat" | cut -d' ' -f1)" != Z ]]
}

# pid_of NAME: the pid of the worker scripts/up recorded as NAME, while it runs.
pid_of() {
  local pid
  pid="$(tr -dc '0-9' <"$RUN_DIR/pids/$1.pid" 2>/dev/null)" || return 1
  [[ -n "$pid" ]] && alive "$pid" && printf '%s\n' "$pid"
}

# sigterm NAME...: SIGTERM to each of these workers at once; each must drain and exit within
# 30 s, its log (from then on) saying it stopped.
sigterm() {
  local name pid pids=() deadline=$((SECONDS + 30))
  local -A logged
  for name in "$@"; do
    pid="$(pid_of "$name")" || fail "$name is not running"
    logged[$name]="$(wc -l <"$RUN_DIR/logs/$name.log")"
    kill -TERM "$pid"
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do
    while alive "$pid"; do
      ((SECONDS < deadline)) || fail "a worker (pid $pid) still runs 30 s after SIGTERM"
      sleep 0.1
    done
  done
  for name in "$@"; do
    tail -n "+$((logged[$name] + 1))" "$RUN_DIR/logs/$name.log" | grep -q "worker stopped" ||
      fail "$name exited without draining; last lines of its log: $(tail -n 5 "$RUN_DIR/logs/$name.log")"
    rm -f "$RUN_DIR/pids/$name.pid"
  done
  log "stopped (drained): $*"
}

# up ARGS...: scripts/up on this system, its output in the log only when it fails.
up() {
  "$ROOT/scripts/up" "${up_args[@]}" "$@" >"$tmp/up.log" 2>&1 ||
    fail "scripts/up $* failed: $(tail -n 20 "$tmp/up.log")"
}

# Whatever happens, a payment worker runs again afterwards.
restore() {
  local status=$?
  pid_of payment-worker >/dev/null || "$ROOT/scripts/up" "${up_args[@]}" --only payment \
    >/dev/null 2>&1 || log "could not start payment-worker again"
  rm -rf "$tmp"
  exit "$status"
}
trap restore EXIT

# Seconds in E2E_TIMEOUT (60s, 2m, ...).
timeout_s="$(awk -v d="$E2E_TIMEOUT" 'BEGIN { n = d + 0; u = d; sub(/^[0-9.]+/, "", u);
  printf "%d\n", n * ((u == "m") ? 60 : (u == "h") ? 3600 : 1) }')"

# consumer FIELD SERVICE: a field of the service's consumer (pending, ack_pending, ...).
consumer() {
  rc consumers | jq -r --arg c "$2-worker" ".[] | select(.consumer == \$c) | .$1"
}

# Waits until every consumer but those named has delivered everything and had it acknowledged.
idle_but() {
  local deadline=$((SECONDS + timeout_s)) busy
  while :; do
    busy="$(rc consumers | jq -r --arg skip " $* " \
      '[.[] | (" " + .service + " ") as $name | select($skip | contains($name) | not)
            | select(.pending > 0 or .ack_pending > 0) | "\(.consumer) \(.pending)/\(.ack_pending)"]
       | join(", ")')"
    [[ -z "$busy" ]] && return 0
    ((SECONDS < deadline)) || fail "consumers still busy after $E2E_TIMEOUT: $busy"
    sleep 0.2
  done
}

# request_rides FILE FROM TO: requests rides r_rb<N>_$RUN_ID for N in FROM..TO, four at a
# time, each by a rider of its own, and appends each ride id to FILE once it is stored.
request_rides() {
  # shellcheck disable=SC2016 # the inner shell expands its own arguments
  seq "$2" "$3" | xargs -P 4 -I{} sh -c '"$1" --output json ride request --rider "u_rb{}_$2" \
    --from "$3" --to "$4" --card tok_visa --id "r_rb{}_$2" >/dev/null && echo "r_rb{}_$2"' \
    sh "$RIDECTL" "$RUN_ID" "$at" "$to" >>"$1"
}

# in_state FILE STATE: how many of the rides listed in FILE are in STATE (`ridectl saga list`).
in_state() {
  rc saga list | jq -r --arg state "$2" '.[] | select(.state == $state) | .ride_id' |
    grep -cFxf "$1"
}

# await_state FILE STATE: waits until every ride listed in FILE is in STATE.
await_state() {
  local want deadline=$((SECONDS + timeout_s))
  want="$(wc -l <"$1")"
  until [[ "$(in_state "$1" "$2")" == "$want" ]]; do
    ((SECONDS < deadline)) || fail "$(in_state "$1" "$2") of $want rides $2 within $E2E_TIMEOUT"
    sleep 0.5
  done
  log "ok: $want rides $2"
}

# send COMMAND FILE: `ridectl ride COMMAND` for every ride listed in FILE, eight at a time,
# without waiting on the sagas (a ridectl that waits follows the stream with a consumer of its
# own, and the server allows a stream 1,000 of them).
send() {
  xargs -P 8 -I{} "$RIDECTL" --output json ride "$1" {} <"$2" >/dev/null 2>"$tmp/send.log" ||
    fail "ridectl ride $1 failed: $(tail -n 5 "$tmp/send.log")"
}

# once_each FILE SUBJECT [JQ_SELECT]: how many of the rides listed in FILE have a message on
# SUBJECT (that JQ_SELECT keeps); fails if one of them has two.
once_each() {
  local twice
  rc events tail "$2" --no-follow | jq -r "${3:-.} | .envelope.saga_id" | grep -Fxf "$1" |
    sort | uniq -c >"$tmp/once" || true
  twice="$(awk '$1 > 1 { print $2 }' "$tmp/once" | head -n 3)"
  [[ -z "$twice" ]] || fail "$2${3:+ ($3)} stored twice for: $twice"
  wc -l <"$tmp/once"
}

# await_once FILE SUBJECT JQ_SELECT WHAT: waits until every ride in FILE has its message on
# SUBJECT, each one message.
await_once() {
  local want got deadline=$((SECONDS + timeout_s))
  want="$(wc -l <"$1")"
  while :; do
    got="$(once_each "$1" "$2" "$3")"
    [[ "$got" == "$want" ]] && { log "ok: $4: $got, once each"; return 0; }
    ((SECONDS < deadline)) || fail "$4: $got of $want within $E2E_TIMEOUT"
    sleep 0.5
  done
}

# drive FILE: starts every ride listed in FILE once they are all confirmed, then completes
# them; each must end completed, with its hold, capture, driver release and receipt each
# stored once (the audit then checks each capture against its fare).
drive() {
  local want
  want="$(wc -l <"$1")"
  await_state "$1" confirmed
  send start "$1"
  await_state "$1" started
  send complete "$1"
  await_state "$1" completed
  expect_eq "holds placed, once each" "$(once_each "$1" 'evt.payment.authorized.*')" "$want"
  await_once "$1" 'evt.payment.captured.*' . "captures"
  await_once "$1" 'evt.driver.released.*' . "drivers released"
  await_once "$1" 'evt.notification.sent.*' 'select(.envelope.data.kind == "receipt")' "receipts"
}

# audit: the whole log, every saga judged as settled.
audit() {
  local report
  report="$(rc audit --settle 0s)" || fail "ridectl audit: $(jq -c .violations <<<"$report")"
  expect_eq "sagas in flight (audit)" "$(json_field "$report" .in_flight)" "0"
  expect_eq "sagas ended (audit)" "$(json_field "$report" .terminal)" \
    "$(json_field "$report" .sagas)"
}

# payment_replicas: `instance handled` of each payment replica that answers.
payment_replicas() {
  rc services --wait 1s | jq -r '.[] | select(.service == "payment") | "\(.instance) \(.stats.handled)"'
}

at="$(near 50.0755 14.4378)"
to="$(near 50.0600 14.4200)"

# 1. Long deadlines for the ride service.
sigterm ride-worker
RIDESAGA_MATCH_DEADLINE=300s RIDESAGA_CONFIRM_GRACE=60s RIDESAGA_PICKUP_DEADLINE=600s \
  up --only ride
log "ride-worker restarted with long deadlines"

# 2. Drivers, then the backlog.
seq 1 "$BACKLOG" | xargs -P 4 -I{} "$RIDECTL" --output json driver register "d_rb{}_$RUN_ID" \
  --name "Replica {}" --at "$at" >/dev/null || fail "a driver registration failed"
idle_but
seq 1 "$BACKLOG" | xargs -P 4 -I{} "$RIDECTL" --output json driver online "d_rb{}_$RUN_ID" \
  >/dev/null || fail "a driver did not go online"
idle_but
log "$BACKLOG drivers online"

sigterm payment-worker
started=$SECONDS
request_rides "$tmp/backlog" 1 "$BACKLOG" || fail "a request failed"
expect_eq "rides requested" "$(wc -l <"$tmp/backlog")" "$BACKLOG"
idle_but payment
expect_eq "messages waiting for payment" "$(consumer pending payment)" "$((2 * BACKLOG))"
expect_eq "taken by no one" "$(consumer ack_pending payment)" "0"
log "backlog built in $((SECONDS - started)) s"

# 3. Three replicas drain it.
started=$SECONDS
RIDESAGA_GATEWAY_LATENCY=20ms up --only payment --replicas 3
drive "$tmp/backlog"
log "backlog drained and every ride completed in $((SECONDS - started)) s"
mapfile -t replicas < <(payment_replicas)
expect_eq "payment replicas" "${#replicas[@]}" "3"
for replica in "${replicas[@]}"; do
  [[ "${replica#* }" -gt 0 ]] || fail "payment replica ${replica% *} handled nothing"
done
log "inputs handled by each replica: ${replicas[*]}"
audit

# 4. The scale-down: two replicas get SIGTERM while rides keep coming.
first=$((BACKLOG + 1))
last=$((BACKLOG + SCALE_DOWN))
: >"$tmp/scale-down"
request_rides "$tmp/scale-down" "$first" "$last" &
load=$!
deadline=$((SECONDS + timeout_s))
while (($(wc -l <"$tmp/scale-down") < SCALE_DOWN / 3)); do
  ((SECONDS < deadline)) || fail "a third of the rides not requested within $E2E_TIMEOUT"
  sleep 0.05
done
requested="$(wc -l <"$tmp/scale-down")"
((requested < SCALE_DOWN)) || fail "every ride was requested already: not in the middle of the load"
log "$requested of $SCALE_DOWN rides requested: SIGTERM to two payment replicas"
sigterm payment-worker-2 payment-worker-3
wait "$load" || fail "a request failed"
expect_eq "rides requested" "$(wc -l <"$tmp/scale-down")" "$SCALE_DOWN"
drive "$tmp/scale-down"
mapfile -t replicas < <(payment_replicas)
expect_eq "payment replicas left" "${#replicas[@]}" "1"
expect_eq "dead letters" "$(rc dlq list | jq length)" "0"
idle_but
audit
log "PASS"
