//! Tests of the payment worker: inputs applied one by one and as batches, and the gateway
//! operations they make due performed and settled as the runtime does, against a real
//! database of each backend (every body runs once on SQLite and once on PostgreSQL).

use std::sync::atomic::{AtomicU32, Ordering};

use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, GeoPoint, Message, MessageId, RideCancelled,
    RideCompleted, RideId, RideRequested, RiderId,
};

use super::domain::{Ending, GATEWAY_ERROR, GATEWAY_UNAVAILABLE, Hold, Settlement, Trip};
use super::*;
use crate::testing::{SettleOne, TestDb, each_backend, epoch, execute, timeless};

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
    async fn refund(&self, request: &RefundRequest) -> Result<(), GatewayError> {
        self.failing()?;
        self.inner.refund(request).await
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
        distance_source: ridesaga_schemas::DistanceSource::Reported,
        route_points: 0,
        fare: None,
        route: None,
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

fn journal_of(entries: &[(&str, &str)]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|(operation, outcome)| (operation.to_string(), outcome.to_string()))
        .collect()
}

async fn payment(conn: &mut Conn<'_>) -> Payment {
    store::load(conn, &ride_id()).await.unwrap()
}

/// Inputs applied as one batch, as the runtime applies them (each statement committing on its
/// own here): each input's outputs, and the effects the batch made due.
async fn apply_all<G: Gateway>(
    service: &PaymentService<G>,
    conn: &mut Conn<'_>,
    inputs: &[&Envelope],
) -> Result<(Vec<Vec<Envelope>>, Vec<Effect>), BatchError> {
    let batch: Vec<Input<'_>> = inputs
        .iter()
        .map(|envelope| Input {
            envelope,
            now: epoch(),
            trace: None,
        })
        .collect();
    let done = service.handle_batch(conn, &batch).await?;
    for write in &done.writes {
        write.execute(conn).await.unwrap();
    }
    Ok((done.outputs, done.effects))
}

/// One input applied alone: the effects it made due (it emits nothing itself).
async fn apply<G: Gateway>(
    service: &PaymentService<G>,
    conn: &mut Conn<'_>,
    input: &Envelope,
) -> Vec<Effect> {
    let (outputs, effects) = apply_all(service, conn, &[input]).await.unwrap();
    assert_eq!(outputs, [Vec::<Envelope>::new()], "applying emits nothing");
    effects
}

/// `effect` as the runtime hands it over.
fn pending(effect: &Effect) -> PendingEffect {
    PendingEffect {
        effect: effect.clone(),
        attempts: 0,
        recorded_at: epoch(),
        deadline: Timestamp::from_unix_millis(120_000),
    }
}

/// Performs `effect` as the runtime does, with no transaction open: attempts until one
/// succeeds or fails for good; after `attempts` transient failures it gives up.
async fn perform<G: Gateway>(
    service: &PaymentService<G>,
    effect: &Effect,
    attempts: u32,
) -> EffectOutcome {
    let mut last = String::new();
    for _ in 0..attempts {
        match service.perform(&pending(effect)).await {
            Ok(result) => return EffectOutcome::Done(result),
            Err(EffectError::Permanent(reason)) => return EffectOutcome::Failed(reason),
            Err(EffectError::Transient(error)) => last = error,
        }
    }
    EffectOutcome::GaveUp(last)
}

/// Settles `effect`'s outcome as the runtime does (in one transaction there).
async fn settle<G: Gateway>(
    service: &PaymentService<G>,
    conn: &mut Conn<'_>,
    effect: &Effect,
    outcome: EffectOutcome,
) -> Settled {
    service
        .settle_one(conn, &pending(effect), outcome, epoch())
        .await
        .unwrap()
}

/// Performs and settles `effects`, then the ones settling them made due, until none is left:
/// every event the outcomes announced.
async fn run<G: Gateway>(
    service: &PaymentService<G>,
    conn: &mut Conn<'_>,
    effects: Vec<Effect>,
) -> Vec<Envelope> {
    let mut due = std::collections::VecDeque::from(effects);
    let mut events = Vec::new();
    while let Some(effect) = due.pop_front() {
        let outcome = perform(service, &effect, 5).await;
        let settled = settle(service, conn, &effect, outcome).await;
        events.extend(settled.outputs);
        due.extend(settled.effects);
    }
    events
}

/// The hold placed for ride r_1 (`token`), through the gateway: request, assignment, hold.
async fn held<G: Gateway>(service: &PaymentService<G>, conn: &mut Conn<'_>, token: &str) {
    apply(service, conn, &requested(token)).await;
    let effects = apply(service, conn, &assigned()).await;
    let events = run(service, conn, effects).await;
    assert_eq!(subjects(&events), ["evt.payment.authorized.r_1"]);
}

