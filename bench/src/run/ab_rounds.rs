//! The A/B rounds of a run: the current workers against a baseline build, measured in the same
//! run on the same nats-server and reported as ratios, because on a shared machine separate
//! runs are not comparable. In each round, each build in the round's order gets a clean saga
//! stream and a fresh fleet, then runs the maximum rate and the latency phase at the
//! comparison's common rate; the rounds alternate which build goes first.

use std::path::Path;

use anyhow::Context as _;
use ridesaga_schemas::streams::{self, ProvisionOptions, SAGA_STREAM};

use super::{READY_TIMEOUT, Run};
use crate::cli::Cli;
use crate::consumers;
use crate::fleet::{Fleet, FleetConfig};
use crate::generator::Generator;
use crate::results::{Build, Comparison, Results, Round, Side};

/// The builds in the order round `round` (1, 2, ...) runs them: the baseline first in odd
/// rounds and last in even ones, so that neither build always runs first, on the fresher
/// server, or last, after the longer stretch of load.
pub fn order(round: u32) -> [Build; 2] {
    if round % 2 == 1 {
        [Build::Baseline, Build::Current]
    } else {
        [Build::Current, Build::Baseline]
    }
}

impl Run {
    /// Runs `cli.ab_rounds` rounds of the workers in `cli.bin_dir` against those in `baseline`
    /// and puts the comparison in the results.
    pub(super) async fn ab_rounds(
        &mut self,
        cli: &Cli,
        baseline: &Path,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let mut comparison = Comparison {
            baseline: cli
                .baseline_label
                .clone()
                .unwrap_or_else(|| baseline.display().to_string()),
            baseline_bin_dir: baseline.display().to_string(),
            current_bin_dir: cli.bin_dir.display().to_string(),
            ..Comparison::default()
        };
        for number in 1..=cli.ab_rounds.max(1) {
            let mut round = Round {
                number,
                first: order(number)[0],
                ..Round::default()
            };
            for build in order(number) {
                let bin_dir = match build {
                    Build::Baseline => baseline,
                    Build::Current => &cli.bin_dir,
                };
                let side = self
                    .ab_turn(number, build, bin_dir, &mut comparison.rate, results)
                    .await?;
                *round.side_mut(build) = side;
            }
            if let Some(speedup) = round.speedup() {
                eprintln!("bench: A/B round {number}: S current / baseline = {speedup:.3}");
            }
            comparison.rounds.push(round);
        }
        results.ab = Some(comparison);
        Ok(())
    }

    /// One build's turn in round `number`: a fresh fleet from `bin_dir`, warm-up, the maximum
    /// rate, then the latency phase at `rate`, which the baseline's turn in round 1 sets to half
    /// its maximum rate.
    async fn ab_turn(
        &mut self,
        number: u32,
        build: Build,
        bin_dir: &Path,
        rate: &mut Option<f64>,
        results: &mut Results,
    ) -> anyhow::Result<Side> {
        let s = self.settings;
        let name = format!("A/B round {number}, {}", build.name());
        eprintln!(
            "bench: {name}: a fresh fleet of the workers in {}",
            bin_dir.display()
        );
        let fleet_dir = format!("round-{number}-{}", build.name());
        let mut generator = self.fresh_fleet(bin_dir, &fleet_dir).await?;
        self.warm_up(&mut generator, results).await?;
        eprintln!(
            "bench: {name}: maximum rate, {} sagas in flight for {:?}",
            s.window, s.phase
        );
        let max = self
            .phase(
                &format!("{name}, max rate"),
                &mut generator,
                s.window_plan(),
                false,
                results,
            )
            .await?;
        let measured = max.per_second;
        eprintln!("bench: {name}: {measured:.1} sagas per second");
        if number == 1 && build == Build::Baseline {
            if measured > 0.0 {
                *rate = Some(measured / 2.0);
            } else {
                results.problems.push(
                    "A/B: the baseline completed no saga at the maximum rate in round 1: latency \
                     not compared"
                        .into(),
                );
            }
        }
        let latency = match *rate {
            Some(per_second) => {
                eprintln!(
                    "bench: {name}: latency at {per_second:.1} sagas per second for {:?}",
                    s.latency
                );
                let plan = s.rate_plan(per_second);
                let latency = self
                    .phase(
                        &format!("{name}, latency"),
                        &mut generator,
                        plan,
                        false,
                        results,
                    )
                    .await?;
                Some(latency)
            }
            None => None,
        };
        Ok(Side { max, latency })
    }

    /// Stops the current fleet, cleans the saga stream, and starts one replica of every worker
    /// from `bin_dir` with new databases (under `ab/<name>` in the run's directory, or named
    /// after `name` on the PostgreSQL cluster). Returns a
    /// generator on its own connection with the drivers online.
    async fn fresh_fleet(&mut self, bin_dir: &Path, name: &str) -> anyhow::Result<Generator> {
        let s = self.settings;
        self.fleet.stop().await;
        self.clean_saga_stream().await?;
        self.fleet = Fleet::new(FleetConfig {
            bin_dir: bin_dir.to_owned(),
            dir: self.dir.join("ab").join(name),
            nats_url: self.server.url(),
            identities: self.server.identities.clone(),
            batch: s.batch,
            max_in_flight: s.max_in_flight,
            databases: self.databases(name)?,
            gateway_latency: s.gateway_latency,
        });
        self.fleet.start_replica(1, &self.pids)?;
        self.fleet
            .wait_ready(&self.client, 1, READY_TIMEOUT, self.ticks)
            .await?;
        let mut generator = Generator::connect(self.server.connect().await?).await?;
        generator
            .bring_drivers_online(s.drivers, READY_TIMEOUT)
            .await?;
        Ok(generator)
    }

    /// Deletes the saga stream and provisions it and the service consumers afresh, so that the
    /// next fleet finds nothing stored, pending or awaiting an ack, and neither build inherits
    /// the other's stream, its storage included: a purge leaves the stream's files and
    /// indexes to the server to tidy while the next turn runs. The dead-letter stream is kept:
    /// the report counts it at the end. Only while no worker runs.
    async fn clean_saga_stream(&self) -> anyhow::Result<()> {
        self.js
            .delete_stream(SAGA_STREAM)
            .await
            .with_context(|| format!("deleting stream {SAGA_STREAM}"))?;
        streams::provision(&self.js, ProvisionOptions::default())
            .await
            .context("creating the saga stream and the service consumers again")?;
        let snapshot = consumers::snapshot(&self.js).await?;
        anyhow::ensure!(
            consumers::is_quiet(&snapshot),
            "the service consumers are not empty after purging {SAGA_STREAM}: {snapshot:?}"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_build_goes_first() {
        assert_eq!(order(1), [Build::Baseline, Build::Current]);
        assert_eq!(order(2), [Build::Current, Build::Baseline]);
        assert_eq!(order(3), order(1));
        assert_eq!(order(4), order(2));
    }
}
