//! Completed rides fraud flagged, rebuilt from the stream: the flag and its reasons, the
//! operator's decision, the driver's captured share and every step payment took with it
//! (`evt.payment.earnings_hold`). `ridectl fraud review` lists them; the audit checks them
//! (invariant 6).

use std::collections::BTreeMap;

use ridesaga_schemas::{EarningsHoldStatus, Message, ReviewDecision, money};
use serde::Serialize;
use time::OffsetDateTime;

use super::Step;

/// One ride's review, as far as the stream tells.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Flagged {
    pub ride_id: String,
    /// When fraud flagged it (`None`: never, though a review step names it).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub flagged_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rider_id: Option<String>,
    pub reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<ReviewDecision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The driver's share of the capture, as the capture's earnings named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_share_cents: Option<u64>,
    /// Every step payment announced with the share, in stream order.
    pub steps: Vec<(EarningsHoldStatus, u64)>,
}

impl Flagged {
    /// Where the share stands: the last step, if any.
    pub fn status(&self) -> Option<EarningsHoldStatus> {
        self.steps.last().map(|(status, _)| *status)
    }

    /// Still waiting for an operator: flagged and not decided.
    pub fn awaiting_review(&self) -> bool {
        self.flagged_at.is_some() && self.decision.is_none()
    }

    /// Payment holds the share now (held, not yet released or forfeited).
    pub fn is_held(&self) -> bool {
        self.status() == Some(EarningsHoldStatus::Held)
    }

    /// What is wrong with the ride's hold (invariant 6): each step once and for the captured
    /// share; held only for a flagged ride; released only on approval, forfeited only on
    /// rejection, after the hold. Once `settled`, a flagged captured ride has its share held,
    /// and a decided one released or forfeited.
    pub fn violations(&self, settled: bool) -> Vec<String> {
        let mut out = Vec::new();
        let count = |s: EarningsHoldStatus| self.steps.iter().filter(|(x, _)| *x == s).count();
        let amount = |s: EarningsHoldStatus| {
            self.steps
                .iter()
                .find(|(x, _)| *x == s)
                .map(|(_, cents)| *cents)
        };
        use EarningsHoldStatus::{Forfeited, Held, Released};
        for status in [Held, Released, Forfeited] {
            if count(status) > 1 {
                out.push(format!(
                    "driver's share {} {} times",
                    status.as_str(),
                    count(status)
                ));
            }
        }
        let held = amount(Held);
        if held.is_some() && self.flagged_at.is_none() {
            out.push("driver's share held but fraud never flagged the ride".into());
        }
        if let (Some(held), Some(share)) = (held, self.driver_share_cents)
            && held != share
        {
            out.push(format!(
                "held {} but the driver's share of the capture is {}",
                money::format(held),
                money::format(share)
            ));
        }
        for (status, decision) in [
            (Released, ReviewDecision::Approve),
            (Forfeited, ReviewDecision::Reject),
        ] {
            let Some(cents) = amount(status) else {
                continue;
            };
            if self.decision != Some(decision) {
                out.push(format!(
                    "driver's share {} without a decision to {}",
                    status.as_str(),
                    decision.as_str()
                ));
            }
            match held {
                None => out.push(format!("driver's share {} but never held", status.as_str())),
                Some(h) if h != cents => out.push(format!(
                    "{} {} of a hold of {}: unbalanced",
                    status.as_str(),
                    money::format(cents),
                    money::format(h)
                )),
                Some(_) => {}
            }
        }
        if amount(Released).is_some() && amount(Forfeited).is_some() {
            out.push("driver's share both released and forfeited".into());
        }
        if settled {
            if self.flagged_at.is_some() && self.driver_share_cents.is_some() && held.is_none() {
                out.push("flagged and captured, but the driver's share was never held".into());
            }
            let due = match self.decision {
                Some(ReviewDecision::Approve) => Some(Released),
                Some(ReviewDecision::Reject) => Some(Forfeited),
                None => None,
            };
            if let (Some(due), Some(_)) = (due, held)
                && amount(due).is_none()
            {
                out.push(format!(
                    "reviewed, but the driver's share was never {}",
                    due.as_str()
                ));
            }
        }
        out
    }
}