async fn an_assignment_makes_the_hold_due_without_calling_the_gateway(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    let request = requested("tok_visa");
    assert!(apply(&service, &mut conn, &request).await.is_empty());
    let assigned = assigned();
    let effects = apply(&service, &mut conn, &assigned).await;

    let hold = Operation::Hold {
        token: "tok_visa".into(),
        amount_cents: 1200,
    };
    assert_eq!(
        effects,
        [Effect {
            id: "r_1/hold".into(),
            kind: "payment.hold".into(),
            saga_id: Some(ride_id()),
            request: serde_json::to_string(&hold).unwrap(),
            trace: None,
        }]
    );
    assert_eq!(service.gateway().calls("r_1/hold"), 0, "no call in apply");
    assert_eq!(payment(&mut conn).await.hold, Hold::Pending);
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "pending")]));
    // The assignment again (past the inbox): the hold is pending, so not due twice.
    assert!(apply(&service, &mut conn, &assigned).await.is_empty());

    let outcome = perform(&service, &effects[0], 1).await;
    assert_eq!(service.gateway().calls("r_1/hold"), 1);
    let settled = settle(&service, &mut conn, &effects[0], outcome.clone()).await;
    assert!(settled.effects.is_empty());
    assert_eq!(subjects(&settled.outputs), ["evt.payment.authorized.r_1"]);
    let event = &settled.outputs[0];
    assert_eq!(
        event.id,
        MessageId::derive_from_key("effect/r_1/hold/evt.payment.authorized")
    );
    assert_eq!(event.correlation_id, request.correlation_id, "the saga's");
    assert_eq!(event.producer, "payment");
    assert!(matches!(
        payment(&mut conn).await.hold,
        Hold::Held {
            amount_cents: 1200,
            ..
        }
    ));
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "held")]));

    // Settled again (a second replica, a crash before the effect was forgotten): nothing.
    let again = settle(&service, &mut conn, &effects[0], outcome).await;
    assert!(again.outputs.is_empty() && again.effects.is_empty());
    assert!(apply(&service, &mut conn, &assigned).await.is_empty());
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "held")]));
}

async fn a_transient_gateway_failure_is_retried_by_perform_and_settles_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::with_gateway(Outage {
        down_for: AtomicU32::new(2),
        inner: SimulatedGateway::default(),
    });
    assert!(apply(&service, &mut conn, &assigned()).await.is_empty());
    let effects = apply(&service, &mut conn, &requested("tok_visa")).await;
    for _ in 0..2 {
        let err = service.perform(&pending(&effects[0])).await.unwrap_err();
        assert!(matches!(err, EffectError::Transient(_)), "{err}");
        assert_eq!(payment(&mut conn).await.hold, Hold::Pending);
    }
    let events = run(&service, &mut conn, effects).await;
    assert_eq!(subjects(&events), ["evt.payment.authorized.r_1"]);
    assert_eq!(service.gateway().inner.calls("r_1/hold"), 1);
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "held")]));
}

async fn a_repeated_perform_gets_the_first_answer_and_settles_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply(&service, &mut conn, &requested("tok_visa")).await;
    let effects = apply(&service, &mut conn, &assigned()).await;
    // The claim expired before the outcome was settled: the call is made again, same key.
    let first = service.perform(&pending(&effects[0])).await.unwrap();
    let second = service.perform(&pending(&effects[0])).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(service.gateway().calls("r_1/hold"), 2);
    let settled = settle(&service, &mut conn, &effects[0], EffectOutcome::Done(first)).await;
    assert_eq!(subjects(&settled.outputs), ["evt.payment.authorized.r_1"]);
    let again = settle(
        &service,
        &mut conn,
        &effects[0],
        EffectOutcome::Done(second),
    )
    .await;
    assert!(again.outputs.is_empty());
}

async fn completion_captures_the_fare_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    held(&service, &mut conn, "tok_visa").await;
    let done = completed(1534);
    let effects = apply(&service, &mut conn, &done).await;
    assert_eq!(effects.len(), 1);
    assert_eq!(
        (effects[0].id.as_str(), effects[0].kind.as_str()),
        ("r_1/capture", "payment.capture")
    );
    assert_eq!(service.gateway().calls("r_1/capture"), 0);
    assert_eq!(payment(&mut conn).await.settlement, Settlement::Pending);
    assert!(apply(&service, &mut conn, &done).await.is_empty());
    let events = run(&service, &mut conn, effects).await;
    assert!(matches!(
        &events[..],
        [Envelope { message: Message::PaymentCaptured(c), .. }] if c.amount_cents == 1534
    ));
    assert!(apply(&service, &mut conn, &done).await.is_empty());
    assert_eq!(service.gateway().calls("r_1/capture"), 1);
    assert_eq!(
        payment(&mut conn).await.settlement,
        Settlement::Captured { amount_cents: 1534 }
    );
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("capture", "captured"), ("hold", "held")])
    );
}

async fn a_refused_capture_is_announced_for_operators_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    held(&service, &mut conn, gateway::CAPTURE_FAILS_TOKEN).await;
    let effects = apply(&service, &mut conn, &completed(1500)).await;
    let events = run(&service, &mut conn, effects).await;
    assert_eq!(subjects(&events), ["evt.payment.capture_failed.r_1"]);
    assert!(
        apply(&service, &mut conn, &completed(1500))
            .await
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
        assert!(apply(&service, &mut conn, &input).await.is_empty());
    }
    assert_eq!(service.gateway().calls("r_1/hold"), 0);
    assert!(journal(&mut conn).await.is_empty());
}

async fn a_cancel_after_the_hold_voids_it(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    held(&service, &mut conn, "tok_visa").await;
    let effects = apply(&service, &mut conn, &cancelled()).await;
    assert_eq!(effects[0].kind, "payment.void");
    assert_eq!(service.gateway().calls("r_1/void"), 0);
    let events = run(&service, &mut conn, effects).await;
    assert_eq!(subjects(&events), ["evt.payment.voided.r_1"]);
    assert_eq!(payment(&mut conn).await.settlement, Settlement::Voided);
}

