//! When a saga comes to rest after a command (`--wait`), and what `--expect` accepts.

use std::str::FromStr;

use ridesaga_schemas::{INVALID_REQUEST, MessageId, MessageKind, RideState};

use super::{Refusal, Saga, SagaState};

/// What a ride command waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    /// `ride request`: confirmed, or cancelled/rejected with every step undone.
    Request,
    /// `ride cancel`: ended, with every step undone.
    Cancel,
    /// `ride arrive`: the driver's arrival recorded.
    Arrive,
    /// `ride start`: started.
    Start,
    /// `ride complete`: completed with the payment captured (or given up on).
    Complete,
}

impl Goal {
    /// The command this goal follows.
    pub fn command(self) -> MessageKind {
        match self {
            Goal::Request => MessageKind::RequestRide,
            Goal::Cancel => MessageKind::CancelRide,
            Goal::Arrive => MessageKind::ArriveRide,
            Goal::Start => MessageKind::StartRide,
            Goal::Complete => MessageKind::CompleteRide,
        }
    }
}

/// How a saga came to rest after a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Rest {
    /// The saga reached a resting state.
    State,
    /// The ride service refused the command.
    Refused(Refusal),
}

/// Whether `saga` is at rest for `goal`, given the id of the command that was sent.
pub fn at_rest(saga: &Saga, goal: Goal, command_id: &MessageId) -> Option<Rest> {
    let refused = saga.refusals.iter().find(|r| match &r.causation_id {
        Some(cause) => cause == command_id.as_str(),
        None => r.command == goal.command().as_str(),
    });
    if let Some(refusal) = refused {
        return Some(Rest::Refused(refusal.clone()));
    }
    // A request that broke the ride service's rules ends rejected, and the refusal that says
    // why follows in the same batch: the request is answered by the refusal.
    if goal == Goal::Request
        && saga.state == SagaState::Ride(RideState::Rejected)
        && saga.reason.as_deref() == Some(INVALID_REQUEST)
    {
        return None;
    }
    let ended = match saga.state {
        SagaState::Ride(RideState::Completed) => saga.payment_settled(),
        SagaState::Ride(RideState::Cancelled) | SagaState::Expired => saga.compensated(),
        SagaState::Ride(RideState::Rejected) => true,
        _ => false,
    };
    let reached = match goal {
        Goal::Request => matches!(
            saga.state,
            SagaState::Ride(RideState::Confirmed | RideState::Started)
        ),
        Goal::Start => saga.state == SagaState::Ride(RideState::Started),
        Goal::Arrive => saga.driver_arrived,
        Goal::Cancel | Goal::Complete => false,
    };
    (reached || ended).then_some(Rest::State)
}

/// `--expect STATE[:REASON]`, e.g. `confirmed`, `cancelled:no_driver`, `refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// A ride state, or `None` for `refused`.
    pub state: Option<SagaState>,
    pub reason: Option<String>,
}

