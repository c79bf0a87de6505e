//! One-line summaries of each command and event, for timelines and `--wait`.

use ridesaga_schemas::{Message, MessageKind, Recipient, RideState, money};

use super::SagaState;
use crate::output::format_clock;

/// Whether a message undoes or ends a saga on its unhappy path (marked in timelines), given the
/// ride's state just before it: a driver released after a completed ride is the happy path.
pub fn is_compensation(kind: MessageKind, state_before: SagaState) -> bool {
    match kind {
        MessageKind::DriverReleased => state_before != SagaState::Ride(RideState::Completed),
        MessageKind::PaymentVoided
        | MessageKind::RideCancelled
        | MessageKind::RideRejected
        | MessageKind::CancelRide => true,
        _ => false,
    }
}

/// A schedule in one line: `d_1 Europe/Paris: mon 08:00-16:00, 2026-12-24T18:00/2026-12-25T02:00`.
fn schedule_summary(
    driver_id: &ridesaga_schemas::DriverId,
    schedule: &Option<ridesaga_schemas::DriverSchedule>,
) -> String {
    let Some(schedule) = schedule else {
        return format!("{driver_id}: no schedule (matched whenever online)");
    };
    let parts: Vec<String> = schedule
        .weekly
        .iter()
        .map(ToString::to_string)
        .chain(schedule.shifts.iter().map(ToString::to_string))
        .collect();
    format!("{driver_id} {}: {}", schedule.zone, parts.join(", "))
}

/// Which ways of reaching a person a registration gives (not the address or number).
fn contact(email: bool, phone: bool) -> &'static str {
    match (email, phone) {
        (true, true) => ", email and phone",
        (true, false) => ", email",
        (false, true) => ", phone",
        (false, false) => "",
    }
}

