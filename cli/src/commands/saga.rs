//! `ridectl saga trace` (one ride's timeline) and `ridectl saga list` (every saga with its
//! state), both rebuilt from the stream, not from any service's database.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use ridesaga_schemas::money;
use serde::Serialize;
use time::OffsetDateTime;

use super::Ctx;
use super::render::state_paint;
use super::ride::load_saga;
use crate::cli::{ListArgs, SagaCommand, StateClass};
use crate::nats::scan_steps;
use crate::output::{Paint, Table, format_clock, format_time, rfc3339};
use crate::saga::describe::{is_compensation, summary};
use crate::saga::{Saga, Step};
use ridesaga_schemas::duration::format_duration;

pub async fn run(ctx: &Ctx, command: SagaCommand) -> anyhow::Result<()> {
    match command {
        SagaCommand::Trace { ride } => {
            let nats = ctx.connect().await?;
            let (saga, steps) = load_saga(&nats, &ride).await?;
            let effects = super::effects::of_ride(&nats, &ride).await;
            trace(ctx, &saga, &steps, &effects)
        }
        SagaCommand::List(args) => list(ctx, args).await,
    }
}

/// One step of a timeline in JSON.
#[derive(Debug, Serialize)]
struct TimelineStep<'a> {
    seq: u64,
    time: String,
    delta_ms: Option<i64>,
    subject: String,
    #[serde(rename = "type")]
    kind: &'static str,
    producer: &'a str,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    causation_id: Option<&'a str>,
    /// The `traceparent` it was published with.
    #[serde(skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    compensation: bool,
    summary: String,
    data: &'a ridesaga_schemas::Message,
}

fn trace(
    ctx: &Ctx,
    saga: &Saga,
    steps: &[Step],
    effects: &super::effects::Effects,
) -> anyhow::Result<()> {
    let deltas = steps.iter().scan(None::<OffsetDateTime>, |previous, step| {
        let delta = previous.map(|p| step.time - p);
        *previous = Some(step.time);
        Some(delta)
    });
    let trace_ids = trace_ids(steps);
    // The ride's state before each step decides whether the step compensates.
    let compensations: Vec<bool> = steps
        .iter()
        .scan(Saga::new(&saga.ride_id), |fold, step| {
            let before = fold.state;
            fold.apply(step);
            Some(is_compensation(step.kind(), before))
        })
        .collect();
    if ctx.out.is_json() {
        let timeline: Vec<TimelineStep<'_>> = steps
            .iter()
            .zip(deltas)
            .zip(&compensations)
            .map(|((step, delta), compensation)| TimelineStep {
                seq: step.seq,
                time: rfc3339(step.time),
                delta_ms: delta.map(|d| d.whole_milliseconds() as i64),
                subject: step.envelope.subject(),
                kind: step.kind().as_str(),
                producer: &step.envelope.producer,
                message_id: step.envelope.id.as_str(),
                causation_id: step.envelope.causation_id.as_ref().map(|c| c.as_str()),
                traceparent: step.trace.as_ref().map(|t| t.traceparent()),
                compensation: *compensation,
                summary: summary(&step.envelope.message),
                data: &step.envelope.message,
            })
            .collect();
        let value = serde_json::json!({
            "ride_id": saga.ride_id,
            "trace_id": trace_ids.first(),
            "trace_ids": trace_ids,
            "state": saga.state,
            "reason": saga.reason,
            "steps": timeline,
            "pending_effects": effects.pending,
        });
        return ctx.out.json(&value);
    }
    let out = &ctx.out;
    let mut table = Table::new(["SEQ", "TIME", "DELTA", "PRODUCER", "MESSAGE", "SUMMARY"]);
    for ((step, delta), compensation) in steps.iter().zip(deltas).zip(&compensations) {
        let delta = delta
            .and_then(|d| Duration::try_from(d).ok())
            .map_or_else(String::new, |d| format!("+{}", format_duration(d)));
        let kind = step.kind().as_str();
        let kind = if *compensation {
            out.paint(Paint::Yellow, &format!("{kind} [compensation]"))
        } else if step.kind().is_command() {
            out.paint(Paint::Bold, kind)
        } else {
            kind.to_string()
        };
        table.row([
            step.seq.to_string(),
            format_clock(step.time),
            delta,
            step.envelope.producer.clone(),
            kind,
            summary(&step.envelope.message),
        ]);
    }
    out.table(&table);
    let total = match (saga.first_at, saga.last_at) {
        (Some(first), Some(last)) => Duration::try_from(last - first).unwrap_or_default(),
        _ => Duration::ZERO,
    };
    out.line(format!(
        "ride {}: {} after {} steps in {}",
        saga.ride_id,
        out.paint(state_paint(saga.state), &saga.label()),
        saga.steps,
        format_duration(total)
    ));
    match trace_ids.as_slice() {
        [] => out.line("trace: none (its messages carry no trace context)"),
        [one] => out.line(format!("trace: {one}")),
        many => out.line(format!("traces: {}", many.join(", "))),
    }
    for effect in &effects.pending {
        out.line(format!(
            "pending: {}",
            out.paint(Paint::Yellow, &super::effects::describe(effect))
        ));
    }
    Ok(())
}

