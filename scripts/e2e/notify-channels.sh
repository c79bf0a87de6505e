#!/usr/bin/env bash
# Notifications people receive: with `scripts/up --receivers`, a registered rider's
# notifications arrive by email (aiosmtpd's maildir) and the driver's by SMS (the receiver's
# log), once each, with the text their evt.notification.sent carries and its id as the mail's
# Message-ID and the SMS's idempotency key. Drives the system with ridectl only; reads what
# the receivers got from RIDESAGA_MAILDIR and RIDESAGA_SMS_LOG (.run/env). City: Vienna.
set -euo pipefail
USAGE="scripts/e2e/notify-channels.sh"
source "$(dirname "$0")/lib.bash"
usage_check "$@"
[[ -n "${RIDESAGA_MAILDIR:-}" && -n "${RIDESAGA_SMS_LOG:-}" ]] ||
  fail "RIDESAGA_MAILDIR and RIDESAGA_SMS_LOG are not set: start the system with scripts/up --receivers"

rider="u_nc_$RUN_ID"
driver="d_nc_$RUN_ID"
email="rider.$RUN_ID@example.com"
phone="+4366000$((RUN_ID % 100000))"
at="$(near 48.2082 16.3738)"

rc rider register "$rider" --email "$email" >/dev/null
driver_online "$driver" "Notify $RUN_ID" "$at" --phone "$phone"

ride="$(confirmed_ride "$rider" "$at" "$(near 48.1900 16.3600)")"
rc ride start "$ride" --expect started --timeout "$E2E_TIMEOUT" >/dev/null
rc ride complete "$ride" --expect completed --timeout "$E2E_TIMEOUT" >/dev/null

# The rider: driver assigned, confirmed, receipt by email; the driver: driver assigned by SMS.
sent="$(sent_notifications "$ride" 4 40)"
n="$(jq -s 'length' <<<"$sent")"
expect_eq "notifications sent" "$n" "4"
expect_eq "riders' channel" \
  "$(jq -s -r '[.[] | .envelope.data | select(.recipient == "rider") | .channel] | unique | join(",")' <<<"$sent")" "email"
expect_eq "driver's channel" \
  "$(jq -s -r '[.[] | .envelope.data | select(.recipient == "driver") | .channel] | join(",")' <<<"$sent")" "sms"

# Each of the rider's notifications is one mail, with its event's id as the Message-ID.
for id in $(jq -s -r '.[] | select(.envelope.data.recipient == "rider") | .envelope.id' <<<"$sent"); do
  mails="$(grep -rlF "Message-ID: <$id@ridesaga.test>" "$RIDESAGA_MAILDIR" 2>/dev/null | wc -l)"
  expect_eq "mails with Message-ID <$id@…>" "$mails" "1"
  file="$(grep -rlF "Message-ID: <$id@ridesaga.test>" "$RIDESAGA_MAILDIR")"
  grep -qF "To: $email" "$file" || fail "mail $id is not to $email: $(cat "$file")"
  grep -qF "Subject: Ride $ride:" "$file" || fail "mail $id has no subject for $ride"
done
receipts="$(grep -rlF "Receipt for ride $ride" "$RIDESAGA_MAILDIR" | wc -l)"
expect_eq "receipt mails" "$receipts" "1"

driver_id="$(jq -s -r '.[] | select(.envelope.data.recipient == "driver") | .envelope.id' <<<"$sent")"
sms="$(jq -c --arg key "$driver_id" 'select(.idempotency_key == $key)' "$RIDESAGA_SMS_LOG")"
expect_eq "SMS with the event's idempotency key" "$(grep -c . <<<"$sms")" "1"
expect_eq "SMS to" "$(json_field "$sms" .to)" "$phone"
expect_eq "SMS text" "$(json_field "$sms" .body)" \
  "$(jq -s -r '.[] | select(.envelope.data.recipient == "driver") | .envelope.data.text' <<<"$sent")"
finish
