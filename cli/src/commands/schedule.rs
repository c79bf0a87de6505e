//! `ridectl driver schedule set|show|clear` and `ridectl driver show`. A schedule is checked
//! here before it is published (the driver service checks it again and dead-letters what it
//! refuses); what the service applied is read back from the saga stream: the last
//! `evt.driver.schedule.<id>` is the schedule in force, the last `evt.driver.updated.<id>`
//! the driver's state, and `evt.driver.{assigned,released}` the current ride.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream as JsStream};
use ridesaga_schemas::streams::POSITION_STREAM;
use ridesaga_schemas::{
    DriverId, DriverSchedule, Envelope, Message, MessageKind, OneOffShift, Position,
    SetDriverSchedule, WeeklyWindow, subject_for,
};
use serde::Serialize;
use time::OffsetDateTime;

use super::Ctx;
use super::driver::send;
use crate::cli::{DriverWaitArgs, ScheduleCommand, parse_shift, parse_weekly};
use crate::nats::scan_steps;
use crate::output::{Table, format_time};

pub async fn run(ctx: &Ctx, command: ScheduleCommand) -> anyhow::Result<()> {
    match command {
        ScheduleCommand::Set {
            id,
            zone,
            weekly,
            shift,
            file,
            wait,
        } => {
            let schedule = build(zone, weekly.into_iter().flatten().collect(), shift, file)?;
            publish(ctx, id, Some(schedule), &wait).await
        }
        ScheduleCommand::Clear { id, wait } => publish(ctx, id, None, &wait).await,
        ScheduleCommand::Show { id, next } => show(ctx, &id, next).await,
    }
}

async fn publish(
    ctx: &Ctx,
    driver_id: DriverId,
    schedule: Option<DriverSchedule>,
    wait: &DriverWaitArgs,
) -> anyhow::Result<()> {
    let message = SetDriverSchedule {
        driver_id,
        schedule,
    };
    let envelope = Envelope::new(message, None, "ridectl");
    send(ctx, envelope, MessageKind::DriverScheduleChanged, wait).await
}

/// The schedule the options and the file describe, checked as the driver service will.
pub fn build(
    zone: Option<String>,
    mut weekly: Vec<WeeklyWindow>,
    mut shifts: Vec<OneOffShift>,
    file: Option<PathBuf>,
) -> anyhow::Result<DriverSchedule> {
    let mut zone = zone;
    if let Some(path) = file {
        let from_file = read_file(&path)?;
        if zone.is_some() && from_file.zone.is_some() && zone != from_file.zone {
            bail!("--zone and the zone in {} disagree", path.display());
        }
        zone = zone.or(from_file.zone);
        weekly.extend(from_file.weekly);
        shifts.extend(from_file.shifts);
    }
    let Some(zone) = zone else {
        bail!("a schedule needs its time zone: --zone ZONE (an IANA name such as Europe/Paris)");
    };
    let schedule = DriverSchedule {
        zone,
        weekly,
        shifts,
    };
    schedule
        .check()
        .map_err(|e| anyhow::anyhow!("the schedule is refused: {e}"))?;
    Ok(schedule)
}

/// What a schedule file holds.
#[derive(Debug, Default, PartialEq)]
pub struct ScheduleFile {
    pub zone: Option<String>,
    pub weekly: Vec<WeeklyWindow>,
    pub shifts: Vec<OneOffShift>,
}

fn read_file(path: &Path) -> anyhow::Result<ScheduleFile> {
    let lines: Vec<String> = if path == Path::new("-") {
        std::io::stdin().lock().lines().collect::<Result<_, _>>()?
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?;
        text.lines().map(str::to_owned).collect()
    };
    parse_file(&lines).with_context(|| format!("in {}", path.display()))
}

