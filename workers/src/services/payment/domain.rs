//! The payment state machine, pure: facts about a ride accumulate in any order, and the
//! gateway operation due next follows from the facts alone.
//!
//! Facts: the trip (from `evt.ride.requested`: rider, token, estimated fare), that a driver was
//! assigned, and how the ride ended (completed with a fare, or cancelled/rejected). Operations:
//! hold the estimated fare once the trip and driver are known and the ride has not ended
//! cancelled; capture the fare once the ride completed; void the hold once it was cancelled.
//! A cancel that arrives before the assignment is a tombstone: no hold is ever placed. Each
//! operation's result is recorded, so an operation is never due twice.

use ridesaga_schemas::{
    Message, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured, PaymentDeclined,
    PaymentVoided, RiderId,
};
use tracing::{debug, warn};

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
    /// Cancelled for any reason, or rejected.
    Cancelled,
}

/// The hold for the estimated fare.
#[derive(Debug, Clone, PartialEq)]
pub enum Hold {
    None,
    Held { hold_id: String, amount_cents: u64 },
    Declined { code: String, message: String },
}

/// What became of the hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Open,
    Captured { amount_cents: u64 },
    Voided,
    CaptureFailed { error: String },
}

/// One ride's payment.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    pub trip: Option<Trip>,
    pub driver_assigned: bool,
    pub ending: Option<Ending>,
    pub hold: Hold,
    pub settlement: Settlement,
}

impl Default for Payment {
    fn default() -> Self {
        Payment {
            trip: None,
            driver_assigned: false,
            ending: None,
            hold: Hold::None,
            settlement: Settlement::Open,
        }
    }
}

/// A gateway call the payment needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Hold { token: String, amount_cents: u64 },
    Capture { hold_id: String, amount_cents: u64 },
    Void { hold_id: String, amount_cents: u64 },
}

impl Operation {
    /// `hold`, `capture` or `void`: with the ride id, the idempotency key of the call.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Hold { .. } => "hold",
            Operation::Capture { .. } => "capture",
            Operation::Void { .. } => "void",
        }
    }

    pub fn amount_cents(&self) -> u64 {
        match self {
            Operation::Hold { amount_cents, .. }
            | Operation::Capture { amount_cents, .. }
            | Operation::Void { amount_cents, .. } => *amount_cents,
        }
    }
}

