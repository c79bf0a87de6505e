//! Saga state rebuilt from the stream: pure functions over the commands and events of rides, in
//! stream order. `ride show`, `saga trace`, `saga list`, `audit` and `--wait` all fold through
//! here, so they agree on what a saga's state is.
//!
//! # Layout
//! - this file: [`Step`] (one stored message), [`SagaState`] and the fold into [`Saga`].
//! - [`rest`]: when a saga comes to rest after a command, and `--expect` expectations.
//! - [`describe`]: one-line summaries of each message for timelines.
//! - [`audit`]: the invariants of docs/design.md, checked over an event log.

pub mod audit;
pub mod describe;
pub mod rest;
pub mod review;

use ridesaga_schemas::{
    CancelReason, Envelope, FareBreakdown, GeoPoint, Message, MessageKind, NotificationKind,
    Recipient, RideState,
};
use serde::Serialize;
use time::OffsetDateTime;

pub use rest::{Expectation, Goal, Rest};

/// The longest ride the ride service accepts (a day): a started ride that has not completed
/// by then is overdue.
pub const LONGEST_RIDE: time::Duration = time::Duration::hours(24);

/// One stored message of the saga stream, decoded.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its sequence in the saga stream: the total order of all sagas.
    pub seq: u64,
    /// When the stream stored it.
    pub time: OffsetDateTime,
    pub envelope: Envelope,
    /// The trace context it was published with, if any.
    pub trace: Option<ridesaga_schemas::TraceContext>,
}

impl Step {
    pub fn kind(&self) -> MessageKind {
        self.envelope.kind()
    }

    /// The ride it belongs to, if any.
    pub fn ride(&self) -> Option<&str> {
        self.envelope.saga_id.as_ref().map(|r| r.as_str())
    }
}

/// Where a ride is, as far as the stream tells: before the ride service has a state for it, its
/// [`RideState`], or expired (cancelled because it waited too long, told apart from the other
/// cancellations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SagaState {
    /// Nothing of this ride is stored.
    #[default]
    Unknown,
    /// The request command is stored; the ride service has not accepted it yet.
    Pending,
    /// The state the ride service announced.
    Ride(RideState),
    /// Cancelled because it waited too long.
    Expired,
}

impl SagaState {
    /// The states `--expect` and `saga list` name, in the order of a ride's life.
    pub const NAMED: [SagaState; 8] = [
        SagaState::Pending,
        SagaState::Ride(RideState::Requested),
        SagaState::Ride(RideState::Confirmed),
        SagaState::Ride(RideState::Started),
        SagaState::Ride(RideState::Completed),
        SagaState::Ride(RideState::Cancelled),
        SagaState::Ride(RideState::Rejected),
        SagaState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SagaState::Unknown => "unknown",
            SagaState::Pending => "pending",
            SagaState::Ride(state) => state.as_str(),
            SagaState::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<SagaState> {
        SagaState::NAMED.into_iter().find(|s| s.as_str() == text)
    }

    /// A terminal [`RideState`], or expired: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        match self {
            SagaState::Ride(state) => state.is_terminal(),
            SagaState::Expired => true,
            SagaState::Unknown | SagaState::Pending => false,
        }
    }
}

impl std::fmt::Display for SagaState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for SagaState {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A payment hold and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hold {
    pub hold_id: String,
    pub authorized_cents: u64,
    pub captured_cents: u64,
    pub captures: u32,
    pub voided: bool,
}

/// A command the ride service refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    pub command: String,
    pub reason: String,
    /// The refused command's message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
}

/// A refund as recorded in the stream: made (`refunded`) or refused, with the code and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RefundNote {
    pub refund_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<u64>,
    /// `refunded`, or the refusal's code.
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The driver whose share a refund made reversed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reversed_driver: Option<String>,
}

/// A notification as recorded in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Notice {
    pub kind: NotificationKind,
    pub recipient: Recipient,
    /// The refund a refund notice tells of (none from producers that did not say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
}

