//! The A/B comparison: the current workers against a baseline build, measured in the same run
//! on the same nats-server and reported as ratios, because on a shared machine separate runs
//! are not comparable. Each round runs both builds, each on a fresh fleet, and the rounds
//! alternate which build goes first. [`crate::run`] measures the rounds; this module holds
//! their results, the figures derived from them and their section of the report.

use crate::report::Phase;
use crate::stats::Summary;

mod section;

pub use section::render;

/// One of the two builds under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
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
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// The maximum-rate phase.
    pub max: Phase,
    /// The latency phase at the comparison's common rate, when there is one.
    pub latency: Option<Phase>,
}

impl Side {
    /// S: completed sagas per second at the maximum rate.
    pub fn per_second(&self) -> f64 {
        self.max.outcome.per_second()
    }

    /// A figure of the maximum-rate phase summed over the processes `matches` accepts, per
    /// completed saga; `None` without completed sagas or without such a process.
    fn per_saga(
        &self,
        matches: impl Fn(&str) -> bool,
        figure: impl Fn(&Phase, &str) -> f64,
    ) -> Option<f64> {
        let sagas = self.max.outcome.captured;
        let names: Vec<&String> = self.max.usage.keys().filter(|n| matches(n)).collect();
        (sagas > 0 && !names.is_empty())
            .then(|| names.iter().map(|n| figure(&self.max, n)).sum::<f64>() / sagas as f64)
    }

    /// CPU milliseconds per saga at the maximum rate of the process called `name`, or of all
    /// the workers together for [`ALL_WORKERS`].
    pub fn cpu_ms_per_saga(&self, name: &str) -> Option<f64> {
        self.per_saga(selector(name), |phase, n| {
            phase.usage[n].cpu_seconds * 1000.0
        })
    }

    /// Context switches per saga at the maximum rate, like [`Side::cpu_ms_per_saga`].
    pub fn switches_per_saga(&self, name: &str) -> Option<f64> {
        self.per_saga(selector(name), |phase, n| {
            phase.usage[n].context_switches as f64
        })
    }

    pub fn confirm(&self) -> Option<Summary> {
        Summary::of(&self.latency.as_ref()?.outcome.confirm_ms)
    }

    pub fn capture(&self) -> Option<Summary> {
        Summary::of(&self.latency.as_ref()?.outcome.capture_ms)
    }
}

/// One of a latency summary's figures (p50, p99, max).
pub type Pick = fn(Summary) -> f64;

/// The name that stands for every worker process together in per-process figures.
pub const ALL_WORKERS: &str = "all workers";

fn selector(name: &str) -> impl Fn(&str) -> bool + '_ {
    move |candidate: &str| {
        if name == ALL_WORKERS {
            candidate.contains("-worker")
        } else {
            candidate == name
        }
    }
}

/// One round: both builds, in the order [`order`] gives for its number.
#[derive(Debug, Clone, Default)]
pub struct Round {
    pub number: u32,
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
            self.current.cpu_ms_per_saga(name),
            self.baseline.cpu_ms_per_saga(name),
        )
    }

    /// S current / S baseline.
    pub fn speedup(&self) -> Option<f64> {
        ratio(
            Some(self.current.per_second()),
            Some(self.baseline.per_second()),
        )
    }

    /// [`Round::speedup`] at the server's pace: times nats-server's CPU per saga, current /
    /// baseline. The server's work per saga does not depend on the workers' build (the same
    /// messages: D is the same for both), so its CPU per saga says how fast the machine ran
    /// during each turn; on a shared machine that slowed down during one build's turn (other
    /// tenants, frequency), this takes the slowdown out of the comparison. It stops holding
    /// if a build changes the server's work per message (how it pulls or acks), or D.
    pub fn paced_speedup(&self) -> Option<f64> {
        Some(self.speedup()? * self.cpu_ratio("nats-server")?)
    }
}

/// Every round of one comparison.
#[derive(Debug, Clone, Default)]
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
        let confirm =
            |build: Build, pick: Pick| self.median_of(|r| r.side(build).confirm().map(pick));
        let fields: [(&'static str, Build, Pick); 4] = [
            ("ab_p50_confirm_ms_base", Build::Baseline, |s| s.p50),
            ("ab_p50_confirm_ms_cur", Build::Current, |s| s.p50),
            ("ab_p99_confirm_ms_base", Build::Baseline, |s| s.p99),
            ("ab_p99_confirm_ms_cur", Build::Current, |s| s.p99),
        ];
        for (key, build, pick) in fields {
            if let Some(ms) = confirm(build, pick) {
                out.push((key, format!("{ms:.2}")));
            }
        }
        out
    }
}

