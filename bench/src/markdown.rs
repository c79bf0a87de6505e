//! The markdown renderings of a [`Report`]: the full report, the headline table against the
//! targets, where the CPU went, and the block of `BENCHMARKS.md` that keeps the latest figures.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ridesaga_schemas::Service;

use crate::ab;
use crate::cli::Db;
use crate::database;
use crate::hops;
use crate::procfs::Usage;
use crate::report::{
    Phase, Report, SELF_NAME, TARGET_IDLE_RSS_MB, TARGET_P50_CONFIRM_MS, TARGET_P99_CONFIRM_MS,
    TARGET_PEAK_RSS_MB, TARGET_RATIO, mb,
};
use crate::stats::Summary;

mod costs;
mod floor;
pub use costs::dominance;
use costs::{render_costs, render_dominance};
use floor::render_floor;

/// Where the latest figures go in `BENCHMARKS.md`; everything between the markers is replaced.
pub const BLOCK_BEGIN: &str = "<!-- bench:latest:begin (written by scripts/bench) -->";
pub const BLOCK_END: &str = "<!-- bench:latest:end -->";

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "n/a".into(), |v| format!("{v:.decimals$}"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "missed",
        None => "not measured",
    }
}

fn latency_row(name: &str, s: Option<Summary>) -> String {
    match s {
        Some(s) => format!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            s.count, s.p50, s.p99, s.max, s.mean
        ),
        None => format!("| {name} | 0 | n/a | n/a | n/a | n/a |\n"),
    }
}

/// The headline table: figures against the targets.
pub fn headline(report: &Report) -> String {
    let mut out = String::new();
    let max1 = report.max1.as_ref();
    let s = max1.map(|p| p.outcome.per_second());
    let d = max1.and_then(Phase::deliveries_per_saga);
    let relay = report.relay_per_second();
    let ratio = report.ratio();
    let confirm = report.confirm_latency();
    let capture = report.capture_latency();
    let idle = report.max_worker_idle_mb();
    let peak = report.max_worker_peak_mb();
    let s2 = report.max2.as_ref().map(|p| p.outcome.per_second());
    out.push_str("| figure | value | target |\n| --- | --- | --- |\n");
    let _ = writeln!(
        out,
        "| sagas per second, 1 replica (S) | {} | |",
        cell(s, 1)
    );
    let _ = writeln!(
        out,
        "| relay ceiling, messages per second (R) | {} | |",
        cell(relay, 0)
    );
    let _ = writeln!(out, "| deliveries per saga (D) | {} | |", cell(d, 2));
    if !report.floor.is_empty() {
        let _ = writeln!(
            out,
            "| runtime floor, messages per second (F) | {} | |",
            cell(report.floor_per_second(), 0)
        );
    }
    let _ = writeln!(
        out,
        "| ratio S / (R / D) | {} | >= {TARGET_RATIO} ({}) |",
        cell(ratio, 3),
        verdict(ratio.map(|r| r >= TARGET_RATIO))
    );
    if !report.floor.is_empty() {
        let _ = writeln!(
            out,
            "| share of the runtime-implied ceiling, S / (F / D) | {} | |",
            cell(report.floor_ratio(), 3)
        );
    }
    let _ = writeln!(
        out,
        "| request -> confirmed p50 / p99 / max, ms, at half rate | {} / {} / {} | <= {TARGET_P50_CONFIRM_MS} / <= {TARGET_P99_CONFIRM_MS} ({}) |",
        cell(confirm.map(|c| c.p50), 2),
        cell(confirm.map(|c| c.p99), 2),
        cell(confirm.map(|c| c.max), 2),
        verdict(confirm.map(|c| c.p50 <= TARGET_P50_CONFIRM_MS && c.p99 <= TARGET_P99_CONFIRM_MS))
    );
    let _ = writeln!(
        out,
        "| complete -> captured p50 / p99 / max, ms, at half rate | {} / {} / {} | |",
        cell(capture.map(|c| c.p50), 2),
        cell(capture.map(|c| c.p99), 2),
        cell(capture.map(|c| c.max), 2),
    );
    let _ = writeln!(
        out,
        "| largest worker RSS idle, MB | {} | <= {TARGET_IDLE_RSS_MB} ({}) |",
        cell(idle, 1),
        verdict(idle.map(|m| m <= TARGET_IDLE_RSS_MB))
    );
    let _ = writeln!(
        out,
        "| largest worker peak RSS over the run, MB | {} | <= {TARGET_PEAK_RSS_MB} ({}) |",
        cell(peak, 1),
        verdict(peak.map(|m| m <= TARGET_PEAK_RSS_MB))
    );
    let scaling = match (s, s2) {
        (Some(s), Some(s2)) if s > 0.0 => format!("{s2:.1} ({:.2} x one replica)", s2 / s),
        _ => "n/a".into(),
    };
    let _ = writeln!(
        out,
        "| sagas per second, 2 replicas | {scaling} | does not fall |"
    );
    out
}

