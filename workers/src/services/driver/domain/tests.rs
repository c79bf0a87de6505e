//! Tests of the driver's pure matching logic.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;

const RULES: MatchRules = MatchRules {
    radius_km: 10.0,
    average_speed_kmh: 30.0,
};
/// Around Berlin's Alexanderplatz; 0.01 degrees of latitude are about 1.1 km.
const LAT: f64 = 52.52;
const LNG: f64 = 13.41;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + seconds * 1000)
}
fn ms(seconds: i64) -> i64 {
    at(seconds).unix_millis()
}
fn near(dlat: f64, dlng: f64) -> GeoPoint {
    GeoPoint::new(LAT + dlat, LNG + dlng).unwrap()
}
fn driver(n: usize) -> DriverId {
    DriverId::parse(format!("d_{n}")).unwrap()
}
fn ride(n: usize) -> RideId {
    RideId::parse(format!("r_{n}")).unwrap()
}
fn rider(n: usize) -> RiderId {
    RiderId::parse(format!("u_{n}")).unwrap()
}
fn register(n: usize, location: GeoPoint, at: i64) -> Input {
    Input::Register {
        driver_id: driver(n),
        name: format!("Driver {n}"),
        location,
        at,
    }
}
fn online(n: usize, at: i64) -> Input {
    Input::Online {
        driver_id: driver(n),
        location: None,
        at,
    }
}
fn requested(n: usize, pickup: GeoPoint, deadline: Timestamp) -> Input {
    let request = RideRequest {
        rider_id: rider(n),
        pickup,
        match_deadline: deadline,
        trip_km: 5.0,
    };
    Input::Requested {
        ride_id: ride(n),
        request,
    }
}
fn cleared(n: usize) -> Input {
    Input::Cleared { ride_id: ride(n) }
}
fn ended(n: usize, reason: &str) -> Input {
    Input::Ended {
        ride_id: ride(n),
        reason: reason.to_owned(),
    }
}

fn apply(state: &mut State, input: Input) -> Vec<Effect> {
    handle(state, &input, at(0), &RULES).unwrap()
}
/// Drivers registered and online at the given offsets from the centre.
fn with_drivers(positions: &[(f64, f64)]) -> State {
    let mut state = State::default();
    for (n, (dlat, dlng)) in positions.iter().enumerate() {
        apply(&mut state, register(n, near(*dlat, *dlng), ms(-10)));
        apply(&mut state, online(n, ms(-9)));
    }
    state
}
fn assigned(effects: &[Effect]) -> Vec<(RideId, DriverId)> {
    let pairs = effects.iter().filter_map(|e| match e {
        Effect::Assigned {
            ride_id, driver_id, ..
        } => Some((ride_id.clone(), driver_id.clone())),
        _ => None,
    });
    pairs.collect()
}
fn released(effects: &[Effect]) -> Vec<(RideId, DriverId)> {
    let pairs = effects.iter().filter_map(|e| match e {
        Effect::Released {
            ride_id, driver_id, ..
        } => Some((ride_id.clone(), driver_id.clone())),
        _ => None,
    });
    pairs.collect()
}

