//! Tests of the payment worker: inputs applied one by one and as batches, against a real
//! database of each backend (every body runs once on SQLite and once on PostgreSQL).

use std::sync::atomic::{AtomicU32, Ordering};

use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, GeoPoint, Message, MessageId, RideCancelled,
    RideCompleted, RideId, RideRequested, RiderId,
};

use super::domain::{Ending, Hold, Settlement, Trip};
use super::*;
use crate::testing::{TestDb, apply_batch_in_tx, apply_each_in_tx, apply_in_tx, epoch, timeless};
use crate::testing::{each_backend, execute};

/// The simulated gateway behind an outage that swallows the first `down_for` calls.
#[derive(Debug, Default)]
struct Outage {
    down_for: AtomicU32,
    inner: SimulatedGateway,
}

impl Outage {
    fn failing(&self) -> Result<(), GatewayError> {
        let left = self.down_for.load(Ordering::SeqCst);
        if left == 0 {
            return Ok(());
        }
        self.down_for.store(left - 1, Ordering::SeqCst);
        Err(GatewayError::Unavailable("timed out".into()))
    }
}

impl Gateway for Outage {
    fn name(&self) -> &'static str {
        "outage"
    }
    async fn hold(&self, request: &HoldRequest) -> Result<HoldOutcome, GatewayError> {
        self.failing()?;
        self.inner.hold(request).await
    }
    async fn capture(&self, request: &SettleRequest) -> Result<(), GatewayError> {
        self.failing()?;
        self.inner.capture(request).await
    }
    async fn void(&self, request: &SettleRequest) -> Result<(), GatewayError> {
        self.failing()?;
        self.inner.void(request).await
    }
}

/// A fresh database of `kind` with the payment service's tables.
async fn database(kind: Kind) -> TestDb {
    TestDb::open(kind, &MIGRATOR, &PG_MIGRATOR).await
}

fn ride_id() -> RideId {
    RideId::parse("r_1").unwrap()
}

fn rider() -> RiderId {
    RiderId::parse("u_ada").unwrap()
}

fn envelope(message: impl Into<Message>) -> Envelope {
    Envelope::new(message, Some(ride_id()), "test")
}

fn requested(token: &str) -> Envelope {
    envelope(RideRequested {
        rider_id: rider(),
        pickup: GeoPoint::new(52.52, 13.40).unwrap(),
        dropoff: GeoPoint::new(52.50, 13.45).unwrap(),
        payment_token: token.into(),
        estimated_distance_km: 4.0,
        estimated_fare_cents: 1200,
        match_deadline: Timestamp::from_unix_millis(0),
        expires_at: None,
    })
}

fn assigned() -> Envelope {
    envelope(DriverAssigned {
        rider_id: rider(),
        driver_id: DriverId::parse("d_bob").unwrap(),
        driver_name: "Bob".into(),
        pickup_distance_km: 1.0,
    })
}

fn completed(fare_cents: u64) -> Envelope {
    envelope(RideCompleted {
        rider_id: rider(),
        driver_id: DriverId::parse("d_bob").unwrap(),
        distance_km: 4.0,
        duration_min: 10.0,
        fare_cents,
    })
}

fn cancelled() -> Envelope {
    envelope(RideCancelled {
        rider_id: rider(),
        reason: CancelReason::Rider,
        driver_id: None,
    })
}

fn subjects(outputs: &[Envelope]) -> Vec<String> {
    outputs.iter().map(Envelope::subject).collect()
}

async fn journal(conn: &mut Conn<'_>) -> Vec<(String, String)> {
    store::operations(conn, &ride_id()).await.unwrap()
}