/// The full markdown report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let kind = if report.quick { " (quick)" } else { "" };
    let _ = writeln!(out, "# Ridesaga benchmark, {}{kind}\n", report.date);
    let _ = writeln!(out, "- command: `{}`", report.command);
    let _ = writeln!(out, "- started: {}", report.started_at);
    let _ = writeln!(out, "- machine: {}", report.machine);
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min): {} before the run, {} after it",
        report.load.0, report.load.1
    );
    let _ = writeln!(
        out,
        "- server: {} with the repository's `nats.conf`",
        report.nats_version
    );
    let _ = writeln!(out, "- build: release, revision {}", report.revision);
    for (name, value) in &report.settings {
        let _ = writeln!(out, "- {name}: {value}");
    }
    // An A/B-only run and a backlog drain have none of the headline's figures.
    let own_figures = report.ab.is_some() || report.backlog.is_some();
    if !own_figures || report.max1.is_some() || !report.relay.is_empty() {
        out.push_str("\n## Summary\n\n");
        out.push_str(&headline(report));
    }
    if !report.problems.is_empty() {
        out.push_str("\n## Problems\n\n");
        for problem in &report.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }

    if !report.relay.is_empty() {
        render_relay(&mut out, report);
    }
    render_floor(&mut out, report);
    for (name, phase) in report.phases() {
        render_phase(&mut out, name, phase);
    }
    if let Some((rate, phase)) = &report.latency {
        let title = "Latency at half of the maximum rate";
        render_latency(&mut out, title, *rate, phase, &report.latency_hops);
    }
    if let Some((rate, phase)) = &report.light {
        let title = "Latency under light load";
        render_latency(&mut out, title, *rate, phase, &report.light_hops);
    }
    if let Some(backlog) = &report.backlog {
        backlog.render(&mut out);
        render_deliveries(&mut out, &backlog.phase);
    }
    render_costs(&mut out, report);
    render_dominance(&mut out, report);
    if let Some(profile) = &report.profile {
        out.push_str("\n## Profile of the maximum-rate phase (perf, flat)\n\n```text\n");
        out.push_str(profile.trim_end());
        out.push_str("\n```\n");
    }
    if let Some(comparison) = &report.ab {
        ab::render(&mut out, comparison);
    }
    let _ = writeln!(
        out,
        "\n## Summary line\n\n```text\n{}\n```",
        report.summary_line()
    );
    out
}

