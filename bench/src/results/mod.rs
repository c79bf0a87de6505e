//! What a run measured, as the tree written to `<date>.json`, and the figures derived from it:
//! the ratios, the A/B medians, the backlog's verdict and the summary line. Nothing here
//! measures or renders: the run fills it in, the report renders it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub(crate) mod fixture;
#[cfg(test)]
mod tests;

/// The name of the bench's own process (relay, runtime floor and generator) in usage tables.
pub const SELF_NAME: &str = "ridesaga-bench";
/// The name of PostgreSQL's processes together in usage tables.
pub const DATABASE_PROCESS: &str = "postgres";
/// The name that stands for every worker process together in per-process figures.
pub const ALL_WORKERS: &str = "all workers";
/// The name that stands for every measured process together in per-process figures.
pub const ALL_PROCESSES: &str = "all";

/// The targets, on a 2-core machine.
pub const TARGET_RATIO: f64 = 0.6;
pub const TARGET_P50_CONFIRM_MS: f64 = 5.0;
pub const TARGET_P99_CONFIRM_MS: f64 = 25.0;
pub const TARGET_IDLE_RSS_MB: f64 = 30.0;
pub const TARGET_PEAK_RSS_MB: f64 = 100.0;

/// Everything one run measured, and how.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    pub run: Environment,
    /// The relay ceiling's runs (before and after the one-replica phases).
    pub relay: Vec<RelayRun>,
    /// The runtime's floor: with the workers' settings, then with one message in flight.
    pub floor: Vec<FloorRun>,
    /// Maximum rate, one replica of every worker.
    pub max_rate: Option<Phase>,
    /// Open loop at half of the maximum rate, one replica.
    pub half_rate: Option<Phase>,
    /// Open loop at `--light-rate`, one replica.
    pub light_load: Option<Phase>,
    /// Maximum rate, two replicas of every worker.
    pub max_rate_2x: Option<Phase>,
    /// The rounds against a baseline build.
    pub ab: Option<Comparison>,
    /// The backlog drain, which runs instead of the phases above.
    pub backlog: Option<Backlog>,
    /// Memory and CPU of every process over the run (before any A/B round).
    pub processes: Vec<ProcessCost>,
    /// Flat `perf` profile of the maximum-rate phase.
    pub profile: Option<String>,
    /// Failures, timeouts and anything else a reader must not miss.
    pub problems: Vec<String>,
}

/// The conditions of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Environment {
    pub date: String,
    pub started_at: String,
    pub command: String,
    pub quick: bool,
    pub machine: String,
    pub cores: usize,
    /// Load averages (1, 5, 15 min) before and after the run.
    pub load_before: String,
    pub load_after: String,
    pub nats_version: String,
    /// `sync_interval` of the server's configuration.
    pub nats_sync: String,
    pub revision: String,
    /// `sqlite` or `postgres`.
    pub db: String,
    /// The workers' databases, as the run set them up.
    pub database: String,
    pub window: usize,
    pub drivers: usize,
    pub batch: usize,
    pub max_in_flight: usize,
    pub warmup_s: u64,
    pub phase_s: u64,
    pub latency_s: u64,
    pub relay_messages: u64,
    pub gateway_latency_ms: Option<u64>,
    /// The markdown report rendered from these results.
    pub report: String,
}

/// One relay run: a raw JetStream relay, pipelined like the workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RelayRun {
    pub messages: u64,
    pub payload_bytes: usize,
    pub seconds: f64,
    pub per_second: f64,
    /// Times the pull went quiet and was started again.
    pub stalls: u64,
    /// What each process did during the timed part.
    pub usage: BTreeMap<String, Usage>,
}

/// One run of the runtime's floor: the workers' runtime around a service that does nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FloorRun {
    pub messages: u64,
    pub max_in_flight: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub usage: BTreeMap<String, Usage>,
}