async fn a_redelivered_assigned_event_places_one_hold(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply_in_tx(&service, &mut conn, &requested("tok_visa"), epoch())
        .await
        .unwrap();
    let assigned = assigned();
    let out = apply_in_tx(&service, &mut conn, &assigned, epoch())
        .await
        .unwrap();
    assert_eq!(subjects(&out), ["evt.payment.authorized.r_1"]);
    assert_eq!(
        out[0].id,
        MessageId::derive(&assigned.id, "evt.payment.authorized/")
    );

    let again = apply_in_tx(&service, &mut conn, &assigned, epoch())
        .await
        .unwrap();
    assert!(again.is_empty());
    assert_eq!(service.gateway().calls("r_1/hold"), 1);
    assert_eq!(journal(&mut conn).await, [("hold".into(), "held".into())]);
}

async fn a_transient_gateway_failure_rolls_back_and_the_retry_emits_the_same_event(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::with_gateway(Outage {
        down_for: AtomicU32::new(2),
        inner: SimulatedGateway::default(),
    });
    let assigned = assigned();
    apply_in_tx(&service, &mut conn, &assigned, epoch())
        .await
        .unwrap();
    let requested = requested("tok_visa");
    for _ in 0..2 {
        let err = apply_in_tx(&service, &mut conn, &requested, epoch())
            .await
            .unwrap_err();
        assert!(matches!(err, HandleError::Transient(_)), "{err}");
        assert_eq!(
            store::load(&mut conn, &ride_id()).await.unwrap().hold,
            Hold::None
        );
    }
    let out = apply_in_tx(&service, &mut conn, &requested, epoch())
        .await
        .unwrap();
    assert_eq!(subjects(&out), ["evt.payment.authorized.r_1"]);
    assert_eq!(
        out[0].id,
        MessageId::derive(&requested.id, "evt.payment.authorized/")
    );
    assert_eq!(journal(&mut conn).await.len(), 1);
}

async fn completion_captures_the_fare_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    for input in [requested("tok_visa"), assigned()] {
        apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
    }
    let done = completed(1534);
    let out = apply_in_tx(&service, &mut conn, &done, epoch())
        .await
        .unwrap();
    assert!(matches!(
        &out[0].message,
        Message::PaymentCaptured(c) if c.amount_cents == 1534
    ));
    assert!(
        apply_in_tx(&service, &mut conn, &done, epoch())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(service.gateway().calls("r_1/capture"), 1);
    let payment = store::load(&mut conn, &ride_id()).await.unwrap();
    assert_eq!(
        payment.settlement,
        Settlement::Captured { amount_cents: 1534 }
    );
}

async fn a_refused_capture_is_announced_for_operators_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    for input in [requested(gateway::CAPTURE_FAILS_TOKEN), assigned()] {
        apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
    }
    let out = apply_in_tx(&service, &mut conn, &completed(1500), epoch())
        .await
        .unwrap();
    assert_eq!(subjects(&out), ["evt.payment.capture_failed.r_1"]);
    assert!(
        apply_in_tx(&service, &mut conn, &completed(1500), epoch())
            .await
            .unwrap()
            .is_empty()
    );
    let ops = journal(&mut conn).await;
    assert_eq!(ops[0], ("capture".into(), "capture_refused".into()));
}

