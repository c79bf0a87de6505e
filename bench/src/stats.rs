//! Latency percentiles and rates. A run's samples fit in memory, so percentiles are exact: the
//! samples are sorted and the nearest rank is taken.

use std::time::{Duration, Instant};

/// p50, p99 and max of one set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// The summary of `samples`, or `None` when there are none.
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
pub fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds between two instants (0 when `to` is earlier).
pub fn millis(from: Instant, to: Instant) -> f64 {
    to.saturating_duration_since(from).as_secs_f64() * 1000.0
}

/// `count / elapsed`, or 0 for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The completion rate in the middle of a run: completions between the 10th and the 90th
/// percentile completion time, divided by that interval. Unlike the whole-run rate, it leaves
/// out the ramp-up and the drain. `None` with fewer than 20 completions.
pub fn steady_rate(mut completions: Vec<Instant>) -> Option<f64> {
    if completions.len() < 20 {
        return None;
    }
    completions.sort();
    let n = completions.len();
    let (low, high) = (n / 10, n - 1 - n / 10);
    let seconds = completions[high]
        .saturating_duration_since(completions[low])
        .as_secs_f64();
    (seconds > 0.0).then(|| (high - low) as f64 / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        let summary = Summary::of(&samples).unwrap();
        assert_eq!(summary.count, 100);
        assert_eq!(summary.p50, 50.0);
        assert_eq!(summary.p99, 99.0);
        assert_eq!(summary.max, 100.0);
        assert_eq!(summary.mean, 50.5);
    }

    #[test]
    fn percentiles_do_not_depend_on_the_order_of_the_samples() {
        let summary = Summary::of(&[9.0, 1.0, 5.0, 3.0, 7.0]).unwrap();
        assert_eq!((summary.p50, summary.p99, summary.max), (5.0, 9.0, 9.0));
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_is_no_summary() {
        let summary = Summary::of(&[4.2]).unwrap();
        assert_eq!((summary.p50, summary.p99, summary.max), (4.2, 4.2, 4.2));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }

    #[test]
    fn the_steady_rate_leaves_out_ramp_up_and_drain() {
        let start = Instant::now();
        // 100 completions 10 ms apart, then a straggler 5 s later.
        let mut times: Vec<Instant> = (0..100)
            .map(|i| start + Duration::from_millis(10 * i))
            .collect();
        times.push(start + Duration::from_secs(6));
        let rate = steady_rate(times).unwrap();
        assert!((rate - 100.0).abs() < 1.0, "{rate}");
        assert_eq!(steady_rate(vec![start; 5]), None);
    }

    #[test]
    fn rates_of_empty_intervals_are_zero() {
        assert_eq!(per_second(10, Duration::ZERO), 0.0);
        assert_eq!(per_second(10, Duration::from_secs(2)), 5.0);
    }
}
