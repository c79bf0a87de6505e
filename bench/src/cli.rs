//! Command-line options, and the durations and sizes they resolve to.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Measures Ridesaga's saga throughput, latency and cost against the broker's own relay
/// ceiling, on one nats-server started for the run. Normally run through `scripts/bench`.
#[derive(Debug, Clone, Parser)]
#[command(name = "ridesaga-bench", version, max_term_width = 100)]
pub struct Cli {
    /// Short phases for a smoke run (about a minute of load).
    #[arg(long)]
    pub quick: bool,

    /// Measure only the relay ceiling (needs only nats-server).
    #[arg(long)]
    pub relay_only: bool,

    /// Skip the phase with two replicas of every worker.
    #[arg(long)]
    pub no_scaling: bool,

    /// Record a flat CPU profile of the maximum-rate phase with `perf` and add it to the report.
    #[arg(long)]
    pub perf: bool,

    /// Leave BENCHMARKS.md alone and write the report under `<results-dir>/unrecorded/`
    /// (ignored by git) instead.
    #[arg(long)]
    pub no_record: bool,

    /// Keep the run's directory (server store, worker databases and logs) for inspection; a
    /// PostgreSQL cluster (--db postgres) is deleted once this process exits all the same.
    #[arg(long)]
    pub keep: bool,

    /// Latency the payment worker's simulated gateway adds to every call, e.g. 300ms
    /// (`RIDESAGA_GATEWAY_LATENCY` of every fleet; none by default).
    #[arg(long, value_name = "DURATION", value_parser = ridesaga_schemas::duration::parse_duration)]
    pub gateway_latency: Option<Duration>,

    /// The workers' databases: a SQLite file per service in the run's directory, or a database
    /// per service on a PostgreSQL cluster started for the run (its processes' CPU and memory
    /// are measured like nats-server's).
    #[arg(long, value_enum, default_value_t = Db::Sqlite)]
    pub db: Db,

    /// Instead of the usual phases: queue this many ride requests while no worker runs, start
    /// --replicas replicas of every worker, time how long they take to drain the backlog (every
    /// saga through to its capture), then run `ridectl audit`; an unclean audit fails the run.
    #[arg(long, value_name = "SAGAS",
          value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with_all = ["relay_only", "ab_only", "baseline_bin_dir", "perf"])]
    pub backlog: Option<u64>,

    /// Replicas of every worker that drain the backlog (--backlog).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "backlog",
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,

    /// The `ridectl` binary that audits the backlog [default: ridectl in --bin-dir].
    #[arg(long, value_name = "PATH")]
    pub ridectl: Option<PathBuf>,

    /// The nats-server binary.
    #[arg(
        long,
        env = "NATS_SERVER_BIN",
        default_value = ".tools/bin/nats-server"
    )]
    pub nats_server: PathBuf,

    /// The server configuration the system runs with.
    #[arg(long, default_value = "nats.conf")]
    pub nats_conf: PathBuf,

    /// Where the `<service>-worker` release binaries are.
    #[arg(long, default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// Where reports are written, as `<date>.md` (`<date>-quick.md` with --quick, `-relay`
    /// with --relay-only, `-ab` or `-ab-quick` with --ab-only).
    #[arg(long, default_value = "bench/results")]
    pub results_dir: PathBuf,

    /// The document whose latest-figures block is replaced.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks_file: PathBuf,

    /// Seconds of load in each maximum-rate phase [default: 30, quick 10].
    #[arg(long, value_name = "SECONDS")]
    pub phase_secs: Option<u64>,

    /// Seconds of load in the half-rate latency phase [default: 30, quick 10].
    #[arg(long, value_name = "SECONDS")]
    pub latency_secs: Option<u64>,

    /// Also measure latency at this light offered rate (sagas per second), after the half-rate
    /// phase and for as long: the latency floor, with the machine mostly idle.
    #[arg(long, value_name = "SAGAS_PER_S", value_parser = positive_rate)]
    pub light_rate: Option<f64>,

    /// Seconds of unmeasured load before each maximum-rate phase [default: 5, quick 2].
    #[arg(long, value_name = "SECONDS")]
    pub warmup_secs: Option<u64>,

    /// Messages per relay run; the relay runs before and after the one-replica phases
    /// [default: 200000, quick 50000].
    #[arg(long, value_name = "COUNT")]
    pub relay_messages: Option<u64>,

    /// Sagas kept in flight at the maximum rate.
    #[arg(long, default_value_t = 256)]
    pub window: usize,

    /// Drivers brought online before the load [default: twice the window].
    #[arg(long)]
    pub drivers: Option<usize>,

    /// Messages per pull, for the workers and the relay alike [default: the workers' default
    /// on --db's backend].
    #[arg(long, env = "RIDESAGA_BATCH")]
    pub batch: Option<usize>,

    /// Messages handled at once per worker replica, and by the relay [default: the workers'
    /// default on --db's backend].
    #[arg(long, env = "RIDESAGA_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,

    /// Also compare the workers in --bin-dir with a baseline build's `<service>-worker`
    /// binaries in this directory, in the same run on the same server: after the usual phases,
    /// --ab-rounds rounds of both builds, each on a fresh fleet, reported as ratios.
    #[arg(long, value_name = "DIR", conflicts_with = "relay_only")]
    pub baseline_bin_dir: Option<PathBuf>,

    /// What the baseline is (a revision, say), for the report [default: its directory].
    #[arg(long, value_name = "TEXT", requires = "baseline_bin_dir")]
    pub baseline_label: Option<String>,

    /// Rounds of the A/B comparison; each runs both builds, and they alternate which goes
    /// first.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ab_rounds: u32,

    /// Run only the A/B rounds, without the relay and the usual phases (BENCHMARKS.md is then
    /// left alone).
    #[arg(long, requires = "baseline_bin_dir")]
    pub ab_only: bool,

    /// The command line to record in the report [default: this process's arguments].
    #[arg(long)]
    pub command: Option<String>,

    /// Create the run's directory inside this one [default: the system's temporary directory].
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,

    /// Append `pid name` of every process started here to this file, so a wrapper can stop
    /// them if this process is killed.
    #[arg(long)]
    pub pids_file: Option<PathBuf>,
}

