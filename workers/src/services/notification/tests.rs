//! Tests of the notification worker: inputs applied one by one and as batches, the
//! deliveries they make due performed and settled as the runtime performs and settles them,
//! with the log channel and with channels that fail, against a real database of each backend
//! (every body runs once on SQLite and once on PostgreSQL).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, Message, NotificationKind, PaymentRefunded, Recipient,
    RefundId, RideCancelled, RideId, RiderId,
};
use sqlx::Connection;

use super::channel::ChannelError;
use super::*;
use crate::testing::each_backend;
use crate::testing::{SettleOne, TestDb, epoch, timeless};

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
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Option<String>, ChannelError> {
        let mut failed = self.failed_once.lock().unwrap();
        if !*failed {
            *failed = true;
            return Err(ChannelError {
                channel: "flaky",
                problem: "connection reset".into(),
                permanent: false,
            });
        }
        self.delivered.lock().unwrap().push(delivery.id.clone());
        Ok(None)
    }
}

/// A channel that knows no one on ride `r_2`, and counts its calls.
#[derive(Debug, Default)]
struct NoRideTwo {
    calls: AtomicUsize,
}

impl Channel for NoRideTwo {
    fn name(&self) -> &'static str {
        "no-r2"
    }
    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<Option<String>, ChannelError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if delivery.ride_id.as_str() == "r_2" {
            return Err(ChannelError {
                channel: "no-r2",
                problem: "unknown recipient".into(),
                permanent: true,
            });
        }
        Ok(None)
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

/// Another ride's copy of `input`.
fn of_ride(mut input: Envelope, ride: &str) -> Envelope {
    input.saga_id = Some(RideId::parse(ride).unwrap());
    input
}

/// A service with the log channel writing to `n.jsonl` in `dir`.
fn logging(dir: &tempfile::TempDir) -> NotificationService {
    NotificationService::new(LogChannel::new(dir.path().join("log/n.jsonl")))
}

