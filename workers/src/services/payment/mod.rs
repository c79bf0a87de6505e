//! The payment service: places a hold for the estimated fare once a driver is assigned,
//! captures the final fare when the ride completes, and voids the hold when it is cancelled.
//!
//! Each input is recorded as a fact, then every gateway operation the facts call for runs with
//! an idempotency key (ride id + operation) and its result is saved in the same transaction.
//! A batch of inputs loads its payments in one statement and saves them with the batch's
//! commit.
//! A transient gateway failure rolls the transaction back and naks the input; the retry asks
//! the gateway again with the same key, so money never moves twice, and a committed result
//! makes the operation never due again.
//!
//! # Layout
//! - [`domain`]: the pure state machine.
//! - [`gateway`]: the gateway trait and the simulated gateway.
//! - [`store`]: the `payments` and `payment_operations` tables.
//! - this file: the [`Worker`].

pub mod domain;
pub mod gateway;
pub mod store;

use std::collections::HashMap;

use ridesaga_schemas::{Envelope, RideId, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use tracing::debug;

use self::domain::{Operation, Outcome, Payment};
use self::gateway::{
    Gateway, GatewayConfig, GatewayError, HoldOutcome, HoldRequest, SettleRequest, SimulatedGateway,
};
use self::store::Changed;
use crate::config::{ConfigError, Settings};
use crate::runtime::{BatchError, BatchOutput, HandleError, Input, Worker, apply_as_batch};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/payment");

/// Operations one input can make due: a hold, then a capture or a void.
const MAX_OPERATIONS_PER_INPUT: usize = 3;

/// The payment service as the runtime runs it.
#[derive(Debug)]
pub struct PaymentService<G = SimulatedGateway> {
    gateway: G,
}

impl PaymentService {
    /// Reads the service's settings; the gateway is the simulated one.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self::new(GatewayConfig::load(settings)?))
    }

    pub fn new(config: GatewayConfig) -> Self {
        Self::with_gateway(SimulatedGateway::new(config))
    }
}

impl<G: Gateway> PaymentService<G> {
    pub fn with_gateway(gateway: G) -> Self {
        PaymentService { gateway }
    }

    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    /// Applies a batch's inputs in order against the payments loaded for all of them in one
    /// statement; the payments that changed and the operations journaled are saved with one
    /// statement each when the batch commits.
    async fn apply_many(
        &self,
        conn: &mut SqliteConnection,
        inputs: &[Input<'_>],
    ) -> Result<BatchOutput, BatchError> {
        let ride_ids: Vec<&str> = inputs
            .iter()
            .filter_map(|input| input.envelope.saga_id.as_ref().map(RideId::as_str))
            .collect();
        let mut batch = Batch {
            payments: store::load_many(conn, &ride_ids)
                .await
                .map_err(BatchError::Batch)?
                .into_iter()
                .map(|(id, stored)| (id, stored.map(Slot::stored)))
                .collect(),
            changed: Vec::new(),
            journal: Vec::new(),
        };
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut batch, input).await;
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        let mut writes = Vec::new();
        if !batch.journal.is_empty() {
            writes.push(store::journal_many(&batch.journal).map_err(BatchError::Batch)?);
        }
        let changed: Vec<Changed<'_>> = batch
            .changed
            .iter()
            .filter_map(|ride_id| match batch.payments.get(ride_id) {
                Some(Ok(Slot {
                    payment,
                    changed_at: Some(at),
                    ..
                })) => Some(Changed {
                    ride_id,
                    payment,
                    at: *at,
                }),
                _ => None,
            })
            .collect();
        if !changed.is_empty() {
            writes.push(store::save_many(&changed).map_err(BatchError::Batch)?);
        }
        Ok(BatchOutput { outputs, writes })
    }

    /// Applies one input: records its fact, then runs every gateway operation the facts make
    /// due, journaling each.
    async fn apply_to(
        &self,
        batch: &mut Batch,
        input: &Input<'_>,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Input { envelope, now } = *input;
        let ride_id = envelope.saga_id.as_ref().ok_or_else(|| {
            HandleError::Permanent(format!("{} without a saga id", envelope.kind()))
        })?;
        let slot = batch
            .payments
            .entry(ride_id.clone())
            .or_insert_with(|| Ok(Slot::default()))
            .as_mut()
            .map_err(|e| e.clone())?;
        let mut payment = domain::handle(slot.payment.clone(), &envelope.message);
        let mut outputs = Vec::new();
        let mut journal = Vec::new();
        for _ in 0..MAX_OPERATIONS_PER_INPUT {
            let Some(operation) = domain::next_operation(&payment) else {
                break;
            };
            let key = format!("{ride_id}/{}", operation.name());
            // State and journal commit together, so an operation due again means they
            // disagree: a bug that retrying cannot fix, and no reason to call the gateway.
            if slot.journaled.iter().any(|done| done == operation.name()) {
                return Err(HandleError::Permanent(format!(
                    "gateway operation {key} was already journaled"
                )));
            }
            let outcome = self.perform(&key, &operation).await?;
            let label = outcome_label(&outcome);
            journal.push(store::Journaled::new(
                key,
                ride_id,
                &operation,
                label,
                &envelope.id,
                now,
            )?);
            slot.journaled.push(operation.name().to_owned());
            let (next, message) = domain::record(payment, &operation, outcome);
            payment = next;
            outputs.extend(
                message.map(|m| Envelope::caused_by(envelope, m, "", Service::Payment.name())),
            );
        }
        if payment != slot.payment {
            slot.payment = payment;
            if slot.changed_at.replace(now).is_none() {
                batch.changed.push(ride_id.clone());
            }
        }
        batch.journal.extend(journal);
        debug!(%ride_id, input = %envelope.kind(), outputs = outputs.len(), "payment input applied");
        Ok(outputs)
    }

