//! `ridectl audit`: replays the whole saga stream and checks the invariants of docs/design.md;
//! exits 0 only when none is violated.

use async_nats::jetstream::consumer::DeliverPolicy;
use time::OffsetDateTime;

use super::Ctx;
use crate::cli::AuditArgs;
use crate::nats::scan_steps;
use crate::output::{Paint, Table};
use crate::saga::audit::audit;
use ridesaga_schemas::duration::format_duration;

pub async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let steps = scan_steps(&stream, &[], DeliverPolicy::All).await?;
    let report = audit(&steps, OffsetDateTime::now_utc(), args.settle);
    if ctx.out.is_json() {
        ctx.out.json(&report)?;
    } else if report.violations.is_empty() {
        ctx.out.line(format!(
            "{} {} sagas checked ({} terminal, {} in flight), {} messages, no violations",
            ctx.out.paint(Paint::Green, "ok:"),
            report.sagas,
            report.terminal,
            report.in_flight,
            steps.len()
        ));
    } else {
        let mut table = Table::new(["RIDE", "INVARIANT", "VIOLATION"]);
        for v in &report.violations {
            table.row([
                v.ride_id.clone(),
                v.invariant.to_string(),
                v.message.clone(),
            ]);
        }
        ctx.out.table(&table);
    }
    if !ctx.out.is_json() && !report.held_for_review.is_empty() {
        ctx.out.line(format!(
            "{} completed rides held for review (ridectl fraud review): {}",
            report.held_for_review.len(),
            report.held_for_review.join(", ")
        ));
    }
    if report.in_flight > 0 {
        crate::output::note(format!(
            "{} sagas are not yet {} past their deadline (or, without one, idle that long): \
             only safety invariants were checked for them",
            report.in_flight,
            format_duration(args.settle)
        ));
    }
    if !report.violations.is_empty() {
        anyhow::bail!(
            "{} invariant violations in {} sagas",
            report.violations.len(),
            report.sagas
        );
    }
    Ok(())
}
