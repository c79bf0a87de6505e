//! The payment service: places a hold for the estimated fare once a driver is assigned,
//! captures the final fare when the ride completes, and voids the hold when it is cancelled (or
//! captures the no-show fee, if one is set, when the rider did not show).
//!
//! Gateway calls are effects (see [`crate::runtime::effects`]); none runs while a transaction
//! is open. Applying an input records its fact; an operation the facts make due is journaled
//! `pending` (so it is never due twice), the payment waits for it (the hold or the settlement
//! is pending), and it goes to the runtime as an effect: `payment.hold`, `payment.capture` or
//! `payment.void`, its id the idempotency key `<ride>/<operation>`, its request the operation
//! as JSON. A batch of inputs loads its payments in one statement and saves them, the journal
//! entries and the effects with the batch's commit.
//!
//! [`Worker::perform`] calls the gateway with that key: an outage is transient (the runtime
//! retries it until the effect's deadline), a refusal permanent, except the refusal of a
//! capture, which is an outcome. [`Worker::settle`] records the outcome on the payment and in
//! the journal, announces it with an event whose id derives from the effect's id, and returns
//! the operation the new state makes due (a void for a hold placed on a ride cancelled
//! meanwhile, a capture for one completed meanwhile). A refund command (`cmd.payment.refund`)
//! is refused at once when nothing is left to refund, and is otherwise an operation of its own
//! (`payment.refund`, key `<ride>/refund/<refund_id>`); a refund made appends the ledger
//! entries that reverse it and is announced on `evt.payment.refunded`. An operation that fails
//! for good or gives up ends as [`domain::failed`] says: a hold is declined (`gateway_error`,
//! `gateway_unavailable`), so the ride is cancelled `payment_declined` and its driver released;
//! a capture failed (`evt.payment.capture_failed`: an operator must act, the rider is told);
//! a void failed, with no event: it is logged for operators and the hold lapses at the gateway,
//! whether the gateway refused it or stayed unreachable past the deadline.
//!
//! A completed ride fraud flags (`evt.fraud.ride_flagged`) has its driver's share held in the
//! earnings ledger until an operator's review (`evt.fraud.reviewed`) releases or forfeits it
//! ([`review`]); each step appends two entries and is announced on `evt.payment.earnings_hold`,
//! whether the flag comes before the capture settles or after.
//!
//! # Layout
//! - [`domain`]: the pure state machine.
//! - [`review`]: holding a flagged ride's earnings, pure.
//! - [`gateway`]: the gateway trait and the simulated gateway.
//! - [`store`]: the `payments` and `payment_operations` tables.
//! - this file: the [`Worker`].

pub mod domain;
pub mod gateway;
pub mod review;
pub mod store;

use std::collections::HashMap;

use ridesaga_schemas::{
    EarningsHold, Envelope, Message, MessageId, PaymentCaptured, PaymentRefunded, RefundRide,
    RideId, Service, Timestamp,
};
use sqlx::migrate::Migrator;
use tracing::{debug, warn};

