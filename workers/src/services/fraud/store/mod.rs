//! The fraud service's tables (`migrations/<backend>/fraud`): read the slice of state each
//! input of a batch can read (the ride's own decision or decline, the rider's blocklist entry
//! and recent history) in one statement, and write back what the batch added.
//!
//! What is shared by the backends lives here: the preload's parameter, the rows' decoding, the
//! rows the writes carry. Each backend ([`sqlite`], [`postgres`]) provides the same set of
//! statements: the preload ([`preload_sql`]), one write per table ([`Pending::writes`]) and
//! the retention's deletes ([`prune`]). What a batch added before it commits is in
//! [`pending`] ([`Pending`]).

mod pending;
mod postgres;
pub mod rides;
mod sqlite;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use ridesaga_schemas::{MessageId, RideId, RiderId, Timestamp};
use serde::Serialize;

use super::domain::{Assessment, Block, Decline, FraudRules, Input, Scored, State};
use crate::runtime::{BatchWrite, Conn, HandleError, Kind, Row};
use crate::services::rows::corrupt;
pub use pending::Pending;

/// The statement that reads the slice of every input of a batch on `kind`, in the round trip
/// that opens it. Its parameter is [`preload_parameter`]'s; its rows are tagged with the
/// message id of the input they were read for (`input_id`) and their kind (`what`), and share
/// one set of columns, each kind filling its own:
///
/// - `own`: a request's ride's decision (`fraud_requests`), if the ride was scored;
/// - `block`: the rider's blocklist entry, for a request or a (un)block command;
/// - `recent`: the rider's most recent requests within the velocity window, at most
///   `max_requests`: scored after `requests_since` and at or before `until`;
/// - `decline`: the rider's most recent declines within the decline window, at most
///   `max_declines`: after `declines_since` and at or before `until`;
/// - `own_decline`: a decline's ride's decline, if there is one.
///
/// Columns: `input_id`, `what` (text), `ride_id`, `rider_id` (text), `requested_at_ms`
/// (integer), `score` (integer), `flagged` (boolean), `reasons` (text), `declined_at_ms`
/// (integer), `blocked` (boolean), `reason` (text), `changed_at_ms` (integer).
pub fn preload_sql(kind: Kind, rules: &FraudRules) -> String {
    match kind {
        Kind::Sqlite => sqlite::preload_sql(rules),
        Kind::Postgres => postgres::preload_sql(rules),
    }
}

/// One input's entry in [`preload_parameter`], positional as the statements read it:
/// `[input_id, ride, rider, requests_since, until, declines_since, declined_ride]`. A request
/// fills all but `declined_ride`; a decline only `declined_ride`; a (un)block command only
/// `rider`. A missing field is JSON `null`, which matches no row.
type Entry<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<&'a str>,
);

/// The parameter of [`preload_sql`]: one entry ([`Entry`]) per input, with its message id,
/// and for a request its ride, its rider and the windows up to the request's time.
pub fn preload_parameter(inputs: &[(&MessageId, Input)], rules: &FraudRules) -> String {
    let entries: Vec<Entry<'_>> = inputs
        .iter()
        .map(|(id, input)| match input {
            Input::Requested {
                ride_id,
                rider_id,
                at,
                ..
            } => (
                id.as_str(),
                Some(ride_id.as_str()),
                Some(rider_id.as_str()),
                Some(at.saturating_sub(rules.window_ms)),
                Some(*at),
                Some(at.saturating_sub(rules.decline_window_ms)),
                None,
            ),
            Input::Declined { ride_id, .. } => (
                id.as_str(),
                None,
                None,
                None,
                None,
                None,
                Some(ride_id.as_str()),
            ),
            Input::Block { rider_id, .. } | Input::Unblock { rider_id, .. } => (
                id.as_str(),
                None,
                Some(rider_id.as_str()),
                None,
                None,
                None,
                None,
            ),
        })
        .collect();
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
}

/// The rows of [`preload_sql`], by the message id of the input they were read for.
#[derive(Debug, Default)]
pub struct Preloaded(HashMap<String, Vec<Row>>);

