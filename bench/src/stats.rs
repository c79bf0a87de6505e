//! Rates and times. Latency percentiles are [`crate::results::Summary::of`].

use std::time::{Duration, Instant};

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
