//! Bounds on what a message may carry beyond its types: amounts, distances, durations, scores,
//! text and deadlines. [`Envelope::validate`](crate::Envelope::validate) checks every message
//! against them before it is published (by `ridectl` and by the workers, for their outputs) and
//! [`Envelope::decode`](crate::Envelope::decode) again on receipt; the JSON Schemas under
//! `schemas/json/` state the same bounds.
//!
//! The bounds refuse what is absurd, not what is unusual: a service's own rules (the longest
//! trip it accepts, the longest ride it completes) are narrower and answered with an event.

use std::time::Duration;

use crate::messages::{Message, Timestamp};

/// The largest amount of money in a message, in cents: one million in the currency's units.
pub const MAX_AMOUNT_CENTS: u64 = 100_000_000;
/// The longest distance in a message, in kilometres: once around the earth at the equator.
pub const MAX_DISTANCE_KM: f64 = 40_075.0;
/// The longest duration in a message, in minutes: a week.
pub const MAX_DURATION_MIN: f64 = 7.0 * 24.0 * 60.0;
/// The highest fraud score.
pub const MAX_SCORE: u32 = 100;
/// The longest text field (a name, a reason, a code, a token), in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// The longest notification text, in characters; it may quote one other text field.
pub const MAX_NOTIFICATION_CHARS: usize = 2_000;
/// The most entries in a list of reasons.
pub const MAX_REASONS: usize = 16;
/// How long after its message occurred a deadline may fall: a week. Every deadline the
/// services set is minutes away; one further out would keep a saga waiting for nothing.
pub const MAX_DEADLINE_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest email address, in characters (RFC 5321's path limit less its brackets).
pub const MAX_EMAIL_CHARS: usize = 254;
/// The JSON Schema `pattern` of an email address, as [`check_email`] accepts it: a dot-atom
/// local part, `@`, and a domain of at least two DNS labels.
pub const EMAIL_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";
/// The JSON Schema `pattern` of a phone number in E.164: `+`, a country code that does not
/// start with 0, at most 15 digits in all.
pub const PHONE_PATTERN: &str = r"^\+[1-9][0-9]{1,14}$";

/// The JSON Schema `pattern` of a text field: no character [`is_forbidden_char`] refuses.
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]*$";

/// Why a value is refused. `field` is the payload field, as it is spelled in JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{field} is {value}; at most {max} is allowed")]
    TooLarge { field: String, value: u64, max: u64 },
    #[error("{field} is {value}; at least {min} is required")]
    TooSmall { field: String, value: u64, min: u64 },
    #[error("{field} is {value:?}; it must be a number between 0 and {max:?}")]
    OutOfRange { field: String, value: f64, max: f64 },
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
    },
    #[error("{field} contains the control character {found:?}")]
    ControlCharacter { field: String, found: char },
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        field: String,
        count: usize,
        max: usize,
    },
    #[error("{field}: {problem}")]
    Invalid { field: String, problem: String },
    #[error("{field} {value:?} is not an email address ({problem})")]
    NotAnEmail {
        field: String,
        value: String,
        problem: &'static str,
    },
    #[error(
        "{field} {value:?} is not a phone number in E.164 form (+ and 2 to 15 digits, \
         the country code first, e.g. +4915112345678)"
    )]
    NotAPhone { field: String, value: String },
    #[error(
        "{field} {value} is more than {} days after the message occurred ({occurred_at})",
        MAX_DEADLINE_AHEAD.as_secs() / 86_400
    )]
    DeadlineTooFar {
        field: String,
        value: Timestamp,
        occurred_at: Timestamp,
    },
}

/// Characters no text field may hold: control characters (terminal escapes, line breaks, NUL)
/// and the bidirectional overrides and isolates that make text display as something else.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks a text field: at most [`MAX_TEXT_CHARS`] characters, none of them forbidden.
pub fn check_text(field: &str, value: &str) -> Result<(), ValueError> {
    check_text_within(field, value, MAX_TEXT_CHARS)
}