/// The trace ids the steps were published in, in order of first appearance.
fn trace_ids(steps: &[Step]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in steps.iter().filter_map(|s| s.trace.as_ref()) {
        let id = id.trace_id.to_hex();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    ids
}

/// Which class a saga is in for `--state`: stuck as `audit` decides it ([`Saga::is_stuck`]),
/// or idle for `stuck_after` at a service's step ([`Saga::waiting_on`]: that service is down,
/// or behind).
pub fn classify(saga: &Saga, now: OffsetDateTime, stuck_after: Duration) -> StateClass {
    if saga.state.is_terminal() {
        StateClass::Terminal
    } else if saga.is_stuck(now, stuck_after)
        || (saga.waiting_on().is_some() && saga.idle(now) >= stuck_after)
    {
        StateClass::Stuck
    } else {
        StateClass::Active
    }
}

fn class_name(class: StateClass) -> &'static str {
    match class {
        StateClass::Active => "active",
        StateClass::Stuck => "stuck",
        StateClass::Terminal => "terminal",
    }
}

async fn list(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let now = OffsetDateTime::now_utc();
    let deliver = match args.since {
        Some(since) => DeliverPolicy::ByStartTime {
            start_time: now - since,
        },
        None => DeliverPolicy::All,
    };
    // The ride's own messages, and the steps that tell which service it waits on.
    let filters = [
        "cmd.ride.request.*".to_string(),
        "evt.ride.>".to_string(),
        "evt.fraud.cleared.*".to_string(),
        "evt.driver.assigned.*".to_string(),
        "evt.payment.authorized.*".to_string(),
    ];
    let steps = scan_steps(&stream, &filters, deliver).await?;
    let sagas = fold_all(&steps);
    let rows: Vec<(&Saga, StateClass)> = sagas
        .values()
        .map(|saga| (saga, classify(saga, now, args.stuck_after)))
        .filter(|(_, class)| args.state.is_none_or(|want| want == *class))
        .collect();
    if ctx.out.is_json() {
        let values: Vec<serde_json::Value> = rows
            .iter()
            .map(|(saga, class)| {
                let mut value = serde_json::to_value(saga).unwrap_or_default();
                value["class"] = class_name(*class).into();
                value["idle_ms"] = (saga.idle(now).as_millis() as u64).into();
                value["waiting_on"] = saga.waiting_on().into();
                value
            })
            .collect();
        return ctx.out.json(&values);
    }
    let out = &ctx.out;
    let mut table = Table::new([
        "RIDE",
        "STATE",
        "WAITING ON",
        "REASON",
        "RIDER",
        "DRIVER",
        "FARE",
        "LAST",
        "IDLE",
    ]);
    for (saga, class) in &rows {
        let state = match class {
            StateClass::Stuck => out.paint(Paint::Red, &format!("{} (stuck)", saga.state)),
            _ => out.paint(state_paint(saga.state), saga.state.as_str()),
        };
        let fare = saga.fare_cents.or(saga.estimated_fare_cents);
        table.row([
            saga.ride_id.clone(),
            state,
            saga.waiting_on().unwrap_or_default().to_owned(),
            saga.reason.clone().unwrap_or_default(),
            saga.rider_id.clone().unwrap_or_default(),
            saga.driver_id.clone().unwrap_or_default(),
            fare.map(money::format).unwrap_or_default(),
            saga.last_at.map(format_time).unwrap_or_default(),
            format_duration(saga.idle(now)),
        ]);
    }
    if table.is_empty() {
        crate::output::note("no sagas match");
    } else {
        out.table(&table);
    }
    Ok(())
}

