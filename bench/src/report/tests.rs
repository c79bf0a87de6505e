use std::collections::BTreeMap;

use super::*;
use crate::results::fixture::{comparison, phase, results, usage};
use crate::results::{Audit, Backlog, FloorRun, ProcessCost};

#[test]
fn a_relay_only_run_reports_the_relay_and_its_summary() {
    let relay_only = Results {
        relay: results().relay,
        ..Results::default()
    };
    let text = render(&relay_only);
    assert!(
        text.contains("| relay 2 | 0 | 1000 | 1.00 | 34000 |  | n/a | n/a |"),
        "{text}"
    );
    assert!(text.contains("## Summary\n"), "{text}");
    assert!(!text.contains("## Phases"), "{text}");
    assert!(
        text.ends_with("```text\nbench: relay_per_s=32000\n```\n"),
        "{text}"
    );
}

#[test]
fn the_report_states_each_target_as_met_or_missed() {
    let text = render(&results());
    for line in [
        "| ratio S / (R / D) | 0.234 | >= 0.6 (missed) |",
        "| request -> confirmed p50 / p99 / max, ms, at half rate | 3.00 / 30.00 / 30.00 | <= 5 / <= 25 (missed) |",
        "| largest worker RSS idle, MB | 12.0 | <= 30 (met) |",
        "| sagas per second, 2 replicas | 550.0 (1.10 x one replica) | does not fall |",
        "| runtime floor, messages per second (F) | 8000 |  |",
        "| share of the runtime-implied ceiling, S / (F / D) | 0.938 |  |",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn relay_and_floor_runs_show_their_rate_and_cpu_per_message() {
    let mut results = results();
    results.run.max_in_flight = 64;
    results.floor.push(FloorRun {
        messages: 500,
        max_in_flight: 1,
        seconds: 0.25,
        per_second: 2_000.0,
        usage: BTreeMap::new(),
    });
    let text = render(&results);
    for line in [
        // nats-server 0.05 s and the bench 0.04 s of CPU over 1,000 messages.
        "| relay 1 | 64 | 1000 | 1.00 | 30000 |  | 50.0 | 40.0 |",
        "| relay 2 | 64 | 1000 | 1.00 | 34000 |  | n/a | n/a |",
        "| floor 1 | 64 | 1000 | 0.12 | 8000 | 0.125 | 50.0 | 100.0 |",
        "| floor 2 | 1 | 500 | 0.25 | 2000 | 0.500 | n/a | n/a |",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn cpu_per_saga_is_set_side_by_side_for_every_phase() {
    let mut results = results();
    // The light-load fixture completes 100 sagas on the same CPU: ten times the cost each.
    let mut light = phase(100, 5, 1_500);
    light.offered_per_s = Some(20.0);
    light.notifications = BTreeMap::from([(3, 100)]);
    results.light_load = Some(light);
    let text = render(&results);
    for line in [
        "| max rate, 1 replica | n/a | 1000 | 1000 | 0 | 0 | 2.00 | 500.0 | 15.00 | n/a |  | 250% | 4.000 | 6.000 | 10.000 |",
        "| half rate, 1 replica | 250.0 | 500 | 500 | 0 | 0 | 2.00 | 250.0 | 15.00 | n/a |  | 250% | 8.000 | 12.000 | 20.000 |",
        "| light load, 1 replica | 20.0 | 100 | 100 | 0 | 0 | 5.00 | 20.0 | 15.00 | n/a | 3: 100 | 100% | 40.000 | 60.000 | 100.000 |",
        "| max rate, 2 replicas | n/a | 1100 |",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(
        text.contains(
            "| half rate, 1 replica | request -> confirmed | 4 | 3.00 | 30.00 | 30.00 | 9.75 |"
        ),
        "{text}"
    );
    assert!(!text.contains("postgres CPU ms"), "{text}");
}

#[test]
fn processes_show_memory_and_what_each_spent_per_saga_at_the_maximum_rate() {
    let text = render(&results());
    let table = &text[text.find("## Processes").expect("the processes")..];
    // 4 CPU s and 3000 switches over 1000 sagas.
    for line in [
        "| nats-server | n/a | 200.0 | 150.0 | 9.00 | 6.000 | 3.0 | 0.0 | 0.0 | 0.0 |",
        "| ride-worker#1 | 12.0 | 40.0 | 20.0 | 5.00 | 4.000 | 3.0 | 0.0 | 0.0 | 0.0 |",
        "| all |  |  |  |  | 10.000 | 6.0 | 0.0 | 0.0 | 0.0 |",
    ] {
        assert!(table.contains(line), "{line}\n{table}");
    }
    assert!(
        text.contains("| ride | 15000 | 15.00 | 15000 | n/a | 3 | n/a | n/a |"),
        "{text}"
    );
    assert!(
        text.contains("| all | 15000 | 15.00 | 15000 | 0 | 3 | 0 | n/a |"),
        "{text}"
    );
}

#[test]
fn postgres_gets_its_column_only_when_it_ran() {
    let mut results = results();
    results.run.db = "postgres".into();
    for phase in [results.max_rate.as_mut(), results.half_rate.as_mut()] {
        phase
            .unwrap()
            .usage
            .insert(DATABASE_PROCESS.to_owned(), usage(5.0));
    }
    results.processes.push(ProcessCost {
        name: DATABASE_PROCESS.into(),
        idle_rss_kib: Some(32 * 1024),
        peak_rss_kib: 200 * 1024,
        end_rss_kib: 150 * 1024,
        cpu_seconds: 12.0,
    });
    let text = render(&results);
    assert!(text.contains("| postgres CPU ms per saga |"), "{text}");
    assert!(
        text.contains("| 375% | 4.000 | 6.000 | 5.000 | 15.000 |"),
        "{text}"
    );
    assert!(
        text.contains("| postgres | 32.0 | 200.0 | 150.0 | 12.00 | 5.000 |"),
        "{text}"
    );
}

#[test]
fn an_ab_only_run_reports_each_round_and_the_medians() {
    let ab_only = Results {
        ab: Some(comparison()),
        ..Results::default()
    };
    let text = render(&ab_only);
    assert!(!text.contains("## Summary\n"), "{text}");
    assert!(!text.contains("## Relay"), "{text}");
    for line in [
        "| baseline | abc1234 (`target/bench-baseline-target/bins/abc1234`) |",
        // Round 1: S 500 vs 550; workers 4 vs 1.818 ms per saga, nats-server 6 vs 5.455 (the
        // same server CPU in the same time: at the server's pace, the builds are even).
        "| 1 | baseline | 500.0 | 550.0 | 1.100 | 4.000 | 1.818 | 0.455 | 6.000 | 5.455 | 0.909 | 1.000 | 15.00 / 15.00 |",
        "| 2 | current | 500.0 | 650.0 | 1.300 |",
        "| median |  | 500.0 | 600.0 | 1.200 | 4.000 | 1.678 | 0.420 |",
        "| 2 | current | 650 | 0 | 5.00 / 8.00 / 8.00 | n/a |",
        "| median | current |  |  | 5.00 / 8.00 / 8.00 | n/a / n/a / n/a |",
        "| all workers | 4.000 | 1.678 | 0.420 | 3.0 | 2.5 |",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    let mut no_rate = comparison();
    no_rate.rate = None;
    let text = render(&Results {
        ab: Some(no_rate),
        ..Results::default()
    });
    assert!(!text.contains("### Latency"), "{text}");
}

#[test]
fn a_backlog_drain_shows_its_replicas_its_growth_and_its_audit() {
    let mut drain = phase(2000, 8, 30_000);
    drain.confirm_ms = Summary::of(&[1000.0, 2000.0]);
    let backlog = Results {
        backlog: Some(Backlog {
            queued: 2000,
            waiting: 2000,
            replicas: 3,
            drivers: 2000,
            drain,
            handled_per_replica: BTreeMap::from([("ride".into(), vec![2100, 2000, 1900])]),
            stored_bytes: BTreeMap::from([
                ("ride".into(), 3_000_000),
                ("driver".into(), 1_000_000),
            ]),
            audit: Audit {
                command: "ridectl audit".into(),
                success: true,
                sagas: 2000,
                terminal: 2000,
                ..Audit::default()
            },
        }),
        ..Results::default()
    };
    let text = render(&backlog);
    for line in [
        "| 2000 | 2000 | 3 | 2000 | `ridectl audit`: clean: 2000 sagas, 2000 ended, 0 in flight |",
        "| ride | 2100 / 2000 / 1900 | 1500 |",
        "| all |  | 2000 |",
        "| backlog drain, 3 replicas | n/a | 2000 | 2000 |",
        "## Deliveries and worker counts, backlog drain, 3 replicas",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    assert!(!text.contains("## Summary\n"), "{text}");
}

#[test]
fn the_latest_block_replaces_the_old_one_and_keeps_the_rest() {
    let block = latest_block(&results());
    assert!(block.starts_with(BLOCK_BEGIN), "{block}");
    assert!(
        block.contains("[`bench/results/2026-01-02-quick.md`]"),
        "{block}"
    );
    assert!(block.contains("| ratio S / (R / D) | 0.234 |"), "{block}");
    let document = format!("# Benchmarks\n\nintro\n\n{BLOCK_BEGIN}\nold\n{BLOCK_END}\n\nmore\n");
    let updated = replace_block(&document, &block);
    assert_eq!(updated, format!("# Benchmarks\n\nintro\n\n{block}\nmore\n"));
    assert_eq!(replace_block(&updated, &block), updated);
    let appended = replace_block("# Benchmarks\n", &block);
    assert_eq!(appended, format!("# Benchmarks\n\n{block}"));
}
