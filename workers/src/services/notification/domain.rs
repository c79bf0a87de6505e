//! Which notifications a ride's events call for, pure: each (kind, recipient, occurrence) at
//! most once per ride, and the same set whatever order the events arrive in. The occurrence is
//! empty for every kind but a refund, whose occurrence is its refund id: a ride refunded in
//! several parts tells its rider of each part once.
//!
//! - driver assigned: the rider (who is coming) and the driver (whom to pick up);
//! - ride confirmed: the rider;
//! - ride cancelled: the rider, with the reason; and the driver, if the ride ever had one;
//! - ride rejected: the rider, with the rule the request broke when it was invalid;
//! - payment captured: the rider, a receipt with the amount;
//! - payment capture failed: the rider, that the fare could not be charged;
//! - payment refunded: the rider, the amount given back (once per refund).
//!
//! A cancellation may overtake the assignment it cancels. The driver's cancellation notice
//! therefore follows from two facts, "cancelled" and "a driver is known", and is sent when the
//! second of them arrives, so every order tells the driver exactly once. The assignment's own
//! notices are sent even after a cancellation: that order is possible, and the set must not
//! depend on it.

use std::collections::HashSet;

use ridesaga_schemas::{
    CancelReason, DriverId, Message, NotificationKind, Recipient, RefundId, RideId, RiderId, money,
};
use serde::{Deserialize, Serialize};
use tracing::warn;

/// One notification to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub kind: NotificationKind,
    pub recipient: Recipient,
    pub recipient_id: String,
    pub text: String,
    /// The refund a refund notice tells of; none for every other kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
}

impl Notice {
    /// Which occurrence of its kind it tells of: the refund id of a refund, empty otherwise.
    pub fn occurrence(&self) -> &str {
        self.refund_id.as_ref().map_or("", RefundId::as_str)
    }
}

/// What notification remembers about a ride.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audience {
    /// The ride's driver, from whichever event named one first.
    pub driver_id: Option<DriverId>,
    /// Why the ride was cancelled, once it was.
    pub cancelled: Option<CancelReason>,
    /// Notifications already called for, delivered or not: none is called for twice.
    /// Each is its kind, its recipient and its occurrence ([`Notice::occurrence`]).
    pub sent: HashSet<(NotificationKind, Recipient, String)>,
}

