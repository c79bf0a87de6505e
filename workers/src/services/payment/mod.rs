//! The payment service: places a hold for the estimated fare once a driver is assigned,
//! captures the final fare when the ride completes, and voids the hold when it is cancelled.
//!
//! Each input is recorded as a fact, then every gateway operation the facts call for runs with
//! an idempotency key (ride id + operation) and its result is saved in the same transaction.
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

use ridesaga_schemas::{Envelope, Service, Timestamp};
use sqlx::SqliteConnection;
use sqlx::migrate::Migrator;
use tracing::debug;

use self::domain::{Operation, Outcome};
use self::gateway::{
    Gateway, GatewayConfig, GatewayError, HoldOutcome, HoldRequest, SettleRequest, SimulatedGateway,
};
use crate::config::{ConfigError, Settings};
use crate::runtime::{HandleError, Worker};

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
        let mut payment = domain::handle(before.clone(), &input.message);
        let mut outputs = Vec::new();
        for _ in 0..MAX_OPERATIONS_PER_INPUT {
            let Some(operation) = domain::next_operation(&payment) else {
                break;
            };
            let key = format!("{ride_id}/{}", operation.name());
            let outcome = self.perform(&key, &operation).await?;
            let label = outcome_label(&outcome);
            store::journal(conn, &key, ride_id, &operation, label, &input.id, now).await?;
            let (next, message) = domain::record(payment, &operation, outcome);
            payment = next;
            outputs.extend(
                message.map(|m| Envelope::caused_by(input, m, "", Service::Payment.name())),
            );
        }
        if payment != before {
            store::save(conn, ride_id, &payment, now).await?;
        }
        debug!(%ride_id, input = %input.kind(), outputs = outputs.len(), "payment input applied");
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
        self.apply_one(conn, input, now)
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
    use crate::testing::{apply_in_tx, database, epoch};

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
}
