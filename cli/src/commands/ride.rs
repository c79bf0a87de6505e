//! `ridectl ride ...`: request, cancel, start and complete rides and report a driver's arrival
//! (optionally following the saga until it comes to rest), and show a ride rebuilt from the
//! stream.

use anyhow::bail;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::Stream as JsStream;
use ridesaga_schemas::money;
use ridesaga_schemas::{
    ArriveRide, CancelRide, CompleteRide, Envelope, Message, MessageId, MessageKind, RequestRide,
    RideId, RideState, StartRide, saga_filter, subject_for,
};

use super::Ctx;
use super::driver::Published;
use super::follow::{follow_ride, saga_json};
use crate::cli::{RideCommand, ShowArgs, WaitArgs};
use crate::exit::{HintExt, UnexpectedState};
use crate::nats::{Nats, has_subject, scan_steps};
use crate::output::{Paint, Table, format_time};
use crate::saga::{Goal, Rest, Saga, SagaState};

pub async fn run(ctx: &Ctx, command: RideCommand) -> anyhow::Result<()> {
    match command {
        RideCommand::Request(args) => {
            let ride = args.id.clone().unwrap_or_else(RideId::generate);
            let message = RequestRide {
                rider_id: args.rider,
                pickup: args.from,
                dropoff: args.to,
                payment_token: args.card,
            };
            let mut envelope = Envelope::new(message, Some(ride.clone()), "ridectl");
            if args.id.is_some() {
                // The same --id is the same command: the stream's duplicate window drops a retry.
                envelope.id = MessageId::derive_from_key(&format!("request/{ride}"));
                envelope.correlation_id = envelope.id.to_string();
            }
            send(ctx, &ride, envelope, Goal::Request, &args.wait, false).await
        }
        RideCommand::Cancel(args) => {
            let envelope = Envelope::new(CancelRide {}, Some(args.ride.clone()), "ridectl");
            send(ctx, &args.ride, envelope, Goal::Cancel, &args.wait, true).await
        }
        RideCommand::Arrive(args) => {
            let envelope = Envelope::new(ArriveRide {}, Some(args.ride.clone()), "ridectl");
            send(ctx, &args.ride, envelope, Goal::Arrive, &args.wait, true).await
        }
        RideCommand::Start(args) => {
            let envelope = Envelope::new(StartRide {}, Some(args.ride.clone()), "ridectl");
            send(ctx, &args.ride, envelope, Goal::Start, &args.wait, true).await
        }
        RideCommand::Complete(args) => {
            let message = CompleteRide {
                distance_km: args.distance_km,
                duration_min: args.duration_min,
            };
            let envelope = Envelope::new(message, Some(args.ride.clone()), "ridectl");
            send(ctx, &args.ride, envelope, Goal::Complete, &args.wait, true).await
        }
        RideCommand::Refund(args) => super::refund::run(ctx, args).await,
        RideCommand::Show(args) => show(ctx, args).await,
        RideCommand::Track(args) => super::track::run(ctx, args).await,
    }
}

/// Fails unless the stream holds the ride's request (command or event).
pub async fn ensure_ride_exists(stream: &JsStream, ride: &RideId) -> anyhow::Result<()> {
    let event = subject_for(MessageKind::RideRequested, ride.as_str());
    let command = subject_for(MessageKind::RequestRide, ride.as_str());
    if has_subject(stream, &event).await? || has_subject(stream, &command).await? {
        return Ok(());
    }
    Err(anyhow::anyhow!(
        "ride {ride} does not exist: the stream holds neither {command} nor {event}"
    ))
    .hint("list known rides with `ridectl saga list`")
}

async fn send(
    ctx: &Ctx,
    ride: &RideId,
    envelope: Envelope,
    goal: Goal,
    wait: &WaitArgs,
    must_exist: bool,
) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    if must_exist {
        ensure_ride_exists(&stream, ride).await?;
    }
    let ack = nats.publish(&envelope).await?;
    if ack.duplicate {
        crate::output::note(format!(
            "{} was already stored (same message id {}); the stream dropped this copy",
            envelope.subject(),
            envelope.id
        ));
    }
    if wait.enabled() {
        if !ctx.out.is_json() {
            crate::output::note(format!(
                "following ride {ride} (ctrl-c stops following, not the saga)"
            ));
        }
        return follow_ride(ctx, &stream, ride, &envelope.id, ack.sequence, goal, wait).await;
    }
    print_sent(ctx, ride, &envelope, &ack)
}

fn print_sent(
    ctx: &Ctx,
    ride: &RideId,
    envelope: &Envelope,
    ack: &async_nats::jetstream::publish::PublishAck,
) -> anyhow::Result<()> {
    if ctx.out.is_json() {
        let mut value = serde_json::to_value(Published::new(envelope, ack))?;
        value["ride_id"] = ride.to_string().into();
        return ctx.out.json(&value);
    }
    if matches!(envelope.message, Message::RequestRide(_)) {
        // Just the id on stdout, so `id=$(ridectl -o table ride request ...)` works.
        ctx.out.line(ride.as_str());
        crate::output::note(format!(
            "published {} (stream seq {}); follow it with `ridectl saga trace {ride}`",
            envelope.subject(),
            ack.sequence
        ));
    } else {
        ctx.out.line(format!(
            "published {} (stream seq {})",
            envelope.subject(),
            ack.sequence
        ));
    }
    Ok(())
}