impl Preloaded {
    pub fn new(rows: Vec<Row>) -> Result<Self, HandleError> {
        let mut by_input: HashMap<String, Vec<Row>> = HashMap::new();
        for row in rows {
            let id = row.get::<String>("input_id")?;
            by_input.entry(id).or_default().push(row);
        }
        Ok(Preloaded(by_input))
    }

    /// The rows read for the input with message id `id`: none if nothing is stored about it.
    pub fn of(&self, id: &MessageId) -> &[Row] {
        self.0.get(id.as_str()).map_or(&[], Vec::as_slice)
    }
}

/// What `input` can read, as the batch in `pending` has left it: for a request, the ride's
/// decision if there is one, else the rider's blocklist entry and as much of the rider's
/// recent requests and declines as the rules can count (a rule only asks whether a threshold
/// is reached); for a decline, the ride's decline; for a (un)block command, the rider's entry.
/// What is stored comes from `preloaded`, the input's rows of the batch's [`preload_sql`], run
/// before any of its inputs was applied, as the tables still are (the batch writes when it
/// commits); what the inputs before it added comes from `pending`.
pub fn load_for_input(
    input: &Input,
    rules: &FraudRules,
    pending: &Pending,
    preloaded: &[Row],
) -> Result<State, HandleError> {
    let mut state = State::default();
    let added = &pending.added;
    match input {
        Input::Requested { ride_id, .. } if added.requests.contains_key(ride_id) => {
            state
                .requests
                .insert(ride_id.clone(), added.requests[ride_id].clone());
        }
        Input::Requested {
            ride_id,
            rider_id,
            at,
            ..
        } => {
            read_slice(&mut state, preloaded)?;
            if !state.requests.contains_key(ride_id) {
                pending.lay_over(&mut state, rider_id, *at, rules);
            }
        }
        Input::Declined { ride_id, .. } if added.declines.contains_key(ride_id) => {
            state
                .declines
                .insert(ride_id.clone(), added.declines[ride_id].clone());
        }
        Input::Block { rider_id, .. } | Input::Unblock { rider_id, .. }
            if added.blocks.contains_key(rider_id) =>
        {
            state
                .blocks
                .insert(rider_id.clone(), added.blocks[rider_id].clone());
        }
        Input::Declined { .. } | Input::Block { .. } | Input::Unblock { .. } => {
            read_slice(&mut state, preloaded)?;
        }
    }
    Ok(state)
}

/// An input's slice from its rows: a request's decision if there is one (then nothing else),
/// else every row, each into its table.
fn read_slice(state: &mut State, rows: &[Row]) -> Result<(), HandleError> {
    let mut tagged = Vec::with_capacity(rows.len());
    for row in rows {
        tagged.push((row.get::<String>("what")?, row));
    }
    if let Some(own) = tagged.iter().find(|(what, _)| what == "own") {
        tagged = vec![own.clone()];
    }
    for (what, row) in tagged {
        match what.as_str() {
            "own" | "recent" => {
                let (id, scored) = scored_from_row(row)?;
                state.requests.insert(id, scored);
            }
            "block" => {
                let (rider_id, block) = block_from_row(row)?;
                state.blocks.insert(rider_id, block);
            }
            "decline" | "own_decline" => {
                let (id, decline) = decline_from_row(row)?;
                state.declines.insert(id, decline);
            }
            other => return Err(corrupt("preload", format!("unknown row kind {other:?}")).into()),
        }
    }
    Ok(())
}

/// Deletes up to `limit` requests scored, and up to `limit` declines that happened, before
/// `before`; returns how many.
pub async fn prune(conn: &mut Conn<'_>, before: Timestamp, limit: i64) -> Result<u64, HandleError> {
    let before = before.unix_millis();
    let deleted = match conn {
        Conn::Sqlite(c) => sqlite::prune(c, before, limit).await?,
        Conn::Postgres(c) => postgres::prune(c, before, limit).await?,
    };
    Ok(deleted)
}

