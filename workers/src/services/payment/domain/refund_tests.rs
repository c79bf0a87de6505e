//! Tests of refunds in the pure payment state machine.

use proptest::prelude::*;
use ridesaga_schemas::{DriverId, RefundId};

use super::*;

fn rider() -> RiderId {
    RiderId::parse("u_ada").unwrap()
}

/// A completed ride whose fare of 1300 was captured and split 1040 / 260.
fn captured() -> Payment {
    Payment {
        trip: Some(Trip {
            rider_id: rider(),
            payment_token: "tok_visa".into(),
            estimated_fare_cents: 1200,
        }),
        driver_assigned: true,
        driver_id: Some(DriverId::parse("d_bob").unwrap()),
        ending: Some(Ending::Completed { fare_cents: 1300 }),
        hold: Hold::Held {
            hold_id: "h_1".into(),
            amount_cents: 1200,
        },
        settlement: Settlement::Captured { amount_cents: 1300 },
        commission_cents: Some(260),
        ..Payment::default()
    }
}

fn command(id: &str, amount_cents: Option<u64>) -> RefundRide {
    RefundRide {
        refund_id: RefundId::parse(id).unwrap(),
        amount_cents,
        reason: Some("detour".into()),
    }
}

/// Asks for a refund and, when it is due, answers it with `outcome`.
fn refund_with(
    payment: Payment,
    id: &str,
    amount_cents: Option<u64>,
    outcome: Outcome,
) -> (Payment, Option<Message>) {
    match request_refund(payment, &command(id, amount_cents)) {
        (payment, RefundDecision::Due(operation)) => {
            let payment = begin(payment, &operation);
            record(payment, &operation, outcome)
        }
        (payment, RefundDecision::Refused(refused)) => {
            (payment, Some(Message::PaymentRefundRefused(refused)))
        }
        (payment, RefundDecision::Repeated) => (payment, None),
    }
}

fn refund(payment: Payment, id: &str, amount_cents: Option<u64>) -> (Payment, Option<Message>) {
    refund_with(payment, id, amount_cents, Outcome::Refunded)
}

#[test]
fn a_partial_refund_then_the_rest_reverses_the_whole_split() {
    let (payment, first) = refund(captured(), "rf_1", Some(500));
    let Some(Message::PaymentRefunded(first)) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        (
            first.amount_cents,
            first.refunded_cents,
            first.captured_cents
        ),
        (500, 500, 1300)
    );
    let reversal = first.reversal.unwrap();
    assert_eq!(
        (reversal.driver_cents, reversal.commission_cents),
        (400, 100)
    );
    assert_eq!(first.hold_id, "h_1");
    assert_eq!(payment.refundable_cents(), 800);
    // Without an amount: the rest.
    let (payment, rest) = refund(payment, "rf_2", None);
    let Some(Message::PaymentRefunded(rest)) = rest else {
        panic!("{rest:?}")
    };
    assert_eq!((rest.amount_cents, rest.refunded_cents), (800, 1300));
    let reversal = rest.reversal.unwrap();
    assert_eq!(
        (reversal.driver_cents, reversal.commission_cents),
        (640, 160)
    );
    assert_eq!(payment.refundable_cents(), 0);
    assert_eq!(payment.refunded_cents(), 1300);
    // A third one finds nothing left.
    let (payment, third) = refund(payment, "rf_3", Some(1));
    let Some(Message::PaymentRefundRefused(third)) = third else {
        panic!("{third:?}")
    };
    assert_eq!(third.code, REFUND_EXCEEDS_CAPTURE);
    assert!(
        third.reason.contains("refunded already"),
        "{}",
        third.reason
    );
    assert_eq!(payment.refunded_cents(), 1300);
}

#[test]
fn a_refund_above_what_is_left_is_refused_with_the_amounts() {
    let (payment, out) = refund(captured(), "rf_1", Some(1301));
    let Some(Message::PaymentRefundRefused(refused)) = out else {
        panic!("{out:?}")
    };
    assert_eq!(refused.code, REFUND_EXCEEDS_CAPTURE);
    assert_eq!(refused.amount_cents, Some(1301));
    assert_eq!(refused.rider_id, Some(rider()));
    assert!(
        refused.reason.contains("13.01") && refused.reason.contains("13.00"),
        "{}",
        refused.reason
    );
    assert_eq!(payment.refundable_cents(), 1300);
    // A refund in flight counts against what is left.
    let (payment, due) = request_refund(payment, &command("rf_2", Some(1000)));
    assert!(matches!(
        due,
        RefundDecision::Due(Operation::Refund {
            amount_cents: 1000,
            ..
        })
    ));
    let (_, over) = request_refund(payment, &command("rf_3", Some(301)));
    assert!(matches!(over, RefundDecision::Refused(r) if r.code == REFUND_EXCEEDS_CAPTURE));
}

