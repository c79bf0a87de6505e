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
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteRow;
use tracing::debug;

use self::channel::{Channel, Delivery, LogChannel};
use self::domain::{Audience, Notice};
use super::rides::Rides;
use crate::config::{ConfigError, Settings};
use crate::runtime::{BatchError, BatchOutput, HandleError, Input, Worker, apply_as_batch};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/notification");

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
    /// statement each when the batch commits.
    async fn apply_many(
        &self,
        inputs: &[Input<'_>],
        rows: Vec<SqliteRow>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(rows).map_err(BatchError::Batch)?;
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
            writes.push(store::record_many(&batch.sent).map_err(BatchError::Batch)?);
        }
        let changed: Vec<(&RideId, &Audience, Timestamp)> = batch.rides.changed().collect();
        if !changed.is_empty() {
            writes.push(store::save_many(&changed).map_err(BatchError::Batch)?);
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

    fn migrator(&self) -> &'static Migrator {
        &MIGRATOR
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        apply_as_batch(self, conn, input, now)
    }

    fn preload(&self) -> Option<&str> {
        Some(store::LOAD_SQL)
    }

    fn apply_preloaded<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        inputs: &'a [Input<'a>],
        rows: Vec<SqliteRow>,
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        // Everything the batch reads came with the preload.
        let _ = conn;
        self.apply_many(inputs, rows)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ridesaga_schemas::{
        CancelReason, DriverAssigned, DriverId, Message, MessageId, RideCancelled, RideId, RiderId,
    };

    use super::channel::ChannelError;
    use super::*;
    use crate::testing::{
        apply_batch_in_tx, apply_each_in_tx, apply_in_tx, database, epoch, timeless,
    };

    /// A channel that fails its first delivery, and remembers the ids it delivered.
    #[derive(Debug, Default)]
    struct Flaky {
        delivered: Mutex<Vec<MessageId>>,
        failed_once: Mutex<bool>,
    }

    impl Channel for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), ChannelError> {
            let mut failed = self.failed_once.lock().unwrap();
            if !*failed {
                *failed = true;
                return Err(ChannelError {
                    channel: "flaky",
                    problem: "connection reset".into(),
                });
            }
            self.delivered.lock().unwrap().push(delivery.id.clone());
            Ok(())
        }
    }

    /// A channel that cannot reach anyone about ride `r_2`.
    #[derive(Debug, Default)]
    struct NoRideTwo;

    impl Channel for NoRideTwo {
        fn name(&self) -> &'static str {
            "no-r2"
        }
        async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), ChannelError> {
            if delivery.ride_id.as_str() == "r_2" {
                return Err(ChannelError {
                    channel: "no-r2",
                    problem: "unreachable".into(),
                });
            }
            Ok(())
        }
    }

    fn ride_id() -> RideId {
        RideId::parse("r_1").unwrap()
    }

    fn assigned() -> Envelope {
        let message = DriverAssigned {
            rider_id: RiderId::parse("u_ada").unwrap(),
            driver_id: DriverId::parse("d_bob").unwrap(),
            driver_name: "Bob".into(),
            pickup_distance_km: 0.8,
        };
        Envelope::new(message, Some(ride_id()), "driver")
    }

    fn cancelled() -> Envelope {
        let message = RideCancelled {
            rider_id: RiderId::parse("u_ada").unwrap(),
            reason: CancelReason::Rider,
            driver_id: None,
        };
        Envelope::new(message, Some(ride_id()), "ride")
    }

    fn log_ids(service: &NotificationService) -> Vec<String> {
        let text = std::fs::read_to_string(service.channel().path()).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
            .map(|id| id.trim_matches('"').to_owned())
            .collect()
    }

    #[tokio::test]
    async fn a_redelivered_assignment_notifies_rider_and_driver_once() {
        let (dir, mut conn) = database(&MIGRATOR).await;
        let service = NotificationService::new(LogChannel::new(dir.path().join("log/n.jsonl")));
        let input = assigned();
        let out = apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
        let subjects: Vec<String> = out.iter().map(Envelope::subject).collect();
        assert_eq!(subjects, ["evt.notification.sent.r_1"; 2]);
        assert_eq!(
            out[0].id,
            MessageId::derive(&input.id, "evt.notification.sent/driver_assigned/rider")
        );
        let ids: Vec<String> = out.iter().map(|e| e.id.to_string()).collect();
        assert_eq!(log_ids(&service), ids);

        assert!(
            apply_in_tx(&service, &mut conn, &input, epoch())
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 2);
        assert_eq!(log_ids(&service).len(), 2);
    }

    #[tokio::test]
    async fn a_cancel_before_the_assignment_still_tells_the_driver_once() {
        let (dir, mut conn) = database(&MIGRATOR).await;
        let service = NotificationService::new(LogChannel::new(dir.path().join("n.jsonl")));
        let out = apply_in_tx(&service, &mut conn, &cancelled(), epoch())
            .await
            .unwrap();
        assert_eq!(out.len(), 1);
        let out = apply_in_tx(&service, &mut conn, &assigned(), epoch())
            .await
            .unwrap();
        let to_driver: Vec<&NotificationSent> = out
            .iter()
            .filter_map(|e| match &e.message {
                Message::NotificationSent(n) if n.recipient_id == "d_bob" => Some(n),
                _ => None,
            })
            .collect();
        assert_eq!(to_driver.len(), 2, "{out:?}");
        assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_delivery_that_fails_in_a_batch_fails_the_input_that_called_for_it() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let service = NotificationService::new(NoRideTwo);
        let inputs: Vec<(Envelope, Timestamp)> = [assigned(), of_ride(assigned(), "r_2")]
            .into_iter()
            .map(|input| (input, epoch()))
            .collect();
        let err = apply_batch_in_tx(&service, &mut conn, &inputs)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                BatchError::Input {
                    index: 1,
                    error: HandleError::Transient(_)
                }
            ),
            "{err}"
        );
        // Without it the batch goes through.
        let out = apply_batch_in_tx(&service, &mut conn, &inputs[..1])
            .await
            .unwrap();
        assert_eq!(out[0].len(), 2);
    }

    #[tokio::test]
    async fn a_failed_delivery_rolls_back_and_the_retry_sends_the_same_notifications() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let service = NotificationService::new(Flaky::default());
        let input = assigned();
        let err = apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap_err();
        assert!(matches!(err, HandleError::Transient(_)), "{err}");
        assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 0);

        let out = apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
        let ids: Vec<MessageId> = out.iter().map(|e| e.id.clone()).collect();
        assert_eq!(*service.channel().delivered.lock().unwrap(), ids);
        assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 2);
    }

    /// Another ride's copy of `input`.
    fn of_ride(mut input: Envelope, ride: &str) -> Envelope {
        input.saga_id = Some(RideId::parse(ride).unwrap());
        input
    }

    #[tokio::test]
    async fn a_batch_sends_what_its_inputs_applied_one_by_one_send_and_each_once() {
        // Two assignments of r_1 (the second a new message, not a redelivery) and its cancel,
        // with r_2's assignment in between.
        let inputs: Vec<(Envelope, Timestamp)> = [
            cancelled(),
            assigned(),
            of_ride(assigned(), "r_2"),
            assigned(),
        ]
        .into_iter()
        .map(|input| (input, epoch()))
        .collect();
        let (one_dir, mut one) = database(&MIGRATOR).await;
        let one_service = NotificationService::new(LogChannel::new(one_dir.path().join("n.jsonl")));
        let one_by_one = apply_each_in_tx(&one_service, &mut one, &inputs).await;
        let (dir, mut conn) = database(&MIGRATOR).await;
        let service = NotificationService::new(LogChannel::new(dir.path().join("n.jsonl")));
        let batch = apply_batch_in_tx(&service, &mut conn, &inputs)
            .await
            .unwrap();

        assert!(batch[3].is_empty(), "the second assignment sends nothing");
        assert_eq!(timeless(batch), timeless(one_by_one));
        assert_eq!(log_ids(&service), log_ids(&one_service));
        assert_eq!(log_ids(&service).len(), 6);
        assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 4);
        let audience = store::load(&mut conn, &ride_id()).await.unwrap();
        assert_eq!(audience, store::load(&mut one, &ride_id()).await.unwrap());
        assert_eq!(audience.cancelled, Some(CancelReason::Rider));
        assert_eq!(audience.driver_id, Some(DriverId::parse("d_bob").unwrap()));
        assert_eq!(audience.sent.len(), 4);
    }
}
