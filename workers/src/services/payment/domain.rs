//! The payment state machine, pure: facts about a ride accumulate in any order, and the
//! gateway operation due next follows from the facts alone.
//!
//! Facts: the trip (from `evt.ride.requested`: rider, token, estimated fare), that a driver was
//! assigned, and how the ride ended (completed with a fare, or cancelled/rejected). Operations:
//! hold the estimated fare once the trip and driver are known and the ride has not ended
//! cancelled; capture the fare once the ride completed; void the hold once it was cancelled,
//! except that a ride cancelled because the rider did not show is charged the no-show fee, if
//! one is configured (at most the hold). A cancel that arrives before the assignment is a
//! tombstone: no hold is ever placed.
//!
//! An operation is asked for ([`begin`]: the hold or the settlement is then pending, and no
//! operation is due while one is) and answered later ([`record`]), so an operation is never due
//! twice and at most one is in flight per ride. An operation the gateway never answered (it
//! refused for good, or stayed unreachable until the deadline) ends as [`failed`] says: a hold
//! as a decline (`gateway_error`, `gateway_unavailable`), so the saga cancels the ride as for a
//! declined card; a capture as a failed capture, for an operator; a void as a failed void, for
//! an operator, while the hold lapses at the gateway on its own.
//!
//! Refunds ([`request_refund`]) give back part or all of a capture: each is named by its id
//! (a known id is a repeat and changes nothing), is refused while nothing is captured or when
//! it asks for more than the capture minus the refunds made or in flight, and is otherwise a
//! gateway operation of its own, any number of them per ride. A refund made reverses its
//! amount in the ledger in proportion to the capture's split ([`reversal`]).

use ridesaga_schemas::{
    CancelReason, DriverId, Earnings, FareBreakdown, Message, PaymentAuthorized,
    PaymentCaptureFailed, PaymentCaptured, PaymentDeclined, PaymentRefundRefused, PaymentRefunded,
    PaymentVoided, REFUND_EXCEEDS_CAPTURE, REFUND_NOTHING_CAPTURED, RefundId, RefundRide, RiderId,
    money,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, warn};

/// What `evt.ride.requested` tells payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Trip {
    pub rider_id: RiderId,
    pub payment_token: String,
    pub estimated_fare_cents: u64,
}

/// How the ride ended, as far as payment knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Completed {
        fare_cents: u64,
    },
    /// Cancelled for any reason but a rider no-show, or rejected.
    Cancelled,
    /// Cancelled because the driver waited at the pickup and the rider did not show.
    RiderNoShow,
}

impl Ending {
    /// Whether the ride ended without a trip: no hold may be placed any more.
    pub fn is_cancellation(self) -> bool {
        matches!(self, Ending::Cancelled | Ending::RiderNoShow)
    }
}

/// What payment charges besides fares, and how it shares what it captures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// `RIDESAGA_NO_SHOW_FEE_CENTS`: captured from the hold (at most all of it) when the rider
    /// did not show; 0 voids the hold as for any other cancellation.
    pub no_show_cents: u64,
    /// `RIDESAGA_COMMISSION_PERCENT`: the platform's share of every captured amount; the rest
    /// is the driver's.
    pub commission_percent: u64,
}

impl Default for Fees {
    fn default() -> Self {
        Fees {
            no_show_cents: 0,
            commission_percent: DEFAULT_COMMISSION_PERCENT,
        }
    }
}

/// The commission when none is configured.
pub const DEFAULT_COMMISSION_PERCENT: u64 = 20;

/// Splits `amount_cents` into the driver's share and the platform's commission, which add up
/// to it: the commission is rounded to the nearest cent, the driver gets the rest.
pub fn split(amount_cents: u64, commission_percent: u64) -> (u64, u64) {
    let percent = commission_percent.min(100);
    let commission = (u128::from(amount_cents) * u128::from(percent) + 50) / 100;
    let commission = u64::try_from(commission)
        .unwrap_or(amount_cents)
        .min(amount_cents);
    (amount_cents - commission, commission)
}

