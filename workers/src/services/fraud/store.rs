//! The fraud service's tables (`migrations/fraud`): load the slice of state one input can read
//! (the ride's own decision, the rider's blocklist entry and recent history), and write back
//! what changed.
//!
//! SQL is kept portable to PostgreSQL (`$n` parameters, `ON CONFLICT`), except the batch's
//! statements, which expand their JSON parameter with SQLite's `jsonb_each` as the runtime's
//! do. What a batch added before it commits is in `store_pending.rs` ([`Pending`]).

use std::collections::HashMap;

use ridesaga_schemas::{MessageId, RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{Assessment, Block, Decline, FraudRules, Input, Scored, State};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row this code cannot read back.
    #[error("unreadable row in {table}: {problem}")]
    Corrupt {
        table: &'static str,
        problem: String,
    },
}

fn corrupt(table: &'static str, problem: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        problem: problem.to_string(),
    }
}

/// What `input` can read, as the batch in `pending` has left it: for a request, the ride's
/// decision if there is one, else the rider's blocklist entry and as much of the rider's
/// recent requests and declines as the rules can count (a rule only asks whether a threshold
/// is reached). A request's slice comes from `preloaded` (the batch's [`preload_sql`], run
/// before any of its inputs was applied, as the tables still are: the batch writes when it
/// commits); the rarer inputs read theirs here.
pub async fn load_for_input(
    conn: &mut SqliteConnection,
    input: &Input,
    rules: &FraudRules,
    pending: &Pending,
    preloaded: &[SqliteRow],
) -> Result<State, StoreError> {
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
            read_request(&mut state, rider_id, preloaded)?;
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
        Input::Declined { ride_id, .. } => {
            let own = sqlx::query(
                "SELECT ride_id, rider_id, declined_at_ms FROM fraud_declines WHERE ride_id = $1",
            )
            .bind(ride_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = own {
                let (id, decline) = decline_from_row(&row)?;
                state.declines.insert(id, decline);
            }
        }
        Input::Block { rider_id, .. } | Input::Unblock { rider_id, .. } => {
            load_block(conn, &mut state, rider_id).await?;
        }
    }
    Ok(state)
}

/// The statement that reads every request's slice of a batch in the round trip that opens
/// it: for each request of [`preload_parameter`], the ride's decision if there is one, the
/// rider's blocklist entry, and the rider's most recent requests and declines within the
/// windows (as many as the rules count), each row tagged with the input's message id. The
/// rows share one set of columns, each kind filling its own. The limits are written into the
/// statement, not bound: SQLite re-prepares a statement every time a parameter used as its
/// LIMIT is bound. Every lookup is by an index: the decision by ride, the history through
/// the rider's index in time order, then by ride.
pub fn preload_sql(rules: &FraudRules) -> String {
    format!(
        "WITH q AS MATERIALIZED (SELECT value ->> 0 AS input_id, value ->> 1 AS ride, \
         value ->> 2 AS rider, value ->> 3 AS requests_since, value ->> 4 AS until, \
         value ->> 5 AS declines_since FROM jsonb_each(?)) \
         SELECT q.input_id, 'own' AS what, r.ride_id, r.rider_id, r.requested_at_ms, r.score, \
         r.flagged, r.reasons, NULL AS declined_at_ms, NULL AS blocked, NULL AS reason, \
         NULL AS changed_at_ms FROM q JOIN fraud_requests r ON r.ride_id = q.ride \
         UNION ALL SELECT q.input_id, 'block', NULL, b.rider_id, NULL, NULL, NULL, NULL, NULL, \
         b.blocked, b.reason, b.changed_at_ms FROM q JOIN fraud_blocklist b \
         ON b.rider_id = q.rider \
         UNION ALL SELECT q.input_id, 'recent', r.ride_id, r.rider_id, r.requested_at_ms, \
         r.score, r.flagged, r.reasons, NULL, NULL, NULL, NULL FROM q JOIN fraud_requests r \
         ON r.ride_id IN (SELECT s.ride_id FROM fraud_requests s WHERE s.rider_id = q.rider \
         AND s.requested_at_ms > q.requests_since AND s.requested_at_ms <= q.until \
         ORDER BY s.requested_at_ms DESC LIMIT {requests}) \
         UNION ALL SELECT q.input_id, 'decline', d.ride_id, d.rider_id, NULL, NULL, NULL, NULL, \
         d.declined_at_ms, NULL, NULL, NULL FROM q JOIN fraud_declines d \
         ON d.ride_id IN (SELECT s.ride_id FROM fraud_declines s WHERE s.rider_id = q.rider \
         AND s.declined_at_ms > q.declines_since AND s.declined_at_ms <= q.until \
         ORDER BY s.declined_at_ms DESC LIMIT {declines})",
        requests = rules.max_requests,
        declines = rules.max_declines,
    )
}

