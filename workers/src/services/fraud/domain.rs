//! Fraud scoring as pure logic: deterministic rules over what this service remembers about a
//! rider, and the decisions it already took. No I/O and no clock: every time is the `occurred_at`
//! of a message, so handling the same messages again decides the same.
//!
//! Rules and weights (the score is their sum, capped at 100; the ride is flagged when the score
//! reaches the flag threshold, 50 by default):
//! - `rider_blocked` (100): the rider is on the blocklist when the request is scored.
//! - `velocity` (60): more than `max_requests` requests by the rider within `window` up to and
//!   including this one (default: more than 5 in 60 s).
//! - `impossible_trip` (80): the estimated trip is longer than `max_trip_km` (default 200 km).
//! - `payment_declines` (60): at least `max_declines` payment declines for the rider within
//!   `decline_window` before the request (default: 3 in 24 h).
//!
//! Each ride is scored once: a request for a ride already scored decides nothing new. Windows
//! only count messages that occurred at or before the request, so a message that happened
//! later but arrived earlier never changes a score.

use std::collections::BTreeMap;

use ridesaga_schemas::{RideId, RiderId};

/// Weight of a blocked rider.
pub const WEIGHT_BLOCKED: u32 = 100;
/// Weight of too many requests in the window.
pub const WEIGHT_VELOCITY: u32 = 60;
/// Weight of a trip longer than any real one.
pub const WEIGHT_IMPOSSIBLE_TRIP: u32 = 80;
/// Weight of repeated payment declines.
pub const WEIGHT_DECLINES: u32 = 60;
/// The highest score.
pub const MAX_SCORE: u32 = 100;

/// The rules' thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FraudRules {
    /// Most requests per rider within `window_ms`; one more is flagged.
    pub max_requests: u32,
    pub window_ms: i64,
    /// Longest plausible trip, in kilometres.
    pub max_trip_km: f64,
    /// Declines per rider within `decline_window_ms` that flag the next request.
    pub max_declines: u32,
    pub decline_window_ms: i64,
    /// Scores at or above this are flagged.
    pub flag_score: u32,
}

impl Default for FraudRules {
    fn default() -> Self {
        FraudRules {
            max_requests: 5,
            window_ms: 60_000,
            max_trip_km: 200.0,
            max_declines: 3,
            decline_window_ms: 24 * 3600 * 1000,
            flag_score: 50,
        }
    }
}

/// A rider's blocklist entry. Block and unblock are last-writer-wins by `occurred_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub blocked: bool,
    pub reason: Option<String>,
    /// `occurred_at` (Unix ms) of the command that set it.
    pub at: i64,
}

/// A decision on one ride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub score: u32,
    pub reasons: Vec<String>,
    pub flagged: bool,
}

/// A scored request: counted by the velocity rule, and remembered so it is scored once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scored {
    pub rider_id: RiderId,
    /// The request's `occurred_at` (Unix ms).
    pub at: i64,
    pub assessment: Assessment,
}

/// A payment decline, one per ride.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decline {
    pub rider_id: RiderId,
    pub at: i64,
}

/// What the service knows: all of it (tests), or the slice the store loads for one input.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub blocks: BTreeMap<RiderId, Block>,
    pub requests: BTreeMap<RideId, Scored>,
    pub declines: BTreeMap<RideId, Decline>,
}

/// One input, out of its envelope; `at` is its `occurred_at` in Unix ms.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Requested {
        ride_id: RideId,
        rider_id: RiderId,
        estimated_distance_km: f64,
        at: i64,
    },
    Declined {
        ride_id: RideId,
        rider_id: RiderId,
        /// The decline's code: a card's refusal, or the gateway's own failure.
        code: String,
        at: i64,
    },
    Block {
        rider_id: RiderId,
        reason: Option<String>,
        at: i64,
    },
    Unblock {
        rider_id: RiderId,
        at: i64,
    },
}

/// What to publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `evt.fraud.cleared` or `evt.fraud.flagged`.
    Scored {
        ride_id: RideId,
        rider_id: RiderId,
        assessment: Assessment,
    },
    /// `evt.fraud.blocklist`: the rider's entry after the command.
    BlocklistChanged {
        rider_id: RiderId,
        blocked: bool,
        reason: Option<String>,
    },
}

/// What the rules look at for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts<'a> {
    /// The blocklist entry's reason, if the rider is blocked (`Some(None)`: no reason given).
    pub blocked: Option<Option<&'a str>>,
    /// Requests by the rider within the window, this one included.
    pub recent_requests: u32,
    pub estimated_distance_km: f64,
    /// Declines for the rider within the decline window.
    pub recent_declines: u32,
}

