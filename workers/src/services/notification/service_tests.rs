//! Tests of the notification worker: inputs applied one by one and as batches, with the log
//! channel and with channels that fail, against a real database of each backend (every body
//! runs once on SQLite and once on PostgreSQL).

use std::sync::Mutex;

use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, Message, MessageId, RideCancelled, RideId, RiderId,
};

use super::channel::ChannelError;
use super::*;
use crate::testing::each_backend;
use crate::testing::{TestDb, apply_batch_in_tx, apply_each_in_tx, apply_in_tx, epoch, timeless};

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

/// A fresh database of `kind` with the notification service's tables.
async fn database(kind: Kind) -> TestDb {
    TestDb::open(kind, &MIGRATOR, &PG_MIGRATOR).await
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

async fn a_redelivered_assignment_notifies_rider_and_driver_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
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

async fn a_cancel_before_the_assignment_still_tells_the_driver_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
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

async fn a_delivery_that_fails_in_a_batch_fails_the_input_that_called_for_it(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
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

async fn a_failed_delivery_rolls_back_and_the_retry_sends_the_same_notifications(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
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

async fn a_batch_sends_what_its_inputs_applied_one_by_one_send_and_each_once(kind: Kind) {
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
    let one_dir = tempfile::tempdir().unwrap();
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let one_service = NotificationService::new(LogChannel::new(one_dir.path().join("n.jsonl")));
    let one_by_one = apply_each_in_tx(&one_service, &mut one, &inputs).await;
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
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

each_backend!(
    a_redelivered_assignment_notifies_rider_and_driver_once,
    a_cancel_before_the_assignment_still_tells_the_driver_once,
    a_delivery_that_fails_in_a_batch_fails_the_input_that_called_for_it,
    a_failed_delivery_rolls_back_and_the_retry_sends_the_same_notifications,
    a_batch_sends_what_its_inputs_applied_one_by_one_send_and_each_once,
);
