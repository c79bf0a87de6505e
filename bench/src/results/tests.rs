use super::fixture::{comparison, results, side, usage};
use super::*;

#[test]
fn percentiles_take_the_nearest_rank_whatever_the_order() {
    let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
    let summary = Summary::of(&samples).unwrap();
    assert_eq!(
        (summary.count, summary.p50, summary.p99, summary.max),
        (100, 50.0, 99.0, 100.0)
    );
    assert_eq!(summary.mean, 50.5);
    let one = Summary::of(&[4.2]).unwrap();
    assert_eq!((one.p50, one.p99, one.max), (4.2, 4.2, 4.2));
    assert_eq!(Summary::of(&[]), None);
    assert_eq!(Summary::of(&[f64::NAN]), None);
}

#[test]
fn the_ratio_is_the_share_of_the_relay_implied_saga_ceiling() {
    let results = results();
    // S = 500/s, R = 32,000/s, D = 15: the ceiling is 2,133 sagas/s.
    assert_eq!(results.relay_per_second(), Some(32_000.0));
    let ratio = results.ratio().unwrap();
    assert!((ratio - 500.0 * 15.0 / 32_000.0).abs() < 1e-9, "{ratio}");
}

#[test]
fn the_floor_ratio_is_the_share_of_the_runtime_implied_saga_ceiling() {
    let results = results();
    // S = 500/s, F = 8,000/s, D = 15: no service on this runtime passes 533 sagas/s.
    assert_eq!(results.floor_per_second(), Some(8_000.0));
    let ratio = results.floor_ratio().unwrap();
    assert!((ratio - 500.0 * 15.0 / 8_000.0).abs() < 1e-9, "{ratio}");
    let no_floor = Results {
        floor: Vec::new(),
        ..results
    };
    assert_eq!(no_floor.floor_ratio(), None);
}

