//! Durations as people write them, in `ridectl`'s arguments and the workers' settings alike:
//! a number and a unit, `250ms`, `1.5s`, `30s`, `2m`, `1h`, `7d`.
//!
//! A bare number is refused (but `0`): `30` could mean seconds or milliseconds, and a setting
//! that is wrong by a factor of 1,000 is worse than one refused at start.

use std::time::Duration;

/// The longest duration accepted: a year and a day.
pub const MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses a duration: a number followed by `ms`, `s`, `m`, `h` or `d`, e.g. `500ms`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration such as 500ms, 30s or 2m, got {text:?}"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        "" if number == 0.0 => 0.0,
        "" => {
            return Err(format!(
                "{text:?} has no unit; add ms, s, m, h or d (e.g. {text}s)"
            ));
        }
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m, h or d)"
            ));
        }
    };
    if !seconds.is_finite() || seconds > MAX.as_secs_f64() {
        return Err(format!("duration out of range: {text:?} (at most 366d)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// A short human form: `850ms`, `4.2s`, `3m05s`, `2h10m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(" 1.5s "), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 weeks").unwrap_err().contains("unit"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("expected a duration")
        );
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("99999h")
                .unwrap_err()
                .contains("out of range")
        );
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(format_duration(Duration::from_secs(7800)), "2h10m");
    }

    #[test]
    fn what_is_formatted_parses_back() {
        for text in ["12ms", "4.2s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