/// A capture's announcement with the ledger's split of the amount, for a ride whose driver is
/// known, and the fare's breakdown when the amount is the fare; any other message as it is.
pub fn with_earnings(message: Message, payment: &Payment, fees: &Fees) -> Message {
    match message {
        Message::PaymentCaptured(mut captured) => {
            captured.fare = payment
                .fare
                .filter(|f| f.total_cents == captured.amount_cents);
            captured.earnings = payment.driver_id.clone().map(|driver_id| {
                let (driver_cents, commission_cents) =
                    split(captured.amount_cents, fees.commission_percent);
                Earnings {
                    driver_id,
                    driver_cents,
                    commission_cents,
                }
            });
            Message::PaymentCaptured(captured)
        }
        other => other,
    }
}

/// The hold for the estimated fare.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    None,
    /// Asked of the gateway; no answer yet.
    Pending,
    Held {
        hold_id: String,
        amount_cents: u64,
    },
    Declined {
        code: String,
        message: String,
    },
}

/// What became of the hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Open,
    /// A capture or a void was asked of the gateway; no answer yet.
    Pending,
    Captured {
        amount_cents: u64,
    },
    Voided,
    CaptureFailed {
        error: String,
    },
    /// The void was refused or never reached the gateway: the hold lapses there on its own.
    VoidFailed {
        error: String,
    },
}

/// One ride's payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub trip: Option<Trip>,
    pub driver_assigned: bool,
    /// The assigned driver, whose earnings a capture records.
    pub driver_id: Option<DriverId>,
    /// The completed ride's fare breakdown, for the receipt.
    pub fare: Option<FareBreakdown>,
    pub ending: Option<Ending>,
    pub hold: Hold,
    pub settlement: Settlement,
    /// The commission the ledger took from the capture (rides whose capture was shared).
    pub commission_cents: Option<u64>,
    /// Every refund asked for, in the order asked, whatever became of it.
    pub refunds: Vec<Refund>,
}

/// A refund asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    pub refund_id: RefundId,
    /// What it gives back (what was asked for, when refused).
    pub amount_cents: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: RefundStatus,
}

/// What became of a refund.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum RefundStatus {
    /// Asked of the gateway; no answer yet. Its amount is no longer refundable.
    Pending,
    /// Given back; the ledger reversed it.
    Refunded,
    /// Refused by payment (`code`) before the gateway was asked, or by the gateway.
    Refused { code: String, reason: String },
}

impl Refund {
    /// The amount it takes off what is left to refund: a refund made or in flight.
    fn reserved_cents(&self) -> u64 {
        match self.status {
            RefundStatus::Pending | RefundStatus::Refunded => self.amount_cents.unwrap_or(0),
            RefundStatus::Refused { .. } => 0,
        }
    }
}

impl Default for Payment {
    fn default() -> Self {
        Payment {
            trip: None,
            driver_assigned: false,
            driver_id: None,
            fare: None,
            ending: None,
            hold: Hold::None,
            settlement: Settlement::Open,
            commission_cents: None,
            refunds: Vec::new(),
        }
    }
}

impl Payment {
    /// What was captured for the ride (0 until a capture succeeded).
    pub fn captured_cents(&self) -> u64 {
        match self.settlement {
            Settlement::Captured { amount_cents } => amount_cents,
            _ => 0,
        }
    }

    /// What the refunds made gave back.
    pub fn refunded_cents(&self) -> u64 {
        self.refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Refunded)
            .map(|r| r.amount_cents.unwrap_or(0))
            .sum()
    }

    /// What may still be refunded: the capture minus the refunds made or in flight.
    pub fn refundable_cents(&self) -> u64 {
        let reserved: u64 = self.refunds.iter().map(Refund::reserved_cents).sum();
        self.captured_cents().saturating_sub(reserved)
    }
}

/// What a refund command comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum RefundDecision {
    /// The refund id is known: asked before, whatever became of it. Nothing to do.
    Repeated,
    /// Refused before asking the gateway: the event that says why.
    Refused(PaymentRefundRefused),
    /// The gateway operation to perform.
    Due(Operation),
}

