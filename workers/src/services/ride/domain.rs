//! The ride state machine, pure: no I/O, no clock (the caller passes `now`).
//!
//! requested -> confirmed -> started -> completed, or cancelled (rider, no_driver,
//! payment_declined, expired, driver_no_show, rider_no_show), or rejected (fraud flagged). A
//! ride is confirmed once it has both a driver and a payment hold, whichever arrives first. A
//! confirmed ride must start before its pickup deadline, or, once the driver reported arrival,
//! before the rider wait ends; otherwise the timer cancels it as a no-show. Events for a ride
//! that already ended are absorbed: a cancel that overtakes the assignment it cancels leaves a
//! tombstone that the late assignment respects. Commands that the ride's state does not allow
//! are answered with `evt.ride.refused` so `ridectl` can say why; a request that breaks the
//! service's rules (a trip too long, pickup and drop-off the same place) also ends its saga as
//! rejected.

use ridesaga_schemas::{
    CancelReason, CompleteRide, DistanceSource, DriverArrived, DriverAssigned, DriverId,
    FareBreakdown, FraudFlagged, GeoPoint, INVALID_REQUEST, Message, MessageKind, RequestRide,
    RideCancelled, RideCommandRefused, RideCompleted, RideConfirmed, RideRejected, RideRequested,
    RideStarted, RideState, RiderId, Timestamp,
};
use tracing::{debug, warn};

use super::config::{MIN_TRIP_KM, RideConfig};
use super::route::Route;

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
    /// Its [`RideState`]: a cancelled ride's reason is not part of it.
    pub fn state(self) -> RideState {
        match self {
            Status::Requested => RideState::Requested,
            Status::Confirmed => RideState::Confirmed,
            Status::Started => RideState::Started,
            Status::Completed => RideState::Completed,
            Status::Cancelled(_) => RideState::Cancelled,
            Status::Rejected => RideState::Rejected,
        }
    }

    /// Completed, cancelled and rejected rides never change again.
    pub fn is_terminal(self) -> bool {
        self.state().is_terminal()
    }

    /// The status as stored and shown: its state's name.
    pub fn as_str(self) -> &'static str {
        self.state().as_str()
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
    /// Set at confirmation: the driver must report arrival or start the ride before it.
    pub pickup_deadline: Option<Timestamp>,
    /// Set when the driver reports arrival: the ride must start before it.
    pub rider_wait_deadline: Option<Timestamp>,
    /// The route recorded from the driver's positions since the start.
    pub route: Route,
    /// How the completed ride's fare is made up.
    pub fare: Option<FareBreakdown>,
}

impl Ride {
    /// When the timer acts on the ride in its current state, if ever: a requested ride
    /// expires, a confirmed one is cancelled as a no-show.
    pub fn deadline(&self) -> Option<Timestamp> {
        match self.status {
            Status::Requested => Some(self.expires_at),
            Status::Confirmed => self.rider_wait_deadline.or(self.pickup_deadline),
            _ => None,
        }
    }

    /// Whether [`expire`] applies at `now`.
    pub fn is_due(&self, now: Timestamp) -> bool {
        self.deadline().is_some_and(|deadline| deadline <= now)
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
        event(&mut ride, input, now, config)
    };
    (Some(ride), out.into_iter().collect())
}

/// The deadline fired: a ride still waiting for its driver or hold is cancelled, and so is a
/// confirmed ride that did not start in time (its driver or its rider did not show).
pub fn expire(mut ride: Ride, now: Timestamp) -> (Ride, Option<Message>) {
    if !ride.is_due(now) {
        return (ride, None);
    }
    let reason = match (ride.status, ride.hold) {
        (Status::Confirmed, _) if ride.rider_wait_deadline.is_some() => CancelReason::RiderNoShow,
        (Status::Confirmed, _) => CancelReason::DriverNoShow,
        (_, Hold::Declined) => CancelReason::PaymentDeclined,
        (_, Hold::Pending | Hold::Authorized) => CancelReason::Expired,
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
        pickup_deadline: None,
        rider_wait_deadline: None,
        route: Route::default(),
        fare: None,
    };
    if let Err(reason) = validate_request(cmd, distance_km, config) {
        return reject_request(ride, reason);
    }
    let out = Message::RideRequested(RideRequested {
        rider_id: ride.rider_id.clone(),
        pickup: ride.pickup,
        dropoff: ride.dropoff,
        payment_token: ride.payment_token.clone(),
        estimated_distance_km: distance_km,
        estimated_fare_cents: ride.estimated_fare_cents,
        match_deadline,
        expires_at: Some(ride.expires_at),
    });
    debug!(distance_km, "ride requested");
    (Some(ride), vec![out])
}