async fn a_cancel_while_the_hold_is_pending_voids_it_once_it_is_placed(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply(&service, &mut conn, &requested("tok_visa")).await;
    let hold = apply(&service, &mut conn, &assigned()).await;
    assert!(apply(&service, &mut conn, &cancelled()).await.is_empty());
    let outcome = perform(&service, &hold[0], 1).await;
    let settled = settle(&service, &mut conn, &hold[0], outcome).await;
    assert_eq!(subjects(&settled.outputs), ["evt.payment.authorized.r_1"]);
    assert_eq!(settled.effects.len(), 1);
    let void = &settled.effects[0];
    assert_eq!(
        (void.id.as_str(), void.kind.as_str()),
        ("r_1/void", "payment.void")
    );
    assert_eq!(service.gateway().calls("r_1/void"), 0, "no call in settle");
    assert_eq!(payment(&mut conn).await.settlement, Settlement::Pending);
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("hold", "held"), ("void", "pending")])
    );
    let events = run(&service, &mut conn, settled.effects).await;
    assert_eq!(subjects(&events), ["evt.payment.voided.r_1"]);
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("hold", "held"), ("void", "voided")])
    );
}

async fn a_completion_while_the_hold_is_pending_captures_once_it_is_placed(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply(&service, &mut conn, &requested("tok_visa")).await;
    let hold = apply(&service, &mut conn, &assigned()).await;
    assert!(
        apply(&service, &mut conn, &completed(1534))
            .await
            .is_empty()
    );
    let events = run(&service, &mut conn, hold).await;
    assert_eq!(
        subjects(&events),
        ["evt.payment.authorized.r_1", "evt.payment.captured.r_1"]
    );
    assert_eq!(
        payment(&mut conn).await.settlement,
        Settlement::Captured { amount_cents: 1534 }
    );
}

async fn a_hold_the_gateway_refuses_for_good_is_declined_as_a_gateway_error(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply(
        &service,
        &mut conn,
        &requested(gateway::GATEWAY_REJECTS_TOKEN),
    )
    .await;
    let effects = apply(&service, &mut conn, &assigned()).await;
    let outcome = perform(&service, &effects[0], 5).await;
    assert!(matches!(&outcome, EffectOutcome::Failed(_)), "{outcome:?}");
    assert_eq!(
        service.gateway().calls("r_1/hold"),
        1,
        "a refusal is not retried"
    );
    let settled = settle(&service, &mut conn, &effects[0], outcome).await;
    assert!(settled.effects.is_empty());
    assert!(
        matches!(&settled.outputs[..], [Envelope { message: Message::PaymentDeclined(d), .. }]
            if d.code == GATEWAY_ERROR),
        "{:?}",
        settled.outputs
    );
    let hold = payment(&mut conn).await.hold;
    assert!(matches!(&hold, Hold::Declined { code, .. } if code == GATEWAY_ERROR));
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "failed")]));
    // The ride is cancelled payment_declined: nothing to void.
    let cancel = envelope(RideCancelled {
        rider_id: rider(),
        reason: CancelReason::PaymentDeclined,
        driver_id: Some(DriverId::parse("d_bob").unwrap()),
    });
    assert!(apply(&service, &mut conn, &cancel).await.is_empty());
}

async fn a_hold_that_never_reaches_the_gateway_is_declined_as_unavailable(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig {
        latency: std::time::Duration::ZERO,
        failure_rate: 1.0,
    });
    apply(&service, &mut conn, &requested("tok_visa")).await;
    let effects = apply(&service, &mut conn, &assigned()).await;
    let outcome = perform(&service, &effects[0], 3).await;
    assert!(
        matches!(&outcome, EffectOutcome::GaveUp(e) if e.contains("unavailable")),
        "{outcome:?}"
    );
    let settled = settle(&service, &mut conn, &effects[0], outcome).await;
    assert!(
        matches!(&settled.outputs[..], [Envelope { message: Message::PaymentDeclined(d), .. }]
            if d.code == GATEWAY_UNAVAILABLE),
        "{:?}",
        settled.outputs
    );
    assert_eq!(journal(&mut conn).await, journal_of(&[("hold", "gave_up")]));
}

async fn a_capture_that_fails_or_gives_up_is_announced_as_a_failed_capture(kind: Kind) {
    for outcome in [
        EffectOutcome::Failed("payment gateway refused (gateway_error): no".into()),
        EffectOutcome::GaveUp("payment gateway unavailable: timed out".into()),
    ] {
        let mut db = database(kind).await;
        let mut conn = db.conn();
        let service = PaymentService::new(GatewayConfig::default());
        held(&service, &mut conn, "tok_visa").await;
        let effects = apply(&service, &mut conn, &completed(1500)).await;
        let label = match &outcome {
            EffectOutcome::Failed(_) => "failed",
            _ => "gave_up",
        };
        let settled = settle(&service, &mut conn, &effects[0], outcome).await;
        assert!(settled.effects.is_empty());
        let messages: Vec<&Message> = settled.outputs.iter().map(|e| &e.message).collect();
        assert!(
            matches!(&messages[..], [Message::PaymentCaptureFailed(f)] if f.amount_cents == 1500),
            "{messages:?}"
        );
        assert!(matches!(
            payment(&mut conn).await.settlement,
            Settlement::CaptureFailed { .. }
        ));
        assert_eq!(
            journal(&mut conn).await,
            journal_of(&[("capture", label), ("hold", "held")])
        );
        assert_eq!(service.gateway().calls("r_1/capture"), 0);
    }
}

