//! The notification service: tells riders and drivers what matters about their ride, each
//! (ride, kind, recipient) exactly once, and announces every notification with
//! `evt.notification.sent` so the event log can audit it.
//!
//! For each notification the domain calls for that the ride's record does not show as sent,
//! the service delivers it through the channel, records it and emits the event, all inside
//! the input's transaction (the batch's: the records load and save once per batch, under the
//! one writer's lock, and UNIQUE (ride, kind, recipient) backs them). See [`channel`] for why delivery is at least
//! once while the record and the event are exactly once.
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
use sqlx::migrate::Migrator;
use tracing::debug;

use self::channel::{Channel, Delivery, LogChannel};
use self::domain::{Audience, Notice};
use super::rides::Rides;
use crate::config::{ConfigError, Settings};
use crate::runtime::{
    BatchError, BatchOutput, Conn, HandleError, Input, Kind, Row, Worker, apply_as_batch,
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
    /// one statement; the rides that changed and the notifications sent are saved with one
    /// statement each (on `kind`) when the batch commits.
    async fn apply_many(
        &self,
        kind: Kind,
        inputs: &[Input<'_>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(&rows).map_err(BatchError::Batch)?;
        let mut batch = Batch {
            rides: Rides::loaded(loaded),
            sent: Vec::new(),
            queued: Vec::new(),
        };
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut batch, index, input);
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        self.deliver(&batch.queued).await?;
        let mut writes = Vec::new();
        if !batch.sent.is_empty() {
            writes.push(store::record_many(kind, &batch.sent).map_err(BatchError::Batch)?);
        }
        let changed: Vec<(&RideId, &Audience, Timestamp)> = batch.rides.changed().collect();
        if !changed.is_empty() {
            writes.push(store::save_many(kind, &changed).map_err(BatchError::Batch)?);
        }
        Ok(BatchOutput { outputs, writes })
    }

    /// Delivers the batch's notifications through the channel, all at once, before the batch
    /// commits. A failed delivery fails the input that called for it (the batch is redone
    /// without it, and the notifications before it may go out again, with the same ids).
    async fn deliver(&self, queued: &[Queued]) -> Result<(), BatchError> {
        let deliveries: Vec<Delivery<'_>> = queued
            .iter()
            .map(|q| Delivery {
                id: &q.id,
                ride_id: &q.ride_id,
                notice: &q.notice,
                at: q.at,
            })
            .collect();
        if let Err((position, e)) = self.channel.deliver_all(&deliveries).await {
            return Err(BatchError::Input {
                index: queued.get(position).map_or(0, |q| q.input),
                error: HandleError::Transient(e.to_string()),
            });
        }
        for q in queued {
            debug!(ride_id = %q.ride_id, kind = q.notice.kind.as_str(), to = %q.notice.recipient_id, "notified");
        }
        Ok(())
    }

    /// Applies one input (the batch's `index`th): queues each notification it calls for that
    /// was not sent before, and notes the records and the ride's changes for the batch to
    /// save.
    fn apply_to(
        &self,
        batch: &mut Batch,
        index: usize,
        input: &Input<'_>,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Input { envelope, now } = *input;
        let (ride_id, before) = batch.rides.of(envelope)?;
        let (audience, notices) = domain::handle(before.clone(), &ride_id, &envelope.message);
        let channel = self.channel.name();
        let mut outputs = Vec::with_capacity(notices.len());
        for notice in notices {
            let event = NotificationSent {
                recipient: notice.recipient,
                recipient_id: notice.recipient_id.clone(),
                kind: notice.kind,
                channel: channel.to_owned(),
                text: notice.text.clone(),
            };
            let recipient = store::recipient_str(&notice.recipient);
            let label = format!("{}/{recipient}", notice.kind.as_str());
            let event = Envelope::caused_by(envelope, event, &label, Service::Notification.name());
            batch
                .sent
                .push(store::Sent::new(&ride_id, &notice, channel, &event.id, now));
            batch.queued.push(Queued {
                input: index,
                id: event.id.clone(),
                ride_id: ride_id.clone(),
                notice,
                at: now,
            });
            outputs.push(event);
        }
        let changed =
            audience.driver_id != before.driver_id || audience.cancelled != before.cancelled;
        *before = audience;
        if changed {
            batch.rides.changed_at(ride_id, now);
        }
        Ok(outputs)
    }
}

/// A batch in progress: what is known about the rides it touches, and the notifications it
/// sends.
#[derive(Debug)]
struct Batch {
    rides: Rides<Audience>,
    sent: Vec<store::Sent>,
    queued: Vec<Queued>,
}

/// A notification waiting for the batch's delivery, and the input that called for it.
#[derive(Debug)]
struct Queued {
    input: usize,
    id: MessageId,
    ride_id: RideId,
    notice: Notice,
    at: Timestamp,
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
        self.apply_many(conn.kind(), inputs, rows)
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
