//! Driver schedules: weekly windows and one-off shifts in the driver's IANA time zone, as the
//! contract carries them ([`DriverSchedule`]), their checks, and when they put a driver on
//! shift ([`Shifts`]).
//!
//! Times are wall-clock times in the driver's zone. A weekly window whose end is not after its
//! start crosses midnight (`sat 22:00-04:00` ends on Sunday); `24:00` ends a window at midnight.
//! Each end is converted to an instant on its own, so a `22:00-06:00` window across a change
//! of daylight saving time lasts what the wall clock says (7 or 9 hours). A wall-clock time
//! that does not exist (the clocks skip it) is moved forward by the length of the gap (02:30
//! becomes 03:30), and one that exists twice is the earlier of the two. Windows and shifts may
//! overlap or touch: the driver is on shift inside any of them, and touching ones make one
//! continuous shift.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The most weekly windows in a schedule (four a day).
pub const MAX_WEEKLY_WINDOWS: usize = 28;
/// The most one-off shifts in a schedule.
pub const MAX_ONE_OFF_SHIFTS: usize = 64;
/// The longest one-off shift, in hours.
pub const MAX_SHIFT_HOURS: i64 = 24;
/// The longest zone name (IANA names are far shorter).
pub const MAX_ZONE_CHARS: usize = 64;
/// How far ahead [`Shifts`] looks for the end of a shift or the next ones, in days: a week of
/// windows and then some.
pub const HORIZON_DAYS: i64 = 8;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The JSON Schema pattern of a window's time: `HH:MM`, or `24:00` for the end of the day.
pub const TIME_PATTERN: &str = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$";
/// The JSON Schema pattern of a one-off shift's ends: a local date and time, `YYYY-MM-DDTHH:MM`.
pub const LOCAL_DATE_TIME_PATTERN: &str = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}$";
/// The JSON Schema pattern of a zone name.
pub const ZONE_PATTERN: &str = r"^[A-Za-z0-9_+\-/]+$";

/// A day of the week.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Weekday::Mon => "mon",
            Weekday::Tue => "tue",
            Weekday::Wed => "wed",
            Weekday::Thu => "thu",
            Weekday::Fri => "fri",
            Weekday::Sat => "sat",
            Weekday::Sun => "sun",
        }
    }

    /// `mon`, `monday`, any case.
    pub fn parse(s: &str) -> Option<Weekday> {
        let s = s.to_ascii_lowercase();
        Weekday::ALL
            .into_iter()
            .find(|d| s == d.as_str() || (s.len() > 3 && d.full_name().starts_with(&s)))
    }

    fn full_name(self) -> &'static str {
        match self {
            Weekday::Mon => "monday",
            Weekday::Tue => "tuesday",
            Weekday::Wed => "wednesday",
            Weekday::Thu => "thursday",
            Weekday::Fri => "friday",
            Weekday::Sat => "saturday",
            Weekday::Sun => "sunday",
        }
    }

    fn of(day: jiff::civil::Weekday) -> Weekday {
        Weekday::ALL[usize::try_from(day.to_monday_zero_offset()).unwrap_or(0)]
    }
}

impl std::fmt::Display for Weekday {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A window every week: from `start` on `day` to `end`, the same day or, when `end` is not
/// after `start`, the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyWindow {
    pub day: Weekday,
    /// `HH:MM`, wall-clock time in the schedule's zone.
    #[schemars(length(max = 5), pattern(TIME_PATTERN))]
    pub start: String,
    /// `HH:MM`, or `24:00`.
    #[schemars(length(max = 5), pattern(TIME_PATTERN))]
    pub end: String,
}

impl std::fmt::Display for WeeklyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}-{}", self.day, self.start, self.end)
    }
}

/// A shift on given dates: from `start` to `end`, local date-times in the schedule's zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OneOffShift {
    /// `YYYY-MM-DDTHH:MM`.
    #[schemars(length(max = 16), pattern(LOCAL_DATE_TIME_PATTERN))]
    pub start: String,
    /// `YYYY-MM-DDTHH:MM`, after `start`, at most [`MAX_SHIFT_HOURS`] later.
    #[schemars(length(max = 16), pattern(LOCAL_DATE_TIME_PATTERN))]
    pub end: String,
}

impl std::fmt::Display for OneOffShift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.start, self.end)
    }
}