/// Applies the rules.
pub fn assess(facts: &Facts<'_>, rules: &FraudRules) -> Assessment {
    let mut score = 0;
    let mut reasons = Vec::new();
    if let Some(reason) = facts.blocked {
        score += WEIGHT_BLOCKED;
        reasons.push(match reason {
            Some(why) => format!("rider_blocked: {why}"),
            None => "rider_blocked".to_owned(),
        });
    }
    if facts.recent_requests > rules.max_requests {
        score += WEIGHT_VELOCITY;
        reasons.push(format!(
            "velocity: more than {} requests within {}s",
            rules.max_requests,
            rules.window_ms / 1000
        ));
    }
    // Not a finite number counts as impossible too.
    let km = facts.estimated_distance_km;
    if km.is_nan() || km > rules.max_trip_km {
        score += WEIGHT_IMPOSSIBLE_TRIP;
        reasons.push(format!(
            "impossible_trip: {:.1} km is longer than {} km",
            facts.estimated_distance_km, rules.max_trip_km
        ));
    }
    if facts.recent_declines >= rules.max_declines {
        score += WEIGHT_DECLINES;
        reasons.push(format!(
            "payment_declines: at least {} within {}h",
            rules.max_declines,
            rules.decline_window_ms / 3_600_000
        ));
    }
    let score = score.min(MAX_SCORE);
    Assessment {
        score,
        reasons,
        flagged: score >= rules.flag_score,
    }
}

/// Applies one input.
pub fn handle(state: &mut State, input: &Input, rules: &FraudRules) -> Vec<Effect> {
    match input {
        Input::Requested {
            ride_id,
            rider_id,
            estimated_distance_km,
            at,
        } => {
            if state.requests.contains_key(ride_id) {
                return Vec::new();
            }
            let in_window = |t: i64, window: i64| t <= *at && t > at.saturating_sub(window);
            let earlier = state
                .requests
                .values()
                .filter(|r| r.rider_id == *rider_id && in_window(r.at, rules.window_ms))
                .count();
            let declines = state
                .declines
                .values()
                .filter(|d| d.rider_id == *rider_id && in_window(d.at, rules.decline_window_ms))
                .count();
            let block = state.blocks.get(rider_id).filter(|b| b.blocked);
            let facts = Facts {
                blocked: block.map(|b| b.reason.as_deref()),
                recent_requests: saturating_u32(earlier + 1),
                estimated_distance_km: *estimated_distance_km,
                recent_declines: saturating_u32(declines),
            };
            let assessment = assess(&facts, rules);
            let scored = Scored {
                rider_id: rider_id.clone(),
                at: *at,
                assessment: assessment.clone(),
            };
            state.requests.insert(ride_id.clone(), scored);
            vec![Effect::Scored {
                ride_id: ride_id.clone(),
                rider_id: rider_id.clone(),
                assessment,
            }]
        }
        Input::Declined { code, .. } if !counts_against_rider(code) => Vec::new(),
        Input::Declined {
            ride_id,
            rider_id,
            at,
            ..
        } => {
            let decline = Decline {
                rider_id: rider_id.clone(),
                at: *at,
            };
            state.declines.entry(ride_id.clone()).or_insert(decline);
            Vec::new()
        }
        Input::Block {
            rider_id,
            reason,
            at,
        } => set_block(state, rider_id, true, reason.clone(), *at),
        Input::Unblock { rider_id, at } => set_block(state, rider_id, false, None, *at),
    }
}

