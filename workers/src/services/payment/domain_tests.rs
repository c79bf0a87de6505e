//! Tests of the pure payment state machine.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, GeoPoint, RideCancelled, RideCompleted, RideRequested,
    Timestamp,
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
        expires_at: None,
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
    step_with(payment, input, &Fees::default())
}

/// [`step`] with these fees.
fn step_with(payment: Payment, input: &Message, fees: &Fees) -> (Payment, Vec<Message>) {
    let mut payment = handle(payment, input);
    let mut out = Vec::new();
    while let Some(operation) = next_operation(&payment, fees) {
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
    let operation = next_operation(&payment, &Fees::default()).unwrap();
    let refused = Outcome::CaptureRefused {
        error: "issuer said no".into(),
    };
    let (payment, message) = record(payment, &operation, refused);
    assert!(matches!(message, Some(Message::PaymentCaptureFailed(f)) if f.amount_cents == 1500));
    assert_eq!(next_operation(&payment, &Fees::default()), None);
    assert!(step(payment, &completed(1500)).1.is_empty());
}

/// The request, the assignment (the hold of 1200 follows) and the cancellation, with `fees`.
fn cancelled_with(reason: CancelReason, fees: Fees) -> (Payment, Vec<Message>) {
    let inputs = [requested("tok_visa"), assigned(), cancelled(reason)];
    inputs
        .iter()
        .fold((Payment::default(), Vec::new()), |(p, mut all), input| {
            let (p, out) = step_with(p, input, &fees);
            all.extend(out);
            (p, all)
        })
}

#[test]
fn a_rider_no_show_captures_the_fee_instead_of_voiding_the_hold() {
    let fees = Fees { no_show_cents: 500 };
    let (payment, out) = cancelled_with(CancelReason::RiderNoShow, fees);
    assert_eq!(
        kinds(&out),
        ["evt.payment.authorized", "evt.payment.captured"]
    );
    assert!(matches!(out.last(), Some(Message::PaymentCaptured(c)) if c.amount_cents == 500));
    assert_eq!(payment.ending, Some(Ending::RiderNoShow));
    assert_eq!(
        payment.settlement,
        Settlement::Captured { amount_cents: 500 }
    );
    assert_eq!(next_operation(&payment, &fees), None);
}

#[test]
fn a_no_show_fee_above_the_hold_captures_the_whole_hold() {
    let (payment, out) = cancelled_with(
        CancelReason::RiderNoShow,
        Fees {
            no_show_cents: 5000,
        },
    );
    assert!(matches!(out.last(), Some(Message::PaymentCaptured(c)) if c.amount_cents == 1200));
    assert_eq!(
        payment.settlement,
        Settlement::Captured { amount_cents: 1200 }
    );
}

#[test]
fn without_a_fee_a_rider_no_show_voids_the_hold() {
    let (payment, out) = cancelled_with(CancelReason::RiderNoShow, Fees::default());
    assert!(matches!(out.last(), Some(Message::PaymentVoided(v)) if v.amount_cents == 1200));
    assert_eq!(payment.settlement, Settlement::Voided);
}

#[test]
fn the_fee_is_only_for_a_rider_no_show() {
    let fees = Fees { no_show_cents: 500 };
    for reason in [
        CancelReason::DriverNoShow,
        CancelReason::Rider,
        CancelReason::Expired,
    ] {
        let (payment, out) = cancelled_with(reason, fees);
        assert!(
            matches!(out.last(), Some(Message::PaymentVoided(v)) if v.amount_cents == 1200),
            "{reason:?}: {out:?}"
        );
        assert_eq!(payment.settlement, Settlement::Voided);
    }
}

#[test]
fn a_rider_no_show_before_any_hold_places_none() {
    let fees = Fees { no_show_cents: 500 };
    let (payment, out) = step_with(
        Payment::default(),
        &cancelled(CancelReason::RiderNoShow),
        &fees,
    );
    let (payment, more) = step_with(payment, &requested("tok_visa"), &fees);
    let (payment, last) = step_with(payment, &assigned(), &fees);
    assert!(out.is_empty() && more.is_empty() && last.is_empty());
    assert_eq!(payment.hold, Hold::None);
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