/// Where the workers keep their state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Db {
    /// A SQLite file per service, shared by the service's replicas.
    #[default]
    Sqlite,
    /// A database per service on one PostgreSQL cluster.
    Postgres,
}

impl Db {
    pub fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
        }
    }
}

/// The resolved durations and sizes of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub phase: Duration,
    pub latency: Duration,
    pub warmup: Duration,
    pub drain_timeout: Duration,
    pub relay_messages: u64,
    pub window: usize,
    pub drivers: usize,
    pub batch: usize,
    pub max_in_flight: usize,
    /// `RIDESAGA_GATEWAY_LATENCY` of the workers, if one is set.
    pub gateway_latency: Option<Duration>,
}

impl Cli {
    pub fn settings(&self) -> Settings {
        let pick = |given: Option<u64>, full: u64, quick: u64| {
            given.unwrap_or(if self.quick { quick } else { full })
        };
        let window = self.window.max(1);
        let default_window = ridesaga_workers::config::default_window(match self.db {
            Db::Sqlite => ridesaga_workers::runtime::Kind::Sqlite,
            Db::Postgres => ridesaga_workers::runtime::Kind::Postgres,
        });
        Settings {
            phase: Duration::from_secs(pick(self.phase_secs, 30, 10).max(1)),
            latency: Duration::from_secs(pick(self.latency_secs, 30, 10).max(1)),
            warmup: Duration::from_secs(pick(self.warmup_secs, 5, 2)),
            drain_timeout: Duration::from_secs(if self.quick { 30 } else { 60 }),
            relay_messages: pick(self.relay_messages, 200_000, 50_000).max(1),
            window,
            drivers: self.drivers.unwrap_or(2 * window).max(window),
            batch: self.batch.unwrap_or(default_window).max(1),
            max_in_flight: self.max_in_flight.unwrap_or(default_window).max(1),
            gateway_latency: self.gateway_latency,
        }
    }

    /// What the report's file name adds to its date: the backend when it is not SQLite, then
    /// the kind of run (`-relay`, `-ab`, `-backlog`, each with `-quick` when quick).
    pub fn report_suffix(&self) -> String {
        let db = match self.db {
            Db::Sqlite => "",
            Db::Postgres => "-postgres",
        };
        let kind = match (
            self.relay_only,
            self.ab_only,
            self.backlog.is_some(),
            self.quick,
        ) {
            (true, _, _, _) => "-relay",
            (_, true, _, true) => "-ab-quick",
            (_, true, _, false) => "-ab",
            (_, _, true, true) => "-backlog-quick",
            (_, _, true, false) => "-backlog",
            (_, _, _, true) => "-quick",
            _ => "",
        };
        format!("{db}{kind}")
    }

    /// The `ridectl` the backlog's audit runs.
    pub fn ridectl_path(&self) -> PathBuf {
        self.ridectl
            .clone()
            .unwrap_or_else(|| self.bin_dir.join("ridectl"))
    }

