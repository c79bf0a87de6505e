//! The saga invariants of docs/design.md, checked over an event log in stream order.
//!
//! Safety invariants (nothing twice, no double assignment, nothing for a flagged ride) are
//! checked for every saga. Liveness invariants (every saga ends, holds are voided, the rider is
//! told) only for sagas past the deadline of the state they are in by the settle time (see
//! [`Saga::overdue`]; where no deadline applies, idle that long), so an audit during traffic
//! does not report rides that are simply still running or waiting for their driver.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ridesaga_schemas::{Message, NotificationKind, Recipient, RideState, money};
use serde::Serialize;
use time::OffsetDateTime;

use super::{Saga, SagaState, Step};
use ridesaga_schemas::duration::format_duration;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub ride_id: String,
    /// The invariant's number in docs/design.md (1-6).
    pub invariant: u8,
    pub message: String,
}

/// What the audit looked at and found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub sagas: usize,
    pub terminal: usize,
    pub in_flight: usize,
    /// Completed rides whose driver's share payment holds until an operator reviews them.
    pub held_for_review: Vec<String>,
    pub violations: Vec<Violation>,
}

/// Checks every invariant over `steps` (in stream order) as of `now`.
pub fn audit(steps: &[Step], now: OffsetDateTime, settle: Duration) -> Report {
    let mut sagas: BTreeMap<&str, Saga> = BTreeMap::new();
    for step in steps {
        if let Some(ride) = step.ride() {
            sagas
                .entry(ride)
                .or_insert_with(|| Saga::new(ride))
                .apply(step);
        }
    }
    let mut violations = drivers_never_double_booked(steps);
    let mut report = Report {
        sagas: 0,
        terminal: 0,
        in_flight: 0,
        held_for_review: Vec::new(),
        violations: Vec::new(),
    };
    let reviews = super::review::collect(steps);
    for saga in sagas.values() {
        // Messages about a ride that was never requested (e.g. a refused command) are no saga.
        if saga.state == SagaState::Unknown {
            continue;
        }
        report.sagas += 1;
        if saga.state.is_terminal() {
            report.terminal += 1;
        }
        let settled = saga.overdue(now, settle);
        if !settled {
            report.in_flight += 1;
        }
        check_saga(saga, settled, now, &mut violations);
        // 6. a flagged completed ride's driver share held until reviewed, and balanced.
        if let Some(flagged) = reviews.get(&saga.ride_id) {
            violations.extend(
                flagged
                    .violations(settled)
                    .into_iter()
                    .map(|message| Violation {
                        ride_id: saga.ride_id.clone(),
                        invariant: 6,
                        message,
                    }),
            );
            if flagged.is_held() && flagged.awaiting_review() {
                report.held_for_review.push(saga.ride_id.clone());
            }
        }
    }
    violations.sort_by(|a, b| (&a.ride_id, a.invariant).cmp(&(&b.ride_id, b.invariant)));
    report.violations = violations;
    report
}