impl FloorRun {
    /// Milliseconds per message: with one message in flight, the least a hop can take.
    pub fn ms_per_message(&self) -> f64 {
        if self.messages == 0 {
            return 0.0;
        }
        self.seconds * 1000.0 / self.messages as f64
    }
}

/// What a process did between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub context_switches: u64,
    pub read_calls: u64,
    pub write_calls: u64,
    pub disk_write_bytes: u64,
}

/// Count, p50, p99, max and mean of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// The summary of `samples` (exact nearest-rank percentiles), or `None` when there are
    /// none.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|s| s.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            count: sorted.len(),
            p50: nearest_rank(&sorted, 0.50),
            p99: nearest_rank(&sorted, 0.99),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

/// The nearest-rank `q` quantile (0 < q <= 1) of non-empty, sorted samples: the smallest sample
/// that at least a `q` share of the samples does not exceed.
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The latency of one kind of hop: store time of a message minus that of its cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hop {
    /// The service that published the effect.
    pub producer: String,
    /// The effect's message type, e.g. `evt.fraud.cleared`.
    pub effect: String,
    pub summary: Summary,
}

/// One phase of saga load and what the server and the processes did during it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Phase {
    /// Sagas started per second, open loop; `None` when a window of sagas was kept in flight.
    pub offered_per_s: Option<f64>,
    pub started: u64,
    pub completed: u64,
    /// Sagas that ended otherwise, by how they ended.
    pub failures: BTreeMap<String, u64>,
    /// Sagas still open when the drain timed out.
    pub unfinished: u64,
    pub publish_errors: u64,
    /// Open loop only: starts skipped at the in-flight cap.
    pub skipped_starts: u64,
    /// Every consumer was empty at the end.
    pub quiet: bool,
    /// From the first command to the last event (notifications too).
    pub seconds: f64,
    /// Completed sagas per second over the whole phase.
    pub per_second: f64,
    /// `cmd.ride.request` published -> `evt.ride.confirmed` received.
    pub confirm_ms: Option<Summary>,
    /// `cmd.ride.complete` published -> `evt.payment.captured` received.
    pub capture_ms: Option<Summary>,
    /// `cmd.ride.request` published -> `evt.payment.captured` received.
    pub saga_ms: Option<Summary>,
    /// Sagas by how many notifications were sent for them.
    pub notifications: BTreeMap<u32, u64>,
    /// Deliveries per service consumer (the server's count), by service.
    pub deliveries: BTreeMap<String, u64>,
    /// What the workers counted (`handled`, `duplicates`, `redelivered`, `failed`, `batches`),
    /// summed over the replicas, by service.
    pub worker_counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// What each process did (CPU, context switches, I/O).
    pub usage: BTreeMap<String, Usage>,
    /// Latency hop by hop, from the saga stream's store times (latency phases).
    pub hops: Vec<Hop>,
}

impl Phase {
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Sagas that failed or did not finish.
    pub fn broken(&self) -> u64 {
        self.failed() + self.unfinished
    }

    pub fn total_deliveries(&self) -> u64 {
        self.deliveries.values().sum()
    }

    /// Message deliveries per saga started, summed over the service consumers.
    pub fn deliveries_per_saga(&self) -> Option<f64> {
        (self.started > 0).then(|| self.total_deliveries() as f64 / self.started as f64)
    }

    /// A worker counter summed over the services.
    pub fn worker_total(&self, counter: &str) -> u64 {
        self.worker_counts
            .values()
            .filter_map(|c| c.get(counter))
            .sum()
    }

    /// Inputs applied per write transaction, of one service or (`None`) of all.
    pub fn inputs_per_batch(&self, service: Option<&str>) -> Option<f64> {
        let count = |name: &str| match service {
            Some(service) => self
                .worker_counts
                .get(service)
                .and_then(|c| c.get(name))
                .copied()
                .unwrap_or(0),
            None => self.worker_total(name),
        };
        let batches = count("batches");
        (batches > 0).then(|| count("handled") as f64 / batches as f64)
    }

