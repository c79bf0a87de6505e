//! One benchmark run, phase by phase, on one nats-server started for it:
//!
//! 1. relay ceiling (first run), then the runtime's floor ([`crate::floor`]) before any worker
//!    starts;
//! 2. one replica of every worker: drivers online, warm-up, maximum rate (window pace);
//! 3. latency at half that rate (open loop);
//! 4. relay ceiling (second run), so R brackets the system phases;
//! 5. a second replica of every worker: warm-up, maximum rate again;
//! 6. with a baseline build, the A/B rounds (`run/ab_rounds.rs`): both builds in turn, each on a
//!    fresh fleet and a clean saga stream, at the maximum rate and at a common latency rate.
//!
//! With `--backlog`, the backlog drain (`run/backlog.rs`) runs instead of all of these.
//!
//! The workers' databases are SQLite files in the run's directory, or, with `--db postgres`,
//! databases on a PostgreSQL cluster started for the run ([`crate::database`]), whose
//! processes are measured as one beside nats-server. CPU and memory of every process are read
//! from `/proc` around each phase, consumer counters from the server. Everything started is
//! stopped at the end (and killed if the run fails); the cluster stops once this process has
//! exited.

mod ab_rounds;
mod backlog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use ridesaga_schemas::streams::{self, DEAD_LETTER_STREAM, ProvisionOptions};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::{Cli, Db, Settings};
use crate::consumers;
use crate::database::{self, Cluster};
use crate::fleet::{self, Databases, Fleet, FleetConfig};
use crate::floor;
use crate::generator::{Generator, Pace, Plan};
use crate::hops;
use crate::notes::{add_log_problems, note_phase_problems, revision, sync_interval};
use crate::process::PidLog;
use crate::procfs::{self, ProcSample};
use crate::profile;
use crate::relay;
use crate::results::{
    Environment, FloorRun, Phase, ProcessCost, RelayRun, Results, SELF_NAME, Usage,
};
use crate::server::Server;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The processes of a run and the connection to their server.
struct Run {
    settings: Settings,
    dir: PathBuf,
    pids: PidLog,
    ticks: u64,
    server: Server,
    server_idle: Option<ProcSample>,
    fleet: Fleet,
    client: async_nats::Client,
    js: jetstream::Context,
    /// The PostgreSQL cluster the workers' databases are on, with `--db postgres`.
    cluster: Option<Cluster>,
    cluster_idle: Option<ProcSample>,
    /// The largest memory of the cluster's processes together seen by a sample, in KiB.
    cluster_peak_kib: AtomicU64,
}