/// The ids of the log's lines, in order.
fn log_ids(service: &NotificationService) -> Vec<String> {
    let text = std::fs::read_to_string(service.channel().path()).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

/// `inputs` applied as one batch, as the runtime applies them (without the inbox and the
/// runtime's record of the effects): the service's writes run, its answer returned.
async fn apply<W: Worker>(worker: &W, conn: &mut Conn<'_>, inputs: &[Envelope]) -> BatchOutput {
    let batch: Vec<Input<'_>> = inputs
        .iter()
        .map(|envelope| Input {
            envelope,
            now: epoch(),
            trace: None,
        })
        .collect();
    let done = worker.handle_batch(conn, &batch).await.unwrap();
    for write in &done.writes {
        write.execute(conn).await.unwrap();
    }
    done
}

/// `effect` as the runtime hands it back to perform and to settle.
fn pending(effect: &Effect) -> PendingEffect {
    PendingEffect {
        effect: effect.clone(),
        attempts: 0,
        recorded_at: epoch(),
        deadline: Timestamp::from_unix_millis(120_000),
    }
}

/// Performs each of `effects` and settles it as delivered, in order; the events settling
/// emitted.
async fn deliver<C: Channel>(
    service: &NotificationService<C>,
    conn: &mut Conn<'_>,
    effects: &[Effect],
) -> Vec<Envelope> {
    let mut events = Vec::new();
    for effect in effects.iter().map(pending) {
        let result = service.perform(&effect).await.unwrap();
        let settled = service
            .settle_one(conn, &effect, EffectOutcome::Done(result), epoch())
            .await
            .unwrap();
        assert!(settled.effects.is_empty());
        events.extend(settled.outputs);
    }
    events
}

/// Performs each of `effects` and settles them all as one group, as the runtime's executor
/// does with the attempts that finished together; the events settling emitted. Settling the
/// group again (a replica whose claims expired) announces nothing more.
async fn deliver_group<C: Channel>(
    service: &NotificationService<C>,
    conn: &mut Conn<'_>,
    effects: &[Effect],
) -> Vec<Envelope> {
    let mut finished = Vec::new();
    for effect in effects.iter().map(pending) {
        let result = service.perform(&effect).await.unwrap();
        finished.push(Finished {
            effect,
            outcome: EffectOutcome::Done(result),
        });
    }
    let settled = service.settle(conn, &finished, epoch()).await.unwrap();
    assert!(settled.effects.is_empty());
    let again = service.settle(conn, &finished, epoch()).await.unwrap();
    assert!(
        again.outputs.is_empty(),
        "settled twice: {:?}",
        again.outputs
    );
    settled.outputs
}

/// Settles `effect` in a transaction that is rolled back, as when the process stops before
/// the commit; what settling returned.
async fn settle_then_crash<C: Channel>(
    service: &NotificationService<C>,
    db: &mut TestDb,
    effect: &PendingEffect,
    outcome: EffectOutcome,
) -> Settled {
    match db {
        TestDb::Sqlite { conn, .. } => {
            let mut tx = conn.begin().await.unwrap();
            let mut conn = Conn::Sqlite(&mut tx);
            let settled = service.settle_one(&mut conn, effect, outcome, epoch());
            let settled = settled.await.unwrap();
            tx.rollback().await.unwrap();
            settled
        }
        TestDb::Postgres { conn, .. } => {
            let mut tx = conn.begin().await.unwrap();
            let mut conn = Conn::Postgres(&mut tx);
            let settled = service.settle_one(&mut conn, effect, outcome, epoch());
            let settled = settled.await.unwrap();
            tx.rollback().await.unwrap();
            settled
        }
    }
}

/// How many of ride `r_1`'s notifications have `status`.
async fn with_status(conn: &mut Conn<'_>, status: Status) -> i64 {
    store::count_with_status(conn, &ride_id(), status)
        .await
        .unwrap()
}

async fn applying_an_input_records_due_deliveries_and_calls_no_channel(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = NotificationService::new(NoRideTwo::default());
    let input = assigned();
    let done = apply(&service, &mut conn, std::slice::from_ref(&input)).await;

    assert_eq!(
        done.outputs,
        [Vec::<Envelope>::new()],
        "nothing announced yet"
    );
    let ids: Vec<&str> = done.effects.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        ["r_1/driver_assigned/rider", "r_1/driver_assigned/driver"]
    );
    let effect = &done.effects[0];
    assert_eq!(effect.kind, "notification.driver_assigned");
    assert_eq!(effect.saga_id, Some(ride_id()));
    let request: serde_json::Value = serde_json::from_str(&effect.request).unwrap();
    assert_eq!(request["recipient_id"], "u_ada");
    assert_eq!(request["cause"], input.id.as_str());
    assert!(
        request["text"]
            .as_str()
            .unwrap()
            .contains("Bob is on the way")
    );
    assert_eq!(service.channel().calls.load(Ordering::SeqCst), 0);
    assert_eq!(with_status(&mut conn, Status::Due).await, 2);

    // The same event again (without the inbox) calls for nothing more.
    let again = apply(&service, &mut conn, &[input]).await;
    assert!(again.effects.is_empty());
    assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 2);
}

async fn performing_writes_each_notification_once_with_the_id_of_its_event(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = logging(&dir);
    let effects = apply(&service, &mut conn, &[assigned()]).await.effects;
    assert!(log_ids(&service).is_empty(), "applying writes no line");

    for effect in effects.iter().map(pending) {
        service.perform(&effect).await.unwrap();
        service.perform(&effect).await.unwrap();
    }
    assert_eq!(log_ids(&service).len(), 2, "one line per notification");
    let events = deliver(&service, &mut conn, &effects).await;
    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(log_ids(&service), ids);
}