/// The relay runs, and what the server spent per delivery in the system for comparison.
fn render_relay(out: &mut String, report: &Report) {
    out.push_str("\n## Relay ceiling\n\n");
    out.push_str(
        "A durable pull consumer relays each message to another subject with a `Nats-Msg-Id`, \
         awaits the publish ack, then acks the input, with the workers' batch and in-flight \
         settings, on the same server. R is the mean of the runs.\n\n",
    );
    out.push_str(
        "| run | messages | bytes each | seconds | messages per second | nats-server CPU µs \
         per message | relay CPU µs per message |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for (n, run) in report.relay.iter().enumerate() {
        let micros = |name| micros_per_message(report.relay_usage.get(n), name, run.messages);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} |",
            n + 1,
            run.messages,
            run.payload_bytes,
            run.elapsed.as_secs_f64(),
            run.per_second,
            cell(micros("nats-server"), 1),
            cell(micros(SELF_NAME), 1)
        );
    }
    if let Some(max1) = &report.max1
        && let (Some(server), true) = (max1.usage.get("nats-server"), max1.total_deliveries() > 0)
    {
        let _ = writeln!(
            out,
            "\nFor comparison, at the maximum rate with one replica nats-server used {:.1} µs \
             of CPU per service delivery ({} deliveries).",
            server.cpu_seconds * 1e6 / max1.total_deliveries() as f64,
            max1.total_deliveries()
        );
    }
}

/// CPU µs per message of the process `name` over a run of `messages` messages, from what each
/// process did during the run.
fn micros_per_message(
    usage: Option<&BTreeMap<String, Usage>>,
    name: &str,
    messages: u64,
) -> Option<f64> {
    usage
        .and_then(|u| u.get(name))
        .filter(|_| messages > 0)
        .map(|u| u.cpu_seconds * 1e6 / messages as f64)
}

fn render_phase(out: &mut String, name: &str, phase: &Phase) {
    let o = &phase.outcome;
    let _ = writeln!(out, "\n## Sagas: {name}\n");
    let _ = writeln!(
        out,
        "- sagas: {} started, {} completed, {} failed, {} unfinished; {} publish errors",
        o.started,
        o.captured,
        o.failed(),
        o.unfinished,
        o.publish_errors
    );
    let _ = writeln!(
        out,
        "- {:.2} s from the first request to the last event: {:.1} sagas per second \
         (steady state, 10th to 90th percentile completion: {} per second)",
        o.elapsed.as_secs_f64(),
        o.per_second(),
        cell(o.steady_per_second, 1)
    );
    let notes: Vec<String> = o
        .notifications
        .iter()
        .map(|(n, sagas)| format!("{n} notifications: {sagas} sagas"))
        .collect();
    let _ = writeln!(
        out,
        "- notifications per completed saga: {}",
        notes.join(", ")
    );
    let _ = writeln!(
        out,
        "- consumers empty at the end: {}",
        if o.quiet { "yes" } else { "no" }
    );
    for (why, count) in &o.failures {
        let _ = writeln!(out, "- failed: {count} x {why}");
    }
    render_deliveries(out, phase);
    if let Some(s) = Summary::of(&o.confirm_ms) {
        let _ = writeln!(
            out,
            "\nUnder this load, request -> confirmed: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.",
            s.p50, s.p99, s.max
        );
    }
}

