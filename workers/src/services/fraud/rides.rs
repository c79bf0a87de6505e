//! Fake-ride rules as pure logic: what fraud decides about a completed ride from the facts
//! `evt.ride.completed` carries (the charged distance and the route's summary) and from the
//! history of the driver and rider it keeps, and what an operator's review of a flagged ride
//! does. No I/O and no clock: times are messages' `occurred_at`.
//!
//! Rules (any one flags the ride; every one that applies is a reason):
//! - `impossible_speed`: two consecutive positions further apart than `max_speed_kmh` allows
//!   in the time between their reports (default 250 km/h): a teleporting driver.
//! - `driver_never_moved`: every position within `still_radius_m` of the first (default 30 m)
//!   for at least `still_for_ms` (default a minute) of reports, yet the ride was completed and
//!   charged as a trip (its base and time, and the distance the positions' jitter adds up to,
//!   or the one reported).
//! - `repeated_pair`: the driver and the rider completed `pair_rides` rides together (this one
//!   included) within `pair_window_ms` (default 5 within 7 days).
//!
//! A ride without a route summary (its driver reported no positions) is judged on the pairing
//! rule alone.

use ridesaga_schemas::{ReviewDecision, RouteSummary};

/// The thresholds of the fake-ride rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RideRules {
    /// Above this speed between two positions, the route is impossible.
    pub max_speed_kmh: f64,
    /// Positions all within this radius of the first one count as standing still.
    pub still_radius_m: f64,
    /// How long the positions must span before standing still counts.
    pub still_for_ms: i64,
    /// Completed rides of one driver with one rider within the window that flag the last.
    pub pair_rides: u32,
    pub pair_window_ms: i64,
}

impl Default for RideRules {
    fn default() -> Self {
        RideRules {
            max_speed_kmh: 250.0,
            still_radius_m: 30.0,
            still_for_ms: 60_000,
            pair_rides: 5,
            pair_window_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// What the rules look at for one completed ride.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Completion<'a> {
    /// The distance charged.
    pub distance_km: f64,
    /// The recorded route's summary, if the driver reported positions.
    pub route: Option<&'a RouteSummary>,
    /// Rides the same driver and rider completed within the pair window before this one.
    pub earlier_pair_rides: u32,
}

/// The reasons a completed ride is flagged for; empty: it is not.
pub fn judge(completion: &Completion<'_>, rules: &RideRules) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(route) = completion.route.filter(|r| r.points >= 2) {
        if route.max_speed_kmh > rules.max_speed_kmh {
            reasons.push(format!(
                "impossible_speed: {:.0} km/h between two positions, above {:.0} km/h",
                route.max_speed_kmh, rules.max_speed_kmh
            ));
        }
        let spread_m = route.spread_km * 1000.0;
        if spread_m <= rules.still_radius_m
            && route.duration_s * 1000.0 >= rules.still_for_ms as f64
        {
            reasons.push(format!(
                "driver_never_moved: {} positions within {:.0} m over {:.0} s while {:.2} km \
                 was charged",
                route.points, spread_m, route.duration_s, completion.distance_km
            ));
        }
    }
    let together = completion.earlier_pair_rides.saturating_add(1);
    if together >= rules.pair_rides {
        reasons.push(format!(
            "repeated_pair: {together} rides of this driver and rider within {}h",
            rules.pair_window_ms / 3_600_000
        ));
    }
    reasons
}

/// A completed ride as fraud keeps it: flagged with reasons, and its review once decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub reasons: Vec<String>,
    pub decision: Option<ReviewDecision>,
}

/// What a review command does to the ride it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// The decision is taken and announced.
    Decide(ReviewDecision),
    /// The ride was not flagged (or is unknown): nothing to review.
    NotFlagged,
    /// The ride was reviewed before: the first decision stands.
    AlreadyDecided(ReviewDecision),
}