fn check_text_within(field: &str, value: &str, max: usize) -> Result<(), ValueError> {
    if let Some(found) = value.chars().find(|c| is_forbidden_char(*c)) {
        return Err(ValueError::ControlCharacter {
            field: field.to_owned(),
            found,
        });
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValueError::TooLong {
            field: field.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// The characters RFC 5322 allows in a dot-atom, besides the dots between atoms.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c)
}

/// Checks an email address: a dot-atom local part (no quoted strings, no leading, trailing or
/// doubled dot), `@`, and a domain of at least two DNS labels (letters, digits and inner
/// hyphens, at most 63 each); at most [`MAX_EMAIL_CHARS`] in all. [`EMAIL_PATTERN`] says the
/// same.
pub fn check_email(field: &str, value: &str) -> Result<(), ValueError> {
    let refuse = |problem| ValueError::NotAnEmail {
        field: field.to_owned(),
        value: value.to_owned(),
        problem,
    };
    if value.chars().count() > MAX_EMAIL_CHARS {
        return Err(refuse("longer than 254 characters"));
    }
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Err(refuse("no '@'"));
    };
    if local.is_empty() {
        return Err(refuse("nothing before the '@'"));
    }
    if !local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
    {
        return Err(refuse(
            "the part before the '@' has a character or a dot out of place",
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(refuse("the domain needs a dot, e.g. example.com"));
    }
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if !labels.iter().all(|l| label_ok(l)) {
        return Err(refuse("the domain is not a host name"));
    }
    Ok(())
}

/// Checks a phone number in E.164: `+`, then 2 to 15 digits, the first not 0.
/// [`PHONE_PATTERN`] says the same.
pub fn check_phone(field: &str, value: &str) -> Result<(), ValueError> {
    let digits = value.strip_prefix('+').unwrap_or_default();
    let ok = (2..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    if ok {
        Ok(())
    } else {
        Err(ValueError::NotAPhone {
            field: field.to_owned(),
            value: value.to_owned(),
        })
    }
}

/// Checks the optional email address and phone number of a registration.
fn check_contact(email: &Option<String>, phone: &Option<String>) -> Result<(), ValueError> {
    email
        .as_deref()
        .map_or(Ok(()), |v| check_email("email", v))?;
    phone.as_deref().map_or(Ok(()), |v| check_phone("phone", v))
}

/// Checks a distance in kilometres: finite, 0 to [`MAX_DISTANCE_KM`].
pub fn check_km(field: &str, value: f64) -> Result<(), ValueError> {
    check_between(field, value, MAX_DISTANCE_KM)
}

/// Checks a duration in minutes: finite, 0 to [`MAX_DURATION_MIN`].
pub fn check_minutes(field: &str, value: f64) -> Result<(), ValueError> {
    check_between(field, value, MAX_DURATION_MIN)
}

fn check_between(field: &str, value: f64, max: f64) -> Result<(), ValueError> {
    // NaN fails the range check too.
    if (0.0..=max).contains(&value) {
        Ok(())
    } else {
        Err(ValueError::OutOfRange {
            field: field.to_owned(),
            value,
            max,
        })
    }
}

/// Checks an amount of money in cents: at most [`MAX_AMOUNT_CENTS`].
pub fn check_cents(field: &str, value: u64) -> Result<(), ValueError> {
    check_at_most(field, value, MAX_AMOUNT_CENTS)
}

fn check_at_most(field: &str, value: u64, max: u64) -> Result<(), ValueError> {
    if value <= max {
        Ok(())
    } else {
        Err(ValueError::TooLarge {
            field: field.to_owned(),
            value,
            max,
        })
    }
}

fn check_score(value: u32) -> Result<(), ValueError> {
    check_at_most("score", u64::from(value), u64::from(MAX_SCORE))
}

fn check_reasons(reasons: &[String]) -> Result<(), ValueError> {
    if reasons.len() > MAX_REASONS {
        return Err(ValueError::TooMany {
            field: "reasons".into(),
            count: reasons.len(),
            max: MAX_REASONS,
        });
    }
    for (i, reason) in reasons.iter().enumerate() {
        check_text(&format!("reasons[{i}]"), reason)?;
    }
    Ok(())
}

fn check_deadline(field: &str, value: Timestamp, occurred_at: Timestamp) -> Result<(), ValueError> {
    let ahead = time::Duration::seconds(MAX_DEADLINE_AHEAD.as_secs() as i64);
    // A bound past the end of time bounds nothing.
    let Some(latest) = occurred_at.0.checked_add(ahead) else {
        return Ok(());
    };
    if value.0 <= latest {
        Ok(())
    } else {
        Err(ValueError::DeadlineTooFar {
            field: field.to_owned(),
            value,
            occurred_at,
        })
    }
}

fn optional<T: Copy>(
    value: Option<T>,
    check: impl FnOnce(T) -> Result<(), ValueError>,
) -> Result<(), ValueError> {
    value.map_or(Ok(()), check)
}

fn optional_text(field: &str, value: &Option<String>) -> Result<(), ValueError> {
    value.as_deref().map_or(Ok(()), |v| check_text(field, v))
}

/// A schedule, if any: a known zone, readable times, shifts that end after they start, no
/// more windows and shifts than allowed.
fn check_schedule(schedule: &Option<crate::schedule::DriverSchedule>) -> Result<(), ValueError> {
    match schedule {
        Some(s) => s.check().map_err(|e| ValueError::Invalid {
            field: "schedule".into(),
            problem: e.0,
        }),
        None => Ok(()),
    }
}

/// A route summary's numbers within their bounds.
fn check_route(route: &crate::messages::RouteSummary) -> Result<(), ValueError> {
    check_km("route.length_km", route.length_km)?;
    check_km("route.displacement_km", route.displacement_km)?;
    check_km("route.spread_km", route.spread_km)?;
    check_between(
        "route.duration_s",
        route.duration_s,
        crate::messages::MAX_ROUTE_SECONDS,
    )?;
    check_between(
        "route.max_speed_kmh",
        route.max_speed_kmh,
        crate::messages::MAX_SPEED_KMH,
    )
}

impl Message {
    /// Checks the values the payload's types cannot: amounts, distances, durations and scores
    /// within their bounds, text short and free of control characters, deadlines no further
    /// than [`MAX_DEADLINE_AHEAD`] after `occurred_at` (the envelope's).
    pub fn check_values(&self, occurred_at: Timestamp) -> Result<(), ValueError> {
        let deadline = |field: &str, value| check_deadline(field, value, occurred_at);
        match self {
            Message::CancelRide(_)
            | Message::ArriveRide(_)
            | Message::StartRide(_)
            | Message::DriverOnline(_)
            | Message::DriverOffline(_)
            | Message::MoveDriver(_)
            | Message::UnblockRider(_)
            | Message::RideStarted(_)
            | Message::RideCancelled(_) => Ok(()),
            Message::RequestRide(m) => check_text("payment_token", &m.payment_token),
            Message::CompleteRide(m) => {
                optional(m.distance_km, |v| check_km("distance_km", v))?;
                optional(m.duration_min, |v| check_minutes("duration_min", v))
            }
            Message::RegisterDriver(m) => {
                check_text("name", &m.name)?;
                check_contact(&m.email, &m.phone)
            }
            Message::RegisterRider(m) => check_contact(&m.email, &m.phone),
            Message::BlockRider(m) => optional_text("reason", &m.reason),
            Message::RideRequested(m) => {
                check_text("payment_token", &m.payment_token)?;
                check_km("estimated_distance_km", m.estimated_distance_km)?;
                check_cents("estimated_fare_cents", m.estimated_fare_cents)?;
                deadline("match_deadline", m.match_deadline)?;
                optional(m.expires_at, |v| deadline("expires_at", v))
            }
            Message::RideConfirmed(m) => {
                check_cents("estimated_fare_cents", m.estimated_fare_cents)?;
                optional(m.pickup_deadline, |v| deadline("pickup_deadline", v))
            }
            Message::DriverArrived(m) => deadline("rider_wait_deadline", m.rider_wait_deadline),
            Message::RideCompleted(m) => {
                check_km("distance_km", m.distance_km)?;
                check_minutes("duration_min", m.duration_min)?;
                check_cents("fare_cents", m.fare_cents)?;
                optional(m.route.as_ref(), check_route)
            }
            Message::ReviewRide(m) => optional_text("note", &m.note),
            Message::RideFlagged(m) => check_reasons(&m.reasons),
            Message::RideReviewed(m) => optional_text("note", &m.note),
            Message::EarningsHold(m) => check_cents("amount_cents", m.amount_cents),
            Message::RideRejected(m) => {
                check_score(m.score)?;
                check_reasons(&m.reasons)?;
                optional_text("detail", &m.detail)
            }
            Message::RideCommandRefused(m) => {
                check_text("command", &m.command)?;
                check_text("reason", &m.reason)
            }
            Message::FraudCleared(m) => {
                check_score(m.score)?;
                check_reasons(&m.reasons)
            }
            Message::FraudFlagged(m) => {
                check_score(m.score)?;
                check_reasons(&m.reasons)
            }
            Message::RiderBlockChanged(m) => optional_text("reason", &m.reason),
            Message::DriverAssigned(m) => {
                check_text("driver_name", &m.driver_name)?;
                check_km("pickup_distance_km", m.pickup_distance_km)
            }
            Message::DriverUnavailable(m) => check_text("reason", &m.reason),
            Message::DriverReleased(m) => check_text("reason", &m.reason),
            Message::DriverUpdated(m) => check_text("name", &m.name),
            Message::SetDriverSchedule(m) => check_schedule(&m.schedule),
            Message::DriverScheduleChanged(m) => check_schedule(&m.schedule),
            Message::PaymentAuthorized(m) => {
                check_text("hold_id", &m.hold_id)?;
                check_cents("amount_cents", m.amount_cents)
            }
            Message::PaymentDeclined(m) => {
                check_text("code", &m.code)?;
                check_text("message", &m.message)
            }
            Message::PaymentCaptured(m) => {
                check_text("hold_id", &m.hold_id)?;
                check_cents("amount_cents", m.amount_cents)
            }
            Message::PaymentVoided(m) => {
                check_text("hold_id", &m.hold_id)?;
                check_cents("amount_cents", m.amount_cents)
            }
            Message::PaymentCaptureFailed(m) => {
                check_text("hold_id", &m.hold_id)?;
                check_cents("amount_cents", m.amount_cents)?;
                check_text("error", &m.error)
            }
            Message::RefundRide(m) => {
                optional(m.amount_cents, |v| check_cents("amount_cents", v))?;
                if m.amount_cents == Some(0) {
                    return Err(ValueError::TooSmall {
                        field: "amount_cents".into(),
                        value: 0,
                        min: 1,
                    });
                }
                optional_text("reason", &m.reason)
            }
            Message::PaymentRefunded(m) => {
                check_text("hold_id", &m.hold_id)?;
                check_cents("amount_cents", m.amount_cents)?;
                check_cents("refunded_cents", m.refunded_cents)?;
                check_cents("captured_cents", m.captured_cents)?;
                optional_text("reason", &m.reason)
            }
            Message::PaymentRefundRefused(m) => {
                optional(m.amount_cents, |v| check_cents("amount_cents", v))?;
                check_text("code", &m.code)?;
                check_text("reason", &m.reason)
            }
            Message::NotificationSent(m) => {
                check_text("recipient_id", &m.recipient_id)?;
                check_text("channel", &m.channel)?;
                check_text_within("text", &m.text, MAX_NOTIFICATION_CHARS)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_outside_their_bounds_name_the_field_and_the_bound() {
        assert_eq!(
            check_km("distance_km", -3.0).unwrap_err().to_string(),
            "distance_km is -3.0; it must be a number between 0 and 40075.0"
        );
        assert!(check_km("distance_km", f64::NAN).is_err());
        assert!(check_minutes("duration_min", f64::INFINITY).is_err());
        assert!(check_km("distance_km", MAX_DISTANCE_KM).is_ok());
        assert!(check_cents("fare_cents", MAX_AMOUNT_CENTS).is_ok());
        assert!(check_cents("fare_cents", MAX_AMOUNT_CENTS + 1).is_err());
    }

    #[test]
    fn text_refuses_control_characters_and_bidi_overrides_but_not_other_unicode() {
        assert!(check_text("name", "Zoë Ångström 李").is_ok());
        assert!(check_text("name", "").is_ok());
        for bad in [
            "a\nb",
            "\u{1b}[31m",
            "nul\u{0}",
            "\u{202E}evil",
            "\u{2066}x",
            "\u{85}",
        ] {
            assert!(check_text("name", bad).is_err(), "{bad:?}");
        }
        // Characters, not bytes: 500 three-byte characters are allowed.
        assert!(check_text("name", &"€".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(check_text("name", &"e".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }

    #[test]
    fn email_addresses_are_checked_as_the_schema_pattern_checks_them() {
        let pattern = regex_lite(EMAIL_PATTERN);
        for good in [
            "ada@example.com",
            "a.b+tag@mail.example.co.uk",
            "x_y-z@a-b.io",
            "o'neil@x.de",
        ] {
            assert!(check_email("email", good).is_ok(), "{good}");
            assert!(pattern(good), "{good}");
        }
        for bad in [
            "ada",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@@example.com",
            ".ada@example.com",
            "a..da@example.com",
            "ada.@example.com",
            "ada@-example.com",
            "ada@example..com",
            "ada @example.com",
            "ada@exa_mple.com",
        ] {
            assert!(check_email("email", bad).is_err(), "{bad}");
            assert!(!pattern(bad), "{bad}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(check_email("email", &long).is_err());
        assert_eq!(
            check_email("email", "ada").unwrap_err().to_string(),
            "email \"ada\" is not an email address (no '@')"
        );
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        let pattern = regex_lite(PHONE_PATTERN);
        for good in ["+4915112345678", "+12025550143", "+44"] {
            assert!(check_phone("phone", good).is_ok(), "{good}");
            assert!(pattern(good), "{good}");
        }
        for bad in [
            "4915112345678",
            "+0151",
            "+1 202 555 0143",
            "+1234567890123456",
            "+",
            "+4",
        ] {
            assert!(check_phone("phone", bad).is_err(), "{bad}");
            assert!(!pattern(bad), "{bad}");
        }
    }

    /// The schema's pattern as a JSON Schema validator applies it.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let schema = serde_json::json!({ "type": "string", "pattern": pattern });
        let validator = jsonschema::validator_for(&schema).unwrap();
        move |value| validator.is_valid(&serde_json::json!(value))
    }

    #[test]
    fn a_deadline_at_the_end_of_time_is_checked_without_overflow() {
        let end = Timestamp(time::PrimitiveDateTime::MAX.assume_utc());
        assert!(check_deadline("match_deadline", end, end).is_ok());
        let start = Timestamp::from_unix_millis(0);
        assert!(check_deadline("match_deadline", end, start).is_err());
    }
}
