//! The batch writer: every input of a replica goes through one task that applies the inputs
//! waiting together in one transaction (group commit), in two round trips to the database
//! besides the services' own statements.

use std::collections::HashMap;

use ridesaga_schemas::{Envelope, Timestamp, TraceContext};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::db::{self, Conn, Database, InboxEntry, OutboxRow, Turn};
use super::handler::{BatchError, HandleError, Input, Worker};
use super::handoff::Handoff;
use super::metrics::Metrics;
use super::publish::Publisher;
use super::saga_trace;

/// The outcome of the transactional part.
#[derive(Debug)]
pub(super) enum Applied {
    /// First time: these outputs were committed to the outbox.
    New(Vec<OutboxRow>),
    /// Already applied before; these outputs of it are still waiting in the outbox.
    Duplicate(Vec<OutboxRow>),
}

/// One input for the batch writer, and where to send its outcome.
#[derive(Debug)]
pub(super) struct WriteRequest {
    input: Envelope,
    now: Timestamp,
    /// The span that processes the input: its outputs are created under it.
    trace: TraceContext,
    reply: oneshot::Sender<Result<Applied, HandleError>>,
}

/// The way to the batch writer, which every input of the replica takes.
#[derive(Debug, Clone)]
pub(super) struct BatchWriter {
    requests: mpsc::Sender<WriteRequest>,
}

impl BatchWriter {
    /// The writer's handle and the queue its loop ([`WriterTask::run`]) takes inputs from, at
    /// most `capacity` waiting.
    pub(super) fn channel(capacity: usize) -> (Self, mpsc::Receiver<WriteRequest>) {
        let (requests, queue) = mpsc::channel(capacity);
        (BatchWriter { requests }, queue)
    }

    /// Inbox check, state change and outbox rows, in one transaction: the batch writer's, which
    /// commits several inputs together when they arrive together.
    pub(super) async fn write(
        &self,
        input: Envelope,
        now: Timestamp,
        trace: TraceContext,
    ) -> Result<Applied, HandleError> {
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            input,
            now,
            trace,
            reply,
        };
        if self.requests.send(request).await.is_err() {
            return Err(HandleError::Transient("the writer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(HandleError::Transient("the writer has stopped".into())))
    }
}

/// The batch writer's loop, with what it writes with: the service, its database, the
/// publisher whose published rows it deletes, the effects it hands over, the metrics.
#[derive(Debug)]
pub(super) struct WriterTask<'a, W> {
    pub worker: &'a W,
    pub database: &'a Database,
    pub publisher: &'a Publisher,
    pub effects: &'a Handoff,
    pub metrics: &'a Metrics,
}

/// Published outbox rows a batch deletes along with its inputs once at least this many have
/// gathered: below it, a statement per batch would cost more than the rows it deletes.
const DELETE_WITH_BATCH: usize = 32;

/// One attempt at committing a batch.
enum Attempt {
    /// Committed: each input's index in the batch and what it did.
    Committed(Vec<(usize, Applied)>),
    /// Rolled back because this input's handler failed.
    Failed { index: usize, error: HandleError },
    /// Rolled back because the service could apply none of the inputs.
    AllFailed(HandleError),
}

impl<W: Worker> WriterTask<'_, W> {
    /// The batch writer: takes every input waiting (up to `max`), applies them in one
    /// transaction with the deletes of the outbox rows published since the last batch, commits
    /// once, and answers each input. Group commit: one WAL commit for the batch instead of two
    /// per input.
    pub(super) async fn run(
        &self,
        mut requests: mpsc::Receiver<WriteRequest>,
        max: usize,
        stop: CancellationToken,
    ) {
        let mut batch = Vec::with_capacity(max);
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                first = requests.recv() => match first {
                    Some(first) => first,
                    None => return,
                },
            };
            // The writer's turn first, then the batch: inputs that arrive while a timer, the
            // relay or another replica writes join this batch instead of waiting for the next.
            let mut turn = match self.database.turn().await {
                Ok(turn) => turn,
                Err(e) => {
                    let error = HandleError::Transient(format!("writer lock: {e}"));
                    let _ = first.reply.send(Err(error));
                    continue;
                }
            };
            batch.push(first);
            while batch.len() < max {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // Published rows are deleted by a batch once enough have gathered; until then
            // the relay's next round deletes them (before it looks for rows left behind).
            let acked = self.publisher.take_acked_if(DELETE_WITH_BATCH);
            let outcomes = self.write_batch(&mut turn, &batch, &acked).await;
            for (request, outcome) in batch.drain(..).zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
    }