/// The notifications `input` calls for that were not sent before, and the updated state.
pub fn handle(
    mut audience: Audience,
    ride_id: &RideId,
    input: &Message,
) -> (Audience, Vec<Notice>) {
    let mut notices = Vec::new();
    let rider = |kind, text: String, rider_id: &RiderId| Notice {
        kind,
        recipient: Recipient::Rider,
        recipient_id: rider_id.to_string(),
        text,
        refund_id: None,
    };
    match input {
        Message::DriverAssigned(a) => {
            audience
                .driver_id
                .get_or_insert_with(|| a.driver_id.clone());
            let text = format!(
                "{} is on the way, {:.1} km from your pickup (ride {ride_id}).",
                a.driver_name, a.pickup_distance_km
            );
            notices.push(rider(NotificationKind::DriverAssigned, text, &a.rider_id));
            notices.push(Notice {
                kind: NotificationKind::DriverAssigned,
                recipient: Recipient::Driver,
                recipient_id: a.driver_id.to_string(),
                text: format!("New ride {ride_id}: pick up rider {}.", a.rider_id),
                refund_id: None,
            });
        }
        Message::RideConfirmed(c) => {
            audience
                .driver_id
                .get_or_insert_with(|| c.driver_id.clone());
            let text = format!(
                "Your ride {ride_id} is confirmed; estimated fare {}.",
                money::format(c.estimated_fare_cents)
            );
            notices.push(rider(NotificationKind::RideConfirmed, text, &c.rider_id));
        }
        Message::RideCancelled(c) => {
            audience.cancelled.get_or_insert(c.reason);
            if let Some(driver_id) = &c.driver_id {
                audience.driver_id.get_or_insert_with(|| driver_id.clone());
            }
            let text = format!("Your ride {ride_id} was cancelled: {}.", explain(c.reason));
            notices.push(rider(NotificationKind::RideCancelled, text, &c.rider_id));
        }
        Message::RideRejected(r) => {
            // Fraud's reasons stay with operators; a broken rule is the rider's to fix.
            let text = match &r.detail {
                Some(detail) => {
                    format!("We could not accept your ride request {ride_id}: {detail}.")
                }
                None => format!("We could not accept your ride request {ride_id}."),
            };
            notices.push(rider(NotificationKind::RideRejected, text, &r.rider_id));
        }
        Message::PaymentCaptured(p) => {
            let parts = match &p.fare {
                Some(f) if f.surge_cents > 0 => format!(
                    " (base {} + distance {} + time {} + surge {})",
                    money::format(f.base_cents),
                    money::format(f.distance_cents),
                    money::format(f.time_cents),
                    money::format(f.surge_cents)
                ),
                Some(f) => format!(
                    " (base {} + distance {} + time {})",
                    money::format(f.base_cents),
                    money::format(f.distance_cents),
                    money::format(f.time_cents)
                ),
                None => String::new(),
            };
            let text = format!(
                "Receipt for ride {ride_id}: {} charged{parts}.",
                money::format(p.amount_cents)
            );
            notices.push(rider(NotificationKind::Receipt, text, &p.rider_id));
        }
        Message::PaymentCaptureFailed(p) => {
            let text = format!(
                "Your ride {ride_id} is complete, but we could not charge {} to your card; \
                 we will contact you about the payment.",
                money::format(p.amount_cents)
            );
            notices.push(rider(NotificationKind::PaymentFailed, text, &p.rider_id));
        }
        Message::PaymentRefunded(p) => {
            let text = format!(
                "{} of your payment for ride {ride_id} is refunded to your card \
                 ({} refunded of {}).",
                money::format(p.amount_cents),
                money::format(p.refunded_cents),
                money::format(p.captured_cents)
            );
            notices.push(Notice {
                refund_id: Some(p.refund_id.clone()),
                ..rider(NotificationKind::Refund, text, &p.rider_id)
            });
        }
        other => warn!(kind = %other.kind(), "message notification does not use; ignored"),
    }
    if let (Some(reason), Some(driver_id)) = (audience.cancelled, &audience.driver_id) {
        notices.push(Notice {
            kind: NotificationKind::RideCancelled,
            recipient: Recipient::Driver,
            recipient_id: driver_id.to_string(),
            text: format!(
                "Ride {ride_id} was cancelled ({}); you are free for other rides.",
                reason.as_str()
            ),
            refund_id: None,
        });
    }
    notices.retain(|n| {
        audience
            .sent
            .insert((n.kind, n.recipient, n.occurrence().to_owned()))
    });
    (audience, notices)
}

