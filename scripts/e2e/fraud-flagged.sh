#!/usr/bin/env bash
# Fraud: a blocked rider's request is flagged and rejected; no driver is assigned and nothing is
# held, although a driver is available nearby. City: Paris.
set -euo pipefail
USAGE="scripts/e2e/fraud-flagged.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

at="$(near 48.8566 2.3522)"
rider="u_ff_$RUN_ID"
driver_online "d_ff_$RUN_ID" "Fraud $RUN_ID" "$at"
rc fraud block "$rider" --reason "e2e $RUN_ID" --wait --timeout "$E2E_TIMEOUT" >/dev/null
log "rider $rider blocked"

ride="$(rc ride request --rider "$rider" --from "$at" --to "$(near 48.8600 2.3400)" \
  --card tok_visa --expect rejected --timeout "$E2E_TIMEOUT")"
expect_eq "flagged" "$(json_field "$ride" .flagged)" "true"
expect_eq "driver" "$(json_field "$ride" '.driver_id // "none"')" "none"
expect_eq "held cents" "$(json_field "$ride" .held_cents)" "0"

rc fraud unblock "$rider" --wait --timeout "$E2E_TIMEOUT" >/dev/null
finish