/// Decides a refund command: records it on the payment (pending, or refused) unless its id is
/// known, and says what to do.
pub fn request_refund(mut payment: Payment, command: &RefundRide) -> (Payment, RefundDecision) {
    if payment
        .refunds
        .iter()
        .any(|r| r.refund_id == command.refund_id)
    {
        debug!(refund_id = %command.refund_id, "refund asked for again; the first one stands");
        return (payment, RefundDecision::Repeated);
    }
    let captured = payment.captured_cents();
    let left = payment.refundable_cents();
    let hold_id = match &payment.hold {
        Hold::Held { hold_id, .. } if captured > 0 => Some(hold_id.clone()),
        _ => None,
    };
    let amount = command.amount_cents.unwrap_or(left);
    let refusal = match hold_id {
        None => Some((
            REFUND_NOTHING_CAPTURED,
            "nothing was captured for this ride".to_owned(),
        )),
        Some(_) if left == 0 => Some((
            REFUND_EXCEEDS_CAPTURE,
            format!(
                "the capture of {} is refunded already",
                money::format(captured)
            ),
        )),
        Some(_) if amount > left => Some((
            REFUND_EXCEEDS_CAPTURE,
            format!(
                "{} asked for, but only {} of the capture of {} is left to refund",
                money::format(amount),
                money::format(left),
                money::format(captured)
            ),
        )),
        Some(_) => None,
    };
    if let Some((code, reason)) = refusal {
        payment.refunds.push(Refund {
            refund_id: command.refund_id.clone(),
            amount_cents: command.amount_cents,
            reason: command.reason.clone(),
            status: RefundStatus::Refused {
                code: code.to_owned(),
                reason: reason.clone(),
            },
        });
        let refused = PaymentRefundRefused {
            refund_id: command.refund_id.clone(),
            rider_id: payment.trip.as_ref().map(|t| t.rider_id.clone()),
            amount_cents: command.amount_cents,
            code: code.to_owned(),
            reason,
        };
        return (payment, RefundDecision::Refused(refused));
    }
    payment.refunds.push(Refund {
        refund_id: command.refund_id.clone(),
        amount_cents: Some(amount),
        reason: command.reason.clone(),
        status: RefundStatus::Pending,
    });
    let operation = Operation::Refund {
        refund_id: command.refund_id.to_string(),
        hold_id: hold_id.unwrap_or_default(),
        amount_cents: amount,
        captured_cents: captured,
    };
    (payment, RefundDecision::Due(operation))
}

/// How much of a refund of `amount_cents` comes off the driver's share and off the commission,
/// given the capture, its commission and what was refunded before: the commission's part is
/// what the refunds so far take off it in proportion (rounded to the nearest cent) minus what
/// the earlier ones took, so that refunds adding up to the capture reverse exactly the
/// capture's split, and every part is at most what is left of its entry.
pub fn reversal(
    captured_cents: u64,
    commission_cents: u64,
    refunded_before_cents: u64,
    amount_cents: u64,
) -> (u64, u64) {
    let taken = |refunded: u64| -> u64 {
        if captured_cents == 0 {
            return 0;
        }
        let refunded = u128::from(refunded.min(captured_cents));
        let part = (refunded * u128::from(commission_cents) * 2 + u128::from(captured_cents))
            / (2 * u128::from(captured_cents));
        u64::try_from(part).unwrap_or(commission_cents)
    };
    let after = refunded_before_cents.saturating_add(amount_cents);
    let commission = taken(after)
        .saturating_sub(taken(refunded_before_cents))
        .min(amount_cents);
    (amount_cents - commission, commission)
}

/// A gateway call the payment needs (as JSON, the request of its effect).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "snake_case", deny_unknown_fields)]
pub enum Operation {
    Hold {
        token: String,
        amount_cents: u64,
    },
    Capture {
        hold_id: String,
        amount_cents: u64,
    },
    Void {
        hold_id: String,
        amount_cents: u64,
    },
    /// Gives back `amount_cents` of the capture of `captured_cents` on `hold_id`.
    Refund {
        refund_id: String,
        hold_id: String,
        amount_cents: u64,
        captured_cents: u64,
    },
}