async fn settling_a_delivery_emits_its_event_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let service = logging(&dir);
    let input = assigned();
    let effects = apply(&service, &mut db.conn(), std::slice::from_ref(&input))
        .await
        .effects;
    let effect = pending(&effects[0]);
    let result = service.perform(&effect).await.unwrap();

    // A settle that never commits emits what the one after it emits.
    let lost = settle_then_crash(
        &service,
        &mut db,
        &effect,
        EffectOutcome::Done(result.clone()),
    );
    let lost = lost.await;
    let mut conn = db.conn();
    assert_eq!(with_status(&mut conn, Status::Due).await, 2);
    let settled = service
        .settle_one(
            &mut conn,
            &effect,
            EffectOutcome::Done(result.clone()),
            epoch(),
        )
        .await
        .unwrap();
    assert_eq!(settled.outputs.len(), 1);
    assert_eq!(
        timeless(vec![settled.outputs.clone()]),
        timeless(vec![lost.outputs])
    );
    let event = &settled.outputs[0];
    assert_eq!(event.subject(), "evt.notification.sent.r_1");
    assert_eq!(event.causation_id.as_ref(), Some(&input.id));
    assert_eq!(event.correlation_id, input.correlation_id);
    assert_eq!(event.producer, "notification");
    let Message::NotificationSent(sent) = &event.message else {
        panic!("{event:?}");
    };
    assert_eq!(
        (sent.kind, sent.recipient, sent.recipient_id.as_str()),
        (NotificationKind::DriverAssigned, Recipient::Rider, "u_ada")
    );
    assert_eq!(sent.channel, "log");
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 1);

    // Settling it again (another replica, a repeat) changes nothing and emits nothing.
    let again = service
        .settle_one(&mut conn, &effect, EffectOutcome::Done(result), epoch())
        .await
        .unwrap();
    assert!(again.outputs.is_empty() && again.effects.is_empty());
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 1);
    assert_eq!(with_status(&mut conn, Status::Due).await, 1);
}

async fn a_crash_between_the_line_and_the_settle_repeats_the_line_and_announces_it_once(
    kind: Kind,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let service = logging(&dir);
    let effects = apply(&service, &mut db.conn(), &[assigned()]).await.effects;
    let effect = pending(&effects[0]);
    let result = service.perform(&effect).await.unwrap();
    settle_then_crash(&service, &mut db, &effect, EffectOutcome::Done(result)).await;
    drop(service);

    // The effect is still due; the restarted process performs it again.
    let restarted = logging(&dir);
    let result = restarted.perform(&effect).await.unwrap();
    let ids = log_ids(&restarted);
    assert_eq!(ids.len(), 2, "at least once: the line again");
    assert_eq!(ids[0], ids[1], "with the same id, for readers to dedupe");
    let mut conn = db.conn();
    let settled = restarted
        .settle_one(&mut conn, &effect, EffectOutcome::Done(result), epoch())
        .await
        .unwrap();
    assert_eq!(settled.outputs.len(), 1);
    assert_eq!(settled.outputs[0].id.as_str(), ids[0]);
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 1);
}

async fn a_refused_or_abandoned_delivery_is_recorded_failed_and_announces_nothing(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = NotificationService::new(NoRideTwo::default());
    let input = of_ride(assigned(), "r_2");
    let effects = apply(&service, &mut conn, std::slice::from_ref(&input))
        .await
        .effects;
    let (refused, abandoned) = (pending(&effects[0]), pending(&effects[1]));
    let error = service.perform(&refused).await.unwrap_err();
    assert!(matches!(error, EffectError::Permanent(_)), "{error}");

    let failed = EffectOutcome::Failed(error.to_string());
    let settled = service
        .settle_one(&mut conn, &refused, failed, epoch())
        .await
        .unwrap();
    assert!(settled.outputs.is_empty());
    let gave_up = EffectOutcome::GaveUp("timed out".into());
    let settled = service
        .settle_one(&mut conn, &abandoned, gave_up, epoch())
        .await
        .unwrap();
    assert!(settled.outputs.is_empty());
    let r2 = RideId::parse("r_2").unwrap();
    let failed = store::count_with_status(&mut conn, &r2, Status::Failed);
    assert_eq!(failed.await.unwrap(), 2);

    // A late success settles nothing, and the event does not call for them again.
    let late = service
        .settle_one(
            &mut conn,
            &refused,
            EffectOutcome::Done("{}".into()),
            epoch(),
        )
        .await
        .unwrap();
    assert!(late.outputs.is_empty());
    assert!(
        apply(&service, &mut conn, &[input])
            .await
            .effects
            .is_empty()
    );
}

