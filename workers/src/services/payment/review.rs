//! Holding a flagged ride's earnings, pure: fraud's verdict on a completed ride and the
//! driver's captured share decide which entries the earnings ledger appends next.
//!
//! The ledger is append-only and every step is a pair of entries that cancel out, so a ride's
//! entries still add up to what was captured:
//! - **held** (the ride was flagged and its capture recorded, in either order): the share
//!   moves from the `driver` account to `held`;
//! - **released** (an operator approved the ride): from `held` back to `driver`;
//! - **forfeited** (an operator rejected the ride): from `held` to `forfeited`, the platform's
//!   account of earnings withheld from fake rides. The rider's capture stands; a refund is a
//!   decision of its own.
//!
//! A review that comes before the capture is kept and acts once the share is held, so the
//! order in which the flag, the review and the capture arrive does not matter.

use ridesaga_schemas::{EarningsHoldStatus, Message, ReviewDecision};

/// What fraud said about the completed ride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Flagged,
    Decided(ReviewDecision),
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Flagged => "flagged",
            Verdict::Decided(d) => d.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "flagged" => Some(Verdict::Flagged),
            "approve" => Some(Verdict::Decided(ReviewDecision::Approve)),
            "reject" => Some(Verdict::Decided(ReviewDecision::Reject)),
            _ => None,
        }
    }
}

/// A ride's review as payment keeps it: fraud's verdict, and the last step the ledger took
/// with the driver's share (its status and amount).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReviewState {
    pub verdict: Option<Verdict>,
    pub hold: Option<(EarningsHoldStatus, u64)>,
}

/// Records what fraud says; returns whether the state changed. A decision stands once taken;
/// a flag that comes after the decision (a redelivery out of order) changes nothing.
pub fn handle(state: &mut ReviewState, input: &Message) -> bool {
    let next = match (state.verdict, input) {
        (None, Message::RideFlagged(_)) => Verdict::Flagged,
        (None | Some(Verdict::Flagged), Message::RideReviewed(r)) => Verdict::Decided(r.decision),
        _ => return false,
    };
    state.verdict = Some(next);
    true
}

/// The ledger's next step with the driver's share, `driver_share` once the capture is
/// recorded: hold it when flagged, then release or forfeit it when decided.
pub fn next_step(
    state: &ReviewState,
    driver_share: Option<u64>,
) -> Option<(EarningsHoldStatus, u64)> {
    match (state.verdict?, state.hold) {
        (_, None) => Some((EarningsHoldStatus::Held, driver_share?)),
        (Verdict::Decided(ReviewDecision::Approve), Some((EarningsHoldStatus::Held, cents))) => {
            Some((EarningsHoldStatus::Released, cents))
        }
        (Verdict::Decided(ReviewDecision::Reject), Some((EarningsHoldStatus::Held, cents))) => {
            Some((EarningsHoldStatus::Forfeited, cents))
        }
        _ => None,
    }
}

/// The two ledger entries of a step, as `(account, signed amount)`: they add up to zero.
pub fn entries(status: EarningsHoldStatus, cents: i64) -> [(&'static str, i64); 2] {
    match status {
        EarningsHoldStatus::Held => [("driver", -cents), ("held", cents)],
        EarningsHoldStatus::Released => [("held", -cents), ("driver", cents)],
        EarningsHoldStatus::Forfeited => [("held", -cents), ("forfeited", cents)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridesaga_schemas::{DriverId, RideFlagged, RideReviewed, RiderId};

    fn flagged() -> Message {
        RideFlagged {
            rider_id: RiderId::parse("u_1").unwrap(),
            driver_id: DriverId::parse("d_1").unwrap(),
            reasons: vec!["impossible_speed".into()],
        }
        .into()
    }

    fn reviewed(decision: ReviewDecision) -> Message {
        RideReviewed {
            rider_id: RiderId::parse("u_1").unwrap(),
            driver_id: DriverId::parse("d_1").unwrap(),
            decision,
            note: None,
        }
        .into()
    }

    /// Applies `inputs`, then takes every step with the share (if captured); the steps taken.
    fn run(inputs: &[Message], share: Option<u64>) -> (ReviewState, Vec<EarningsHoldStatus>) {
        let mut state = ReviewState::default();
        let mut steps = Vec::new();
        for input in inputs {
            handle(&mut state, input);
            while let Some(step) = next_step(&state, share) {
                state.hold = Some(step);
                steps.push(step.0);
            }
        }
        (state, steps)
    }

    #[test]
    fn an_unflagged_ride_takes_no_step() {
        assert_eq!(next_step(&ReviewState::default(), Some(800)), None);
    }

    #[test]
    fn a_flag_after_the_capture_holds_the_share_and_an_approval_releases_it() {
        use EarningsHoldStatus::{Held, Released};
        let (state, steps) = run(&[flagged(), reviewed(ReviewDecision::Approve)], Some(800));
        assert_eq!(steps, [Held, Released]);
        assert_eq!(state.hold, Some((Released, 800)));
    }

    #[test]
    fn a_rejection_forfeits_the_held_share() {
        use EarningsHoldStatus::{Forfeited, Held};
        let (state, steps) = run(&[flagged(), reviewed(ReviewDecision::Reject)], Some(800));
        assert_eq!(steps, [Held, Forfeited]);
        assert_eq!(state.hold, Some((Forfeited, 800)));
    }

    #[test]
    fn before_the_capture_nothing_is_held_and_the_capture_then_takes_every_step() {
        use EarningsHoldStatus::{Forfeited, Held};
        let (mut state, steps) = run(&[flagged(), reviewed(ReviewDecision::Reject)], None);
        assert!(steps.is_empty());
        assert_eq!(
            state.verdict,
            Some(Verdict::Decided(ReviewDecision::Reject))
        );
        let mut taken = Vec::new();
        while let Some(step) = next_step(&state, Some(640)) {
            state.hold = Some(step);
            taken.push(step);
        }
        assert_eq!(taken, [(Held, 640), (Forfeited, 640)]);
    }

    #[test]
    fn the_first_decision_stands_and_a_late_flag_changes_nothing() {
        let mut state = ReviewState::default();
        assert!(handle(&mut state, &reviewed(ReviewDecision::Approve)));
        assert!(!handle(&mut state, &flagged()));
        assert!(!handle(&mut state, &reviewed(ReviewDecision::Reject)));
        assert_eq!(
            state.verdict,
            Some(Verdict::Decided(ReviewDecision::Approve))
        );
        assert!(!handle(&mut state, &reviewed(ReviewDecision::Approve)));
    }

    #[test]
    fn every_step_balances() {
        for status in [
            EarningsHoldStatus::Held,
            EarningsHoldStatus::Released,
            EarningsHoldStatus::Forfeited,
        ] {
            let [a, b] = entries(status, 777);
            assert_eq!(a.1 + b.1, 0, "{status:?}");
        }
        // Held then released: the driver's account is back where the capture left it.
        let driver: i64 = [EarningsHoldStatus::Held, EarningsHoldStatus::Released]
            .into_iter()
            .flat_map(|s| entries(s, 777))
            .filter(|(account, _)| *account == "driver")
            .map(|(_, cents)| cents)
            .sum();
        assert_eq!(driver, 0);
    }
}
