//! The ride state machine, pure: no I/O, no clock (the caller passes `now`).
//!
//! requested -> confirmed -> started -> completed, or cancelled (rider, no_driver,
//! payment_declined, expired), or rejected (fraud flagged). A ride is confirmed once it has both
//! a driver and a payment hold, whichever arrives first. Events for a ride that already ended
//! are absorbed: a cancel that overtakes the assignment it cancels leaves a tombstone that the
//! late assignment respects. Commands that the ride's state does not allow are answered with
//! `evt.ride.refused` so `ridectl` can say why.

use ridesaga_schemas::{
    CancelReason, CompleteRide, DriverAssigned, DriverId, FraudFlagged, GeoPoint, Message,
    MessageKind, RequestRide, RideCancelled, RideCommandRefused, RideCompleted, RideConfirmed,
    RideRejected, RideRequested, RideStarted, RiderId, Timestamp,
};
use tracing::{debug, warn};

use super::config::{MIN_TRIP_KM, RideConfig};

/// Longest completed trip accepted from `cmd.ride.complete`, in kilometres.
const MAX_COMPLETED_KM: f64 = 2_000.0;
/// Longest completed trip accepted from `cmd.ride.complete`, in minutes (a day).
const MAX_COMPLETED_MIN: f64 = 24.0 * 60.0;

/// Where a ride is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Requested,
    Confirmed,
    Started,
    Completed,
    Cancelled(CancelReason),
    Rejected,
}

impl Status {
    /// Completed, cancelled and rejected rides never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed | Status::Cancelled(_) | Status::Rejected
        )
    }

    /// The status as stored and shown: `requested`, ..., `cancelled`, `rejected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Confirmed => "confirmed",
            Status::Started => "started",
            Status::Completed => "completed",
            Status::Cancelled(_) => "cancelled",
            Status::Rejected => "rejected",
        }
    }
}

/// What the ride knows about the payment hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// No answer from payment yet.
    Pending,
    /// Held; the ride confirms as soon as it also has a driver.
    Authorized,
    /// Declined before the ride heard of its driver: payment only places holds for assigned
    /// rides, so the assignment is on its way, and the ride is cancelled when it arrives (or
    /// at the deadline), with the driver named so that every order gives the same event.
    Declined,
}

/// One ride's state.
#[derive(Debug, Clone, PartialEq)]
pub struct Ride {
    pub rider_id: RiderId,
    pub pickup: GeoPoint,
    pub dropoff: GeoPoint,
    pub payment_token: String,
    /// Planned great-circle distance.
    pub distance_km: f64,
    pub estimated_fare_cents: u64,
    pub match_deadline: Timestamp,
    /// When a ride still `Requested` expires: the match deadline plus the confirm grace.
    pub expires_at: Timestamp,
    pub status: Status,
    pub driver_id: Option<DriverId>,
    pub hold: Hold,
    pub started_at: Option<Timestamp>,
    pub fare_cents: Option<u64>,
}

impl Ride {
    /// Whether [`expire`] applies at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.status == Status::Requested && self.expires_at <= now
    }
}

/// Applies one input to the ride's state (`None`: no such ride yet) and returns the new state
/// and the messages to publish.
pub fn handle(
    ride: Option<Ride>,
    input: &Message,
    now: Timestamp,
    config: &RideConfig,
) -> (Option<Ride>, Vec<Message>) {
    let kind = input.kind();
    if let Message::RequestRide(cmd) = input {
        return request(ride, cmd, now, config);
    }
    let Some(mut ride) = ride else {
        if kind.is_command() {
            return (None, vec![refuse(kind, "no such ride".into())]);
        }
        warn!(%kind, "event for a ride this service never saw; ignored");
        return (None, Vec::new());
    };
    let out = if kind.is_command() {
        command(&mut ride, input, now, config)
    } else if ride.status.is_terminal() {
        debug!(%kind, status = ride.status.as_str(), "event for an ended ride absorbed");
        None
    } else {
        event(&mut ride, input)
    };
    (Some(ride), out.into_iter().collect())
}

/// The deadline fired: a ride still waiting for its driver or hold is cancelled.
pub fn expire(mut ride: Ride, now: Timestamp) -> (Ride, Option<Message>) {
    if !ride.is_due(now) {
        return (ride, None);
    }
    let reason = match ride.hold {
        Hold::Declined => CancelReason::PaymentDeclined,
        Hold::Pending | Hold::Authorized => CancelReason::Expired,
    };
    let out = cancel(&mut ride, reason);
    (ride, Some(out))
}