/// A short description of what a message says.
pub fn summary(message: &Message) -> String {
    match message {
        Message::RequestRide(m) => format!(
            "rider {} from {} to {}, card {}",
            m.rider_id, m.pickup, m.dropoff, m.payment_token
        ),
        Message::CancelRide(_) => "rider cancels".into(),
        Message::ArriveRide(_) => "driver at the pickup".into(),
        Message::StartRide(_) => "rider picked up".into(),
        Message::CompleteRide(m) => {
            let distance = m
                .distance_km
                .map_or("planned".into(), |d| format!("{d:.1} km"));
            let duration = m
                .duration_min
                .map_or("measured".into(), |d| format!("{d:.1} min"));
            format!("distance {distance}, duration {duration}")
        }
        Message::RegisterDriver(m) => format!(
            "{} ({}) at {}{}",
            m.driver_id,
            m.name,
            m.location,
            contact(m.email.is_some(), m.phone.is_some())
        ),
        Message::DriverOnline(m) => match m.location {
            Some(at) => format!("{} online at {at}", m.driver_id),
            None => format!("{} online", m.driver_id),
        },
        Message::DriverOffline(m) => format!("{} offline", m.driver_id),
        Message::MoveDriver(m) => format!("{} to {}", m.driver_id, m.location),
        Message::SetDriverSchedule(m) => schedule_summary(&m.driver_id, &m.schedule),
        Message::DriverScheduleChanged(m) => schedule_summary(&m.driver_id, &m.schedule),
        Message::BlockRider(m) => match &m.reason {
            Some(reason) => format!("block {}: {reason}", m.rider_id),
            None => format!("block {}", m.rider_id),
        },
        Message::UnblockRider(m) => format!("unblock {}", m.rider_id),
        Message::RegisterRider(m) => format!(
            "rider {}{}",
            m.rider_id,
            contact(m.email.is_some(), m.phone.is_some())
        ),
        Message::ReviewRide(m) => match &m.note {
            Some(note) => format!("{}: {note}", m.decision.as_str()),
            None => m.decision.as_str().to_owned(),
        },
        Message::RideFlagged(m) => {
            format!("driver {}: {}", m.driver_id, m.reasons.join(", "))
        }
        Message::RideReviewed(m) => match &m.note {
            Some(note) => format!("{} driver {}: {note}", m.decision.as_str(), m.driver_id),
            None => format!("{} driver {}", m.decision.as_str(), m.driver_id),
        },
        Message::EarningsHold(m) => format!(
            "driver {}'s share {} {}",
            m.driver_id,
            money::format(m.amount_cents),
            m.status.as_str()
        ),
        Message::RideRequested(m) => format!(
            "{:.1} km, estimated fare {}",
            m.estimated_distance_km,
            money::format(m.estimated_fare_cents)
        ),
        Message::RideConfirmed(m) => match m.pickup_deadline {
            Some(deadline) => format!(
                "driver {}, estimated fare {}, pickup by {}",
                m.driver_id,
                money::format(m.estimated_fare_cents),
                format_clock(deadline.0)
            ),
            None => format!(
                "driver {}, estimated fare {}",
                m.driver_id,
                money::format(m.estimated_fare_cents)
            ),
        },
        Message::DriverArrived(m) => format!(
            "driver {} at the pickup, waits until {}",
            m.driver_id,
            format_clock(m.rider_wait_deadline.0)
        ),
        Message::RideStarted(m) => format!("driver {}", m.driver_id),
        Message::RideCompleted(m) => format!(
            "{:.1} km, {:.1} min, fare {}",
            m.distance_km,
            m.duration_min,
            money::format(m.fare_cents)
        ),
        Message::RideCancelled(m) => format!("reason {}", m.reason.as_str()),
        Message::RideRejected(m) => match &m.detail {
            Some(detail) => format!("{}: {detail}", m.reasons.join(", ")),
            None => format!("score {}: {}", m.score, m.reasons.join(", ")),
        },
        Message::RideCommandRefused(m) => format!("{} refused: {}", m.command, m.reason),
        Message::FraudCleared(m) => format!("score {}", m.score),
        Message::FraudFlagged(m) => format!("score {}: {}", m.score, m.reasons.join(", ")),
        Message::RiderBlockChanged(m) => {
            let verb = if m.blocked { "blocked" } else { "unblocked" };
            format!("{} {verb}", m.rider_id)
        }
        Message::DriverAssigned(m) => format!(
            "driver {} ({}), {:.1} km from pickup",
            m.driver_id, m.driver_name, m.pickup_distance_km
        ),
        Message::DriverUnavailable(m) => m.reason.clone(),
        Message::DriverReleased(m) => format!("driver {}: {}", m.driver_id, m.reason),
        Message::DriverUpdated(m) => format!(
            "{} ({}) {} at {}",
            m.driver_id,
            m.name,
            if m.online { "online" } else { "offline" },
            m.location
        ),
        Message::PaymentAuthorized(m) => {
            format!("hold {} for {}", m.hold_id, money::format(m.amount_cents))
        }
        Message::PaymentDeclined(m) => format!("{}: {}", m.code, m.message),
        Message::PaymentCaptured(m) => {
            format!(
                "captured {} on hold {}",
                money::format(m.amount_cents),
                m.hold_id
            )
        }
        Message::PaymentVoided(m) => {
            format!(
                "voided hold {} ({})",
                m.hold_id,
                money::format(m.amount_cents)
            )
        }
        Message::PaymentCaptureFailed(m) => {
            format!(
                "capture of {} failed: {}",
                money::format(m.amount_cents),
                m.error
            )
        }
        Message::RefundRide(m) => match m.amount_cents {
            Some(amount) => format!("refund {} of {}", m.refund_id, money::format(amount)),
            None => format!("refund {} of the rest of the capture", m.refund_id),
        },
        Message::PaymentRefunded(m) => format!(
            "refund {}: {} given back ({} of {} refunded)",
            m.refund_id,
            money::format(m.amount_cents),
            money::format(m.refunded_cents),
            money::format(m.captured_cents)
        ),
        Message::PaymentRefundRefused(m) => {
            format!("refund {} refused ({}): {}", m.refund_id, m.code, m.reason)
        }
        Message::NotificationSent(m) => {
            let who = match m.recipient {
                Recipient::Rider => "rider",
                Recipient::Driver => "driver",
            };
            format!(
                "{} to {who} {} via {}",
                m.kind.as_str(),
                m.recipient_id,
                m.channel
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridesaga_schemas::{CancelReason, PaymentCaptured, RideCancelled, RiderId};

    #[test]
    fn summaries_name_the_facts_that_matter() {
        let rider = RiderId::parse("u_1").unwrap();
        let captured = Message::from(PaymentCaptured {
            rider_id: rider.clone(),
            hold_id: "h_1".into(),
            amount_cents: 1234,
            earnings: None,
            fare: None,
        });
        assert_eq!(summary(&captured), "captured 12.34 on hold h_1");
        let cancelled = Message::from(RideCancelled {
            rider_id: rider,
            reason: CancelReason::NoDriver,
            driver_id: None,
        });
        assert_eq!(summary(&cancelled), "reason no_driver");
        assert!(is_compensation(
            cancelled.kind(),
            SagaState::Ride(RideState::Confirmed)
        ));
        assert!(!is_compensation(
            captured.kind(),
            SagaState::Ride(RideState::Completed)
        ));
        let released = MessageKind::DriverReleased;
        assert!(is_compensation(
            released,
            SagaState::Ride(RideState::Requested)
        ));
        assert!(!is_compensation(
            released,
            SagaState::Ride(RideState::Completed)
        ));
    }
}
