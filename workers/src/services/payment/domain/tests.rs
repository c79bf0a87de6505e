//! Tests of the pure payment state machine.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use ridesaga_schemas::{
    CancelReason, DriverAssigned, DriverId, GeoPoint, RideCancelled, RideCompleted, RideRequested,
    Timestamp,
};

use super::super::gateway::{GATEWAY_REJECTS_TOKEN, HoldOutcome, decide_hold};
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
        distance_source: ridesaga_schemas::DistanceSource::Reported,
        route_points: 0,
        fare: None,
        route: None,
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
            Ok(HoldOutcome::Approved { hold_id }) => Outcome::Held { hold_id },
            Ok(HoldOutcome::Declined { code, message }) => Outcome::Declined { code, message },
            Err(e) => failed(operation, Failure::Refused(e.to_string())),
        },
        Operation::Capture { .. } => Outcome::Captured,
        Operation::Void { .. } => Outcome::Voided,
        Operation::Refund { .. } => Outcome::Refunded,
    }
}

/// Asks for `operation` and records the simulated gateway's answer at once.
fn perform(payment: Payment, operation: &Operation) -> (Payment, Option<Message>) {
    let payment = begin(payment, operation);
    assert_eq!(next_operation(&payment, &Fees::default()), None, "pending");
    record(payment, operation, simulate(operation))
}

/// Records one input, then runs every operation it makes due, each answered at once.
fn step(payment: Payment, input: &Message) -> (Payment, Vec<Message>) {
    step_with(payment, input, &Fees::default())
}

/// [`step`] with these fees.
fn step_with(payment: Payment, input: &Message, fees: &Fees) -> (Payment, Vec<Message>) {
    settle_due(handle(payment, input), fees)
}

