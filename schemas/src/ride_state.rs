//! Where a ride is in its saga: the states of the ride service, with the names it stores and
//! every view of a ride (`ridectl`, the bench, the saga metrics) shows.

use serde::{Deserialize, Serialize};

/// A ride's state. `requested` until the ride has both a driver and a payment hold, then
/// `confirmed`, `started` and `completed`; `cancelled` (with a
/// [`CancelReason`](crate::CancelReason)) or `rejected` (a refused request) end it early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideState {
    Requested,
    Confirmed,
    Started,
    Completed,
    Cancelled,
    Rejected,
}

impl RideState {
    /// Every state, in the order of a ride's life.
    pub const ALL: [RideState; 6] = [
        RideState::Requested,
        RideState::Confirmed,
        RideState::Started,
        RideState::Completed,
        RideState::Cancelled,
        RideState::Rejected,
    ];

    /// The states a ride never leaves.
    pub const TERMINAL: [RideState; 3] = [
        RideState::Completed,
        RideState::Cancelled,
        RideState::Rejected,
    ];

    /// Its name: `requested`, `confirmed`, `started`, `completed`, `cancelled`, `rejected`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RideState::Requested => "requested",
            RideState::Confirmed => "confirmed",
            RideState::Started => "started",
            RideState::Completed => "completed",
            RideState::Cancelled => "cancelled",
            RideState::Rejected => "rejected",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<RideState> {
        RideState::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the ride is over: nothing changes it any more.
    pub fn is_terminal(self) -> bool {
        RideState::TERMINAL.contains(&self)
    }
}

impl std::fmt::Display for RideState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_and_match_serde() {
        for state in RideState::ALL {
            assert_eq!(RideState::parse(state.as_str()), Some(state));
            assert_eq!(state.to_string(), state.as_str());
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<RideState>(&json).unwrap(), state);
        }
        assert_eq!(RideState::parse("expired"), None);
        assert_eq!(RideState::parse("Completed"), None);
        assert_eq!(RideState::parse(""), None);
    }

    #[test]
    fn completed_cancelled_and_rejected_are_the_terminal_states() {
        let terminal: Vec<&str> = RideState::ALL
            .into_iter()
            .filter(|s| s.is_terminal())
            .map(RideState::as_str)
            .collect();
        assert_eq!(terminal, ["completed", "cancelled", "rejected"]);
    }
}