fn set_block(
    state: &mut State,
    rider_id: &RiderId,
    blocked: bool,
    reason: Option<String>,
    at: i64,
) -> Vec<Effect> {
    let entry = state.blocks.entry(rider_id.clone()).or_insert(Block {
        blocked,
        reason: None,
        at,
    });
    // Last writer wins by occurred_at. Commands of the same millisecond are ordered by
    // (blocked, reason), so the outcome does not depend on arrival order: a block beats an
    // unblock issued at the same instant, the conservative choice for fraud.
    let key = |b: bool, r: &Option<String>| (at, b, r.clone());
    if key(blocked, &reason) > (entry.at, entry.blocked, entry.reason.clone()) {
        *entry = Block {
            blocked,
            reason,
            at,
        };
    }
    let entry = entry.clone();
    vec![Effect::BlocklistChanged {
        rider_id: rider_id.clone(),
        blocked: entry.blocked,
        reason: entry.reason,
    }]
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Whether a payment decline says something about the rider: a card's refusal does; the
/// gateway's own failure (`gateway_error`, `gateway_unavailable`: it refused or could not be
/// reached, whatever the card) does not.
pub fn counts_against_rider(code: &str) -> bool {
    !code.starts_with("gateway_")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const RULES: FraudRules = FraudRules {
        max_requests: 5,
        window_ms: 60_000,
        max_trip_km: 200.0,
        max_declines: 3,
        decline_window_ms: 24 * 3600 * 1000,
        flag_score: 50,
    };

    fn s(seconds: i64) -> i64 {
        1_700_000_000_000 + seconds * 1000
    }
    fn ride(n: usize) -> RideId {
        RideId::parse(format!("r_{n}")).unwrap()
    }
    fn rider(n: usize) -> RiderId {
        RiderId::parse(format!("u_{n}")).unwrap()
    }
    fn request(ride_n: usize, rider_n: usize, km: f64, at: i64) -> Input {
        Input::Requested {
            ride_id: ride(ride_n),
            rider_id: rider(rider_n),
            estimated_distance_km: km,
            at,
        }
    }
    fn decline(ride_n: usize, rider_n: usize, at: i64) -> Input {
        Input::Declined {
            ride_id: ride(ride_n),
            rider_id: rider(rider_n),
            code: "card_declined".into(),
            at,
        }
    }
    fn block(rider_n: usize, reason: Option<&str>, at: i64) -> Input {
        Input::Block {
            rider_id: rider(rider_n),
            reason: reason.map(str::to_owned),
            at,
        }
    }

    /// The decision `input` (a request) gets.
    fn decide(state: &mut State, input: Input) -> Assessment {
        match handle(state, &input, &RULES).as_slice() {
            [Effect::Scored { assessment, .. }] => assessment.clone(),
            other => panic!("expected one decision, got {other:?}"),
        }
    }

    #[test]
    fn a_clean_request_is_cleared_with_score_zero() {
        let decision = decide(&mut State::default(), request(1, 1, 12.0, s(0)));
        assert_eq!(
            decision,
            Assessment {
                score: 0,
                reasons: vec![],
                flagged: false
            }
        );
    }

    #[test]
    fn a_blocked_rider_is_flagged_with_the_block_reason() {
        let mut state = State::default();
        let out = handle(&mut state, &block(1, Some("chargebacks"), s(0)), &RULES);
        assert_eq!(
            out,
            [Effect::BlocklistChanged {
                rider_id: rider(1),
                blocked: true,
                reason: Some("chargebacks".into())
            }]
        );
        let decision = decide(&mut state, request(1, 1, 5.0, s(1)));
        assert_eq!((decision.score, decision.flagged), (WEIGHT_BLOCKED, true));
        assert_eq!(decision.reasons, ["rider_blocked: chargebacks"]);
        assert!(
            !decide(&mut state, request(2, 2, 5.0, s(1))).flagged,
            "other riders are not"
        );
    }

    #[test]
    fn the_sixth_request_within_a_minute_is_flagged() {
        let mut state = State::default();
        for n in 0..5 {
            assert!(!decide(&mut state, request(n, 1, 5.0, s(n as i64 * 10))).flagged);
        }
        let sixth = decide(&mut state, request(5, 1, 5.0, s(50)));
        assert_eq!((sixth.score, sixth.flagged), (WEIGHT_VELOCITY, true));
        assert_eq!(sixth.reasons, ["velocity: more than 5 requests within 60s"]);
        // At 71 s the first two have left the window: 5 in it, this one included.
        assert!(!decide(&mut state, request(6, 1, 5.0, s(71))).flagged);
    }

    #[test]
    fn a_trip_longer_than_the_limit_is_impossible() {
        let mut state = State::default();
        assert!(!decide(&mut state, request(1, 1, 200.0, s(0))).flagged);
        let far = decide(&mut state, request(2, 1, 200.5, s(1)));
        assert_eq!((far.score, far.flagged), (WEIGHT_IMPOSSIBLE_TRIP, true));
        assert_eq!(
            far.reasons,
            ["impossible_trip: 200.5 km is longer than 200 km"]
        );
        assert!(decide(&mut state, request(3, 1, f64::NAN, s(2))).flagged);
    }

    #[test]
    fn three_declines_within_a_day_flag_the_next_request() {
        let mut state = State::default();
        handle(&mut state, &decline(1, 1, s(-25 * 3600)), &RULES);
        handle(&mut state, &decline(2, 1, s(-3600)), &RULES);
        handle(&mut state, &decline(3, 1, s(-60)), &RULES);
        assert!(
            !decide(&mut state, request(10, 1, 5.0, s(0))).flagged,
            "one is older than a day"
        );
        handle(&mut state, &decline(4, 1, s(1)), &RULES);
        let flagged = decide(&mut state, request(11, 1, 5.0, s(2)));
        assert_eq!((flagged.score, flagged.flagged), (WEIGHT_DECLINES, true));
        assert_eq!(flagged.reasons, ["payment_declines: at least 3 within 24h"]);
    }

    #[test]
    fn the_gateway_failing_is_not_the_rider_declining() {
        let mut state = State::default();
        for (n, code) in [
            (1, "gateway_error"),
            (2, "gateway_unavailable"),
            (3, "gateway_error"),
        ] {
            let mut input = decline(n, 1, s(-60 + n as i64));
            if let Input::Declined { code: c, .. } = &mut input {
                *c = code.to_owned();
            }
            handle(&mut state, &input, &RULES);
        }
        assert!(state.declines.is_empty());
        assert!(!decide(&mut state, request(10, 1, 5.0, s(0))).flagged);
    }

    #[test]
    fn a_decline_counts_once_per_ride() {
        let mut state = State::default();
        for _ in 0..3 {
            assert!(handle(&mut state, &decline(1, 1, s(0)), &RULES).is_empty());
        }
        assert!(!decide(&mut state, request(2, 1, 5.0, s(1))).flagged);
    }

    #[test]
    fn a_request_already_scored_decides_nothing_new() {
        let mut state = State::default();
        decide(&mut state, request(1, 1, 5.0, s(0)));
        handle(&mut state, &block(1, None, s(1)), &RULES);
        assert!(handle(&mut state, &request(1, 1, 5.0, s(0)), &RULES).is_empty());
        assert!(
            !state.requests[&ride(1)].assessment.flagged,
            "the first decision stands"
        );
    }

    #[test]
    fn messages_that_happened_later_never_change_a_score() {
        let mut state = State::default();
        for n in 0..6 {
            decide(&mut state, request(n, 1, 5.0, s(100 + n as i64)));
        }
        for n in 20..23 {
            handle(&mut state, &decline(n, 1, s(90)), &RULES);
        }
        // Happened at 50 s, arrived last: the later requests and declines do not count.
        assert!(!decide(&mut state, request(9, 1, 5.0, s(50))).flagged);
    }

    #[test]
    fn scores_add_up_and_stop_at_100() {
        let mut state = State::default();
        handle(&mut state, &block(1, None, s(0)), &RULES);
        let decision = decide(&mut state, request(1, 1, 900.0, s(1)));
        assert_eq!(decision.score, MAX_SCORE);
        assert_eq!(decision.reasons.len(), 2);
        let lenient = FraudRules {
            flag_score: 90,
            ..RULES
        };
        let facts = Facts {
            blocked: None,
            recent_requests: 9,
            estimated_distance_km: 1.0,
            recent_declines: 0,
        };
        let velocity_only = assess(&facts, &lenient);
        assert_eq!(
            (velocity_only.score, velocity_only.flagged),
            (WEIGHT_VELOCITY, false),
            "cleared, with its reason"
        );
        assert_eq!(velocity_only.reasons.len(), 1);
    }

    #[test]
    fn a_late_block_never_undoes_a_newer_unblock() {
        let mut state = State::default();
        handle(
            &mut state,
            &Input::Unblock {
                rider_id: rider(1),
                at: s(10),
            },
            &RULES,
        );
        let out = handle(&mut state, &block(1, Some("old"), s(5)), &RULES);
        assert_eq!(
            out,
            [Effect::BlocklistChanged {
                rider_id: rider(1),
                blocked: false,
                reason: None
            }]
        );
        assert!(!decide(&mut state, request(1, 1, 5.0, s(20))).flagged);
    }

    // ---- delivery model -------------------------------------------------------------------

    /// One delivery: `id` is the message id the runtime's inbox remembers.
    #[derive(Debug, Clone)]
    struct Delivery {
        id: u64,
        input: Input,
    }

    /// The service as the runtime drives it: an inbox of message ids in front of [`handle`].
    #[derive(Debug, Default)]
    struct Service {
        state: State,
        inbox: BTreeSet<u64>,
        effects: Vec<Effect>,
    }

    impl Service {
        fn deliver(&mut self, d: &Delivery) {
            if self.inbox.insert(d.id) {
                self.effects
                    .extend(handle(&mut self.state, &d.input, &RULES));
            }
        }
    }

    /// One rider's messages, in the order they happened: requests (some impossible), declines of
    /// the rider's earlier rides, blocks and unblocks, a few seconds apart.
    fn rider_history(rider_n: usize, steps: &[(u8, u8)], next_id: &mut u64) -> Vec<Delivery> {
        let mut t = s(0);
        let mut rides = Vec::new();
        let mut out = Vec::new();
        for (kind, gap) in steps {
            t += i64::from(*gap) * 1000;
            *next_id += 1;
            let ride_n = rider_n * 1000 + out.len();
            let input = match kind {
                0..=3 => {
                    rides.push(ride_n);
                    request(ride_n, rider_n, if *kind == 3 { 350.0 } else { 8.0 }, t)
                }
                4 | 5 if !rides.is_empty() => {
                    decline(rides[usize::from(*gap) % rides.len()], rider_n, t)
                }
                6 => block(rider_n, Some("manual"), t),
                _ => Input::Unblock {
                    rider_id: rider(rider_n),
                    at: t,
                },
            };
            out.push(Delivery {
                id: *next_id,
                input,
            });
        }
        out
    }

    fn at_of(input: &Input) -> i64 {
        match input {
            Input::Requested { at, .. }
            | Input::Declined { at, .. }
            | Input::Block { at, .. }
            | Input::Unblock { at, .. } => *at,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Sagas of several riders (requests, payment declines, blocks and unblocks).
        /// In-order delivery is the order the messages happened in. Permuted: the riders'
        /// messages are interleaved at random (each rider's own first deliveries keep their
        /// order, since a rider's rules read that rider's history), and exact duplicates (same
        /// id: the inbox drops them) and resends (new id: the service must absorb them) land
        /// anywhere after the original. The final state and the set of effects are the same,
        /// and no ride is decided twice.
        #[test]
        fn interleaved_sagas_with_duplicates_give_the_in_order_outcome(
            histories in prop::collection::vec(prop::collection::vec((0u8..8, 0u8..30), 1..12), 1..4),
            picks in prop::collection::vec(any::<u32>(), 64),
            copies in prop::collection::vec((0u8..2, any::<u32>()), 0..10),
        ) {
            let mut next_id = 0;
            let riders: Vec<Vec<Delivery>> = histories
                .iter()
                .enumerate()
                .map(|(n, steps)| rider_history(n, steps, &mut next_id))
                .collect();

            let mut in_order_list: Vec<&Delivery> = riders.iter().flatten().collect();
            in_order_list.sort_by_key(|d| at_of(&d.input));
            let mut in_order = Service::default();
            for d in in_order_list {
                in_order.deliver(d);
            }

            let mut cursors = vec![0; riders.len()];
            let mut order: Vec<Delivery> = Vec::new();
            for &p in picks.iter().cycle() {
                let open: Vec<usize> = (0..riders.len()).filter(|r| cursors[*r] < riders[*r].len()).collect();
                let Some(&r) = open.get(p as usize % open.len().max(1)) else { break };
                order.push(riders[r][cursors[r]].clone());
                cursors[r] += 1;
            }
            for (kind, p) in &copies {
                let original = order[*p as usize % order.len()].clone();
                let first = order.iter().position(|d| d.id == original.id).unwrap_or(0);
                let slot = first + 1 + (*p as usize / order.len()) % (order.len() - first);
                let id = if *kind == 0 { original.id } else { next_id += 1; next_id };
                order.insert(slot, Delivery { id, input: original.input });
            }
            let mut shuffled = Service::default();
            for d in &order {
                shuffled.deliver(d);
            }

            prop_assert_eq!(&shuffled.state, &in_order.state);
            let set = |effects: &[Effect]| effects.iter().map(|e| format!("{e:?}")).collect::<BTreeSet<_>>();
            prop_assert_eq!(set(&shuffled.effects), set(&in_order.effects));
            let decided: Vec<&RideId> = shuffled.effects.iter().filter_map(|e| match e {
                Effect::Scored { ride_id, .. } => Some(ride_id),
                _ => None,
            }).collect();
            prop_assert_eq!(decided.len(), decided.iter().collect::<BTreeSet<_>>().len(), "a ride decided twice");
        }
    }
}