/// Runs every operation `payment` makes due, each answered at once.
fn settle_due(mut payment: Payment, fees: &Fees) -> (Payment, Vec<Message>) {
    let mut out = Vec::new();
    while let Some(operation) = next_operation(&payment, fees) {
        let (next, message) = perform(payment, &operation);
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
fn a_capture_splits_into_the_drivers_share_and_the_commission() {
    assert_eq!(split(1300, 20), (1040, 260));
    assert_eq!(split(1001, 25), (751, 250));
    assert_eq!(split(1002, 25), (751, 251));
    assert_eq!(split(999, 0), (999, 0));
    assert_eq!(split(999, 100), (0, 999));
    for amount in [0, 1, 7, 1234, 999_999] {
        for percent in [0, 1, 15, 20, 33, 99, 100] {
            let (driver, commission) = split(amount, percent);
            assert_eq!(driver + commission, amount, "{amount} at {percent}%");
        }
    }
}

#[test]
fn a_capture_announces_the_split_for_the_assigned_driver() {
    let captured = Message::PaymentCaptured(PaymentCaptured {
        rider_id: rider(),
        hold_id: "h_1".into(),
        amount_cents: 1300,
        earnings: None,
        fare: None,
    });
    let fees = Fees::default();
    let unassigned = with_earnings(captured.clone(), &Payment::default(), &fees);
    assert!(matches!(&unassigned, Message::PaymentCaptured(c) if c.earnings.is_none()));
    let payment = handle(Payment::default(), &assigned());
    let Message::PaymentCaptured(c) = with_earnings(captured, &payment, &fees) else {
        panic!()
    };
    let earnings = c.earnings.unwrap();
    assert_eq!(earnings.driver_id.as_str(), "d_bob");
    assert_eq!(
        (earnings.driver_cents, earnings.commission_cents),
        (1040, 260)
    );
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
    let (payment, message) = record(begin(payment, &operation), &operation, refused);
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
    let fees = Fees {
        no_show_cents: 500,
        ..Fees::default()
    };
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
            ..Fees::default()
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
    let fees = Fees {
        no_show_cents: 500,
        ..Fees::default()
    };
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
    let fees = Fees {
        no_show_cents: 500,
        ..Fees::default()
    };
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

/// Delivers message numbers through a model of the runtime's inbox, each operation answered
/// at once.
fn deliver(messages: &[Message], order: &[usize]) -> (Payment, Vec<String>) {
    deliver_answering(messages, order, &[])
}

/// [`deliver`], except that an operation's answer comes later: before the input at each
/// position in `answer_before` (in delivery order), and after the last input for the rest, as
/// the runtime settles effects while inputs keep arriving.
fn deliver_answering(
    messages: &[Message],
    order: &[usize],
    answer_before: &[bool],
) -> (Payment, Vec<String>) {
    let fees = Fees::default();
    let mut seen = HashSet::new();
    let mut payment = Payment::default();
    let mut in_flight: Option<Operation> = None;
    let mut effects = Vec::new();
    let mut answer = |payment: Payment, in_flight: &mut Option<Operation>| {
        let Some(operation) = in_flight.take() else {
            return payment;
        };
        let (payment, message) = record(payment, &operation, simulate(&operation));
        effects.extend(message.iter().map(|m| format!("{m:?}")));
        payment
    };
    for (position, &n) in order.iter().enumerate() {
        if answer_before.get(position).copied().unwrap_or(true) {
            payment = answer(payment, &mut in_flight);
        }
        if !seen.insert(n) {
            continue;
        }
        payment = handle(payment, &messages[n]);
        if in_flight.is_none()
            && let Some(operation) = next_operation(&payment, &fees)
        {
            payment = begin(payment, &operation);
            in_flight = Some(operation);
        }
    }
    loop {
        payment = answer(payment, &mut in_flight);
        let Some(operation) = next_operation(&payment, &fees) else {
            break;
        };
        payment = begin(payment, &operation);
        in_flight = Some(operation);
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

    #[test]
    fn operations_answered_while_inputs_keep_arriving_end_like_answered_at_once(
        number in 0usize..5,
        picks in proptest::collection::vec(any::<Index>(), 3),
        answer_before in proptest::collection::vec(any::<bool>(), 8),
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
        prop_assert_eq!(deliver_answering(&messages, &order, &answer_before), expected);
    }
}

#[test]
fn an_asked_hold_is_pending_and_nothing_is_due_until_it_is_answered() {
    let payment = handle(
        handle(Payment::default(), &requested("tok_visa")),
        &assigned(),
    );
    let operation = next_operation(&payment, &Fees::default()).unwrap();
    let payment = begin(payment, &operation);
    assert_eq!(payment.hold, Hold::Pending);
    for input in [assigned(), completed(1400), requested("tok_visa")] {
        let again = handle(payment.clone(), &input);
        assert_eq!(next_operation(&again, &Fees::default()), None, "{input:?}");
    }
}

#[test]
fn a_cancel_while_the_hold_is_pending_makes_the_void_due_once_it_is_placed() {
    let payment = handle(
        handle(Payment::default(), &requested("tok_visa")),
        &assigned(),
    );
    let hold = next_operation(&payment, &Fees::default()).unwrap();
    let payment = handle(begin(payment, &hold), &cancelled(CancelReason::Rider));
    assert_eq!(next_operation(&payment, &Fees::default()), None);
    let (payment, message) = record(payment, &hold, simulate(&hold));
    assert!(matches!(message, Some(Message::PaymentAuthorized(_))));
    let void = next_operation(&payment, &Fees::default()).unwrap();
    assert!(matches!(
        void,
        Operation::Void {
            amount_cents: 1200,
            ..
        }
    ));
    let (payment, message) = perform(payment, &void);
    assert!(matches!(message, Some(Message::PaymentVoided(_))));
    assert_eq!(payment.settlement, Settlement::Voided);
}

#[test]
fn a_completion_while_the_hold_is_pending_makes_the_capture_due_once_it_is_placed() {
    let payment = handle(
        handle(Payment::default(), &requested("tok_visa")),
        &assigned(),
    );
    let hold = next_operation(&payment, &Fees::default()).unwrap();
    let payment = handle(begin(payment, &hold), &completed(1534));
    let (payment, _) = record(payment, &hold, simulate(&hold));
    assert!(matches!(
        next_operation(&payment, &Fees::default()),
        Some(Operation::Capture {
            amount_cents: 1534,
            ..
        })
    ));
}

#[test]
fn a_hold_without_an_answer_is_declined_with_the_gateway_code() {
    for (failure, code) in [
        (Failure::Refused("refused".into()), GATEWAY_ERROR),
        (
            Failure::Unreachable("timed out".into()),
            GATEWAY_UNAVAILABLE,
        ),
    ] {
        let payment = handle(
            handle(Payment::default(), &requested("tok_visa")),
            &assigned(),
        );
        let hold = next_operation(&payment, &Fees::default()).unwrap();
        let outcome = failed(&hold, failure);
        assert!(matches!(&outcome, Outcome::Declined { code: c, .. } if c == code));
        let (payment, message) = record(begin(payment, &hold), &hold, outcome);
        assert!(
            matches!(&message, Some(Message::PaymentDeclined(d)) if d.code == code),
            "{message:?}"
        );
        assert!(matches!(payment.hold, Hold::Declined { .. }));
        // The ride is cancelled payment_declined: nothing is left to void.
        let payment = handle(payment, &cancelled(CancelReason::PaymentDeclined));
        assert_eq!(next_operation(&payment, &Fees::default()), None);
    }
}

#[test]
fn the_gateway_rejects_token_ends_as_a_gateway_error_not_a_card_decline() {
    let (payment, out) = run(&[requested(GATEWAY_REJECTS_TOKEN), assigned()]);
    assert!(
        matches!(&out[..], [Message::PaymentDeclined(d)] if d.code == GATEWAY_ERROR),
        "{out:?}"
    );
    assert!(matches!(payment.hold, Hold::Declined { .. }));
}

#[test]
fn a_capture_without_an_answer_is_a_failed_capture_for_operators() {
    for failure in [
        Failure::Refused("refused".into()),
        Failure::Unreachable("timed out".into()),
    ] {
        let (payment, _) = run(&[requested("tok_visa"), assigned()]);
        let payment = handle(payment, &completed(1500));
        let capture = next_operation(&payment, &Fees::default()).unwrap();
        let (payment, message) = record(
            begin(payment, &capture),
            &capture,
            failed(&capture, failure),
        );
        assert!(
            matches!(&message, Some(Message::PaymentCaptureFailed(f)) if f.amount_cents == 1500),
            "{message:?}"
        );
        assert!(matches!(
            payment.settlement,
            Settlement::CaptureFailed { .. }
        ));
        assert_eq!(next_operation(&payment, &Fees::default()), None);
    }
}

#[test]
fn a_void_without_an_answer_is_recorded_failed_with_no_event_and_not_retried() {
    for (failure, code) in [
        (Failure::Refused("refused".into()), GATEWAY_ERROR),
        (
            Failure::Unreachable("timed out".into()),
            GATEWAY_UNAVAILABLE,
        ),
    ] {
        let (payment, _) = run(&[requested("tok_visa"), assigned()]);
        let payment = handle(payment, &cancelled(CancelReason::Rider));
        let void = next_operation(&payment, &Fees::default()).unwrap();
        let (payment, message) = record(begin(payment, &void), &void, failed(&void, failure));
        assert_eq!(message, None);
        let Settlement::VoidFailed { error } = &payment.settlement else {
            panic!("{:?}", payment.settlement);
        };
        assert!(error.starts_with(code), "{error}");
        assert_eq!(next_operation(&payment, &Fees::default()), None);
    }
}

#[test]
fn operations_and_outcomes_read_back_from_their_json() {
    let operations = [
        Operation::Hold {
            token: "tok_visa".into(),
            amount_cents: 1200,
        },
        Operation::Capture {
            hold_id: "hold_1".into(),
            amount_cents: 1534,
        },
        Operation::Void {
            hold_id: "hold_1".into(),
            amount_cents: 1200,
        },
    ];
    for operation in &operations {
        let json = serde_json::to_string(operation).unwrap();
        assert_eq!(
            &serde_json::from_str::<Operation>(&json).unwrap(),
            operation
        );
    }
    assert_eq!(
        serde_json::to_string(&operations[0]).unwrap(),
        r#"{"operation":"hold","token":"tok_visa","amount_cents":1200}"#
    );
    let outcomes = [
        Outcome::Held {
            hold_id: "hold_1".into(),
        },
        Outcome::Declined {
            code: "card_declined".into(),
            message: "no".into(),
        },
        Outcome::Captured,
        Outcome::CaptureRefused { error: "no".into() },
        Outcome::Voided,
        Outcome::VoidFailed { error: "no".into() },
    ];
    for outcome in &outcomes {
        let json = serde_json::to_string(outcome).unwrap();
        assert_eq!(&serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
    }
    assert!(serde_json::from_str::<Operation>(r#"{"operation":"refund"}"#).is_err());
}