use self::domain::{
    DEFAULT_COMMISSION_PERCENT, Failure, Fees, Operation, Outcome, Payment, RefundDecision,
};
use self::gateway::{
    Gateway, GatewayConfig, GatewayError, HoldOutcome, HoldRequest, RefundRequest, SettleRequest,
    SimulatedGateway,
};
use self::store::Changed;
use super::saga_states::SagaStates;
use crate::config::{ConfigError, Settings};
use crate::runtime::{
    BatchError, BatchOutput, BatchWrite, Conn, Effect, EffectError, EffectOutcome, Finished,
    HandleError, Input, Kind, PendingEffect, Row, Settled, Worker, handle_as_batch,
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite/payment");
static PG_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres/payment");

/// The payment service as the runtime runs it.
#[derive(Debug)]
pub struct PaymentService<G = SimulatedGateway> {
    gateway: G,
    fees: Fees,
}

impl PaymentService {
    /// Reads the service's settings; the gateway is the simulated one.
    pub fn load(settings: &Settings) -> Result<Self, ConfigError> {
        let commission_percent: u64 =
            settings.get("RIDESAGA_COMMISSION_PERCENT", DEFAULT_COMMISSION_PERCENT)?;
        if commission_percent > 100 {
            return Err(ConfigError {
                name: "RIDESAGA_COMMISSION_PERCENT".into(),
                value: commission_percent.to_string(),
                problem: "must be a percentage from 0 to 100".into(),
            });
        }
        let fees = Fees {
            no_show_cents: settings.get("RIDESAGA_NO_SHOW_FEE_CENTS", 0)?,
            commission_percent,
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
    /// statement; the payments that changed and the operations made due are saved with one
    /// statement each (on `kind`) when the batch commits, and the operations go to the runtime
    /// as effects.
    fn apply_many(
        &self,
        kind: Kind,
        inputs: &[Input<'_>],
        rows: Vec<Row>,
    ) -> Result<BatchOutput, BatchError> {
        let loaded = store::loaded(&rows).map_err(BatchError::Batch)?;
        let mut batch = Batch::loaded(loaded);
        let mut outputs = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let applied = self.apply_to(&mut batch, input);
            outputs.push(applied.map_err(|error| BatchError::Input { index, error })?);
        }
        let writes = batch.writes(kind).map_err(BatchError::Batch)?;
        Ok(BatchOutput {
            outputs,
            writes,
            effects: batch.effects,
        })
    }

    /// Applies one input: records its fact, and makes due the gateway operation the facts call
    /// for, if any. Emits nothing itself: the operation's outcome is announced when it settles.
    fn apply_to(&self, batch: &mut Batch, input: &Input<'_>) -> Result<Vec<Envelope>, HandleError> {
        let Input { envelope, now, .. } = *input;
        let (ride_id, batched) = batch.payments.of(envelope)?;
        if batched.correlation_id.is_none() {
            batched.correlation_id = Some(envelope.correlation_id.clone());
        }
        if let Message::RefundRide(command) = &envelope.message {
            let trace = input.trace.cloned();
            return self.refund(batch, &ride_id, envelope, command, now, trace);
        }
        if let Message::RideFlagged(_) | Message::RideReviewed(_) = &envelope.message {
            if !review::handle(&mut batched.review, &envelope.message) {
                debug!(%ride_id, input = %envelope.kind(), "review known; nothing changes");
                return Ok(Vec::new());
            }
            batched.review_changed = true;
            let steps = hold_steps(&ride_id, batched, &mut batch.ledger, now)?;
            batch.payments.changed_at(ride_id.clone(), now);
            let producer = Service::Payment.name();
            return Ok(steps
                .into_iter()
                .map(|m| once_per_step(&ride_id, Envelope::caused_by(envelope, m, "", producer)))
                .collect());
        }
        let payment = domain::handle(batched.payment.clone(), &envelope.message);
        let (payment, due) =
            self.make_due(&ride_id, payment, batched, envelope.id.as_str(), now)?;
        if payment != batched.payment {
            batched.payment = payment;
            batch.payments.changed_at(ride_id.clone(), now);
        }
        if let Some((mut effect, journaled)) = due {
            effect.trace = input.trace.cloned();
            batch.effects.push(effect);
            batch.journal.push(journaled);
        }
        debug!(%ride_id, input = %envelope.kind(), "payment input applied");
        Ok(Vec::new())
    }

    /// Applies a refund command: a known refund id changes nothing; a refund payment refuses is
    /// recorded and answered at once (`evt.payment.refund_refused`); any other is recorded
    /// pending and goes to the gateway as an effect (`payment.refund`, its id the idempotency
    /// key `<ride>/refund/<refund_id>`), announced when it settles.
    fn refund(
        &self,
        batch: &mut Batch,
        ride_id: &RideId,
        envelope: &Envelope,
        command: &RefundRide,
        now: Timestamp,
        trace: Option<ridesaga_schemas::TraceContext>,
    ) -> Result<Vec<Envelope>, HandleError> {
        let (_, batched) = batch.payments.of(envelope)?;
        let (payment, decision) = domain::request_refund(batched.payment.clone(), command);
        let outputs = match decision {
            RefundDecision::Repeated => return Ok(Vec::new()),
            RefundDecision::Refused(refused) => {
                let (refund_id, code) = (&refused.refund_id, &refused.code);
                debug!(%ride_id, %refund_id, %code, "refund refused");
                let producer = Service::Payment.name();
                vec![Envelope::caused_by(envelope, refused, "", producer)]
            }
            RefundDecision::Due(operation) => {
                let key = format!("{ride_id}/{}", operation.key());
                let request = serde_json::to_string(&operation)
                    .map_err(|e| HandleError::Permanent(format!("request of {key}: {e}")))?;
                let journaled = store::Journaled::pending(
                    key.clone(),
                    ride_id,
                    &operation,
                    envelope.id.as_str(),
                    now,
                )?;
                batched.journaled.push(operation.name().to_owned());
                batch.journal.push(journaled);
                batch.effects.push(Effect {
                    id: key,
                    kind: effect_kind(&operation).to_owned(),
                    saga_id: Some(ride_id.clone()),
                    request,
                    trace,
                });
                Vec::new()
            }
        };
        batched.payment = payment;
        batch.payments.changed_at(ride_id.clone(), now);
        Ok(outputs)
    }

    /// The operation `payment` calls for now, if any: the payment with it pending, and its
    /// effect and journal entry (`cause`: the input's id, or the key of the operation whose
    /// outcome made it due). Notes it in `batched`'s journaled operations.
    fn make_due(
        &self,
        ride_id: &RideId,
        payment: Payment,
        batched: &mut BatchPayment,
        cause: &str,
        now: Timestamp,
    ) -> Result<(Payment, Option<(Effect, store::Journaled)>), HandleError> {
        let Some(operation) = domain::next_operation(&payment, &self.fees) else {
            return Ok((payment, None));
        };
        let key = format!("{ride_id}/{}", operation.name());
        // State and journal commit together, so an operation due again means they disagree:
        // a bug that retrying cannot fix, and no reason to call the gateway again.
        if batched
            .journaled
            .iter()
            .any(|done| done == operation.name())
        {
            return Err(HandleError::Permanent(format!(
                "gateway operation {key} was already journaled"
            )));
        }
        let request = serde_json::to_string(&operation)
            .map_err(|e| HandleError::Permanent(format!("request of {key}: {e}")))?;
        let journaled = store::Journaled::pending(key.clone(), ride_id, &operation, cause, now)?;
        batched.journaled.push(operation.name().to_owned());
        debug!(%key, "gateway operation due");
        let effect = Effect {
            id: key,
            kind: effect_kind(&operation).to_owned(),
            saga_id: Some(ride_id.clone()),
            request,
            trace: None,
        };
        Ok((
            domain::begin(payment, &operation),
            Some((effect, journaled)),
        ))
    }

    /// One gateway call for `effect`, with its id as the idempotency key: an outage is
    /// transient, a refusal of a capture is an outcome, any other refusal is permanent.
    async fn call(&self, effect: &Effect) -> Result<String, EffectError> {
        let key = effect.id.as_str();
        let operation: Operation = serde_json::from_str(&effect.request)
            .map_err(|e| EffectError::Permanent(format!("unreadable request of {key}: {e}")))?;
        debug!(gateway = self.gateway.name(), %key, "calling the payment gateway");
        let result = match &operation {
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
                let request = settle_request(key, hold_id, *amount_cents);
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
                let request = settle_request(key, hold_id, *amount_cents);
                self.gateway.void(&request).await.map(|()| Outcome::Voided)
            }
            Operation::Refund {
                hold_id,
                amount_cents,
                captured_cents,
                ..
            } => {
                let request = RefundRequest {
                    idempotency_key: key.to_owned(),
                    hold_id: hold_id.clone(),
                    amount_cents: *amount_cents,
                    captured_cents: *captured_cents,
                };
                match self.gateway.refund(&request).await {
                    Err(GatewayError::Refused { code, message }) => Ok(Outcome::RefundRefused {
                        code,
                        error: message,
                    }),
                    other => other.map(|()| Outcome::Refunded),
                }
            }
        };
        let outcome = result.map_err(|e| match e {
            GatewayError::Unavailable(_) => EffectError::Transient(e.to_string()),
            GatewayError::Refused { .. } => EffectError::Permanent(e.to_string()),
        })?;
        serde_json::to_string(&outcome)
            .map_err(|e| EffectError::Permanent(format!("outcome of {key}: {e}")))
    }

    /// Records how a group of operations ended: their journal entries (one statement), the
    /// payments of their rides (loaded in one statement, saved in one), the events that
    /// announce them and the operations the new states make due (journaled in one statement).
    /// An operation whose journal entry is no longer pending was settled before: nothing
    /// changes for it.
    async fn settle_operations(
        &self,
        conn: &mut Conn<'_>,
        finished: &[Finished],
        now: Timestamp,
    ) -> Result<Settled, BatchError> {
        let settlements = finished
            .iter()
            .enumerate()
            .map(|(index, f)| Settlement::of(f).map_err(|error| BatchError::Input { index, error }))
            .collect::<Result<Vec<_>, _>>()?;
        let entries: Vec<store::JournalOutcome<'_>> = settlements
            .iter()
            .map(|s| store::JournalOutcome {
                idempotency_key: s.key,
                outcome: s.label,
                detail: s.detail.as_deref(),
            })
            .collect();
        let pending = store::settle_journaled(conn, &entries, now)
            .await
            .map_err(BatchError::Batch)?;
        let ride_ids: Vec<&str> = settlements
            .iter()
            .filter(|s| pending.contains(s.key))
            .map(|s| s.ride_id.as_str())
            .collect();
        let loaded = store::load_many(conn, &ride_ids)
            .await
            .map_err(BatchError::Batch)?;
        let mut batch = Batch::loaded(loaded);
        let mut outputs = Vec::new();
        for (index, (settlement, f)) in settlements.into_iter().zip(finished).enumerate() {
            if !pending.contains(settlement.key) {
                debug!(
                    key = settlement.key,
                    "gateway operation settled before; nothing to do"
                );
                continue;
            }
            let announced = self
                .settle_operation(&mut batch, settlement, &f.effect, now)
                .map_err(|error| BatchError::Input { index, error })?;
            outputs.extend(announced);
        }
        let kind = conn.kind();
        for write in batch.writes(kind).map_err(BatchError::Batch)? {
            write
                .execute(conn)
                .await
                .map_err(|e| BatchError::Batch(e.into()))?;
        }
        Ok(Settled {
            outputs,
            effects: batch.effects,
        })
    }

    /// Records one operation's outcome on its ride's payment in `batch`, and makes due the
    /// operation the new state calls for; returns the event that announces the outcome.
    fn settle_operation(
        &self,
        batch: &mut Batch,
        settlement: Settlement<'_>,
        pending: &PendingEffect,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Settlement {
            key,
            ride_id,
            operation,
            outcome,
            label,
            ..
        } = settlement;
        let batched = batch.payments.stored(ride_id).ok_or_else(|| {
            HandleError::Permanent(format!(
                "{key} is journaled but ride {ride_id} has no payment"
            ))
        })??;
        let (payment, message) = domain::record(batched.payment.clone(), &operation, outcome);
        let message = message.map(|m| domain::with_earnings(m, &payment, &self.fees));
        let mut payment = payment;
        let mut steps = Vec::new();
        match &message {
            Some(Message::PaymentCaptured(PaymentCaptured {
                earnings: Some(earnings),
                ..
            })) => {
                payment.commission_cents = Some(earnings.commission_cents);
                batch
                    .ledger
                    .extend(store::LedgerEntry::of_capture(ride_id, earnings, now)?);
                // A ride flagged before its capture settled has its share held now.
                batched.driver_share = Some(earnings.driver_cents);
                steps = hold_steps(ride_id, batched, &mut batch.ledger, now)?;
            }
            Some(Message::PaymentRefunded(PaymentRefunded {
                refund_id,
                reversal: Some(reversal),
                ..
            })) => {
                batch.ledger.extend(store::LedgerEntry::of_refund(
                    ride_id, refund_id, reversal, now,
                )?);
            }
            _ => {}
        }
        let (payment, due) = self.make_due(ride_id, payment, batched, key, now)?;
        let correlation_id = batched
            .correlation_id
            .clone()
            .unwrap_or_else(|| ride_id.to_string());
        if payment != batched.payment {
            batched.payment = payment;
            batch.payments.changed_at(ride_id.clone(), now);
        }
        if let Some((effect, journaled)) = due {
            batch.effects.push(effect);
            batch.journal.push(journaled);
        }
        debug!(%key, label, "gateway operation settled");
        let producer = Service::Payment.name();
        let announced = message.map(|m| pending.event(m, &correlation_id, producer, now));
        let held = steps
            .into_iter()
            .map(|m| once_per_step(ride_id, pending.event(m, &correlation_id, producer, now)));
        Ok(announced.into_iter().chain(held).collect())
    }
}

/// An operation's outcome, read from the effect that performed it.
struct Settlement<'a> {
    key: &'a str,
    ride_id: &'a RideId,
    operation: Operation,
    outcome: Outcome,
    /// The journal's outcome, and what the gateway said beyond it.
    label: &'static str,
    detail: Option<String>,
}

impl<'a> Settlement<'a> {
    fn of(finished: &'a Finished) -> Result<Self, HandleError> {
        let effect = &finished.effect.effect;
        let key = effect.id.as_str();
        let ride_id = effect
            .saga_id
            .as_ref()
            .ok_or_else(|| HandleError::Permanent(format!("{key} has no ride")))?;
        let operation: Operation = serde_json::from_str(&effect.request)
            .map_err(|e| HandleError::Permanent(format!("unreadable request of {key}: {e}")))?;
        let (outcome, label, detail) = match &finished.outcome {
            EffectOutcome::Done(result) => {
                let outcome: Outcome = serde_json::from_str(result).map_err(|e| {
                    HandleError::Permanent(format!("unreadable outcome of {key}: {e}"))
                })?;
                let (label, detail) = journal_outcome(&outcome);
                (outcome, label, detail)
            }
            EffectOutcome::Failed(reason) => {
                warn!(%key, %reason, "gateway operation refused for good");
                let outcome = domain::failed(&operation, Failure::Refused(reason.clone()));
                (outcome, "failed", Some(reason.clone()))
            }
            EffectOutcome::GaveUp(error) => {
                warn!(%key, %error, "gateway unreachable until the deadline; gave up");
                let outcome = domain::failed(&operation, Failure::Unreachable(error.clone()));
                (outcome, "gave_up", Some(error.clone()))
            }
        };
        Ok(Settlement {
            key,
            ride_id,
            operation,
            outcome,
            label,
            detail,
        })
    }
}

/// A batch in progress: the payments it touches, the operations it made due and their
/// effects.
#[derive(Debug)]
struct Batch {
    payments: SagaStates<BatchPayment>,
    journal: Vec<store::Journaled>,
    effects: Vec<Effect>,
    /// Earnings ledger entries of the captures settled in the batch.
    ledger: Vec<store::LedgerEntry>,
}

impl Batch {
    /// A batch on the payments loaded for it.
    fn loaded(loaded: HashMap<RideId, Result<store::Stored, HandleError>>) -> Self {
        Batch {
            payments: SagaStates::loaded(
                loaded
                    .into_iter()
                    .map(|(id, stored)| (id, stored.map(BatchPayment::stored))),
            ),
            journal: Vec::new(),
            effects: Vec::new(),
            ledger: Vec::new(),
        }
    }

    /// The statements that save what the batch changed on `kind`: the operations it
    /// journaled, then the payments, then the ledger entries.
    fn writes(&self, kind: Kind) -> Result<Vec<BatchWrite>, HandleError> {
        let mut writes = Vec::new();
        if !self.journal.is_empty() {
            writes.push(store::journal_many(kind, &self.journal)?);
        }
        let changed: Vec<Changed<'_>> = self
            .payments
            .changed()
            .map(|(ride_id, batched, at)| Changed {
                ride_id,
                payment: &batched.payment,
                correlation_id: batched.correlation_id.as_deref(),
                at,
            })
            .collect();
        if !changed.is_empty() {
            writes.push(store::save_many(kind, &changed)?);
        }
        let reviews: Vec<(&RideId, &review::ReviewState, Timestamp)> = self
            .payments
            .changed()
            .filter(|(_, batched, _)| batched.review_changed)
            .map(|(ride_id, batched, at)| (ride_id, &batched.review, at))
            .collect();
        if !reviews.is_empty() {
            writes.push(store::save_reviews(kind, &reviews)?);
        }
        if !self.ledger.is_empty() {
            writes.push(store::ledger_many(kind, &self.ledger)?);
        }
        Ok(writes)
    }
}

/// A payment as a batch sees it, with the operations journaled for it and the saga's
/// correlation id.
#[derive(Debug, Default)]
struct BatchPayment {
    payment: Payment,
    journaled: Vec<String>,
    correlation_id: Option<String>,
    /// Fraud's verdict and the ledger's last step with the driver's share.
    review: review::ReviewState,
    /// Whether the batch changed `review`.
    review_changed: bool,
    /// The driver's share of the capture, once the ledger has it.
    driver_share: Option<u64>,
}

impl BatchPayment {
    fn stored(stored: store::Stored) -> Self {
        BatchPayment {
            payment: stored.payment,
            journaled: stored.journaled,
            correlation_id: stored.correlation_id,
            review: stored.review,
            review_changed: false,
            driver_share: stored.driver_share,
        }
    }
}

/// Takes every step the ride's review calls for with the driver's share: appends each step's
/// entries to `ledger`, records it on `batched` and returns the events that announce them.
fn hold_steps(
    ride_id: &RideId,
    batched: &mut BatchPayment,
    ledger: &mut Vec<store::LedgerEntry>,
    now: Timestamp,
) -> Result<Vec<Message>, HandleError> {
    let mut announced = Vec::new();
    while let Some(step) = review::next_step(&batched.review, batched.driver_share) {
        let Some(driver_id) = batched.payment.driver_id.clone() else {
            warn!(%ride_id, "a captured share without a driver; nothing to hold");
            break;
        };
        ledger.extend(store::LedgerEntry::of_hold_step(
            ride_id, &driver_id, step, now,
        )?);
        batched.review.hold = Some(step);
        batched.review_changed = true;
        let (status, amount_cents) = step;
        debug!(%ride_id, status = status.as_str(), amount_cents, "driver's share moved");
        announced.push(Message::EarningsHold(EarningsHold {
            driver_id,
            amount_cents,
            status,
        }));
    }
    Ok(announced)
}

/// An announcement of a step with a ride's driver's share: its id derives from the ride and
/// the step, which happens once.
fn once_per_step(ride_id: &RideId, mut envelope: Envelope) -> Envelope {
    if let Message::EarningsHold(m) = &envelope.message {
        let key = format!("{ride_id}/{}/{}", envelope.kind(), m.status.as_str());
        envelope.id = MessageId::derive_from_key(&key);
    }
    envelope.saga_id = Some(ride_id.clone());
    envelope
}

/// The kind of an operation's effect.
pub fn effect_kind(operation: &Operation) -> &'static str {
    match operation {
        Operation::Hold { .. } => "payment.hold",
        Operation::Capture { .. } => "payment.capture",
        Operation::Void { .. } => "payment.void",
        Operation::Refund { .. } => "payment.refund",
    }
}