/// Everything known about one ride, folded from its messages in stream order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Saga {
    pub ride_id: String,
    pub state: SagaState,
    /// Why it was cancelled or rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rider_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_name: Option<String>,
    /// The driver was released again (a compensation).
    pub driver_released: bool,
    /// The driver reported arrival at the pickup.
    pub driver_arrived: bool,
    /// By when the state the saga is in should have moved on: the ride service's expiry, pickup
    /// or rider wait deadline, or the longest ride after the start. `None` where only
    /// idleness tells (a request not accepted yet, an ended saga, events without deadlines).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub deadline: Option<OffsetDateTime>,
    /// Fraud flagged the request.
    pub flagged: bool,
    /// Fraud cleared the request.
    pub fraud_cleared: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_fare_cents: Option<u64>,
    /// The final fare (completed rides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare_cents: Option<u64>,
    /// Sum of every hold placed.
    pub held_cents: u64,
    pub captured_cents: u64,
    pub voided_cents: u64,
    pub holds: Vec<Hold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_failed: Option<String>,
    pub refusals: Vec<Refusal>,
    pub notifications: Vec<Notice>,
    /// Where the rider is picked up and dropped off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pickup: Option<GeoPoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropoff: Option<GeoPoint>,
    /// When the ride started (the stream's time of `evt.ride.started`).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// The completed ride's distance and where it came from (`route` or `reported`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_source: Option<String>,
    /// Positions recorded on the completed ride's route.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_points: Option<u32>,
    /// How the completed ride's fare is made up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fare: Option<FareBreakdown>,
    /// The earnings ledger's split of the captures: the driver's share, the platform's
    /// commission, their sum (which must be the amount captured) and the driver credited.
    pub driver_earned_cents: u64,
    pub commission_cents: u64,
    #[serde(skip)]
    pub ledger_cents: u64,
    /// The sum of the refunds' reversals (which must be what the refunds gave back).
    #[serde(skip)]
    pub ledger_reversed_cents: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earning_driver: Option<String>,
    /// What the refunds made gave back, and each refund, made or refused.
    pub refunded_cents: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refunds: Vec<RefundNote>,
    /// What refunds reversed in the ledger: off the driver's share, off the commission.
    pub driver_reversed_cents: u64,
    pub commission_reversed_cents: u64,
    /// Terminal events seen, in order; more than one is a bug.
    pub terminal_events: Vec<String>,
    /// State changes that arrived after the saga had ended; each is a bug.
    pub late_transitions: Vec<String>,
    pub steps: usize,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub first_at: Option<OffsetDateTime>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub last_at: Option<OffsetDateTime>,
    pub first_seq: u64,
    pub last_seq: u64,
}

impl Saga {
    pub fn new(ride_id: impl Into<String>) -> Saga {
        Saga {
            ride_id: ride_id.into(),
            ..Saga::default()
        }
    }