/// `zone ZONE`, `weekly DAYS HH:MM-HH:MM`, `shift START/END` lines; blank lines and `#`
/// comments are skipped.
pub fn parse_file(lines: &[String]) -> anyhow::Result<ScheduleFile> {
    let mut file = ScheduleFile::default();
    for (n, line) in lines.iter().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (key, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let at = |e: String| anyhow::anyhow!("line {}: {e}", n + 1);
        match key {
            "zone" if file.zone.is_none() => file.zone = Some(rest.trim().to_owned()),
            "zone" => return Err(at("a second zone".into())),
            "weekly" => file.weekly.extend(parse_weekly(rest).map_err(at)?),
            "shift" => file.shifts.push(parse_shift(rest).map_err(at)?),
            other => {
                return Err(at(format!("{other:?} is not zone, weekly or shift")));
            }
        }
    }
    Ok(file)
}

/// The last message stored on `subject` in `stream`, decoded.
async fn last_envelope(stream: &JsStream, subject: &str) -> anyhow::Result<Option<Envelope>> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => Envelope::decode(subject, &message.payload)
            .map(Some)
            .with_context(|| format!("the last message on {subject}")),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read the last {subject}")),
    }
}

/// The schedule in force for `driver`: `None` when none was ever set, `Some(None)` cleared.
async fn schedule_of(
    stream: &JsStream,
    driver: &DriverId,
) -> anyhow::Result<Option<Option<DriverSchedule>>> {
    let subject = subject_for(MessageKind::DriverScheduleChanged, driver.as_str());
    Ok(last_envelope(stream, &subject)
        .await?
        .and_then(|e| match e.message {
            Message::DriverScheduleChanged(m) => Some(m.schedule),
            _ => None,
        }))
}

/// A shift, in the driver's zone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShiftView {
    pub start: String,
    pub end: String,
    #[serde(with = "time::serde::rfc3339")]
    pub start_utc: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub end_utc: OffsetDateTime,
    /// Whether the driver is on it now.
    pub current: bool,
}