    /// Applies the batch in one transaction and returns each input's outcome. An input whose
    /// handler fails is answered with its error and the batch is redone without it (failures
    /// are rare, and this keeps the common path free of a savepoint per input). A batch whose
    /// transaction fails (a write that breaks a constraint fails the commit of the whole
    /// batch), or that the service cannot apply for a reason that will not pass, is redone one
    /// input at a time, so that one input's fault is its own and the others go through.
    async fn write_batch(
        &self,
        turn: &mut Turn,
        batch: &[WriteRequest],
        acked: &[String],
    ) -> Vec<Result<Applied, HandleError>> {
        let mut outcomes: Vec<Option<Result<Applied, HandleError>>> =
            batch.iter().map(|_| None).collect();
        let mut one_at_a_time = false;
        // The published rows to delete, until a commit deleted them.
        let mut acked = acked;
        loop {
            let mut pending: Vec<usize> = (0..batch.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if pending.is_empty() {
                break;
            }
            if one_at_a_time {
                pending.truncate(1);
            }
            let attempt = match turn.conn().await {
                Ok(mut conn) => self.try_batch(&mut conn, batch, &pending, acked).await,
                Err(e) => Err(e),
            };
            let attempt = match attempt {
                Ok(attempt) => attempt,
                Err(e) => {
                    turn.give_back();
                    if let [only] = pending[..] {
                        outcomes[only] = Some(Err(e.into()));
                    } else {
                        tracing::warn!(error = %e, inputs = pending.len(), "a batch failed; applying its inputs one by one");
                        one_at_a_time = true;
                    }
                    continue;
                }
            };
            match attempt {
                Attempt::Committed(applied) => {
                    for (i, applied) in applied {
                        outcomes[i] = Some(Ok(applied));
                    }
                    acked = &[];
                }
                Attempt::Failed { index, error } => outcomes[index] = Some(Err(error)),
                Attempt::AllFailed(error) if pending.len() > 1 && !error.is_transient() => {
                    tracing::warn!(%error, inputs = pending.len(), "a batch failed; applying its inputs one by one");
                    one_at_a_time = true;
                }
                Attempt::AllFailed(error) => {
                    for i in pending {
                        outcomes[i] = Some(Err(error.clone()));
                    }
                }
            }
        }
        // Nothing committed: the published rows are still to delete.
        if !acked.is_empty() {
            self.publisher.restore_acked(acked.to_vec());
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(HandleError::Transient("not applied".into()))))
            .collect()
    }