/// The parameter of [`preload_sql`]: one entry per request among `inputs` (message id, ride,
/// rider and the windows up to the request's time); other inputs read their state alone.
pub fn preload_parameter(inputs: &[(&MessageId, Input)], rules: &FraudRules) -> String {
    let entries: Vec<_> = inputs
        .iter()
        .filter_map(|(id, input)| match input {
            Input::Requested {
                ride_id,
                rider_id,
                at,
                ..
            } => Some((
                id.as_str(),
                ride_id.as_str(),
                rider_id.as_str(),
                at.saturating_sub(rules.window_ms),
                *at,
                at.saturating_sub(rules.decline_window_ms),
            )),
            _ => None,
        })
        .collect();
    serde_json::to_string(&entries).unwrap_or_else(|_| "[]".to_owned())
}

/// The rows of [`preload_sql`], by the message id of the input they were read for.
#[derive(Debug, Default)]
pub struct Preloaded(HashMap<String, Vec<SqliteRow>>);

impl Preloaded {
    pub fn new(rows: Vec<SqliteRow>) -> Result<Self, StoreError> {
        let mut by_input: HashMap<String, Vec<SqliteRow>> = HashMap::new();
        for row in rows {
            let id: String = row.try_get("input_id")?;
            by_input.entry(id).or_default().push(row);
        }
        Ok(Preloaded(by_input))
    }

    /// The rows read for the input with message id `id`: none if nothing is stored about it.
    pub fn of(&self, id: &MessageId) -> &[SqliteRow] {
        self.0.get(id.as_str()).map_or(&[], Vec::as_slice)
    }
}

/// A request's slice from its rows: the ride's decision if there is one (then nothing else),
/// else the rider's blocklist entry, recent requests and recent declines.
fn read_request(
    state: &mut State,
    rider_id: &RiderId,
    rows: &[SqliteRow],
) -> Result<(), StoreError> {
    if let Some(own) = rows.iter().find(|row| tag(row) == "own") {
        let (id, scored) = scored_from_row(own)?;
        state.requests.insert(id, scored);
        return Ok(());
    }
    for row in rows {
        match tag(row).as_str() {
            "block" => {
                let block = block_from_row(row)?;
                state.blocks.insert(rider_id.clone(), block);
            }
            "recent" => {
                let (id, scored) = scored_from_row(row)?;
                state.requests.insert(id, scored);
            }
            _ => {
                let (id, decline) = decline_from_row(row)?;
                state.declines.insert(id, decline);
            }
        }
    }
    Ok(())
}

/// The kind of a row of [`preload_sql`].
fn tag(row: &SqliteRow) -> String {
    row.try_get("what").unwrap_or_default()
}

fn block_from_row(row: &SqliteRow) -> Result<Block, StoreError> {
    Ok(Block {
        blocked: row.try_get("blocked")?,
        reason: row.try_get("reason")?,
        at: row.try_get("changed_at_ms")?,
    })
}

async fn load_block(
    conn: &mut SqliteConnection,
    state: &mut State,
    rider_id: &RiderId,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT blocked, reason, changed_at_ms FROM fraud_blocklist WHERE rider_id = $1",
    )
    .bind(rider_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        state.blocks.insert(rider_id.clone(), block_from_row(&row)?);
    }
    Ok(())
}

/// Deletes up to `limit` requests scored, and declines that happened, before `before`.
pub async fn prune(
    conn: &mut SqliteConnection,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    let requests = sqlx::query(
        "DELETE FROM fraud_requests WHERE ride_id IN (SELECT ride_id FROM fraud_requests \
         WHERE scored_at_ms < $1 ORDER BY scored_at_ms LIMIT $2)",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let declines = sqlx::query(
        "DELETE FROM fraud_declines WHERE ride_id IN (SELECT ride_id FROM fraud_declines \
         WHERE declined_at_ms < $1 ORDER BY declined_at_ms LIMIT $2)",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(requests.rows_affected() + declines.rows_affected())
}

fn scored_from_row(row: &SqliteRow) -> Result<(RideId, Scored), StoreError> {
    let bad = |e: &dyn ToString| corrupt("fraud_requests", e.to_string());
    let ride_id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.try_get::<String, _>("rider_id")?).map_err(|e| bad(&e))?;
    let reasons: String = row.try_get("reasons")?;
    let score: i64 = row.try_get("score")?;
    let assessment = Assessment {
        score: u32::try_from(score).map_err(|e| bad(&e))?,
        reasons: serde_json::from_str(&reasons).map_err(|e| bad(&e))?,
        flagged: row.try_get("flagged")?,
    };
    let at = row.try_get("requested_at_ms")?;
    Ok((
        ride_id,
        Scored {
            rider_id,
            at,
            assessment,
        },
    ))
}

fn decline_from_row(row: &SqliteRow) -> Result<(RideId, Decline), StoreError> {
    let bad = |e: &dyn ToString| corrupt("fraud_declines", e.to_string());
    let ride_id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.try_get::<String, _>("rider_id")?).map_err(|e| bad(&e))?;
    Ok((
        ride_id,
        Decline {
            rider_id,
            at: row.try_get("declined_at_ms")?,
        },
    ))
}

#[path = "store_pending.rs"]
mod pending;
pub use pending::Pending;

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