async fn a_void_that_fails_or_gives_up_is_recorded_for_operators_without_an_event(kind: Kind) {
    for (outcome, label, code) in [
        (
            EffectOutcome::Failed("payment gateway refused (gateway_error): no".into()),
            "failed",
            GATEWAY_ERROR,
        ),
        (
            EffectOutcome::GaveUp("payment gateway unavailable: timed out".into()),
            "gave_up",
            GATEWAY_UNAVAILABLE,
        ),
    ] {
        let mut db = database(kind).await;
        let mut conn = db.conn();
        let service = PaymentService::new(GatewayConfig::default());
        held(&service, &mut conn, "tok_visa").await;
        let effects = apply(&service, &mut conn, &cancelled()).await;
        let settled = settle(&service, &mut conn, &effects[0], outcome).await;
        assert!(
            settled.outputs.is_empty() && settled.effects.is_empty(),
            "{settled:?}"
        );
        let stored = payment(&mut conn).await;
        let Settlement::VoidFailed { error } = &stored.settlement else {
            panic!("{:?}", stored.settlement);
        };
        assert!(error.starts_with(code), "{error}");
        assert_eq!(
            journal(&mut conn).await,
            journal_of(&[("hold", "held"), ("void", label)])
        );
        assert!(apply(&service, &mut conn, &cancelled()).await.is_empty());
    }
}

/// Another ride's copy of `input`.
fn of_ride(mut input: Envelope, ride: &str) -> Envelope {
    input.saga_id = Some(RideId::parse(ride).unwrap());
    input
}

async fn a_batch_makes_due_what_its_inputs_applied_one_by_one_make_due_and_each_once(kind: Kind) {
    let inputs: Vec<Envelope> = vec![
        requested("tok_visa"),
        of_ride(assigned(), "r_2"),
        assigned(),
        of_ride(requested("tok_visa"), "r_2"),
        completed(1534),
        of_ride(cancelled(), "r_2"),
        completed(1534),
    ];
    let one_service = PaymentService::new(GatewayConfig::default());
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let mut one_by_one = Vec::new();
    for input in &inputs {
        one_by_one.extend(apply(&one_service, &mut one, input).await);
    }
    let service = PaymentService::new(GatewayConfig::default());
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let all: Vec<&Envelope> = inputs.iter().collect();
    let (outputs, effects) = apply_all(&service, &mut conn, &all).await.unwrap();
    assert_eq!(timeless(outputs), vec![Vec::new(); inputs.len()]);
    assert_eq!(effects, one_by_one);
    let ids: Vec<&str> = effects.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["r_1/hold", "r_2/hold"]);
    for key in ["r_1/hold", "r_2/hold"] {
        assert_eq!(service.gateway().calls(key), 0, "{key}");
    }

    let events = run(&service, &mut conn, effects).await;
    let one_events = run(&one_service, &mut one, one_by_one).await;
    assert_eq!(timeless(vec![events.clone()]), timeless(vec![one_events]));
    let mut kinds = subjects(&events);
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "evt.payment.authorized.r_1",
            "evt.payment.authorized.r_2",
            "evt.payment.captured.r_1",
            "evt.payment.voided.r_2"
        ]
    );
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
        payment(&mut conn).await.settlement,
        Settlement::Captured { amount_cents: 1534 }
    );
}

/// `effects` finished with the outcomes `service` gets for them.
async fn finish<G: Gateway>(service: &PaymentService<G>, effects: &[Effect]) -> Vec<Finished> {
    let mut finished = Vec::new();
    for effect in effects {
        finished.push(Finished {
            effect: pending(effect),
            outcome: perform(service, effect, 1).await,
        });
    }
    finished
}

async fn a_group_of_outcomes_settles_as_its_outcomes_one_by_one_and_each_once(kind: Kind) {
    let inputs: Vec<Envelope> = vec![
        requested("tok_visa"),
        assigned(),
        of_ride(requested("tok_visa"), "r_2"),
        of_ride(assigned(), "r_2"),
        completed(1534),
        of_ride(cancelled(), "r_2"),
    ];
    let all: Vec<&Envelope> = inputs.iter().collect();
    let one_service = PaymentService::new(GatewayConfig::default());
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let (_, holds) = apply_all(&one_service, &mut one, &all).await.unwrap();
    let service = PaymentService::new(GatewayConfig::default());
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let (_, group_holds) = apply_all(&service, &mut conn, &all).await.unwrap();
    assert_eq!(holds, group_holds);

    let mut one_events = Vec::new();
    let mut one_due = Vec::new();
    for hold in &holds {
        let outcome = perform(&one_service, hold, 1).await;
        let settled = settle(&one_service, &mut one, hold, outcome).await;
        one_events.extend(settled.outputs);
        one_due.extend(settled.effects);
    }
    let finished = finish(&service, &group_holds).await;
    let settled = service.settle(&mut conn, &finished, epoch()).await.unwrap();
    assert_eq!(
        timeless(vec![settled.outputs.clone()]),
        timeless(vec![one_events])
    );
    assert_eq!(
        subjects(&settled.outputs),
        ["evt.payment.authorized.r_1", "evt.payment.authorized.r_2"]
    );
    assert_eq!(settled.effects, one_due);
    let due: Vec<&str> = settled.effects.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(due, ["r_1/capture", "r_2/void"]);
    for ride in ["r_1", "r_2"] {
        let ride = RideId::parse(ride).unwrap();
        assert_eq!(
            store::load(&mut conn, &ride).await.unwrap(),
            store::load(&mut one, &ride).await.unwrap()
        );
        assert_eq!(
            store::operations(&mut conn, &ride).await.unwrap(),
            store::operations(&mut one, &ride).await.unwrap()
        );
    }

    // Settled again (a replica whose claim expired): nothing changes, nothing is announced.
    let again = service.settle(&mut conn, &finished, epoch()).await.unwrap();
    assert!(again.outputs.is_empty() && again.effects.is_empty());

    // An outcome that cannot be read is refused by its index, before anything is written.
    let mut next = finish(&service, &settled.effects).await;
    next[1].effect.effect.request = "{".into();
    match service.settle(&mut conn, &next, epoch()).await {
        Err(BatchError::Input { index: 1, error }) => {
            assert!(
                error.to_string().contains("unreadable request of r_2/void"),
                "{error}"
            )
        }
        other => panic!("expected the second outcome refused, got {other:?}"),
    }
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("capture", "pending"), ("hold", "held")])
    );
}