/// The gateway's final answer to an operation (transient failures never get here).
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Held { hold_id: String },
    Declined { code: String, message: String },
    Captured,
    CaptureRefused { error: String },
    Voided,
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
        Message::DriverAssigned(_) => payment.driver_assigned = true,
        Message::RideCompleted(c) => {
            end(
                &mut payment,
                Ending::Completed {
                    fare_cents: c.fare_cents,
                },
            );
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

/// The gateway operation the facts call for now, if any.
pub fn next_operation(payment: &Payment) -> Option<Operation> {
    match (&payment.hold, payment.ending, &payment.settlement) {
        (Hold::None, ending, _) if ending != Some(Ending::Cancelled) => {
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
            Some(Ending::Cancelled),
            Settlement::Open,
        ) => Some(Operation::Void {
            hold_id: hold_id.clone(),
            amount_cents: *amount_cents,
        }),
        _ => None,
    }
}

/// Records the gateway's answer to `operation` and returns the event that announces it.
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
            debug!(%hold_id, amount_cents, "fare captured");
            Message::PaymentCaptured(PaymentCaptured {
                rider_id,
                hold_id: hold_id.clone(),
                amount_cents,
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use proptest::sample::Index;
    use ridesaga_schemas::{
        CancelReason, DriverAssigned, DriverId, GeoPoint, RideCancelled, RideCompleted,
        RideRequested, Timestamp,
    };

    use super::super::gateway::{HoldOutcome, decide_hold};
    use super::*;

    fn rider() -> RiderId {
        RiderId::parse("u_ada").unwrap()
    }

    fn requested(token: &str) -> Message {
        Message::RideRequested(RideRequested {
            rider_id: rider(),
            pickup: GeoPoint::new(52.52, 13.40).unwrap(),
            dropoff: GeoPoint::new(52.50, 13.45).unwrap(),
            payment_token: token.into(),
            estimated_distance_km: 4.0,
            estimated_fare_cents: 1200,
            match_deadline: Timestamp::from_unix_millis(0),
        })
    }

    fn assigned() -> Message {
        Message::DriverAssigned(DriverAssigned {
            rider_id: rider(),
            driver_id: DriverId::parse("d_bob").unwrap(),
            driver_name: "Bob".into(),
            pickup_distance_km: 1.0,
        })
    }

    fn completed(fare_cents: u64) -> Message {
        Message::RideCompleted(RideCompleted {
            rider_id: rider(),
            driver_id: DriverId::parse("d_bob").unwrap(),
            distance_km: 4.0,
            duration_min: 12.0,
            fare_cents,
        })
    }

    fn cancelled(reason: CancelReason) -> Message {
        Message::RideCancelled(RideCancelled {
            rider_id: rider(),
            reason,
            driver_id: None,
        })
    }

    /// The simulated gateway's decisions, without latency or outages.
    fn simulate(operation: &Operation) -> Outcome {
        match operation {
            Operation::Hold { token, .. } => match decide_hold("r_1/hold", token) {
                HoldOutcome::Approved { hold_id } => Outcome::Held { hold_id },
                HoldOutcome::Declined { code, message } => Outcome::Declined { code, message },
            },
            Operation::Capture { .. } => Outcome::Captured,
            Operation::Void { .. } => Outcome::Voided,
        }
    }

    /// Records one input, then runs every operation it makes due, as the worker does.
    fn step(payment: Payment, input: &Message) -> (Payment, Vec<Message>) {
        let mut payment = handle(payment, input);
        let mut out = Vec::new();
        while let Some(operation) = next_operation(&payment) {
            let (next, message) = record(payment, &operation, simulate(&operation));
            payment = next;
            out.extend(message);
        }
        (payment, out)
    }

    fn run(inputs: &[Message]) -> (Payment, Vec<Message>) {
        inputs
            .iter()
            .fold((Payment::default(), Vec::new()), |(p, mut all), input| {
                let (p, out) = step(p, input);
                all.extend(out);
                (p, all)
            })
    }

    fn kinds(messages: &[Message]) -> Vec<&'static str> {
        messages.iter().map(|m| m.kind().as_str()).collect()
    }

    #[test]
    fn an_assignment_after_the_request_places_a_hold_for_the_estimate() {
        let (payment, out) = run(&[requested("tok_visa"), assigned()]);
        assert!(matches!(&out[..], [Message::PaymentAuthorized(a)] if a.amount_cents == 1200));
        assert!(matches!(
            payment.hold,
            Hold::Held {
                amount_cents: 1200,
                ..
            }
        ));
    }

    #[test]
    fn an_assignment_before_the_request_holds_when_the_request_arrives() {
        let (payment, out) = run(&[assigned()]);
        assert!(out.is_empty() && payment.hold == Hold::None);
        let (_, out) = step(payment, &requested("tok_visa"));
        assert_eq!(kinds(&out), ["evt.payment.authorized"]);
    }

    #[test]
    fn a_declined_card_emits_declined_with_its_code() {
        for (token, expected) in [
            ("tok_chargeDeclined", "card_declined"),
            ("tok_insufficient_funds", "insufficient_funds"),
        ] {
            let (_, out) = run(&[requested(token), assigned()]);
            assert!(matches!(&out[..], [Message::PaymentDeclined(d)] if d.code == expected));
        }
    }

    #[test]
    fn completion_captures_the_final_fare_even_when_it_differs_from_the_hold() {
        let (payment, out) = run(&[requested("tok_visa"), assigned(), completed(1534)]);
        assert!(matches!(out.last(), Some(Message::PaymentCaptured(c)) if c.amount_cents == 1534));
        assert_eq!(
            payment.settlement,
            Settlement::Captured { amount_cents: 1534 }
        );
    }

    #[test]
    fn a_cancel_after_the_hold_voids_it() {
        let inputs = [
            requested("tok_visa"),
            assigned(),
            cancelled(CancelReason::Rider),
        ];
        let (payment, out) = run(&inputs);
        assert!(matches!(out.last(), Some(Message::PaymentVoided(v)) if v.amount_cents == 1200));
        assert_eq!(payment.settlement, Settlement::Voided);
    }

    #[test]
    fn a_cancel_before_the_assignment_leaves_a_tombstone_so_no_hold_is_placed() {
        let inputs = [
            requested("tok_visa"),
            cancelled(CancelReason::Rider),
            assigned(),
        ];
        let (payment, out) = run(&inputs);
        assert!(out.is_empty());
        assert_eq!(
            (payment.hold, payment.ending),
            (Hold::None, Some(Ending::Cancelled))
        );
    }

    #[test]
    fn a_cancel_after_a_decline_has_nothing_to_void() {
        let inputs = [
            requested("tok_chargeDeclined"),
            assigned(),
            cancelled(CancelReason::PaymentDeclined),
        ];
        let (payment, out) = run(&inputs);
        assert_eq!(kinds(&out), ["evt.payment.declined"]);
        assert_eq!(payment.settlement, Settlement::Open);
    }

    #[test]
    fn a_refused_capture_is_reported_once_and_never_retried() {
        let (payment, _) = run(&[requested("tok_visa"), assigned()]);
        let payment = handle(payment, &completed(1500));
        let operation = next_operation(&payment).unwrap();
        let refused = Outcome::CaptureRefused {
            error: "issuer said no".into(),
        };
        let (payment, message) = record(payment, &operation, refused);
        assert!(
            matches!(message, Some(Message::PaymentCaptureFailed(f)) if f.amount_cents == 1500)
        );
        assert_eq!(next_operation(&payment), None);
        assert!(step(payment, &completed(1500)).1.is_empty());
    }

    #[test]
    fn repeated_events_call_for_no_further_operation_even_without_the_inbox() {
        let once = [requested("tok_visa"), assigned(), completed(1300)];
        let twice: Vec<Message> = once.iter().chain(&once).cloned().collect();
        assert_eq!(run(&once), run(&twice));
    }

    /// One saga's messages to payment, and for each the messages that must precede it in
    /// payment's own processing. Only true causal constraints are kept: payment announces the
    /// hold itself, so a completion (or a cancel that names the hold) follows both the request
    /// and the assignment; a tombstone scenario has its cancel before the assignment; the
    /// request and the assignment may come in either order.
    fn saga(number: usize) -> Vec<(Message, Vec<usize>)> {
        match number {
            0 => vec![
                (requested("tok_visa"), vec![]),
                (assigned(), vec![]),
                (completed(1490), vec![0, 1]),
            ],
            1 => vec![
                (requested("tok_insufficient_funds"), vec![]),
                (assigned(), vec![]),
                (cancelled(CancelReason::PaymentDeclined), vec![0, 1]),
            ],
            2 => vec![
                (requested("tok_visa"), vec![]),
                (assigned(), vec![]),
                (cancelled(CancelReason::Rider), vec![0, 1]),
            ],
            3 => vec![
                (requested("tok_visa"), vec![]),
                (cancelled(CancelReason::Rider), vec![]),
                (assigned(), vec![1]),
            ],
            _ => vec![
                (requested("tok_visa"), vec![]),
                (cancelled(CancelReason::NoDriver), vec![]),
            ],
        }
    }

    /// A random order that respects `after` (each entry lists what must come first).
    fn linearize(after: &[Vec<usize>], picks: &[Index]) -> Vec<usize> {
        let mut order = Vec::new();
        while order.len() < after.len() {
            let ready: Vec<usize> = (0..after.len())
                .filter(|i| !order.contains(i) && after[*i].iter().all(|d| order.contains(d)))
                .collect();
            let pick = picks.get(order.len()).map_or(0, |p| p.index(ready.len()));
            order.push(ready[pick]);
        }
        order
    }

    /// Delivers message numbers through a model of the runtime's inbox.
    fn deliver(messages: &[Message], order: &[usize]) -> (Payment, Vec<String>) {
        let mut seen = HashSet::new();
        let mut payment = Payment::default();
        let mut effects = Vec::new();
        for &n in order {
            if seen.insert(n) {
                let (next, out) = step(payment, &messages[n]);
                payment = next;
                effects.extend(out.iter().map(|m| format!("{m:?}")));
            }
        }
        effects.sort();
        (payment, effects)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_causal_interleaving_with_redeliveries_ends_like_in_order_delivery(
            number in 0usize..5,
            picks in proptest::collection::vec(any::<Index>(), 3),
            redeliveries in proptest::collection::vec((any::<Index>(), any::<Index>()), 0..5),
        ) {
            let (messages, after): (Vec<Message>, Vec<Vec<usize>>) = saga(number).into_iter().unzip();
            let in_order: Vec<usize> = (0..messages.len()).collect();
            let expected = deliver(&messages, &in_order);

            let mut order = linearize(&after, &picks);
            for (which, when) in &redeliveries {
                let original = which.index(order.len());
                let position = original + 1 + when.index(order.len() - original);
                order.insert(position, order[original]);
            }
            prop_assert_eq!(deliver(&messages, &order), expected);
        }
    }
}