#[test]
fn the_nearest_driver_in_range_is_reserved() {
    let mut state = with_drivers(&[(0.05, 0.0), (0.01, 0.0), (-0.03, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    let out = apply(&mut state, cleared(1));
    assert_eq!(assigned(&out), [(ride(1), driver(1))]);
    let Effect::Assigned {
        pickup_distance_km,
        driver_name,
        rider_id,
        ..
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert!(
        (pickup_distance_km - 1.11).abs() < 0.01,
        "{pickup_distance_km}"
    );
    assert_eq!((driver_name.as_str(), rider_id), ("Driver 1", &rider(1)));
    assert_eq!(state.drivers[&driver(1)].current_ride, Some(ride(1)));
}

#[test]
fn a_driver_beyond_the_radius_is_not_reserved() {
    let mut state = with_drivers(&[(0.2, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    assert!(apply(&mut state, cleared(1)).is_empty());
    assert_eq!(state.rides[&ride(1)].stage, Stage::Waiting);
}

#[test]
fn a_ride_is_matched_only_once_both_request_and_clearance_arrived_in_either_order() {
    for clearance_first in [false, true] {
        let mut state = with_drivers(&[(0.01, 0.0)]);
        let (first, second) = if clearance_first {
            (cleared(1), requested(1, near(0.0, 0.0), at(60)))
        } else {
            (requested(1, near(0.0, 0.0), at(60)), cleared(1))
        };
        assert!(apply(&mut state, first).is_empty());
        assert_eq!(assigned(&apply(&mut state, second)), [(ride(1), driver(0))]);
    }
}

#[test]
fn a_driver_is_never_reserved_for_two_rides() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    for n in 1..=2 {
        apply(
            &mut state,
            requested(n, near(0.001 * n as f64, 0.0), at(60)),
        );
    }
    assert_eq!(
        assigned(&apply(&mut state, cleared(1))),
        [(ride(1), driver(0))]
    );
    assert!(apply(&mut state, cleared(2)).is_empty());
    assert_eq!(state.rides[&ride(2)].stage, Stage::Waiting);
    // Even a tick finds no second driver to give.
    assert!(tick(&mut state, at(1), &RULES).is_empty());
}

#[test]
fn a_driver_coming_online_takes_the_waiting_ride_with_the_earliest_deadline() {
    let mut state = State::default();
    apply(&mut state, register(0, near(0.0, 0.0), ms(-10)));
    apply(&mut state, requested(1, near(0.001, 0.0), at(90)));
    apply(&mut state, requested(2, near(0.02, 0.0), at(60)));
    apply(&mut state, requested(3, near(0.5, 0.0), at(30)));
    for n in 1..=3 {
        assert!(apply(&mut state, cleared(n)).is_empty());
    }
    let out = apply(&mut state, online(0, ms(-1)));
    assert!(matches!(out[0], Effect::DriverUpdated { online: true, .. }));
    assert_eq!(
        assigned(&out),
        [(ride(2), driver(0))],
        "ride 3 is out of range"
    );
}

#[test]
fn a_moving_driver_takes_a_waiting_ride_that_comes_into_range() {
    let mut state = with_drivers(&[(0.3, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    assert!(apply(&mut state, cleared(1)).is_empty());
    let moved = Input::Move {
        driver_id: driver(0),
        location: near(0.05, 0.0),
        at: ms(-1),
    };
    assert_eq!(assigned(&apply(&mut state, moved)), [(ride(1), driver(0))]);
}

#[test]
fn a_released_driver_takes_the_next_waiting_ride() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    for n in 1..=2 {
        apply(&mut state, requested(n, near(0.0, 0.0), at(60)));
        apply(&mut state, cleared(n));
    }
    let out = apply(&mut state, ended(1, "completed"));
    assert_eq!(released(&out), [(ride(1), driver(0))]);
    assert_eq!(assigned(&out), [(ride(2), driver(0))]);
}

#[test]
fn a_cancel_before_the_assignment_leaves_a_tombstone() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    assert!(apply(&mut state, ended(1, "cancelled:rider")).is_empty());
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    assert!(apply(&mut state, cleared(1)).is_empty());
    assert!(
        tick(&mut state, at(90), &RULES).is_empty(),
        "no unavailable either"
    );
    assert_eq!(
        state.rides[&ride(1)].stage,
        Stage::Closed {
            reason: "cancelled:rider".into()
        }
    );
    assert_eq!(state.drivers[&driver(0)].current_ride, None);
}

#[test]
fn the_driver_is_released_once_when_payment_is_declined_and_the_ride_is_cancelled() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    apply(&mut state, cleared(1));
    let out = apply(&mut state, ended(1, "payment_declined"));
    assert_eq!(released(&out), [(ride(1), driver(0))]);
    // The cancel that the decline causes maps to the same reason (see `input_of`).
    assert!(apply(&mut state, ended(1, "payment_declined")).is_empty());
    assert!(state.drivers[&driver(0)].is_available());
}

#[test]
fn a_reserved_driver_going_offline_stays_reserved_until_released() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    apply(&mut state, cleared(1));
    apply(
        &mut state,
        Input::Offline {
            driver_id: driver(0),
            at: ms(-1),
        },
    );
    assert_eq!(state.drivers[&driver(0)].current_ride, Some(ride(1)));
    apply(&mut state, requested(2, near(0.0, 0.0), at(60)));
    apply(&mut state, cleared(2));
    let out = apply(&mut state, ended(1, "completed"));
    assert_eq!(released(&out), [(ride(1), driver(0))]);
    assert!(
        assigned(&out).is_empty(),
        "an offline driver takes no new ride"
    );
}

#[test]
fn a_waiting_ride_becomes_unavailable_at_its_deadline_once() {
    let mut state = with_drivers(&[(0.5, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    apply(&mut state, cleared(1));
    assert!(tick(&mut state, at(59), &RULES).is_empty());
    let out = tick(&mut state, at(60), &RULES);
    assert!(
        matches!(&out[..], [Effect::Unavailable { reason, .. }] if reason.contains("10 km")),
        "{out:?}"
    );
    assert!(tick(&mut state, at(61), &RULES).is_empty());
    assert!(apply(&mut state, ended(1, "cancelled:no_driver")).is_empty());
    assert_eq!(state.rides[&ride(1)].stage, Stage::Unavailable);
}

#[test]
fn a_ride_never_cleared_becomes_unavailable_at_its_deadline() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    let out = tick(&mut state, at(60), &RULES);
    assert!(matches!(&out[..], [Effect::Unavailable { reason, .. }] if reason.contains("fraud")));
    let late = handle(&mut state, &cleared(1), at(61), &RULES).unwrap();
    assert!(
        late.is_empty(),
        "a clearance after the deadline reserves nobody"
    );
}

#[test]
fn a_clearance_arriving_after_the_deadline_answers_unavailable_at_once() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    handle(
        &mut state,
        &requested(1, near(0.0, 0.0), at(60)),
        at(0),
        &RULES,
    )
    .unwrap();
    let out = handle(&mut state, &cleared(1), at(75), &RULES).unwrap();
    assert!(matches!(&out[..], [Effect::Unavailable { .. }]), "{out:?}");
    assert!(state.drivers[&driver(0)].is_available());
}

#[test]
fn a_waiting_ride_is_retried_on_tick() {
    // A driver who became available without being offered (an older replica with a smaller
    // radius, say) is found by the next tick.
    let mut state = with_drivers(&[(0.15, 0.0)]);
    apply(&mut state, requested(1, near(0.0, 0.0), at(60)));
    assert!(apply(&mut state, cleared(1)).is_empty());
    let wider = MatchRules {
        radius_km: 20.0,
        ..RULES
    };
    assert_eq!(
        assigned(&tick(&mut state, at(1), &wider)),
        [(ride(1), driver(0))]
    );
}

#[test]
fn a_late_driver_command_never_undoes_a_newer_one() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    apply(
        &mut state,
        Input::Offline {
            driver_id: driver(0),
            at: ms(5),
        },
    );
    let out = apply(&mut state, online(0, ms(3)));
    assert!(
        matches!(out[..], [Effect::DriverUpdated { online: false, .. }]),
        "{out:?}"
    );
    let old_move = Input::Move {
        driver_id: driver(0),
        location: near(1.0, 1.0),
        at: ms(-20),
    };
    apply(&mut state, old_move);
    assert_eq!(state.drivers[&driver(0)].location, near(0.0, 0.0));
}

#[test]
fn commands_for_an_unregistered_driver_wait_for_its_registration() {
    let mut state = State::default();
    let err = handle(&mut state, &online(7, ms(1)), at(0), &RULES).unwrap_err();
    assert_eq!(err, DriverError::UnknownDriver(driver(7)));
    assert!(state.drivers.is_empty());
}

#[test]
fn registering_again_renames_and_relocates_but_keeps_availability() {
    let mut state = with_drivers(&[(0.0, 0.0)]);
    let again = Input::Register {
        driver_id: driver(0),
        name: "Ada".into(),
        location: near(0.1, 0.1),
        at: ms(1),
    };
    apply(&mut state, again);
    let d = &state.drivers[&driver(0)];
    assert_eq!(
        (d.name.as_str(), d.location, d.online),
        ("Ada", near(0.1, 0.1), true)
    );
    let fresh = apply(&mut State::default(), register(9, near(0.0, 0.0), ms(0)));
    assert!(
        matches!(fresh[..], [Effect::DriverUpdated { online: false, .. }]),
        "new drivers start offline"
    );
}

/// The part of `state` the store loads for a ride input at `now`: the ride; the available
/// drivers only where [`pickup_to_match`] names a pickup; for an ending, the ride's driver and,
/// only where [`ending_frees`] says so, the rides that may be matched.
fn slice_for(state: &State, input: &Input, now: Timestamp) -> State {
    let (Input::Requested { ride_id, .. }
    | Input::Cleared { ride_id }
    | Input::Ended { ride_id, .. }) = input
    else {
        panic!("not a ride input: {input:?}")
    };
    let stored = state.rides.get(ride_id);
    let mut slice = State::default();
    if let Some(ride) = stored {
        slice.rides.insert(ride.id.clone(), ride.clone());
    }
    match (input, stored) {
        (Input::Ended { .. }, Some(ride)) => {
            if let Stage::Assigned { driver_id } = &ride.stage {
                let driver = &state.drivers[driver_id];
                slice.drivers.insert(driver.id.clone(), driver.clone());
                if ending_frees(ride, driver) {
                    for r in state.rides.values().filter(|r| r.matchable(now).is_some()) {
                        slice.rides.insert(r.id.clone(), r.clone());
                    }
                }
            }
        }
        (Input::Ended { .. }, None) => {}
        _ => {
            if pickup_to_match(stored, input, now).is_some() {
                for d in state.drivers.values().filter(|d| d.is_available()) {
                    slice.drivers.insert(d.id.clone(), d.clone());
                }
            }
        }
    }
    slice
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The store skips the driver search unless [`pickup_to_match`] names a pickup, and the
    /// waiting rides after an ending unless [`ending_frees`] holds. For any history of a ride
    /// (its driver going offline and online meanwhile), with another ride waiting nearby, and
    /// any next input for it, before or after its deadline: handling the input over the slice
    /// the store loads gives the same effects and the same changes as over everything.
    #[test]
    fn a_ride_input_decides_the_same_over_the_slice_the_store_loads(
        history in prop::collection::vec(0u8..5, 0..6),
        next in 0u8..3,
        late in any::<bool>(),
    ) {
        let mut state = with_drivers(&[(0.0, 0.0), (0.01, 0.0)]);
        let ride_input = |kind: u8| match kind {
            0 => requested(1, near(0.0, 0.0), at(60)),
            1 => cleared(1),
            _ => ended(1, "completed"),
        };
        for (i, kind) in history.iter().enumerate() {
            let at = ms(1) + i as i64;
            let input = match kind {
                3 => Input::Offline { driver_id: driver(0), at },
                4 => online(0, at),
                kind => ride_input(*kind),
            };
            apply(&mut state, input);
        }
        let mut waiting = Ride::new(ride(2));
        waiting.request = Some(RideRequest {
            rider_id: rider(2),
            pickup: near(0.005, 0.0),
            match_deadline: at(90),
            trip_km: 5.0,
        });
        waiting.cleared = true;
        state.rides.insert(ride(2), waiting);

        let (input, now) = (ride_input(next), if late { at(61) } else { at(0) });
        let mut full = state.clone();
        let full_out = handle(&mut full, &input, now, &RULES).unwrap();
        let mut slice = slice_for(&state, &input, now);
        let slice_out = handle(&mut slice, &input, now, &RULES).unwrap();
        prop_assert_eq!(slice_out, full_out);
        for (id, r) in &slice.rides {
            prop_assert_eq!(Some(r), full.rides.get(id));
        }
        for (id, d) in &slice.drivers {
            prop_assert_eq!(Some(d), full.drivers.get(id));
        }
        for (id, r) in full.rides.iter().filter(|(id, _)| !slice.rides.contains_key(*id)) {
            prop_assert_eq!(Some(r), state.rides.get(id), "{} changed outside the slice", id);
        }
        for (id, d) in full.drivers.iter().filter(|(id, _)| !slice.drivers.contains_key(*id)) {
            prop_assert_eq!(Some(d), state.drivers.get(id), "{} changed outside the slice", id);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_bounding_box_contains_every_point_in_range(
        lat in -89.0f64..89.0, lng in -180.0f64..180.0,
        bearing in 0.0f64..360.0, fraction in 0.0f64..=1.0, radius in 0.1f64..500.0,
    ) {
        let center = GeoPoint::new(lat, lng).unwrap();
        let target = destination(center, bearing, radius * fraction);
        prop_assume!(center.distance_km(&target) <= radius);
        prop_assert!(BoundingBox::around(center, radius).contains(target), "{center} -> {target}");
    }
}

/// The point `km` away from `from` along `bearing` degrees (inverse of the distance).
fn destination(from: GeoPoint, bearing: f64, km: f64) -> GeoPoint {
    let (phi, lambda, theta) = (
        from.lat.to_radians(),
        from.lng.to_radians(),
        bearing.to_radians(),
    );
    let delta = km / 6371.0088;
    let lat = (phi.sin() * delta.cos() + phi.cos() * delta.sin() * theta.cos()).asin();
    let lng =
        lambda + (theta.sin() * delta.sin() * phi.cos()).atan2(delta.cos() - phi.sin() * lat.sin());
    let lng = (lng.to_degrees() + 540.0).rem_euclid(360.0) - 180.0;
    GeoPoint::new(lat.to_degrees().clamp(-90.0, 90.0), lng).unwrap()
}

// ---- delivery models -----------------------------------------------------------------

/// One delivery: `id` is the message id the runtime's inbox remembers.
#[derive(Debug, Clone)]
struct Delivery {
    id: u64,
    input: Input,
}

/// This service as the runtime drives it: an inbox of committed message ids in front of
/// [`handle`], and every effect published.
#[derive(Debug, Default)]
struct Service {
    state: State,
    inbox: BTreeSet<u64>,
    effects: Vec<Effect>,
}

impl Service {
    fn deliver(&mut self, d: &Delivery) -> Vec<Effect> {
        if self.inbox.contains(&d.id) {
            return Vec::new();
        }
        // An error rolls the transaction back: the inbox does not record the message.
        let Ok(out) = handle(&mut self.state, &d.input, at(0), &RULES) else {
            return Vec::new();
        };
        self.inbox.insert(d.id);
        self.effects.extend(out.iter().cloned());
        out
    }

    fn tick(&mut self, now: Timestamp) {
        let out = tick(&mut self.state, now, &RULES);
        self.effects.extend(out);
    }

    fn effect_set(&self) -> BTreeSet<String> {
        self.effects.iter().map(|e| format!("{e:?}")).collect()
    }
}

fn service_with_drivers(positions: &[(f64, f64)]) -> Service {
    Service {
        state: with_drivers(positions),
        ..Service::default()
    }
}

/// Orders `items` by the random `keys` (cycled): a permutation chosen by proptest.
fn permuted<T: Clone>(items: &[T], keys: &[u32]) -> Vec<T> {
    let mut keyed: Vec<(u32, usize)> = (0..items.len())
        .map(|i| (keys.get(i % keys.len().max(1)).copied().unwrap_or(0), i))
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, i)| items[i].clone()).collect()
}

/// Adds copies to a delivery order: `(kind, pick)` copies message `pick % n`, as an exact
/// duplicate (kind 0: same id, which the inbox drops) or as a resend under a new id (kind
/// 1: the service itself must absorb it), somewhere after the original's first delivery.
fn with_copies(order: Vec<Delivery>, copies: &[(u8, u32)], next_id: &mut u64) -> Vec<Delivery> {
    let mut out = order.clone();
    for (kind, pick) in copies {
        if order.is_empty() {
            break;
        }
        let original = &order[*pick as usize % order.len()];
        let first = out.iter().position(|d| d.id == original.id).unwrap_or(0);
        let slot = first + 1 + (*pick as usize / order.len()) % (out.len() - first);
        let id = if *kind == 0 {
            original.id
        } else {
            *next_id += 1;
            *next_id
        };
        out.insert(
            slot,
            Delivery {
                id,
                input: original.input.clone(),
            },
        );
    }
    out
}

fn deliveries(inputs: Vec<Input>, first_id: u64) -> Vec<Delivery> {
    inputs
        .into_iter()
        .enumerate()
        .map(|(i, input)| Delivery {
            id: first_id + i as u64,
            input,
        })
        .collect()
}

/// How one saga ends, as far as this service hears.
fn ending_inputs(ending: u8) -> Vec<Input> {
    match ending {
        1 => vec![ended(1, "completed")],
        2 => vec![ended(1, "payment_declined"), ended(1, "payment_declined")],
        3 => vec![ended(1, "cancelled:rider")],
        _ => Vec::new(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// One saga, with drivers already online. Permuted: the first deliveries of the
    /// request and the clearance (or the rejection) among themselves; the ending messages
    /// (completed, payment declined then cancelled, or a rider cancel) among themselves,
    /// after both, since the assignment causes them; and exact duplicates and resends of
    /// any message anywhere after its first delivery. The final state (after a tick past
    /// the deadline) and the set of effects equal in-order delivery's, and no effect is
    /// published twice.
    #[test]
    fn one_saga_in_any_order_with_duplicates_gives_the_in_order_outcome(
        drivers in prop::collection::vec((-0.12f64..0.12, -0.12f64..0.12), 1..4),
        ending in 0u8..5,
        keys in prop::collection::vec(any::<u32>(), 4),
        copies in prop::collection::vec((0u8..2, any::<u32>()), 0..6),
    ) {
        let first: Vec<Input> = if ending == 4 {
            vec![requested(1, near(0.0, 0.0), at(60)), ended(1, "rejected")]
        } else {
            vec![requested(1, near(0.0, 0.0), at(60)), cleared(1)]
        };
        let mut in_order = service_with_drivers(&drivers);
        for d in deliveries(first.clone(), 1) {
            in_order.deliver(&d);
        }
        // Ending messages exist only for a ride that got its driver.
        let is_assigned = matches!(in_order.state.rides[&ride(1)].stage, Stage::Assigned { .. });
        let last = if is_assigned { ending_inputs(ending) } else { Vec::new() };
        for d in deliveries(last.clone(), 10) {
            in_order.deliver(&d);
        }
        in_order.tick(at(120));

        let mut order = permuted(&deliveries(first, 1), &keys);
        order.extend(permuted(&deliveries(last, 10), &keys[2..]));
        let mut next_id = 100;
        let order = with_copies(order, &copies, &mut next_id);
        let mut shuffled = service_with_drivers(&drivers);
        for d in &order {
            shuffled.deliver(d);
        }
        shuffled.tick(at(120));

        prop_assert_eq!(&shuffled.state, &in_order.state);
        prop_assert_eq!(shuffled.effect_set(), in_order.effect_set());
        prop_assert_eq!(shuffled.effect_set().len(), shuffled.effects.len(), "an effect repeated");
    }

    /// A rider cancel can overtake anything. Permuted: all of request, clearance and
    /// cancel, plus duplicates and resends. The drivers end as in-order delivery leaves
    /// them (free); the ride's effects are in-order's (assigned then released) or none.
    #[test]
    fn a_rider_cancel_in_any_position_leaves_no_driver_reserved(
        drivers in prop::collection::vec((-0.12f64..0.12, -0.12f64..0.12), 1..4),
        keys in prop::collection::vec(any::<u32>(), 3),
        copies in prop::collection::vec((0u8..2, any::<u32>()), 0..6),
    ) {
        let inputs = vec![requested(1, near(0.0, 0.0), at(60)), cleared(1), ended(1, "cancelled:rider")];
        let mut in_order = service_with_drivers(&drivers);
        for d in deliveries(inputs.clone(), 1) {
            in_order.deliver(&d);
        }
        let mut next_id = 100;
        let order = with_copies(permuted(&deliveries(inputs, 1), &keys), &copies, &mut next_id);
        let mut shuffled = service_with_drivers(&drivers);
        for d in &order {
            shuffled.deliver(d);
        }
        shuffled.tick(at(120));

        prop_assert_eq!(&shuffled.state.drivers, &in_order.state.drivers);
        prop_assert!(shuffled.state.drivers.values().all(|d| d.current_ride.is_none()));
        prop_assert!(shuffled.effects.is_empty() || shuffled.effects == in_order.effects,
            "{:?} vs {:?}", shuffled.effects, in_order.effects);
    }
}

/// What a ride sends after its assignment in the competing-sagas property.
#[derive(Debug, Clone, Copy)]
enum Ending {
    /// Nothing: the ride stays assigned.
    Stays,
    /// The rider cancels, at any moment.
    RiderCancels,
    /// Completed once assigned.
    Completes,
    /// Payment declined once assigned, then the ride is cancelled.
    Declined,
    /// Fraud flagged: no clearance, the ride is rejected.
    Rejected,
}

fn ending_strategy() -> impl Strategy<Value = Ending> {
    prop_oneof![
        Just(Ending::Stays),
        Just(Ending::RiderCancels),
        Just(Ending::Completes),
        Just(Ending::Declined),
        Just(Ending::Rejected),
    ]
}

/// Checks that no driver holds two active rides, in the state (both sides of every
/// reservation agree) and in the published log (an assignment only goes to a driver whose
/// previous assignment was released).
fn check_reservations(state: &State, log: &[Effect]) -> Result<(), TestCaseError> {
    for d in state.drivers.values() {
        if let Some(r) = &d.current_ride {
            prop_assert_eq!(
                &state.rides[r].stage,
                &Stage::Assigned {
                    driver_id: d.id.clone()
                }
            );
        }
    }
    for r in state.rides.values() {
        if let Stage::Assigned { driver_id } = &r.stage {
            prop_assert_eq!(state.drivers[driver_id].current_ride.as_ref(), Some(&r.id));
        }
    }
    let mut active: BTreeMap<&DriverId, &RideId> = BTreeMap::new();
    for e in log {
        match e {
            Effect::Assigned {
                ride_id, driver_id, ..
            } => {
                prop_assert!(
                    active.insert(driver_id, ride_id).is_none(),
                    "{driver_id} assigned twice"
                );
            }
            Effect::Released {
                ride_id, driver_id, ..
            } => {
                prop_assert_eq!(active.remove(driver_id), Some(ride_id));
            }
            _ => {}
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Several rides compete for a few drivers who also go offline, online and move.
    /// Permuted: everything. Each step delivers a random pending message (and may keep it
    /// for an exact redelivery, or add a resend under a new id) or runs a tick; ending
    /// messages caused by an assignment join the pending set when the assignment is
    /// published. After every step no driver holds two active rides; at the end (a tick
    /// past every deadline) no ride is still waiting and no ended ride holds a driver.
    #[test]
    fn no_driver_is_ever_assigned_to_two_active_rides(
        drivers in prop::collection::vec((-0.05f64..0.05, -0.05f64..0.05), 1..4),
        rides in prop::collection::vec(((-0.05f64..0.05, -0.05f64..0.05), ending_strategy()), 2..6),
        commands in prop::collection::vec((0usize..4, 0u8..3, -0.05f64..0.05), 0..5),
        steps in prop::collection::vec((any::<u16>(), 0u8..8), 0..60),
    ) {
        let mut service = service_with_drivers(&drivers);
        let mut pending: Vec<Delivery> = Vec::new();
        let mut next_id = 0u64;
        let mut push = |pending: &mut Vec<Delivery>, input: Input| {
            next_id += 1;
            pending.push(Delivery { id: next_id, input });
        };
        for (n, ((dlat, dlng), ending)) in rides.iter().enumerate() {
            push(&mut pending, requested(n, near(*dlat, *dlng), at(60)));
            match ending {
                Ending::Rejected => push(&mut pending, ended(n, "rejected")),
                Ending::RiderCancels => {
                    push(&mut pending, cleared(n));
                    push(&mut pending, ended(n, "cancelled:rider"));
                }
                _ => push(&mut pending, cleared(n)),
            }
        }
        for (i, (who, kind, offset)) in commands.iter().enumerate() {
            let (driver_id, at) = (driver(who % drivers.len()), ms(1) + i as i64);
            let input = match kind {
                0 => Input::Offline { driver_id, at },
                1 => Input::Online { driver_id, location: None, at },
                _ => Input::Move { driver_id, location: near(*offset, -offset), at },
            };
            push(&mut pending, input);
        }
        let mut steps = steps.into_iter();
        while !pending.is_empty() {
            let (pick, action) = steps.next().unwrap_or((0, 0));
            if action == 7 {
                service.tick(at(1));
            } else {
                let index = pick as usize % pending.len();
                let delivery = if action == 1 { pending[index].clone() } else { pending.remove(index) };
                if action == 2 {
                    push(&mut pending, delivery.input.clone());
                }
                for effect in service.deliver(&delivery) {
                    if let Effect::Assigned { ride_id, .. } = effect {
                        let n: usize = ride_id.as_str()[2..].parse().unwrap();
                        match rides[n].1 {
                            Ending::Completes => push(&mut pending, ended(n, "completed")),
                            Ending::Declined => {
                                push(&mut pending, ended(n, "payment_declined"));
                                push(&mut pending, ended(n, "payment_declined"));
                            }
                            _ => {}
                        }
                    }
                }
            }
            check_reservations(&service.state, &service.effects)?;
        }
        service.tick(at(120));
        check_reservations(&service.state, &service.effects)?;
        for r in service.state.rides.values() {
            prop_assert!(r.stage != Stage::Waiting, "{} is stuck", r.id);
            let ends = !matches!(rides[r.id.as_str()[2..].parse::<usize>().unwrap()].1, Ending::Stays);
            prop_assert!(!(ends && matches!(r.stage, Stage::Assigned { .. })), "{} holds its driver", r.id);
        }
    }
}

// ---- schedules ------------------------------------------------------------------------------
// `at(0)` is Tuesday 2023-11-14 22:13:20 UTC.

fn one_off(start: &str, end: &str) -> ridesaga_schemas::OneOffShift {
    ridesaga_schemas::OneOffShift {
        start: start.into(),
        end: end.into(),
    }
}
fn schedule_of(shifts: Vec<ridesaga_schemas::OneOffShift>) -> DriverSchedule {
    DriverSchedule {
        zone: "UTC".into(),
        weekly: Vec::new(),
        shifts,
    }
}
fn set_schedule(n: usize, schedule: Option<DriverSchedule>, at: i64) -> Input {
    Input::Schedule {
        driver_id: driver(n),
        schedule,
        at,
    }
}
/// A ride whose planned trip is `trip_km` long.
fn requested_trip(n: usize, pickup: GeoPoint, trip_km: f64) -> Input {
    Input::Requested {
        ride_id: ride(n),
        request: RideRequest {
            rider_id: rider(n),
            pickup,
            match_deadline: at(600),
            trip_km,
        },
    }
}
/// Until 23:00 UTC: 46 min 40 s after `at(0)`.
fn until_eleven() -> Option<DriverSchedule> {
    Some(schedule_of(vec![one_off(
        "2023-11-14T22:00",
        "2023-11-14T23:00",
    )]))
}

#[test]
fn a_driver_without_a_schedule_is_matched_whenever_online() {
    let mut state = with_drivers(&[(0.01, 0.0)]);
    assert_eq!(state.drivers[&driver(0)].schedule, None);
    apply(&mut state, requested_trip(1, near(0.0, 0.0), 300.0));
    let out = apply(&mut state, cleared(1));
    assert_eq!(assigned(&out), [(ride(1), driver(0))]);
}

#[test]
fn a_driver_off_shift_is_passed_over_for_one_on_shift() {
    // Driver 0 is nearer, but their only shift is tomorrow.
    let mut state = with_drivers(&[(0.01, 0.0), (0.03, 0.0)]);
    let tomorrow = schedule_of(vec![one_off("2023-11-15T08:00", "2023-11-15T16:00")]);
    apply(&mut state, set_schedule(0, Some(tomorrow), ms(-5)));
    apply(&mut state, set_schedule(1, until_eleven(), ms(-5)));
    apply(&mut state, requested_trip(1, near(0.0, 0.0), 5.0));
    let out = apply(&mut state, cleared(1));
    assert_eq!(assigned(&out), [(ride(1), driver(1))]);
}

#[test]
fn the_shift_must_last_the_way_to_the_pickup_and_the_trip() {
    // 1.1 km to the pickup; at 30 km/h, 2 minutes a kilometre: 46 min 40 s left of the shift
    // covers a 20 km trip (42.2 min) but not a 23 km one (48.2 min).
    for (trip_km, matched) in [(20.0, true), (23.0, false)] {
        let mut state = with_drivers(&[(0.01, 0.0)]);
        apply(&mut state, set_schedule(0, until_eleven(), ms(-5)));
        apply(&mut state, requested_trip(1, near(0.0, 0.0), trip_km));
        let out = apply(&mut state, cleared(1));
        assert_eq!(!assigned(&out).is_empty(), matched, "{trip_km} km");
    }
    let request = RideRequest {
        rider_id: rider(1),
        pickup: near(0.0, 0.0),
        match_deadline: at(600),
        trip_km: 20.0,
    };
    let mut state = with_drivers(&[(0.01, 0.0)]);
    apply(&mut state, set_schedule(0, until_eleven(), ms(-5)));
    let d = &state.drivers[&driver(0)];
    assert!(shift_allows(d, &request, at(0), &RULES));
    // Ten minutes later the same ride no longer fits in what is left.
    assert!(!shift_allows(d, &request, at(600), &RULES));
    // After the shift, nothing fits.
    assert!(!shift_allows(d, &request, at(3600), &RULES));
}

#[test]
fn a_schedule_that_puts_a_driver_on_shift_offers_them_the_waiting_ride() {
    let mut state = with_drivers(&[(0.01, 0.0)]);
    let tomorrow = schedule_of(vec![one_off("2023-11-15T08:00", "2023-11-15T16:00")]);
    apply(&mut state, set_schedule(0, Some(tomorrow), ms(-5)));
    apply(&mut state, requested_trip(1, near(0.0, 0.0), 5.0));
    assert!(assigned(&apply(&mut state, cleared(1))).is_empty());
    assert!(assigned(&tick(&mut state, at(1), &RULES)).is_empty());
    let out = apply(&mut state, set_schedule(0, until_eleven(), ms(1)));
    assert_eq!(
        out[0],
        Effect::ScheduleChanged {
            driver_id: driver(0),
            schedule: until_eleven()
        }
    );
    assert_eq!(assigned(&out), [(ride(1), driver(0))]);
}

#[test]
fn a_shift_ending_during_a_ride_never_releases_its_driver() {
    let mut state = with_drivers(&[(0.01, 0.0)]);
    apply(&mut state, set_schedule(0, until_eleven(), ms(-5)));
    apply(&mut state, requested_trip(1, near(0.0, 0.0), 5.0));
    assert_eq!(assigned(&apply(&mut state, cleared(1))).len(), 1);
    // The shift ends, and the schedule is even cleared and set again: still reserved.
    for now in [at(3600), at(7200)] {
        assert!(tick(&mut state, now, &RULES).is_empty());
    }
    let out = apply(&mut state, set_schedule(0, None, ms(10)));
    assert!(released(&out).is_empty(), "{out:?}");
    let tomorrow = schedule_of(vec![one_off("2023-11-15T08:00", "2023-11-15T16:00")]);
    let out = apply(&mut state, set_schedule(0, Some(tomorrow), ms(20)));
    assert!(released(&out).is_empty(), "{out:?}");
    assert_eq!(state.drivers[&driver(0)].current_ride, Some(ride(1)));
    // Only the ride's end releases them.
    let out = apply(&mut state, ended(1, "completed"));
    assert_eq!(released(&out), [(ride(1), driver(0))]);
}

#[test]
fn an_older_schedule_command_never_undoes_a_newer_one() {
    let mut state = with_drivers(&[(0.01, 0.0)]);
    apply(&mut state, set_schedule(0, until_eleven(), ms(5)));
    let out = apply(&mut state, set_schedule(0, None, ms(1)));
    // The late clear is answered with the schedule in force.
    assert_eq!(
        out[0],
        Effect::ScheduleChanged {
            driver_id: driver(0),
            schedule: until_eleven()
        }
    );
    assert_eq!(state.drivers[&driver(0)].schedule, until_eleven());
    // A schedule for a driver not registered yet waits for the registration.
    let err = handle(&mut state, &set_schedule(9, None, ms(1)), at(0), &RULES).unwrap_err();
    assert_eq!(err, DriverError::UnknownDriver(driver(9)));
}

#[test]
fn trip_time_is_the_distance_at_the_average_speed() {
    assert_eq!(trip_ms(15.0, &RULES), 30 * 60 * 1000);
    assert_eq!(trip_ms(0.0, &RULES), 0);
}
