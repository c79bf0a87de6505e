use super::*;

fn weekly(day: Weekday, start: &str, end: &str) -> WeeklyWindow {
    WeeklyWindow {
        day,
        start: start.into(),
        end: end.into(),
    }
}

fn shift(start: &str, end: &str) -> OneOffShift {
    OneOffShift {
        start: start.into(),
        end: end.into(),
    }
}

fn schedule(zone: &str, weekly: Vec<WeeklyWindow>, shifts: Vec<OneOffShift>) -> DriverSchedule {
    DriverSchedule {
        zone: zone.into(),
        weekly,
        shifts,
    }
}

/// Unix ms of a UTC date-time `2026-03-28T21:00`.
fn utc(s: &str) -> i64 {
    let dt: DateTime = s.parse().unwrap();
    TimeZone::UTC.to_timestamp(dt).unwrap().as_millisecond()
}

const HOUR: i64 = 3600 * 1000;

#[test]
fn a_window_across_midnight_ends_the_next_day() {
    // 2026-12-05 is a Saturday; UTC has no DST.
    let s = schedule("UTC", vec![weekly(Weekday::Sat, "22:00", "04:00")], vec![])
        .compile()
        .unwrap();
    assert_eq!(
        s.on_shift_until(utc("2026-12-05T23:30")),
        Some(utc("2026-12-06T04:00"))
    );
    // Sunday 01:00 is still Saturday's window.
    assert_eq!(
        s.on_shift_until(utc("2026-12-06T01:00")),
        Some(utc("2026-12-06T04:00"))
    );
    assert_eq!(s.on_shift_until(utc("2026-12-06T04:00")), None);
    assert_eq!(s.on_shift_until(utc("2026-12-05T21:59")), None);
    // Saturday at 02:00 is not in it: the window starts at 22:00.
    assert_eq!(s.on_shift_until(utc("2026-12-05T02:00")), None);
}

#[test]
fn the_week_wraps_from_sunday_to_monday() {
    // 2026-12-06 is a Sunday.
    let s = schedule(
        "UTC",
        vec![
            weekly(Weekday::Sun, "20:00", "24:00"),
            weekly(Weekday::Mon, "00:00", "03:00"),
        ],
        vec![],
    )
    .compile()
    .unwrap();
    // Touching windows make one shift, through the turn of the week.
    assert_eq!(
        s.on_shift_until(utc("2026-12-06T21:00")),
        Some(utc("2026-12-07T03:00"))
    );
    let wrap = schedule("UTC", vec![weekly(Weekday::Sun, "23:00", "02:00")], vec![])
        .compile()
        .unwrap();
    assert_eq!(
        wrap.on_shift_until(utc("2026-12-07T01:00")),
        Some(utc("2026-12-07T02:00"))
    );
    assert_eq!(wrap.on_shift_until(utc("2026-12-07T02:30")), None);
}

#[test]
fn a_night_window_lasts_what_the_wall_clock_says_across_dst() {
    let night = |day| {
        schedule("Europe/Paris", vec![weekly(day, "22:00", "06:00")], vec![])
            .compile()
            .unwrap()
    };
    // Clocks go forward on Sunday 2026-03-29 at 02:00 (CET, +1) to 03:00 (CEST, +2): the
    // Saturday night from 22:00 CET (21:00 UTC) to 06:00 CEST (04:00 UTC) lasts 7 hours.
    let spring = night(Weekday::Sat);
    let spans = spring.between(utc("2026-03-28T20:00"), utc("2026-03-29T12:00"));
    assert_eq!(
        spans,
        vec![(utc("2026-03-28T21:00"), utc("2026-03-29T04:00"))]
    );
    assert_eq!(spans[0].1 - spans[0].0, 7 * HOUR);
    // They go back on Sunday 2026-10-25 at 03:00 (CEST) to 02:00 (CET): from 22:00 CEST
    // (20:00 UTC) to 06:00 CET (05:00 UTC), 9 hours.
    let autumn = night(Weekday::Sat);
    let spans = autumn.between(utc("2026-10-24T12:00"), utc("2026-10-25T12:00"));
    assert_eq!(
        spans,
        vec![(utc("2026-10-24T20:00"), utc("2026-10-25T05:00"))]
    );
    assert_eq!(spans[0].1 - spans[0].0, 9 * HOUR);
    // The driver is still on shift at 04:30 UTC that night (05:30 CET).
    assert!(autumn.on_shift_until(utc("2026-10-25T04:30")).is_some());
}

#[test]
fn a_time_the_clocks_skip_starts_the_window_a_gap_later() {
    // 02:30 does not exist in Paris on 2026-03-29: the window starts an hour later, at 03:30
    // CEST (01:30 UTC), and still ends at 05:00 CEST.
    let s = schedule(
        "Europe/Paris",
        vec![weekly(Weekday::Sun, "02:30", "05:00")],
        vec![],
    )
    .compile()
    .unwrap();
    let spans = s.between(utc("2026-03-28T12:00"), utc("2026-03-29T12:00"));
    assert_eq!(
        spans,
        vec![(utc("2026-03-29T01:30"), utc("2026-03-29T03:00"))]
    );
}

