#!/usr/bin/env bash
# No driver: a ride where no driver is online is cancelled with reason no_driver once the match
# deadline passes. Run the workers with a short RIDESAGA_MATCH_DEADLINE (e.g. 5s) and set
# E2E_TIMEOUT above it. City: Reykjavik, where no script places drivers.
set -euo pipefail
USAGE="scripts/e2e/no-driver.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

ride="$(rc ride request --rider "u_nd_$RUN_ID" --from "$(near 64.1466 -21.9426)" \
  --to "$(near 64.1400 -21.9000)" --card tok_visa --expect cancelled:no_driver \
  --timeout "$E2E_TIMEOUT")"
expect_eq "held cents" "$(json_field "$ride" .held_cents)" "0"
finish