impl Operation {
    /// `hold`, `capture`, `void` or `refund`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Hold { .. } => "hold",
            Operation::Capture { .. } => "capture",
            Operation::Void { .. } => "void",
            Operation::Refund { .. } => "refund",
        }
    }

    /// With the ride id, the idempotency key of the call: the name, and a refund's id (a
    /// ride has one hold, one settlement, and any number of refunds).
    pub fn key(&self) -> String {
        match self {
            Operation::Refund { refund_id, .. } => format!("refund/{refund_id}"),
            other => other.name().to_owned(),
        }
    }

    pub fn amount_cents(&self) -> u64 {
        match self {
            Operation::Hold { amount_cents, .. }
            | Operation::Capture { amount_cents, .. }
            | Operation::Void { amount_cents, .. }
            | Operation::Refund { amount_cents, .. } => *amount_cents,
        }
    }
}

/// How an operation ended: the gateway's final answer (as JSON, the result of its effect), or
/// what [`failed`] makes of an operation it never answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Held {
        hold_id: String,
    },
    Declined {
        code: String,
        message: String,
    },
    Captured,
    CaptureRefused {
        error: String,
    },
    Voided,
    VoidFailed {
        error: String,
    },
    Refunded,
    /// The gateway refused the refund or could not be reached: `code` is `gateway_error` or
    /// `gateway_unavailable`.
    RefundRefused {
        code: String,
        error: String,
    },
}

/// Why an operation got no answer from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The gateway refused the call itself (not a card decline), for good.
    Refused(String),
    /// The gateway stayed unreachable until the operation's deadline; the last error.
    Unreachable(String),
}

/// The decline code of a hold the gateway refused.
pub const GATEWAY_ERROR: &str = "gateway_error";
/// The decline code of a hold the gateway never answered.
pub const GATEWAY_UNAVAILABLE: &str = "gateway_unavailable";

/// What an operation without an answer amounts to: a hold is declined (so the ride is cancelled
/// `payment_declined` and its driver released), a capture failed (an operator must act), a void
/// failed (the hold lapses at the gateway; an operator may release it sooner).
pub fn failed(operation: &Operation, failure: Failure) -> Outcome {
    let (code, reason) = match failure {
        Failure::Refused(reason) => (GATEWAY_ERROR, reason),
        Failure::Unreachable(reason) => (GATEWAY_UNAVAILABLE, reason),
    };
    match operation {
        Operation::Hold { .. } => Outcome::Declined {
            code: code.to_owned(),
            message: match code {
                GATEWAY_ERROR => format!("The payment gateway refused the hold: {reason}"),
                _ => format!("The payment gateway could not be reached: {reason}"),
            },
        },
        Operation::Capture { .. } => Outcome::CaptureRefused {
            error: format!("{code}: {reason}"),
        },
        Operation::Void { .. } => Outcome::VoidFailed {
            error: format!("{code}: {reason}"),
        },
        Operation::Refund { .. } => Outcome::RefundRefused {
            code: code.to_owned(),
            error: reason,
        },
    }
}

/// Records what `input` says about the ride. Inputs this service does not use change nothing.
pub fn handle(mut payment: Payment, input: &Message) -> Payment {
    match input {
        Message::RideRequested(r) if payment.trip.is_none() => {
            payment.trip = Some(Trip {
                rider_id: r.rider_id.clone(),
                payment_token: r.payment_token.clone(),
                estimated_fare_cents: r.estimated_fare_cents,
            });
        }
        Message::DriverAssigned(a) => {
            payment.driver_assigned = true;
            payment.driver_id = Some(a.driver_id.clone());
        }
        Message::RideCompleted(c) => {
            payment.driver_id.get_or_insert_with(|| c.driver_id.clone());
            if payment.ending.is_none() {
                payment.fare = c.fare.filter(|f| f.total_cents == c.fare_cents);
            }
            end(
                &mut payment,
                Ending::Completed {
                    fare_cents: c.fare_cents,
                },
            );
        }
        Message::RideCancelled(c) if c.reason == CancelReason::RiderNoShow => {
            end(&mut payment, Ending::RiderNoShow);
        }
        Message::RideCancelled(_) | Message::RideRejected(_) => {
            end(&mut payment, Ending::Cancelled);
        }
        Message::RideRequested(_) => debug!("repeated ride request; the first one stands"),
        other => warn!(kind = %other.kind(), "message payment does not use; ignored"),
    }
    payment
}