    /// A usage figure summed over the processes `name` selects (a process, [`ALL_WORKERS`] or
    /// [`ALL_PROCESSES`]), per completed saga; `None` without completed sagas or without such a
    /// process.
    pub fn per_saga(&self, name: &str, figure: impl Fn(&Usage) -> f64) -> Option<f64> {
        let selected: Vec<&Usage> = self
            .usage
            .iter()
            .filter(|(process, _)| selects(name, process))
            .map(|(_, usage)| usage)
            .collect();
        (self.completed > 0 && !selected.is_empty())
            .then(|| selected.into_iter().map(figure).sum::<f64>() / self.completed as f64)
    }

    /// CPU milliseconds per completed saga of `name`, as [`Phase::per_saga`] selects it.
    pub fn cpu_ms_per_saga(&self, name: &str) -> Option<f64> {
        self.per_saga(name, |u| u.cpu_seconds * 1000.0)
    }

    /// The share of the machine's cores the measured processes kept busy.
    pub fn cores_busy(&self, cores: usize) -> Option<f64> {
        let wall = self.seconds * cores.max(1) as f64;
        let cpu: f64 = self.usage.values().map(|u| u.cpu_seconds).sum();
        (wall > 0.0 && !self.usage.is_empty()).then(|| cpu / wall)
    }
}

/// Whether `name` stands for `process`: itself, [`ALL_WORKERS`] or [`ALL_PROCESSES`].
fn selects(name: &str, process: &str) -> bool {
    match name {
        ALL_WORKERS => process.contains("-worker"),
        ALL_PROCESSES => true,
        _ => process == name,
    }
}

/// Memory and CPU of one process over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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

pub fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Results {
    /// The phases of the usual run with their names, in the order they ran.
    pub fn phases(&self) -> impl Iterator<Item = (&'static str, &Phase)> {
        [
            ("max rate, 1 replica", self.max_rate.as_ref()),
            ("half rate, 1 replica", self.half_rate.as_ref()),
            ("light load, 1 replica", self.light_load.as_ref()),
            ("max rate, 2 replicas", self.max_rate_2x.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, phase)| phase.map(|p| (name, p)))
    }

    /// The relay ceiling R: the mean of the relay runs.
    pub fn relay_per_second(&self) -> Option<f64> {
        (!self.relay.is_empty())
            .then(|| self.relay.iter().map(|r| r.per_second).sum::<f64>() / self.relay.len() as f64)
    }

    /// The runtime's floor F: the first floor run, with the workers' settings.
    pub fn floor_per_second(&self) -> Option<f64> {
        self.floor.first().map(|run| run.per_second)
    }

    /// S / (R / D): the share of the broker-implied saga ceiling the system reaches.
    pub fn ratio(&self) -> Option<f64> {
        self.share_of(self.relay_per_second()?)
    }

    /// S / (F / D): the share of the runtime-implied saga ceiling the services reach.
    pub fn floor_ratio(&self) -> Option<f64> {
        self.share_of(self.floor_per_second()?)
    }

    /// S / (`messages_per_second` / D).
    fn share_of(&self, messages_per_second: f64) -> Option<f64> {
        let max = self.max_rate.as_ref()?;
        let d = max.deliveries_per_saga()?;
        (messages_per_second > 0.0).then(|| max.per_second * d / messages_per_second)
    }

    pub fn confirm_latency(&self) -> Option<Summary> {
        self.half_rate.as_ref()?.confirm_ms
    }

    pub fn capture_latency(&self) -> Option<Summary> {
        self.half_rate.as_ref()?.capture_ms
    }

    pub fn max_worker_peak_mb(&self) -> Option<f64> {
        let workers = self.processes.iter().filter(|c| c.is_worker());
        workers.map(|c| mb(c.peak_rss_kib)).reduce(f64::max)
    }

    pub fn max_worker_idle_mb(&self) -> Option<f64> {
        let workers = self.processes.iter().filter(|c| c.is_worker());
        workers
            .filter_map(|c| c.idle_rss_kib.map(mb))
            .reduce(f64::max)
    }

    /// Whether a saga failed or did not finish in any phase, the A/B rounds' included, or the
    /// backlog drain did not pass.
    pub fn broken(&self) -> bool {
        self.phases()
            .map(|(_, p)| p)
            .chain(self.ab.iter().flat_map(Comparison::phases))
            .any(|p| p.broken() > 0)
            || self.backlog.as_ref().is_some_and(|b| !b.passed())
    }

    /// The line printed last: `bench: key=value ...`, ending with `db=postgres` when the
    /// workers ran on PostgreSQL. A backlog drain has fields of its own.
    pub fn summary_line(&self) -> String {
        let mut fields: Vec<String> = Vec::new();
        let mut put = |key: &str, value: String| fields.push(format!("{key}={value}"));
        for (key, value) in self.backlog.iter().flat_map(Backlog::summary_fields) {
            put(key, value);
        }
        if let Some(max) = &self.max_rate {
            put("sagas", max.completed.to_string());
            put("sagas_per_s", format!("{:.1}", max.per_second));
        }
        if let Some(relay) = self.relay_per_second() {
            put("relay_per_s", format!("{relay:.0}"));
        }
        if let Some(d) = self.max_rate.as_ref().and_then(Phase::deliveries_per_saga) {
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
        if let Some(max2) = &self.max_rate_2x {
            put("sagas_per_s_2x", format!("{:.1}", max2.per_second));
        }
        if self.max_rate.is_some() {
            let failed: u64 = self.phases().map(|(_, p)| p.broken()).sum();
            put("failed", failed.to_string());
        }
        for (key, value) in self.ab.iter().flat_map(Comparison::summary_fields) {
            put(key, value);
        }
        if !self.run.db.is_empty() && self.run.db != "sqlite" {
            put("db", self.run.db.clone());
        }
        format!("bench: {}", fields.join(" "))
    }
}

/// One of the two builds under comparison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Build {
    #[default]
    Baseline,
    Current,
}

