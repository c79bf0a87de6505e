//! The notification service: tells riders and drivers what matters about their ride, each
//! (ride, kind, recipient, occurrence) exactly once (the occurrence is a refund's id, empty
//! for every other kind: see [`domain`]), and announces every notification delivered with
//! `evt.notification.sent` so the event log can audit it.
//!
//! Each notification the domain calls for that the ride's record does not show is recorded
//! as due, in the input's transaction (the batch's: the records load and save once per batch,
//! under the one writer's lock, and UNIQUE (ride, kind, recipient, occurrence) backs them),
//! together with
//! an [`Effect`] the runtime records beside it. No channel is called there. After the commit
//! the runtime performs the effect ([`Worker::perform`]: the channel delivers it) and settles
//! its outcome ([`Worker::settle`]): a delivery marks the record delivered and emits the
//! event, whose id derives from the effect's, so settling twice emits one message; a delivery
//! refused for good, or not made before its deadline, marks it failed and warns, and no event
//! says it was sent. See [`channel`] for why delivery is at least once while the record and
//! the event are exactly once.
//!
//! Riders' and drivers' registrations (`cmd.rider.register`, `cmd.driver.register`) give
//! their email addresses and phone numbers, which the service keeps. When a notification
//! becomes due, its route is decided ([`routes`]): the channel configured for its kind of
//! recipient and the address or number there, or the log when the recipient gave none; the
//! route travels with the effect, so every attempt goes the same way.
//!
//! # Layout
//! - [`domain`]: which notifications the events call for.
//! - [`routes`]: which channel and address a notification goes to.
//! - [`channel`]: the channel trait and the JSON-lines log channel; [`email`] (SMTP) and
//!   [`sms`] (a provider's HTTP API).
//! - [`store`]: the `notification_rides`, `notifications` and `notification_contacts` tables.
//! - this file: the [`Worker`].

pub mod channel;
pub mod domain;
pub mod email;
pub mod routes;
pub mod sms;
pub mod store;

use std::collections::HashMap;

use ridesaga_schemas::{
    Envelope, Message, MessageId, NotificationSent, Recipient, RideId, Service, Timestamp,
};
use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use tracing::{debug, warn};

use self::channel::{Channel, ChannelError, Delivery, LogChannel};
use self::domain::{Audience, Notice};
use self::email::{EmailChannel, EmailConfig};
use self::routes::{Contact, Route, Routes, Via};
use self::sms::{SmsChannel, SmsConfig};
use self::store::Status;
use super::saga_states::SagaStates;
use crate::config::{ConfigError, Settings};
use crate::runtime::{
    BatchError, BatchOutput, Conn, Effect, EffectError, EffectOutcome, Finished, HandleError,
    Input, Kind, PendingEffect, Row, Settled, Worker, handle_as_batch,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/notification");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/notification");

/// The notification service as the runtime runs it: the log channel (or another default
/// channel, in tests), and the email and SMS channels where they are configured.
#[derive(Debug)]
pub struct NotificationService<C = LogChannel> {
    channel: C,
    email: Option<EmailChannel>,
    sms: Option<SmsChannel>,
    routes: Routes,
}

impl NotificationService {
    /// Reads the service's settings: `RIDESAGA_NOTIFY_LOG`, the channel of each kind of
    /// recipient, and the SMTP server's and the SMS provider's. A kind of recipient sent to a
    /// channel that is not configured stops the worker at start.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let routes = Routes::load(settings)?;
        let email = EmailConfig::load(settings)?
            .map(|config| EmailChannel::new(&config))
            .transpose()?;
        let sms = SmsConfig::load(settings)?
            .map(SmsChannel::new)
            .transpose()?;
        for (via, configured, needs) in [
            (Via::Email, email.is_some(), "RIDESAGA_SMTP_HOST"),
            (Via::Sms, sms.is_some(), "RIDESAGA_SMS_URL"),
        ] {
            if routes.uses(via) && !configured {
                let name = if routes.rider == via {
                    Routes::RIDER
                } else {
                    Routes::DRIVER
                };
                return Err(ConfigError {
                    name: name.into(),
                    value: via.as_str().into(),
                    problem: format!("the {} channel needs {needs}", via.as_str()),
                });
            }
        }
        let service = Self::new(LogChannel::new(channel::log_path(settings)?)).with_routes(routes);
        Ok(NotificationService {
            email,
            sms,
            ..service
        })
    }
}