async fn an_operation_already_journaled_is_refused_without_making_it_due(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    apply(&service, &mut conn, &requested("tok_visa")).await;
    // A journal entry the state does not reflect: they disagree.
    execute(
        &mut conn,
        "INSERT INTO payment_operations (idempotency_key, ride_id, operation, amount_cents, \
         outcome, input_message_id, recorded_at_ms) \
         VALUES ('r_1/hold', 'r_1', 'hold', 1200, 'held', 'm_x', 0)",
    )
    .await;
    let requested = requested("tok_visa");
    let assigned = assigned();
    let err = apply_all(&service, &mut conn, &[&requested, &assigned])
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
    let service = PaymentService::new(GatewayConfig::default()).with_fees(Fees {
        no_show_cents: 450,
        ..Fees::default()
    });
    held(&service, &mut conn, "tok_visa").await;
    let no_show = envelope(RideCancelled {
        rider_id: rider(),
        reason: CancelReason::RiderNoShow,
        driver_id: Some(DriverId::parse("d_bob").unwrap()),
    });
    let effects = apply(&service, &mut conn, &no_show).await;
    assert_eq!(effects[0].kind, "payment.capture");
    let out = run(&service, &mut conn, effects).await;
    assert_eq!(subjects(&out), ["evt.payment.captured.r_1"]);
    assert!(matches!(&out[0].message, Message::PaymentCaptured(c) if c.amount_cents == 450));
    let stored = payment(&mut conn).await;
    assert_eq!(stored.ending, Some(Ending::RiderNoShow));
    assert_eq!(
        stored.settlement,
        Settlement::Captured { amount_cents: 450 }
    );
    assert!(apply(&service, &mut conn, &no_show).await.is_empty());
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("capture", "captured"), ("hold", "held")])
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
            driver_id: None,
            fare: None,
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
            commission_cents: Some(i64::MAX as u64),
            refunds: vec![
                domain::Refund {
                    refund_id: ridesaga_schemas::RefundId::parse("rf_1").unwrap(),
                    amount_cents: Some(i64::MAX as u64),
                    reason: Some(format!("reason {odd}")),
                    status: domain::RefundStatus::Refused {
                        code: format!("code {odd}"),
                        reason: format!("reason {odd}"),
                    },
                },
                domain::Refund {
                    refund_id: ridesaga_schemas::RefundId::parse("rf_2").unwrap(),
                    amount_cents: None,
                    reason: None,
                    status: domain::RefundStatus::Pending,
                },
            ],
        },
        Payment {
            trip: None,
            driver_assigned: false,
            driver_id: None,
            fare: None,
            ending: Some(Ending::RiderNoShow),
            hold: Hold::Held {
                hold_id: format!("hold {odd}"),
                amount_cents: i64::MAX as u64,
            },
            settlement: Settlement::Captured {
                amount_cents: i64::MAX as u64,
            },
            commission_cents: None,
            refunds: Vec::new(),
        },
        Payment {
            trip: None,
            driver_assigned: true,
            driver_id: None,
            fare: None,
            ending: Some(Ending::Cancelled),
            hold: Hold::Pending,
            settlement: Settlement::Pending,
            commission_cents: None,
            refunds: Vec::new(),
        },
        Payment {
            trip: None,
            driver_assigned: true,
            driver_id: None,
            fare: None,
            ending: Some(Ending::Cancelled),
            hold: Hold::Held {
                hold_id: "hold_1".into(),
                amount_cents: 1,
            },
            settlement: Settlement::VoidFailed {
                error: format!("error {odd}"),
            },
            commission_cents: None,
            refunds: Vec::new(),
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
                correlation_id: Some(odd),
                at: epoch(),
            })
            .collect();
        store::save_many(kind, &changed)
            .unwrap()
            .execute(&mut conn)
            .await
            .unwrap();
        for change in &changed {
            let mut loaded = store::load_many(&mut conn, &[change.ride_id.as_str()])
                .await
                .unwrap();
            let stored = loaded.remove(change.ride_id).unwrap().unwrap();
            assert_eq!(&stored.payment, change.payment, "{}", change.ride_id);
            assert_eq!(stored.correlation_id.as_deref(), Some(odd));
        }
    }

    let mut too_big = payments[2].clone();
    too_big.settlement = Settlement::Captured {
        amount_cents: i64::MAX as u64 + 1,
    };
    let changed = [Changed {
        ride_id: &ride_ids[0],
        payment: &too_big,
        correlation_id: None,
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
        Fees {
            no_show_cents: 300,
            ..Fees::default()
        }
    );
    let none = Settings::from_pairs(Vec::<(String, String)>::new());
    assert_eq!(PaymentService::load(&none).unwrap().fees, Fees::default());
    let bad = Settings::from_pairs([("RIDESAGA_NO_SHOW_FEE_CENTS", "-1")]);
    let err = PaymentService::load(&bad).unwrap_err().to_string();
    assert!(err.contains("RIDESAGA_NO_SHOW_FEE_CENTS"), "{err}");
}

