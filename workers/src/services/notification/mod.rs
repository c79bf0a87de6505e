//! The notification service: tells riders and drivers what matters about their ride, each
//! (ride, kind, recipient) exactly once, and announces every notification delivered with
//! `evt.notification.sent` so the event log can audit it.
//!
//! Each notification the domain calls for that the ride's record does not show is recorded
//! as due, in the input's transaction (the batch's: the records load and save once per batch,
//! under the one writer's lock, and UNIQUE (ride, kind, recipient) backs them), together with
//! an [`Effect`] the runtime records beside it. No channel is called there. After the commit
//! the runtime performs the effect ([`Worker::perform`]: the channel delivers it) and settles
//! its outcome ([`Worker::settle`]): a delivery marks the record delivered and emits the
//! event, whose id derives from the effect's, so settling twice emits one message; a delivery
//! refused for good, or not made before its deadline, marks it failed and warns, and no event
//! says it was sent. See [`channel`] for why delivery is at least once while the record and
//! the event are exactly once.
//!
//! # Layout
//! - [`domain`]: which notifications the events call for.
//! - [`channel`]: the channel trait and the JSON-lines log channel.
//! - [`store`]: the `notification_rides` and `notifications` tables.
//! - this file: the [`Worker`].

pub mod channel;
pub mod domain;
pub mod store;

use ridesaga_schemas::{Envelope, MessageId, NotificationSent, RideId, Service, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tracing::{debug, warn};

use self::channel::{Channel, Delivery, LogChannel};
use self::domain::{Audience, Notice};
use self::store::Status;
use super::rides::Rides;
use crate::config::{ConfigError, Settings};
use crate::runtime::{
    BatchError, BatchOutput, Conn, Effect, EffectError, EffectOutcome, Finished, HandleError,
    Input, Kind, PendingEffect, Row, Settled, Worker, apply_as_batch,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/notification");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/notification");

/// The notification service as the runtime runs it.
#[derive(Debug)]
pub struct NotificationService<C = LogChannel> {
    channel: C,
}

impl NotificationService {
    /// Reads the service's settings (`RIDESAGA_NOTIFY_LOG`); the channel is the log channel.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(LogChannel::new(channel::log_path(settings)?)))
    }
}

