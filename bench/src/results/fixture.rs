//! Results with made-up figures, for tests of the figures and of their rendering.

use std::collections::BTreeMap;

use super::*;

pub fn usage(cpu_seconds: f64) -> Usage {
    Usage {
        cpu_seconds,
        context_switches: 3000,
        ..Usage::default()
    }
}

/// A phase that completed `completed` sagas in `seconds`, with `deliveries` to the ride
/// service; nats-server used 6 CPU seconds and the ride worker 4.
pub fn phase(completed: u64, seconds: u64, deliveries: u64) -> Phase {
    Phase {
        started: completed,
        completed,
        seconds: seconds as f64,
        per_second: completed as f64 / seconds as f64,
        confirm_ms: Summary::of(&[2.0, 3.0, 4.0, 30.0]),
        quiet: true,
        deliveries: BTreeMap::from([("ride".to_owned(), deliveries)]),
        worker_counts: BTreeMap::from([(
            "ride".to_owned(),
            BTreeMap::from([
                ("handled".to_owned(), deliveries),
                ("redelivered".into(), 3),
            ]),
        )]),
        usage: BTreeMap::from([
            ("nats-server".to_owned(), usage(6.0)),
            ("ride-worker#1".into(), usage(4.0)),
        ]),
        ..Phase::default()
    }
}

pub fn results() -> Results {
    let relay = |per_second| RelayRun {
        messages: 1000,
        payload_bytes: 300,
        seconds: 1.0,
        per_second,
        stalls: 0,
        usage: BTreeMap::new(),
    };
    let mut first_relay = relay(30_000.0);
    first_relay.usage = BTreeMap::from([
        ("nats-server".to_owned(), usage(0.05)),
        (SELF_NAME.to_owned(), usage(0.04)),
    ]);
    let mut half_rate = phase(500, 2, 7_500);
    half_rate.offered_per_s = Some(250.0);
    Results {
        run: Environment {
            date: "2026-01-02".into(),
            command: "scripts/bench --quick".into(),
            cores: 2,
            db: "sqlite".into(),
            report: "bench/results/2026-01-02-quick.md".into(),
            ..Environment::default()
        },
        relay: vec![first_relay, relay(34_000.0)],
        floor: vec![FloorRun {
            messages: 1000,
            max_in_flight: 64,
            seconds: 0.125,
            per_second: 8_000.0,
            usage: BTreeMap::from([
                ("nats-server".to_owned(), usage(0.05)),
                (SELF_NAME.to_owned(), usage(0.1)),
            ]),
        }],
        max_rate: Some(phase(1000, 2, 15_000)),
        half_rate: Some(half_rate),
        max_rate_2x: Some(phase(1100, 2, 16_500)),
        processes: vec![
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
        ..Results::default()
    }
}

/// A side whose maximum rate completed `completed` sagas in 2 s, with `worker_cpu` CPU seconds
/// in the ride worker (nats-server: 6 s) and the given confirm latencies.
pub fn side(completed: u64, worker_cpu: f64, confirm_ms: &[f64]) -> Side {
    let mut max = phase(completed, 2, 15 * completed);
    max.usage.insert("ride-worker#1".into(), usage(worker_cpu));
    let mut latency = phase(completed / 2, 2, 15 * completed / 2);
    latency.confirm_ms = Summary::of(confirm_ms);
    Side {
        max,
        latency: Some(latency),
    }
}

/// Two rounds: the baseline at 500 sagas/s in both, the current build at 550 and 650.
pub fn comparison() -> Comparison {
    let round = |number, first, base, cur| Round {
        number,
        first,
        baseline: side(base, 4.0, &[10.0, 20.0]),
        current: side(cur, 2.0, &[5.0, 8.0]),
    };
    Comparison {
        baseline: "abc1234".into(),
        baseline_bin_dir: "target/bench-baseline-target/bins/abc1234".into(),
        current_bin_dir: "target/release".into(),
        rate: Some(250.0),
        rounds: vec![
            round(1, Build::Baseline, 1000, 1100),
            round(2, Build::Current, 1000, 1300),
        ],
    }
}