impl Build {
    pub fn name(self) -> &'static str {
        match self {
            Build::Baseline => "baseline",
            Build::Current => "current",
        }
    }
}

/// The middle value of `values` (the mean of the two middle ones for an even count), ignoring
/// values that are not finite; `None` when none is left.
pub fn median(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let mut sorted: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    } else {
        sorted[middle]
    })
}

/// `current / baseline`, when both are known and the baseline is above zero.
pub fn ratio(current: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (current, baseline) {
        (Some(c), Some(b)) if b > 0.0 && c.is_finite() => Some(c / b),
        _ => None,
    }
}

/// What one build did in one round, on its own fleet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Side {
    /// The maximum-rate phase.
    pub max: Phase,
    /// The latency phase at the comparison's common rate, when there is one.
    pub latency: Option<Phase>,
}

impl Side {
    pub fn confirm(&self) -> Option<Summary> {
        self.latency.as_ref()?.confirm_ms
    }

    pub fn capture(&self) -> Option<Summary> {
        self.latency.as_ref()?.capture_ms
    }
}

/// One round: both builds, `first` first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Round {
    pub number: u32,
    pub first: Build,
    pub baseline: Side,
    pub current: Side,
}

impl Round {
    pub fn side(&self, build: Build) -> &Side {
        match build {
            Build::Baseline => &self.baseline,
            Build::Current => &self.current,
        }
    }

    pub fn side_mut(&mut self, build: Build) -> &mut Side {
        match build {
            Build::Baseline => &mut self.baseline,
            Build::Current => &mut self.current,
        }
    }

    /// CPU per saga at the maximum rate of `name` (or [`ALL_WORKERS`]), current / baseline.
    pub fn cpu_ratio(&self, name: &str) -> Option<f64> {
        ratio(
            self.current.max.cpu_ms_per_saga(name),
            self.baseline.max.cpu_ms_per_saga(name),
        )
    }

