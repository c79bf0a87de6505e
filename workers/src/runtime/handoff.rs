//! The effects a replica's transactions record, handed in memory to the replica's effect
//! executor (see `perform`) once they commit, so that the common path costs no claim.

use std::sync::Mutex;
use std::time::Duration;

use ridesaga_schemas::Timestamp;
use tokio::sync::Notify;

use super::db::NewEffects;
use super::effects::{Effect, PendingEffect};

/// How much longer than an attempt's timeout a claim lasts: the time to settle the attempt.
pub(super) const CLAIM_MARGIN: Duration = Duration::from_secs(5);

/// The effects this replica's transactions recorded, on their way to its executor.
#[derive(Debug)]
pub(super) struct Handoff {
    handed: Mutex<Vec<PendingEffect>>,
    /// Notified when effects are handed.
    pub(super) due: Notify,
    /// `RIDESAGA_EFFECT_DEADLINE`: how long after it is recorded an effect may be retried.
    deadline: Duration,
    /// How long a recorded effect stays claimed by the replica that recorded it: an attempt's
    /// timeout and the margin.
    claim: Duration,
}

impl Handoff {
    pub(super) fn new(deadline: Duration, attempt_timeout: Duration) -> Self {
        Handoff {
            handed: Mutex::new(Vec::new()),
            due: Notify::new(),
            deadline,
            claim: attempt_timeout + CLAIM_MARGIN,
        }
    }

    /// `effects` as a transaction records them: claimed by this replica.
    pub(super) fn record<'a>(&self, effects: &'a [Effect]) -> NewEffects<'a> {
        NewEffects {
            effects,
            deadline: self.deadline,
            claim: self.claim,
        }
    }

    /// Hands what a transaction at `now` recorded with [`Handoff::record`] to the executor,
    /// once it committed.
    pub(super) fn hand(&self, recorded: NewEffects<'_>, now: Timestamp) {
        if recorded.is_empty() {
            return;
        }
        let pending = recorded.pending(now);
        self.handed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(pending);
        self.due.notify_one();
    }

    pub(super) fn take(&self) -> Vec<PendingEffect> {
        std::mem::take(
            &mut *self
                .handed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}
