//! The trace of a ride that is not the ride's own: where a timer's step for the ride goes.
//!
//! A ride's messages are in the ride's own trace ([`TraceContext::for_saga`]) unless a caller
//! began it in a trace of theirs (`ridectl --traceparent`). A timer's step, which no message
//! causes, finds the ride's own trace from the ride's id alone; for a ride in a caller's trace,
//! the service remembers the span of the last input it handled for the ride (`saga_traces`,
//! written by the batch that applies the input, in the round trip that commits it) and the
//! timer's outputs are created under it. Rides in their own trace write nothing.

use std::collections::HashMap;

use ridesaga_schemas::{Envelope, RideId, Timestamp, TraceContext};

use super::db::{self, Conn, Kind, OutboxRow};
use super::handler::{BatchWrite, HandleError};

const SAVE_SQLITE: &str = "INSERT INTO saga_traces (saga_id, traceparent, tracestate, \
     updated_at) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM jsonb_each(?) \
     WHERE true ON CONFLICT (saga_id) DO UPDATE SET traceparent = excluded.traceparent, \
     tracestate = excluded.tracestate, updated_at = excluded.updated_at";
const SAVE_POSTGRES: &str = "INSERT INTO saga_traces (saga_id, traceparent, tracestate, \
     updated_at) SELECT r ->> 0, r ->> 1, r ->> 2, (r ->> 3)::bigint \
     FROM jsonb_array_elements($1::jsonb) AS r ON CONFLICT (saga_id) DO UPDATE SET \
     traceparent = excluded.traceparent, tracestate = excluded.tracestate, \
     updated_at = excluded.updated_at";
const LOAD_SQLITE: &str = "SELECT saga_id, traceparent, tracestate FROM saga_traces \
     WHERE saga_id IN (SELECT value FROM json_each(?))";
const LOAD_POSTGRES: &str = "SELECT saga_id, traceparent, tracestate FROM saga_traces \
     WHERE saga_id IN (SELECT jsonb_array_elements_text($1::jsonb))";
const PRUNE_SQLITE: &str =
    "DELETE FROM saga_traces WHERE updated_at < (SELECT value FROM json_each(?))";
const PRUNE_POSTGRES: &str = "DELETE FROM saga_traces WHERE updated_at < ($1::jsonb ->> 0)::bigint";

/// Whether `context` is in a trace other than its ride's own.
fn foreign(saga: &RideId, context: &TraceContext) -> bool {
    context.trace_id != TraceContext::for_saga(saga).trace_id
}

/// The write that remembers, for each ride of `handled` (inputs and the spans that processed
/// them) in a trace other than its own, the span of its last input; none when there is no such
/// ride.
pub(super) fn remember<'a>(
    kind: Kind,
    handled: impl IntoIterator<Item = (&'a Envelope, &'a TraceContext)>,
    now: Timestamp,
) -> Result<Option<BatchWrite>, HandleError> {
    let mut last: HashMap<&str, &TraceContext> = HashMap::new();
    for (input, context) in handled {
        if let Some(saga) = &input.saga_id
            && foreign(saga, context)
        {
            last.insert(saga.as_str(), context);
        }
    }
    if last.is_empty() {
        return Ok(None);
    }
    let rows: Vec<(&str, String, Option<&str>, i64)> = last
        .into_iter()
        .map(|(saga, c)| (saga, c.traceparent(), c.state.as_deref(), now.unix_millis()))
        .collect();
    let sql = match kind {
        Kind::Sqlite => SAVE_SQLITE,
        Kind::Postgres => SAVE_POSTGRES,
    };
    BatchWrite::new(sql, &rows).map(Some)
}

/// Gives each of a timer's `outputs` (as `rows`) its context: a new span under the span its
/// ride's service last handled, for a ride in a caller's trace, else under the ride's own root.
/// Returns, for each row, the context it was created under.
pub(super) async fn place_timer_outputs(
    conn: &mut Conn<'_>,
    outputs: &[Envelope],
    rows: &mut [OutboxRow],
) -> Result<Vec<TraceContext>, HandleError> {
    let sagas: Vec<&str> = outputs
        .iter()
        .filter_map(|o| o.saga_id.as_ref().map(RideId::as_str))
        .collect();
    let mut remembered: HashMap<String, TraceContext> = HashMap::new();
    if !sagas.is_empty() {
        let sql = match conn.kind() {
            Kind::Sqlite => LOAD_SQLITE,
            Kind::Postgres => LOAD_POSTGRES,
        };
        let parameter = serde_json::to_string(&sagas)
            .map_err(|e| HandleError::Permanent(format!("ride ids: {e}")))?;
        for row in db::preload_rows(conn, sql, parameter).await? {
            let saga: String = row.get("saga_id")?;
            if let Some(context) =
                OutboxRow::trace_of(row.get("traceparent")?, row.get("tracestate")?)
            {
                remembered.insert(saga, context);
            }
        }
    }
    let mut parents = Vec::with_capacity(rows.len());
    for (row, output) in rows.iter_mut().zip(outputs) {
        let parent = output
            .saga_id
            .as_ref()
            .and_then(|saga| remembered.get(saga.as_str()).cloned())
            .unwrap_or_else(|| TraceContext::continued(None, output.saga_id.as_ref()));
        row.trace = Some(parent.child());
        parents.push(parent);
    }
    Ok(parents)
}

/// Forgets the rides last handled before `before_ms` (with the inbox's retention).
pub(super) async fn prune(conn: &mut Conn<'_>, before_ms: i64) -> Result<(), sqlx::Error> {
    let sql = match conn.kind() {
        Kind::Sqlite => PRUNE_SQLITE,
        Kind::Postgres => PRUNE_POSTGRES,
    };
    let write = BatchWrite::new(sql, &[before_ms])
        .map_err(|e| sqlx::Error::Protocol(format!("retention of saga_traces: {e}")))?;
    write.execute(conn).await
}