    /// One attempt at committing the inputs `pending` (indexes into `batch`) on `conn`, in the
    /// writer's turn that [`WriterTask::run`] holds. Apart from the service's own statements it
    /// takes two round trips to the database thread: one opens the transaction, deletes the
    /// rows published since the last batch and records every input in the inbox; the other
    /// stores all the outputs and commits. Every exit before the commit rolls the transaction
    /// back (the writer is not cancelled mid-batch: it stops between batches).
    async fn try_batch(
        &self,
        conn: &mut Conn<'_>,
        batch: &[WriteRequest],
        pending: &[usize],
        acked: &[String],
    ) -> Result<Attempt, sqlx::Error> {
        let subjects: Vec<String> = pending.iter().map(|&i| batch[i].input.subject()).collect();
        let entries: Vec<InboxEntry<'_>> = pending
            .iter()
            .zip(&subjects)
            .map(|(&i, subject)| InboxEntry::of(&batch[i].input, subject, batch[i].now))
            .collect();
        let inputs_at = |indexes: &[usize]| -> Vec<Input<'_>> {
            indexes
                .iter()
                .map(|&i| Input {
                    envelope: &batch[i].input,
                    now: batch[i].now,
                    trace: Some(&batch[i].trace),
                })
                .collect()
        };
        // The service's preload, for every pending input (rows for a repeated one do no harm).
        let preload = self
            .worker
            .preload(conn.kind())
            .map(|sql| (sql, self.worker.preload_parameter(&inputs_at(pending))));
        let preloading = preload.is_some();
        let db::Opened { fresh, preloaded } =
            db::open_batch(conn, acked, &entries, preload).await?;
        // Each input is new (applied by this batch), a second delivery of one that is, or one
        // applied by an earlier batch (answered with its outputs still in the outbox).
        let mut first_of: HashMap<&str, usize> = HashMap::new();
        let mut work: Vec<usize> = Vec::with_capacity(pending.len());
        let mut applied = Vec::with_capacity(pending.len());
        let mut repeats = Vec::new();
        for &i in pending {
            let input = &batch[i].input;
            let id = input.id.as_str();
            if let Some(&first) = first_of.get(id) {
                repeats.push((i, first));
            } else if fresh.contains(id) {
                first_of.insert(id, i);
                work.push(i);
            } else {
                match db::outbox_for_cause(conn, &input.id).await {
                    Ok(rows) => applied.push((i, Applied::Duplicate(rows))),
                    Err(e) => {
                        db::abort_batch(conn).await;
                        return Err(e);
                    }
                }
            }
        }
        let inputs = inputs_at(&work);
        let applied_batch = if preloading {
            self.worker.handle_preloaded(conn, &inputs, preloaded).await
        } else {
            self.worker.handle_batch(conn, &inputs).await
        };
        let mut done = match applied_batch {
            Ok(done) if done.outputs.len() == work.len() => done,
            Ok(done) => {
                db::abort_batch(conn).await;
                return Err(sqlx::Error::Protocol(format!(
                    "the service answered {} of {} inputs",
                    done.outputs.len(),
                    work.len()
                )));
            }
            Err(BatchError::Input { index, error }) => {
                db::abort_batch(conn).await;
                return Ok(Attempt::Failed {
                    index: work.get(index).copied().unwrap_or(pending[0]),
                    error,
                });
            }
            Err(BatchError::Batch(error)) => {
                db::abort_batch(conn).await;
                return Ok(Attempt::AllFailed(error));
            }
        };
        let mut rows_of: HashMap<usize, Vec<OutboxRow>> = HashMap::with_capacity(work.len());
        for (&i, outputs) in work.iter().zip(&done.outputs) {
            match to_rows(outputs) {
                Ok(mut rows) => {
                    for row in &mut rows {
                        row.trace = Some(batch[i].trace.child());
                    }
                    rows_of.insert(i, rows);
                }
                Err(error) => {
                    db::abort_batch(conn).await;
                    return Ok(Attempt::Failed { index: i, error });
                }
            }
        }
        let outputs: Vec<(Option<&str>, &OutboxRow)> = work
            .iter()
            .flat_map(|&i| {
                let cause = batch[i].input.id.as_str();
                rows_of[&i].iter().map(move |row| (Some(cause), row))
            })
            .collect();
        // A ride in a caller's trace: its timers' steps go under the span of its last input.
        let handled = work.iter().map(|&i| (&batch[i].input, &batch[i].trace));
        match saga_trace::remember(conn.kind(), handled, Timestamp::now()) {
            Ok(Some(write)) => done.writes.push(write),
            Ok(None) => {}
            Err(error) => {
                db::abort_batch(conn).await;
                return Ok(Attempt::AllFailed(error));
            }
        }
        // An effect's attempts are spans under the input that made it due (the one of its saga).
        if done.effects.iter().any(|e| e.trace.is_none()) {
            let mut by_saga: HashMap<&str, usize> = HashMap::new();
            for &i in &work {
                if let Some(saga) = &batch[i].input.saga_id {
                    by_saga.entry(saga.as_str()).or_insert(i);
                }
            }
            for effect in done.effects.iter_mut().filter(|e| e.trace.is_none()) {
                let cause = effect
                    .saga_id
                    .as_ref()
                    .and_then(|s| by_saga.get(s.as_str()));
                effect.trace = cause.map(|&i| batch[i].trace.clone());
            }
        }
        // The effects of the inputs this attempt applied: an attempt that failed rolled back
        // its own with everything else.
        let effects = self.effects.record(&done.effects);
        let now = Timestamp::now();
        db::close_batch(conn, &done.writes, &outputs, effects, now).await?;
        self.effects.hand(effects, now);
        for (i, first) in repeats {
            applied.push((i, Applied::Duplicate(rows_of[&first].clone())));
        }
        applied.extend(rows_of.into_iter().map(|(i, rows)| (i, Applied::New(rows))));
        self.metrics.batch(pending.len());
        Ok(Attempt::Committed(applied))
    }
}

/// Validates outputs and turns them into outbox rows; an invalid output is a permanent error.
pub(super) fn to_rows(outputs: &[Envelope]) -> Result<Vec<OutboxRow>, HandleError> {
    outputs
        .iter()
        .map(|e| {
            e.validate()
                .map_err(|err| HandleError::Permanent(format!("invalid output: {err}")))?;
            Ok(OutboxRow::from_envelope(e))
        })
        .collect()
}