fn end(payment: &mut Payment, ending: Ending) {
    match payment.ending {
        None => payment.ending = Some(ending),
        Some(known) if known == ending => {}
        Some(known) => warn!(
            ?known,
            ?ending,
            "a ride cannot end twice; the first ending stands"
        ),
    }
}

/// The gateway operation the facts call for now, if any: none while one is pending.
pub fn next_operation(payment: &Payment, fees: &Fees) -> Option<Operation> {
    match (&payment.hold, payment.ending, &payment.settlement) {
        (Hold::None, ending, _) if !ending.is_some_and(Ending::is_cancellation) => {
            let trip = payment.trip.as_ref().filter(|_| payment.driver_assigned)?;
            Some(Operation::Hold {
                token: trip.payment_token.clone(),
                amount_cents: trip.estimated_fare_cents,
            })
        }
        (Hold::Held { hold_id, .. }, Some(Ending::Completed { fare_cents }), Settlement::Open) => {
            Some(Operation::Capture {
                hold_id: hold_id.clone(),
                amount_cents: fare_cents,
            })
        }
        (
            Hold::Held {
                hold_id,
                amount_cents,
            },
            Some(Ending::RiderNoShow),
            Settlement::Open,
        ) if fees.no_show_cents > 0 => Some(Operation::Capture {
            hold_id: hold_id.clone(),
            amount_cents: fees.no_show_cents.min(*amount_cents),
        }),
        (
            Hold::Held {
                hold_id,
                amount_cents,
            },
            Some(Ending::Cancelled | Ending::RiderNoShow),
            Settlement::Open,
        ) => Some(Operation::Void {
            hold_id: hold_id.clone(),
            amount_cents: *amount_cents,
        }),
        _ => None,
    }
}

/// Records that `operation` was asked of the gateway: it is pending until [`record`]ed, and no
/// operation is due meanwhile.
pub fn begin(mut payment: Payment, operation: &Operation) -> Payment {
    match operation {
        Operation::Hold { .. } => payment.hold = Hold::Pending,
        Operation::Capture { .. } | Operation::Void { .. } => {
            payment.settlement = Settlement::Pending;
        }
        // Pending since the command asked for it (see `request_refund`).
        Operation::Refund { .. } => {}
    }
    payment
}