/// The next `count` shifts of `schedule` from `now` (the current one first).
pub fn upcoming(schedule: &DriverSchedule, now: OffsetDateTime, count: usize) -> Vec<ShiftView> {
    let Ok(shifts) = schedule.compile() else {
        return Vec::new();
    };
    let now_ms = (now.unix_timestamp_nanos() / 1_000_000) as i64;
    let utc = |ms: i64| {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    };
    shifts
        .upcoming(now_ms, count)
        .into_iter()
        .map(|(start, end)| ShiftView {
            start: shifts.local(start),
            end: shifts.local(end),
            start_utc: utc(start),
            end_utc: utc(end),
            current: start <= now_ms,
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct ScheduleView {
    driver_id: String,
    /// Whether matching is restricted by a schedule.
    scheduled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    schedule: Option<DriverSchedule>,
    next_shifts: Vec<ShiftView>,
}

async fn show(ctx: &Ctx, driver: &DriverId, next: usize) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let schedule = schedule_of(&stream, driver).await?.flatten();
    let now = OffsetDateTime::now_utc();
    let view = ScheduleView {
        driver_id: driver.to_string(),
        scheduled: schedule.is_some(),
        next_shifts: schedule
            .as_ref()
            .map(|s| upcoming(s, now, next))
            .unwrap_or_default(),
        schedule,
    };
    if ctx.out.is_json() {
        return ctx.out.json(&view);
    }
    let Some(schedule) = &view.schedule else {
        ctx.out
            .line(format!("{driver}: no schedule (matched whenever online)"));
        return Ok(());
    };
    ctx.out.line(format!("{driver}: zone {}", schedule.zone));
    for window in &schedule.weekly {
        ctx.out.line(format!("  weekly  {window}"));
    }
    for shift in &schedule.shifts {
        ctx.out.line(format!("  shift   {shift}"));
    }
    if view.next_shifts.is_empty() {
        ctx.out.line("no shift in the next 8 days");
        return Ok(());
    }
    let mut table = Table::new(["", "START", "END"]);
    for shift in &view.next_shifts {
        let mark = if shift.current { "now" } else { "next" };
        table.row([mark.to_owned(), shift.start.clone(), shift.end.clone()]);
    }
    ctx.out.table(&table);
    Ok(())
}

/// A driver as `ridectl driver show` prints it.
#[derive(Debug, Serialize)]
pub struct DriverView {
    pub driver_id: String,
    pub name: String,
    pub online: bool,
    /// `offline`, `on ride`, `available`, or `off shift` (online, outside every shift).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_ride: Option<String>,
    /// LAT,LNG: the last reported position, else where the driver service has them.
    pub position: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub position_at: Option<OffsetDateTime>,
    pub scheduled: bool,
    /// The shift the driver is on, or the next one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shift: Option<ShiftView>,
}

pub async fn show_driver(ctx: &Ctx, driver: &DriverId) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let subject = subject_for(MessageKind::DriverUpdated, driver.as_str());
    let Some(Message::DriverUpdated(updated)) =
        last_envelope(&stream, &subject).await?.map(|e| e.message)
    else {
        bail!(
            "no driver {driver}: nothing on {subject} (register them with `ridectl driver register`)"
        );
    };
    let schedule = schedule_of(&stream, driver).await?.flatten();
    let now = OffsetDateTime::now_utc();
    let shift = schedule
        .as_ref()
        .and_then(|s| upcoming(s, now, 1).into_iter().next());
    let current_ride = current_ride(&stream, driver).await?;
    let positions = nats.stream(POSITION_STREAM).await.ok();
    let reported = match &positions {
        Some(positions) => last_position(positions, driver).await?,
        None => None,
    };
    let (position, position_at) = match reported.and_then(|p| Some((p.point().ok()?, p.at_ms))) {
        Some((point, at_ms)) => (
            point.to_string(),
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(at_ms) * 1_000_000).ok(),
        ),
        None => (updated.location.to_string(), None),
    };
    let on_shift = schedule.is_none() || shift.as_ref().is_some_and(|s| s.current);
    let state = match (&current_ride, updated.online, on_shift) {
        (Some(_), _, _) => "on ride",
        (None, false, _) => "offline",
        (None, true, true) => "available",
        (None, true, false) => "off shift",
    };
    let view = DriverView {
        driver_id: driver.to_string(),
        name: updated.name,
        online: updated.online,
        state: state.to_owned(),
        current_ride,
        position,
        position_at,
        scheduled: schedule.is_some(),
        shift,
    };
    if ctx.out.is_json() {
        return ctx.out.json(&view);
    }
    let mut table = Table::new(["FIELD", "VALUE"]);
    table.row([
        "driver".to_owned(),
        format!("{} ({})", view.driver_id, view.name),
    ]);
    table.row(["state".to_owned(), view.state.clone()]);
    table.row([
        "ride".to_owned(),
        view.current_ride.clone().unwrap_or_else(|| "-".into()),
    ]);
    let at = view
        .position_at
        .map(|t| format!(" at {}", format_time(t)))
        .unwrap_or_default();
    table.row(["position".to_owned(), format!("{}{at}", view.position)]);
    let shift = match (&view.shift, view.scheduled) {
        (_, false) => "no schedule (matched whenever online)".to_owned(),
        (None, true) => "no shift in the next 8 days".to_owned(),
        (Some(s), true) if s.current => format!("on shift until {}", s.end),
        (Some(s), true) => format!("next {} to {}", s.start, s.end),
    };
    table.row(["shift".to_owned(), shift]);
    ctx.out.table(&table);
    Ok(())
}

/// The ride the driver is reserved for: their last assignment, unless released since.
async fn current_ride(stream: &JsStream, driver: &DriverId) -> anyhow::Result<Option<String>> {
    let filters = [
        format!("{}.*", MessageKind::DriverAssigned.as_str()),
        format!("{}.*", MessageKind::DriverReleased.as_str()),
    ];
    let steps = scan_steps(stream, &filters, DeliverPolicy::All).await?;
    let mut current: Option<String> = None;
    for step in &steps {
        let ride = step.envelope.saga_id.as_ref().map(ToString::to_string);
        match &step.envelope.message {
            Message::DriverAssigned(m) if m.driver_id == *driver => current = ride,
            Message::DriverReleased(m) if m.driver_id == *driver && current == ride => {
                current = None;
            }
            _ => {}
        }
    }
    Ok(current)
}