async fn a_cancel_before_the_assignment_means_no_hold_is_ever_placed(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    for input in [cancelled(), requested("tok_visa"), assigned()] {
        assert!(
            apply_in_tx(&service, &mut conn, &input, epoch())
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert_eq!(service.gateway().calls("r_1/hold"), 0);
    assert!(journal(&mut conn).await.is_empty());
}

async fn a_cancel_after_the_hold_voids_it(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    for input in [requested("tok_visa"), assigned()] {
        apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
    }
    let out = apply_in_tx(&service, &mut conn, &cancelled(), epoch())
        .await
        .unwrap();
    assert_eq!(subjects(&out), ["evt.payment.voided.r_1"]);
    let payment = store::load(&mut conn, &ride_id()).await.unwrap();
    assert_eq!(payment.settlement, Settlement::Voided);
}

/// Another ride's copy of `input`.
fn of_ride(mut input: Envelope, ride: &str) -> Envelope {
    input.saga_id = Some(RideId::parse(ride).unwrap());
    input
}

async fn a_batch_moves_the_money_its_inputs_applied_one_by_one_move_and_each_once(kind: Kind) {
    let inputs: Vec<(Envelope, Timestamp)> = [
        requested("tok_visa"),
        of_ride(assigned(), "r_2"),
        assigned(),
        of_ride(requested("tok_visa"), "r_2"),
        completed(1534),
        of_ride(cancelled(), "r_2"),
        completed(1534),
    ]
    .into_iter()
    .map(|input| (input, epoch()))
    .collect();
    let one_service = PaymentService::new(GatewayConfig::default());
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let one_by_one = apply_each_in_tx(&one_service, &mut one, &inputs).await;
    let service = PaymentService::new(GatewayConfig::default());
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let batch = apply_batch_in_tx(&service, &mut conn, &inputs)
        .await
        .unwrap();

    assert_eq!(timeless(batch), timeless(one_by_one));
    for key in ["r_1/hold", "r_1/capture", "r_2/hold", "r_2/void"] {
        assert_eq!(service.gateway().calls(key), 1, "{key}");
    }
    for ride in ["r_1", "r_2"] {
        let ride = RideId::parse(ride).unwrap();
        let stored = store::load(&mut conn, &ride).await.unwrap();
        assert_eq!(stored, store::load(&mut one, &ride).await.unwrap());
        assert_eq!(
            store::operations(&mut conn, &ride).await.unwrap(),
            store::operations(&mut one, &ride).await.unwrap()
        );
    }
    assert_eq!(
        store::load(&mut conn, &ride_id()).await.unwrap().settlement,
        Settlement::Captured { amount_cents: 1534 }
    );
}

async fn an_operation_already_journaled_is_refused_without_calling_the_gateway(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply_in_tx(&service, &mut conn, &requested("tok_visa"), epoch())
        .await
        .unwrap();
    // A journal entry the state does not reflect: they disagree.
    execute(
        &mut conn,
        "INSERT INTO payment_operations (idempotency_key, ride_id, operation, amount_cents, \
         outcome, input_message_id, performed_at_ms) \
         VALUES ('r_1/hold', 'r_1', 'hold', 1200, 'held', 'm_x', 0)",
    )
    .await;
    let inputs = [(requested("tok_visa"), epoch()), (assigned(), epoch())];
    let err = apply_batch_in_tx(&service, &mut conn, &inputs)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, BatchError::Input { index: 1, error: HandleError::Permanent(m) }
            if m.contains("r_1/hold was already journaled")),
        "{err:?}"
    );
    assert_eq!(service.gateway().calls("r_1/hold"), 0);
}

async fn a_rider_no_show_captures_the_configured_fee_once_and_stores_the_ending(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service =
        PaymentService::new(GatewayConfig::default()).with_fees(Fees { no_show_cents: 450 });
    for input in [requested("tok_visa"), assigned()] {
        apply_in_tx(&service, &mut conn, &input, epoch())
            .await
            .unwrap();
    }
    let no_show = envelope(RideCancelled {
        rider_id: rider(),
        reason: CancelReason::RiderNoShow,
        driver_id: Some(DriverId::parse("d_bob").unwrap()),
    });
    let out = apply_in_tx(&service, &mut conn, &no_show, epoch())
        .await
        .unwrap();
    assert_eq!(subjects(&out), ["evt.payment.captured.r_1"]);
    assert!(matches!(&out[0].message, Message::PaymentCaptured(c) if c.amount_cents == 450));
    let payment = store::load(&mut conn, &ride_id()).await.unwrap();
    assert_eq!(payment.ending, Some(Ending::RiderNoShow));
    assert_eq!(
        payment.settlement,
        Settlement::Captured { amount_cents: 450 }
    );
    let again = apply_in_tx(&service, &mut conn, &no_show, epoch())
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(
        journal(&mut conn).await,
        [
            ("capture".to_owned(), "captured".to_owned()),
            ("hold".to_owned(), "held".to_owned())
        ]
    );
}

