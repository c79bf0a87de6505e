//! Tests of the report's rendering and of the BENCHMARKS.md block.

use super::*;
use crate::report::fixture::report;

#[test]
fn a_relay_only_run_reports_only_the_relay() {
    let report = Report {
        relay: report().relay,
        ..Report::default()
    };
    assert!(render(&report).contains("| 2 | 1000 | 300 | 1.00 | 34000 |"));
}

#[test]
fn an_ab_only_run_reports_the_comparison_without_the_headline() {
    let report = Report {
        ab: Some(ab::fixture::comparison()),
        ..Report::default()
    };
    let text = render(&report);
    assert!(text.contains("## A/B against baseline"), "{text}");
    assert!(!text.contains("## Summary\n"), "{text}");
    assert!(!text.contains("## Relay ceiling"), "{text}");
}

#[test]
fn a_light_load_phase_gets_its_own_latency_section_only_when_measured() {
    let mut report = report();
    assert!(!render(&report).contains("## Latency under light load"));
    report.light = Some((20.0, report.latency.clone().unwrap().1));
    let text = render(&report);
    let light = text
        .find("## Latency under light load")
        .expect("light section");
    assert!(text[light..].contains("Open loop: 20.0 sagas started per second"));
    assert!(text[light..].contains("| request -> confirmed |"), "{text}");
    assert!(text.contains("light load, 1 replica"), "{text}");
}

#[test]
fn the_report_states_each_target_as_met_or_missed() {
    let text = render(&report());
    assert!(
        text.contains("| ratio S / (R / D) | 0.234 | >= 0.6 (missed) |"),
        "{text}"
    );
    assert!(
        text.contains("| largest worker RSS idle, MB | 12.0 | <= 30 (met) |"),
        "{text}"
    );
    assert!(text.contains("| sagas per second, 2 replicas | 550.0 (1.10 x one replica) |"));
    assert!(text.contains("| ride-worker#1 | 12.0 | 40.0 | 20.0 | 5.00 | 4.00 | 4.00 | 4.00 |"));
    // Per saga at the maximum rate: 4 CPU s and 3000 switches over 1000 sagas.
    assert!(
        text.contains("| ride-worker#1 | 4.000 | 3.0 | 0.0 | 0.0 | 0.0 |"),
        "{text}"
    );
    assert!(
        text.contains("| all | 10.000 | 6.0 | 0.0 | 0.0 | 0.0 |"),
        "{text}"
    );
    assert!(text.contains("All workers together: 40% of that CPU; nats-server: 60%."));
    assert!(
        text.contains("| 1 | 1000 | 300 | 1.00 | 30000 | 50.0 | 40.0 |"),
        "{text}"
    );
    assert!(
        text.contains("| 2 | 1000 | 300 | 1.00 | 34000 | n/a | n/a |"),
        "{text}"
    );
    assert!(
        text.contains("nats-server used 400.0 µs of CPU per service delivery"),
        "{text}"
    );
    assert!(
        text.contains("| ride-worker | 15000 | 15.00 | 15000 | n/a | 3 | n/a |"),
        "{text}"
    );
    assert!(
        text.contains("| all | 15000 | 15.00 | 15000 | 0 | 3 | 0 |"),
        "{text}"
    );
}

#[test]
fn the_latest_block_replaces_the_old_one_and_keeps_the_rest() {
    let document = format!("# Benchmarks\n\nintro\n\n{BLOCK_BEGIN}\nold\n{BLOCK_END}\n\nmore\n");
    let block = format!("{BLOCK_BEGIN}\nnew\n{BLOCK_END}\n");
    let updated = replace_block(&document, &block);
    assert_eq!(
        updated,
        format!("# Benchmarks\n\nintro\n\n{BLOCK_BEGIN}\nnew\n{BLOCK_END}\n\nmore\n")
    );
    assert_eq!(replace_block(&updated, &block), updated);
    let appended = replace_block("# Benchmarks\n", &block);
    assert_eq!(appended, format!("# Benchmarks\n\n{block}"));
}