    /// S current / S baseline.
    pub fn speedup(&self) -> Option<f64> {
        ratio(
            Some(self.current.max.per_second),
            Some(self.baseline.max.per_second),
        )
    }

    /// [`Round::speedup`] at the server's pace: times nats-server's CPU per saga, current /
    /// baseline. The server's work per saga does not depend on the workers' build (the same
    /// messages, the same D), so its CPU per saga says how fast the shared machine ran during
    /// each turn; this takes a slowdown that hit one turn out of the comparison. It stops
    /// holding if a build changes the server's work per message (how it pulls or acks), or D.
    pub fn paced_speedup(&self) -> Option<f64> {
        Some(self.speedup()? * self.cpu_ratio("nats-server")?)
    }
}

/// The current workers against a baseline build, round by round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Comparison {
    /// What the baseline is: a revision, or the directory of its binaries.
    pub baseline: String,
    pub baseline_bin_dir: String,
    pub current_bin_dir: String,
    /// The offered rate of every latency phase, for both builds: half of the baseline's maximum
    /// rate in round 1.
    pub rate: Option<f64>,
    pub rounds: Vec<Round>,
}

/// One of a latency summary's figures (p50, p99, max).
pub type Pick = fn(Summary) -> f64;

impl Comparison {
    /// The median over the rounds of a figure of each round (rounds without it left out).
    pub fn median_of(&self, figure: impl Fn(&Round) -> Option<f64>) -> Option<f64> {
        median(self.rounds.iter().filter_map(figure))
    }

    /// The median over the rounds of S current / S baseline.
    pub fn speedup(&self) -> Option<f64> {
        self.median_of(Round::speedup)
    }

    /// Every phase of every round.
    pub fn phases(&self) -> impl Iterator<Item = &Phase> {
        self.rounds.iter().flat_map(|r| {
            [&r.baseline, &r.current]
                .into_iter()
                .flat_map(|s| std::iter::once(&s.max).chain(s.latency.as_ref()))
        })
    }

    /// The fields the comparison adds to the summary line, each when it was measured.
    pub fn summary_fields(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(speedup) = self.speedup() {
            out.push(("ab_speedup", format!("{speedup:.3}")));
        }
        if let Some(paced) = self.median_of(Round::paced_speedup) {
            out.push(("ab_speedup_paced", format!("{paced:.3}")));
        }
        let fields: [(&'static str, Build, Pick); 4] = [
            ("ab_p50_confirm_ms_base", Build::Baseline, |s| s.p50),
            ("ab_p50_confirm_ms_cur", Build::Current, |s| s.p50),
            ("ab_p99_confirm_ms_base", Build::Baseline, |s| s.p99),
            ("ab_p99_confirm_ms_cur", Build::Current, |s| s.p99),
        ];
        for (key, build, pick) in fields {
            if let Some(ms) = self.median_of(|r| r.side(build).confirm().map(pick)) {
                out.push((key, format!("{ms:.2}")));
            }
        }
        out
    }
}

/// The backlog drain (`--backlog N`): ride requests stored while no worker ran, then
/// `replicas` replicas of every worker started at once, followed to the last capture and
/// audited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Backlog {
    pub queued: u64,
    /// Messages waiting for the ride service once they were stored.
    pub waiting: u64,
    pub replicas: u32,
    pub drivers: usize,
    /// The drain, its times from the workers' start.
    pub drain: Phase,
    /// Inputs each replica handled, per service, largest first.
    pub handled_per_replica: BTreeMap<String, Vec<u64>>,
    /// How much each service's database grew during the drain, in bytes.
    pub stored_bytes: BTreeMap<String, u64>,
    pub audit: Audit,
}