/// When a driver works: weekly windows and one-off shifts, in the IANA zone `zone`. At least
/// one of either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriverSchedule {
    /// An IANA time zone name, e.g. `Europe/Paris`.
    #[schemars(length(min = 1, max = MAX_ZONE_CHARS), pattern(ZONE_PATTERN))]
    pub zone: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_WEEKLY_WINDOWS))]
    pub weekly: Vec<WeeklyWindow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_ONE_OFF_SHIFTS))]
    pub shifts: Vec<OneOffShift>,
}

/// Why a schedule is refused, in words for whoever wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

fn refuse<T>(problem: impl Into<String>) -> Result<T, ScheduleError> {
    Err(ScheduleError(problem.into()))
}

impl DriverSchedule {
    /// Checks the schedule and makes it ready to answer when its driver is on shift.
    pub fn compile(&self) -> Result<Shifts, ScheduleError> {
        if self.zone.is_empty() || self.zone.chars().count() > MAX_ZONE_CHARS {
            return refuse(format!(
                "the time zone must be an IANA name of 1 to {MAX_ZONE_CHARS} characters"
            ));
        }
        let zone = match TimeZone::get(&self.zone) {
            Ok(zone) if !self.zone.contains("..") => zone,
            _ => {
                return refuse(format!(
                    "unknown time zone {:?} (an IANA name such as Europe/Paris)",
                    self.zone
                ));
            }
        };
        if self.weekly.is_empty() && self.shifts.is_empty() {
            return refuse(
                "a schedule needs at least one weekly window or one-off shift \
                 (clearing the schedule lifts every restriction)",
            );
        }
        if self.weekly.len() > MAX_WEEKLY_WINDOWS {
            return refuse(format!(
                "{} weekly windows; at most {MAX_WEEKLY_WINDOWS} are allowed",
                self.weekly.len()
            ));
        }
        if self.shifts.len() > MAX_ONE_OFF_SHIFTS {
            return refuse(format!(
                "{} one-off shifts; at most {MAX_ONE_OFF_SHIFTS} are allowed",
                self.shifts.len()
            ));
        }
        let mut weekly = Vec::with_capacity(self.weekly.len());
        for window in &self.weekly {
            let start = parse_minutes(&window.start)
                .filter(|m| *m < 1440)
                .ok_or_else(|| {
                    ScheduleError(format!(
                        "weekly window {window}: the start {:?} is not a time HH:MM (00:00 to 23:59)",
                        window.start
                    ))
                })?;
            let end = parse_minutes(&window.end).ok_or_else(|| {
                ScheduleError(format!(
                    "weekly window {window}: the end {:?} is not a time HH:MM (00:00 to 24:00)",
                    window.end
                ))
            })?;
            if start == end {
                return refuse(format!(
                    "weekly window {window} is empty: it ends when it starts \
                     (use 00:00-24:00 for a whole day)"
                ));
            }
            weekly.push((window.day, start, end));
        }
        let mut one_off = Vec::with_capacity(self.shifts.len());
        for shift in &self.shifts {
            let start = parse_local(&shift.start).ok_or_else(|| {
                ScheduleError(format!(
                    "one-off shift {shift}: the start {:?} is not a local date and time \
                     YYYY-MM-DDTHH:MM",
                    shift.start
                ))
            })?;
            let end = parse_local(&shift.end).ok_or_else(|| {
                ScheduleError(format!(
                    "one-off shift {shift}: the end {:?} is not a local date and time \
                     YYYY-MM-DDTHH:MM",
                    shift.end
                ))
            })?;
            let (Some(from), Some(to)) = (instant(&zone, start), instant(&zone, end)) else {
                return refuse(format!(
                    "one-off shift {shift} is out of the supported range of dates"
                ));
            };
            if to <= from {
                return refuse(format!(
                    "one-off shift {shift} ends before it starts, or when it starts"
                ));
            }
            if to - from > MAX_SHIFT_HOURS * 3600 * 1000 {
                return refuse(format!(
                    "one-off shift {shift} lasts more than {MAX_SHIFT_HOURS} hours"
                ));
            }
            one_off.push((from, to));
        }
        Ok(Shifts {
            zone,
            weekly,
            one_off,
        })
    }

    /// Checks the schedule: [`DriverSchedule::compile`] without keeping the result.
    pub fn check(&self) -> Result<(), ScheduleError> {
        self.compile().map(|_| ())
    }
}

/// `HH:MM` as minutes since midnight, `24:00` as 1440.
fn parse_minutes(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !(h.bytes().chain(m.bytes())).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(1440),
        (0..=23, 0..=59) => Some(h * 60 + m),
        _ => None,
    }
}