/// The deliveries of a phase per consumer, beside what the workers counted.
fn render_deliveries(out: &mut String, phase: &Phase) {
    let o = &phase.outcome;
    if !phase.deliveries.is_empty() {
        out.push_str(
            "\nDeliveries are the server's count (consumer sequence); the other columns are what \
             the workers count (the runtime's metrics, all replicas): inputs applied, inputs \
             already applied (inbox hits), deliveries after the first, transient failures, and \
             inputs applied per write transaction (group commit).\n\n",
        );
        out.push_str(
            "| consumer | deliveries | per saga | handled | duplicates | redelivered | failed | \
             per batch |\n",
        );
        out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
        let sagas = o.started.max(1) as f64;
        let count = |service: Option<&Service>, name: &str| match service {
            Some(service) => phase
                .worker_counts
                .get(service)
                .and_then(|c| c.get(name))
                .map_or_else(|| "n/a".to_owned(), u64::to_string),
            None if phase.worker_counts.is_empty() => "n/a".to_owned(),
            None => phase.worker_total(name).to_string(),
        };
        let per_batch = |service: Option<&Service>| {
            let (handled, batches) = match service {
                Some(service) => {
                    let counts = phase.worker_counts.get(service);
                    let get = |name| counts.and_then(|c| c.get(name)).copied().unwrap_or(0);
                    (get("handled"), get("batches"))
                }
                None => (phase.worker_total("handled"), phase.worker_total("batches")),
            };
            cell((batches > 0).then(|| handled as f64 / batches as f64), 1)
        };
        let columns = |service: Option<&Service>| {
            let mut cells = ["handled", "duplicates", "redelivered", "failed"]
                .map(|name| count(service, name))
                .to_vec();
            cells.push(per_batch(service));
            cells.join(" | ")
        };
        for (service, delivered) in &phase.deliveries {
            let _ = writeln!(
                out,
                "| {} | {delivered} | {:.2} | {} |",
                service.consumer_name(),
                *delivered as f64 / sagas,
                columns(Some(service))
            );
        }
        let _ = writeln!(
            out,
            "| all | {} | {} | {} |",
            phase.total_deliveries(),
            cell(phase.deliveries_per_saga(), 2),
            columns(None)
        );
    }
}

/// The block of `BENCHMARKS.md` with the latest figures.
pub fn latest_block(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{BLOCK_BEGIN}");
    let _ = writeln!(
        out,
        "Latest run: {} with `{}` on {} (load average {} before, {} after); {} ({}). Full \
         report: [`{}`]({}).\n",
        report.started_at,
        report.command,
        report.machine,
        report.load.0,
        report.load.1,
        report.nats_version,
        report.revision,
        report.report_path,
        report.report_path
    );
    out.push_str(&headline(report));
    let lines = dominance(report);
    if !lines.is_empty() {
        out.push_str("\nWhere the CPU went at the maximum rate (1 replica):\n\n");
        for line in lines {
            let _ = writeln!(out, "- {line}");
        }
    }
    if !report.problems.is_empty() {
        out.push_str("\nProblems in this run:\n\n");
        for problem in &report.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    let _ = writeln!(out, "\n```text\n{}\n```", report.summary_line());
    let _ = writeln!(out, "{BLOCK_END}");
    out
}

/// `document` with its latest-figures block replaced by `block` (appended when it has none).
pub fn replace_block(document: &str, block: &str) -> String {
    if let (Some(begin), Some(end)) = (document.find(BLOCK_BEGIN), document.find(BLOCK_END))
        && begin < end
    {
        let after = &document[end + BLOCK_END.len()..];
        let after = after.strip_prefix('\n').unwrap_or(after);
        return format!("{}{block}{after}", &document[..begin]);
    }
    let mut out = document.trim_end().to_owned();
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(block);
    out
}

/// A latency phase: its spans and its hops.
fn render_latency(out: &mut String, title: &str, rate: f64, phase: &Phase, hops: &[hops::Hop]) {
    let _ = writeln!(
        out,
        "\n## {title}\n\nOpen loop: {rate:.1} sagas started per second whatever happens ({} \
         starts skipped at the in-flight cap). Times are from just before the command is \
         published to the event's arrival at the generator.\n",
        phase.outcome.skipped_starts
    );
    out.push_str("| span | samples | p50 ms | p99 ms | max ms | mean ms |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    let spans = [
        ("request -> confirmed", &phase.outcome.confirm_ms),
        ("complete -> captured", &phase.outcome.capture_ms),
        ("request -> captured", &phase.outcome.saga_ms),
    ];
    for (name, samples) in spans {
        out.push_str(&latency_row(name, Summary::of(samples)));
    }
    if !hops.is_empty() {
        out.push_str(
            "\nHop by hop, from the saga stream: the time the server stored each message minus \
             the time it stored the message that caused it (both on the server's clock), by the \
             service that published it. A hop includes the delivery to the service, its \
             transaction and its publish.\n\n",
        );
        out.push_str(&hops::table(hops));
    }
}

#[cfg(test)]
mod tests;
