//! Tests of the pure ride state machine.

use std::collections::HashSet;

use proptest::prelude::*;
use proptest::sample::Index;
use ridesaga_schemas::{
    CancelRide, DriverUnavailable, PaymentAuthorized, PaymentDeclined, StartRide,
};

use super::*;

const T0: i64 = 1_700_000_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + seconds * 1000)
}

fn config() -> RideConfig {
    RideConfig::default()
}

fn rider() -> RiderId {
    RiderId::parse("u_ada").unwrap()
}

fn driver() -> DriverId {
    DriverId::parse("d_bob").unwrap()
}

fn request_to(lat: f64, lng: f64) -> Message {
    Message::RequestRide(RequestRide {
        rider_id: rider(),
        pickup: GeoPoint::new(52.52, 13.40).unwrap(),
        dropoff: GeoPoint::new(lat, lng).unwrap(),
        payment_token: "tok_visa".into(),
    })
}

fn request() -> Message {
    request_to(52.50, 13.45)
}

fn assigned() -> Message {
    Message::DriverAssigned(DriverAssigned {
        rider_id: rider(),
        driver_id: driver(),
        driver_name: "Bob".into(),
        pickup_distance_km: 1.2,
    })
}

fn authorized() -> Message {
    Message::PaymentAuthorized(PaymentAuthorized {
        rider_id: rider(),
        hold_id: "hold_1".into(),
        amount_cents: 900,
    })
}

fn declined() -> Message {
    Message::PaymentDeclined(PaymentDeclined {
        rider_id: rider(),
        code: "card_declined".into(),
        message: "declined".into(),
    })
}

fn unavailable() -> Message {
    Message::DriverUnavailable(DriverUnavailable {
        rider_id: rider(),
        reason: "none nearby".into(),
    })
}

fn flagged() -> Message {
    Message::FraudFlagged(FraudFlagged {
        rider_id: rider(),
        score: 90,
        reasons: vec!["blocked rider".into()],
    })
}

fn cancel_cmd() -> Message {
    Message::CancelRide(CancelRide {})
}

fn start_cmd() -> Message {
    Message::StartRide(StartRide {})
}

fn complete_cmd(distance_km: Option<f64>, duration_min: Option<f64>) -> Message {
    Message::CompleteRide(CompleteRide {
        distance_km,
        duration_min,
    })
}

/// Applies the inputs in order at `now`; returns the final state and every output.
fn run(inputs: &[Message], now: Timestamp) -> (Option<Ride>, Vec<Message>) {
    let mut state = None;
    let mut outputs = Vec::new();
    for input in inputs {
        let (next, out) = handle(state, input, now, &config());
        state = next;
        outputs.extend(out);
    }
    (state, outputs)
}

fn status(state: &Option<Ride>) -> Status {
    state.as_ref().expect("a ride").status
}

fn cancelled(driver_id: Option<DriverId>, reason: CancelReason) -> Message {
    Message::RideCancelled(RideCancelled {
        rider_id: rider(),
        reason,
        driver_id,
    })
}