    /// One gateway call; an outage is transient, a refusal of a capture is an outcome, any
    /// other refusal is permanent.
    async fn perform(&self, key: &str, operation: &Operation) -> Result<Outcome, HandleError> {
        debug!(gateway = self.gateway.name(), %key, "calling the payment gateway");
        let result = match operation {
            Operation::Hold {
                token,
                amount_cents,
            } => {
                let request = HoldRequest {
                    idempotency_key: key.to_owned(),
                    token: token.clone(),
                    amount_cents: *amount_cents,
                };
                self.gateway.hold(&request).await.map(|h| match h {
                    HoldOutcome::Approved { hold_id } => Outcome::Held { hold_id },
                    HoldOutcome::Declined { code, message } => Outcome::Declined { code, message },
                })
            }
            Operation::Capture {
                hold_id,
                amount_cents,
            } => {
                let request = settle(key, hold_id, *amount_cents);
                match self.gateway.capture(&request).await {
                    Err(GatewayError::Refused { code, message }) => Ok(Outcome::CaptureRefused {
                        error: format!("{code}: {message}"),
                    }),
                    other => other.map(|()| Outcome::Captured),
                }
            }
            Operation::Void {
                hold_id,
                amount_cents,
            } => {
                let request = settle(key, hold_id, *amount_cents);
                self.gateway.void(&request).await.map(|()| Outcome::Voided)
            }
        };
        result.map_err(|e| match e {
            GatewayError::Unavailable(_) => HandleError::Transient(format!("{key}: {e}")),
            GatewayError::Refused { .. } => HandleError::Permanent(format!("{key}: {e}")),
        })
    }
}

/// A batch in progress: the payments it touches, which of them changed (in the order they
/// first did), and the operations it journaled.
#[derive(Debug)]
struct Batch {
    payments: HashMap<RideId, Result<Slot, HandleError>>,
    changed: Vec<RideId>,
    journal: Vec<store::Journaled>,
}

/// A payment as a batch sees it.
#[derive(Debug, Default)]
struct Slot {
    payment: Payment,
    journaled: Vec<String>,
    /// When the batch last changed the payment; `None` while it has not.
    changed_at: Option<Timestamp>,
}

impl Slot {
    fn stored(stored: store::Stored) -> Self {
        Slot {
            payment: stored.payment,
            journaled: stored.journaled,
            changed_at: None,
        }
    }
}

fn settle(key: &str, hold_id: &str, amount_cents: u64) -> SettleRequest {
    SettleRequest {
        idempotency_key: key.to_owned(),
        hold_id: hold_id.to_owned(),
        amount_cents,
    }
}

fn outcome_label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Held { .. } => "held",
        Outcome::Declined { .. } => "declined",
        Outcome::Captured => "captured",
        Outcome::CaptureRefused { .. } => "capture_refused",
        Outcome::Voided => "voided",
    }
}

impl<G: Gateway> Worker for PaymentService<G> {
    fn service(&self) -> Service {
        Service::Payment
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

    fn apply_batch<'a>(
        &'a self,
        conn: &'a mut SqliteConnection,
        inputs: &'a [Input<'a>],
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        self.apply_many(conn, inputs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use ridesaga_schemas::{
        CancelReason, DriverAssigned, DriverId, GeoPoint, Message, MessageId, RideCancelled,
        RideCompleted, RideId, RideRequested, RiderId,
    };

    use super::domain::{Hold, Settlement};
    use super::*;
    use crate::testing::{
        apply_batch_in_tx, apply_each_in_tx, apply_in_tx, database, epoch, timeless,
    };

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

    async fn journal(conn: &mut SqliteConnection) -> Vec<(String, String)> {
        store::operations(conn, &ride_id()).await.unwrap()
    }

    #[tokio::test]
    async fn a_redelivered_assigned_event_places_one_hold() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn a_transient_gateway_failure_rolls_back_and_the_retry_emits_the_same_event() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn completion_captures_the_fare_once() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn a_refused_capture_is_announced_for_operators_once() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn a_cancel_before_the_assignment_means_no_hold_is_ever_placed() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn a_cancel_after_the_hold_voids_it() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn a_batch_moves_the_money_its_inputs_applied_one_by_one_move_and_each_once() {
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
        let (_one_dir, mut one) = database(&MIGRATOR).await;
        let one_by_one = apply_each_in_tx(&one_service, &mut one, &inputs).await;
        let service = PaymentService::new(GatewayConfig::default());
        let (_dir, mut conn) = database(&MIGRATOR).await;
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

    #[tokio::test]
    async fn an_operation_already_journaled_is_refused_without_calling_the_gateway() {
        let (_dir, mut conn) = database(&MIGRATOR).await;
        let service = PaymentService::new(GatewayConfig::default());
        apply_in_tx(&service, &mut conn, &requested("tok_visa"), epoch())
            .await
            .unwrap();
        // A journal entry the state does not reflect: they disagree.
        sqlx::query(
            "INSERT INTO payment_operations (idempotency_key, ride_id, operation, amount_cents, \
             outcome, input_message_id, performed_at_ms) \
             VALUES ('r_1/hold', 'r_1', 'hold', 1200, 'held', 'm_x', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
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
}