/// A request that breaks the service's rules ends its saga at once: the ride is stored as
/// rejected (so a later request with the same id and other details is refused, not started),
/// the rider is told why through `evt.ride.rejected`, and the command is answered with
/// `evt.ride.refused`.
fn reject_request(mut ride: Ride, reason: String) -> (Option<Ride>, Vec<Message>) {
    ride.status = Status::Rejected;
    debug!(%reason, "ride request rejected");
    let rejected = Message::RideRejected(RideRejected {
        rider_id: ride.rider_id.clone(),
        score: 0,
        reasons: vec![INVALID_REQUEST.to_owned()],
        detail: Some(reason.clone()),
    });
    let refused = refuse(MessageKind::RequestRide, reason);
    (Some(ride), vec![rejected, refused])
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
        (Message::ArriveRide(_), Status::Confirmed) => arrive(ride, now, config),
        (Message::ArriveRide(_), _) => {
            refused(ride, "only the driver of a confirmed ride can arrive")
        }
        (Message::CompleteRide(cmd), Status::Started) => complete(ride, cmd, now, config),
        (Message::CompleteRide(_), _) => refused(ride, "only a started ride can complete"),
        _ => {
            warn!(%kind, "command this service does not handle; ignored");
            None
        }
    }
}

/// The driver reached the pickup: the rider wait starts. A repeated arrival changes nothing,
/// so the wait cannot be extended.
fn arrive(ride: &mut Ride, now: Timestamp, config: &RideConfig) -> Option<Message> {
    if ride.rider_wait_deadline.is_some() {
        debug!("repeated arrival; the first one stands");
        return None;
    }
    let driver_id = ride.driver_id.clone()?;
    let rider_wait_deadline = after(now, config.rider_wait);
    ride.rider_wait_deadline = Some(rider_wait_deadline);
    debug!("driver arrived");
    Some(Message::DriverArrived(DriverArrived {
        rider_id: ride.rider_id.clone(),
        driver_id,
        rider_wait_deadline,
    }))
}

fn complete(
    ride: &mut Ride,
    cmd: &CompleteRide,
    now: Timestamp,
    config: &RideConfig,
) -> Option<Message> {
    // The recorded route wins over the reported distance, which stays the fallback.
    let (distance_km, distance_source) = if ride.route.is_usable() {
        (ride.route.km, DistanceSource::Route)
    } else {
        (
            cmd.distance_km.unwrap_or(ride.distance_km),
            DistanceSource::Reported,
        )
    };
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
    let fare = config.fares.breakdown(distance_km, duration_min);
    let fare_cents = fare.total_cents;
    ride.status = Status::Completed;
    ride.fare_cents = Some(fare_cents);
    ride.fare = Some(fare);
    debug!(fare_cents, "ride completed");
    Some(Message::RideCompleted(RideCompleted {
        rider_id: ride.rider_id.clone(),
        driver_id,
        distance_km,
        duration_min,
        fare_cents,
        distance_source,
        route_points: ride.route.points,
        fare: Some(fare),
        route: ride.route.summary(),
    }))
}

/// An event from another service, for a ride that has not ended.
fn event(ride: &mut Ride, input: &Message, now: Timestamp, config: &RideConfig) -> Option<Message> {
    match input {
        Message::FraudFlagged(flag) => reject(ride, flag),
        Message::DriverAssigned(assigned) => assign(ride, assigned, now, config),
        Message::DriverUnavailable(_) if ride.status == Status::Requested => {
            Some(cancel(ride, CancelReason::NoDriver))
        }
        Message::PaymentAuthorized(_) if ride.status == Status::Requested => {
            ride.hold = Hold::Authorized;
            confirm_if_ready(ride, now, config)
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
        detail: None,
    }))
}

fn assign(
    ride: &mut Ride,
    assigned: &DriverAssigned,
    now: Timestamp,
    config: &RideConfig,
) -> Option<Message> {
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
    confirm_if_ready(ride, now, config)
}

/// Confirms a ride that has both its driver and its hold; the pickup deadline starts now.
fn confirm_if_ready(ride: &mut Ride, now: Timestamp, config: &RideConfig) -> Option<Message> {
    let driver_id = ride.driver_id.clone()?;
    if ride.status != Status::Requested || ride.hold != Hold::Authorized {
        return None;
    }
    let pickup_deadline = after(now, config.pickup_deadline);
    ride.status = Status::Confirmed;
    ride.pickup_deadline = Some(pickup_deadline);
    debug!("ride confirmed");
    Some(Message::RideConfirmed(RideConfirmed {
        rider_id: ride.rider_id.clone(),
        driver_id,
        estimated_fare_cents: ride.estimated_fare_cents,
        pickup_deadline: Some(pickup_deadline),
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
        Status::Cancelled(reason) => format!("{} ({})", status.as_str(), reason.as_str()),
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
mod tests;