async fn a_channel_that_fails_for_now_is_asked_again_with_the_same_id(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = NotificationService::new(Flaky::default());
    let effects = apply(&service, &mut conn, &[assigned()]).await.effects;
    let effect = pending(&effects[0]);
    let error = service.perform(&effect).await.unwrap_err();
    assert!(matches!(error, EffectError::Transient(_)), "{error}");

    let events = deliver(&service, &mut conn, &effects).await;
    let ids: Vec<MessageId> = events.iter().map(|e| e.id.clone()).collect();
    assert_eq!(*service.channel().delivered.lock().unwrap(), ids);
    assert_eq!(
        events[0].message.kind().to_string(),
        "evt.notification.sent"
    );
    let Message::NotificationSent(sent) = &events[0].message else {
        panic!("{events:?}");
    };
    assert_eq!(sent.channel, "flaky");
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 2);
}

async fn a_cancel_before_the_assignment_still_tells_the_driver_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = logging(&dir);
    let effects = apply(&service, &mut conn, &[cancelled()]).await.effects;
    assert_eq!(deliver(&service, &mut conn, &effects).await.len(), 1);
    let effects = apply(&service, &mut conn, &[assigned()]).await.effects;
    let out = deliver(&service, &mut conn, &effects).await;
    let to_driver: Vec<&NotificationSent> = out
        .iter()
        .filter_map(|e| match &e.message {
            Message::NotificationSent(n) if n.recipient_id == "d_bob" => Some(n),
            _ => None,
        })
        .collect();
    assert_eq!(to_driver.len(), 2, "{out:?}");
    assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 4);
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 4);
    assert_eq!(log_ids(&service).len(), 4);
}

async fn a_batch_sends_what_its_inputs_applied_one_by_one_send_and_each_once(kind: Kind) {
    // Two assignments of r_1 (the second a new message, not a redelivery) and its cancel,
    // with r_2's assignment in between.
    let inputs = [
        cancelled(),
        assigned(),
        of_ride(assigned(), "r_2"),
        assigned(),
    ];
    let one_dir = tempfile::tempdir().unwrap();
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let one_service = logging(&one_dir);
    let mut one_by_one = Vec::new();
    let mut one_effects = Vec::new();
    for input in &inputs {
        let effects = apply(&one_service, &mut one, std::slice::from_ref(input))
            .await
            .effects;
        one_by_one.extend(deliver(&one_service, &mut one, &effects).await);
        one_effects.extend(effects);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = logging(&dir);
    let done = apply(&service, &mut conn, &inputs).await;
    assert_eq!(done.outputs, vec![Vec::<Envelope>::new(); 4]);
    assert_eq!(done.effects, one_effects);
    let batch = deliver_group(&service, &mut conn, &done.effects).await;

    assert_eq!(timeless(vec![batch]), timeless(vec![one_by_one]));
    assert_eq!(log_ids(&service), log_ids(&one_service));
    assert_eq!(log_ids(&service).len(), 6);
    assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 4);
    let audience = store::load(&mut conn, &ride_id()).await.unwrap();
    assert_eq!(audience, store::load(&mut one, &ride_id()).await.unwrap());
    assert_eq!(audience.cancelled, Some(CancelReason::Rider));
    assert_eq!(audience.driver_id, Some(DriverId::parse("d_bob").unwrap()));
    assert_eq!(audience.sent.len(), 4);
}

fn register_rider(email: Option<&str>, phone: Option<&str>) -> Envelope {
    let message = ridesaga_schemas::RegisterRider {
        rider_id: RiderId::parse("u_ada").unwrap(),
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
    };
    Envelope::new(message, None, "ridectl")
}

fn register_driver(email: Option<&str>, phone: Option<&str>) -> Envelope {
    let message = ridesaga_schemas::RegisterDriver {
        driver_id: DriverId::parse("d_bob").unwrap(),
        name: "Bob".into(),
        location: ridesaga_schemas::GeoPoint::new(52.5, 13.4).unwrap(),
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
    };
    Envelope::new(message, None, "ridectl")
}

/// The route an effect carries: its channel and address.
fn route_of(effect: &Effect) -> (String, Option<String>) {
    let request: serde_json::Value = serde_json::from_str(&effect.request).unwrap();
    (
        request["via"].as_str().unwrap().to_owned(),
        request["to"].as_str().map(str::to_owned),
    )
}