/// The effect of reviewing `ride` (as fraud knows it) with `decision`.
pub fn review(ride: Option<&Judged>, decision: ReviewDecision) -> Review {
    match ride {
        None => Review::NotFlagged,
        Some(judged) if judged.reasons.is_empty() => Review::NotFlagged,
        Some(Judged {
            decision: Some(first),
            ..
        }) => Review::AlreadyDecided(*first),
        Some(_) => Review::Decide(decision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(points: u32, duration_s: f64, max_speed_kmh: f64, spread_km: f64) -> RouteSummary {
        RouteSummary {
            points,
            length_km: spread_km * 2.0,
            duration_s,
            max_speed_kmh,
            displacement_km: spread_km,
            spread_km,
        }
    }

    fn judged(route: Option<&RouteSummary>, distance_km: f64, earlier: u32) -> Vec<String> {
        let completion = Completion {
            distance_km,
            route,
            earlier_pair_rides: earlier,
        };
        judge(&completion, &RideRules::default())
    }

    #[test]
    fn an_ordinary_ride_is_not_flagged() {
        let city = route(120, 900.0, 62.0, 5.1);
        assert!(judged(Some(&city), 6.3, 0).is_empty());
        assert!(judged(None, 6.3, 3).is_empty(), "no route: pairing only");
    }

    #[test]
    fn a_segment_above_the_speed_limit_is_impossible() {
        assert!(judged(Some(&route(10, 600.0, 250.0, 8.0)), 9.0, 0).is_empty());
        let reasons = judged(Some(&route(10, 600.0, 251.0, 8.0)), 9.0, 0);
        assert_eq!(
            reasons,
            ["impossible_speed: 251 km/h between two positions, above 250 km/h"]
        );
        let fast = RideRules {
            max_speed_kmh: 300.0,
            ..RideRules::default()
        };
        let completion = Completion {
            distance_km: 9.0,
            route: Some(&route(10, 600.0, 251.0, 8.0)),
            earlier_pair_rides: 0,
        };
        assert!(
            judge(&completion, &fast).is_empty(),
            "the limit is configured"
        );
    }

    #[test]
    fn a_single_position_is_no_route_to_judge() {
        let one = route(1, 0.0, 0.0, 0.0);
        assert!(judged(Some(&one), 12.0, 0).is_empty());
    }

    #[test]
    fn positions_that_stay_put_through_a_charged_ride_are_a_driver_who_never_moved() {
        let parked = route(30, 300.0, 2.0, 0.012);
        let reasons = judged(Some(&parked), 8.4, 0);
        assert_eq!(
            reasons,
            ["driver_never_moved: 30 positions within 12 m over 300 s while 8.40 km was charged"]
        );
        // Charged only what the positions' jitter adds up to: still no trip.
        assert_eq!(judged(Some(&parked), 0.004, 0).len(), 1);
        // Too short a span to tell, or a real move.
        assert!(judged(Some(&route(3, 20.0, 2.0, 0.012)), 8.4, 0).is_empty());
        assert!(judged(Some(&route(30, 300.0, 40.0, 0.031)), 8.4, 0).is_empty());
    }

    #[test]
    fn a_round_trip_back_to_the_start_moved() {
        // Displacement zero, but the positions went 2 km away: the spread says it moved.
        let mut round = route(60, 1200.0, 45.0, 2.0);
        round.displacement_km = 0.0;
        assert!(judged(Some(&round), 4.0, 0).is_empty());
    }

    #[test]
    fn the_fifth_ride_of_a_pair_within_the_window_is_flagged() {
        assert!(judged(None, 3.0, 3).is_empty());
        assert_eq!(
            judged(None, 3.0, 4),
            ["repeated_pair: 5 rides of this driver and rider within 168h"]
        );
    }

    #[test]
    fn every_rule_that_applies_is_a_reason() {
        let mut both = route(30, 300.0, 900.0, 0.01);
        both.length_km = 0.5;
        assert_eq!(judged(Some(&both), 5.0, 9).len(), 3);
    }

    #[test]
    fn a_review_decides_a_flagged_ride_once() {
        let flagged = Judged {
            reasons: vec!["impossible_speed".into()],
            decision: None,
        };
        assert_eq!(
            review(Some(&flagged), ReviewDecision::Approve),
            Review::Decide(ReviewDecision::Approve)
        );
        let decided = Judged {
            decision: Some(ReviewDecision::Reject),
            ..flagged
        };
        assert_eq!(
            review(Some(&decided), ReviewDecision::Approve),
            Review::AlreadyDecided(ReviewDecision::Reject)
        );
        let clean = Judged {
            reasons: vec![],
            decision: None,
        };
        assert_eq!(
            review(Some(&clean), ReviewDecision::Reject),
            Review::NotFlagged
        );
        assert_eq!(review(None, ReviewDecision::Reject), Review::NotFlagged);
    }
}