impl<C: Channel> NotificationService<C> {
    /// The service with `channel` for every notification.
    pub fn new(channel: C) -> Self {
        NotificationService {
            channel,
            email: None,
            sms: None,
            routes: Routes::default(),
        }
    }

    /// The service sending each kind of recipient's notifications as `routes` say.
    pub fn with_routes(self, routes: Routes) -> Self {
        NotificationService { routes, ..self }
    }

    pub fn with_email(self, email: EmailChannel) -> Self {
        NotificationService {
            email: Some(email),
            ..self
        }
    }

    pub fn with_sms(self, sms: SmsChannel) -> Self {
        NotificationService {
            sms: Some(sms),
            ..self
        }
    }

    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// The name recorded for notifications that go `via`.
    fn channel_name(&self, via: Via) -> &'static str {
        match via {
            Via::Log => self.channel.name(),
            Via::Email => "email",
            Via::Sms => "sms",
        }
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
            rides: SagaStates::loaded(loaded.rides),
            contacts: loaded.contacts,
            contacts_changed: HashMap::new(),
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
        let contacts: Vec<(Recipient, &str, &Contact, Timestamp)> = batch
            .contacts_changed
            .iter()
            .filter_map(|((recipient, id), at)| {
                let contact = batch.contacts.get(&(*recipient, id.clone()))?;
                Some((*recipient, id.as_str(), contact, *at))
            })
            .collect();
        if !contacts.is_empty() {
            writes.push(store::save_contacts(kind, &contacts).map_err(BatchError::Batch)?);
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
        let registered = match &envelope.message {
            Message::RegisterRider(m) => {
                Some((Recipient::Rider, m.rider_id.as_str(), &m.email, &m.phone))
            }
            Message::RegisterDriver(m) => {
                Some((Recipient::Driver, m.driver_id.as_str(), &m.email, &m.phone))
            }
            _ => None,
        };
        if let Some((recipient, id, email, phone)) = registered {
            batch.register(recipient, id, email.as_deref(), phone.as_deref(), now);
            return Ok(());
        }
        let (ride_id, before) = batch.rides.of(envelope)?;
        let (audience, notices) = domain::handle(before.clone(), &ride_id, &envelope.message);
        for notice in notices {
            let key = (notice.recipient, notice.recipient_id.clone());
            let Route { via, to } = self
                .routes
                .route(notice.recipient, batch.contacts.get(&key));
            let channel = self.channel_name(via);
            let request = Request {
                ride_id: ride_id.clone(),
                notice,
                cause: envelope.id.clone(),
                correlation_id: envelope.correlation_id.clone(),
                via,
                to,
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

    /// Delivers `delivery` through the channel `via` names; one that is not configured (any
    /// longer: the route was decided by a replica configured otherwise) gives way to the log.
    /// The channel that took it and the outside party's id.
    async fn deliver_via(
        &self,
        via: Via,
        delivery: &Delivery<'_>,
    ) -> Result<(&'static str, Option<String>), ChannelError> {
        match (via, &self.email, &self.sms) {
            (Via::Email, Some(email), _) => Ok(("email", email.deliver(delivery).await?)),
            (Via::Sms, _, Some(sms)) => Ok(("sms", sms.deliver(delivery).await?)),
            (Via::Log, _, _) => Ok((self.channel.name(), self.channel.deliver(delivery).await?)),
            (other, _, _) => {
                warn!(
                    channel = other.as_str(),
                    id = %delivery.id,
                    "channel not configured; notification goes to the log"
                );
                let log = Delivery {
                    to: None,
                    ..*delivery
                };
                Ok((self.channel.name(), self.channel.deliver(&log).await?))
            }
        }
    }

    /// Delivers a notification through the channel, with the id of the event that will
    /// announce it (the line's id, a provider's idempotency key); the result names the
    /// channel. A channel's error is worth another attempt unless the channel says otherwise.
    async fn deliver(&self, effect: &PendingEffect) -> Result<String, EffectError> {
        let request = Request::of(&effect.effect).map_err(EffectError::Permanent)?;
        let now = Timestamp::now();
        let id = announcement(effect, &request, self.channel_name(request.via), now).id;
        let delivery = Delivery {
            id: &id,
            ride_id: &request.ride_id,
            notice: &request.notice,
            at: now,
            to: request.to.as_deref(),
        };
        let (channel, provider_id) =
            self.deliver_via(request.via, &delivery)
                .await
                .map_err(|e| {
                    if e.permanent {
                        EffectError::Permanent(e.to_string())
                    } else {
                        EffectError::Transient(e.to_string())
                    }
                })?;
        debug!(ride_id = %request.ride_id, kind = request.notice.kind.as_str(), to = %request.notice.recipient_id, channel, "notified");
        let delivered = Delivered {
            channel: channel.to_owned(),
            provider_id,
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
            let (delivered, error) = self.ending(f, request.via);
            deliveries.push((request, delivered, error));
        }
        let rows: Vec<store::Settling<'_>> = deliveries
            .iter()
            .map(|(request, delivered, error)| store::Settling {
                key: request.key(),
                outcome: store::Outcome {
                    status: match error {
                        None => Status::Delivered,
                        Some(_) => Status::Failed,
                    },
                    channel: &delivered.channel,
                    provider_id: delivered.provider_id.as_deref(),
                    error: error.as_deref(),
                },
            })
            .collect();
        let was_due = store::settle(conn, &rows, now)
            .await
            .map_err(BatchError::Batch)?;
        let mut outputs = Vec::new();
        for ((f, (request, delivered, error)), due) in finished.iter().zip(&deliveries).zip(was_due)
        {
            let effect = &f.effect;
            if !due {
                debug!(effect = %effect.effect.id, "notification settled before; nothing to record");
                continue;
            }
            let Some(error) = error else {
                outputs.push(announcement(effect, request, &delivered.channel, now));
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

    /// How a delivery that went `via` ended: the channel that took it (or was asked) and the
    /// outside party's id, and why it failed if it did.
    fn ending(&self, finished: &Finished, via: Via) -> (Delivered, Option<String>) {
        let asked = || Delivered {
            channel: self.channel_name(via).to_owned(),
            provider_id: None,
        };
        match &finished.outcome {
            EffectOutcome::Done(result) => (
                serde_json::from_str::<Delivered>(result.as_str()).unwrap_or_else(|_| asked()),
                None,
            ),
            EffectOutcome::Failed(reason) => (asked(), Some(format!("refused: {reason}"))),
            EffectOutcome::GaveUp(last) => (
                asked(),
                Some(format!(
                    "not delivered after {} attempts: {last}",
                    finished.effect.attempts + 1
                )),
            ),
        }
    }
}

/// A batch in progress: what is known about the rides it touches and about how to reach
/// their riders and drivers, the notifications that became due and the effects that deliver
/// them.
#[derive(Debug)]
struct Batch {
    rides: SagaStates<Audience>,
    contacts: HashMap<(Recipient, String), Contact>,
    /// The riders and drivers whose details changed, and when they last did.
    contacts_changed: HashMap<(Recipient, String), Timestamp>,
    due: Vec<store::Due>,
    effects: Vec<Effect>,
}

impl Batch {
    /// A registration of `recipient` `id` at `now`: the details it gives replace those known.
    fn register(
        &mut self,
        recipient: Recipient,
        id: &str,
        email: Option<&str>,
        phone: Option<&str>,
        now: Timestamp,
    ) {
        if email.is_none() && phone.is_none() {
            return;
        }
        let key = (recipient, id.to_owned());
        let known = self.contacts.get(&key).cloned().unwrap_or_default();
        let updated = known.updated(email, phone);
        if updated != known {
            self.contacts.insert(key.clone(), updated);
            self.contacts_changed.insert(key, now);
        }
    }
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
    /// The channel it goes through.
    #[serde(default)]
    via: Via,
    /// Its address or number there (none for the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    to: Option<String>,
}

impl Request {
    /// The effect that delivers it: its id is the notification's key, so one notification is
    /// one effect however often it is asked for: `<ride>/<kind>/<recipient>`, followed by
    /// `/<occurrence>` when there is one (a refund's id).
    fn effect(&self) -> Result<Effect, HandleError> {
        let request = serde_json::to_string(self)
            .map_err(|e| HandleError::Permanent(format!("notification request: {e}")))?;
        Ok(Effect {
            id: self.effect_id(),
            kind: format!("notification.{}", self.notice.kind.as_str()),
            saga_id: Some(self.ride_id.clone()),
            request,
            trace: None,
        })
    }

    /// The id of [`Request::effect`]; the kinds without an occurrence keep
    /// `<ride>/<kind>/<recipient>`.
    fn effect_id(&self) -> String {
        let kind = self.notice.kind.as_str();
        let recipient = store::recipient_str(&self.notice.recipient);
        match self.notice.occurrence() {
            "" => format!("{}/{kind}/{recipient}", self.ride_id),
            occurrence => format!("{}/{kind}/{recipient}/{occurrence}", self.ride_id),
        }
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
            occurrence: self.notice.occurrence(),
        }
    }
}

/// What a delivery's result says: the channel that took it, and the id the channel's outside
/// party gave it.
#[derive(Debug, Serialize, Deserialize)]
struct Delivered {
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_id: Option<String>,
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
        refund_id: notice.refund_id.clone(),
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

    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        use ridesaga_schemas::MessageKind;
        &[
            MessageKind::RegisterRider,
            MessageKind::RegisterDriver,
            MessageKind::DriverAssigned,
            MessageKind::RideConfirmed,
            MessageKind::RideCancelled,
            MessageKind::RideRejected,
            MessageKind::PaymentCaptured,
            MessageKind::PaymentCaptureFailed,
            MessageKind::PaymentRefunded,
        ]
    }

    fn migrator(&self, kind: Kind) -> &'static Migrator {
        match kind {
            Kind::Sqlite => &MIGRATOR,
            Kind::Postgres => &PG_MIGRATOR,
        }
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        handle_as_batch(self, conn, input, now)
    }

    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(store::load_sql(kind))
    }

    /// The batch's rides, and the riders and drivers its inputs name.
    fn preload_parameter(&self, inputs: &[Input<'_>]) -> String {
        let mut wanted = store::Wanted::default();
        for input in inputs {
            let envelope = input.envelope;
            if let Some(ride) = &envelope.saga_id {
                wanted.rides.push(ride.as_str());
            }
            let (rider, driver) = match &envelope.message {
                Message::RegisterRider(m) => (Some(&m.rider_id), None),
                Message::RegisterDriver(m) => (None, Some(&m.driver_id)),
                Message::DriverAssigned(m) => (Some(&m.rider_id), Some(&m.driver_id)),
                Message::RideConfirmed(m) => (Some(&m.rider_id), Some(&m.driver_id)),
                Message::RideCancelled(m) => (Some(&m.rider_id), m.driver_id.as_ref()),
                Message::RideRejected(m) => (Some(&m.rider_id), None),
                Message::PaymentCaptured(m) => (Some(&m.rider_id), None),
                Message::PaymentCaptureFailed(m) => (Some(&m.rider_id), None),
                Message::PaymentRefunded(m) => (Some(&m.rider_id), None),
                _ => (None, None),
            };
            wanted.riders.extend(rider.map(|r| r.as_str()));
            wanted.drivers.extend(driver.map(|d| d.as_str()));
        }
        // An object of arrays of ids cannot fail to serialise.
        wanted.json().unwrap_or_default()
    }

    fn handle_preloaded<'a>(
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