async fn last_position(stream: &JsStream, driver: &DriverId) -> anyhow::Result<Option<Position>> {
    let subject = Position::subject(driver);
    match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => Ok(Position::decode(&subject, &message.payload)
            .ok()
            .map(|(_, p)| p)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("could not read the last {subject}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_weekly;
    use ridesaga_schemas::Weekday;

    #[test]
    fn weekly_options_name_days_ranges_and_lists() {
        let days = |s: &str| -> Vec<Weekday> {
            parse_weekly(s)
                .unwrap()
                .into_iter()
                .map(|w| w.day)
                .collect()
        };
        assert_eq!(days("mon-fri 08:00-16:00").len(), 5);
        assert_eq!(
            days("fri-mon 22:00-04:00"),
            [Weekday::Fri, Weekday::Sat, Weekday::Sun, Weekday::Mon]
        );
        assert_eq!(days("sat,sun 10:00-14:00"), [Weekday::Sat, Weekday::Sun]);
        let window = &parse_weekly("sat 22:00-04:00").unwrap()[0];
        assert_eq!(
            (window.start.as_str(), window.end.as_str()),
            ("22:00", "04:00")
        );
        for bad in [
            "monday",
            "mon 08:00",
            "xyz 08:00-10:00",
            "mon,mon 08:00-10:00",
        ] {
            assert!(parse_weekly(bad).is_err(), "{bad}");
        }
        assert!(parse_shift("2026-12-24T18:00").is_err());
    }

    #[test]
    fn a_schedule_is_checked_before_it_is_published() {
        let weekly = parse_weekly("mon-fri 08:00-16:00").unwrap();
        let ok = build(Some("Europe/Paris".into()), weekly.clone(), vec![], None).unwrap();
        assert_eq!(ok.weekly.len(), 5);
        let err = build(Some("Europe/Pariss".into()), weekly.clone(), vec![], None).unwrap_err();
        assert!(err.to_string().contains("unknown time zone"), "{err}");
        let err = build(None, weekly, vec![], None).unwrap_err();
        assert!(err.to_string().contains("--zone"), "{err}");
        let backwards = parse_shift("2026-12-25T02:00/2026-12-24T18:00").unwrap();
        let err = build(Some("UTC".into()), vec![], vec![backwards], None).unwrap_err();
        assert!(err.to_string().contains("ends before it starts"), "{err}");
    }

    #[test]
    fn a_schedule_file_holds_a_zone_windows_and_shifts() {
        let lines: Vec<String> = [
            "# the night team",
            "zone Europe/Paris",
            "weekly mon-fri 22:00-06:00",
            "",
            "shift 2026-12-24T18:00/2026-12-25T02:00  # Christmas Eve",
        ]
        .map(str::to_owned)
        .to_vec();
        let file = parse_file(&lines).unwrap();
        assert_eq!(file.zone.as_deref(), Some("Europe/Paris"));
        assert_eq!((file.weekly.len(), file.shifts.len()), (5, 1));
        let err = parse_file(&["weekley mon 08:00-10:00".to_owned()]).unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
    }

    #[test]
    fn upcoming_shifts_are_shown_in_the_drivers_zone() {
        let schedule = DriverSchedule {
            zone: "Europe/Paris".into(),
            weekly: parse_weekly("sat 22:00-04:00").unwrap(),
            shifts: vec![],
        };
        // Saturday 2026-12-05 23:00 UTC is midnight in Paris: on shift until 04:00.
        let now = time::macros::datetime!(2026-12-05 23:00 UTC);
        let next = upcoming(&schedule, now, 2);
        assert_eq!(next.len(), 2);
        assert!(next[0].current);
        assert_eq!(next[0].end, "Sun 2026-12-06 04:00 CET");
        assert!(!next[1].current);
        assert_eq!(next[1].start, "Sat 2026-12-12 22:00 CET");
    }
}
