//! Every command, flag and argument of `ridectl`, in one place (clap derive). The modules under
//! `commands/` carry them out; nothing here talks to NATS.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use ridesaga_schemas::{
    DriverId, GeoPoint, OneOffShift, RefundId, RideId, RiderId, Weekday, WeeklyWindow, limits,
};

use crate::saga::Expectation;
use ridesaga_schemas::duration::parse_duration;

const ABOUT: &str = "Operate Ridesaga: publish ride and driver commands, follow sagas live, \
inspect streams, consumers, workers and dead letters, and audit the saga invariants.";

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  error (unreachable server, missing ride, refused command, audit violations, ...)
  2  usage error (bad flag or value; nothing was published)
  3  a saga came to rest in a state other than the one given with --expect
  4  timed out (--timeout) before the saga came to rest

Output is a table on a terminal and JSON when stdout is not a terminal or with --output json.
Diagnostics go to stderr. NO_COLOR turns colours off.";

/// `ridectl`: the Ridesaga control plane.
#[derive(Debug, Parser)]
#[command(name = "ridectl", version, about = ABOUT, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Connection and output options every command accepts.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// NATS server URL; several separated by commas.
    #[arg(
        long,
        short = 's',
        global = true,
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_name = "URL"
    )]
    pub server: String,
    /// User name for NATS.
    #[arg(long, global = true, env = "NATS_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Password for NATS (with --user).
    #[arg(
        long,
        global = true,
        env = "NATS_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
    /// NATS credentials file (JWT and NKey seed).
    #[arg(long, global = true, env = "NATS_CREDS", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File holding the identity's NKEY seed (`ridectl auth init` writes one per identity).
    #[arg(long, global = true, env = "NATS_NKEY_FILE", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// Prefix of the subjects replies come back on; the server lets each identity subscribe
    /// under its own only (ridectl-viewer: _INBOX_ridectl-viewer).
    #[arg(
        long,
        global = true,
        env = "NATS_INBOX_PREFIX",
        default_value = ridesaga_schemas::auth::DEFAULT_INBOX_PREFIX,
        value_name = "PREFIX"
    )]
    pub inbox_prefix: String,
    /// CA certificate (PEM) that must have signed the server's certificate; requires TLS.
    #[arg(long, global = true, env = "NATS_CA_FILE", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'o', global = true, value_enum, value_name = "FORMAT")]
    pub output: Option<OutputFormat>,
    /// How long to try to reach the server.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
    /// W3C trace context a command continues (00-<trace id>-<parent id>-<flags>); without
    /// one, a ride's commands go in the ride's own trace.
    #[arg(long, global = true, env = "TRACEPARENT", value_name = "TRACEPARENT")]
    pub traceparent: Option<String>,
    /// W3C trace state carried with --traceparent.
    #[arg(long, global = true, env = "TRACESTATE", value_name = "TRACESTATE")]
    pub tracestate: Option<String>,
}

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// JSON for scripts: one document, or one line per item for live streams.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Register drivers and change their availability or position.
    #[command(subcommand)]
    Driver(DriverCommand),
    /// Request, cancel, start, complete and show rides, and report a driver's arrival.
    #[command(subcommand)]
    Ride(RideCommand),
    /// Register riders: where their notifications go.
    #[command(subcommand)]
    Rider(RiderCommand),
    /// Block and unblock riders; review completed rides flagged as fake.
    #[command(subcommand)]
    Fraud(FraudCommand),
    /// Saga timelines and lists, rebuilt from the stream.
    #[command(subcommand)]
    Saga(SagaCommand),
    /// Show the streams: messages, bytes, first and last message time, subjects.
    Streams,
    /// Show each service's consumer: pending, ack pending, redelivered, lag, last delivery.
    Consumers,
    /// Print commands and events as they are stored.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Show the running worker instances and their stats (NATS service discovery).
    Services(ServicesArgs),
    /// Replay the event log and check the saga invariants; exit 0 only when none is violated.
    Audit(AuditArgs),
    /// Create or update the streams and consumers from the contract (idempotent).
    Provision(ProvisionArgs),
    /// Move a stream's leader, or a consumer's, to another node of a JetStream cluster; prints
    /// the old and the new leader.
    StepDown(StepDownArgs),
    /// Inspect and replay dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Each service's consumer lag as KEDA reads it, and the replicas KEDA would choose.
    #[command(subcommand)]
    Scale(ScaleCommand),
    /// The installation's NATS identities: seeds and the server's permissions.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to generate completions for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum DriverCommand {
    /// Register a driver (or rename and relocate one); a new driver starts offline.
    Register {
        /// The driver id, e.g. d_berlin_1.
        id: DriverId,
        /// The driver's display name (at most 500 characters, no control characters).
        #[arg(long, value_parser = parse_name)]
        name: String,
        /// Position as LAT,LNG in decimal degrees; south and west are negative, e.g.
        /// `--at -33.92,18.42` (Cape Town).
        #[arg(long, value_name = "LAT,LNG", allow_hyphen_values = true)]
        at: GeoPoint,
        #[command(flatten)]
        contact: ContactArgs,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Make a driver available for rides, optionally at a new position.
    Online {
        /// The driver id.
        id: DriverId,
        /// New position as LAT,LNG, e.g. `--at -23.55,-46.63`.
        #[arg(long, value_name = "LAT,LNG", allow_hyphen_values = true)]
        at: Option<GeoPoint>,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Stop a driver from taking new rides.
    Offline {
        /// The driver id.
        id: DriverId,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Report driver positions to the positions stream (not the saga stream): one as
    /// `ridectl driver position ID LAT,LNG`, or many with `--file PATH` (`-` for stdin), one
    /// `DRIVER_ID LAT,LNG [UNIX_MS]` per line. A ride in progress records them as its route.
    Position {
        /// The driver id (not with --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        id: Option<DriverId>,
        /// The position as LAT,LNG, e.g. `52.52,13.40`.
        #[arg(
            value_name = "LAT,LNG",
            allow_hyphen_values = true,
            required_unless_present = "file"
        )]
        at: Option<GeoPoint>,
        /// Positions to publish, one `DRIVER_ID LAT,LNG [UNIX_MS]` per line; `-` reads stdin.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// A driver's earnings from the captured fares: each ride's fare, the driver's share and
    /// the platform's commission, and their totals.
    Earnings {
        /// The driver id.
        id: DriverId,
        /// From this instant: RFC 3339 (2026-01-31T00:00:00Z) or a duration ago (24h).
        #[arg(long, value_name = "WHEN", value_parser = parse_instant)]
        since: Option<time::OffsetDateTime>,
        /// Before this instant: RFC 3339 or a duration ago.
        #[arg(long, value_name = "WHEN", value_parser = parse_instant)]
        until: Option<time::OffsetDateTime>,
    },
    /// A driver's daily statement: each ride of the day with its fare, the driver's share, the
    /// commission and the refunds that reversed them, with the totals and the driver's net.
    Statement {
        /// The driver id.
        id: DriverId,
        /// The day (UTC), as YYYY-MM-DD [default: today].
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
        date: Option<time::Date>,
    },
    /// Set, show or clear a driver's schedule: weekly windows and one-off shifts in the
    /// driver's time zone. A driver with a schedule is matched only while on shift, for rides
    /// that end before the shift does; a driver without one, whenever online.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// A driver as the stream tells it: online or not, the current ride, the last position
    /// and the current (or next) shift.
    Show {
        /// The driver id.
        id: DriverId,
    },
    /// Move a driver.
    Move {
        /// The driver id.
        id: DriverId,
        /// New position as LAT,LNG, e.g. `--at -34.60,-58.38`.
        #[arg(long, value_name = "LAT,LNG", allow_hyphen_values = true)]
        at: GeoPoint,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Set a driver's whole schedule (replacing any earlier one), e.g. `--zone Europe/Paris
    /// --weekly "mon-fri 08:00-16:00" --weekly "sat 22:00-04:00" --shift
    /// "2026-12-24T18:00/2026-12-25T02:00"`. Times are the driver's wall-clock times; a window
    /// whose end is not after its start ends the next day.
    Set {
        /// The driver id.
        id: DriverId,
        /// The driver's IANA time zone, e.g. Europe/Paris (required unless --file names it).
        #[arg(long, value_name = "ZONE")]
        zone: Option<String>,
        /// A weekly window: DAYS HH:MM-HH:MM, DAYS a day (mon), a range (mon-fri, fri-mon) or
        /// a list (sat,sun); the end may be 24:00. Repeat for more.
        #[arg(long, value_name = "DAYS HH:MM-HH:MM", value_parser = parse_weekly)]
        weekly: Vec<Vec<WeeklyWindow>>,
        /// A one-off shift: START/END as YYYY-MM-DDTHH:MM, local time. Repeat for more.
        #[arg(long, value_name = "START/END", value_parser = parse_shift)]
        shift: Vec<OneOffShift>,
        /// More of the schedule, one entry a line: `zone ZONE`, `weekly DAYS HH:MM-HH:MM` or
        /// `shift START/END` (`#` starts a comment); `-` reads stdin.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Show a driver's schedule and their next shifts, in the driver's time zone.
    Show {
        /// The driver id.
        id: DriverId,
        /// How many shifts to list (within the next 8 days).
        #[arg(long, default_value = "5")]
        next: usize,
    },
    /// Clear a driver's schedule: they may be matched whenever online again.
    Clear {
        /// The driver id.
        id: DriverId,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
}

/// A weekly window as `DAYS HH:MM-HH:MM`: one window a day of `DAYS`.
pub fn parse_weekly(s: &str) -> Result<Vec<WeeklyWindow>, String> {
    let usage = || format!("{s:?} is not DAYS HH:MM-HH:MM, e.g. \"mon-fri 08:00-16:00\"");
    let (days, times) = s.trim().split_once(char::is_whitespace).ok_or_else(usage)?;
    let (start, end) = times.trim().split_once('-').ok_or_else(usage)?;
    let day = |name: &str| {
        Weekday::parse(name.trim()).ok_or_else(|| {
            format!("{name:?} is not a day of the week (mon, tue, wed, thu, fri, sat, sun)")
        })
    };
    let mut out: Vec<WeeklyWindow> = Vec::new();
    for part in days.split(',') {
        let range = match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (day(from)?, day(to)?);
                let (from, to) = (from as usize, to as usize);
                // A range may wrap around the week: fri-mon.
                let len = (to + 7 - from) % 7 + 1;
                (0..len).map(|i| Weekday::ALL[(from + i) % 7]).collect()
            }
            None => vec![day(part)?],
        };
        for day in range {
            if out.iter().any(|w| w.day == day) {
                return Err(format!("{s:?} names {day} twice"));
            }
            out.push(WeeklyWindow {
                day,
                start: start.trim().to_owned(),
                end: end.trim().to_owned(),
            });
        }
    }
    Ok(out)
}

/// A one-off shift as `START/END`.
pub fn parse_shift(s: &str) -> Result<OneOffShift, String> {
    let (start, end) = s.trim().split_once('/').ok_or_else(|| {
        format!("{s:?} is not START/END, e.g. \"2026-12-24T18:00/2026-12-25T02:00\"")
    })?;
    Ok(OneOffShift {
        start: start.trim().to_owned(),
        end: end.trim().to_owned(),
    })
}

/// Where a person's notifications go; one left out keeps what the notification service knew.
#[derive(Debug, Clone, Default, Args)]
pub struct ContactArgs {
    /// Email address for notifications, e.g. ada@example.com.
    #[arg(long, value_name = "ADDRESS", value_parser = parse_email)]
    pub email: Option<String>,
    /// Phone number for SMS notifications, in E.164: + and the country code, e.g.
    /// +4915112345678.
    #[arg(long, value_name = "E164", value_parser = parse_phone, allow_hyphen_values = true)]
    pub phone: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RiderCommand {
    /// Register a rider (or change their address or phone): the notification service sends
    /// their notifications there, by the channel configured for riders.
    Register {
        /// The rider id, e.g. u_ada.
        id: RiderId,
        #[command(flatten)]
        contact: ContactArgs,
    },
}

/// Waiting for the driver service to apply a driver or fraud command.
#[derive(Debug, Clone, Args)]
pub struct DriverWaitArgs {
    /// Wait until the owning service has applied the command (its update event is stored).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum RideCommand {
    /// Request a ride; prints the ride id.
    Request(RequestArgs),
    /// Cancel a ride (the rider cancels); whatever was done is undone.
    Cancel(RideActionArgs),
    /// Report that the driver reached the pickup: the rider wait starts, after which a ride
    /// that has not started is cancelled (rider_no_show).
    Arrive(RideActionArgs),
    /// Start a ride (the driver picked the rider up).
    Start(RideActionArgs),
    /// Complete a ride (the driver dropped the rider off); the fare is captured.
    Complete(CompleteArgs),
    /// Give back money captured for a ride (all that is left of the capture, or --amount); waits
    /// for the payment service's answer: refunded, or refused with the reason (exit 1).
    Refund(RefundArgs),
    /// Show a ride's state, reason, driver, fare and amounts, rebuilt from the stream.
    Show(ShowArgs),
    /// Follow a ride live: the driver's last position, the distance to the pickup (before the
    /// start) or travelled so far, and an ETA at the average speed; until the ride ends.
    Track(TrackArgs),
}

#[derive(Debug, Args)]
pub struct RefundArgs {
    /// The ride.
    pub ride: RideId,
    /// How much to give back, e.g. 5 or 5.50 [default: what is left of the capture].
    #[arg(long, value_name = "MONEY", value_parser = parse_money)]
    pub amount: Option<u64>,
    /// Why, for the record and the rider (at most 500 characters, no control characters).
    #[arg(long, value_parser = parse_reason)]
    pub reason: Option<String>,
    /// The refund's id [default: a new one]. Retrying with the same id asks for the same
    /// refund, which is made once; its answer is shown again.
    #[arg(long, value_name = "REFUND_ID")]
    pub id: Option<RefundId>,
    /// Publish the command and return without waiting for the answer.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to wait for the answer before exiting with code 4.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// An amount of money as units with at most two decimals (`5`, `5.5`, `5.50`), in cents:
/// above 0 and within the contract's bound.
pub fn parse_money(s: &str) -> Result<u64, String> {
    let bad = || format!("expected an amount such as 5 or 5.50, above 0, got {s:?}");
    let (units, fraction) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit());
    if !digits(units) || (!fraction.is_empty() && !digits(fraction)) || fraction.len() > 2 {
        return Err(bad());
    }
    if s.ends_with('.') {
        return Err(bad());
    }
    let units: u64 = units.parse().map_err(|_| bad())?;
    let fraction: u64 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
    let cents = units
        .checked_mul(100)
        .and_then(|c| c.checked_add(fraction))
        .ok_or_else(bad)?;
    if cents == 0 {
        return Err(bad());
    }
    limits::check_cents("amount", cents).map_err(|e| e.to_string())?;
    Ok(cents)
}

/// A day as YYYY-MM-DD.
fn parse_date(s: &str) -> Result<time::Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format).map_err(|_| format!("expected a day as YYYY-MM-DD, got {s:?}"))
}

#[derive(Debug, Args)]
pub struct TrackArgs {
    /// The ride.
    pub ride: RideId,
    /// Print one line and exit instead of following the ride.
    #[arg(long)]
    pub once: bool,
    /// Average speed for the ETA, in km/h.
    #[arg(long, env = "RIDESAGA_AVERAGE_SPEED_KMH", default_value = "30", value_parser = parse_speed)]
    pub speed_kmh: f64,
    /// How often to look again while following.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub every: Duration,
    /// How long to follow before exiting with code 4.
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

/// An instant: RFC 3339, or a duration before now (e.g. `24h`).
fn parse_instant(s: &str) -> Result<time::OffsetDateTime, String> {
    if let Ok(at) = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(at);
    }
    let ago = parse_duration(s).map_err(|_| {
        format!("expected RFC 3339 (2026-01-31T00:00:00Z) or a duration ago (24h), got {s:?}")
    })?;
    Ok(time::OffsetDateTime::now_utc() - ago)
}

/// A speed in km/h: above 0, at most 300.
fn parse_speed(s: &str) -> Result<f64, String> {
    let speed: f64 = s.parse().map_err(|_| format!("not a number: {s:?}"))?;
    if speed.is_finite() && speed > 0.0 && speed <= 300.0 {
        Ok(speed)
    } else {
        Err(format!(
            "speed must be above 0 and at most 300 km/h, got {s}"
        ))
    }
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The rider asking for the ride.
    #[arg(long, value_name = "RIDER_ID")]
    pub rider: RiderId,
    /// Pickup as LAT,LNG in decimal degrees; south and west are negative, e.g.
    /// `--from -23.55,-46.63` (São Paulo).
    #[arg(long, value_name = "LAT,LNG", allow_hyphen_values = true)]
    pub from: GeoPoint,
    /// Drop-off as LAT,LNG, e.g. `--to -23.60,-46.70`.
    #[arg(long, value_name = "LAT,LNG", allow_hyphen_values = true)]
    pub to: GeoPoint,
    /// Payment token, e.g. tok_visa or tok_chargeDeclined.
    #[arg(long, value_name = "TOKEN", value_parser = parse_card_token)]
    pub card: String,
    /// Ride id to use (default: a new one). Retrying with the same id sends the same command,
    /// which the stream drops as a duplicate.
    #[arg(long, value_name = "RIDE_ID")]
    pub id: Option<RideId>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct RideActionArgs {
    /// The ride.
    pub ride: RideId,
    #[command(flatten)]
    pub wait: WaitArgs,
}

#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// The ride.
    pub ride: RideId,
    /// Distance driven in km (default: the planned route).
    #[arg(long, value_name = "KM", value_parser = parse_km, allow_hyphen_values = true)]
    pub distance_km: Option<f64>,
    /// Duration in minutes (default: the time since the start).
    #[arg(long, value_name = "MIN", value_parser = parse_minutes, allow_hyphen_values = true)]
    pub duration_min: Option<f64>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Following a ride's saga after a command.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// Follow the saga live, one line per step, until it comes to rest (confirmed, started,
    /// completed with the payment captured, cancelled, rejected or expired).
    #[arg(long)]
    pub wait: bool,
    /// Exit with code 3 unless the saga comes to rest in this state (implies --wait).
    /// STATE[:REASON], e.g. confirmed, completed, cancelled:no_driver, rejected, expired.
    #[arg(long, value_name = "STATE")]
    pub expect: Option<Expectation>,
    /// How long --wait may take before exiting with code 4.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

impl WaitArgs {
    pub fn enabled(&self) -> bool {
        self.wait || self.expect.is_some()
    }
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The ride.
    pub ride: RideId,
    /// Exit with code 3 unless the ride is in this state (STATE[:REASON]).
    #[arg(long, value_name = "STATE")]
    pub expect: Option<Expectation>,
}

#[derive(Debug, Subcommand)]
pub enum FraudCommand {
    /// Block a rider: every later request of theirs is flagged and rejected.
    Block {
        /// The rider.
        rider: RiderId,
        /// Why, for the record (at most 500 characters, no control characters).
        #[arg(long, value_parser = parse_reason)]
        reason: Option<String>,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Lift a rider's block.
    Unblock {
        /// The rider.
        rider: RiderId,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
    /// Completed rides fraud flagged whose driver's earnings are held: without a ride, list
    /// the rides awaiting review; with one, decide it (--approve releases the driver's share,
    /// --reject forfeits it).
    #[command(group(clap::ArgGroup::new("decision").args(["approve", "reject"])))]
    Review {
        /// The flagged ride to decide on.
        #[arg(requires = "decision")]
        ride: Option<RideId>,
        /// The ride was genuine: release the driver's share.
        #[arg(long, requires = "ride")]
        approve: bool,
        /// The ride was fake: forfeit the driver's share.
        #[arg(long, requires = "ride")]
        reject: bool,
        /// Why, for the record (at most 500 characters, no control characters).
        #[arg(long, requires = "ride", value_parser = parse_reason)]
        note: Option<String>,
        /// List reviewed rides too.
        #[arg(long, conflicts_with = "ride")]
        all: bool,
        #[command(flatten)]
        wait: DriverWaitArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum SagaCommand {
    /// Every command and event of a ride in order: time, producer, delta, compensations.
    Trace {
        /// The ride.
        ride: RideId,
    },
    /// List sagas with their state, rebuilt from the ride events.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only sagas in this class.
    #[arg(long, value_enum)]
    pub state: Option<StateClass>,
    /// Only sagas with ride events in this recent window, e.g. 10m.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// A saga that is not terminal is stuck once past the deadline of its state by this long
    /// (the ride service's expiry, pickup or rider wait deadline; a started ride's is a day),
    /// or once idle this long where no deadline applies or while it waits on a service's step
    /// (WAITING ON: ride, fraud, driver, payment).
    #[arg(long, default_value = "2m", value_parser = parse_duration, value_name = "DURATION")]
    pub stuck_after: Duration,
}

/// Classes of sagas for `saga list --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateClass {
    /// Not terminal, with recent activity.
    Active,
    /// Not terminal and past its deadline (or idle) by --stuck-after.
    Stuck,
    /// Completed, cancelled, rejected or expired.
    Terminal,
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print messages as they are stored, following new ones until interrupted.
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Subject filter, e.g. 'evt.payment.>' or '*.*.*.r_123' [default: everything].
    #[arg(value_name = "SUBJECT-FILTER")]
    pub filter: Option<String>,
    /// Start this far back instead of with new messages only, e.g. 5m.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub since: Option<Duration>,
    /// Stop after printing what is stored instead of following new messages.
    #[arg(long)]
    pub no_follow: bool,
}

#[derive(Debug, Args)]
pub struct ServicesArgs {
    /// How long to collect answers from the workers.
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub wait: Duration,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Sagas less than this past the deadline of their state (or, where none applies, idle
    /// for less) are still in flight: only safety invariants are checked for them (nothing
    /// twice, no double assignment), not that they finished.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub settle: Duration,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Stream and consumer replicas: 1 on a single server, 3 on a cluster.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
}

#[derive(Debug, Args)]
pub struct StepDownArgs {
    /// The stream whose leader steps down (or whose consumer's, with --consumer).
    #[arg(
        long,
        default_value = ridesaga_schemas::streams::SAGA_STREAM,
        value_name = "STREAM",
        value_parser = parse_jetstream_name
    )]
    pub stream: String,
    /// Move this consumer's leader instead of the stream's, e.g. payment-worker.
    #[arg(long, value_name = "CONSUMER", value_parser = parse_jetstream_name)]
    pub consumer: Option<String>,
    /// How long to wait for the replicas to elect the new leader.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters: worker records with reasons and server advisories.
    List,
    /// Show one dead letter and the original message.
    Show {
        /// The dead letter's sequence in the dead-letter stream (see `dlq list`).
        seq: u64,
    },
    /// Republish a dead letter's original message to its subject with a fresh Nats-Msg-Id.
    Replay {
        /// The dead letter's sequence in the dead-letter stream.
        seq: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Write a seed for every identity (five workers, ridectl-admin, ridectl-viewer,
    /// ridesaga-provision, sys) into DIR as <identity>.nk (mode 0600; existing seeds are kept)
    /// and DIR/auth.conf, the server's include file: the accounts, the public keys and each
    /// identity's permissions. Prints public keys and paths, never a seed.
    Init {
        /// Where the seeds and auth.conf go (created with mode 0700).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Show each service's consumer lag as KEDA's nats-jetstream scaler reads it from the
    /// monitoring port (pending + ack pending, from the consumer leader's node in a cluster)
    /// and the replicas its HPA would choose: ceil(lag / --lag-threshold) within [--min,
    /// --max]. A missing consumer is an error for its service (KEDA applies the
    /// ScaledObject's fallback); a missing account or stream fails the command.
    Plan(ScalePlanArgs),
}

/// The ScaledObject's trigger and bounds, and where to read the lag. The defaults are those of
/// the ScaledObjects in deploy/k8s.
#[derive(Debug, Args)]
pub struct ScalePlanArgs {
    /// NATS monitoring URL, http://HOST:PORT; one per cluster node, repeated or separated by
    /// commas. Given one node of a cluster, the others are found as KEDA finds them. `source
    /// .run/env` after scripts/up sets RIDESAGA_MONITOR_URL.
    #[arg(
        long,
        env = "RIDESAGA_MONITOR_URL",
        default_value = "http://127.0.0.1:8222",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub monitor: Vec<crate::monitor::MonitorUrl>,
    /// The NATS account of the streams, by name or id ($G: a server without accounts).
    #[arg(long, default_value = crate::lag::DEFAULT_ACCOUNT, value_name = "ACCOUNT")]
    pub account: String,
    /// KEDA's lagThreshold: the lag one replica is meant to carry.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub lag_threshold: u64,
    /// KEDA's activationLagThreshold: at or below it the scaler is inactive, which means zero
    /// replicas only with --min 0.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub activation_lag_threshold: u64,
    /// KEDA's minReplicaCount.
    #[arg(long, default_value_t = 1, value_name = "R")]
    pub min: u32,
    /// KEDA's maxReplicaCount.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..), value_name = "R")]
    pub max: u32,
}

fn parse_card_token(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(value.to_owned())
    } else {
        Err("a payment token is 1-64 letters, digits, '_' or '-', e.g. tok_visa".into())
    }
}

/// A stream or consumer name: one subject token, so no dots, wildcards or whitespace.
fn parse_jetstream_name(value: &str) -> Result<String, String> {
    let ok = !value.is_empty()
        && !value
            .chars()
            .any(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control());
    if ok {
        Ok(value.to_owned())
    } else {
        Err("a stream or consumer name has no '.', '*', '>' or whitespace".into())
    }
}

/// A distance in km within the contract's bounds (`ridesaga_schemas::limits`).
fn parse_km(value: &str) -> Result<f64, String> {
    parse_between(value, limits::MAX_DISTANCE_KM)
}

/// A duration in minutes within the contract's bounds.
fn parse_minutes(value: &str) -> Result<f64, String> {
    parse_between(value, limits::MAX_DURATION_MIN)
}

fn parse_between(value: &str, max: f64) -> Result<f64, String> {
    match value.parse::<f64>() {
        // NaN fails the range check too.
        Ok(v) if (0.0..=max).contains(&v) => Ok(v),
        _ => Err(format!("expected a number from 0 to {max}, got {value:?}")),
    }
}

/// A driver's name: text as the contract allows it.
fn parse_name(value: &str) -> Result<String, String> {
    limits::check_text("name", value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// An email address as the contract allows it.
fn parse_email(value: &str) -> Result<String, String> {
    limits::check_email("email", value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// A phone number in E.164.
fn parse_phone(value: &str) -> Result<String, String> {
    limits::check_phone("phone", value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

/// A block's reason: text as the contract allows it.
fn parse_reason(value: &str) -> Result<String, String> {
    limits::check_text("reason", value)
        .map(|()| value.to_owned())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_position_is_refused_naming_the_flag_and_the_problem() {
        let err = Cli::try_parse_from([
            "ridectl", "ride", "request", "--rider", "u_1", "--from", "91,0", "--to", "1,1",
            "--card", "tok_visa",
        ])
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("--from") && text.contains("latitude out of range"),
            "{text}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn positions_south_and_west_are_typed_as_written_in_every_command() {
        let commands: [&[&str]; 4] = [
            &[
                "driver",
                "register",
                "d_1",
                "--name",
                "Ana",
                "--at",
                "-33.9,18.4",
            ],
            &["driver", "online", "d_1", "--at", "-33.9,-18.4"],
            &["driver", "move", "d_1", "--at", "33.9,-18.4"],
            &[
                "ride",
                "request",
                "--rider",
                "u_1",
                "--from",
                "-23.55,-46.63",
                "--to",
                "-23.60,-46.70",
                "--card",
                "tok_visa",
            ],
        ];
        for args in commands {
            let argv = std::iter::once("ridectl").chain(args.iter().copied());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let point = match cli.command {
                Command::Driver(
                    DriverCommand::Register { at, .. } | DriverCommand::Move { at, .. },
                ) => at,
                Command::Driver(DriverCommand::Online { at, .. }) => at.unwrap(),
                Command::Ride(RideCommand::Request(r)) => {
                    assert_eq!((r.to.lat, r.to.lng), (-23.60, -46.70));
                    r.from
                }
                other => panic!("parsed {other:?}"),
            };
            assert!(point.lat < 0.0 || point.lng < 0.0, "{args:?}: {point:?}");
        }
    }

    #[test]
    fn a_negative_distance_is_refused_with_the_reason() {
        let err =
            Cli::try_parse_from(["ridectl", "ride", "complete", "r_1", "--distance-km", "-3"])
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a number from 0 to 40075"),
            "{err}"
        );
    }

    #[test]
    fn the_help_shows_positions_with_negatives() {
        // Help text is wrapped to the terminal; compare it with its whitespace collapsed.
        let flat = |help: String| help.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut command = Cli::command();
        let ride = command.find_subcommand_mut("ride").unwrap();
        let help = ride
            .find_subcommand_mut("request")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(
            flat(help.clone()).contains("--from -23.55,-46.63"),
            "{help}"
        );
        let driver = command.find_subcommand_mut("driver").unwrap();
        let help = driver
            .find_subcommand_mut("register")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(flat(help.clone()).contains("--at -33.92,18.42"), "{help}");
    }

    #[test]
    fn a_malformed_address_or_phone_is_refused_with_the_reason() {
        let err = Cli::try_parse_from([
            "ridectl",
            "rider",
            "register",
            "u_1",
            "--email",
            "ada@localhost",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("the domain needs a dot"), "{err}");
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from([
            "ridectl",
            "driver",
            "register",
            "d_1",
            "--name",
            "Bo",
            "--at",
            "1,1",
            "--phone",
            "0151-1234567",
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("not a phone number in E.164"),
            "{err}"
        );
        let cli = Cli::try_parse_from([
            "ridectl",
            "driver",
            "register",
            "d_1",
            "--name",
            "Bo",
            "--at",
            "1,1",
            "--email",
            "bo@example.com",
            "--phone",
            "+4915112345678",
        ])
        .unwrap();
        let Command::Driver(DriverCommand::Register { contact, .. }) = cli.command else {
            panic!("parsed the wrong command")
        };
        assert_eq!(contact.email.as_deref(), Some("bo@example.com"));
        assert_eq!(contact.phone.as_deref(), Some("+4915112345678"));
    }

    #[test]
    fn expect_implies_wait() {
        let cli = Cli::try_parse_from(["ridectl", "ride", "start", "r_1", "--expect", "started"])
            .unwrap();
        let Command::Ride(RideCommand::Start(args)) = cli.command else {
            panic!("parsed the wrong command")
        };
        assert!(args.wait.enabled());
    }

    #[test]
    fn amounts_of_money_are_read_as_cents_and_checked() {
        assert_eq!(parse_money("5"), Ok(500));
        assert_eq!(parse_money("5.5"), Ok(550));
        assert_eq!(parse_money("0.07"), Ok(7));
        assert_eq!(parse_money("12.34"), Ok(1234));
        for bad in [
            "0",
            "0.00",
            "-1",
            "5.",
            ".5",
            "5.123",
            "1e3",
            "",
            "abc",
            "1000000.01",
        ] {
            assert!(parse_money(bad).is_err(), "{bad:?}");
        }
        let cli =
            Cli::try_parse_from(["ridectl", "ride", "refund", "r_1", "--amount", "2.50"]).unwrap();
        let Command::Ride(RideCommand::Refund(args)) = cli.command else {
            panic!("parsed the wrong command")
        };
        assert_eq!(args.amount, Some(250));
        let err = Cli::try_parse_from(["ridectl", "driver", "statement", "d_1", "--date", "6/12"])
            .unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
    }

    #[test]
    fn card_tokens_and_distances_are_checked() {
        assert!(parse_card_token("tok_visa").is_ok());
        assert!(parse_card_token("4242 4242").is_err());
        assert!(parse_km("-1").is_err());
        assert!(parse_km("NaN").is_err());
        assert!(parse_minutes("1e9").is_err());
        assert_eq!(parse_km("2.5"), Ok(2.5));
    }
}