    /// The command line the report records.
    pub fn command_line(&self) -> String {
        self.command.clone().unwrap_or_else(|| {
            let args: Vec<String> = std::env::args().collect();
            args.join(" ")
        })
    }
}

/// A rate above zero.
fn positive_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(format!("{text:?} is not a rate above 0 sagas per second")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_runs_have_shorter_phases_and_explicit_values_win() {
        let quick = Cli::parse_from(["ridesaga-bench", "--quick", "--phase-secs", "4"]).settings();
        assert_eq!(quick.phase, Duration::from_secs(4));
        assert_eq!(quick.latency, Duration::from_secs(10));
        assert_eq!(quick.relay_messages, 50_000);
        let full = Cli::parse_from(["ridesaga-bench", "--window", "100"]).settings();
        assert_eq!(full.phase, Duration::from_secs(30));
        assert_eq!(full.drivers, 200);
    }

    #[test]
    fn the_comparison_needs_a_baseline_and_at_least_one_round() {
        let cli = Cli::parse_from(["ridesaga-bench", "--baseline-bin-dir", "base", "--ab-only"]);
        assert_eq!(cli.ab_rounds, 2);
        assert!(Cli::try_parse_from(["ridesaga-bench", "--ab-only"]).is_err());
        let no_rounds = [
            "ridesaga-bench",
            "--baseline-bin-dir",
            "base",
            "--ab-rounds",
            "0",
        ];
        assert!(Cli::try_parse_from(no_rounds).is_err());
        let relay = [
            "ridesaga-bench",
            "--baseline-bin-dir",
            "base",
            "--relay-only",
        ];
        assert!(Cli::try_parse_from(relay).is_err());
    }

    #[test]
    fn the_database_is_sqlite_unless_postgres_is_asked_for() {
        assert_eq!(Cli::parse_from(["ridesaga-bench"]).db, Db::Sqlite);
        let postgres = Cli::parse_from(["ridesaga-bench", "--db", "postgres"]);
        assert_eq!(postgres.db, Db::Postgres);
        assert_eq!(postgres.db.name(), "postgres");
        assert!(Cli::try_parse_from(["ridesaga-bench", "--db", "mysql"]).is_err());
    }

    #[test]
    fn the_backlog_takes_three_replicas_unless_told_and_runs_alone() {
        let cli = Cli::parse_from(["ridesaga-bench", "--db", "postgres", "--backlog", "2000"]);
        assert_eq!((cli.backlog, cli.replicas), (Some(2000), 3));
        let two = ["ridesaga-bench", "--backlog", "10", "--replicas", "2"];
        assert_eq!(Cli::parse_from(two).replicas, 2);
        for wrong in [
            vec!["ridesaga-bench", "--replicas", "3"],
            vec!["ridesaga-bench", "--backlog", "0"],
            vec!["ridesaga-bench", "--backlog", "10", "--replicas", "0"],
            vec!["ridesaga-bench", "--backlog", "10", "--relay-only"],
            vec![
                "ridesaga-bench",
                "--backlog",
                "10",
                "--baseline-bin-dir",
                "b",
            ],
        ] {
            assert!(Cli::try_parse_from(&wrong).is_err(), "{wrong:?}");
        }
        assert_eq!(cli.ridectl_path(), PathBuf::from("target/release/ridectl"));
    }

    #[test]
    fn report_names_keep_sqlite_s_and_mark_postgres_and_the_backlog() {
        let suffix = |args: &[&str]| {
            let mut all = vec!["ridesaga-bench"];
            all.extend_from_slice(args);
            Cli::parse_from(all).report_suffix()
        };
        assert_eq!(suffix(&[]), "");
        assert_eq!(suffix(&["--quick"]), "-quick");
        assert_eq!(suffix(&["--relay-only", "--quick"]), "-relay");
        assert_eq!(
            suffix(&["--baseline-bin-dir", "b", "--ab-only", "--quick"]),
            "-ab-quick"
        );
        assert_eq!(suffix(&["--db", "postgres"]), "-postgres");
        assert_eq!(suffix(&["--db", "postgres", "--quick"]), "-postgres-quick");
        assert_eq!(
            suffix(&["--db", "postgres", "--backlog", "2000"]),
            "-postgres-backlog"
        );
        assert_eq!(suffix(&["--backlog", "5", "--quick"]), "-backlog-quick");
    }

    #[test]
    fn there_are_never_fewer_drivers_than_sagas_in_flight() {
        let settings = Cli::parse_from(["ridesaga-bench", "--window", "64", "--drivers", "10"]);
        assert_eq!(settings.settings().drivers, 64);
    }
}