/// `ridectl audit` over the whole saga stream after the drain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Audit {
    /// The command as run (without the environment).
    pub command: String,
    /// It exited with 0.
    pub success: bool,
    pub sagas: u64,
    pub terminal: u64,
    pub in_flight: u64,
    /// Broken invariants, as `ride: invariant N: message`.
    pub violations: Vec<String>,
    /// Why its output could not be read.
    pub error: Option<String>,
}

impl Audit {
    /// Exit 0, no violation, and every saga of the log ended and judged.
    pub fn clean(&self) -> bool {
        self.success
            && self.error.is_none()
            && self.violations.is_empty()
            && self.in_flight == 0
            && self.sagas > 0
            && self.terminal == self.sagas
    }

    /// One line: `clean: N sagas, N ended, 0 in flight`, or what is wrong.
    pub fn verdict(&self) -> String {
        let counts = format!(
            "{} sagas, {} ended, {} in flight",
            self.sagas, self.terminal, self.in_flight
        );
        if self.clean() {
            return format!("clean: {counts}");
        }
        let mut why = Vec::new();
        if let Some(error) = &self.error {
            why.push(error.clone());
        }
        if !self.success {
            why.push("exited with an error".to_owned());
        }
        if !self.violations.is_empty() {
            why.push(format!("{} invariant violations", self.violations.len()));
        }
        if self.error.is_none() && (self.in_flight > 0 || self.terminal != self.sagas) {
            why.push("not every saga ended".to_owned());
        }
        if self.error.is_none() && self.sagas == 0 {
            why.push("no saga in the log".to_owned());
        }
        format!("not clean ({}): {counts}", why.join("; "))
    }
}

impl Backlog {
    /// Every queued saga completed, none is left open, and the audit is clean.
    pub fn passed(&self) -> bool {
        let d = &self.drain;
        d.completed == self.queued
            && d.broken() == 0
            && d.quiet
            && self.audit.clean()
            && self.audit.sagas == self.queued
    }

    /// What the report lists under its problems.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let d = &self.drain;
        if d.completed != self.queued && d.broken() == 0 {
            out.push(format!(
                "backlog: {} of {} queued sagas completed",
                d.completed, self.queued
            ));
        }
        if !self.audit.clean() {
            out.push(format!("backlog: ridectl audit: {}", self.audit.verdict()));
            for violation in self.audit.violations.iter().take(10) {
                out.push(format!("backlog: {violation}"));
            }
        } else if self.audit.sagas != self.queued {
            out.push(format!(
                "backlog: the audit found {} sagas in the log, {} were queued",
                self.audit.sagas, self.queued
            ));
        }
        out
    }

    /// What the drain added to the databases per completed saga, in bytes.
    pub fn stored_bytes_per_saga(&self, service: Option<&str>) -> Option<f64> {
        let bytes = match service {
            Some(service) => *self.stored_bytes.get(service)?,
            None if self.stored_bytes.is_empty() => return None,
            None => self.stored_bytes.values().sum(),
        };
        Some(bytes as f64 / self.drain.completed.max(1) as f64)
    }

    /// Its fields of the summary line.
    pub fn summary_fields(&self) -> Vec<(&'static str, String)> {
        let d = &self.drain;
        let mut out = vec![
            ("backlog", self.queued.to_string()),
            ("replicas", self.replicas.to_string()),
            ("sagas", d.completed.to_string()),
            ("drain_s", format!("{:.2}", d.seconds)),
            ("sagas_per_s", format!("{:.1}", d.per_second)),
        ];
        if let Some(confirmed) = d.confirm_ms {
            out.push(("p50_confirmed_s", format!("{:.2}", confirmed.p50 / 1000.0)));
        }
        if let Some(cpu) = d.cpu_ms_per_saga(ALL_PROCESSES) {
            out.push(("cpu_ms_per_saga", format!("{cpu:.3}")));
        }
        let audit = if self.audit.clean() {
            "clean"
        } else {
            "failed"
        };
        out.push(("audit", audit.into()));
        out.push(("failed", d.broken().to_string()));
        out
    }
}
