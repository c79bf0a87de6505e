//! The report's section "A/B against baseline": each round and the medians over the rounds, at
//! the maximum rate, at the common latency rate, and per process.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{ALL_WORKERS, Build, Comparison, Pick, Round, Side, order, ratio};
use crate::stats::Summary;

/// A figure of one round.
type Figure = fn(&Round) -> Option<f64>;

/// The maximum-rate table's columns after the round and the build that went first, with their
/// decimals.
fn max_columns() -> [(&'static str, Figure, usize); 10] {
    [
        ("S baseline", |r| Some(r.baseline.per_second()), 1),
        ("S current", |r| Some(r.current.per_second()), 1),
        ("S current / baseline", Round::speedup, 3),
        (
            "worker CPU baseline",
            |r| r.baseline.cpu_ms_per_saga(ALL_WORKERS),
            3,
        ),
        (
            "worker CPU current",
            |r| r.current.cpu_ms_per_saga(ALL_WORKERS),
            3,
        ),
        ("current / baseline", |r| r.cpu_ratio(ALL_WORKERS), 3),
        (
            "nats-server CPU baseline",
            |r| r.baseline.cpu_ms_per_saga("nats-server"),
            3,
        ),
        (
            "nats-server CPU current",
            |r| r.current.cpu_ms_per_saga("nats-server"),
            3,
        ),
        ("current / baseline", |r| r.cpu_ratio("nats-server"), 3),
        (
            "S current / baseline at the server's pace",
            Round::paced_speedup,
            3,
        ),
    ]
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

/// `p50 / p99 / max` of a summary, in ms.
fn spread(summary: Option<Summary>) -> String {
    summary.map_or_else(
        || "n/a".into(),
        |s| format!("{:.2} / {:.2} / {:.2}", s.p50, s.p99, s.max),
    )
}

/// Appends the section to `out`.
pub fn render(out: &mut String, c: &Comparison) {
    let baseline = if c.baseline == c.baseline_bin_dir {
        format!("workers from `{}`", c.baseline_bin_dir)
    } else {
        format!("{} (workers from `{}`)", c.baseline, c.baseline_bin_dir)
    };
    let rounds = match c.rounds.len() {
        1 => "1 round".to_owned(),
        n => format!("{n} rounds"),
    };
    let _ = writeln!(
        out,
        "\n## A/B against baseline\n\nBaseline: {baseline}; current: workers from `{}`. {rounds} \
         on this run's nats-server. Before each build's turn the saga stream is deleted and \
         created afresh with the service consumers; the build then gets a fresh fleet (one replica \
         of every worker, new databases, the same drivers brought online, warm-up) and runs the \
         maximum-rate phase (same window and length as the usual one), then the latency phase. \
         Rounds alternate which build goes first (the baseline in odd rounds). The median rows \
         take the median of each column over the rounds (for two rounds, their mean), so their \
         ratios are the median of the rounds' ratios, not the ratio of the medians.",
        c.current_bin_dir
    );
    render_max(out, c);
    render_latency(out, c);
    render_processes(out, c);
}

fn render_max(out: &mut String, c: &Comparison) {
    let columns = max_columns();
    out.push_str(
        "\n### Maximum rate\n\nS in sagas per second; CPU in ms per completed saga (all workers \
         together, and nats-server); D is deliveries per saga, the same for both builds unless \
         one of them redelivers. S at the server's pace is S current / baseline times \
         nats-server's CPU per saga current / baseline: the server does the same work per saga \
         for both builds, so its CPU per saga says how fast the shared machine ran during each \
         turn, and this ratio takes out a slowdown that hit one turn (it stops holding if a \
         build changes how the workers pull or ack, or D).\n\n| round | first |",
    );
    for (name, _, _) in &columns {
        let _ = write!(out, " {name} |");
    }
    out.push_str(" D baseline / current |\n|");
    out.push_str(&" --- |".repeat(columns.len() + 3));
    out.push('\n');
    for round in &c.rounds {
        let cells = columns.map(|(_, figure, decimals)| cell(figure(round), decimals));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} / {} |",
            round.number,
            order(round.number)[0].name(),
            cells.join(" | "),
            cell(round.baseline.max.deliveries_per_saga(), 2),
            cell(round.current.max.deliveries_per_saga(), 2)
        );
    }
    let medians = columns.map(|(_, figure, decimals)| cell(c.median_of(figure), decimals));
    let _ = writeln!(out, "| median | | {} | |", medians.join(" | "));
}

