//! `--wait`: follows one ride's saga live after a command, one line per step as it is stored,
//! until the saga comes to rest (see [`crate::saga::rest`]), then checks `--expect`.
//!
//! The feed is an ordered consumer filtered on the ride (`*.*.*.<ride>`) from the ride's first
//! message, so the state before the command is folded too and no step can be missed; only
//! steps from the command's stream sequence on are printed.

use anyhow::anyhow;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::Stream as JsStream;
use ridesaga_schemas::{MessageId, RideId, saga_filter};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};

use super::Ctx;
use super::render::{print_saga, saga_json, state_paint};
use crate::cli::WaitArgs;
use crate::exit::{HintExt, TimedOut, UnexpectedState};
use crate::nats::follow;
use crate::output::{Out, Paint, format_clock};
use crate::saga::describe::{is_compensation, summary};
use crate::saga::rest::{at_rest, outcome_label};
use crate::saga::{Goal, Rest, Saga, SagaState, Step};
use ridesaga_schemas::duration::format_duration;

pub async fn follow_ride(
    ctx: &Ctx,
    stream: &JsStream,
    ride: &RideId,
    command_id: &MessageId,
    from_seq: u64,
    goal: Goal,
    wait: &WaitArgs,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait.timeout;
    let mut feed = follow(stream, &[saga_filter(ride.as_str())], DeliverPolicy::All).await?;
    let mut saga = Saga::new(ride.as_str());
    let mut previous: Option<OffsetDateTime> = None;
    let rest = loop {
        let record = match timeout_at(deadline, feed.next()).await {
            Ok(record) => record?,
            Err(_) => {
                return Err(TimedOut {
                    waiting_for: format!("ride {ride} to come to rest"),
                    after: wait.timeout,
                    last_seen: format!("last state: {}", saga.label()),
                })
                .hint(format!(
                    "are the workers running (`ridectl services`)? The timeline so far: \
                     `ridectl saga trace {ride}`"
                ));
            }
        };
        let record = record.ok_or_else(|| anyhow!("the stream feed ended"))?;
        let Some(step) = record.step() else { continue };
        let before = saga.state;
        saga.apply(&step);
        if step.seq >= from_seq {
            print_live(&ctx.out, &step, previous, before);
        }
        previous = Some(step.time);
        if step.seq >= from_seq
            && let Some(rest) = at_rest(&saga, goal, command_id)
        {
            break rest;
        }
    };
    if ctx.out.is_json() {
        ctx.out.json(&saga_json(&saga, &rest))?;
    } else {
        print_saga(ctx, &saga, &super::effects::Effects::default());
    }
    let outcome = outcome_label(&saga, &rest);
    if let Some(expect) = &wait.expect {
        if !expect.matches(&saga, &rest) {
            return Err(UnexpectedState {
                ride: ride.to_string(),
                expected: expect.to_string(),
                actual: outcome,
            })
            .hint(format!("see every step with `ridectl saga trace {ride}`"));
        }
    } else if let Rest::Refused(refusal) = &rest {
        anyhow::bail!(
            "the ride service refused {} for ride {ride}: {}",
            refusal.command,
            refusal.reason
        );
    }
    Ok(())
}

/// One step as it happens: on stdout for tables, on stderr when stdout carries JSON.
fn print_live(out: &Out, step: &Step, previous: Option<OffsetDateTime>, before: SagaState) {
    let line = step_line(out, step, previous, before);
    if out.is_json() {
        crate::output::note(line);
    } else {
        out.line(line);
    }
}

/// `20:34:01.123  +12ms  evt.fraud.cleared.r_1  fraud  score 0`.
pub fn step_line(
    out: &Out,
    step: &Step,
    previous: Option<OffsetDateTime>,
    before: SagaState,
) -> String {
    let delta = previous
        .and_then(|p| std::time::Duration::try_from(step.time - p).ok())
        .map_or_else(|| "".to_string(), |d| format!("+{}", format_duration(d)));
    let subject = step.envelope.subject();
    let compensation = is_compensation(step.kind(), before);
    let subject = if compensation {
        out.paint(Paint::Yellow, &format!("{subject} (compensation)"))
    } else {
        subject
    };
    let text = summary(&step.envelope.message);
    let text = match &step.envelope.message {
        ridesaga_schemas::Message::RideConfirmed(_)
        | ridesaga_schemas::Message::RideCompleted(_)
        | ridesaga_schemas::Message::RideCancelled(_)
        | ridesaga_schemas::Message::RideRejected(_) => {
            let state = Saga::fold("", [step]).state;
            out.paint(state_paint(state), &text)
        }
        _ => text,
    };
    format!(
        "{}  {:>8}  {}  {}  {}",
        format_clock(step.time),
        delta,
        subject,
        step.envelope.producer,
        text
    )
}