fn settle_request(key: &str, hold_id: &str, amount_cents: u64) -> SettleRequest {
    SettleRequest {
        idempotency_key: key.to_owned(),
        hold_id: hold_id.to_owned(),
        amount_cents,
    }
}

/// How the journal records the gateway's answer: its outcome, and what it said beyond that.
fn journal_outcome(outcome: &Outcome) -> (&'static str, Option<String>) {
    match outcome {
        Outcome::Held { .. } => ("held", None),
        Outcome::Declined { code, .. } => ("declined", Some(code.clone())),
        Outcome::Captured => ("captured", None),
        Outcome::CaptureRefused { error } => ("capture_refused", Some(error.clone())),
        Outcome::Voided => ("voided", None),
        Outcome::VoidFailed { error } => ("failed", Some(error.clone())),
        Outcome::Refunded => ("refunded", None),
        Outcome::RefundRefused { code, error } => {
            ("refund_refused", Some(format!("{code}: {error}")))
        }
    }
}

impl<G: Gateway> Worker for PaymentService<G> {
    fn service(&self) -> Service {
        Service::Payment
    }

    fn handles(&self) -> &'static [ridesaga_schemas::MessageKind] {
        use ridesaga_schemas::MessageKind;
        &[
            MessageKind::RefundRide,
            MessageKind::RideRequested,
            MessageKind::DriverAssigned,
            MessageKind::RideCompleted,
            MessageKind::RideCancelled,
            MessageKind::RideRejected,
            MessageKind::RideFlagged,
            MessageKind::RideReviewed,
        ]
    }

    fn migrator(&self, kind: Kind) -> &'static Migrator {
        match kind {
            Kind::Sqlite => &MIGRATOR,
            Kind::Postgres => &PG_MIGRATOR,
        }
    }

    fn handle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        input: &'a Envelope,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<Envelope>, HandleError>> + Send + 'a {
        handle_as_batch(self, conn, input, now)
    }

    fn preload(&self, kind: Kind) -> Option<&str> {
        Some(store::load_sql(kind))
    }

    fn handle_preloaded<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        inputs: &'a [Input<'a>],
        rows: Vec<Row>,
    ) -> impl Future<Output = Result<BatchOutput, BatchError>> + Send + 'a {
        // Everything the batch reads came with the preload.
        let kind = conn.kind();
        async move { self.apply_many(kind, inputs, rows) }
    }

    fn perform<'a>(
        &'a self,
        effect: &'a PendingEffect,
    ) -> impl Future<Output = Result<String, EffectError>> + Send + 'a {
        self.call(&effect.effect)
    }

    fn settle<'a>(
        &'a self,
        conn: &'a mut Conn<'_>,
        finished: &'a [Finished],
        now: Timestamp,
    ) -> impl Future<Output = Result<Settled, BatchError>> + Send + 'a {
        self.settle_operations(conn, finished, now)
    }
}

#[cfg(test)]
mod tests;