    /// Folds a whole list of steps.
    pub fn fold<'a>(ride_id: &str, steps: impl IntoIterator<Item = &'a Step>) -> Saga {
        let mut saga = Saga::new(ride_id);
        for step in steps {
            saga.apply(step);
        }
        saga
    }

    /// `cancelled (payment_declined)`, `completed`.
    pub fn label(&self) -> String {
        match (&self.reason, self.state) {
            (Some(reason), SagaState::Ride(RideState::Cancelled)) => {
                format!("{} ({reason})", self.state)
            }
            _ => self.state.to_string(),
        }
    }

    /// How long since the saga's last step.
    pub fn idle(&self, now: OffsetDateTime) -> std::time::Duration {
        self.last_at
            .map(|t| (now - t).try_into().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Whether the saga should have moved on by `now`: past the deadline of the state it is in
    /// by at least `settle` (the ride service's timer acts on its next tick), or, where no
    /// deadline applies (ended sagas waiting for compensations too), idle for `settle`.
    pub fn overdue(&self, now: OffsetDateTime, settle: std::time::Duration) -> bool {
        match self.deadline {
            Some(deadline) if !self.state.is_terminal() => time::Duration::try_from(settle)
                .ok()
                .and_then(|settle| deadline.checked_add(settle))
                .is_some_and(|due| now >= due),
            _ => self.idle(now) >= settle,
        }
    }

    /// The service whose step a saga that is not ended waits for: `ride` (to accept the
    /// request, or to confirm it once a driver and a hold are there), then `fraud`, `driver`,
    /// `payment`; none once confirmed (the driver and the rider act next) or ended.
    pub fn waiting_on(&self) -> Option<&'static str> {
        match self.state {
            SagaState::Pending => Some("ride"),
            SagaState::Ride(RideState::Requested) if !self.fraud_cleared => Some("fraud"),
            SagaState::Ride(RideState::Requested) if self.driver_id.is_none() => Some("driver"),
            SagaState::Ride(RideState::Requested) if self.holds.is_empty() => Some("payment"),
            SagaState::Ride(RideState::Requested) => Some("ride"),
            _ => None,
        }
    }

    /// Not ended and overdue: what `audit` reports and `saga list --state stuck` lists.
    pub fn is_stuck(&self, now: OffsetDateTime, settle: std::time::Duration) -> bool {
        !self.state.is_terminal() && self.overdue(now, settle)
    }

    /// True once every step taken for a ride that did not complete has been undone: an
    /// assigned driver released and every hold voided (or settled by a capture: a no-show fee).
    pub fn compensated(&self) -> bool {
        let driver_free = self.driver_id.is_none() || self.driver_released;
        let holds_done = self.holds.iter().all(|h| h.voided || h.captures > 0);
        driver_free && holds_done
    }

    /// True once a completed ride's payment is final: captured, or given up on.
    pub fn payment_settled(&self) -> bool {
        self.holds.iter().any(|h| h.captures > 0) || self.capture_failed.is_some()
    }

    /// Applies one message of this ride.
    pub fn apply(&mut self, step: &Step) {
        if self.steps == 0 {
            self.first_seq = step.seq;
            self.first_at = Some(step.time);
        }
        self.steps += 1;
        self.last_seq = step.seq;
        self.last_at = Some(step.time);
        match &step.envelope.message {
            Message::RequestRide(m) => {
                self.rider_id.get_or_insert_with(|| m.rider_id.to_string());
                if self.state == SagaState::Unknown {
                    self.state = SagaState::Pending;
                }
            }
            Message::RideRequested(m) => {
                self.rider_id = Some(m.rider_id.to_string());
                self.estimated_fare_cents = Some(m.estimated_fare_cents);
                self.pickup = Some(m.pickup);
                self.dropoff = Some(m.dropoff);
                if matches!(self.state, SagaState::Unknown | SagaState::Pending) {
                    self.state = SagaState::Ride(RideState::Requested);
                    self.deadline = Some(m.expires_at.unwrap_or(m.match_deadline).0);
                }
            }
            Message::FraudCleared(_) => self.fraud_cleared = true,
            Message::FraudFlagged(m) => {
                self.flagged = true;
                self.reason.get_or_insert_with(|| m.reasons.join(", "));
            }
            Message::DriverAssigned(m) => {
                self.driver_id = Some(m.driver_id.to_string());
                self.driver_name = Some(m.driver_name.clone());
                self.driver_released = false;
            }
            Message::DriverReleased(_) => self.driver_released = true,
            Message::PaymentAuthorized(m) => {
                self.held_cents += m.amount_cents;
                self.holds.push(Hold {
                    hold_id: m.hold_id.clone(),
                    authorized_cents: m.amount_cents,
                    captured_cents: 0,
                    captures: 0,
                    voided: false,
                });
            }
            Message::PaymentCaptured(m) => {
                self.captured_cents += m.amount_cents;
                if let Some(e) = &m.earnings {
                    self.driver_earned_cents += e.driver_cents;
                    self.commission_cents += e.commission_cents;
                    self.ledger_cents += e.driver_cents + e.commission_cents;
                    self.earning_driver = Some(e.driver_id.to_string());
                }
                let hold = self.hold_mut(&m.hold_id);
                hold.captured_cents += m.amount_cents;
                hold.captures += 1;
            }
            Message::PaymentVoided(m) => {
                self.voided_cents += m.amount_cents;
                self.hold_mut(&m.hold_id).voided = true;
            }
            Message::PaymentCaptureFailed(m) => self.capture_failed = Some(m.error.clone()),
            Message::PaymentRefunded(m) => {
                self.refunded_cents += m.amount_cents;
                if let Some(r) = &m.reversal {
                    self.driver_reversed_cents += r.driver_cents;
                    self.commission_reversed_cents += r.commission_cents;
                    self.ledger_reversed_cents += r.driver_cents + r.commission_cents;
                }
                self.refunds.push(RefundNote {
                    refund_id: m.refund_id.to_string(),
                    amount_cents: Some(m.amount_cents),
                    outcome: "refunded".into(),
                    reason: m.reason.clone(),
                    reversed_driver: m.reversal.as_ref().map(|r| r.driver_id.to_string()),
                });
            }
            Message::PaymentRefundRefused(m) => self.refunds.push(RefundNote {
                refund_id: m.refund_id.to_string(),
                amount_cents: m.amount_cents,
                outcome: m.code.clone(),
                reason: Some(m.reason.clone()),
                reversed_driver: None,
            }),
            Message::RideConfirmed(m) => {
                self.driver_id = Some(m.driver_id.to_string());
                self.estimated_fare_cents = Some(m.estimated_fare_cents);
                self.advance(SagaState::Ride(RideState::Confirmed), step);
                if self.state == SagaState::Ride(RideState::Confirmed) {
                    self.deadline = m.pickup_deadline.map(|t| t.0);
                }
            }
            Message::DriverArrived(m) => {
                self.driver_arrived = true;
                if self.state == SagaState::Ride(RideState::Confirmed) {
                    self.deadline = Some(m.rider_wait_deadline.0);
                }
            }
            Message::RideStarted(_) => {
                self.started_at.get_or_insert(step.time);
                self.advance(SagaState::Ride(RideState::Started), step);
                if self.state == SagaState::Ride(RideState::Started) {
                    self.deadline = step.time.checked_add(LONGEST_RIDE);
                }
            }
            Message::RideCompleted(m) => {
                self.fare_cents = Some(m.fare_cents);
                self.distance_km = Some(m.distance_km);
                self.distance_source = Some(m.distance_source.as_str().to_owned());
                self.route_points = Some(m.route_points);
                self.fare = m.fare;
                self.finish(SagaState::Ride(RideState::Completed), None);
            }
            Message::RideCancelled(m) => {
                let state = if m.reason == CancelReason::Expired {
                    SagaState::Expired
                } else {
                    SagaState::Ride(RideState::Cancelled)
                };
                self.finish(state, Some(m.reason.as_str().to_owned()));
            }
            Message::RideRejected(m) => {
                self.finish(
                    SagaState::Ride(RideState::Rejected),
                    Some(m.reasons.join(", ")),
                );
            }
            Message::RideCommandRefused(m) => self.refusals.push(Refusal {
                command: m.command.clone(),
                reason: m.reason.clone(),
                causation_id: step.envelope.causation_id.as_ref().map(ToString::to_string),
            }),
            Message::NotificationSent(m) => self.notifications.push(Notice {
                kind: m.kind,
                recipient: m.recipient,
                refund_id: m.refund_id.as_ref().map(ToString::to_string),
            }),
            _ => {}
        }
    }

    fn hold_mut(&mut self, hold_id: &str) -> &mut Hold {
        let index = match self.holds.iter().position(|h| h.hold_id == hold_id) {
            Some(index) => index,
            None => {
                // A capture or void of a hold whose authorization is not in the log.
                self.holds.push(Hold {
                    hold_id: hold_id.to_owned(),
                    authorized_cents: 0,
                    captured_cents: 0,
                    captures: 0,
                    voided: false,
                });
                self.holds.len() - 1
            }
        };
        &mut self.holds[index]
    }

    fn advance(&mut self, state: SagaState, step: &Step) {
        if self.state.is_terminal() {
            self.late_transitions
                .push(format!("{} after {}", step.kind(), self.state));
        } else {
            self.state = state;
        }
    }

    fn finish(&mut self, state: SagaState, reason: Option<String>) {
        let label = match &reason {
            Some(reason) if state != SagaState::Ride(RideState::Rejected) => {
                format!("{state} ({reason})")
            }
            _ => state.to_string(),
        };
        self.terminal_events.push(label);
        if !self.state.is_terminal() {
            self.state = state;
            self.deadline = None;
            if state == SagaState::Ride(RideState::Completed) {
                self.reason = None;
            } else if reason.is_some() {
                self.reason = reason;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod fixtures;

#[cfg(test)]
mod tests {
    use super::fixtures::Log;
    use super::*;
    use ridesaga_schemas::*;

    #[test]
    fn saga_states_are_named_as_the_ride_service_names_them() {
        for state in SagaState::NAMED {
            assert_eq!(SagaState::parse(state.as_str()), Some(state));
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, serde_json::json!(state.as_str()));
        }
        for state in RideState::ALL {
            assert_eq!(SagaState::Ride(state).as_str(), state.as_str());
        }
        assert_eq!(SagaState::parse("unknown"), None);
        let terminal: Vec<&str> = SagaState::NAMED
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(SagaState::as_str)
            .collect();
        assert_eq!(terminal, ["completed", "cancelled", "rejected", "expired"]);
        assert!(!SagaState::Unknown.is_terminal());
    }

    #[test]
    fn a_happy_ride_folds_to_completed_with_its_capture() {
        let mut log = Log::new("r_1");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        assert_eq!(log.saga().state, SagaState::Ride(RideState::Confirmed));
        log.completed("d_1", 1100).captured(1100);
        let saga = log.saga();
        assert_eq!(saga.state, SagaState::Ride(RideState::Completed));
        assert_eq!(saga.driver_id.as_deref(), Some("d_1"));
        assert_eq!((saga.held_cents, saga.captured_cents), (1200, 1100));
        assert_eq!(saga.fare_cents, Some(1100));
        assert!(saga.payment_settled());
        assert_eq!(saga.steps, 9);
    }

    const SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

    fn confirmed_log() -> Log {
        let mut log = Log::new("r_6");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log
    }

    #[test]
    fn a_confirmed_ride_is_stuck_only_past_its_pickup_deadline() {
        let log = confirmed_log();
        let saga = log.saga();
        let confirmed_at = saga.last_at.unwrap();
        let deadline = confirmed_at + time::Duration::minutes(20);
        assert_eq!(saga.deadline, Some(deadline));
        // Idle for 5 minutes, long past any fixed settle time, but within the deadline.
        assert!(!saga.is_stuck(confirmed_at + time::Duration::minutes(5), SETTLE));
        assert!(!saga.is_stuck(deadline + time::Duration::seconds(29), SETTLE));
        assert!(saga.is_stuck(deadline + time::Duration::seconds(30), SETTLE));
    }

    #[test]
    fn an_arrival_moves_the_deadline_to_the_end_of_the_rider_wait() {
        let mut log = confirmed_log();
        log.arrived("d_1");
        let saga = log.saga();
        assert!(saga.driver_arrived);
        let wait_ends = saga.last_at.unwrap() + time::Duration::minutes(5);
        assert_eq!(saga.deadline, Some(wait_ends));
        assert!(!saga.is_stuck(wait_ends, SETTLE));
        assert!(saga.is_stuck(wait_ends + time::Duration::minutes(1), SETTLE));
    }

    #[test]
    fn a_started_ride_is_stuck_only_a_day_after_the_start() {
        let mut log = confirmed_log();
        log.started("d_1");
        let saga = log.saga();
        let started_at = saga.last_at.unwrap();
        assert_eq!(saga.deadline, Some(started_at + LONGEST_RIDE));
        assert!(!saga.is_stuck(started_at + time::Duration::hours(3), SETTLE));
        assert!(saga.is_stuck(started_at + time::Duration::hours(25), SETTLE));
    }

    #[test]
    fn a_requested_ride_is_stuck_past_its_expiry_and_an_ended_one_never() {
        let mut log = Log::new("r_7");
        log.requested();
        let saga = log.saga();
        let requested_at = saga.last_at.unwrap();
        assert_eq!(
            saga.deadline,
            Some(requested_at + time::Duration::seconds(45))
        );
        assert!(!saga.is_stuck(requested_at + time::Duration::seconds(60), SETTLE));
        assert!(saga.is_stuck(requested_at + time::Duration::seconds(75), SETTLE));

        log.cancelled(CancelReason::Expired, None);
        let saga = log.saga();
        assert_eq!(saga.deadline, None);
        let later = requested_at + time::Duration::hours(1);
        assert!(!saga.is_stuck(later, SETTLE));
        // Its compensations are checked once it is idle for the settle time.
        assert!(saga.overdue(later, SETTLE));
        assert!(!saga.overdue(saga.last_at.unwrap(), SETTLE));
    }

    #[test]
    fn without_deadlines_idleness_decides() {
        let mut log = Log::new("r_8");
        log.requested();
        log.steps.truncate(1);
        let saga = log.saga();
        assert_eq!((saga.state, saga.deadline), (SagaState::Pending, None));
        let at = saga.last_at.unwrap();
        assert!(!saga.is_stuck(at + time::Duration::seconds(29), SETTLE));
        assert!(saga.is_stuck(at + time::Duration::seconds(30), SETTLE));
    }

    #[test]
    fn a_command_alone_is_pending() {
        let mut log = Log::new("r_1");
        log.requested();
        log.steps.truncate(1);
        assert_eq!(log.saga().state, SagaState::Pending);
    }

    #[test]
    fn a_declined_card_cancels_and_needs_the_driver_released() {
        let mut log = Log::new("r_2");
        log.requested().cleared().assigned("d_1");
        log.push(
            PaymentDeclined {
                rider_id: Log::rider(),
                code: "card_declined".into(),
                message: "declined".into(),
            },
            "payment",
        );
        log.cancelled(CancelReason::PaymentDeclined, Some("d_1"));
        let saga = log.saga();
        assert_eq!(saga.label(), "cancelled (payment_declined)");
        assert!(!saga.compensated());
        log.released("d_1");
        assert!(log.saga().compensated());
    }

    #[test]
    fn an_expiry_is_its_own_state() {
        let mut log = Log::new("r_3");
        log.requested().cancelled(CancelReason::Expired, None);
        let saga = log.saga();
        assert_eq!(saga.state, SagaState::Expired);
        assert_eq!(saga.reason.as_deref(), Some("expired"));
    }

    #[test]
    fn the_first_terminal_event_wins_and_later_ones_are_recorded() {
        let mut log = Log::new("r_4");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.cancelled(CancelReason::Rider, Some("d_1"));
        log.completed("d_1", 1200);
        let saga = log.saga();
        assert_eq!(saga.state, SagaState::Ride(RideState::Cancelled));
        assert_eq!(saga.terminal_events.len(), 2);
        assert_eq!(
            saga.late_transitions,
            vec!["evt.ride.started after cancelled"]
        );
    }

    #[test]
    fn a_flagged_request_is_rejected_with_its_reasons() {
        let mut log = Log::new("r_5");
        log.requested();
        log.push(
            FraudFlagged {
                rider_id: Log::rider(),
                score: 100,
                reasons: vec!["blocked".into()],
            },
            "fraud",
        );
        log.push(
            RideRejected {
                rider_id: Log::rider(),
                score: 100,
                reasons: vec!["blocked".into()],
                detail: None,
            },
            "ride",
        );
        let saga = log.saga();
        assert!(saga.flagged);
        assert_eq!(saga.state, SagaState::Ride(RideState::Rejected));
        assert_eq!(saga.reason.as_deref(), Some("blocked"));
        assert!(saga.compensated());
    }
}