async fn registrations_give_the_address_and_number_each_route_needs(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let routes = Routes {
        rider: Via::Email,
        driver: Via::Sms,
    };
    let service = NotificationService::new(NoRideTwo::default()).with_routes(routes);
    // The rider registers twice (the second time only a phone) in the batch that assigns the
    // ride; the driver registered earlier without a phone, so the driver's notice goes to
    // the log.
    let earlier = apply(
        &service,
        &mut conn,
        &[register_driver(Some("bob@example.com"), None)],
    )
    .await;
    assert!(earlier.effects.is_empty() && earlier.outputs == [Vec::<Envelope>::new()]);
    let done = apply(
        &service,
        &mut conn,
        &[
            register_rider(Some("ada@example.com"), None),
            register_rider(None, Some("+4915112345678")),
            assigned(),
        ],
    )
    .await;
    assert_eq!(done.effects.len(), 2);
    assert_eq!(
        route_of(&done.effects[0]),
        ("email".into(), Some("ada@example.com".into()))
    );
    assert_eq!(route_of(&done.effects[1]), ("log".into(), None));
    let rider = store::contact(&mut conn, Recipient::Rider, "u_ada")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rider.email.as_deref(), Some("ada@example.com"));
    assert_eq!(rider.phone.as_deref(), Some("+4915112345678"));

    // The driver adds a phone; the cancellation that follows (driver known from the ride's
    // record, not the event) goes by SMS, and the record names the channel.
    apply(
        &service,
        &mut conn,
        &[register_driver(None, Some("+4917000000001"))],
    )
    .await;
    let cancel = apply(&service, &mut conn, &[cancelled()]).await;
    let to_driver = cancel
        .effects
        .iter()
        .find(|e| e.id.ends_with("/driver"))
        .unwrap();
    assert_eq!(
        route_of(to_driver),
        ("sms".into(), Some("+4917000000001".into()))
    );
    let driver = store::contact(&mut conn, Recipient::Driver, "d_bob")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(driver.email.as_deref(), Some("bob@example.com"));
    let key = store::Key {
        ride_id: &ride_id(),
        kind: NotificationKind::RideCancelled,
        recipient: Recipient::Driver,
        occurrence: "",
    };
    let (channel, provider_id) = store::delivery(&mut conn, key).await.unwrap().unwrap();
    assert_eq!((channel.as_str(), provider_id), ("sms", None));
}