each_backend!(
    an_assignment_makes_the_hold_due_without_calling_the_gateway,
    a_transient_gateway_failure_is_retried_by_perform_and_settles_once,
    a_repeated_perform_gets_the_first_answer_and_settles_once,
    completion_captures_the_fare_once,
    a_refused_capture_is_announced_for_operators_once,
    a_cancel_before_the_assignment_means_no_hold_is_ever_placed,
    a_cancel_after_the_hold_voids_it,
    a_cancel_while_the_hold_is_pending_voids_it_once_it_is_placed,
    a_completion_while_the_hold_is_pending_captures_once_it_is_placed,
    a_hold_the_gateway_refuses_for_good_is_declined_as_a_gateway_error,
    a_hold_that_never_reaches_the_gateway_is_declined_as_unavailable,
    a_capture_that_fails_or_gives_up_is_announced_as_a_failed_capture,
    a_void_that_fails_or_gives_up_is_recorded_for_operators_without_an_event,
    a_batch_makes_due_what_its_inputs_applied_one_by_one_make_due_and_each_once,
    a_group_of_outcomes_settles_as_its_outcomes_one_by_one_and_each_once,
    an_operation_already_journaled_is_refused_without_making_it_due,
    a_rider_no_show_captures_the_configured_fee_once_and_stores_the_ending,
    texts_and_the_largest_amounts_survive_the_json_rows,
    a_refund_redelivered_and_settled_twice_refunds_and_reverses_once,
    an_over_refund_is_refused_at_once_without_calling_the_gateway,
    a_refund_the_gateway_cannot_make_is_refused_and_leaves_the_amount_refundable,
    a_flag_after_the_capture_holds_the_share_and_an_approval_releases_it_once,
    a_flag_and_a_rejection_before_the_capture_forfeit_the_share_when_it_settles,
);

fn refund_command(id: &str, amount_cents: Option<u64>) -> Envelope {
    envelope(RefundRide {
        refund_id: ridesaga_schemas::RefundId::parse(id).unwrap(),
        amount_cents,
        reason: Some("detour".into()),
    })
}

/// The ride's ledger entries: `(entry_id, amount_cents)`.
async fn ledger(conn: &mut Conn<'_>) -> Vec<(String, i64)> {
    store::ledger_of(conn, &ride_id())
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _, amount, _)| (id, amount))
        .collect()
}

/// Ride r_1 held, completed and its fare of 1300 captured (split 1040 / 260).
async fn captured<G: Gateway>(service: &PaymentService<G>, conn: &mut Conn<'_>) {
    held(service, conn, "tok_visa").await;
    let effects = apply(service, conn, &completed(1300)).await;
    let events = run(service, conn, effects).await;
    assert_eq!(subjects(&events), ["evt.payment.captured.r_1"]);
}

/// A refund command applied alone: what it emitted at once, and the effects it made due.
async fn refund<G: Gateway>(
    service: &PaymentService<G>,
    conn: &mut Conn<'_>,
    command: &Envelope,
) -> (Vec<Envelope>, Vec<Effect>) {
    let (mut outputs, effects) = apply_all(service, conn, &[command]).await.unwrap();
    (outputs.remove(0), effects)
}