fn render_latency(out: &mut String, c: &Comparison) {
    let Some(rate) = c.rate else {
        out.push_str(
            "\nLatency not compared: the baseline completed no saga at the maximum rate in \
             round 1.\n",
        );
        return;
    };
    let _ = writeln!(
        out,
        "\n### Latency at {rate:.1} sagas per second\n\nOpen loop, the same offered rate for both \
         builds: half of the baseline's maximum rate in round 1. p50 / p99 / max in ms, from \
         just before the command is published to the event's arrival at the generator.\n"
    );
    out.push_str(
        "| round | build | sagas completed | starts skipped | request -> confirmed | complete -> \
         captured |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for round in &c.rounds {
        for build in order(round.number) {
            let side = round.side(build);
            let (completed, skipped) = side
                .latency
                .as_ref()
                .map_or((0, 0), |p| (p.outcome.captured, p.outcome.skipped_starts));
            let _ = writeln!(
                out,
                "| {} | {} | {completed} | {skipped} | {} | {} |",
                round.number,
                build.name(),
                spread(side.confirm()),
                spread(side.capture())
            );
        }
    }
    let picks: [Pick; 3] = [|s| s.p50, |s| s.p99, |s| s.max];
    let medians = |figure: &dyn Fn(&Round, Pick) -> Option<f64>| {
        let cells = picks.map(|pick| cell(c.median_of(|r| figure(r, pick)), 2));
        cells.join(" / ")
    };
    for build in [Build::Baseline, Build::Current] {
        let _ = writeln!(
            out,
            "| median | {} | | | {} | {} |",
            build.name(),
            medians(&|r, pick| r.side(build).confirm().map(pick)),
            medians(&|r, pick| r.side(build).capture().map(pick))
        );
    }
    let paired = |span: fn(&Side) -> Option<Summary>| {
        move |r: &Round, pick: Pick| ratio(span(&r.current).map(pick), span(&r.baseline).map(pick))
    };
    let _ = writeln!(
        out,
        "| median | current / baseline | | | {} | {} |",
        medians(&paired(Side::confirm)),
        medians(&paired(Side::capture))
    );
}

fn render_processes(out: &mut String, c: &Comparison) {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for round in &c.rounds {
        for side in [&round.baseline, &round.current] {
            names.extend(side.max.usage.keys().map(String::as_str));
        }
    }
    if names.is_empty() {
        return;
    }
    out.push_str(
        "\n### Per process at the maximum rate\n\nMedians over the rounds, per completed saga: \
         CPU in ms (user + system, all threads) and context switches (live threads).\n\n\
         | process | CPU baseline | CPU current | current / baseline | context switches \
         baseline | context switches current |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for name in names.into_iter().chain([ALL_WORKERS]) {
        let cpu = |build: Build| c.median_of(|r| r.side(build).cpu_ms_per_saga(name));
        let switches = |build: Build| c.median_of(|r| r.side(build).switches_per_saga(name));
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            cell(cpu(Build::Baseline), 3),
            cell(cpu(Build::Current), 3),
            cell(c.median_of(|r| r.cpu_ratio(name)), 3),
            cell(switches(Build::Baseline), 1),
            cell(switches(Build::Current), 1),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ab::fixture::comparison;

    #[test]
    fn the_section_lists_each_round_and_the_medians() {
        let mut text = String::new();
        render(&mut text, &comparison());
        assert!(
            text.contains(
                "Baseline: abc1234 (workers from `target/bench-baseline-target/bin/abc1234`); \
                 current: workers from `target/release`. 2 rounds on"
            ),
            "{text}"
        );
        // Round 1: S 500 vs 550; workers 4 vs 1.818 ms per saga, nats-server 6 vs 5.455 (the
        // same server CPU in the same time: at the server's pace, the builds are even).
        assert!(
            text.contains(
                "| 1 | baseline | 500.0 | 550.0 | 1.100 | 4.000 | 1.818 | 0.455 | 6.000 | 5.455 \
                 | 0.909 | 1.000 | 15.00 / 15.00 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| 2 | current | 500.0 | 650.0 | 1.300 |"),
            "{text}"
        );
        assert!(
            text.contains("| median | | 500.0 | 600.0 | 1.200 | 4.000 | 1.678 | 0.420 |"),
            "{text}"
        );
        assert!(
            text.contains("### Latency at 250.0 sagas per second"),
            "{text}"
        );
        assert!(
            text.contains("| 2 | current | 650 | 0 | 5.00 / 8.00 / 8.00 | n/a |"),
            "{text}"
        );
        assert!(
            text.contains("| median | current / baseline | | | 0.50 / 0.40 / 0.40 |"),
            "{text}"
        );
        assert!(
            text.contains("| all workers | 4.000 | 1.678 | 0.420 | 3.0 | 2.5 |"),
            "{text}"
        );
    }

    #[test]
    fn without_a_common_rate_the_latency_is_not_compared() {
        let mut c = comparison();
        c.rate = None;
        let mut text = String::new();
        render(&mut text, &c);
        assert!(text.contains("Latency not compared"), "{text}");
        assert!(!text.contains("### Latency at"), "{text}");
    }
}