fn check_saga(saga: &Saga, settled: bool, now: OffsetDateTime, out: &mut Vec<Violation>) {
    let mut violate = |invariant: u8, message: String| {
        out.push(Violation {
            ride_id: saga.ride_id.clone(),
            invariant,
            message,
        })
    };

    // 1. exactly one terminal state, none stuck.
    if saga.terminal_events.len() > 1 {
        violate(
            1,
            format!("ended more than once: {}", saga.terminal_events.join(", ")),
        );
    }
    for late in &saga.late_transitions {
        violate(1, format!("state changed after the saga ended: {late}"));
    }
    if settled && !saga.state.is_terminal() {
        let why = match saga.deadline {
            Some(deadline) => format!(
                "past its deadline {} by {}",
                crate::output::format_time(deadline),
                format_duration(Duration::try_from(now - deadline).unwrap_or_default())
            ),
            None => format!("idle for {}", format_duration(saga.idle(now))),
        };
        violate(1, format!("stuck in {} ({why})", saga.state));
    }

    // 2. one capture equal to the fare; holds of rides that did not complete voided.
    let captures: u32 = saga.holds.iter().map(|h| h.captures).sum();
    if captures > 1 {
        violate(2, format!("captured {captures} times"));
    }
    // A rider no-show may be charged a fee: at most the hold.
    let no_show = saga.state == SagaState::Ride(RideState::Cancelled)
        && saga.reason.as_deref() == Some("rider_no_show");
    if captures > 0 && saga.state != SagaState::Ride(RideState::Completed) && !no_show {
        violate(
            2,
            format!("payment captured but the ride is {}", saga.label()),
        );
    }
    if no_show {
        for hold in saga
            .holds
            .iter()
            .filter(|h| h.captured_cents > h.authorized_cents)
        {
            violate(
                2,
                format!(
                    "no-show fee {} exceeds hold {} of {}",
                    money::format(hold.captured_cents),
                    hold.hold_id,
                    money::format(hold.authorized_cents)
                ),
            );
        }
    }
    if let (Some(fare), true) = (saga.fare_cents, captures == 1)
        && saga.captured_cents != fare
    {
        violate(
            2,
            format!(
                "captured {} but the fare is {}",
                money::format(saga.captured_cents),
                money::format(fare)
            ),
        );
    }
    if let (Some(fare), Some(parts)) = (saga.fare_cents, &saga.fare)
        && (!parts.is_balanced() || parts.total_cents != fare)
    {
        violate(
            2,
            format!(
                "fare breakdown base {} + distance {} + time {} + surge {} (total {}) does not \
                 make the fare {}",
                parts.base_cents,
                parts.distance_cents,
                parts.time_cents,
                parts.surge_cents,
                parts.total_cents,
                fare
            ),
        );
    }
    if saga.refunded_cents > saga.captured_cents {
        violate(
            2,
            format!(
                "refunded {} but only {} was captured",
                money::format(saga.refunded_cents),
                money::format(saga.captured_cents)
            ),
        );
    }
    let mut refund_ids: HashMap<&str, u32> = HashMap::new();
    for refund in saga.refunds.iter().filter(|r| r.outcome == "refunded") {
        *refund_ids.entry(&refund.refund_id).or_default() += 1;
        if let (Some(reversed), Some(earning)) = (&refund.reversed_driver, &saga.earning_driver)
            && reversed != earning
        {
            violate(
                2,
                format!(
                    "refund {} reversed the earnings of {reversed} but {earning} was credited",
                    refund.refund_id
                ),
            );
        }
    }
    let mut repeated: Vec<_> = refund_ids.into_iter().filter(|(_, n)| *n > 1).collect();
    repeated.sort();
    for (refund_id, n) in repeated {
        violate(2, format!("refund {refund_id} made {n} times"));
    }
    if saga.earning_driver.is_some() && saga.ledger_reversed_cents != saga.refunded_cents {
        violate(
            2,
            format!(
                "ledger reversals (driver {} + commission {}) do not balance the refunds {}",
                money::format(saga.driver_reversed_cents),
                money::format(saga.commission_reversed_cents),
                money::format(saga.refunded_cents)
            ),
        );
    }
    if saga.earning_driver.is_some()
        && (saga.driver_reversed_cents > saga.driver_earned_cents
            || saga.commission_reversed_cents > saga.commission_cents)
    {
        violate(
            2,
            format!(
                "ledger reversals (driver {} + commission {}) exceed the entries they reverse \
                 (driver {} + commission {})",
                money::format(saga.driver_reversed_cents),
                money::format(saga.commission_reversed_cents),
                money::format(saga.driver_earned_cents),
                money::format(saga.commission_cents)
            ),
        );
    }
    if saga.earning_driver.is_some() && saga.ledger_cents != saga.captured_cents {
        violate(
            2,
            format!(
                "ledger entries (driver {} + commission {}) do not balance the capture {}",
                money::format(saga.driver_earned_cents),
                money::format(saga.commission_cents),
                money::format(saga.captured_cents)
            ),
        );
    }
    if let (Some(earning), Some(driver)) = (&saga.earning_driver, &saga.driver_id)
        && earning != driver
    {
        violate(
            2,
            format!("earnings credited to {earning} but the ride's driver is {driver}"),
        );
    }
    if settled && saga.state == SagaState::Ride(RideState::Completed) && captures == 0 {
        match &saga.capture_failed {
            Some(error) => violate(2, format!("completed but the capture failed: {error}")),
            None => violate(2, "completed but never captured".into()),
        }
    }
    if settled && saga.state != SagaState::Ride(RideState::Completed) {
        for hold in saga.holds.iter().filter(|h| !h.voided && h.captures == 0) {
            violate(
                2,
                format!(
                    "hold {} of a {} ride was never voided",
                    hold.hold_id, saga.state
                ),
            );
        }
    }

    // 4. each notification (each refund's for a refund) at most once; every terminal ride
    // told its rider, and every refund made.
    let mut seen: HashMap<(NotificationKind, Recipient, Option<&str>), u32> = HashMap::new();
    for notice in &saga.notifications {
        let key = (notice.kind, notice.recipient, notice.refund_id.as_deref());
        *seen.entry(key).or_default() += 1;
    }
    let mut duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    duplicates.sort_by_key(|((kind, _, refund), _)| (kind.as_str(), *refund));
    for ((kind, recipient, refund), n) in duplicates {
        let refund = refund.map(|r| format!(" of {r}")).unwrap_or_default();
        let recipient = match recipient {
            Recipient::Rider => "rider",
            Recipient::Driver => "driver",
        };
        violate(
            4,
            format!(
                "notification {}{refund} sent to the {recipient} {n} times",
                kind.as_str()
            ),
        );
    }
    let told = |kind| {
        seen.keys()
            .any(|(k, recipient, _)| *k == kind && *recipient == Recipient::Rider)
    };
    let owed = match saga.state {
        SagaState::Ride(RideState::Completed) if saga.holds.iter().any(|h| h.captures > 0) => {
            Some(NotificationKind::Receipt)
        }
        SagaState::Ride(RideState::Completed) if saga.capture_failed.is_some() => {
            Some(NotificationKind::PaymentFailed)
        }
        SagaState::Ride(RideState::Cancelled) | SagaState::Expired => {
            Some(NotificationKind::RideCancelled)
        }
        SagaState::Ride(RideState::Rejected) => Some(NotificationKind::RideRejected),
        _ => None,
    };
    if let (true, Some(kind)) = (settled, owed)
        && !told(kind)
    {
        violate(
            4,
            format!(
                "the rider was never told ({} not sent) although the ride is {}",
                kind.as_str(),
                saga.state
            ),
        );
    }

    // A refund notice that does not name its refund (from a producer that did not say) tells
    // of the ride's first refund.
    let mut made: Vec<&super::RefundNote> = Vec::new();
    for refund in saga.refunds.iter().filter(|r| r.outcome == "refunded") {
        if !made.iter().any(|m| m.refund_id == refund.refund_id) {
            made.push(refund);
        }
    }
    for (index, refund) in made.into_iter().enumerate() {
        let told_of =
            |id: Option<&str>| seen.contains_key(&(NotificationKind::Refund, Recipient::Rider, id));
        if settled && !told_of(Some(&refund.refund_id)) && !(index == 0 && told_of(None)) {
            violate(
                4,
                format!(
                    "the rider was never told of refund {} of {}",
                    refund.refund_id,
                    money::format(refund.amount_cents.unwrap_or_default())
                ),
            );
        }
    }

    // 5. a flagged ride never gets a driver or a hold.
    if saga.flagged {
        if let Some(driver) = &saga.driver_id {
            violate(
                5,
                format!("flagged by fraud but driver {driver} was assigned"),
            );
        }
        if saga.held_cents > 0 {
            violate(
                5,
                format!(
                    "flagged by fraud but {} was held",
                    money::format(saga.held_cents)
                ),
            );
        }
    }
}