async fn a_refund_redelivered_and_settled_twice_refunds_and_reverses_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    captured(&service, &mut conn).await;

    let command = refund_command("rf_1", Some(500));
    let (outputs, effects) = refund(&service, &mut conn, &command).await;
    assert!(outputs.is_empty(), "announced once the gateway answers");
    assert_eq!(effects.len(), 1);
    assert_eq!(effects[0].id, "r_1/refund/rf_1");
    assert_eq!(effects[0].kind, "payment.refund");
    assert_eq!(
        service.gateway().calls("r_1/refund/rf_1"),
        0,
        "no call in apply"
    );
    // The command redelivered past the inbox, and retried under a new message id: the refund
    // id is known, so nothing more is due.
    let retried = refund_command("rf_1", Some(500));
    for again in [&command, &retried] {
        assert_eq!(refund(&service, &mut conn, again).await, (vec![], vec![]));
    }
    // The gateway asked twice (a claim that expired), its outcome settled twice.
    let first = perform(&service, &effects[0], 1).await;
    let second = perform(&service, &effects[0], 1).await;
    assert_eq!(first, second);
    assert_eq!(service.gateway().calls("r_1/refund/rf_1"), 2);
    let settled = settle(&service, &mut conn, &effects[0], first).await;
    assert_eq!(subjects(&settled.outputs), ["evt.payment.refunded.r_1"]);
    let Message::PaymentRefunded(refunded) = &settled.outputs[0].message else {
        panic!()
    };
    assert_eq!(
        (
            refunded.amount_cents,
            refunded.refunded_cents,
            refunded.captured_cents
        ),
        (500, 500, 1300)
    );
    let reversal = refunded.reversal.clone().expect("the ledger's reversal");
    assert_eq!(
        (reversal.driver_cents, reversal.commission_cents),
        (400, 100)
    );
    let again = settle(&service, &mut conn, &effects[0], second).await;
    assert!(again.outputs.is_empty() && again.effects.is_empty());

    let entries = ledger(&mut conn).await;
    assert_eq!(
        entries,
        [
            ("r_1/capture/driver".to_string(), 1040),
            ("r_1/capture/platform".to_string(), 260),
            ("r_1/refund/rf_1/driver".to_string(), -400),
            ("r_1/refund/rf_1/platform".to_string(), -100),
        ]
    );
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[
            ("capture", "captured"),
            ("hold", "held"),
            ("refund", "refunded")
        ])
    );

    // The rest, without an amount; then nothing is left.
    let (_, effects) = refund(&service, &mut conn, &refund_command("rf_2", None)).await;
    let events = run(&service, &mut conn, effects).await;
    let [event] = &events[..] else {
        panic!("{events:?}")
    };
    let Message::PaymentRefunded(rest) = &event.message else {
        panic!("{event:?}")
    };
    assert_eq!((rest.amount_cents, rest.refunded_cents), (800, 1300));
    let entries = ledger(&mut conn).await;
    assert_eq!(entries.len(), 6);
    assert_eq!(
        entries.iter().map(|(_, a)| a).sum::<i64>(),
        0,
        "all reversed"
    );
    let (outputs, effects) = refund(&service, &mut conn, &refund_command("rf_3", None)).await;
    assert!(effects.is_empty());
    assert_eq!(subjects(&outputs), ["evt.payment.refund_refused.r_1"]);
    assert_eq!(payment(&mut conn).await.refunded_cents(), 1300);
}

async fn an_over_refund_is_refused_at_once_without_calling_the_gateway(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    // Nothing captured yet: the hold only.
    held(&service, &mut conn, "tok_visa").await;
    let command = refund_command("rf_early", None);
    let (outputs, effects) = refund(&service, &mut conn, &command).await;
    assert!(effects.is_empty());
    let [refused] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    assert_eq!(refused.causation_id.as_ref(), Some(&command.id));
    assert!(matches!(&refused.message,
        Message::PaymentRefundRefused(r) if r.code == ridesaga_schemas::REFUND_NOTHING_CAPTURED));

    let effects = apply(&service, &mut conn, &completed(1300)).await;
    run(&service, &mut conn, effects).await;
    let (outputs, effects) =
        refund(&service, &mut conn, &refund_command("rf_big", Some(1301))).await;
    assert!(effects.is_empty());
    let [refused] = &outputs[..] else {
        panic!("{outputs:?}")
    };
    let Message::PaymentRefundRefused(r) = &refused.message else {
        panic!()
    };
    assert_eq!(r.code, ridesaga_schemas::REFUND_EXCEEDS_CAPTURE);
    assert_eq!(r.rider_id, Some(rider()));
    assert_eq!(ledger(&mut conn).await.len(), 2, "no reversal");
    assert_eq!(
        journal(&mut conn).await,
        journal_of(&[("capture", "captured"), ("hold", "held")]),
        "the gateway was never asked"
    );
    // The refused refund is remembered: the same id is answered by nothing more.
    assert_eq!(
        refund(&service, &mut conn, &refund_command("rf_big", Some(1))).await,
        (vec![], vec![])
    );
    assert_eq!(payment(&mut conn).await.refundable_cents(), 1300);
}

async fn a_refund_the_gateway_cannot_make_is_refused_and_leaves_the_amount_refundable(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::with_gateway(Outage::default());
    captured(&service, &mut conn).await;
    let (_, effects) = refund(&service, &mut conn, &refund_command("rf_1", Some(700))).await;
    // Unreachable until the deadline: given up, refused as unavailable.
    service.gateway().down_for.store(10, Ordering::SeqCst);
    let outcome = perform(&service, &effects[0], 3).await;
    assert!(matches!(outcome, EffectOutcome::GaveUp(_)), "{outcome:?}");
    let settled = settle(&service, &mut conn, &effects[0], outcome).await;
    let [event] = &settled.outputs[..] else {
        panic!()
    };
    assert!(matches!(&event.message,
        Message::PaymentRefundRefused(r) if r.code == GATEWAY_UNAVAILABLE));
    assert_eq!(payment(&mut conn).await.refundable_cents(), 1300);
    assert_eq!(ledger(&mut conn).await.len(), 2, "no reversal");
}

fn ride_flagged() -> Envelope {
    envelope(ridesaga_schemas::RideFlagged {
        rider_id: rider(),
        driver_id: DriverId::parse("d_bob").unwrap(),
        reasons: vec!["impossible_speed: 4000 km/h".into()],
    })
}