#[test]
fn one_off_shifts_are_in_the_drivers_zone_and_join_windows_they_touch() {
    // New York is UTC-5 in December.
    let s = schedule(
        "America/New_York",
        vec![weekly(Weekday::Thu, "08:00", "18:00")],
        vec![shift("2026-12-24T18:00", "2026-12-25T02:00")],
    )
    .compile()
    .unwrap();
    // 2026-12-24 is a Thursday: the window runs into the shift, one shift until 02:00 local.
    assert_eq!(
        s.on_shift_until(utc("2026-12-24T14:00")),
        Some(utc("2026-12-25T07:00"))
    );
    assert_eq!(
        s.on_shift_until(utc("2026-12-25T06:59")),
        Some(utc("2026-12-25T07:00"))
    );
    assert_eq!(s.on_shift_until(utc("2026-12-25T07:00")), None);
    // The next Thursday has the window only.
    assert_eq!(
        s.on_shift_until(utc("2026-12-31T14:00")),
        Some(utc("2026-12-31T23:00"))
    );
    let upcoming = s.upcoming(utc("2026-12-25T08:00"), 2);
    assert_eq!(
        upcoming,
        vec![(utc("2026-12-31T13:00"), utc("2026-12-31T23:00"))]
    );
    assert_eq!(s.local(utc("2026-12-24T23:00")), "Thu 2026-12-24 18:00 EST");
}

#[test]
fn overlapping_windows_are_one_shift() {
    let s = schedule(
        "UTC",
        vec![
            weekly(Weekday::Mon, "08:00", "12:00"),
            weekly(Weekday::Mon, "10:00", "16:00"),
        ],
        vec![],
    )
    .compile()
    .unwrap();
    // 2026-12-07 is a Monday.
    assert_eq!(
        s.on_shift_until(utc("2026-12-07T09:00")),
        Some(utc("2026-12-07T16:00"))
    );
}

#[test]
fn bad_schedules_are_refused_with_the_reason() {
    let cases = [
        (
            schedule(
                "Mars/Olympus",
                vec![weekly(Weekday::Mon, "08:00", "16:00")],
                vec![],
            ),
            "unknown time zone",
        ),
        (
            schedule(
                "../etc/passwd",
                vec![weekly(Weekday::Mon, "08:00", "16:00")],
                vec![],
            ),
            "unknown time zone",
        ),
        (schedule("UTC", vec![], vec![]), "at least one"),
        (
            schedule("UTC", vec![weekly(Weekday::Mon, "25:00", "16:00")], vec![]),
            "is not a time",
        ),
        (
            schedule("UTC", vec![weekly(Weekday::Mon, "24:00", "06:00")], vec![]),
            "is not a time",
        ),
        (
            schedule("UTC", vec![weekly(Weekday::Mon, "8:00", "16:00")], vec![]),
            "is not a time",
        ),
        (
            schedule("UTC", vec![weekly(Weekday::Mon, "08:00", "08:00")], vec![]),
            "is empty",
        ),
        (
            schedule(
                "UTC",
                vec![weekly(Weekday::Mon, "00:00", "24:00")]
                    .into_iter()
                    .cycle()
                    .take(MAX_WEEKLY_WINDOWS + 1)
                    .collect(),
                vec![],
            ),
            "weekly windows; at most",
        ),
        (
            schedule(
                "UTC",
                vec![],
                vec![shift("2026-12-25T02:00", "2026-12-24T18:00")],
            ),
            "ends before it starts",
        ),
        (
            schedule(
                "UTC",
                vec![],
                vec![shift("2026-12-24T18:00", "2026-12-24T18:00")],
            ),
            "ends before it starts",
        ),
        (
            schedule(
                "UTC",
                vec![],
                vec![shift("2026-12-24T18:00", "2026-12-26T18:00")],
            ),
            "lasts more than",
        ),
        (
            schedule(
                "UTC",
                vec![],
                vec![shift("2026-02-30T18:00", "2026-03-01T02:00")],
            ),
            "not a local date and time",
        ),
        (
            schedule(
                "UTC",
                vec![],
                std::iter::repeat_n(shift("2026-12-24T18:00", "2026-12-24T19:00"), 65).collect(),
            ),
            "one-off shifts; at most",
        ),
    ];
    for (schedule, expected) in cases {
        let err = schedule.check().unwrap_err().0;
        assert!(err.contains(expected), "{schedule:?}: {err}");
    }
    // A whole day, and a window ending at midnight, are fine.
    schedule(
        "Europe/Paris",
        vec![
            weekly(Weekday::Mon, "00:00", "24:00"),
            weekly(Weekday::Tue, "18:00", "24:00"),
        ],
        vec![],
    )
    .check()
    .unwrap();
}

#[test]
fn weekdays_parse_short_and_long_names() {
    assert_eq!(Weekday::parse("MON"), Some(Weekday::Mon));
    assert_eq!(Weekday::parse("sunday"), Some(Weekday::Sun));
    assert_eq!(Weekday::parse("thur"), Some(Weekday::Thu));
    assert_eq!(Weekday::parse("mo"), None);
    assert_eq!(Weekday::parse("funday"), None);
}