impl<C: Channel> NotificationService<C> {
    pub fn new(channel: C) -> Self {
        NotificationService { channel }
    }

    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Applies a batch's inputs in order against what is known about their rides, loaded in
    /// one statement; the rides that changed and the notifications that became due are saved
    /// with one statement each (on `kind`) when the batch commits, and each notification's
    /// delivery is an effect. The inputs themselves emit nothing: each delivery is announced
    /// when it settles.
    fn apply_many(
        &self,
        kind: Kind,
        inputs: &[Input<'_>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(&rows).map_err(BatchError::Batch)?;
        let mut batch = Batch {
            rides: Rides::loaded(loaded),
            due: Vec::new(),
            effects: Vec::new(),
        };
        for (index, input) in inputs.iter().enumerate() {
            self.apply_to(&mut batch, input)
                .map_err(|error| BatchError::Input { index, error })?;
        }
        let mut writes = Vec::new();
        if !batch.due.is_empty() {
            writes.push(store::record_many(kind, &batch.due).map_err(BatchError::Batch)?);
        }
        let changed: Vec<(&RideId, &Audience, Timestamp)> = batch.rides.changed().collect();
        if !changed.is_empty() {
            writes.push(store::save_many(kind, &changed).map_err(BatchError::Batch)?);
        }
        Ok(BatchOutput {
            outputs: vec![Vec::new(); inputs.len()],
            writes,
            effects: batch.effects,
        })
    }

    /// Applies one input: records each notification it calls for that was not called for
    /// before as due, with the effect that delivers it, and notes the ride's changes for the
    /// batch to save.
    fn apply_to(&self, batch: &mut Batch, input: &Input<'_>) -> Result<(), HandleError> {
        let Input { envelope, now, .. } = *input;
        let (ride_id, before) = batch.rides.of(envelope)?;
        let (audience, notices) = domain::handle(before.clone(), &ride_id, &envelope.message);
        let channel = self.channel.name();
        for notice in notices {
            let request = Request {
                ride_id: ride_id.clone(),
                notice,
                cause: envelope.id.clone(),
                correlation_id: envelope.correlation_id.clone(),
            };
            // The effect as the runtime hands it back, for the id of its announcement.
            let effect = PendingEffect {
                effect: request.effect()?,
                attempts: 0,
                recorded_at: now,
                deadline: now,
            };
            let message_id = announcement(&effect, &request, channel, now).id;
            batch.due.push(store::Due::new(
                &ride_id,
                &request.notice,
                channel,
                &message_id,
                now,
            ));
            let mut effect = effect.effect;
            effect.trace = input.trace.cloned();
            batch.effects.push(effect);
        }
        let changed =
            audience.driver_id != before.driver_id || audience.cancelled != before.cancelled;
        *before = audience;
        if changed {
            batch.rides.changed_at(ride_id, now);
        }
        Ok(())
    }

    /// Delivers a notification through the channel, with the id of the event that will
    /// announce it (the line's id, a provider's idempotency key); the result names the
    /// channel. A channel's error is worth another attempt unless the channel says otherwise.
    async fn deliver(&self, effect: &PendingEffect) -> Result<String, EffectError> {
        let request = Request::of(&effect.effect).map_err(EffectError::Permanent)?;
        let now = Timestamp::now();
        let id = announcement(effect, &request, self.channel.name(), now).id;
        let delivery = Delivery {
            id: &id,
            ride_id: &request.ride_id,
            notice: &request.notice,
            at: now,
        };
        self.channel.deliver(&delivery).await.map_err(|e| {
            if e.permanent {
                EffectError::Permanent(e.to_string())
            } else {
                EffectError::Transient(e.to_string())
            }
        })?;
        debug!(ride_id = %request.ride_id, kind = request.notice.kind.as_str(), to = %request.notice.recipient_id, "notified");
        let delivered = Delivered {
            channel: self.channel.name().to_owned(),
        };
        serde_json::to_string(&delivered).map_err(|e| EffectError::Permanent(e.to_string()))
    }

    /// Records how a group of deliveries ended, in one statement: each delivery not
    /// recorded before is delivered, announced by `evt.notification.sent`, or failed, with a
    /// warning for operators and no event (the audit then shows the rider was not told).
    async fn settle_deliveries(
        &self,
        conn: &mut Conn<'_>,
        finished: &[Finished],
        now: Timestamp,
    ) -> Result<Settled, BatchError> {
        let mut deliveries = Vec::with_capacity(finished.len());
        for (index, f) in finished.iter().enumerate() {
            let request = Request::of(&f.effect.effect).map_err(|error| BatchError::Input {
                index,
                error: HandleError::Permanent(error),
            })?;
            let (channel, error) = self.ending(f);
            deliveries.push((request, channel, error));
        }
        let rows: Vec<store::Settling<'_>> = deliveries
            .iter()
            .map(|(request, channel, error)| store::Settling {
                key: request.key(),
                outcome: store::Outcome {
                    status: match error {
                        None => Status::Delivered,
                        Some(_) => Status::Failed,
                    },
                    channel,
                    error: error.as_deref(),
                },
            })
            .collect();
        let was_due = store::settle(conn, &rows, now)
            .await
            .map_err(BatchError::Batch)?;
        let mut outputs = Vec::new();
        for ((f, (request, channel, error)), due) in finished.iter().zip(&deliveries).zip(was_due) {
            let effect = &f.effect;
            if !due {
                debug!(effect = %effect.effect.id, "notification settled before; nothing to record");
                continue;
            }
            let Some(error) = error else {
                outputs.push(announcement(effect, request, channel, now));
                continue;
            };
            warn!(
                ride_id = %request.ride_id,
                kind = request.notice.kind.as_str(),
                recipient = store::recipient_str(&request.notice.recipient),
                recipient_id = %request.notice.recipient_id,
                effect = %effect.effect.id,
                %error,
                "notification not delivered; no evt.notification.sent"
            );
        }
        Ok(Settled {
            outputs,
            effects: Vec::new(),
        })
    }

    /// How a delivery ended: the channel that took it (or was asked), and why it failed if
    /// it did.
    fn ending(&self, finished: &Finished) -> (String, Option<String>) {
        let ours = || self.channel.name().to_owned();
        match &finished.outcome {
            EffectOutcome::Done(result) => {
                let channel = serde_json::from_str::<Delivered>(result.as_str())
                    .map(|d| d.channel)
                    .unwrap_or_else(|_| ours());
                (channel, None)
            }
            EffectOutcome::Failed(reason) => (ours(), Some(format!("refused: {reason}"))),
            EffectOutcome::GaveUp(last) => (
                ours(),
                Some(format!(
                    "not delivered after {} attempts: {last}",
                    finished.effect.attempts + 1
                )),
            ),
        }
    }
}

/// A batch in progress: what is known about the rides it touches, the notifications that
/// became due and the effects that deliver them.
#[derive(Debug)]
struct Batch {
    rides: Rides<Audience>,
    due: Vec<store::Due>,
    effects: Vec<Effect>,
}

/// A notification's delivery as its effect carries it: the notice, its ride, and the input
/// that called for it (the cause and correlation of the event that announces it).
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    ride_id: RideId,
    #[serde(flatten)]
    notice: Notice,
    cause: MessageId,
    correlation_id: String,
}