/// A blocklist entry to store (insert or replace), as the writes' JSON carries it.
#[derive(Debug, Serialize)]
struct BlockRow<'a> {
    rider_id: &'a str,
    blocked: bool,
    reason: Option<&'a str>,
    changed_at_ms: i64,
}

/// A scored request to insert; `reasons` is the JSON array of the reasons.
#[derive(Debug, Serialize)]
struct RequestRow<'a> {
    ride_id: &'a str,
    rider_id: &'a str,
    requested_at_ms: i64,
    score: u32,
    flagged: bool,
    reasons: String,
    scored_at_ms: i64,
}

/// A decline to insert.
#[derive(Debug, Serialize)]
struct DeclineRow<'a> {
    ride_id: &'a str,
    rider_id: &'a str,
    declined_at_ms: i64,
}

/// What a batch writes, one statement per table that has rows: blocklist entries stored
/// whatever was there, requests and declines inserted (each one new).
fn writes(
    kind: Kind,
    blocks: &[BlockRow<'_>],
    requests: &[RequestRow<'_>],
    declines: &[DeclineRow<'_>],
) -> Result<Vec<BatchWrite>, HandleError> {
    let mut writes = Vec::new();
    if !blocks.is_empty() {
        writes.push(match kind {
            Kind::Sqlite => sqlite::save_blocks(blocks)?,
            Kind::Postgres => postgres::save_blocks(blocks)?,
        });
    }
    if !requests.is_empty() {
        writes.push(match kind {
            Kind::Sqlite => sqlite::insert_requests(requests)?,
            Kind::Postgres => postgres::insert_requests(requests)?,
        });
    }
    if !declines.is_empty() {
        writes.push(match kind {
            Kind::Sqlite => sqlite::insert_declines(declines)?,
            Kind::Postgres => postgres::insert_declines(declines)?,
        });
    }
    Ok(writes)
}

/// A request from its columns `ride_id`, `rider_id`, `requested_at_ms`, `score`, `flagged`,
/// `reasons`.
fn scored_from_row(row: &Row) -> Result<(RideId, Scored), HandleError> {
    let bad = |e: &dyn ToString| HandleError::from(corrupt("fraud_requests", e.to_string()));
    let ride_id = RideId::parse(row.get::<String>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.get::<String>("rider_id")?).map_err(|e| bad(&e))?;
    let reasons = row.get::<String>("reasons")?;
    let assessment = Assessment {
        score: u32::try_from(row.get::<i64>("score")?).map_err(|e| bad(&e))?,
        reasons: serde_json::from_str(&reasons).map_err(|e| bad(&e))?,
        flagged: row.get::<bool>("flagged")?,
    };
    let scored = Scored {
        rider_id,
        at: row.get::<i64>("requested_at_ms")?,
        assessment,
    };
    Ok((ride_id, scored))
}

/// A decline from its columns `ride_id`, `rider_id`, `declined_at_ms`.
fn decline_from_row(row: &Row) -> Result<(RideId, Decline), HandleError> {
    let bad = |e: &dyn ToString| HandleError::from(corrupt("fraud_declines", e.to_string()));
    let ride_id = RideId::parse(row.get::<String>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.get::<String>("rider_id")?).map_err(|e| bad(&e))?;
    let decline = Decline {
        rider_id,
        at: row.get::<i64>("declined_at_ms")?,
    };
    Ok((ride_id, decline))
}

/// A blocklist entry from its columns `rider_id`, `blocked`, `reason`, `changed_at_ms`.
fn block_from_row(row: &Row) -> Result<(RiderId, Block), HandleError> {
    let rider_id = RiderId::parse(row.get::<String>("rider_id")?)
        .map_err(|e| corrupt("fraud_blocklist", e))?;
    let block = Block {
        blocked: row.get::<bool>("blocked")?,
        reason: row.get::<Option<String>>("reason")?,
        at: row.get::<i64>("changed_at_ms")?,
    };
    Ok((rider_id, block))
}
