//! The results of one run, the figures derived from them (relay ceiling, deliveries per saga,
//! the ratio) and the one-line summary. [`crate::markdown`] renders the rest.

use std::collections::BTreeMap;

use ridesaga_schemas::Service;

use crate::ab::Comparison;
use crate::backlog::BacklogRun;
use crate::cli::Db;
use crate::fleet::WorkerCounts;
use crate::floor::FloorRun;
use crate::generator::Outcome;
use crate::procfs::Usage;
use crate::relay::RelayRun;
use crate::stats::Summary;

/// The name of the bench's own process (relay and generator) in usage tables.
pub const SELF_NAME: &str = "ridesaga-bench";

/// The issue's targets, on a 2-core machine.
pub const TARGET_RATIO: f64 = 0.6;
pub const TARGET_P50_CONFIRM_MS: f64 = 5.0;
pub const TARGET_P99_CONFIRM_MS: f64 = 25.0;
pub const TARGET_IDLE_RSS_MB: f64 = 30.0;
pub const TARGET_PEAK_RSS_MB: f64 = 100.0;

/// One phase of saga load and what the server and the processes did during it.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    pub outcome: Outcome,
    /// Deliveries per service consumer during the phase (the server's count).
    pub deliveries: BTreeMap<Service, u64>,
    /// What the workers counted during the phase, per service (`handled`, `duplicates`,
    /// `redelivered`, `failed`, ...), when they report it.
    pub worker_counts: WorkerCounts,
    /// What each process did during the phase (CPU, context switches, I/O).
    pub usage: BTreeMap<String, Usage>,
}

impl Phase {
    /// CPU seconds per process during the phase.
    pub fn cpu(&self) -> BTreeMap<String, f64> {
        self.usage
            .iter()
            .map(|(name, usage)| (name.clone(), usage.cpu_seconds))
            .collect()
    }

    pub fn total_deliveries(&self) -> u64 {
        self.deliveries.values().sum()
    }

    /// A worker counter summed over the services.
    pub fn worker_total(&self, counter: &str) -> u64 {
        self.worker_counts
            .values()
            .filter_map(|c| c.get(counter))
            .sum()
    }

    /// Message deliveries per saga, summed over the service consumers.
    pub fn deliveries_per_saga(&self) -> Option<f64> {
        let sagas = self.outcome.started;
        (sagas > 0).then(|| self.total_deliveries() as f64 / sagas as f64)
    }
}

/// Memory and CPU of one process over the whole run.
#[derive(Debug, Clone, Default)]
pub struct ProcessCost {
    pub name: String,
    pub idle_rss_kib: Option<u64>,
    pub peak_rss_kib: u64,
    /// RSS at the end of the run, after the last phase drained.
    pub end_rss_kib: u64,
    pub cpu_seconds: f64,
}

impl ProcessCost {
    pub fn is_worker(&self) -> bool {
        self.name.contains("-worker")
    }
}

/// Everything one run measured, and how.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub date: String,
    pub started_at: String,
    pub command: String,
    pub quick: bool,
    pub machine: String,
    /// Load averages before the run and after it.
    pub load: (String, String),
    pub cores: usize,
    pub nats_version: String,
    pub revision: String,
    /// Settings as (name, value), in the order shown.
    pub settings: Vec<(String, String)>,
    pub relay: Vec<RelayRun>,
    /// What each process did during each relay run's timed part.
    pub relay_usage: Vec<BTreeMap<String, Usage>>,
    /// The runtime's floor ([`crate::floor`]): with the workers' settings, then with one
    /// message in flight.
    pub floor: Vec<FloorRun>,
    /// What each process did during each floor run's timed part.
    pub floor_usage: Vec<BTreeMap<String, Usage>>,
    /// Maximum rate, one replica of every worker.
    pub max1: Option<Phase>,
    /// Open-loop rate used for the latency phase, and that phase.
    pub latency: Option<(f64, Phase)>,
    /// The latency phase hop by hop, from the saga stream's store times.
    pub latency_hops: Vec<crate::hops::Hop>,
    /// The light-load latency phase (`--light-rate`), its rate and its hops.
    pub light: Option<(f64, Phase)>,
    pub light_hops: Vec<crate::hops::Hop>,
    /// Maximum rate, two replicas of every worker.
    pub max2: Option<Phase>,
    /// The rounds against a baseline build, when one was given.
    pub ab: Option<Comparison>,
    /// The workers' databases.
    pub db: Db,
    /// The backlog drain (`--backlog`), which runs instead of the other phases.
    pub backlog: Option<BacklogRun>,
    pub costs: Vec<ProcessCost>,
    /// Flat profile of the maximum-rate phase, when it was recorded.
    pub profile: Option<String>,
    /// Failures, timeouts and anything else a reader must not miss.
    pub problems: Vec<String>,
    /// Where the full report was written (relative to the workspace).
    pub report_path: String,
}