impl FromStr for Expectation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, reason) = match text.split_once(':') {
            Some((name, reason)) if !reason.is_empty() => (name, Some(reason.to_owned())),
            Some(_) => return Err(format!("{text:?} has an empty reason after ':'")),
            None => (text, None),
        };
        if name == "refused" {
            return Ok(Expectation {
                state: None,
                reason,
            });
        }
        match SagaState::parse(name) {
            Some(state) => Ok(Expectation {
                state: Some(state),
                reason,
            }),
            None => Err(format!(
                "unknown state {name:?}; expected one of {}, refused (optionally :REASON, e.g. \
                 cancelled:no_driver)",
                SagaState::NAMED
                    .iter()
                    .filter(|s| **s != SagaState::Pending)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = self.state.map_or("refused", SagaState::as_str);
        match &self.reason {
            Some(reason) => write!(f, "{name}:{reason}"),
            None => f.write_str(name),
        }
    }
}

impl Expectation {
    /// Whether the outcome matches: the state, and the reason when one is given.
    pub fn matches(&self, saga: &Saga, rest: &Rest) -> bool {
        match (self.state, rest) {
            (None, Rest::Refused(refusal)) => self
                .reason
                .as_ref()
                .is_none_or(|r| refusal.reason.contains(r.as_str())),
            (Some(state), Rest::State) => {
                state == saga.state
                    && self.reason.as_ref().is_none_or(|want| {
                        saga.reason
                            .as_deref()
                            .is_some_and(|have| have.split(", ").any(|r| r == want))
                    })
            }
            _ => false,
        }
    }
}

/// What the outcome looks like in messages: `cancelled (payment_declined)`, `refused (...)`.
pub fn outcome_label(saga: &Saga, rest: &Rest) -> String {
    match rest {
        Rest::State => saga.label(),
        Rest::Refused(r) => format!(
            "refused ({}: {}; ride is {})",
            r.command,
            r.reason,
            saga.label()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::Log;
    use super::*;
    use ridesaga_schemas::{CancelReason, MessageId, RideCommandRefused, RideRejected};

    fn any_id() -> MessageId {
        MessageId::parse("m_x").unwrap()
    }

    #[test]
    fn a_request_rests_at_confirmed() {
        let mut log = Log::new("r_1");
        log.requested().cleared().assigned("d_1");
        assert_eq!(at_rest(&log.saga(), Goal::Request, &any_id()), None);
        log.authorized(1200).confirmed("d_1");
        assert_eq!(
            at_rest(&log.saga(), Goal::Request, &any_id()),
            Some(Rest::State)
        );
    }

    #[test]
    fn a_cancellation_rests_only_once_everything_is_undone() {
        let mut log = Log::new("r_1");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.cancelled(CancelReason::Rider, Some("d_1"));
        assert_eq!(at_rest(&log.saga(), Goal::Cancel, &any_id()), None);
        log.released("d_1");
        assert_eq!(at_rest(&log.saga(), Goal::Cancel, &any_id()), None);
        log.voided(1200);
        assert_eq!(
            at_rest(&log.saga(), Goal::Cancel, &any_id()),
            Some(Rest::State)
        );
    }

    #[test]
    fn a_completion_rests_once_the_fare_is_captured() {
        let mut log = Log::new("r_1");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        log.completed("d_1", 1150);
        assert_eq!(at_rest(&log.saga(), Goal::Complete, &any_id()), None);
        log.captured(1150);
        assert_eq!(
            at_rest(&log.saga(), Goal::Complete, &any_id()),
            Some(Rest::State)
        );
    }

    #[test]
    fn an_arrival_rests_once_the_saga_shows_it_or_the_command_is_refused() {
        let mut log = Log::new("r_1");
        log.requested()
            .cleared()
            .assigned("d_1")
            .authorized(1200)
            .confirmed("d_1");
        assert_eq!(at_rest(&log.saga(), Goal::Arrive, &any_id()), None);
        log.arrived("d_1");
        assert_eq!(
            at_rest(&log.saga(), Goal::Arrive, &any_id()),
            Some(Rest::State)
        );
        assert!(
            "confirmed"
                .parse::<Expectation>()
                .unwrap()
                .matches(&log.saga(), &Rest::State)
        );

        let mut log = Log::new("r_2");
        log.requested();
        log.push(
            RideCommandRefused {
                command: "cmd.ride.arrive".into(),
                reason: "the ride is requested".into(),
            },
            "ride",
        );
        let rest = at_rest(&log.saga(), Goal::Arrive, &any_id()).unwrap();
        assert!(matches!(rest, Rest::Refused(ref r) if r.command == "cmd.ride.arrive"));
    }

    #[test]
    fn an_invalid_request_rests_refused_once_the_refusal_follows_its_rejection() {
        let mut log = Log::new("r_1");
        log.requested();
        log.steps.truncate(1);
        let why = "the trip is 500.1 km; at most 200 km are accepted";
        log.push(
            RideRejected {
                rider_id: Log::rider(),
                score: 0,
                reasons: vec![INVALID_REQUEST.into()],
                detail: Some(why.into()),
            },
            "ride",
        );
        assert_eq!(at_rest(&log.saga(), Goal::Request, &any_id()), None);
        log.push(
            RideCommandRefused {
                command: "cmd.ride.request".into(),
                reason: why.into(),
            },
            "ride",
        );
        let rest = at_rest(&log.saga(), Goal::Request, &any_id()).unwrap();
        assert!(matches!(rest, Rest::Refused(ref r) if r.reason == why));
        assert_eq!(
            outcome_label(&log.saga(), &rest),
            format!("refused (cmd.ride.request: {why}; ride is rejected)")
        );
    }

    #[test]
    fn a_refusal_of_this_command_ends_the_wait() {
        let mut log = Log::new("r_1");
        log.requested();
        log.push(
            RideCommandRefused {
                command: "cmd.ride.start".into(),
                reason: "not confirmed".into(),
            },
            "ride",
        );
        let rest = at_rest(&log.saga(), Goal::Start, &any_id()).unwrap();
        assert!(matches!(rest, Rest::Refused(ref r) if r.reason == "not confirmed"));
        assert!(
            "refused"
                .parse::<Expectation>()
                .unwrap()
                .matches(&log.saga(), &rest)
        );
        assert!(
            !"started"
                .parse::<Expectation>()
                .unwrap()
                .matches(&log.saga(), &rest)
        );
    }

    #[test]
    fn expectations_parse_states_and_reasons() {
        let e: Expectation = "cancelled:no_driver".parse().unwrap();
        assert_eq!(e.state, Some(SagaState::Ride(RideState::Cancelled)));
        assert_eq!(e.reason.as_deref(), Some("no_driver"));
        assert_eq!(e.to_string(), "cancelled:no_driver");
        assert!(
            "flying"
                .parse::<Expectation>()
                .unwrap_err()
                .contains("unknown state")
        );
        assert!("cancelled:".parse::<Expectation>().is_err());
    }

    #[test]
    fn a_reason_must_match_when_given() {
        let mut log = Log::new("r_1");
        log.requested().cancelled(CancelReason::NoDriver, None);
        let saga = log.saga();
        let want = |s: &str| {
            s.parse::<Expectation>()
                .unwrap()
                .matches(&saga, &Rest::State)
        };
        assert!(want("cancelled"));
        assert!(want("cancelled:no_driver"));
        assert!(!want("cancelled:payment_declined"));
        assert!(!want("confirmed"));
        assert_eq!(outcome_label(&saga, &Rest::State), "cancelled (no_driver)");
    }
}