async fn texts_and_the_largest_amounts_survive_the_json_rows(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let odd = "'single' \"double\" back\\slash\ttab\nline ünï 🚕";
    let payments = [
        Payment::default(),
        Payment {
            trip: Some(Trip {
                rider_id: rider(),
                payment_token: format!("tok_{odd}"),
                estimated_fare_cents: i64::MAX as u64,
            }),
            driver_assigned: true,
            ending: Some(Ending::Completed {
                fare_cents: i64::MAX as u64,
            }),
            hold: Hold::Declined {
                code: format!("code {odd}"),
                message: format!("message {odd}"),
            },
            settlement: Settlement::CaptureFailed {
                error: format!("error {odd}"),
            },
        },
        Payment {
            trip: None,
            driver_assigned: false,
            ending: Some(Ending::RiderNoShow),
            hold: Hold::Held {
                hold_id: format!("hold {odd}"),
                amount_cents: i64::MAX as u64,
            },
            settlement: Settlement::Captured {
                amount_cents: i64::MAX as u64,
            },
        },
    ];
    let ride_ids: Vec<RideId> = (0..payments.len())
        .map(|i| RideId::parse(format!("r_{i}")).unwrap())
        .collect();
    // Each ride saved new, then again over itself with the next one's payment.
    for shift in 0..2 {
        let changed: Vec<Changed<'_>> = ride_ids
            .iter()
            .enumerate()
            .map(|(i, ride_id)| Changed {
                ride_id,
                payment: &payments[(i + shift) % payments.len()],
                at: epoch(),
            })
            .collect();
        store::save_many(kind, &changed)
            .unwrap()
            .execute(&mut conn)
            .await
            .unwrap();
        for change in &changed {
            let stored = store::load(&mut conn, change.ride_id).await.unwrap();
            assert_eq!(&stored, change.payment, "{}", change.ride_id);
        }
    }

    let mut too_big = payments[2].clone();
    too_big.settlement = Settlement::Captured {
        amount_cents: i64::MAX as u64 + 1,
    };
    let changed = [Changed {
        ride_id: &ride_ids[0],
        payment: &too_big,
        at: epoch(),
    }];
    let err = store::save_many(kind, &changed).unwrap_err();
    assert!(err.to_string().contains("does not fit BIGINT"), "{err}");
}

#[test]
fn the_no_show_fee_is_read_from_the_settings() {
    let settings = Settings::from_pairs([("RIDESAGA_NO_SHOW_FEE_CENTS", "300")]);
    assert_eq!(
        PaymentService::load(&settings).unwrap().fees,
        Fees { no_show_cents: 300 }
    );
    let none = Settings::from_pairs(Vec::<(String, String)>::new());
    assert_eq!(PaymentService::load(&none).unwrap().fees, Fees::default());
    let bad = Settings::from_pairs([("RIDESAGA_NO_SHOW_FEE_CENTS", "-1")]);
    let err = PaymentService::load(&bad).unwrap_err().to_string();
    assert!(err.contains("RIDESAGA_NO_SHOW_FEE_CENTS"), "{err}");
}

each_backend!(
    a_redelivered_assigned_event_places_one_hold,
    a_transient_gateway_failure_rolls_back_and_the_retry_emits_the_same_event,
    completion_captures_the_fare_once,
    a_refused_capture_is_announced_for_operators_once,
    a_cancel_before_the_assignment_means_no_hold_is_ever_placed,
    a_cancel_after_the_hold_voids_it,
    a_batch_moves_the_money_its_inputs_applied_one_by_one_move_and_each_once,
    an_operation_already_journaled_is_refused_without_calling_the_gateway,
    a_rider_no_show_captures_the_configured_fee_once_and_stores_the_ending,
    texts_and_the_largest_amounts_survive_the_json_rows,
);