#[test]
fn a_ride_with_nothing_captured_refunds_nothing() {
    let mut held = captured();
    held.settlement = Settlement::Open;
    for payment in [Payment::default(), held] {
        let (payment, out) = refund(payment, "rf_1", None);
        let code = match &out {
            Some(Message::PaymentRefundRefused(r)) => r.code.as_str(),
            _ => panic!("{out:?}"),
        };
        assert_eq!(code, REFUND_NOTHING_CAPTURED);
        assert_eq!(payment.refunded_cents(), 0);
    }
}

#[test]
fn a_refund_id_asked_for_again_changes_nothing_whatever_became_of_it() {
    let (payment, _) = refund(captured(), "rf_1", Some(500));
    let (again, decision) = request_refund(payment.clone(), &command("rf_1", Some(500)));
    assert_eq!(decision, RefundDecision::Repeated);
    assert_eq!(again, payment);
    // Even with another amount, and after a refusal.
    let (payment, _) = refund(payment, "rf_2", Some(5000));
    let (again, decision) = request_refund(payment.clone(), &command("rf_2", Some(10)));
    assert_eq!(decision, RefundDecision::Repeated);
    assert_eq!(again.refunds, payment.refunds);
}

#[test]
fn an_outcome_answered_twice_is_recorded_once() {
    let (payment, decision) = request_refund(captured(), &command("rf_1", Some(500)));
    let RefundDecision::Due(operation) = decision else {
        panic!()
    };
    let (payment, first) = record(payment, &operation, Outcome::Refunded);
    assert!(matches!(first, Some(Message::PaymentRefunded(_))));
    let (again, second) = record(payment.clone(), &operation, Outcome::Refunded);
    assert_eq!(second, None);
    assert_eq!(again, payment);
}

#[test]
fn a_refund_the_gateway_refuses_gives_its_amount_back_to_what_is_left() {
    let refused = Outcome::RefundRefused {
        code: "refund_exceeds_charge".into(),
        error: "no".into(),
    };
    let (payment, out) = refund_with(captured(), "rf_1", Some(500), refused);
    let Some(Message::PaymentRefundRefused(r)) = out else {
        panic!("{out:?}")
    };
    assert_eq!(r.code, "refund_exceeds_charge");
    assert_eq!(payment.refundable_cents(), 1300);
    // An unreachable gateway ends the same way, with its own code.
    let (payment, decision) = request_refund(payment, &command("rf_2", None));
    let RefundDecision::Due(operation) = decision else {
        panic!()
    };
    let outcome = failed(&operation, Failure::Unreachable("timeout".into()));
    let (payment, out) = record(payment, &operation, outcome);
    assert!(
        matches!(&out, Some(Message::PaymentRefundRefused(r)) if r.code == GATEWAY_UNAVAILABLE),
        "{out:?}"
    );
    assert_eq!(payment.refunded_cents(), 0);
}

#[test]
fn a_refund_is_its_own_operation_with_its_own_key() {
    let (_, decision) = request_refund(captured(), &command("rf_1", None));
    let RefundDecision::Due(operation) = decision else {
        panic!()
    };
    assert_eq!(operation.key(), "refund/rf_1");
    assert_eq!(operation.amount_cents(), 1300);
    assert_eq!(
        Operation::Capture {
            hold_id: "h".into(),
            amount_cents: 1
        }
        .key(),
        "capture"
    );
}

proptest! {
    /// However a capture is refunded in parts, every part splits into its two reversals, none
    /// is more than what is left of its entry, and refunds adding up to the capture reverse
    /// its split exactly.
    #[test]
    fn reversals_add_up_to_the_split(
        captured in 1u64..1_000_000,
        percent in 0u64..=100,
        cuts in proptest::collection::vec(1u64..1_000_000, 0..6),
    ) {
        let (driver, commission) = split(captured, percent);
        let mut cuts: Vec<u64> = cuts.into_iter().map(|c| c % captured).collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts.push(captured);
        let (mut before, mut off_driver, mut off_commission) = (0, 0, 0);
        for cut in cuts.into_iter().filter(|c| *c > 0) {
            let amount = cut - before;
            let (d, c) = reversal(captured, commission, before, amount);
            prop_assert_eq!(d + c, amount);
            off_driver += d;
            off_commission += c;
            prop_assert!(off_driver <= driver && off_commission <= commission);
            before = cut;
        }
        prop_assert_eq!((off_driver, off_commission), (driver, commission));
    }
}