/// `YYYY-MM-DDTHH:MM` as a civil date and time.
fn parse_local(s: &str) -> Option<DateTime> {
    let (date, time) = s.split_once('T')?;
    let minutes = parse_minutes(time).filter(|m| *m < 1440)?;
    let date: Date = date.parse().ok().filter(|_| date.len() == 10)?;
    Some(date.to_datetime(wall(minutes)?))
}

fn wall(minutes: u16) -> Option<Time> {
    let (h, m) = (minutes / 60, minutes % 60);
    Time::new(i8::try_from(h).ok()?, i8::try_from(m).ok()?, 0, 0).ok()
}

/// The instant (Unix ms) of a wall-clock time in `zone`, "compatibly" for gaps and folds.
fn instant(zone: &TimeZone, at: DateTime) -> Option<i64> {
    zone.to_ambiguous_timestamp(at)
        .compatible()
        .ok()
        .map(|t| t.as_millisecond())
}

/// A checked schedule, ready to say when its driver is on shift. Instants are Unix ms.
#[derive(Debug, Clone)]
pub struct Shifts {
    zone: TimeZone,
    /// Day, start and end in minutes since midnight (end 1440 = midnight after; an end not
    /// after the start is on the next day).
    weekly: Vec<(Weekday, u16, u16)>,
    one_off: Vec<(i64, i64)>,
}

impl Shifts {
    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The schedule's shifts overlapping `[from, to)`, as instants, merged where they overlap
    /// or touch, in order.
    pub fn between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let mut spans: Vec<(i64, i64)> = self
            .one_off
            .iter()
            .copied()
            .filter(|&(start, end)| end > from && start < to)
            .collect();
        if !self.weekly.is_empty() {
            let local_date = |ms: i64| {
                jiff::Timestamp::from_millisecond(ms)
                    .ok()
                    .map(|t| self.zone.to_datetime(t).date())
            };
            // A window may start the day before `from` (crossing midnight) or run into the
            // day after `to` in local time.
            let (Some(mut day), Some(last)) = (
                local_date(from).and_then(|d| d.yesterday().ok()),
                local_date(to),
            ) else {
                return merge(spans);
            };
            while day <= last {
                let weekday = Weekday::of(day.weekday());
                for &(on, start, end) in &self.weekly {
                    if on != weekday {
                        continue;
                    }
                    if let Some(span) = self.window_on(day, start, end)
                        && span.1 > from
                        && span.0 < to
                    {
                        spans.push(span);
                    }
                }
                let Ok(next) = day.tomorrow() else { break };
                day = next;
            }
        }
        merge(spans)
    }

    /// The window from `start` to `end` (minutes) beginning on `day`, as instants.
    fn window_on(&self, day: Date, start: u16, end: u16) -> Option<(i64, i64)> {
        let from = instant(&self.zone, day.to_datetime(wall(start)?))?;
        let end_day = if end <= start || end == 1440 {
            day.tomorrow().ok()?
        } else {
            day
        };
        let to = instant(&self.zone, end_day.to_datetime(wall(end % 1440)?))?;
        (to > from).then_some((from, to))
    }

    /// When the shift the driver is on at `now` ends (shifts that touch or overlap count as
    /// one), looking at most [`HORIZON_DAYS`] ahead; `None` when off shift.
    pub fn on_shift_until(&self, now: i64) -> Option<i64> {
        self.between(now, now.saturating_add(HORIZON_DAYS * DAY_MS))
            .into_iter()
            .find(|&(start, end)| start <= now && now < end)
            .map(|(_, end)| end)
    }

    /// Up to `count` shifts that have not ended at `now` (the current one first, if any),
    /// within [`HORIZON_DAYS`].
    pub fn upcoming(&self, now: i64, count: usize) -> Vec<(i64, i64)> {
        let mut spans = self.between(now, now.saturating_add(HORIZON_DAYS * DAY_MS));
        spans.truncate(count);
        spans
    }

    /// `ms` as a wall-clock date and time in the schedule's zone, `2026-12-24 18:00 CET`.
    pub fn local(&self, ms: i64) -> String {
        match jiff::Timestamp::from_millisecond(ms) {
            Ok(t) => {
                let zoned = t.to_zoned_datetime(self.zone.clone());
                zoned.strftime("%a %Y-%m-%d %H:%M %Z").to_string()
            }
            Err(_) => ms.to_string(),
        }
    }
}

/// Sorted, with overlapping or touching spans joined.
fn merge(mut spans: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
