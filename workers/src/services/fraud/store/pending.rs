//! What the inputs of a fraud batch added, kept in memory until the batch commits: laid over
//! the stored slices of the inputs after them, and written by the round trip that commits it.

use std::collections::BTreeMap;

use ridesaga_schemas::{RideId, RiderId, Timestamp};

use super::super::domain::{FraudRules, State};
use super::{BlockRow, DeclineRow, RequestRow, writes};
use crate::runtime::{BatchWrite, HandleError, Kind};

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

    /// The batch's writes on `kind`, for the round trip that commits it: one statement per
    /// table, each of whose rows must be new (requests and declines) or changes one entry
    /// (blocklist).
    pub fn writes(&self, kind: Kind) -> Result<Vec<BatchWrite>, HandleError> {
        let added = &self.added;
        let blocks: Vec<BlockRow<'_>> = added
            .blocks
            .iter()
            .map(|(rider_id, b)| BlockRow {
                rider_id: rider_id.as_str(),
                blocked: b.blocked,
                reason: b.reason.as_deref(),
                changed_at_ms: b.at,
            })
            .collect();
        let mut requests = Vec::with_capacity(added.requests.len());
        for (ride_id, scored) in &added.requests {
            let reasons = serde_json::to_string(&scored.assessment.reasons)
                .map_err(|e| HandleError::Permanent(format!("fraud reasons: {e}")))?;
            requests.push(RequestRow {
                ride_id: ride_id.as_str(),
                rider_id: scored.rider_id.as_str(),
                requested_at_ms: scored.at,
                score: scored.assessment.score,
                flagged: scored.assessment.flagged,
                reasons,
                scored_at_ms: self.scored_at.get(ride_id).copied().unwrap_or(scored.at),
            });
        }
        let declines: Vec<DeclineRow<'_>> = added
            .declines
            .iter()
            .map(|(ride_id, d)| DeclineRow {
                ride_id: ride_id.as_str(),
                rider_id: d.rider_id.as_str(),
                declined_at_ms: d.at,
            })
            .collect();
        writes(kind, &blocks, &requests, &declines)
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
