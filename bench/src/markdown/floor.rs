//! The report's section on the runtime's floor, and what it bounds.

use std::fmt::Write as _;

use super::*;

/// Sequential hops from a ride request to its confirmation: ride, fraud, driver, payment, ride.
const HOPS_TO_CONFIRMED: f64 = 5.0;

pub(super) fn render_floor(out: &mut String, report: &Report) {
    if report.floor.is_empty() {
        return;
    }
    out.push_str("\n## Runtime floor\n\n");
    let _ = write!(
        out,
        "The workers' runtime relays each message around a service that does nothing: decoded, \
         recorded in the inbox and its one output stored in the outbox in one {} \
         transaction (batched as the workers batch), the output published with its \
         `Nats-Msg-Id` after the commit, the input acked last. Same server, same settings; F \
         is the first run.\n\n",
        match report.db {
            Db::Sqlite => "SQLite",
            Db::Postgres => "PostgreSQL",
        }
    );
    out.push_str(
        "| run | in flight | messages | seconds | messages per second | ms per message | \
         nats-server CPU µs per message | runtime CPU µs per message |\n",
    );
    out.push_str("| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for (n, run) in report.floor.iter().enumerate() {
        let micros = |name| micros_per_message(report.floor_usage.get(n), name, run.messages);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.0} | {:.3} | {} | {} |",
            n + 1,
            run.max_in_flight,
            run.messages,
            run.elapsed.as_secs_f64(),
            run.per_second,
            run.ms_per_message(),
            cell(micros("nats-server"), 1),
            cell(micros(SELF_NAME), 1)
        );
    }
    let d = report.max1.as_ref().and_then(Phase::deliveries_per_saga);
    if let (Some(floor), Some(relay), Some(d)) =
        (report.floor_per_second(), report.relay_per_second(), d)
        && relay > 0.0
        && d > 0.0
    {
        let _ = writeln!(
            out,
            "\nNo service on this runtime can run more than F / D = {:.0} sagas per second here: \
             {:.3} of the relay-implied ceiling R / D = {:.0}, before any service does any work \
             (the ratio's target is {TARGET_RATIO}).",
            floor / d,
            floor / relay,
            relay / d
        );
    }
    if let Some(ratio) = report.floor_ratio() {
        let _ = writeln!(
            out,
            "The services reach S / (F / D) = {ratio:.3} of that: the rest is their own work."
        );
    }
    if let Some(serial) = report.floor.iter().find(|run| run.max_in_flight == 1) {
        let hop = serial.ms_per_message();
        let _ = writeln!(
            out,
            "With one message in flight a message took {hop:.3} ms from delivery to ack, the \
             least a hop takes on this runtime: request -> confirmed is {HOPS_TO_CONFIRMED:.0} \
             hops in a row, so at least {:.2} ms before any service works or waits in a queue \
             (the p50 target is {TARGET_P50_CONFIRM_MS} ms).",
            hop * HOPS_TO_CONFIRMED
        );
    }
}
