//! What the inputs of a fraud batch added, kept in memory until the batch commits: laid over
//! the stored slices of the inputs after them, and written by the round trip that commits it.

use std::collections::BTreeMap;

use ridesaga_schemas::{RideId, RiderId, Timestamp};

use super::super::domain::{FraudRules, State};
use crate::runtime::{BatchWrite, HandleError};

/// What the inputs of a batch added so far (scored requests, declines, blocklist entries),
/// kept in memory: laid over what is stored for the inputs after them, and written by the
/// round trip that commits the batch ([`Pending::writes`]).
#[derive(Debug, Default)]
pub struct Pending {
    pub(super) added: State,
    /// When each added request was scored (the input's time).
    scored_at: BTreeMap<RideId, i64>,
}

impl Pending {
    /// Keeps what an input added to `after` (relative to `before`, as it was loaded), applied
    /// at `now`. Requests and declines are only ever added; a blocklist entry changes.
    pub fn keep(&mut self, before: &State, after: &State, now: Timestamp) {
        for (rider_id, block) in &after.blocks {
            if before.blocks.get(rider_id) != Some(block) {
                self.added.blocks.insert(rider_id.clone(), block.clone());
            }
        }
        for (ride_id, scored) in &after.requests {
            if !before.requests.contains_key(ride_id) {
                self.added.requests.insert(ride_id.clone(), scored.clone());
                self.scored_at.insert(ride_id.clone(), now.unix_millis());
            }
        }
        for (ride_id, decline) in &after.declines {
            if !before.declines.contains_key(ride_id) {
                self.added.declines.insert(ride_id.clone(), decline.clone());
            }
        }
    }

    /// Lays what the batch added about `rider_id` over a request's slice as loaded: its
    /// blocklist entry, and its requests and declines within the windows up to `at`, as many
    /// as the statement would read (the most recent), had the batch been saved.
    pub(super) fn lay_over(
        &self,
        state: &mut State,
        rider_id: &RiderId,
        at: i64,
        rules: &FraudRules,
    ) {
        if let Some(block) = self.added.blocks.get(rider_id) {
            state.blocks.insert(rider_id.clone(), block.clone());
        }
        let in_window = |t: i64, window: i64| t <= at && t > at.saturating_sub(window);
        let requests = self
            .added
            .requests
            .iter()
            .filter(|(_, r)| r.rider_id == *rider_id && in_window(r.at, rules.window_ms));
        state
            .requests
            .extend(requests.map(|(id, r)| (id.clone(), r.clone())));
        keep_latest(&mut state.requests, rules.max_requests, |r| r.at);
        let declines =
            self.added.declines.iter().filter(|(_, d)| {
                d.rider_id == *rider_id && in_window(d.at, rules.decline_window_ms)
            });
        state
            .declines
            .extend(declines.map(|(id, d)| (id.clone(), d.clone())));
        keep_latest(&mut state.declines, rules.max_declines, |d| d.at);
    }

    /// The batch's writes, for the round trip that commits it: one statement per table, each
    /// of whose rows must be new (requests and declines) or changes one entry (blocklist).
    pub fn writes(&self) -> Result<Vec<BatchWrite>, HandleError> {
        let mut writes = Vec::new();
        let added = &self.added;
        if !added.blocks.is_empty() {
            let rows: Vec<_> = added
                .blocks
                .iter()
                .map(|(rider_id, b)| (rider_id.as_str(), b.blocked, b.reason.as_deref(), b.at))
                .collect();
            writes.push(BatchWrite::new(
                "INSERT INTO fraud_blocklist (rider_id, blocked, reason, changed_at_ms) \
                 SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?) \
                 WHERE true ON CONFLICT (rider_id) DO UPDATE SET blocked = excluded.blocked, \
                 reason = excluded.reason, changed_at_ms = excluded.changed_at_ms",
                &rows,
            )?);
        }
        if !added.requests.is_empty() {
            let mut rows = Vec::with_capacity(added.requests.len());
            for (ride_id, scored) in &added.requests {
                let reasons = serde_json::to_string(&scored.assessment.reasons)
                    .map_err(|e| HandleError::Permanent(format!("fraud reasons: {e}")))?;
                let scored_at = self.scored_at.get(ride_id).copied().unwrap_or(scored.at);
                rows.push((
                    ride_id.as_str(),
                    scored.rider_id.as_str(),
                    scored.at,
                    scored.assessment.score,
                    scored.assessment.flagged,
                    reasons,
                    scored_at,
                ));
            }
            writes.push(BatchWrite::new(
                "INSERT INTO fraud_requests (ride_id, rider_id, requested_at_ms, score, flagged, \
                 reasons, scored_at_ms) SELECT value ->> 0, value ->> 1, value ->> 2, \
                 value ->> 3, value ->> 4, value ->> 5, value ->> 6 FROM jsonb_each(?)",
                &rows,
            )?);
        }
        if !added.declines.is_empty() {
            let rows: Vec<_> = added
                .declines
                .iter()
                .map(|(ride_id, d)| (ride_id.as_str(), d.rider_id.as_str(), d.at))
                .collect();
            writes.push(BatchWrite::new(
                "INSERT INTO fraud_declines (ride_id, rider_id, declined_at_ms) \
                 SELECT value ->> 0, value ->> 1, value ->> 2 FROM jsonb_each(?)",
                &rows,
            )?);
        }
        Ok(writes)
    }
}

/// Keeps the `limit` entries of `map` with the latest times (ties in any order: the rules
/// only count them).
fn keep_latest<K: Ord + Clone, V>(map: &mut BTreeMap<K, V>, limit: u32, at: impl Fn(&V) -> i64) {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if map.len() <= limit {
        return;
    }
    let mut times: Vec<(i64, K)> = map.iter().map(|(k, v)| (at(v), k.clone())).collect();
    times.sort_by(|a, b| b.cmp(a));
    for (_, key) in times.into_iter().skip(limit) {
        map.remove(&key);
    }
}