/// Runs every phase and returns the results (not yet written anywhere).
pub async fn run(cli: &Cli) -> anyhow::Result<Results> {
    let settings = cli.settings();
    let now = OffsetDateTime::now_utc();
    let mut builder = tempfile::Builder::new();
    builder.prefix("ridesaga-bench-");
    let mut dir = match &cli.work_dir {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .context("creating the run's directory")?;
    if cli.keep {
        dir.disable_cleanup(true);
        eprintln!(
            "bench: keeping the run's directory {}",
            dir.path().display()
        );
    }
    if !cli.relay_only {
        let missing = fleet::missing_binaries(&cli.bin_dir);
        anyhow::ensure!(
            missing.is_empty(),
            "worker binaries are missing (build them with `cargo build --release \
             --workspace`, or pass --relay-only): {}",
            listed(&missing)
        );
    }
    if cli.backlog.is_some() {
        let ridectl = cli.ridectl_path();
        anyhow::ensure!(
            ridectl.is_file(),
            "{} is missing: the backlog is audited with ridectl (build it with `cargo build \
             --release --workspace`, or pass --ridectl)",
            ridectl.display()
        );
    }
    if let Some(baseline) = &cli.baseline_bin_dir {
        let missing = fleet::missing_binaries(baseline);
        anyhow::ensure!(
            missing.is_empty(),
            "the baseline's worker binaries are missing (`scripts/bench --baseline REV` builds \
             them): {}",
            listed(&missing)
        );
    }
    let mut results = Results {
        run: Environment {
            date: now.date().to_string(),
            started_at: now.format(&Rfc3339).unwrap_or_default(),
            command: cli.command_line(),
            quick: cli.quick,
            machine: procfs::machine_description(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            load_before: procfs::load_average(),
            nats_sync: sync_interval(&cli.nats_conf),
            revision: revision(),
            db: cli.db.name().to_owned(),
            window: settings.window,
            drivers: settings.drivers,
            batch: settings.batch,
            max_in_flight: settings.max_in_flight,
            warmup_s: settings.warmup.as_secs(),
            phase_s: settings.phase.as_secs(),
            latency_s: settings.latency.as_secs(),
            relay_messages: settings.relay_messages,
            gateway_latency_ms: settings
                .gateway_latency
                .map(|latency| u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)),
            ..Environment::default()
        },
        ..Results::default()
    };

    // The server's and the workers' logs are what explains a failed run: keep them then.
    let keep_for_inspection = |dir: &mut tempfile::TempDir| {
        dir.disable_cleanup(true);
        eprintln!(
            "bench: the run's directory is kept for inspection: {}",
            dir.path().display()
        );
    };
    let mut run = match Run::start(cli, settings, dir.path()).await {
        Ok(run) => run,
        Err(e) => {
            keep_for_inspection(&mut dir);
            return Err(e);
        }
    };
    results.run.nats_version = run.server.version.clone();
    if !cli.relay_only {
        results.run.database = match &run.cluster {
            Some(cluster) => cluster.describe(),
            None => database::SQLITE_DESCRIPTION.to_owned(),
        };
    }
    let result = run.measure(cli, &mut results).await;
    run.stop().await;
    if result.is_err() {
        keep_for_inspection(&mut dir);
    }
    result?;
    results.run.load_after = procfs::load_average();
    add_log_problems(&mut results, dir.path());
    Ok(results)
}

impl Run {
    /// Hop latencies of the saga stream from sequence `first` on; a failure is a problem in
    /// the results, not the end of the run.
    async fn hops_from(&self, first: u64, results: &mut Results) -> Vec<crate::results::Hop> {
        match hops::measure(&self.js, first).await {
            Ok(hops) => hops,
            Err(e) => {
                results
                    .problems
                    .push(format!("hop latencies not measured: {e:#}"));
                Vec::new()
            }
        }
    }

    /// The saga stream's last sequence.
    async fn saga_stream_end(&self) -> anyhow::Result<u64> {
        let mut stream = self
            .js
            .get_stream(streams::SAGA_STREAM)
            .await
            .context("opening the saga stream")?;
        Ok(stream.info().await?.state.last_sequence)
    }

    async fn start(cli: &Cli, settings: Settings, dir: &Path) -> anyhow::Result<Run> {
        let pids = PidLog::new(cli.pids_file.clone());
        let ticks = procfs::ticks_per_second();
        eprintln!(
            "bench: starting nats-server with {}",
            cli.nats_conf.display()
        );
        let server_dir = dir.join("nats");
        std::fs::create_dir_all(&server_dir).context("creating the server's directory")?;
        let server = Server::start(&cli.nats_server, &cli.nats_conf, &server_dir, &pids).await?;
        let client = server.connect().await?;
        let js = jetstream::new(client.clone());
        streams::provision(&js, ProvisionOptions::default())
            .await
            .context("provisioning the streams and consumers")?;
        let server_idle = server.process.sample(ticks).ok();
        let cluster = match cli.db {
            Db::Sqlite => None,
            Db::Postgres if cli.relay_only => None,
            Db::Postgres => {
                eprintln!("bench: starting a PostgreSQL cluster for the workers' databases");
                let cluster = Cluster::start().await?;
                eprintln!(
                    "bench: PostgreSQL {} ready (postmaster pid {})",
                    cluster.version, cluster.postmaster
                );
                Some(cluster)
            }
        };
        let cluster_idle = match &cluster {
            Some(cluster) => Some(cluster.sample(ticks)?),
            None => None,
        };
        let databases = match &cluster {
            Some(cluster) => cluster.databases("fleet")?,
            None => Databases::Sqlite,
        };
        let fleet = Fleet::new(FleetConfig {
            bin_dir: cli.bin_dir.clone(),
            dir: dir.join("workers"),
            nats_url: server.url(),
            identities: server.identities.clone(),
            batch: settings.batch,
            max_in_flight: settings.max_in_flight,
            databases,
            gateway_latency: settings.gateway_latency,
        });
        Ok(Run {
            settings,
            dir: dir.to_owned(),
            pids,
            ticks,
            server,
            server_idle,
            fleet,
            client,
            js,
            cluster_peak_kib: AtomicU64::new(cluster_idle.map_or(0, |s| s.rss_kib)),
            cluster,
            cluster_idle,
        })
    }

    /// New databases for a fleet: none to create on SQLite (each fleet's files are in its own
    /// directory), one per service named after `name` on PostgreSQL.
    fn databases(&self, name: &str) -> anyhow::Result<Databases> {
        match &self.cluster {
            Some(cluster) => cluster.databases(name),
            None => Ok(Databases::Sqlite),
        }
    }

    async fn measure(&mut self, cli: &Cli, results: &mut Results) -> anyhow::Result<()> {
        if let Some(queued) = cli.backlog {
            self.backlog(queued, cli.replicas, &cli.ridectl_path(), results)
                .await?;
            results.processes = self.costs()?;
        } else if !cli.ab_only {
            self.usual_phases(cli, results).await?;
            // Before the A/B rounds replace the fleet: these are the costs of the phases above.
            results.processes = self.costs()?;
        }
        if let Some(baseline) = &cli.baseline_bin_dir {
            self.ab_rounds(cli, baseline, results).await?;
        }
        if !cli.relay_only {
            self.check_dead_letters(results).await;
        }
        Ok(())
    }

    /// The relay and, unless only the relay is measured, the usual saga phases.
    async fn usual_phases(&mut self, cli: &Cli, results: &mut Results) -> anyhow::Result<()> {
        let s = self.settings;
        let run = self.relay(results).await?;
        results.relay.push(run);
        if cli.relay_only {
            return Ok(());
        }
        self.floor(results).await?;

        eprintln!("bench: starting one replica of every worker");
        self.fleet.start_replica(1, &self.pids)?;
        self.fleet
            .wait_ready(&self.client, 1, READY_TIMEOUT, self.ticks)
            .await?;
        // Its own connection, so its subscriptions do not queue behind the probes.
        let mut generator = Generator::connect(self.server.connect().await?).await?;
        eprintln!("bench: bringing {} drivers online", s.drivers);
        generator
            .bring_drivers_online(s.drivers, READY_TIMEOUT)
            .await?;

        self.warm_up(&mut generator, results).await?;
        eprintln!(
            "bench: maximum rate, 1 replica: {} sagas in flight for {:?}",
            s.window, s.phase
        );
        let max1 = self
            .phase(
                "max rate, 1 replica",
                &mut generator,
                s.window_plan(),
                cli.perf,
                results,
            )
            .await?;
        let rate = max1.per_second;
        eprintln!("bench: {rate:.1} sagas per second");
        results.max_rate = Some(max1);

        if rate > 0.0 {
            let half = rate / 2.0;
            eprintln!(
                "bench: latency at {half:.1} sagas per second for {:?}",
                s.latency
            );
            let plan = s.rate_plan(half);
            let first = self.saga_stream_end().await? + 1;
            let mut latency = self
                .phase("half rate, 1 replica", &mut generator, plan, false, results)
                .await?;
            latency.hops = self.hops_from(first, results).await;
            results.half_rate = Some(latency);
            if let Some(light) = cli.light_rate {
                eprintln!("bench: latency at {light:.1} sagas per second (light load)");
                let first = self.saga_stream_end().await? + 1;
                let mut phase = self
                    .phase(
                        "light load, 1 replica",
                        &mut generator,
                        s.rate_plan(light),
                        false,
                        results,
                    )
                    .await?;
                phase.hops = self.hops_from(first, results).await;
                results.light_load = Some(phase);
            }
        } else {
            results
                .problems
                .push("no saga completed at the maximum rate: latency not measured".into());
        }

        let run = self.relay(results).await?;
        results.relay.push(run);

        if !cli.no_scaling {
            eprintln!("bench: starting a second replica of every worker");
            self.fleet.start_replica(2, &self.pids)?;
            self.fleet
                .wait_ready(&self.client, 2, READY_TIMEOUT, self.ticks)
                .await?;
            self.warm_up(&mut generator, results).await?;
            eprintln!("bench: maximum rate, 2 replicas");
            let max2 = self
                .phase(
                    "max rate, 2 replicas",
                    &mut generator,
                    s.window_plan(),
                    false,
                    results,
                )
                .await?;
            eprintln!("bench: {:.1} sagas per second", max2.per_second);
            results.max_rate_2x = Some(max2);
        }
        Ok(())
    }

    async fn relay(&mut self, results: &mut Results) -> anyhow::Result<RelayRun> {
        let s = self.settings;
        eprintln!("bench: relay ceiling, {} messages", s.relay_messages);
        let (mut run, before, after) =
            relay::run(&self.js, s.relay_messages, s.batch, s.max_in_flight, || {
                self.sample_all()
            })
            .await?;
        run.usage = usage_between(&before?, &after?);
        eprintln!("bench: relay {:.0} messages per second", run.per_second);
        if run.stalls > 0 {
            results.problems.push(format!(
                "relay: the pull went quiet {} times and was started again (the rate includes \
                 the {} s waits)",
                run.stalls,
                relay::STALL.as_secs()
            ));
        }
        Ok(run)
    }

    /// The runtime's floor, before any worker starts: with the workers' settings, then with one
    /// message in flight.
    async fn floor(&mut self, results: &mut Results) -> anyhow::Result<()> {
        let s = self.settings;
        let pipelined = ((s.relay_messages / 4).max(1), (s.batch, s.max_in_flight));
        let serial = ((s.relay_messages / 50).clamp(1, 2000), (1, 1));
        for (messages, settings) in [pipelined, serial] {
            eprintln!(
                "bench: runtime floor, {messages} messages, {} in flight",
                settings.1
            );
            let mut nats = vec![("NATS_URL".to_owned(), self.server.url())];
            nats.extend(self.server.identities.bench_env());
            let database_url = match &self.cluster {
                Some(cluster) => cluster.database(&format!("floor_{}", settings.1))?,
                None => format!(
                    "sqlite://{}",
                    self.dir.join(format!("floor-{}.db", settings.1)).display()
                ),
            };
            let (mut run, before, after): (FloorRun, _, _) =
                floor::run(&self.js, &nats, &database_url, messages, settings, || {
                    self.sample_all()
                })
                .await?;
            run.usage = usage_between(&before?, &after?);
            eprintln!(
                "bench: floor {:.0} messages per second, {:.3} ms each",
                run.per_second,
                run.ms_per_message()
            );
            results.floor.push(run);
        }
        Ok(())
    }

    async fn warm_up(
        &mut self,
        generator: &mut Generator,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let s = self.settings;
        if s.warmup.is_zero() {
            return Ok(());
        }
        eprintln!("bench: warming up for {:?}", s.warmup);
        let plan = Plan {
            duration: s.warmup,
            ..s.window_plan()
        };
        let fleet = &mut self.fleet;
        let server = &mut self.server;
        let mut health = || {
            server.process.check_running()?;
            fleet.check_running()
        };
        let warm = generator.run(plan, &mut health).await?;
        let broken = warm.failed() + warm.unfinished;
        if broken > 0 {
            results.problems.push(format!(
                "warm-up: {broken} of {} sagas failed or did not finish: {:?}",
                warm.started, warm.failures
            ));
        }
        Ok(())
    }

    /// One measured phase: consumer counters and CPU around it, optionally a profile.
    async fn phase(
        &mut self,
        name: &str,
        generator: &mut Generator,
        plan: Plan,
        perf: bool,
        results: &mut Results,
    ) -> anyhow::Result<Phase> {
        let before = consumers::snapshot(&self.js).await?;
        let counts_before = fleet::worker_counts(&self.client).await?;
        let cpu_before = self.sample_all()?;
        let recording = if perf {
            let mut pids = vec![self.server.process.pid];
            pids.extend(self.fleet.workers.iter().map(|w| w.process.pid));
            match profile::start(&pids, &self.dir, &self.pids) {
                Ok(recording) => Some(recording),
                Err(e) => {
                    results
                        .problems
                        .push(format!("perf could not start: {e:#}"));
                    None
                }
            }
        } else {
            None
        };
        let fleet = &mut self.fleet;
        let server = &mut self.server;
        let mut health = || {
            server.process.check_running()?;
            fleet.check_running()
        };
        let outcome = generator.run(plan, &mut health).await?;
        let offered = match plan.pace {
            Pace::Rate { per_second, .. } => Some(per_second),
            Pace::Window(_) => None,
        };
        if let Some(recording) = recording {
            match recording.finish().await {
                Ok(profile) => results.profile = Some(profile),
                Err(e) => results.problems.push(format!("perf failed: {e:#}")),
            }
        }
        let cpu_after = self.sample_all()?;
        let after = consumers::snapshot(&self.js).await?;
        let counts_after = fleet::worker_counts(&self.client).await?;
        let phase = Phase {
            deliveries: by_name(consumers::deliveries_between(&before, &after)),
            worker_counts: by_name(fleet::counts_between(&counts_before, &counts_after)),
            usage: usage_between(&cpu_before, &cpu_after),
            ..outcome.into_phase(offered)
        };
        note_phase_problems(results, name, &phase);
        Ok(phase)
    }

    /// CPU and memory of every process now, by report name.
    fn sample_all(&self) -> anyhow::Result<BTreeMap<String, ProcSample>> {
        let mut out = BTreeMap::new();
        out.insert(
            "nats-server".to_owned(),
            self.server.process.sample(self.ticks)?,
        );
        if let Some(cluster) = &self.cluster {
            let sample = cluster.sample(self.ticks)?;
            self.cluster_peak_kib
                .fetch_max(sample.rss_kib, Ordering::Relaxed);
            out.insert(database::PROCESS_NAME.to_owned(), sample);
        }
        for worker in &self.fleet.workers {
            out.insert(
                worker.process.name.clone(),
                worker.process.sample(self.ticks)?,
            );
        }
        out.insert(
            SELF_NAME.to_owned(),
            procfs::sample(std::process::id(), self.ticks).context("reading /proc/self")?,
        );
        Ok(out)
    }

    /// Memory and CPU of every process over the whole run, server first, this process last.
    fn costs(&self) -> anyhow::Result<Vec<ProcessCost>> {
        let samples = self.sample_all()?;
        let cost = |name: &str, idle: Option<ProcSample>| {
            let now = samples.get(name).copied().unwrap_or_default();
            ProcessCost {
                name: name.to_owned(),
                idle_rss_kib: idle.map(|s| s.rss_kib),
                peak_rss_kib: now.peak_rss_kib,
                end_rss_kib: now.rss_kib,
                cpu_seconds: now.cpu_seconds,
            }
        };
        let mut out = vec![cost("nats-server", self.server_idle)];
        if self.cluster.is_some() {
            // No high-water mark for a group of processes: the largest sum a sample saw.
            let mut cluster = cost(database::PROCESS_NAME, self.cluster_idle);
            cluster.peak_rss_kib = self.cluster_peak_kib.load(Ordering::Relaxed);
            out.push(cluster);
        }
        for worker in &self.fleet.workers {
            out.push(cost(&worker.process.name, worker.idle));
        }
        out.push(cost(SELF_NAME, None));
        Ok(out)
    }

    async fn check_dead_letters(&self, results: &mut Results) {
        if let Ok(mut stream) = self.js.get_stream(DEAD_LETTER_STREAM).await
            && let Ok(info) = stream.info().await
            && info.state.messages > 0
        {
            results.problems.push(format!(
                "{} records in the dead-letter stream {DEAD_LETTER_STREAM}",
                info.state.messages
            ));
        }
    }

    /// Workers first (they drain), then the server.
    async fn stop(&mut self) {
        eprintln!("bench: stopping the workers and nats-server");
        self.fleet.stop().await;
        self.server.process.stop(Duration::from_secs(10)).await;
    }
}

impl Settings {
    fn window_plan(&self) -> Plan {
        Plan {
            pace: Pace::Window(self.window),
            duration: self.phase,
            drain_timeout: self.drain_timeout,
        }
    }

    /// A latency phase: `per_second` sagas started per second, open loop.
    fn rate_plan(&self, per_second: f64) -> Plan {
        Plan {
            pace: Pace::Rate {
                per_second,
                max_in_flight: self.drivers,
            },
            duration: self.latency,
            drain_timeout: self.drain_timeout,
        }
    }
}

/// Drivers online for a backlog: enough for every queued ride at once, so none waits for one.
fn backlog_drivers(settings: &Settings, queued: u64) -> usize {
    settings
        .drivers
        .max(usize::try_from(queued).unwrap_or(usize::MAX))
}

fn listed(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// What each process did between two samples.
pub fn usage_between(
    before: &BTreeMap<String, ProcSample>,
    after: &BTreeMap<String, ProcSample>,
) -> BTreeMap<String, Usage> {
    after
        .iter()
        .map(|(name, a)| (name.clone(), procfs::usage(before.get(name), a)))
        .collect()
}

/// A map by service with the services' names as keys, as the results keep it.
pub fn by_name<T>(by_service: BTreeMap<ridesaga_schemas::Service, T>) -> BTreeMap<String, T> {
    by_service
        .into_iter()
        .map(|(service, value)| (service.name().to_owned(), value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu_seconds: f64) -> ProcSample {
        ProcSample {
            cpu_seconds,
            ..ProcSample::default()
        }
    }

    #[test]
    fn usage_is_counted_per_process_and_from_zero_for_new_ones() {
        let before = BTreeMap::from([("nats-server".to_owned(), sample(10.0))]);
        let after = BTreeMap::from([
            ("nats-server".to_owned(), sample(12.5)),
            ("ride-worker#2".to_owned(), sample(0.75)),
        ]);
        let usage = usage_between(&before, &after);
        assert_eq!(usage["nats-server"].cpu_seconds, 2.5);
        assert_eq!(usage["ride-worker#2"].cpu_seconds, 0.75);
    }
}