pub(crate) fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Report {
    /// The relay ceiling: the mean of the relay runs.
    pub fn relay_per_second(&self) -> Option<f64> {
        (!self.relay.is_empty())
            .then(|| self.relay.iter().map(|r| r.per_second).sum::<f64>() / self.relay.len() as f64)
    }

    /// S / (R / D): the share of the broker-implied saga ceiling the system reaches.
    pub fn ratio(&self) -> Option<f64> {
        let max1 = self.max1.as_ref()?;
        let relay = self.relay_per_second()?;
        let d = max1.deliveries_per_saga()?;
        (relay > 0.0).then(|| max1.outcome.per_second() * d / relay)
    }

    /// The runtime's floor F: messages per second through the workers' runtime around a
    /// service that does nothing, with the workers' settings.
    pub fn floor_per_second(&self) -> Option<f64> {
        self.floor.first().map(|run| run.per_second)
    }

    /// S / (F / D): the share of the runtime-implied saga ceiling the services reach, what
    /// their own work leaves of it.
    pub fn floor_ratio(&self) -> Option<f64> {
        let max1 = self.max1.as_ref()?;
        let floor = self.floor_per_second()?;
        let d = max1.deliveries_per_saga()?;
        (floor > 0.0).then(|| max1.outcome.per_second() * d / floor)
    }

    pub fn confirm_latency(&self) -> Option<Summary> {
        Summary::of(&self.latency.as_ref()?.1.outcome.confirm_ms)
    }

    pub fn capture_latency(&self) -> Option<Summary> {
        Summary::of(&self.latency.as_ref()?.1.outcome.capture_ms)
    }

    pub fn max_worker_peak_mb(&self) -> Option<f64> {
        let workers = self.costs.iter().filter(|c| c.is_worker());
        workers.map(|c| mb(c.peak_rss_kib)).reduce(f64::max)
    }

    pub fn max_worker_idle_mb(&self) -> Option<f64> {
        let idle = self.costs.iter().filter(|c| c.is_worker());
        idle.filter_map(|c| c.idle_rss_kib.map(mb)).reduce(f64::max)
    }

    /// The line printed last: `bench: key=value ...`, ending with `db=postgres` when the
    /// workers ran on PostgreSQL. A backlog drain has fields of its own.
    pub fn summary_line(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        let mut put = |key: &str, value: String| fields.push(format!("{key}={value}"));
        for (key, value) in self.backlog.iter().flat_map(BacklogRun::summary_fields) {
            put(key, value);
        }
        if let Some(max1) = &self.max1 {
            put("sagas", max1.outcome.captured.to_string());
            put("sagas_per_s", format!("{:.1}", max1.outcome.per_second()));
        }
        if let Some(relay) = self.relay_per_second() {
            put("relay_per_s", format!("{relay:.0}"));
        }
        if let Some(d) = self.max1.as_ref().and_then(Phase::deliveries_per_saga) {
            put("deliveries_per_saga", format!("{d:.2}"));
        }
        if let Some(ratio) = self.ratio() {
            put("ratio", format!("{ratio:.3}"));
        }
        if let Some(c) = self.confirm_latency() {
            put("p50_confirm_ms", format!("{:.2}", c.p50));
            put("p99_confirm_ms", format!("{:.2}", c.p99));
        }
        if let Some(m) = self.max_worker_peak_mb() {
            put("max_worker_rss_mb", format!("{m:.1}"));
        }
        if let Some(c) = self.capture_latency() {
            put("p50_capture_ms", format!("{:.2}", c.p50));
            put("p99_capture_ms", format!("{:.2}", c.p99));
        }
        if let Some(m) = self.max_worker_idle_mb() {
            put("max_worker_idle_rss_mb", format!("{m:.1}"));
        }
        if let Some(floor) = self.floor_per_second() {
            put("floor_per_s", format!("{floor:.0}"));
        }
        if let Some(ratio) = self.floor_ratio() {
            put("floor_ratio", format!("{ratio:.3}"));
        }
        if let Some(max2) = &self.max2 {
            put(
                "sagas_per_s_2x",
                format!("{:.1}", max2.outcome.per_second()),
            );
        }
        let failed: u64 = self
            .phases()
            .map(|(_, p)| p.outcome.failed() + p.outcome.unfinished)
            .sum();
        if self.max1.is_some() {
            put("failed", failed.to_string());
        }
        for (key, value) in self.ab.iter().flat_map(Comparison::summary_fields) {
            put(key, value);
        }
        if self.db != Db::Sqlite {
            put("db", self.db.name().to_owned());
        }
        format!("bench: {}", fields.join(" "))
    }

    /// Whether a saga failed or did not finish in any phase, the A/B rounds' included, or the
    /// backlog drain did not pass.
    pub fn broken(&self) -> bool {
        self.phases()
            .map(|(_, p)| p)
            .chain(self.ab.iter().flat_map(Comparison::phases))
            .any(|p| p.outcome.failed() + p.outcome.unfinished > 0)
            || self.backlog.as_ref().is_some_and(|b| !b.passed())
    }

    pub(crate) fn phases(&self) -> impl Iterator<Item = (&'static str, &Phase)> {
        [
            ("max rate, 1 replica", self.max1.as_ref()),
            (
                "half rate, 1 replica",
                self.latency.as_ref().map(|(_, p)| p),
            ),
            ("light load, 1 replica", self.light.as_ref().map(|(_, p)| p)),
            ("max rate, 2 replicas", self.max2.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, phase)| phase.map(|p| (name, p)))
    }
}