fn refusal(outputs: &[Message]) -> &RideCommandRefused {
    match outputs.last() {
        Some(Message::RideCommandRefused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_request_emits_requested_with_distance_fare_and_deadline() {
    let (state, out) = run(&[request()], at(0));
    let Message::RideRequested(evt) = &out[0] else {
        panic!("{out:?}")
    };
    let planned = GeoPoint::new(52.52, 13.40)
        .unwrap()
        .distance_km(&GeoPoint::new(52.50, 13.45).unwrap());
    assert!((evt.estimated_distance_km - planned).abs() < 1e-9);
    assert_eq!(
        evt.estimated_fare_cents,
        config().fares.estimate_cents(planned)
    );
    assert_eq!(evt.match_deadline, at(30));
    assert_eq!(evt.expires_at, Some(at(45)));
    let ride = state.unwrap();
    assert_eq!((ride.status, ride.expires_at), (Status::Requested, at(45)));
}

#[test]
fn a_repeated_request_with_the_same_payload_emits_nothing() {
    let (_, out) = run(&[request(), request()], at(0));
    assert_eq!(out.len(), 1);
}

#[test]
fn a_second_request_that_differs_is_refused() {
    let (state, out) = run(&[request(), request_to(52.4, 13.3)], at(0));
    assert!(refusal(&out).reason.contains("already exists"));
    assert_eq!(state.unwrap().dropoff, GeoPoint::new(52.50, 13.45).unwrap());
}

/// The rejection a request that breaks the service's rules ends its saga with.
fn rejection(outputs: &[Message]) -> &RideRejected {
    match outputs.first() {
        Some(Message::RideRejected(r)) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_request_to_the_same_place_is_refused_and_its_saga_ends_rejected() {
    let (state, out) = run(&[request_to(52.52, 13.40)], at(0));
    assert_eq!(status(&state), Status::Rejected);
    assert!(refusal(&out).reason.contains("same place"));
    assert_eq!(refusal(&out).command, "cmd.ride.request");
    let rejected = rejection(&out);
    assert_eq!(rejected.reasons, vec![INVALID_REQUEST.to_owned()]);
    assert!(rejected.detail.as_deref().unwrap().contains("same place"));
    assert_eq!(out.len(), 2, "{out:?}");
}

#[test]
fn a_trip_longer_than_the_limit_is_refused_and_the_rider_told_why() {
    let (state, out) = run(&[request_to(48.13, 11.57)], at(0));
    assert_eq!(status(&state), Status::Rejected);
    assert!(refusal(&out).reason.contains("at most 200 km"));
    let rejected = rejection(&out);
    assert_eq!((rejected.score, &rejected.rider_id), (0, &rider()));
    assert!(
        rejected
            .detail
            .as_deref()
            .unwrap()
            .contains("at most 200 km")
    );
}

#[test]
fn a_rejected_request_stays_rejected_when_sent_again_or_corrected() {
    let (state, out) = run(&[request_to(48.13, 11.57), request_to(48.13, 11.57)], at(0));
    assert_eq!(status(&state), Status::Rejected);
    assert_eq!(out.len(), 2, "the repeat emits nothing: {out:?}");
    let (state, out) = run(&[request_to(48.13, 11.57), request()], at(0));
    assert_eq!(status(&state), Status::Rejected);
    assert!(refusal(&out).reason.contains("already exists"));
    assert!(!out.iter().any(|m| matches!(m, Message::RideRequested(_))));
}

#[test]
fn a_ride_confirms_once_it_has_a_driver_and_a_hold_in_either_order() {
    for events in [[assigned(), authorized()], [authorized(), assigned()]] {
        let (state, out) = run(&[request(), events[0].clone()], at(1));
        assert_eq!((status(&state), out.len()), (Status::Requested, 1));
        let (state, out) = handle(state, &events[1], at(2), &config());
        assert_eq!(status(&state), Status::Confirmed);
        assert!(matches!(&out[..], [Message::RideConfirmed(c)] if c.driver_id == driver()));
    }
}

#[test]
fn payment_declined_cancels_the_ride() {
    let (state, out) = run(&[request(), assigned(), declined()], at(1));
    assert_eq!(
        status(&state),
        Status::Cancelled(CancelReason::PaymentDeclined)
    );
    assert_eq!(
        out.last(),
        Some(&cancelled(Some(driver()), CancelReason::PaymentDeclined))
    );
}

#[test]
fn a_decline_before_the_assignment_cancels_when_the_driver_arrives() {
    let (state, out) = run(&[request(), declined()], at(1));
    assert_eq!((status(&state), out.len()), (Status::Requested, 1));
    let (state, out) = handle(state, &assigned(), at(2), &config());
    assert_eq!(
        status(&state),
        Status::Cancelled(CancelReason::PaymentDeclined)
    );
    assert_eq!(
        out,
        [cancelled(Some(driver()), CancelReason::PaymentDeclined)]
    );
}

#[test]
fn no_driver_cancels_the_ride() {
    let (state, out) = run(&[request(), unavailable()], at(1));
    assert_eq!(status(&state), Status::Cancelled(CancelReason::NoDriver));
    assert_eq!(out.last(), Some(&cancelled(None, CancelReason::NoDriver)));
}

#[test]
fn a_fraud_flag_rejects_the_ride() {
    let (state, out) = run(&[request(), flagged()], at(1));
    assert_eq!(status(&state), Status::Rejected);
    assert!(matches!(out.last(), Some(Message::RideRejected(r)) if r.score == 90));
}

#[test]
fn a_rider_cancel_names_the_driver_when_one_is_known() {
    let (state, out) = run(&[request(), assigned(), authorized(), cancel_cmd()], at(1));
    assert_eq!(status(&state), Status::Cancelled(CancelReason::Rider));
    assert_eq!(
        out.last(),
        Some(&cancelled(Some(driver()), CancelReason::Rider))
    );
}

#[test]
fn a_cancel_before_the_assignment_leaves_a_tombstone_that_later_events_respect() {
    let (state, out) = run(&[request(), cancel_cmd(), assigned(), authorized()], at(1));
    assert_eq!(status(&state), Status::Cancelled(CancelReason::Rider));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], cancelled(None, CancelReason::Rider));
}

#[test]
fn start_is_refused_unless_the_ride_is_confirmed() {
    let (state, out) = run(&[request(), assigned(), start_cmd()], at(1));
    assert_eq!(status(&state), Status::Requested);
    let refused = refusal(&out);
    assert_eq!(refused.command, "cmd.ride.start");
    assert!(
        refused.reason.contains("the ride is requested"),
        "{}",
        refused.reason
    );
}

#[test]
fn complete_charges_base_plus_planned_distance_plus_time_since_start() {
    let (state, _) = run(&[request(), assigned(), authorized(), start_cmd()], at(0));
    let ride = state.clone().unwrap();
    let (state, out) = handle(state, &complete_cmd(None, None), at(600), &config());
    assert_eq!(status(&state), Status::Completed);
    let Some(Message::RideCompleted(done)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(done.duration_min, 10.0);
    assert_eq!(done.distance_km, ride.distance_km);
    let expected = (250.0 + 120.0 * ride.distance_km + 300.0_f64).round() as u64;
    assert_eq!(done.fare_cents, expected);
}

#[test]
fn complete_uses_the_reported_distance_and_duration() {
    let inputs = [
        request(),
        assigned(),
        authorized(),
        start_cmd(),
        complete_cmd(Some(10.0), Some(20.0)),
    ];
    let (state, out) = run(&inputs, at(0));
    assert!(matches!(out.last(), Some(Message::RideCompleted(c)) if c.fare_cents == 2050));
    let ride = state.unwrap();
    assert_eq!(ride.fare_cents, Some(2050));
    let fare = FareBreakdown {
        base_cents: 250,
        distance_cents: 1200,
        time_cents: 600,
        surge_cents: 0,
        total_cents: 2050,
    };
    assert_eq!(ride.fare, Some(fare));
    assert!(matches!(out.last(), Some(Message::RideCompleted(c)) if c.fare == Some(fare)));
}

#[test]
fn complete_takes_the_recorded_route_over_the_reported_distance_and_says_so() {
    let (state, _) = run(&[request(), assigned(), authorized(), start_cmd()], at(0));
    let mut ride = state.unwrap();
    let a = GeoPoint::new(52.50, 13.40).unwrap();
    let b = GeoPoint::new(52.59, 13.40).unwrap();
    ride.route = Route::default()
        .record(1, a, 0)
        .and_then(|r| r.record(2, b, 600_000))
        .unwrap();
    let (state, out) = handle(
        Some(ride),
        &complete_cmd(Some(10.0), Some(20.0)),
        at(0),
        &config(),
    );
    let Some(Message::RideCompleted(done)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(done.distance_source, DistanceSource::Route);
    assert_eq!(done.route_points, 2);
    assert!((done.distance_km - a.distance_km(&b)).abs() < 1e-9);
    let summary = done.route.expect("a route summary");
    assert_eq!((summary.points, summary.duration_s), (2, 600.0));
    assert!((summary.displacement_km - a.distance_km(&b)).abs() < 1e-9);
    let expected = (250.0 + 120.0 * a.distance_km(&b) + 300.0 * 2.0_f64).round() as u64;
    assert_eq!(done.fare_cents, expected);
    assert_eq!(state.unwrap().fare_cents, Some(expected));
}

#[test]
fn complete_falls_back_to_the_reported_distance_below_two_positions() {
    let (state, _) = run(&[request(), assigned(), authorized(), start_cmd()], at(0));
    let mut ride = state.unwrap();
    ride.route = Route::default()
        .record(1, GeoPoint::new(52.5, 13.4).unwrap(), 0)
        .unwrap();
    let (_, out) = handle(
        Some(ride),
        &complete_cmd(Some(10.0), Some(20.0)),
        at(0),
        &config(),
    );
    let Some(Message::RideCompleted(done)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(done.distance_source, DistanceSource::Reported);
    assert_eq!(done.distance_km, 10.0);
    assert_eq!(
        done.route.map(|r| r.points),
        Some(1),
        "one position is still summarised"
    );
    assert_eq!(done.fare_cents, 2050);
}

#[test]
fn complete_refuses_a_negative_distance_and_keeps_the_ride_started() {
    let inputs = [
        request(),
        assigned(),
        authorized(),
        start_cmd(),
        complete_cmd(Some(-1.0), None),
    ];
    let (state, out) = run(&inputs, at(0));
    assert!(refusal(&out).reason.contains("distance_km"));
    assert_eq!(status(&state), Status::Started);
}

#[test]
fn commands_for_an_unknown_ride_are_refused() {
    for cmd in [cancel_cmd(), start_cmd(), complete_cmd(None, None)] {
        let (state, out) = run(&[cmd], at(0));
        assert!(state.is_none());
        assert_eq!(refusal(&out).reason, "no such ride");
    }
}

#[test]
fn events_for_an_unknown_ride_are_ignored() {
    let (state, out) = run(&[assigned(), authorized()], at(0));
    assert!(state.is_none() && out.is_empty());
}

#[test]
fn cancel_after_completion_is_refused() {
    let inputs = [
        request(),
        assigned(),
        authorized(),
        start_cmd(),
        complete_cmd(None, Some(5.0)),
        cancel_cmd(),
    ];
    let (state, out) = run(&inputs, at(0));
    assert_eq!(status(&state), Status::Completed);
    assert!(refusal(&out).reason.contains("the ride is completed"));
}

#[test]
fn an_unconfirmed_ride_expires_after_the_deadline_and_grace() {
    let (state, _) = run(&[request(), assigned()], at(0));
    let ride = state.unwrap();
    let (ride, out) = expire(ride, at(44));
    assert!(out.is_none());
    let (ride, out) = expire(ride, at(45));
    assert_eq!(ride.status, Status::Cancelled(CancelReason::Expired));
    assert_eq!(out, Some(cancelled(Some(driver()), CancelReason::Expired)));
    assert!(!ride.is_due(at(99)));
}

#[test]
fn expiry_after_a_decline_reports_the_decline() {
    let (state, _) = run(&[request(), declined()], at(0));
    let (ride, out) = expire(state.unwrap(), at(60));
    assert_eq!(
        ride.status,
        Status::Cancelled(CancelReason::PaymentDeclined)
    );
    assert_eq!(out, Some(cancelled(None, CancelReason::PaymentDeclined)));
}

fn arrive_cmd() -> Message {
    Message::ArriveRide(ridesaga_schemas::ArriveRide {})
}

/// The default pickup deadline and rider wait, in seconds.
const PICKUP_S: i64 = 20 * 60;
const WAIT_S: i64 = 5 * 60;

/// A ride confirmed at `at(0)`.
fn confirmed_ride() -> Ride {
    let (state, _) = run(&[request(), assigned(), authorized()], at(0));
    state.unwrap()
}

/// Applies `input` to `ride` at `at(seconds)`.
fn apply(ride: Ride, input: &Message, seconds: i64) -> (Ride, Vec<Message>) {
    let (state, out) = handle(Some(ride), input, at(seconds), &config());
    (state.unwrap(), out)
}

#[test]
fn a_confirmation_carries_the_pickup_deadline() {
    let (state, out) = run(&[request(), assigned(), authorized()], at(7));
    let Some(Message::RideConfirmed(confirmed)) = out.last() else {
        panic!("{out:?}")
    };
    assert_eq!(confirmed.pickup_deadline, Some(at(7 + PICKUP_S)));
    assert_eq!(state.unwrap().deadline(), Some(at(7 + PICKUP_S)));
}

#[test]
fn a_confirmed_ride_without_an_arrival_is_cancelled_at_the_pickup_deadline() {
    let (ride, out) = expire(confirmed_ride(), at(PICKUP_S - 1));
    assert_eq!((ride.status, out), (Status::Confirmed, None));
    let (ride, out) = expire(ride, at(PICKUP_S));
    assert_eq!(ride.status, Status::Cancelled(CancelReason::DriverNoShow));
    assert_eq!(
        out,
        Some(cancelled(Some(driver()), CancelReason::DriverNoShow))
    );
    assert!(!ride.is_due(at(PICKUP_S * 10)));
}

#[test]
fn an_arrival_starts_the_rider_wait_and_a_rider_no_show_cancels_at_its_end() {
    let (ride, out) = apply(confirmed_ride(), &arrive_cmd(), 600);
    let [Message::DriverArrived(arrived)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(
        (
            &arrived.rider_id,
            &arrived.driver_id,
            arrived.rider_wait_deadline
        ),
        (&rider(), &driver(), at(600 + WAIT_S))
    );
    assert_eq!(ride.status, Status::Confirmed);
    let (ride, out) = expire(ride, at(600 + WAIT_S - 1));
    assert!(out.is_none());
    let (ride, out) = expire(ride, at(600 + WAIT_S));
    assert_eq!(ride.status, Status::Cancelled(CancelReason::RiderNoShow));
    assert_eq!(
        out,
        Some(cancelled(Some(driver()), CancelReason::RiderNoShow))
    );
}

#[test]
fn an_arrival_just_before_the_pickup_deadline_gets_the_whole_rider_wait() {
    let (ride, _) = apply(confirmed_ride(), &arrive_cmd(), PICKUP_S - 10);
    let (ride, out) = expire(ride, at(PICKUP_S));
    assert_eq!((ride.status, out), (Status::Confirmed, None));
    let (ride, _) = expire(ride, at(PICKUP_S - 10 + WAIT_S));
    assert_eq!(ride.status, Status::Cancelled(CancelReason::RiderNoShow));
}

#[test]
fn a_repeated_arrival_changes_nothing_and_does_not_extend_the_wait() {
    let (ride, _) = apply(confirmed_ride(), &arrive_cmd(), 600);
    let (ride, out) = apply(ride, &arrive_cmd(), 800);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(ride.deadline(), Some(at(600 + WAIT_S)));
}

#[test]
fn a_start_before_the_deadline_wins_with_or_without_an_arrival() {
    let (ride, out) = apply(confirmed_ride(), &start_cmd(), PICKUP_S - 1);
    assert!(matches!(&out[..], [Message::RideStarted(_)]), "{out:?}");
    let (ride, out) = expire(ride, at(PICKUP_S * 10));
    assert_eq!((ride.status, out), (Status::Started, None));
    assert_eq!(ride.deadline(), None);

    let (ride, _) = apply(confirmed_ride(), &arrive_cmd(), 600);
    let (ride, out) = apply(ride, &start_cmd(), 600 + WAIT_S - 1);
    assert!(matches!(&out[..], [Message::RideStarted(_)]), "{out:?}");
    let (ride, out) = expire(ride, at(PICKUP_S * 10));
    assert_eq!((ride.status, out), (Status::Started, None));
}

#[test]
fn arrive_is_refused_unless_the_ride_is_confirmed() {
    let (state, out) = run(&[request(), assigned(), arrive_cmd()], at(1));
    assert_eq!(status(&state), Status::Requested);
    let refused = refusal(&out);
    assert_eq!(refused.command, "cmd.ride.arrive");
    assert!(
        refused.reason.contains("the ride is requested"),
        "{refused:?}"
    );

    let (ride, _) = apply(confirmed_ride(), &start_cmd(), 60);
    let (ride, out) = apply(ride, &arrive_cmd(), 70);
    assert!(refusal(&out).reason.contains("the ride is started"));
    assert_eq!(ride.status, Status::Started);

    let (ride, _) = apply(confirmed_ride(), &cancel_cmd(), 60);
    let (_, out) = apply(ride, &arrive_cmd(), 70);
    assert!(refusal(&out).reason.contains("cancelled (rider)"));

    let (state, out) = run(&[arrive_cmd()], at(0));
    assert!(state.is_none());
    assert_eq!(refusal(&out).reason, "no such ride");
}

#[test]
fn a_rider_cancel_after_the_arrival_is_a_rider_cancel() {
    let (ride, _) = apply(confirmed_ride(), &arrive_cmd(), 600);
    let (ride, out) = apply(ride, &cancel_cmd(), 700);
    assert_eq!(out, [cancelled(Some(driver()), CancelReason::Rider)]);
    assert!(!ride.is_due(at(PICKUP_S * 10)));
}

/// One saga's inputs to the ride service: `before` in causal order, then `events` in any
/// order (deliveries from other services race each other), then `after` in causal order
/// (commands that need the state the events build, or a cancel after confirmation).
struct Saga {
    before: Vec<Message>,
    events: Vec<Message>,
    after: Vec<Message>,
}

fn saga(number: usize) -> Saga {
    let (before, events, after) = match number {
        0 => (
            vec![request()],
            vec![assigned(), authorized()],
            vec![start_cmd(), complete_cmd(None, None)],
        ),
        1 => (vec![request()], vec![assigned(), declined()], vec![]),
        2 => (vec![request()], vec![unavailable()], vec![cancel_cmd()]),
        3 => (
            vec![request(), cancel_cmd()],
            vec![assigned(), authorized()],
            vec![],
        ),
        4 => (
            vec![request()],
            vec![assigned(), authorized()],
            vec![cancel_cmd()],
        ),
        5 => (
            vec![request()],
            vec![assigned(), authorized()],
            vec![arrive_cmd(), start_cmd(), complete_cmd(None, None)],
        ),
        _ => (vec![request()], vec![flagged()], vec![start_cmd()]),
    };
    Saga {
        before,
        events,
        after,
    }
}

/// Delivers `(message id, input)` pairs through a model of the runtime's inbox.
fn deliver(inputs: &[(usize, Message)]) -> (Option<Ride>, Vec<String>) {
    let mut seen = HashSet::new();
    let mut state = None;
    let mut effects = Vec::new();
    for (id, input) in inputs {
        if !seen.insert(*id) {
            continue;
        }
        let (next, out) = handle(state, input, at(5), &config());
        state = next;
        effects.extend(out.iter().map(|m| format!("{m:?}")));
    }
    effects.sort();
    (state, effects)
}

/// Shuffles `items` with the given picks (Fisher-Yates).
fn shuffle<T>(items: &mut [T], picks: &[Index]) {
    for i in (1..items.len()).rev() {
        let j = picks.get(i).map_or(i, |p| p.index(i + 1));
        items.swap(i, j);
    }
}

/// Inserts copies of delivered messages (same id) at random later positions.
fn redeliver<T: Clone>(order: &mut Vec<T>, redeliveries: &[(Index, Index)]) {
    for (which, when) in redeliveries {
        let original = which.index(order.len());
        let position = original + 1 + when.index(order.len() - original);
        let copy = order[original].clone();
        order.insert(position, copy);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_interleaving_with_redeliveries_ends_like_in_order_delivery(
        number in 0usize..7,
        picks in proptest::collection::vec(any::<Index>(), 4),
        redeliveries in proptest::collection::vec((any::<Index>(), any::<Index>()), 0..5),
    ) {
        let Saga { before, events, after } = saga(number);
        let mut ids = 0..;
        let mut with_ids = |inputs: Vec<Message>| -> Vec<(usize, Message)> {
            inputs.into_iter().map(|m| (ids.next().unwrap_or_default(), m)).collect()
        };
        let (before, mut events, after) = (with_ids(before), with_ids(events), with_ids(after));
        let in_order = [before.clone(), events.clone(), after.clone()].concat();
        let expected = deliver(&in_order);

        shuffle(&mut events, &picks);
        let mut order = [before, events, after].concat();
        redeliver(&mut order, &redeliveries);

        prop_assert_eq!(deliver(&order), expected);
    }
}