/// What a cancellation reason means to a rider.
fn explain(reason: CancelReason) -> &'static str {
    match reason {
        CancelReason::Rider => "you cancelled it",
        CancelReason::NoDriver => "no driver was available",
        CancelReason::PaymentDeclined => "the payment was declined",
        CancelReason::Expired => "it could not be confirmed in time",
        CancelReason::DriverNoShow => "your driver did not reach the pickup in time",
        CancelReason::RiderNoShow => "your driver waited at the pickup but you did not show up",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use proptest::sample::Index;
    use ridesaga_schemas::{
        DriverAssigned, FareBreakdown, PaymentCaptureFailed, PaymentCaptured, RideCancelled,
        RideConfirmed, RideRejected,
    };

    use super::*;

    fn ride() -> RideId {
        RideId::parse("r_1").unwrap()
    }

    fn rider() -> RiderId {
        RiderId::parse("u_ada").unwrap()
    }

    fn driver() -> DriverId {
        DriverId::parse("d_bob").unwrap()
    }

    fn assigned() -> Message {
        Message::DriverAssigned(DriverAssigned {
            rider_id: rider(),
            driver_id: driver(),
            driver_name: "Bob".into(),
            pickup_distance_km: 1.3,
        })
    }

    fn confirmed() -> Message {
        Message::RideConfirmed(RideConfirmed {
            rider_id: rider(),
            driver_id: driver(),
            estimated_fare_cents: 1205,
            pickup_deadline: None,
        })
    }

    fn cancelled(reason: CancelReason, driver_id: Option<DriverId>) -> Message {
        Message::RideCancelled(RideCancelled {
            rider_id: rider(),
            reason,
            driver_id,
        })
    }

    fn rejected() -> Message {
        Message::RideRejected(RideRejected {
            rider_id: rider(),
            score: 99,
            reasons: vec![],
            detail: None,
        })
    }

    fn captured(amount_cents: u64) -> Message {
        Message::PaymentCaptured(PaymentCaptured {
            rider_id: rider(),
            hold_id: "hold_1".into(),
            amount_cents,
            earnings: None,
            fare: None,
        })
    }

    fn run(inputs: &[Message]) -> (Audience, Vec<Notice>) {
        let mut audience = Audience::default();
        let mut all = Vec::new();
        for input in inputs {
            let (next, notices) = handle(audience, &ride(), input);
            audience = next;
            all.extend(notices);
        }
        (audience, all)
    }

    fn keys(notices: &[Notice]) -> Vec<(NotificationKind, Recipient, &str)> {
        notices
            .iter()
            .map(|n| (n.kind, n.recipient, n.recipient_id.as_str()))
            .collect()
    }

    #[test]
    fn an_assignment_tells_the_rider_and_the_driver() {
        let (_, notices) = run(&[assigned()]);
        assert_eq!(
            keys(&notices),
            [
                (NotificationKind::DriverAssigned, Recipient::Rider, "u_ada"),
                (NotificationKind::DriverAssigned, Recipient::Driver, "d_bob"),
            ]
        );
        assert!(notices[0].text.contains("Bob is on the way, 1.3 km"));
    }

    #[test]
    fn a_confirmation_tells_the_rider_the_estimated_fare() {
        let (_, notices) = run(&[confirmed()]);
        assert_eq!(notices.len(), 1);
        assert!(notices[0].text.contains("estimated fare 12.05"));
    }

    #[test]
    fn a_cancellation_tells_the_rider_why_and_the_driver_if_there_was_one() {
        let (_, notices) = run(&[cancelled(CancelReason::NoDriver, None)]);
        assert_eq!(
            keys(&notices),
            [(NotificationKind::RideCancelled, Recipient::Rider, "u_ada")]
        );
        assert!(notices[0].text.contains("no driver was available"));

        let (_, notices) = run(&[cancelled(CancelReason::Rider, Some(driver()))]);
        assert_eq!(notices.len(), 2);
        assert_eq!(notices[1].recipient_id, "d_bob");
    }

    #[test]
    fn a_driver_whose_assignment_arrives_after_the_cancel_still_hears_of_it() {
        let (_, notices) = run(&[cancelled(CancelReason::Rider, None), assigned()]);
        assert!(keys(&notices).contains(&(
            NotificationKind::RideCancelled,
            Recipient::Driver,
            "d_bob"
        )));
    }

    #[test]
    fn a_rejection_tells_the_rider() {
        let (_, notices) = run(&[rejected()]);
        assert_eq!(
            keys(&notices),
            [(NotificationKind::RideRejected, Recipient::Rider, "u_ada")]
        );
    }

    #[test]
    fn an_invalid_request_tells_the_rider_which_rule_it_broke_and_fraud_keeps_its_reasons() {
        let invalid = Message::RideRejected(RideRejected {
            rider_id: rider(),
            score: 0,
            reasons: vec!["invalid_request".into()],
            detail: Some("the trip is 490.0 km; at most 200 km are accepted".into()),
        });
        let (_, notices) = run(&[invalid]);
        assert_eq!(notices[0].kind, NotificationKind::RideRejected);
        assert!(
            notices[0]
                .text
                .ends_with(": the trip is 490.0 km; at most 200 km are accepted.")
        );
        let (_, notices) = run(&[rejected()]);
        assert_eq!(
            notices[0].text,
            "We could not accept your ride request r_1."
        );
    }

    #[test]
    fn a_capture_that_failed_for_good_tells_the_rider_once() {
        let failed = Message::PaymentCaptureFailed(PaymentCaptureFailed {
            rider_id: rider(),
            hold_id: "hold_1".into(),
            amount_cents: 1534,
            error: "gateway unavailable".into(),
        });
        let (_, notices) = run(&[failed.clone(), failed]);
        assert_eq!(
            keys(&notices),
            [(NotificationKind::PaymentFailed, Recipient::Rider, "u_ada")]
        );
        assert!(notices[0].text.contains("could not charge 15.34"));
    }

    fn refunded(refund_id: &str, amount_cents: u64, refunded_cents: u64) -> Message {
        Message::PaymentRefunded(ridesaga_schemas::PaymentRefunded {
            rider_id: rider(),
            refund_id: RefundId::parse(refund_id).unwrap(),
            hold_id: "hold_1".into(),
            amount_cents,
            refunded_cents,
            captured_cents: 1534,
            reason: None,
            reversal: None,
        })
    }

    #[test]
    fn a_refund_tells_the_rider_the_amount_once() {
        let refund = refunded("rf_1", 500, 500);
        let (_, notices) = run(&[captured(1534), refund.clone(), refund]);
        assert_eq!(
            keys(&notices),
            [
                (NotificationKind::Receipt, Recipient::Rider, "u_ada"),
                (NotificationKind::Refund, Recipient::Rider, "u_ada")
            ]
        );
        assert_eq!(notices[1].occurrence(), "rf_1");
        assert!(
            notices[1]
                .text
                .starts_with("5.00 of your payment for ride r_1 is refunded"),
            "{}",
            notices[1].text
        );
    }

    #[test]
    fn each_refund_of_a_ride_refunded_in_parts_tells_the_rider_once() {
        let first = refunded("rf_1", 500, 500);
        let second = refunded("rf_2", 300, 800);
        let (audience, notices) =
            run(&[captured(1534), first.clone(), second.clone(), second, first]);
        let refunds: Vec<(&str, &str)> = notices
            .iter()
            .filter(|n| n.kind == NotificationKind::Refund)
            .map(|n| (n.occurrence(), n.text.as_str()))
            .collect();
        assert_eq!(
            refunds,
            [
                (
                    "rf_1",
                    "5.00 of your payment for ride r_1 is refunded to your card \
                     (5.00 refunded of 15.34)."
                ),
                (
                    "rf_2",
                    "3.00 of your payment for ride r_1 is refunded to your card \
                     (8.00 refunded of 15.34)."
                ),
            ]
        );
        assert!(audience.sent.contains(&(
            NotificationKind::Refund,
            Recipient::Rider,
            "rf_2".to_owned()
        )));
        // Every other kind keeps an empty occurrence, so it is still told once per ride.
        assert!(
            notices
                .iter()
                .all(|n| n.kind == NotificationKind::Refund || n.occurrence().is_empty())
        );
    }

    #[test]
    fn a_capture_sends_a_receipt_with_the_amount() {
        let (_, notices) = run(&[captured(1534)]);
        assert_eq!(notices[0].kind, NotificationKind::Receipt);
        assert!(notices[0].text.contains("15.34 charged"));
    }

    #[test]
    fn a_receipt_lists_the_fare_breakdown() {
        let Message::PaymentCaptured(mut p) = captured(1534) else {
            unreachable!()
        };
        let mut fare = FareBreakdown {
            base_cents: 250,
            distance_cents: 900,
            time_cents: 384,
            surge_cents: 0,
            total_cents: 1534,
        };
        p.fare = Some(fare);
        let (_, notices) = run(&[Message::PaymentCaptured(p.clone())]);
        assert!(
            notices[0]
                .text
                .ends_with("15.34 charged (base 2.50 + distance 9.00 + time 3.84)."),
            "{}",
            notices[0].text
        );
        fare.surge_cents = 100;
        fare.total_cents = 1634;
        p.amount_cents = 1634;
        p.fare = Some(fare);
        let (_, notices) = run(&[Message::PaymentCaptured(p)]);
        assert!(
            notices[0].text.contains("+ surge 1.00)."),
            "{}",
            notices[0].text
        );
    }

    #[test]
    fn nothing_is_sent_twice_even_without_the_inbox() {
        let inputs = [assigned(), confirmed(), captured(900)];
        let (_, once) = run(&inputs);
        let twice: Vec<Message> = inputs.iter().chain(&inputs).cloned().collect();
        assert_eq!(run(&twice).1, once);
    }

    #[test]
    fn a_no_show_tells_the_rider_who_did_not_show_and_frees_the_driver() {
        let (_, notices) = run(&[cancelled(CancelReason::DriverNoShow, Some(driver()))]);
        assert!(
            notices[0]
                .text
                .contains("your driver did not reach the pickup in time")
        );
        assert!(notices[1].text.contains("(driver_no_show)"));
        let (_, notices) = run(&[cancelled(CancelReason::RiderNoShow, Some(driver()))]);
        assert!(notices[0].text.contains("you did not show up"));
        assert_eq!(notices[1].recipient_id, "d_bob");
    }

    /// One saga's events that notification consumes. All of them may arrive in any order
    /// (replicas race), so the whole list is permuted.
    fn saga(number: usize) -> Vec<Message> {
        match number {
            0 => vec![assigned(), confirmed(), captured(1490)],
            1 => vec![
                assigned(),
                confirmed(),
                cancelled(CancelReason::Rider, Some(driver())),
            ],
            2 => vec![assigned(), cancelled(CancelReason::Rider, None)],
            3 => vec![
                assigned(),
                cancelled(CancelReason::PaymentDeclined, Some(driver())),
            ],
            4 => vec![cancelled(CancelReason::NoDriver, None)],
            5 => vec![
                captured(1534),
                refunded("rf_1", 500, 500),
                refunded("rf_2", 300, 800),
            ],
            _ => vec![rejected()],
        }
    }

    /// Delivers message numbers through a model of the runtime's inbox.
    fn deliver(messages: &[Message], order: &[usize]) -> (Audience, Vec<String>) {
        let mut seen = HashSet::new();
        let mut audience = Audience::default();
        let mut effects = Vec::new();
        for &n in order {
            if seen.insert(n) {
                let (next, notices) = handle(audience, &ride(), &messages[n]);
                audience = next;
                effects.extend(notices.iter().map(|m| format!("{m:?}")));
            }
        }
        effects.sort();
        (audience, effects)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_interleaving_with_redeliveries_sends_what_in_order_delivery_sends(
            number in 0usize..7,
            picks in proptest::collection::vec(any::<Index>(), 3),
            redeliveries in proptest::collection::vec((any::<Index>(), any::<Index>()), 0..5),
        ) {
            let messages = saga(number);
            let in_order: Vec<usize> = (0..messages.len()).collect();
            let expected = deliver(&messages, &in_order);

            let mut order = in_order.clone();
            for i in (1..order.len()).rev() {
                order.swap(i, picks[i % picks.len()].index(i + 1));
            }
            for (which, when) in &redeliveries {
                let original = which.index(order.len());
                let position = original + 1 + when.index(order.len() - original);
                order.insert(position, order[original]);
            }
            prop_assert_eq!(deliver(&messages, &order), expected);
        }
    }
}