/// Reads one ride's whole saga from the stream.
pub async fn load_saga(
    nats: &Nats,
    ride: &RideId,
) -> anyhow::Result<(Saga, Vec<crate::saga::Step>)> {
    let stream = nats.saga_stream().await?;
    ensure_ride_exists(&stream, ride).await?;
    let steps = scan_steps(&stream, &[saga_filter(ride.as_str())], DeliverPolicy::All).await?;
    Ok((Saga::fold(ride.as_str(), &steps), steps))
}

async fn show(ctx: &Ctx, args: ShowArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let (saga, _) = load_saga(&nats, &args.ride).await?;
    let effects = super::effects::of_ride(&nats, &args.ride).await;
    if ctx.out.is_json() {
        let mut value = saga_json(&saga, &Rest::State);
        value["pending_effects"] = serde_json::to_value(&effects.pending)?;
        ctx.out.json(&value)?;
    } else {
        print_saga(ctx, &saga, &effects);
    }
    if let Some(expect) = &args.expect
        && !expect.matches(&saga, &Rest::State)
    {
        bail!(UnexpectedState {
            ride: saga.ride_id.clone(),
            expected: expect.to_string(),
            actual: saga.label(),
        });
    }
    Ok(())
}

/// The ride as a two-column table, with the calls to the outside world still pending.
pub fn print_saga(ctx: &Ctx, saga: &Saga, effects: &super::effects::Effects) {
    let out = &ctx.out;
    let state = out.paint(state_paint(saga.state), saga.state.as_str());
    let dash = || "-".to_string();
    let mut table = Table::new(["FIELD", "VALUE"]);
    table.row(["ride".to_string(), saga.ride_id.clone()]);
    table.row(["state".to_string(), state]);
    table.row([
        "reason".to_string(),
        saga.reason.clone().unwrap_or_else(dash),
    ]);
    table.row([
        "rider".to_string(),
        saga.rider_id.clone().unwrap_or_else(dash),
    ]);
    let driver = match (&saga.driver_id, &saga.driver_name) {
        (Some(id), Some(name)) => format!("{id} ({name})"),
        (Some(id), None) => id.clone(),
        _ => dash(),
    };
    let driver = if saga.driver_released {
        format!("{driver}, released")
    } else {
        driver
    };
    table.row(["driver".to_string(), driver]);
    let cents = |c: Option<u64>| c.map_or_else(dash, money::format);
    table.row([
        "estimated fare".to_string(),
        cents(saga.estimated_fare_cents),
    ]);
    table.row(["fare".to_string(), cents(saga.fare_cents)]);
    if let Some(fare) = &saga.fare {
        let mut parts = format!(
            "base {} + distance {} + time {}",
            money::format(fare.base_cents),
            money::format(fare.distance_cents),
            money::format(fare.time_cents)
        );
        if fare.surge_cents > 0 {
            parts.push_str(&format!(" + surge {}", money::format(fare.surge_cents)));
        }
        table.row(["fare breakdown".to_string(), parts]);
    }
    if let Some(driver) = &saga.earning_driver {
        table.row([
            "earnings".to_string(),
            format!(
                "{driver} {} + commission {}",
                money::format(saga.driver_earned_cents),
                money::format(saga.commission_cents)
            ),
        ]);
    }
    for refund in &saga.refunds {
        let amount = refund
            .amount_cents
            .map_or_else(|| "the rest".to_string(), money::format);
        let value = match (refund.outcome.as_str(), &refund.reason) {
            ("refunded", _) => format!("{} {amount} refunded", refund.refund_id),
            (code, Some(reason)) => {
                format!("{} {amount} refused ({code}): {reason}", refund.refund_id)
            }
            (code, None) => format!("{} {amount} refused ({code})", refund.refund_id),
        };
        table.row(["refund".to_string(), value]);
    }
    if let (Some(km), Some(source)) = (saga.distance_km, &saga.distance_source) {
        let points = saga.route_points.unwrap_or(0);
        table.row([
            "distance".to_string(),
            format!("{km:.2} km ({source}, {points} positions)"),
        ]);
    }
    table.row(["held".to_string(), money::format(saga.held_cents)]);
    table.row(["captured".to_string(), money::format(saga.captured_cents)]);
    table.row(["voided".to_string(), money::format(saga.voided_cents)]);
    if saga.refunded_cents > 0 {
        table.row(["refunded".to_string(), money::format(saga.refunded_cents)]);
    }
    if let Some(error) = &saga.capture_failed {
        table.row(["capture failed".to_string(), out.paint(Paint::Red, error)]);
    }
    for refusal in &saga.refusals {
        table.row([
            "refused".to_string(),
            format!("{}: {}", refusal.command, refusal.reason),
        ]);
    }
    let time = |t: Option<time::OffsetDateTime>| t.map_or_else(dash, format_time);
    table.row(["first step".to_string(), time(saga.first_at)]);
    table.row(["last step".to_string(), time(saga.last_at)]);
    if saga.driver_arrived {
        table.row(["driver arrived".to_string(), "yes".to_string()]);
    }
    table.row(["deadline".to_string(), time(saga.deadline)]);
    table.row(["steps".to_string(), saga.steps.to_string()]);
    super::effects::rows(effects, &mut table);
    out.table(&table);
}

/// Green when it ended well, red when it ended otherwise, yellow while running.
pub fn state_paint(state: SagaState) -> Paint {
    match state {
        SagaState::Ride(RideState::Completed | RideState::Confirmed | RideState::Started) => {
            Paint::Green
        }
        SagaState::Ride(RideState::Cancelled | RideState::Rejected) | SagaState::Expired => {
            Paint::Red
        }
        _ => Paint::Yellow,
    }
}