#[test]
fn the_summary_line_starts_with_the_headline_fields_in_order() {
    let line = results().summary_line();
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
fn a_postgres_run_says_so_at_the_end_of_the_same_summary_line() {
    let sqlite = results().summary_line();
    let mut postgres = results();
    postgres.run.db = "postgres".into();
    assert_eq!(postgres.summary_line(), format!("{sqlite} db=postgres"));
    assert!(!sqlite.contains("db="));
}

#[test]
fn a_relay_only_run_reports_only_the_relay() {
    let relay_only = Results {
        relay: results().relay,
        ..Results::default()
    };
    assert_eq!(relay_only.summary_line(), "bench: relay_per_s=32000");
}

#[test]
fn the_comparison_adds_its_medians_at_the_end_of_the_summary_line() {
    let mut results = results();
    results.ab = Some(comparison());
    let line = results.summary_line();
    assert!(
        line.ends_with(
            " failed=0 ab_speedup=1.200 ab_speedup_paced=1.000 ab_p50_confirm_ms_base=10.00 \
             ab_p50_confirm_ms_cur=5.00 ab_p99_confirm_ms_base=20.00 ab_p99_confirm_ms_cur=8.00"
        ),
        "{line}"
    );
    assert!(!results.broken());
    results.ab.as_mut().unwrap().rounds[1]
        .current
        .max
        .unfinished = 1;
    assert!(results.broken());
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
    // The same work (2 ms of worker CPU and 1 ms of server CPU per saga) done at 500 and 400
    // sagas per second: the second turn's machine ran 1.25 x slower, its CPU per saga 1.25 x
    // higher for both processes.
    let turn = |completed: u64, pace: f64| {
        let mut side = side(completed, 2.0 * completed as f64 / 1000.0 * pace, &[]);
        side.max.usage.insert(
            "nats-server".into(),
            usage(completed as f64 / 1000.0 * pace),
        );
        side
    };
    let round = Round {
        number: 1,
        first: Build::Baseline,
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
    assert_eq!(side.max.cpu_ms_per_saga("nats-server"), Some(6.0));
    assert_eq!(side.max.cpu_ms_per_saga("ride-worker#1"), Some(4.0));
    assert_eq!(side.max.cpu_ms_per_saga(ALL_WORKERS), Some(4.0));
    assert_eq!(
        side.max
            .per_saga("nats-server", |u| u.context_switches as f64),
        Some(3.0)
    );
    assert_eq!(side.max.cpu_ms_per_saga("fraud-worker#1"), None);
    assert_eq!(Phase::default().cpu_ms_per_saga(ALL_WORKERS), None);
    assert_eq!(side.max.cpu_ms_per_saga(ALL_PROCESSES), Some(10.0));
}

#[test]
fn inputs_per_transaction_need_the_workers_batch_count() {
    let mut phase = fixture::phase(1000, 2, 15_000);
    assert_eq!(phase.inputs_per_batch(None), None);
    phase
        .worker_counts
        .get_mut("ride")
        .unwrap()
        .insert("batches".into(), 600);
    assert_eq!(phase.inputs_per_batch(Some("ride")), Some(25.0));
    assert_eq!(phase.inputs_per_batch(None), Some(25.0));
    assert_eq!(phase.inputs_per_batch(Some("fraud")), None);
}

const CLEAN: Audit = Audit {
    command: String::new(),
    success: true,
    sagas: 2000,
    terminal: 2000,
    in_flight: 0,
    violations: Vec::new(),
    error: None,
};

#[test]
fn an_audit_is_clean_only_with_every_saga_ended_and_nothing_broken() {
    assert_eq!(
        CLEAN.verdict(),
        "clean: 2000 sagas, 2000 ended, 0 in flight"
    );
    let in_flight = Audit {
        terminal: 1990,
        in_flight: 10,
        ..CLEAN
    };
    assert!(in_flight.verdict().contains("not every saga ended"));
    let broken = Audit {
        success: false,
        violations: vec!["r_1: invariant 2: driver d_1 assigned twice".into()],
        ..CLEAN
    };
    assert!(!broken.clean());
    assert!(broken.verdict().contains("1 invariant violations"));
    let empty = Audit {
        sagas: 0,
        terminal: 0,
        ..CLEAN
    };
    assert!(empty.verdict().contains("no saga in the log"));
}

fn drained(completed: u64) -> Backlog {
    let mut drain = fixture::phase(completed, 8, 15 * completed);
    drain.started = 2000;
    drain.confirm_ms = Summary::of(&[1000.0, 2000.0, 3000.0]);
    drain.usage = BTreeMap::from([
        ("postgres".to_owned(), usage(2.0)),
        ("ride-worker#1".to_owned(), usage(6.0)),
    ]);
    Backlog {
        queued: 2000,
        waiting: 2000,
        replicas: 3,
        drivers: 2000,
        drain,
        handled_per_replica: BTreeMap::from([("ride".into(), vec![2100, 2000, 1900])]),
        stored_bytes: BTreeMap::from([("ride".into(), 3_000_000), ("driver".into(), 1_000_000)]),
        audit: CLEAN,
    }
}

#[test]
fn a_drain_passes_when_every_saga_completed_and_the_audit_is_clean() {
    let run = drained(2000);
    assert!(run.passed());
    assert!(run.problems().is_empty());
    let fields: Vec<String> = run
        .summary_fields()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(
        fields.join(" "),
        "backlog=2000 replicas=3 sagas=2000 drain_s=8.00 sagas_per_s=250.0 \
         p50_confirmed_s=2.00 cpu_ms_per_saga=4.000 audit=clean failed=0"
    );
    assert_eq!(run.stored_bytes_per_saga(None), Some(2000.0));
    assert_eq!(run.stored_bytes_per_saga(Some("driver")), Some(500.0));

    let short = drained(1990);
    assert!(!short.passed());
    assert_eq!(
        short.problems(),
        ["backlog: 1990 of 2000 queued sagas completed"]
    );
    let mut unclean = drained(2000);
    unclean.audit.success = false;
    assert!(!unclean.passed());
    assert!(unclean.problems()[0].starts_with("backlog: ridectl audit: not clean"));
    let results = Results {
        backlog: Some(unclean),
        ..Results::default()
    };
    assert!(results.broken());
}

#[test]
fn results_come_back_from_their_json_as_they_were_written() {
    let mut results = results();
    results.ab = Some(comparison());
    results.backlog = Some(drained(2000));
    results.profile = Some("42% memmove".into());
    results.problems.push("something".into());
    let json = serde_json::to_string_pretty(&results).unwrap();
    let read: Results = serde_json::from_str(&json).unwrap();
    assert_eq!(read, results);
    assert_eq!(read.summary_line(), results.summary_line());
    // Fields a file does not have are their defaults.
    let sparse: Results = serde_json::from_str(r#"{"relay":[{"per_second":10.0}]}"#).unwrap();
    assert_eq!(sparse.summary_line(), "bench: relay_per_s=10");
}