/// A report with made-up figures, for tests of the figures and of their rendering.
#[cfg(test)]
pub(crate) mod fixture {
    use std::time::Duration;

    use super::*;

    pub fn usage(cpu_seconds: f64) -> Usage {
        Usage {
            cpu_seconds,
            context_switches: 3000,
            ..Usage::default()
        }
    }

    pub fn phase(captured: u64, seconds: u64, deliveries: u64) -> Phase {
        Phase {
            outcome: Outcome {
                started: captured,
                captured,
                elapsed: Duration::from_secs(seconds),
                confirm_ms: vec![2.0, 3.0, 4.0, 30.0],
                quiet: true,
                ..Outcome::default()
            },
            deliveries: BTreeMap::from([(Service::Ride, deliveries)]),
            worker_counts: WorkerCounts::from([(
                Service::Ride,
                BTreeMap::from([
                    ("handled".to_owned(), deliveries),
                    ("redelivered".into(), 3),
                ]),
            )]),
            usage: BTreeMap::from([
                ("nats-server".to_owned(), usage(6.0)),
                ("ride-worker#1".into(), usage(4.0)),
            ]),
        }
    }

    pub fn report() -> Report {
        let relay = |per_second| RelayRun {
            messages: 1000,
            payload_bytes: 300,
            elapsed: Duration::from_secs(1),
            per_second,
            stalls: 0,
        };
        Report {
            date: "2026-01-02".into(),
            command: "scripts/bench --quick".into(),
            cores: 2,
            relay: vec![relay(30_000.0), relay(34_000.0)],
            relay_usage: vec![BTreeMap::from([
                ("nats-server".to_owned(), usage(0.05)),
                (SELF_NAME.to_owned(), usage(0.04)),
            ])],
            floor: vec![FloorRun {
                messages: 1000,
                max_in_flight: 64,
                elapsed: Duration::from_millis(125),
                per_second: 8_000.0,
            }],
            floor_usage: vec![BTreeMap::from([
                ("nats-server".to_owned(), usage(0.05)),
                (SELF_NAME.to_owned(), usage(0.1)),
            ])],
            max1: Some(phase(1000, 2, 15_000)),
            latency: Some((250.0, phase(500, 2, 7_500))),
            max2: Some(phase(1100, 2, 16_500)),
            costs: vec![
                ProcessCost {
                    name: "nats-server".into(),
                    idle_rss_kib: None,
                    peak_rss_kib: 200 * 1024,
                    end_rss_kib: 150 * 1024,
                    cpu_seconds: 9.0,
                },
                ProcessCost {
                    name: "ride-worker#1".into(),
                    idle_rss_kib: Some(12 * 1024),
                    peak_rss_kib: 40 * 1024,
                    end_rss_kib: 20 * 1024,
                    cpu_seconds: 5.0,
                },
            ],
            report_path: "bench/results/2026-01-02-quick.md".into(),
            ..Report::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::report;
    use super::*;

    #[test]
    fn the_ratio_is_the_share_of_the_relay_implied_saga_ceiling() {
        let report = report();
        // S = 500/s, R = 32,000/s, D = 15: the ceiling is 2,133 sagas/s.
        assert_eq!(report.relay_per_second(), Some(32_000.0));
        let ratio = report.ratio().unwrap();
        assert!((ratio - 500.0 * 15.0 / 32_000.0).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn the_floor_ratio_is_the_share_of_the_runtime_implied_saga_ceiling() {
        let report = report();
        // S = 500/s, F = 8,000/s, D = 15: no service on this runtime passes 533 sagas/s.
        assert_eq!(report.floor_per_second(), Some(8_000.0));
        let ratio = report.floor_ratio().unwrap();
        assert!((ratio - 500.0 * 15.0 / 8_000.0).abs() < 1e-9, "{ratio}");
        let no_floor = Report {
            floor: Vec::new(),
            ..report
        };
        assert_eq!(no_floor.floor_ratio(), None);
    }

    #[test]
    fn the_summary_line_starts_with_the_issue_fields_in_order() {
        let line = report().summary_line();
        assert!(
            line.starts_with(
                "bench: sagas=1000 sagas_per_s=500.0 relay_per_s=32000 deliveries_per_saga=15.00 \
                 ratio=0.234 p50_confirm_ms=3.00 p99_confirm_ms=30.00 max_worker_rss_mb=40.0 "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(" floor_per_s=8000 floor_ratio=0.938 sagas_per_s_2x=550.0 failed=0"),
            "{line}"
        );
    }

    #[test]
    fn the_comparison_adds_its_fields_at_the_end_of_the_summary_line() {
        let mut report = report();
        report.ab = Some(crate::ab::fixture::comparison());
        let line = report.summary_line();
        assert!(
            line.ends_with(
                " failed=0 ab_speedup=1.200 ab_speedup_paced=1.000 ab_p50_confirm_ms_base=10.00 \
                 ab_p50_confirm_ms_cur=5.00 ab_p99_confirm_ms_base=20.00 ab_p99_confirm_ms_cur=8.00"
            ),
            "{line}"
        );
        assert!(!report.broken());
        report.ab.as_mut().unwrap().rounds[1]
            .current
            .max
            .outcome
            .unfinished = 1;
        assert!(report.broken());
    }

    #[test]
    fn a_postgres_run_says_so_at_the_end_of_the_same_summary_line() {
        let sqlite = report().summary_line();
        let postgres = Report {
            db: Db::Postgres,
            ..report()
        };
        assert_eq!(postgres.summary_line(), format!("{sqlite} db=postgres"));
        assert!(!sqlite.contains("db="));
    }

    #[test]
    fn a_relay_only_run_reports_only_the_relay() {
        let report = Report {
            relay: report().relay,
            ..Report::default()
        };
        assert_eq!(report.summary_line(), "bench: relay_per_s=32000");
    }
}
