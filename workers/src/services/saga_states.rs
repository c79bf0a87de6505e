//! What ride, payment and notification share when they apply a batch whole: each keeps one
//! state per saga, keyed by the saga id (the ride id); a batch loads the states of all its
//! sagas in one statement ([`json_ids`] is that statement's parameter), applies its inputs in
//! order in memory to [`SagaStates`], and saves the states that changed.

use std::collections::HashMap;

use ridesaga_schemas::{Envelope, RideId, Timestamp};

use crate::runtime::HandleError;

/// Ride ids as the JSON array a batch's load expands (SQLite's `json_each`, PostgreSQL's
/// `jsonb_array_elements_text`).
pub(crate) fn json_ids(ride_ids: &[&str]) -> Result<String, HandleError> {
    serde_json::to_string(ride_ids).map_err(|e| HandleError::Permanent(format!("ride ids: {e}")))
}

/// A service's state of each saga one batch touches, as loaded and then as its inputs change
/// them.
#[derive(Debug)]
pub(crate) struct SagaStates<S> {
    /// A row that could not be read is kept as its error, for the input that touches it.
    states: HashMap<RideId, Result<S, HandleError>>,
    /// The rides the batch changed, in the order they first changed, and when they last did.
    changed: Vec<RideId>,
    changed_at: HashMap<RideId, Timestamp>,
}

impl<S: Default> SagaStates<S> {
    /// The states loaded for the batch; a ride missing here is one the service has not heard
    /// of, and starts from the default state.
    pub fn loaded(states: impl IntoIterator<Item = (RideId, Result<S, HandleError>)>) -> Self {
        SagaStates {
            states: states.into_iter().collect(),
            changed: Vec::new(),
            changed_at: HashMap::new(),
        }
    }

    /// The ride `envelope` is about, and its state as the batch sees it.
    pub fn of(&mut self, envelope: &Envelope) -> Result<(RideId, &mut S), HandleError> {
        let ride_id = envelope.saga_id.as_ref().ok_or_else(|| {
            HandleError::Permanent(format!("{} without a saga id", envelope.kind()))
        })?;
        let state = self
            .states
            .entry(ride_id.clone())
            .or_insert_with(|| Ok(S::default()))
            .as_mut()
            .map_err(|e| e.clone())?;
        Ok((ride_id.clone(), state))
    }

    /// The stored state of `ride_id`, if the service has heard of the ride.
    pub fn stored(&mut self, ride_id: &RideId) -> Option<Result<&mut S, HandleError>> {
        self.states
            .get_mut(ride_id)
            .map(|state| state.as_mut().map_err(|e| e.clone()))
    }

    /// Notes that the input applied at `at` changed the ride's state.
    pub fn changed_at(&mut self, ride_id: RideId, at: Timestamp) {
        if self.changed_at.insert(ride_id.clone(), at).is_none() {
            self.changed.push(ride_id);
        }
    }

    /// The rides that changed, in the order they first did, with their state and the time of
    /// their last change.
    pub fn changed(&self) -> impl Iterator<Item = (&RideId, &S, Timestamp)> {
        self.changed.iter().filter_map(|ride_id| {
            let state = self.states.get(ride_id)?.as_ref().ok()?;
            Some((ride_id, state, *self.changed_at.get(ride_id)?))
        })
    }
}
