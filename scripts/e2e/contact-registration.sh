#!/usr/bin/env bash
# Contact details at registration: a rider's and a driver's email address and phone number are
# registered (a malformed address or a number not in E.164 is refused, exit 2), and a ride's
# notifications are each sent once; with the default channels (log) their events say so.
# Email and SMS delivery against real servers are covered by workers/tests/notify. Uses
# ridectl only. City: Madrid.
set -euo pipefail
USAGE="scripts/e2e/contact-registration.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"

rider="u_cr_$RUN_ID"
driver="d_cr_$RUN_ID"
at="$(near 40.4168 -3.7038)"

refused() {
  local what="$1" want="$2" out code=0
  shift 2
  out="$("$RIDECTL" --output json "$@" 2>&1)" || code=$?
  expect_eq "$what: exit code" "$code" "2"
  grep -q "$want" <<<"$out" || fail "$what: no '$want' in: $out"
}
refused "malformed address" "is not an email address" rider register "$rider" --email "ada.example.com"
refused "address without a domain" "the domain needs a dot" rider register "$rider" --email "ada@localhost"
refused "phone not in E.164" "not a phone number in E.164" \
  driver register "$driver" --name "Contact $RUN_ID" --at "$at" --phone "0151 1234567"

published="$(rc rider register "$rider" --email "ada.$RUN_ID@example.com" --phone "+4915112345678")"
expect_eq "rider registration's subject" "$(json_field "$published" .subject)" "cmd.rider.register.$rider"
driver_online "$driver" "Contact $RUN_ID" "$at" --email "driver.$RUN_ID@example.com" \
  --phone "+34600000001"

ride="$(confirmed_ride "$rider" "$at" "$(near 40.4000 -3.6900)")"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
rc ride complete "$ride" --expect completed --timeout "$E2E_TIMEOUT" >/dev/null

# Driver assigned (rider and driver), confirmed, receipt: four notifications, each once.
sent="$(sent_notifications "$ride" 4 30)"
n="$(jq -s 'length' <<<"$sent")"
expect_eq "notifications sent" "$n" "4"
expect_eq "distinct notifications" \
  "$(jq -s '[.[] | .envelope.data | "\(.kind)/\(.recipient)"] | unique | length' <<<"$sent")" "4"
expect_eq "channels" "$(jq -s -r '[.[] | .envelope.data.channel] | unique | join(",")' <<<"$sent")" "log"
finish