/// Invariant 3: a driver is never assigned to two active rides at once. A driver counts as free
/// from the first sign that its ride let go: released, the ride completed, cancelled or
/// rejected, or its payment declined (the release that follows may be published later than a
/// new assignment).
fn drivers_never_double_booked(steps: &[Step]) -> Vec<Violation> {
    let mut busy: HashMap<String, String> = HashMap::new(); // driver -> ride
    let mut violations = Vec::new();
    for step in steps {
        let Some(ride) = step.ride() else { continue };
        let free_ride = |busy: &mut HashMap<String, String>| busy.retain(|_, r| r != ride);
        match &step.envelope.message {
            Message::DriverAssigned(m) => {
                let driver = m.driver_id.to_string();
                if let Some(other) = busy.get(&driver)
                    && other != ride
                {
                    violations.push(Violation {
                        ride_id: ride.to_owned(),
                        invariant: 3,
                        message: format!(
                            "driver {driver} assigned while still assigned to ride {other}"
                        ),
                    });
                }
                busy.insert(driver, ride.to_owned());
            }
            Message::DriverReleased(m)
                if busy.get(m.driver_id.as_str()).is_some_and(|r| r == ride) =>
            {
                busy.remove(m.driver_id.as_str());
            }
            Message::RideCompleted(_)
            | Message::RideCancelled(_)
            | Message::RideRejected(_)
            | Message::PaymentDeclined(_) => free_ride(&mut busy),
            _ => {}
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::Log;
    use super::*;
    use ridesaga_schemas::{
        CancelReason, DistanceSource, Earnings, FareBreakdown, FraudFlagged, NotificationKind,
        PaymentCaptureFailed, PaymentCaptured, PaymentRefundRefused, PaymentRefunded,
        REFUND_EXCEEDS_CAPTURE, Recipient, RefundId, RideCommandRefused, RideCompleted,
        RideRejected,
    };

    const SETTLE: Duration = Duration::from_secs(30);

    fn far_later(log: &Log) -> OffsetDateTime {
        log.start + time::Duration::hours(1)
    }

    fn happy(ride: &str, driver: &str) -> Log {
        let mut log = Log::new(ride);
        log.requested()
            .cleared()
            .assigned(driver)
            .authorized(1200)
            .confirmed(driver);
        log.notified(NotificationKind::RideConfirmed, Recipient::Rider);
        log.completed(driver, 1100).captured(1100);
        log.notified(NotificationKind::Receipt, Recipient::Rider);
        log
    }

    fn invariants(report: &Report) -> Vec<u8> {
        report.violations.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_clean_log_has_no_violations() {
        let log = happy("r_1", "d_1");
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(report.violations, vec![]);
        assert_eq!((report.sagas, report.terminal), (1, 1));
    }

    #[test]
    fn a_fare_breakdown_that_does_not_make_the_fare_is_reported() {
        let mut log = Log::new("r_fare");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1")
            .started("d_1");
        let parts = |time_cents| FareBreakdown {
            base_cents: 250,
            distance_cents: 600,
            time_cents,
            surge_cents: 0,
            total_cents: 1100,
        };
        let mut bad = log.clone();
        for (log, parts, violations) in [(&mut log, parts(250), 0), (&mut bad, parts(249), 1)] {
            log.push(
                RideCompleted {
                    rider_id: Log::rider(),
                    driver_id: Log::driver("d_1"),
                    distance_km: 5.0,
                    duration_min: 8.3,
                    fare_cents: 1100,
                    distance_source: DistanceSource::Reported,
                    route_points: 0,
                    fare: Some(parts),
                    route: None,
                },
                "ride",
            );
            log.captured(1100);
            log.notified(NotificationKind::Receipt, Recipient::Rider);
            let report = audit(&log.steps, far_later(log), SETTLE);
            assert_eq!(report.violations.len(), violations, "{report:?}");
            if violations > 0 {
                assert_eq!(invariants(&report), vec![2]);
                assert!(
                    report.violations[0]
                        .message
                        .contains("does not make the fare")
                );
            }
        }
    }

    #[test]
    fn earnings_that_do_not_balance_the_capture_are_reported() {
        let mut log = Log::new("r_ledger");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.notified(NotificationKind::RideConfirmed, Recipient::Rider);
        log.completed("d_1", 1100);
        let mut bad = log.clone();
        for (log, commission, violations) in [(&mut log, 220, 0), (&mut bad, 200, 1)] {
            log.push(
                PaymentCaptured {
                    rider_id: Log::rider(),
                    hold_id: "h_r_ledger".into(),
                    amount_cents: 1100,
                    earnings: Some(Earnings {
                        driver_id: Log::driver("d_1"),
                        driver_cents: 880,
                        commission_cents: commission,
                    }),
                    fare: None,
                },
                "payment",
            );
            log.notified(NotificationKind::Receipt, Recipient::Rider);
            let report = audit(&log.steps, far_later(log), SETTLE);
            assert_eq!(report.violations.len(), violations, "{report:?}");
            if violations > 0 {
                assert!(report.violations[0].message.contains("do not balance"));
            }
        }
    }

    fn refunded(log: &mut Log, id: &str, amount: u64, driver: u64, commission: u64) {
        let before: u64 = log
            .steps
            .iter()
            .filter_map(|s| match &s.envelope.message {
                Message::PaymentRefunded(m) => Some(m.amount_cents),
                _ => None,
            })
            .sum();
        log.push(
            PaymentRefunded {
                rider_id: Log::rider(),
                refund_id: RefundId::parse(id).unwrap(),
                hold_id: "h_r_refund".into(),
                amount_cents: amount,
                refunded_cents: before + amount,
                captured_cents: 1000,
                reason: None,
                reversal: Some(Earnings {
                    driver_id: Log::driver("d_1"),
                    driver_cents: driver,
                    commission_cents: commission,
                }),
            },
            "payment",
        );
    }

    /// A completed ride whose 1000 was captured, split 800 / 200.
    fn captured_ride() -> Log {
        let mut log = Log::new("r_refund");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.notified(NotificationKind::RideConfirmed, Recipient::Rider);
        log.completed("d_1", 1000);
        log.push(
            PaymentCaptured {
                rider_id: Log::rider(),
                hold_id: "h_r_refund".into(),
                amount_cents: 1000,
                earnings: Some(Earnings {
                    driver_id: Log::driver("d_1"),
                    driver_cents: 800,
                    commission_cents: 200,
                }),
                fare: None,
            },
            "payment",
        );
        log.notified(NotificationKind::Receipt, Recipient::Rider);
        log
    }

    #[test]
    fn refunds_up_to_the_capture_with_balanced_reversals_are_clean() {
        let mut log = captured_ride();
        refunded(&mut log, "rf_1", 300, 240, 60);
        refunded(&mut log, "rf_2", 700, 560, 140);
        let untold = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&untold), vec![4, 4]);
        log.notified_refund("rf_1");
        let one_told = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(
            one_told
                .violations
                .iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>(),
            ["the rider was never told of refund rf_2 of 7.00"]
        );
        log.notified_refund("rf_2");
        log.push(
            PaymentRefundRefused {
                refund_id: RefundId::parse("rf_3").unwrap(),
                rider_id: Some(Log::rider()),
                amount_cents: Some(1),
                code: REFUND_EXCEEDS_CAPTURE.into(),
                reason: "nothing left".into(),
            },
            "payment",
        );
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(report.violations, vec![], "{report:?}");
    }

    #[test]
    fn a_refund_told_twice_is_reported_and_an_unnamed_notice_tells_of_the_first_refund() {
        let mut log = captured_ride();
        refunded(&mut log, "rf_1", 300, 240, 60);
        refunded(&mut log, "rf_2", 700, 560, 140);
        log.notified_refund("rf_2").notified_refund("rf_2");
        log.notified(NotificationKind::Refund, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        let messages: Vec<&str> = report
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert_eq!(
            messages,
            ["notification refund of rf_2 sent to the rider 2 times"]
        );
        assert_eq!(invariants(&report), vec![4]);
    }

    #[test]
    fn refunds_above_the_capture_or_unbalanced_or_repeated_are_reported() {
        let mut over = captured_ride();
        refunded(&mut over, "rf_1", 600, 480, 120);
        refunded(&mut over, "rf_2", 600, 480, 120);
        over.notified(NotificationKind::Refund, Recipient::Rider);
        let report = audit(&over.steps, far_later(&over), SETTLE);
        let messages: Vec<&str> = report
            .violations
            .iter()
            .map(|v| v.message.as_str())
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("refunded 12.00 but only 10.00 was captured")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("exceed the entries")),
            "{messages:?}"
        );

        let mut unbalanced = captured_ride();
        refunded(&mut unbalanced, "rf_1", 300, 200, 60);
        unbalanced.notified(NotificationKind::Refund, Recipient::Rider);
        let report = audit(&unbalanced.steps, far_later(&unbalanced), SETTLE);
        assert_eq!(invariants(&report), vec![2]);
        assert!(
            report.violations[0]
                .message
                .contains("do not balance the refunds")
        );

        let mut twice = captured_ride();
        refunded(&mut twice, "rf_1", 300, 240, 60);
        refunded(&mut twice, "rf_1", 300, 240, 60);
        twice.notified(NotificationKind::Refund, Recipient::Rider);
        let report = audit(&twice.steps, far_later(&twice), SETTLE);
        assert_eq!(invariants(&report), vec![2]);
        assert!(
            report.violations[0]
                .message
                .contains("refund rf_1 made 2 times")
        );
    }

    #[test]
    fn a_stuck_saga_is_reported_once_settled_but_not_while_in_flight() {
        let mut log = Log::new("r_2");
        log.requested().cleared();
        let just_now = log.start + time::Duration::seconds(3);
        assert_eq!(audit(&log.steps, just_now, SETTLE).violations, vec![]);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![1]);
        assert!(
            report.violations[0]
                .message
                .starts_with("stuck in requested")
        );
    }

    #[test]
    fn a_double_capture_and_a_wrong_amount_are_reported() {
        let mut log = happy("r_3", "d_1");
        log.captured(1100);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert!(
            report
                .violations
                .iter()
                .any(|v| v.message == "captured 2 times")
        );

        let mut log = Log::new("r_4");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.completed("d_1", 1100).captured(1200);
        log.notified(NotificationKind::Receipt, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(
            report.violations[0].message,
            "captured 12.00 but the fare is 11.00"
        );
    }

    #[test]
    fn a_hold_of_a_cancelled_ride_must_be_voided() {
        let mut log = Log::new("r_5");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.cancelled(CancelReason::Rider, Some("d_1"))
            .released("d_1");
        log.notified(NotificationKind::RideCancelled, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![2]);
        log.voided(1200);
        assert_eq!(
            audit(&log.steps, far_later(&log), SETTLE).violations,
            vec![]
        );
    }

    /// A confirmed ride of `ride` whose rider did not show; the rider is told.
    fn no_show(ride: &str, reason: CancelReason) -> Log {
        let mut log = Log::new(ride);
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.notified(NotificationKind::RideConfirmed, Recipient::Rider);
        log.arrived("d_1")
            .cancelled(reason, Some("d_1"))
            .released("d_1");
        log.notified(NotificationKind::RideCancelled, Recipient::Rider);
        log
    }

    #[test]
    fn a_confirmed_ride_waiting_for_its_driver_is_not_stuck_before_its_deadline() {
        let mut log = Log::new("r_w");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        let confirmed_at = log.saga().last_at.unwrap();
        let report = audit(
            &log.steps,
            confirmed_at + time::Duration::minutes(5),
            SETTLE,
        );
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.in_flight, 1);

        let late = confirmed_at + time::Duration::minutes(21);
        let report = audit(&log.steps, late, SETTLE);
        assert_eq!(invariants(&report), vec![1, 2], "{report:?}");
        assert!(
            report.violations[0]
                .message
                .starts_with("stuck in confirmed (past its deadline"),
            "{}",
            report.violations[0].message
        );
    }

    #[test]
    fn a_no_show_fee_of_at_most_the_hold_is_no_violation() {
        let mut log = no_show("r_ns", CancelReason::RiderNoShow);
        log.captured(500);
        log.notified(NotificationKind::Receipt, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(report.violations, vec![]);

        let mut log = no_show("r_ns2", CancelReason::RiderNoShow);
        log.captured(1200);
        assert_eq!(
            audit(&log.steps, far_later(&log), SETTLE).violations,
            vec![]
        );
    }

    #[test]
    fn a_no_show_fee_above_the_hold_or_a_capture_for_another_reason_is_reported() {
        let mut log = no_show("r_ns3", CancelReason::RiderNoShow);
        log.captured(1500);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![2]);
        assert_eq!(
            report.violations[0].message,
            "no-show fee 15.00 exceeds hold h_r_ns3 of 12.00"
        );

        let mut log = no_show("r_ns4", CancelReason::DriverNoShow);
        log.captured(500);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![2]);
        assert!(
            report.violations[0]
                .message
                .starts_with("payment captured but the ride is cancelled (driver_no_show)")
        );
    }

    #[test]
    fn a_driver_on_two_active_rides_is_reported() {
        let mut a = Log::new("r_a");
        a.requested().cleared().assigned("d_1");
        let mut b = Log::new("r_b");
        b.requested().cleared().assigned("d_1");
        let mut steps = a.steps.clone();
        steps.extend(b.steps.clone());
        for (i, step) in steps.iter_mut().enumerate() {
            step.seq = i as u64 + 1;
        }
        let violations = drivers_never_double_booked(&steps);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].ride_id, "r_b");
        assert!(violations[0].message.contains("still assigned to ride r_a"));
    }

    #[test]
    fn a_driver_freed_by_a_cancellation_may_take_the_next_ride() {
        let mut steps = Vec::new();
        let mut a = Log::new("r_a");
        a.requested()
            .cleared()
            .assigned("d_1")
            .cancelled(CancelReason::Rider, Some("d_1"));
        steps.extend(a.steps);
        let mut b = Log::new("r_b");
        b.requested().cleared().assigned("d_1");
        steps.extend(b.steps);
        assert_eq!(drivers_never_double_booked(&steps), vec![]);
    }

    #[test]
    fn a_duplicate_notification_and_a_silent_ending_are_reported() {
        let mut log = Log::new("r_6");
        log.requested()
            .cleared()
            .cancelled(CancelReason::NoDriver, None);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![4]);
        log.notified(NotificationKind::RideCancelled, Recipient::Rider);
        log.notified(NotificationKind::RideCancelled, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(
            report.violations[0].message,
            "notification ride_cancelled sent to the rider 2 times"
        );
    }

    #[test]
    fn a_capture_that_fails_for_good_must_be_told_to_the_rider() {
        let mut log = Log::new("r_8");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.completed("d_1", 1100);
        log.push(
            PaymentCaptureFailed {
                rider_id: Log::rider(),
                hold_id: "h_r_8".into(),
                amount_cents: 1100,
                error: "gateway unavailable".into(),
            },
            "payment",
        );
        let messages = |log: &Log| -> Vec<String> {
            audit(&log.steps, far_later(log), SETTLE)
                .violations
                .into_iter()
                .map(|v| v.message)
                .collect()
        };
        let found = messages(&log);
        assert!(
            found.contains(&"the rider was never told (payment_failed not sent) although the ride is completed".to_owned()),
            "{found:?}"
        );
        log.notified(NotificationKind::PaymentFailed, Recipient::Rider);
        // The failed capture itself stays an operator's matter (invariant 2).
        assert_eq!(
            messages(&log),
            vec!["completed but the capture failed: gateway unavailable".to_owned()]
        );
    }

    #[test]
    fn an_invalid_request_is_at_rest_once_rejected_and_the_rider_told() {
        let mut log = Log::new("r_9");
        log.requested();
        log.steps.truncate(1);
        log.push(
            RideRejected {
                rider_id: Log::rider(),
                score: 0,
                reasons: vec!["invalid_request".into()],
                detail: Some("the trip is 490.0 km; at most 200 km are accepted".into()),
            },
            "ride",
        );
        log.push(
            RideCommandRefused {
                command: "cmd.ride.request".into(),
                reason: "the trip is 490.0 km; at most 200 km are accepted".into(),
            },
            "ride",
        );
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(invariants(&report), vec![4], "{report:?}");
        log.notified(NotificationKind::RideRejected, Recipient::Rider);
        let report = audit(&log.steps, far_later(&log), SETTLE);
        assert_eq!(report.violations, vec![]);
        assert_eq!((report.sagas, report.terminal), (1, 1));
    }

    #[test]
    fn a_flagged_ride_with_a_driver_is_reported() {
        let mut log = Log::new("r_7");
        log.requested();
        log.push(
            FraudFlagged {
                rider_id: Log::rider(),
                score: 90,
                reasons: vec!["blocked".into()],
            },
            "fraud",
        );
        log.assigned("d_1");
        let report = audit(&log.steps, log.start, SETTLE);
        assert_eq!(invariants(&report), vec![5]);
    }
}