/// Records how `operation` ended and returns the event that announces it (none for a failed
/// void, which is logged for operators).
pub fn record(
    mut payment: Payment,
    operation: &Operation,
    outcome: Outcome,
) -> (Payment, Option<Message>) {
    let Some(rider_id) = payment.trip.as_ref().map(|t| t.rider_id.clone()) else {
        warn!("gateway outcome for a payment without a trip; ignored");
        return (payment, None);
    };
    let amount_cents = operation.amount_cents();
    let message = match (operation, outcome) {
        (Operation::Hold { .. }, Outcome::Held { hold_id }) => {
            payment.hold = Hold::Held {
                hold_id: hold_id.clone(),
                amount_cents,
            };
            debug!(%hold_id, amount_cents, "hold placed");
            Message::PaymentAuthorized(PaymentAuthorized {
                rider_id,
                hold_id,
                amount_cents,
            })
        }
        (Operation::Hold { .. }, Outcome::Declined { code, message }) => {
            payment.hold = Hold::Declined {
                code: code.clone(),
                message: message.clone(),
            };
            debug!(%code, "hold declined");
            Message::PaymentDeclined(PaymentDeclined {
                rider_id,
                code,
                message,
            })
        }
        (Operation::Capture { hold_id, .. }, Outcome::Captured) => {
            payment.settlement = Settlement::Captured { amount_cents };
            debug!(%hold_id, amount_cents, "fare or fee captured");
            Message::PaymentCaptured(PaymentCaptured {
                rider_id,
                hold_id: hold_id.clone(),
                amount_cents,
                earnings: None,
                fare: None,
            })
        }
        (Operation::Capture { hold_id, .. }, Outcome::CaptureRefused { error }) => {
            payment.settlement = Settlement::CaptureFailed {
                error: error.clone(),
            };
            warn!(%hold_id, %error, "capture refused; an operator must act");
            Message::PaymentCaptureFailed(PaymentCaptureFailed {
                rider_id,
                hold_id: hold_id.clone(),
                amount_cents,
                error,
            })
        }
        (Operation::Void { hold_id, .. }, Outcome::Voided) => {
            payment.settlement = Settlement::Voided;
            debug!(%hold_id, "hold voided");
            Message::PaymentVoided(PaymentVoided {
                rider_id,
                hold_id: hold_id.clone(),
                amount_cents,
            })
        }
        (Operation::Void { hold_id, .. }, Outcome::VoidFailed { error }) => {
            error!(
                %hold_id,
                amount_cents,
                %error,
                "void failed: the hold stays until it lapses at the gateway; an operator may \
                 release it"
            );
            payment.settlement = Settlement::VoidFailed { error };
            return (payment, None);
        }
        (Operation::Refund { refund_id, .. }, outcome @ Outcome::Refunded)
        | (Operation::Refund { refund_id, .. }, outcome @ Outcome::RefundRefused { .. }) => {
            return record_refund(payment, refund_id, rider_id, outcome);
        }
        (operation, outcome) => {
            warn!(
                ?operation,
                ?outcome,
                "outcome does not answer the operation; ignored"
            );
            return (payment, None);
        }
    };
    (payment, Some(message))
}

/// Records how a pending refund ended: made (with the ledger's reversal, for a ride whose
/// capture was shared) or refused by the gateway. A refund that is not pending (answered
/// before) changes nothing.
fn record_refund(
    mut payment: Payment,
    refund_id: &str,
    rider_id: RiderId,
    outcome: Outcome,
) -> (Payment, Option<Message>) {
    let refunded_before = payment.refunded_cents();
    let captured = payment.captured_cents();
    let hold_id = match &payment.hold {
        Hold::Held { hold_id, .. } => hold_id.clone(),
        _ => String::new(),
    };
    let commission = payment.commission_cents;
    let driver_id = payment.driver_id.clone();
    let Some(refund) = payment
        .refunds
        .iter_mut()
        .find(|r| r.refund_id.as_str() == refund_id && r.status == RefundStatus::Pending)
    else {
        warn!(%refund_id, "outcome of a refund that is not pending; ignored");
        return (payment, None);
    };
    let amount_cents = refund.amount_cents.unwrap_or(0);
    let message = match outcome {
        Outcome::RefundRefused { code, error } => {
            warn!(%refund_id, %code, %error, "refund refused by the gateway");
            refund.status = RefundStatus::Refused {
                code: code.clone(),
                reason: error.clone(),
            };
            Message::PaymentRefundRefused(PaymentRefundRefused {
                refund_id: refund.refund_id.clone(),
                rider_id: Some(rider_id),
                amount_cents: refund.amount_cents,
                code,
                reason: format!("the payment gateway did not refund: {error}"),
            })
        }
        _ => {
            refund.status = RefundStatus::Refunded;
            let reversal = match (driver_id, commission) {
                (Some(driver_id), Some(commission)) => {
                    let (driver_cents, commission_cents) =
                        reversal(captured, commission, refunded_before, amount_cents);
                    Some(Earnings {
                        driver_id,
                        driver_cents,
                        commission_cents,
                    })
                }
                _ => None,
            };
            debug!(%refund_id, amount_cents, "refund made");
            Message::PaymentRefunded(PaymentRefunded {
                rider_id,
                refund_id: refund.refund_id.clone(),
                hold_id,
                amount_cents,
                refunded_cents: refunded_before + amount_cents,
                captured_cents: captured,
                reason: refund.reason.clone(),
                reversal,
            })
        }
    };
    (payment, Some(message))
}

#[cfg(test)]
mod refund_tests;
#[cfg(test)]
mod tests;