async fn a_route_whose_channel_is_not_configured_here_is_delivered_to_the_log(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let routes = Routes {
        rider: Via::Email,
        driver: Via::Log,
    };
    // The replica that recorded it had email; this one has the log only.
    let service = logging(&dir).with_routes(routes);
    let done = apply(
        &service,
        &mut conn,
        &[register_rider(Some("ada@example.com"), None), assigned()],
    )
    .await;
    assert_eq!(route_of(&done.effects[0]).0, "email");
    let events = deliver(&service, &mut conn, &done.effects).await;
    let channels: Vec<String> = events
        .iter()
        .map(|e| match &e.message {
            Message::NotificationSent(n) => n.channel.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(channels, ["log", "log"]);
    assert_eq!(log_ids(&service).len(), 2);
}

fn refunded(refund_id: &str, amount_cents: u64, refunded_cents: u64) -> Envelope {
    let message = PaymentRefunded {
        rider_id: RiderId::parse("u_ada").unwrap(),
        refund_id: RefundId::parse(refund_id).unwrap(),
        hold_id: "hold_1".into(),
        amount_cents,
        refunded_cents,
        captured_cents: 1500,
        reason: None,
        reversal: None,
    };
    Envelope::new(message, Some(ride_id()), "payment")
}

async fn each_refund_is_its_own_notification_told_once(kind: Kind) {
    let dir = tempfile::tempdir().unwrap();
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = logging(&dir);
    let (first, second) = (refunded("rf_1", 500, 500), refunded("rf_2", 300, 800));
    let done = apply(&service, &mut conn, &[first.clone(), second.clone()]).await;
    let ids: Vec<&str> = done.effects.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["r_1/refund/rider/rf_1", "r_1/refund/rider/rf_2"]);
    assert_eq!(with_status(&mut conn, Status::Due).await, 2);

    // Each refund redelivered (without the inbox), alone and in a batch, calls for nothing.
    assert!(
        apply(&service, &mut conn, &[second])
            .await
            .effects
            .is_empty()
    );
    let again = apply(&service, &mut conn, &[first.clone(), first]).await;
    assert!(again.effects.is_empty());
    assert_eq!(store::count(&mut conn, &ride_id()).await.unwrap(), 2);

    // Each delivery settles its own record and announces its refund, once.
    let events = deliver(&service, &mut conn, &done.effects).await;
    let told: Vec<(NotificationKind, Option<&str>)> = events
        .iter()
        .map(|e| match &e.message {
            Message::NotificationSent(m) => (m.kind, m.refund_id.as_ref().map(RefundId::as_str)),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        told,
        [
            (NotificationKind::Refund, Some("rf_1")),
            (NotificationKind::Refund, Some("rf_2"))
        ]
    );
    assert_ne!(events[0].id, events[1].id);
    assert_eq!(with_status(&mut conn, Status::Delivered).await, 2);
    assert!(deliver(&service, &mut conn, &done.effects).await.is_empty());
    assert_eq!(log_ids(&service).len(), 2);
    let key = store::Key {
        ride_id: &ride_id(),
        kind: NotificationKind::Refund,
        recipient: Recipient::Rider,
        occurrence: "rf_2",
    };
    let (channel, _) = store::delivery(&mut conn, key).await.unwrap().unwrap();
    assert_eq!(channel, "log");
    let audience = store::load(&mut conn, &ride_id()).await.unwrap();
    assert_eq!(audience.sent.len(), 2);

    // A third refund is told too.
    let third = apply(&service, &mut conn, &[refunded("rf_3", 100, 900)]).await;
    assert_eq!(third.effects.len(), 1);
    assert_eq!(third.effects[0].id, "r_1/refund/rider/rf_3");
}

each_backend!(
    each_refund_is_its_own_notification_told_once,
    registrations_give_the_address_and_number_each_route_needs,
    a_route_whose_channel_is_not_configured_here_is_delivered_to_the_log,
    applying_an_input_records_due_deliveries_and_calls_no_channel,
    performing_writes_each_notification_once_with_the_id_of_its_event,
    settling_a_delivery_emits_its_event_once,
    a_crash_between_the_line_and_the_settle_repeats_the_line_and_announces_it_once,
    a_refused_or_abandoned_delivery_is_recorded_failed_and_announces_nothing,
    a_channel_that_fails_for_now_is_asked_again_with_the_same_id,
    a_cancel_before_the_assignment_still_tells_the_driver_once,
    a_batch_sends_what_its_inputs_applied_one_by_one_send_and_each_once,
);

#[test]
fn a_kind_of_recipient_sent_to_a_channel_that_is_not_configured_stops_the_worker() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("n.jsonl");
    let base = Settings::from_pairs([("RIDESAGA_NOTIFY_LOG", log.to_str().unwrap())]);
    let error = NotificationService::load(&base.clone().with(Routes::RIDER, "email"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("RIDESAGA_NOTIFY_RIDER_CHANNEL") && error.contains("RIDESAGA_SMTP_HOST"),
        "{error}"
    );
    let error = NotificationService::load(&base.clone().with(Routes::DRIVER, "sms"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("RIDESAGA_NOTIFY_DRIVER_CHANNEL") && error.contains("RIDESAGA_SMS_URL"),
        "{error}"
    );
    let configured = base
        .with(Routes::DRIVER, "sms")
        .with("RIDESAGA_SMS_URL", "http://127.0.0.1:9/m")
        .with("RIDESAGA_SMS_USER", "AC1")
        .with("RIDESAGA_SMS_TOKEN", "t")
        .with("RIDESAGA_SMS_FROM", "Ridesaga");
    let service = NotificationService::load(&configured).unwrap();
    assert!(service.sms.is_some() && service.email.is_none());
    assert_eq!(service.routes.driver, Via::Sms);
}
