//! `ridectl driver ...`, `ridectl rider ...` and `ridectl fraud ...`: commands about drivers and
//! riders, not rides.
//! With `--wait`, returns once the owning service stored its update event
//! (`evt.driver.updated.<id>`, `evt.fraud.blocklist.<id>`) after the command.

use async_nats::jetstream::{consumer::DeliverPolicy, publish::PublishAck};
use ridesaga_schemas::{
    BlockRider, DriverOffline, DriverOnline, Envelope, MessageKind, MoveDriver, RegisterDriver,
    RegisterRider, ReviewDecision, UnblockRider, subject_for,
};
use serde::Serialize;
use tokio::time::timeout;

use super::Ctx;
use crate::cli::{DriverCommand, DriverWaitArgs, FraudCommand, RiderCommand};
use crate::exit::{HintExt, TimedOut};
use crate::nats::follow;
use crate::saga::describe::summary;

pub async fn run(ctx: &Ctx, command: DriverCommand) -> anyhow::Result<()> {
    let (envelope, wait) = match command {
        DriverCommand::Position { id, at, file } => {
            return super::position::run(ctx, id, at, file).await;
        }
        DriverCommand::Earnings { id, since, until } => {
            return super::earnings::run(ctx, id, since, until).await;
        }
        DriverCommand::Statement { id, date } => {
            return super::earnings::run_daily(ctx, id, date).await;
        }
        DriverCommand::Schedule(command) => return super::schedule::run(ctx, command).await,
        DriverCommand::Show { id } => return super::schedule::show_driver(ctx, &id).await,
        DriverCommand::Register {
            id,
            name,
            at,
            contact,
            wait,
        } => {
            let message = RegisterDriver {
                driver_id: id,
                name,
                location: at,
                email: contact.email,
                phone: contact.phone,
            };
            (Envelope::new(message, None, "ridectl"), wait)
        }
        DriverCommand::Online { id, at, wait } => {
            let message = DriverOnline {
                driver_id: id,
                location: at,
            };
            (Envelope::new(message, None, "ridectl"), wait)
        }
        DriverCommand::Offline { id, wait } => (
            Envelope::new(DriverOffline { driver_id: id }, None, "ridectl"),
            wait,
        ),
        DriverCommand::Move { id, at, wait } => {
            let message = MoveDriver {
                driver_id: id,
                location: at,
            };
            (Envelope::new(message, None, "ridectl"), wait)
        }
    };
    send(ctx, envelope, MessageKind::DriverUpdated, &wait).await
}

pub async fn run_fraud(ctx: &Ctx, command: FraudCommand) -> anyhow::Result<()> {
    let (envelope, wait) = match command {
        FraudCommand::Block {
            rider,
            reason,
            wait,
        } => {
            let message = BlockRider {
                rider_id: rider,
                reason,
            };
            (Envelope::new(message, None, "ridectl"), wait)
        }
        FraudCommand::Unblock { rider, wait } => (
            Envelope::new(UnblockRider { rider_id: rider }, None, "ridectl"),
            wait,
        ),
        FraudCommand::Review {
            ride,
            approve,
            reject: _,
            note,
            all,
            wait,
        } => {
            let decision = approve.then_some(ReviewDecision::Approve);
            return super::review::run(ctx, ride, decision, note, all, wait).await;
        }
    };
    send(ctx, envelope, MessageKind::RiderBlockChanged, &wait).await
}

/// `ridectl rider register`: publishes the registration, which the notification service
/// records; nothing answers it on the bus.
pub async fn run_rider(ctx: &Ctx, command: RiderCommand) -> anyhow::Result<()> {
    let RiderCommand::Register { id, contact } = command;
    let message = RegisterRider {
        rider_id: id,
        email: contact.email,
        phone: contact.phone,
    };
    let wait = DriverWaitArgs {
        wait: false,
        timeout: std::time::Duration::ZERO,
    };
    // Not waited for, so the kind of the update is never looked at.
    send(
        ctx,
        Envelope::new(message, None, "ridectl"),
        MessageKind::RegisterRider,
        &wait,
    )
    .await
}

/// What a published command looks like in JSON output.
#[derive(Debug, Serialize)]
pub struct Published<'a> {
    pub subject: String,
    pub message_id: &'a str,
    pub stream_sequence: u64,
    pub duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
}

impl<'a> Published<'a> {
    pub fn new(envelope: &'a Envelope, ack: &PublishAck) -> Self {
        Published {
            subject: envelope.subject(),
            message_id: envelope.id.as_str(),
            stream_sequence: ack.sequence,
            duplicate: ack.duplicate,
            applied: None,
        }
    }
}

pub(super) async fn send(
    ctx: &Ctx,
    envelope: Envelope,
    update: MessageKind,
    wait: &DriverWaitArgs,
) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let ack = nats.publish(&envelope).await?;
    let mut published = Published::new(&envelope, &ack);
    if wait.wait {
        let subject = subject_for(update, envelope.subject_id());
        published.applied = Some(await_update(&stream, &subject, ack.sequence, wait).await?);
    }
    if ctx.out.is_json() {
        ctx.out.json(&published)?;
    } else {
        let dup = if ack.duplicate {
            " (duplicate, dropped)"
        } else {
            ""
        };
        ctx.out.line(format!(
            "published {} (stream seq {}){dup}",
            published.subject, ack.sequence
        ));
        if let Some(applied) = &published.applied {
            ctx.out.line(format!("applied: {applied}"));
        }
    }
    Ok(())
}

/// Waits for the first message on `subject` stored after `after`; returns its summary.
async fn await_update(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
    after: u64,
    wait: &DriverWaitArgs,
) -> anyhow::Result<String> {
    let deliver = DeliverPolicy::ByStartSequence {
        start_sequence: after + 1,
    };
    let mut feed = follow(stream, &[subject.to_owned()], deliver).await?;
    let next = async {
        while let Some(record) = feed.next().await? {
            if let Some(step) = record.step() {
                return Ok(summary(&step.envelope.message));
            }
        }
        anyhow::bail!("the stream feed ended before {subject} arrived")
    };
    match timeout(wait.timeout, next).await {
        Ok(result) => result,
        Err(_) => Err(TimedOut {
            waiting_for: subject.to_owned(),
            after: wait.timeout,
            last_seen: "the command is stored but no service applied it".into(),
        })
        .hint("are the workers running? Check with `ridectl services`"),
    }
}