/// Folds steps of many rides into one saga per ride, in order of first appearance.
pub fn fold_all(steps: &[Step]) -> BTreeMap<(u64, String), Saga> {
    let mut by_ride: BTreeMap<String, Saga> = BTreeMap::new();
    for step in steps {
        if let Some(ride) = step.ride() {
            by_ride
                .entry(ride.to_owned())
                .or_insert_with(|| Saga::new(ride))
                .apply(step);
        }
    }
    by_ride
        .into_values()
        .filter(|saga| saga.state != crate::saga::SagaState::Unknown)
        .map(|saga| ((saga.first_seq, saga.ride_id.clone()), saga))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::fixtures::Log;

    #[test]
    fn a_ride_idle_at_a_services_step_is_listed_as_stuck_waiting_on_that_service() {
        let mut log = Log::new("r_1");
        log.requested();
        let stuck_after = Duration::from_secs(5);
        let idle = |saga: &Saga, seconds| saga.last_at.unwrap() + time::Duration::seconds(seconds);
        let mut seen = Vec::new();
        for step in 0..4 {
            match step {
                1 => {
                    log.cleared();
                }
                2 => {
                    log.assigned("d_1");
                }
                3 => {
                    log.authorized(1200);
                }
                _ => {}
            }
            let saga = log.saga();
            assert_eq!(
                classify(&saga, idle(&saga, 1), stuck_after),
                StateClass::Active
            );
            assert_eq!(
                classify(&saga, idle(&saga, 6), stuck_after),
                StateClass::Stuck
            );
            seen.push(saga.waiting_on());
        }
        assert_eq!(
            seen,
            [Some("fraud"), Some("driver"), Some("payment"), Some("ride")]
        );
        // Confirmed: the driver and the rider act next, within the pickup deadline.
        log.confirmed("d_1");
        let saga = log.saga();
        assert_eq!(saga.waiting_on(), None);
        assert_eq!(
            classify(&saga, idle(&saga, 60), stuck_after),
            StateClass::Active
        );
    }

    #[test]
    fn a_confirmed_ride_is_listed_as_stuck_only_past_its_pickup_deadline() {
        let mut log = Log::new("r_1");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        let saga = log.saga();
        let confirmed_at = saga.last_at.unwrap();
        let stuck_after = Duration::from_secs(120);
        let at = |minutes| confirmed_at + time::Duration::minutes(minutes);
        assert_eq!(classify(&saga, at(5), stuck_after), StateClass::Active);
        assert_eq!(classify(&saga, at(23), stuck_after), StateClass::Stuck);
        log.cancelled(ridesaga_schemas::CancelReason::DriverNoShow, Some("d_1"));
        assert_eq!(
            classify(&log.saga(), at(23), stuck_after),
            StateClass::Terminal
        );
    }
}