fn ride_reviewed(decision: ridesaga_schemas::ReviewDecision) -> Envelope {
    envelope(ridesaga_schemas::RideReviewed {
        rider_id: rider(),
        driver_id: DriverId::parse("d_bob").unwrap(),
        decision,
        note: None,
    })
}

/// The ledger's entries of ride r_1, as `(account, amount, operation)` in entry id order.
async fn ledger_moves(conn: &mut Conn<'_>) -> Vec<(String, i64, String)> {
    let sql = "SELECT account, amount_cents, operation FROM ledger_entries \
               WHERE ride_id = 'r_1' ORDER BY entry_id";
    let rows: Vec<(String, i64, String)> = match conn {
        Conn::Sqlite(c) => sqlx::query_as(sql).fetch_all(&mut **c).await.unwrap(),
        Conn::Postgres(c) => sqlx::query_as(sql).fetch_all(&mut **c).await.unwrap(),
    };
    rows
}

/// The statuses `outputs` announce on `evt.payment.earnings_hold`, with their amounts.
fn hold_steps_of(outputs: &[Envelope]) -> Vec<(&'static str, u64)> {
    outputs
        .iter()
        .filter_map(|e| match &e.message {
            Message::EarningsHold(m) => Some((m.status.as_str(), m.amount_cents)),
            _ => None,
        })
        .collect()
}

async fn a_flag_after_the_capture_holds_the_share_and_an_approval_releases_it_once(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    held(&service, &mut conn, "tok_visa").await;
    let effects = apply(&service, &mut conn, &completed(1500)).await;
    run(&service, &mut conn, effects).await;
    let flag = ride_flagged();
    let (outputs, effects) = apply_all(&service, &mut conn, &[&flag]).await.unwrap();
    assert!(effects.is_empty(), "holding earnings calls no gateway");
    // 20 % commission: the driver's share is 1200.
    assert_eq!(hold_steps_of(&outputs[0]), [("held", 1200)]);
    let announced = &outputs[0][0];
    assert_eq!(
        announced.id,
        MessageId::derive_from_key("r_1/evt.payment.earnings_hold/held")
    );
    assert_eq!(announced.subject(), "evt.payment.earnings_hold.r_1");
    // The flag again (redelivered, or a copy under another id): held once.
    let (again, _) = apply_all(&service, &mut conn, &[&flag, &ride_flagged()])
        .await
        .unwrap();
    assert!(again.iter().all(Vec::is_empty), "{again:?}");
    let approve = ride_reviewed(ridesaga_schemas::ReviewDecision::Approve);
    let (outputs, _) = apply_all(&service, &mut conn, &[&approve]).await.unwrap();
    assert_eq!(hold_steps_of(&outputs[0]), [("released", 1200)]);
    let (again, _) = apply_all(&service, &mut conn, &[&approve]).await.unwrap();
    assert!(again[0].is_empty());
    let reject = ride_reviewed(ridesaga_schemas::ReviewDecision::Reject);
    let (late, _) = apply_all(&service, &mut conn, &[&reject]).await.unwrap();
    assert!(late[0].is_empty(), "the first decision stands");
    let entries = ledger_moves(&mut conn).await;
    let entry = |account: &str, cents: i64, operation: &str| {
        (account.to_owned(), cents, operation.to_owned())
    };
    assert_eq!(
        entries,
        [
            entry("driver", 1200, "capture"),
            entry("platform", 300, "capture"),
            entry("driver", -1200, "hold"),
            entry("held", 1200, "hold"),
            entry("driver", 1200, "release"),
            entry("held", -1200, "release"),
        ]
    );
    assert_eq!(entries.iter().map(|e| e.1).sum::<i64>(), 1500, "balanced");
}

async fn a_flag_and_a_rejection_before_the_capture_forfeit_the_share_when_it_settles(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let service = PaymentService::new(GatewayConfig::default());
    held(&service, &mut conn, "tok_visa").await;
    let done = completed(1000);
    let flag = ride_flagged();
    let reject = ride_reviewed(ridesaga_schemas::ReviewDecision::Reject);
    // All in one batch, before the capture settles: nothing to hold yet.
    let (outputs, effects) = apply_all(&service, &mut conn, &[&done, &flag, &reject])
        .await
        .unwrap();
    assert!(outputs.iter().all(Vec::is_empty), "{outputs:?}");
    assert_eq!(effects.len(), 1, "the capture");
    assert!(ledger_moves(&mut conn).await.is_empty());
    let events = run(&service, &mut conn, effects).await;
    assert_eq!(
        subjects(&events),
        [
            "evt.payment.captured.r_1",
            "evt.payment.earnings_hold.r_1",
            "evt.payment.earnings_hold.r_1"
        ]
    );
    assert_eq!(hold_steps_of(&events), [("held", 800), ("forfeited", 800)]);
    // Redelivered afterwards: nothing moves again.
    let (again, effects) = apply_all(&service, &mut conn, &[&flag, &reject, &done])
        .await
        .unwrap();
    assert!(again.iter().all(Vec::is_empty) && effects.is_empty());
    let entries = ledger_moves(&mut conn).await;
    let sum =
        |account: &str| -> i64 { entries.iter().filter(|e| e.0 == account).map(|e| e.1).sum() };
    assert_eq!(
        (
            sum("driver"),
            sum("held"),
            sum("forfeited"),
            sum("platform")
        ),
        (0, 0, 800, 200)
    );
    assert_eq!(entries.len(), 6);
}