impl Request {
    /// The effect that delivers it: its id, `<ride>/<kind>/<recipient>`, is the notification's
    /// key, so one notification is one effect however often it is asked for.
    fn effect(&self) -> Result<Effect, HandleError> {
        let kind = self.notice.kind.as_str();
        let recipient = store::recipient_str(&self.notice.recipient);
        let request = serde_json::to_string(self)
            .map_err(|e| HandleError::Permanent(format!("notification request: {e}")))?;
        Ok(Effect {
            id: format!("{}/{kind}/{recipient}", self.ride_id),
            kind: format!("notification.{kind}"),
            saga_id: Some(self.ride_id.clone()),
            request,
            trace: None,
        })
    }

    /// The request `effect` carries.
    fn of(effect: &Effect) -> Result<Request, String> {
        serde_json::from_str(&effect.request)
            .map_err(|e| format!("effect {} has an unreadable request: {e}", effect.id))
    }

    fn key(&self) -> store::Key<'_> {
        store::Key {
            ride_id: &self.ride_id,
            kind: self.notice.kind,
            recipient: self.notice.recipient,
        }
    }
}

/// What a delivery's result says: the channel that took it.
#[derive(Debug, Serialize, Deserialize)]
struct Delivered {
    channel: String,
}

/// The `evt.notification.sent` that announces `effect`'s delivery through `channel`: its id
/// derives from the effect's (so it is also known before the delivery), and it is caused by
/// the input that called for the notification.
fn announcement(
    effect: &PendingEffect,
    request: &Request,
    channel: &str,
    now: Timestamp,
) -> Envelope {
    let notice = &request.notice;
    let sent = NotificationSent {
        recipient: notice.recipient,
        recipient_id: notice.recipient_id.clone(),
        kind: notice.kind,
        channel: channel.to_owned(),
        text: notice.text.clone(),
    };
    let producer = Service::Notification.name();
    let mut event = effect.event(sent, &request.correlation_id, producer, now);
    event.causation_id = Some(request.cause.clone());
    event
}

impl<C: Channel> Worker for NotificationService<C> {
    fn service(&self) -> Service {
        Service::Notification
    }

    fn migrator(&self, kind: Kind) -> &'static Migrator {
        match kind {
            Kind::Sqlite => &MIGRATOR,
            Kind::Postgres => &PG_MIGRATOR,
        }
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        apply_as_batch(self, conn, input, now)
    }

    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(store::load_sql(kind))
    }

    fn apply_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [Input<'a>],
        rows: Vec<Row>,
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        // Everything the batch reads came with the preload.
        let kind = conn.kind();
        async move { self.apply_many(kind, inputs, rows) }
    }

    fn perform<'a>(
        &'a self,
        effect: &'a PendingEffect,
    ) -> impl Future<Output = Result<String, EffectError>> + Send + 'a {
        self.deliver(effect)
    }

    fn settle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        finished: &'a [Finished],
        now: Timestamp,
    ) -> impl Future<Output = Result<Settled, BatchError>> + Send + 'a {
        self.settle_deliveries(conn, finished, now)
    }
}

#[cfg(test)]
mod tests;