#[test]
fn the_floor_section_bounds_the_ratio_and_the_latency() {
    let mut report = report();
    report.floor.push(crate::floor::FloorRun {
        messages: 500,
        max_in_flight: 1,
        elapsed: std::time::Duration::from_millis(250),
        per_second: 2_000.0,
    });
    let text = render(&report);
    assert!(
        text.contains("| runtime floor, messages per second (F) | 8000 | |"),
        "{text}"
    );
    assert!(
        text.contains("| share of the runtime-implied ceiling, S / (F / D) | 0.938 | |"),
        "{text}"
    );
    let floor = text.find("## Runtime floor").expect("floor section");
    let section = &text[floor..];
    // F = 8,000/s, R = 32,000/s, D = 15; nats-server 0.05 s and the runtime 0.1 s of CPU over
    // the first run's 1,000 messages.
    assert!(
        section.contains("| 1 | 64 | 1000 | 0.12 | 8000 | 0.125 | 50.0 | 100.0 |"),
        "{section}"
    );
    assert!(section.contains("| 2 | 1 | 500 | 0.25 | 2000 | 0.500 | n/a | n/a |"));
    assert!(
        section.contains(
            "F / D = 533 sagas per second here: 0.250 of the relay-implied ceiling R / D = 2133"
        ),
        "{section}"
    );
    assert!(section.contains("at least 2.50 ms"), "{section}");
    let none = Report {
        floor: Vec::new(),
        ..report
    };
    assert!(!render(&none).contains("Runtime floor"));
    assert!(!render(&none).contains("runtime floor"));
}

#[test]
fn the_deliveries_table_shows_inputs_per_batch_when_the_workers_count_batches() {
    let mut report = report();
    let text = render(&report);
    assert!(
        text.contains("| ride-worker | 15000 | 15.00 | 15000 | n/a | 3 | n/a | n/a |"),
        "{text}"
    );
    let max1 = report.max1.as_mut().unwrap();
    let ride = max1.worker_counts.get_mut(&Service::Ride).unwrap();
    ride.insert("batches".into(), 600);
    let text = render(&report);
    assert!(
        text.contains("| ride-worker | 15000 | 15.00 | 15000 | n/a | 3 | n/a | 25.0 |"),
        "{text}"
    );
    assert!(
        text.contains("| all | 15000 | 15.00 | 15000 | 0 | 3 | 0 | 25.0 |"),
        "{text}"
    );
}

#[test]
fn cpu_per_saga_is_compared_across_the_loads_of_one_replica() {
    let mut report = report();
    // The half-rate fixture completes half the sagas on the same CPU: twice the cost each.
    report.light = Some((20.0, crate::report::fixture::phase(100, 5, 1_500)));
    let text = render(&report);
    let table = text
        .find("| phase | sagas per second | cores busy |")
        .expect("the per-load table");
    let table = &text[table..];
    assert!(
        table.contains("| max rate | 500.0 | 250% | n/a | 4.000 | 6.000 | 10.000 | 1.00 |"),
        "{text}"
    );
    assert!(
        table.contains("| half rate | 250.0 | 250% | n/a | 8.000 | 12.000 | 20.000 | 2.00 |"),
        "{text}"
    );
    assert!(
        table.contains("| light load | 20.0 | 100% | n/a | 40.000 | 60.000 | 100.000 | 10.00 |"),
        "{text}"
    );
    // Two replicas are not a load of the one-replica fleet.
    assert!(!table.contains("| max rate, 2 replicas |"), "{text}");
}

#[test]
fn postgres_gets_its_column_its_share_and_its_memory_note_only_when_it_ran() {
    let sqlite = render(&report());
    assert!(!sqlite.contains("postgres CPU ms"), "{sqlite}");
    assert!(!sqlite.contains("PostgreSQL"), "{sqlite}");

    let mut report = report();
    report.db = Db::Postgres;
    for phase in [
        report.max1.as_mut(),
        report.latency.as_mut().map(|(_, p)| p),
    ] {
        let phase = phase.unwrap();
        phase.usage.insert(
            database::PROCESS_NAME.to_owned(),
            crate::report::fixture::usage(5.0),
        );
    }
    report.costs.push(crate::report::ProcessCost {
        name: database::PROCESS_NAME.into(),
        idle_rss_kib: Some(32 * 1024),
        peak_rss_kib: 200 * 1024,
        end_rss_kib: 150 * 1024,
        cpu_seconds: 12.0,
    });
    let text = render(&report);
    // Max rate: 1000 sagas; workers 4 s, nats-server 6 s, postgres 5 s.
    assert!(
        text.contains("| max rate | 500.0 | 375% | n/a | 4.000 | 6.000 | 5.000 | 15.000 | 1.00 |"),
        "{text}"
    );
    assert!(
        text.contains("All workers together: 27% of that CPU; nats-server: 40%; PostgreSQL: 33%."),
        "{text}"
    );
    assert!(text.contains("`postgres` is PostgreSQL's processes together"));
    assert!(text.contains("in one PostgreSQL transaction"), "{text}");
    assert!(
        text.contains("| postgres | 32.0 | 200.0 | 150.0 | 12.00 |"),
        "{text}"
    );
}
