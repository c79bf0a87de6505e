//! `ridectl ride ...`: request, cancel, start and complete rides and report a driver's arrival
//! (optionally following the saga until it comes to rest), and show a ride rebuilt from the
//! stream.

use anyhow::bail;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::stream::Stream as JsStream;
use ridesaga_schemas::{
    ArriveRide, CancelRide, CompleteRide, Envelope, Message, MessageId, MessageKind, RequestRide,
    RideId, StartRide, saga_filter, subject_for,
};

use super::Ctx;
use super::driver::Published;
use super::follow::follow_ride;
use super::render::{print_saga, saga_json};
use crate::cli::{RideCommand, ShowArgs, WaitArgs};
use crate::exit::{HintExt, UnexpectedState};
use crate::nats::{Nats, has_subject, scan_steps};
use crate::saga::{Goal, Rest, Saga};

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