/// A comparison with made-up figures, for tests of the figures and of their rendering.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;
    use crate::report::fixture;

    /// A side whose maximum rate completed `captured` sagas in 2 s, with `worker_cpu` CPU
    /// seconds in the ride worker (nats-server: 6 s) and the given confirm latencies.
    pub fn side(captured: u64, worker_cpu: f64, confirm_ms: &[f64]) -> Side {
        let mut max = fixture::phase(captured, 2, 15 * captured);
        max.usage
            .insert("ride-worker#1".into(), fixture::usage(worker_cpu));
        let mut latency = fixture::phase(captured / 2, 2, 15 * captured / 2);
        latency.outcome.confirm_ms = confirm_ms.to_vec();
        Side {
            max,
            latency: Some(latency),
        }
    }

    /// Two rounds: the baseline at 500 sagas/s in both, the current build at 550 and 650.
    pub fn comparison() -> Comparison {
        let round = |number, base, cur| Round {
            number,
            baseline: side(base, 4.0, &[10.0, 20.0]),
            current: side(cur, 2.0, &[5.0, 8.0]),
        };
        Comparison {
            baseline: "abc1234".into(),
            baseline_bin_dir: "target/bench-baseline-target/bin/abc1234".into(),
            current_bin_dir: "target/release".into(),
            rate: Some(250.0),
            rounds: vec![round(1, 1000, 1100), round(2, 1000, 1300)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{comparison, side};
    use super::*;
    use crate::report::fixture;

    #[test]
    fn rounds_alternate_which_build_goes_first() {
        assert_eq!(order(1), [Build::Baseline, Build::Current]);
        assert_eq!(order(2), [Build::Current, Build::Baseline]);
        assert_eq!(order(3), order(1));
        assert_eq!(order(4), order(2));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median([3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median([4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median([f64::NAN, 7.0]), Some(7.0));
        assert_eq!(median([]), None);
    }

    #[test]
    fn a_ratio_needs_a_baseline_above_zero() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(2.0)), None);
    }

    #[test]
    fn the_paced_speedup_takes_out_a_machine_that_slowed_in_one_turn() {
        // The same work (2 ms of worker CPU and 1 ms of server CPU per saga) done at 500 and
        // 400 sagas per second: the second turn's machine ran 1.25 x slower, its CPU per
        // saga 1.25 x higher for both processes.
        let turn = |captured: u64, pace: f64| {
            let mut side = side(captured, 2.0 * captured as f64 / 1000.0 * pace, &[]);
            side.max.usage.insert(
                "nats-server".into(),
                fixture::usage(captured as f64 / 1000.0 * pace),
            );
            side
        };
        let round = Round {
            number: 1,
            baseline: turn(1000, 1.0),
            current: turn(800, 1.25),
        };
        assert!((round.speedup().unwrap() - 0.8).abs() < 1e-9);
        assert!((round.paced_speedup().unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(Round::default().paced_speedup(), None);
    }

    #[test]
    fn the_speedup_is_the_median_of_the_rounds_ratios() {
        let c = comparison();
        // 1.1 and 1.3 over the same baseline.
        assert!((c.speedup().unwrap() - 1.2).abs() < 1e-9);
        assert_eq!(c.phases().count(), 8);
    }

    #[test]
    fn cpu_per_saga_is_per_process_or_over_all_workers() {
        let side = side(1000, 4.0, &[]);
        assert_eq!(side.cpu_ms_per_saga("nats-server"), Some(6.0));
        assert_eq!(side.cpu_ms_per_saga("ride-worker#1"), Some(4.0));
        assert_eq!(side.cpu_ms_per_saga(ALL_WORKERS), Some(4.0));
        assert_eq!(side.switches_per_saga("nats-server"), Some(3.0));
        assert_eq!(side.cpu_ms_per_saga("fraud-worker#1"), None);
        assert_eq!(Side::default().cpu_ms_per_saga(ALL_WORKERS), None);
    }

    #[test]
    fn the_summary_fields_are_medians_over_the_rounds() {
        let fields = comparison().summary_fields();
        let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            line.join(" "),
            "ab_speedup=1.200 ab_speedup_paced=1.000 ab_p50_confirm_ms_base=10.00 \
             ab_p50_confirm_ms_cur=5.00 \
             ab_p99_confirm_ms_base=20.00 ab_p99_confirm_ms_cur=8.00"
        );
    }
}
