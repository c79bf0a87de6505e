//! The notification service: tells riders and drivers what matters about their ride, each
//! (ride, kind, recipient) exactly once, and announces every notification with
//! `evt.notification.sent` so the event log can audit it.
//!
//! For each notification the domain calls for, the service first records it (the UNIQUE
//! constraint is the final word on "new"), then delivers it through the channel, then emits
//! the event, all inside the input's transaction. See [`channel`] for why delivery is at least
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

use ridesaga_schemas::{Envelope, NotificationSent, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use tracing::debug;

use self::channel::{Channel, Delivery, LogChannel};
use crate::config::{ConfigError, Settings};
use crate::runtime::{HandleError, Worker};

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

    async fn apply_one(
        &self,
        conn: &mut SqliteConnection,
        input: &Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let ride_id = input
            .saga_id
            .as_ref()
            .ok_or_else(|| HandleError::Permanent(format!("{} without a saga id", input.kind())))?;
        let before = store::load(conn, ride_id).await?;
        let (audience, notices) = domain::handle(before.clone(), ride_id, &input.message);
        let mut outputs = Vec::new();
        for notice in &notices {
            let sent = NotificationSent {
                recipient: notice.recipient,
                recipient_id: notice.recipient_id.clone(),
                kind: notice.kind,
                channel: self.channel.name().to_owned(),
                text: notice.text.clone(),
            };
            let recipient = store::recipient_str(&notice.recipient);
            let label = format!("{}/{recipient}", notice.kind.as_str());
            let event = Envelope::caused_by(input, sent, &label, Service::Notification.name());
            let channel = self.channel.name();
            if !store::record(conn, ride_id, notice, channel, &event.id, now).await? {
                debug!(%ride_id, kind = notice.kind.as_str(), "already sent");
                continue;
            }
            let delivery = Delivery {
                id: &event.id,
                ride_id,
                notice,
                at: now,
            };
            self.channel
                .deliver(&delivery)
                .await
                .map_err(|e| HandleError::Transient(e.to_string()))?;
            debug!(%ride_id, kind = notice.kind.as_str(), to = %notice.recipient_id, "notified");
            outputs.push(event);
        }
        if audience.driver_id != before.driver_id || audience.cancelled != before.cancelled {
            store::save(conn, ride_id, &audience, now).await?;
        }
        Ok(outputs)
    }
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
        self.apply_one(conn, input, now)
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
    use crate::testing::{apply_in_tx, database, epoch};

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
}