/// Every ride among `steps` with a fake-ride flag, a review or a step with its share, by ride.
pub fn collect(steps: &[Step]) -> BTreeMap<String, Flagged> {
    let mut shares: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rides: BTreeMap<String, Flagged> = BTreeMap::new();
    for step in steps {
        let Some(ride) = step.ride() else { continue };
        let entry = |rides: &mut BTreeMap<String, Flagged>| {
            rides
                .entry(ride.to_owned())
                .or_insert_with(|| Flagged {
                    ride_id: ride.to_owned(),
                    ..Flagged::default()
                })
                .ride_id
                .clone()
        };
        match &step.envelope.message {
            Message::PaymentCaptured(m) => {
                if let Some(earnings) = &m.earnings {
                    shares.insert(ride, earnings.driver_cents);
                }
            }
            Message::RideFlagged(m) => {
                let id = entry(&mut rides);
                let f = rides.get_mut(&id).expect("just inserted");
                f.flagged_at.get_or_insert(step.time);
                f.driver_id = Some(m.driver_id.to_string());
                f.rider_id = Some(m.rider_id.to_string());
                f.reasons = m.reasons.clone();
            }
            Message::RideReviewed(m) => {
                let id = entry(&mut rides);
                let f = rides.get_mut(&id).expect("just inserted");
                f.decision.get_or_insert(m.decision);
                if f.note.is_none() {
                    f.note = m.note.clone();
                }
            }
            Message::EarningsHold(m) => {
                let id = entry(&mut rides);
                let f = rides.get_mut(&id).expect("just inserted");
                f.steps.push((m.status, m.amount_cents));
                f.driver_id.get_or_insert_with(|| m.driver_id.to_string());
            }
            _ => {}
        }
    }
    for (ride, flagged) in rides.iter_mut() {
        flagged.driver_share_cents = shares.get(ride.as_str()).copied();
    }
    rides
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::fixtures::Log;
    use ridesaga_schemas::{Earnings, EarningsHold, PaymentCaptured, RideFlagged, RideReviewed};

    fn captured(log: &mut Log, driver_cents: u64) {
        log.push(
            PaymentCaptured {
                rider_id: Log::rider(),
                hold_id: "h_1".into(),
                amount_cents: driver_cents + 100,
                earnings: Some(Earnings {
                    driver_id: Log::driver("d_1"),
                    driver_cents,
                    commission_cents: 100,
                }),
                fare: None,
            },
            "payment",
        );
    }

    fn flagged(log: &mut Log) {
        log.push(
            RideFlagged {
                rider_id: Log::rider(),
                driver_id: Log::driver("d_1"),
                reasons: vec!["impossible_speed: 900 km/h".into()],
            },
            "fraud",
        );
    }

    fn reviewed(log: &mut Log, decision: ReviewDecision) {
        log.push(
            RideReviewed {
                rider_id: Log::rider(),
                driver_id: Log::driver("d_1"),
                decision,
                note: Some("checked".into()),
            },
            "fraud",
        );
    }

    fn step(log: &mut Log, status: EarningsHoldStatus, cents: u64) {
        log.push(
            EarningsHold {
                driver_id: Log::driver("d_1"),
                amount_cents: cents,
                status,
            },
            "payment",
        );
    }

    fn only(log: &Log) -> Flagged {
        let mut rides = collect(&log.steps);
        assert_eq!(rides.len(), 1);
        rides.pop_first().unwrap().1
    }

    #[test]
    fn a_held_then_released_ride_is_balanced_and_no_longer_awaiting_review() {
        let mut log = Log::new("r_1");
        captured(&mut log, 800);
        flagged(&mut log);
        step(&mut log, EarningsHoldStatus::Held, 800);
        let held = only(&log);
        assert!(held.awaiting_review() && held.is_held());
        assert_eq!(held.driver_share_cents, Some(800));
        assert!(
            held.violations(true).is_empty(),
            "{:?}",
            held.violations(true)
        );
        reviewed(&mut log, ReviewDecision::Approve);
        assert_eq!(
            only(&log).violations(true),
            ["reviewed, but the driver's share was never released"]
        );
        assert!(
            only(&log).violations(false).is_empty(),
            "not settled yet: fine"
        );
        step(&mut log, EarningsHoldStatus::Released, 800);
        let done = only(&log);
        assert!(!done.awaiting_review() && !done.is_held());
        assert!(done.violations(true).is_empty());
    }

    #[test]
    fn unbalanced_or_unjustified_steps_are_violations() {
        let mut log = Log::new("r_1");
        captured(&mut log, 800);
        step(&mut log, EarningsHoldStatus::Held, 700);
        step(&mut log, EarningsHoldStatus::Forfeited, 600);
        let v = only(&log).violations(false);
        assert!(v.contains(&"driver's share held but fraud never flagged the ride".into()));
        assert!(v.iter().any(|m| m.starts_with("held 7.00 but")), "{v:?}");
        assert!(
            v.iter()
                .any(|m| m == "driver's share forfeited without a decision to reject"),
            "{v:?}"
        );
        assert!(v.iter().any(|m| m.ends_with("unbalanced")), "{v:?}");
    }

    #[test]
    fn a_settled_flagged_capture_must_be_held() {
        let mut log = Log::new("r_1");
        flagged(&mut log);
        captured(&mut log, 800);
        assert_eq!(
            only(&log).violations(true),
            ["flagged and captured, but the driver's share was never held"]
        );
    }
}
