//! The payment service: places a hold for the estimated fare once a driver is assigned,
//! captures the final fare when the ride completes, and voids the hold when it is cancelled (or
//! captures the no-show fee, if one is set, when the rider did not show).
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

use ridesaga_schemas::{Envelope, Service, Timestamp};
use sqlx::migrate::Migrator;
use tracing::debug;

use self::domain::{Fees, Operation, Outcome, Payment};
use self::gateway::{
    Gateway, GatewayConfig, GatewayError, HoldOutcome, HoldRequest, SettleRequest, SimulatedGateway,
};
use self::store::Changed;
use super::rides::Rides;
use crate::config::{ConfigError, Settings};
use crate::runtime::{
    BatchError, BatchOutput, Conn, HandleError, Input, Kind, Row, Worker, apply_as_batch,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/payment");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/payment");

/// Operations one input can make due: a hold, then a capture or a void.
const MAX_OPERATIONS_PER_INPUT: usize = 3;

/// The payment service as the runtime runs it.
#[derive(Debug)]
pub struct PaymentService<G = SimulatedGateway> {
    gateway: G,
    fees: Fees,
}

impl PaymentService {
    /// Reads the service's settings; the gateway is the simulated one.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let fees = Fees {
            no_show_cents: settings.get("RIDESAGA_NO_SHOW_FEE_CENTS", 0)?,
        };
        Ok(Self::new(GatewayConfig::load(settings)?).with_fees(fees))
    }

    pub fn new(config: GatewayConfig) -> Self {
        Self::with_gateway(SimulatedGateway::new(config))
    }
}

impl<G: Gateway> PaymentService<G> {
    pub fn with_gateway(gateway: G) -> Self {
        PaymentService {
            gateway,
            fees: Fees::default(),
        }
    }

    /// The same service charging these fees.
    pub fn with_fees(self, fees: Fees) -> Self {
        PaymentService { fees, ..self }
    }

    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    /// Applies a batch's inputs in order against the payments loaded for all of them in one
    /// statement; the payments that changed and the operations journaled are saved with one
    /// statement each (on `kind`) when the batch commits.
    async fn apply_many(
        &self,
        kind: Kind,
        inputs: &[Input<'_>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(&rows).map_err(BatchError::Batch)?;
        let mut batch = Batch {
            payments: Rides::loaded(
                loaded
                    .into_iter()
                    .map(|(id, stored)| (id, stored.map(Slot::stored))),
            ),
            journal: Vec::new(),
        };
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut batch, input).await;
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        let mut writes = Vec::new();
        if !batch.journal.is_empty() {
            writes.push(store::journal_many(kind, &batch.journal).map_err(BatchError::Batch)?);
        }
        let changed: Vec<Changed<'_>> = batch
            .payments
            .changed()
            .map(|(ride_id, slot, at)| Changed {
                ride_id,
                payment: &slot.payment,
                at,
            })
            .collect();
        if !changed.is_empty() {
            writes.push(store::save_many(kind, &changed).map_err(BatchError::Batch)?);
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
        let (ride_id, slot) = batch.payments.of(envelope)?;
        let mut payment = domain::handle(slot.payment.clone(), &envelope.message);
        let mut outputs = Vec::new();
        let mut journal = Vec::new();
        for _ in 0..MAX_OPERATIONS_PER_INPUT {
            let Some(operation) = domain::next_operation(&payment, &self.fees) else {
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
                &ride_id,
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
            batch.payments.changed_at(ride_id.clone(), now);
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

/// A batch in progress: the payments it touches and the operations it journaled.
#[derive(Debug)]
struct Batch {
    payments: Rides<Slot>,
    journal: Vec<store::Journaled>,
}

/// A payment as a batch sees it, with the operations journaled for it.
#[derive(Debug, Default)]
struct Slot {
    payment: Payment,
    journaled: Vec<String>,
}

impl Slot {
    fn stored(stored: store::Stored) -> Self {
        Slot {
            payment: stored.payment,
            journaled: stored.journaled,
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
