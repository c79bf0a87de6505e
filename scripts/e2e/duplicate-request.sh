#!/usr/bin/env bash
# Duplicate request: the same --id sent twice is one command and one ride. City: Lisbon.
set -euo pipefail
USAGE="scripts/e2e/duplicate-request.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 38.7223 -9.1393)"
to="$(near 38.7100 -9.1300)"
ride="r_dup_$RUN_ID"
driver_online "d_dup_$RUN_ID" "Twice $RUN_ID" "$at"

request=(ride request --rider "u_dup_$RUN_ID" --from "$at" --to "$to" --card tok_visa --id "$ride")
first="$(rc "${request[@]}")"
second="$(rc "${request[@]}")"
expect_eq "first publish is a duplicate" "$(json_field "$first" .duplicate)" "false"
expect_eq "second publish is a duplicate" "$(json_field "$second" .duplicate)" "true"

# A third time with --expect follows the one saga to its resting state.
rc "${request[@]}" --expect confirmed --timeout "$E2E_TIMEOUT" >/dev/null
commands="$(rc events tail "cmd.ride.request.$ride" --no-follow | wc -l)"
expect_eq "request commands stored" "$commands" "1"
requested="$(rc events tail "evt.ride.requested.$ride" --no-follow | wc -l)"
expect_eq "rides requested" "$requested" "1"

rc ride cancel "$ride" --expect cancelled:rider --timeout "$E2E_TIMEOUT" >/dev/null
finish