fn request(
    existing: Option<Ride>,
    cmd: &RequestRide,
    now: Timestamp,
    config: &RideConfig,
) -> (Option<Ride>, Vec<Message>) {
    if let Some(ride) = existing {
        let same = ride.rider_id == cmd.rider_id
            && ride.pickup == cmd.pickup
            && ride.dropoff == cmd.dropoff
            && ride.payment_token == cmd.payment_token;
        if same {
            debug!("repeated request for an existing ride; nothing to do");
            return (Some(ride), Vec::new());
        }
        let reason = "a ride with this id already exists with a different request".to_owned();
        return (Some(ride), vec![refuse(MessageKind::RequestRide, reason)]);
    }
    let distance_km = cmd.pickup.distance_km(&cmd.dropoff);
    if let Err(reason) = validate_request(cmd, distance_km, config) {
        return (None, vec![refuse(MessageKind::RequestRide, reason)]);
    }
    let match_deadline = after(now, config.match_deadline);
    let ride = Ride {
        rider_id: cmd.rider_id.clone(),
        pickup: cmd.pickup,
        dropoff: cmd.dropoff,
        payment_token: cmd.payment_token.clone(),
        distance_km,
        estimated_fare_cents: config.fares.estimate_cents(distance_km),
        match_deadline,
        expires_at: after(match_deadline, config.confirm_grace),
        status: Status::Requested,
        driver_id: None,
        hold: Hold::Pending,
        started_at: None,
        fare_cents: None,
    };
    let out = Message::RideRequested(RideRequested {
        rider_id: ride.rider_id.clone(),
        pickup: ride.pickup,
        dropoff: ride.dropoff,
        payment_token: ride.payment_token.clone(),
        estimated_distance_km: distance_km,
        estimated_fare_cents: ride.estimated_fare_cents,
        match_deadline,
    });
    debug!(distance_km, "ride requested");
    (Some(ride), vec![out])
}

fn validate_request(
    cmd: &RequestRide,
    distance_km: f64,
    config: &RideConfig,
) -> Result<(), String> {
    // The rider id and both positions were validated when the command was decoded.
    if cmd.payment_token.trim().is_empty() {
        return Err("the payment token is empty".into());
    }
    if distance_km < MIN_TRIP_KM {
        return Err(format!(
            "pickup and dropoff are the same place ({:.0} m apart)",
            distance_km * 1000.0
        ));
    }
    if distance_km > config.max_trip_km {
        return Err(format!(
            "the trip is {distance_km:.1} km; at most {} km are accepted",
            config.max_trip_km
        ));
    }
    Ok(())
}

fn command(
    ride: &mut Ride,
    input: &Message,
    now: Timestamp,
    config: &RideConfig,
) -> Option<Message> {
    let kind = input.kind();
    let refused = |ride: &Ride, allowed: &str| {
        Some(refuse(
            kind,
            format!("the ride is {}; {allowed}", describe(ride.status)),
        ))
    };
    match (input, ride.status) {
        (Message::CancelRide(_), s) if !s.is_terminal() => Some(cancel(ride, CancelReason::Rider)),
        (Message::CancelRide(_), _) => {
            refused(ride, "only a ride that has not ended can be cancelled")
        }
        (Message::StartRide(_), Status::Confirmed) => {
            let driver_id = ride.driver_id.clone()?;
            ride.status = Status::Started;
            ride.started_at = Some(now);
            debug!("ride started");
            Some(Message::RideStarted(RideStarted {
                rider_id: ride.rider_id.clone(),
                driver_id,
            }))
        }
        (Message::StartRide(_), _) => refused(ride, "only a confirmed ride can start"),
        (Message::CompleteRide(cmd), Status::Started) => complete(ride, cmd, now, config),
        (Message::CompleteRide(_), _) => refused(ride, "only a started ride can complete"),
        _ => {
            warn!(%kind, "command this service does not handle; ignored");
            None
        }
    }
}

fn complete(
    ride: &mut Ride,
    cmd: &CompleteRide,
    now: Timestamp,
    config: &RideConfig,
) -> Option<Message> {
    let distance_km = cmd.distance_km.unwrap_or(ride.distance_km);
    let duration_min = cmd.duration_min.unwrap_or_else(|| {
        let started = ride.started_at.unwrap_or(now);
        (now.unix_millis() - started.unix_millis()).max(0) as f64 / 60_000.0
    });
    let kind = MessageKind::CompleteRide;
    if !(0.0..=MAX_COMPLETED_KM).contains(&distance_km) {
        let reason = format!("distance_km must be between 0 and {MAX_COMPLETED_KM}");
        return Some(refuse(kind, reason));
    }
    if !(0.0..=MAX_COMPLETED_MIN).contains(&duration_min) {
        let reason = format!("duration_min must be between 0 and {MAX_COMPLETED_MIN}");
        return Some(refuse(kind, reason));
    }
    let driver_id = ride.driver_id.clone()?;
    let fare_cents = config.fares.fare_cents(distance_km, duration_min);
    ride.status = Status::Completed;
    ride.fare_cents = Some(fare_cents);
    debug!(fare_cents, "ride completed");
    Some(Message::RideCompleted(RideCompleted {
        rider_id: ride.rider_id.clone(),
        driver_id,
        distance_km,
        duration_min,
        fare_cents,
    }))
}

/// An event from another service, for a ride that has not ended.
fn event(ride: &mut Ride, input: &Message) -> Option<Message> {
    match input {
        Message::FraudFlagged(flag) => reject(ride, flag),
        Message::DriverAssigned(assigned) => assign(ride, assigned),
        Message::DriverUnavailable(_) if ride.status == Status::Requested => {
            Some(cancel(ride, CancelReason::NoDriver))
        }
        Message::PaymentAuthorized(_) if ride.status == Status::Requested => {
            ride.hold = Hold::Authorized;
            confirm_if_ready(ride)
        }
        Message::PaymentDeclined(_) if ride.status == Status::Requested => {
            ride.hold = Hold::Declined;
            if ride.driver_id.is_some() {
                Some(cancel(ride, CancelReason::PaymentDeclined))
            } else {
                debug!("declined before the assignment arrived; waiting for it");
                None
            }
        }
        other => {
            warn!(kind = %other.kind(), status = ride.status.as_str(), "event not expected now; ignored");
            None
        }
    }
}

fn reject(ride: &mut Ride, flag: &FraudFlagged) -> Option<Message> {
    if ride.status != Status::Requested {
        // Driver matching waits for fraud clearance, so this cannot happen to a confirmed
        // ride; rejecting one now would leave its hold and driver uncompensated.
        warn!(
            status = ride.status.as_str(),
            "fraud flag after confirmation ignored"
        );
        return None;
    }
    ride.status = Status::Rejected;
    debug!(score = flag.score, "ride rejected");
    Some(Message::RideRejected(RideRejected {
        rider_id: ride.rider_id.clone(),
        score: flag.score,
        reasons: flag.reasons.clone(),
    }))
}

fn assign(ride: &mut Ride, assigned: &DriverAssigned) -> Option<Message> {
    match &ride.driver_id {
        Some(known) if *known != assigned.driver_id => {
            warn!(%known, other = %assigned.driver_id, "second driver for one ride ignored");
            return None;
        }
        Some(_) => return None,
        None => ride.driver_id = Some(assigned.driver_id.clone()),
    }
    debug!(driver_id = %assigned.driver_id, "driver assigned");
    if ride.hold == Hold::Declined {
        return Some(cancel(ride, CancelReason::PaymentDeclined));
    }
    confirm_if_ready(ride)
}

fn confirm_if_ready(ride: &mut Ride) -> Option<Message> {
    let driver_id = ride.driver_id.clone()?;
    if ride.status != Status::Requested || ride.hold != Hold::Authorized {
        return None;
    }
    ride.status = Status::Confirmed;
    debug!("ride confirmed");
    Some(Message::RideConfirmed(RideConfirmed {
        rider_id: ride.rider_id.clone(),
        driver_id,
        estimated_fare_cents: ride.estimated_fare_cents,
    }))
}

fn cancel(ride: &mut Ride, reason: CancelReason) -> Message {
    ride.status = Status::Cancelled(reason);
    debug!(reason = reason.as_str(), "ride cancelled");
    Message::RideCancelled(RideCancelled {
        rider_id: ride.rider_id.clone(),
        reason,
        driver_id: ride.driver_id.clone(),
    })
}

fn refuse(command: MessageKind, reason: String) -> Message {
    debug!(%command, %reason, "command refused");
    Message::RideCommandRefused(RideCommandRefused {
        command: command.as_str().to_owned(),
        reason,
    })
}

fn describe(status: Status) -> String {
    match status {
        Status::Cancelled(reason) => format!("cancelled ({})", reason.as_str()),
        other => other.as_str().to_owned(),
    }
}

/// `at + duration`, capped at a century so that a huge setting cannot wrap around.
fn after(at: Timestamp, duration: std::time::Duration) -> Timestamp {
    const CENTURY_MS: u128 = 100 * 365 * 24 * 3600 * 1000;
    let ms = duration.as_millis().min(CENTURY_MS) as i64;
    Timestamp::from_unix_millis(at.unix_millis().saturating_add(ms))
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_request_to_the_same_place_is_refused_and_creates_nothing() {
        let (state, out) = run(&[request_to(52.52, 13.40)], at(0));
        assert!(state.is_none());
        assert!(refusal(&out).reason.contains("same place"));
        assert_eq!(refusal(&out).command, "cmd.ride.request");
    }

    #[test]
    fn a_trip_longer_than_the_limit_is_refused() {
        let (state, out) = run(&[request_to(48.13, 11.57)], at(0));
        assert!(state.is_none());
        assert!(refusal(&out).reason.contains("at most 200 km"));
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
        assert_eq!(state.unwrap().fare_cents, Some(2050));
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

    #[test]
    fn a_confirmed_ride_does_not_expire() {
        let (state, _) = run(&[request(), assigned(), authorized()], at(0));
        let (ride, out) = expire(state.unwrap(), at(3600));
        assert_eq!((ride.status, out), (Status::Confirmed, None));
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
            number in 0usize..6,
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
}
