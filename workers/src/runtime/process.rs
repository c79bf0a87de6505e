//! Handling one input, from delivery to ack: decode, apply inside one transaction (inbox check,
//! state change, outbox rows), publish the outputs, then decide the ack. Every ack decision is
//! made here, in one place.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use ridesaga_schemas::{DeadLetter, Envelope, Service, Timestamp, streams};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::handler::{HandleError, Worker};
use super::metrics::Metrics;
use super::publish::Publisher;
use super::store::{self, OutboxRow};
use super::writer_lock::WriterLock;

/// One input for the batch writer, and where to send its outcome.
#[derive(Debug)]
pub struct WriteRequest {
    input: Envelope,
    now: Timestamp,
    reply: oneshot::Sender<Result<Applied, HandleError>>,
}

/// Everything the handling of one message needs; shared by all in-flight tasks.
#[derive(Debug)]
pub struct Shared<W> {
    pub worker: W,
    pub service: Service,
    pub instance: String,
    pub pool: SqlitePool,
    pub js: jetstream::Context,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    /// Inputs on their way to the batch writer.
    pub writes: mpsc::Sender<WriteRequest>,
    /// Taken around each batch, so replicas sharing the database take turns without polling.
    pub writer_lock: WriterLock,
}

/// What happens to a delivered message.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Applied (or already applied) and its outputs are stored by the server.
    Ack,
    /// Try again after the delay.
    Retry { delay: Duration, reason: String },
    /// Give up: record a dead letter with the reason, then terminate the message.
    DeadLetter { reason: String },
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
}

/// The outcome of the transactional part.
#[derive(Debug)]
pub enum Applied {
    /// First time: these outputs were committed to the outbox.
    New(Vec<OutboxRow>),
    /// Already applied before; these outputs of it are still waiting in the outbox.
    Duplicate(Vec<OutboxRow>),
}

/// Delay before the next attempt after a transient failure: 1 s, 2 s, 4 s ... capped at 30 s.
pub fn retry_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(30))
}

impl<W: Worker> Shared<W> {
    /// Inbox check, state change and outbox rows, in one transaction: the batch writer's, which
    /// commits several inputs together when they arrive together.
    pub async fn apply(&self, input: &Envelope, now: Timestamp) -> Result<Applied, HandleError> {
        let (reply, answer) = oneshot::channel();
        let request = WriteRequest {
            input: input.clone(),
            now,
            reply,
        };
        if self.writes.send(request).await.is_err() {
            return Err(HandleError::Transient("the writer has stopped".into()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(HandleError::Transient("the writer has stopped".into())))
    }

    /// The batch writer: takes every input waiting (up to `max`), applies each inside a
    /// savepoint of one transaction (a failing input rolls back alone), deletes the outbox rows
    /// published since the last batch, commits once, and answers each input. Group commit:
    /// one WAL commit for the batch instead of two per input.
    pub async fn write_loop(
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
            batch.push(first);
            while batch.len() < max {
                match requests.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            // Published rows are deleted by a batch once enough have gathered; until then
            // the relay's next round deletes them (before it looks for rows left behind).
            let stored = self.publisher.take_stored_if(DELETE_WITH_BATCH);
            match self.write_batch(&batch, &stored).await {
                Ok(outcomes) => {
                    for (request, outcome) in batch.drain(..).zip(outcomes) {
                        let _ = request.reply.send(outcome);
                    }
                }
                Err(e) => {
                    self.publisher.restore_stored(stored);
                    let reason = format!("database: {e}");
                    for request in batch.drain(..) {
                        let _ = request
                            .reply
                            .send(Err(HandleError::Transient(reason.clone())));
                    }
                }
            }
        }
    }

    /// Applies the batch in one transaction and returns each input's outcome. An input whose
    /// handler fails is answered with its error and the batch is redone without it (failures
    /// are rare, and this keeps the common path free of a savepoint per input). An error of the
    /// transaction itself fails the whole batch.
    async fn write_batch(
        &self,
        batch: &[WriteRequest],
        stored: &[String],
    ) -> Result<Vec<Result<Applied, HandleError>>, sqlx::Error> {
        let mut outcomes: Vec<Option<Result<Applied, HandleError>>> =
            batch.iter().map(|_| None).collect();
        loop {
            let pending: Vec<usize> = (0..batch.len())
                .filter(|&i| outcomes[i].is_none())
                .collect();
            if pending.is_empty() {
                // Every input failed: nothing committed, the delete of published rows included.
                self.publisher.restore_stored(stored.to_vec());
                break;
            }
            match self.try_batch(batch, &pending, stored).await? {
                Attempt::Committed(applied) => {
                    for (i, applied) in applied {
                        outcomes[i] = Some(Ok(applied));
                    }
                    break;
                }
                Attempt::Failed { index, error } => outcomes[index] = Some(Err(error)),
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(HandleError::Transient("not applied".into()))))
            .collect())
    }

    /// One attempt at committing the inputs `pending` (indexes into `batch`). Apart from the
    /// service's own statements it takes two round trips to the database thread: one opens the
    /// transaction, deletes the rows published since the last batch and records every input in
    /// the inbox; the other stores all the outputs and commits. Every exit before the commit
    /// rolls the transaction back (the writer is not cancelled mid-batch: it stops between
    /// batches).
    async fn try_batch(
        &self,
        batch: &[WriteRequest],
        pending: &[usize],
        stored: &[String],
    ) -> Result<Attempt, sqlx::Error> {
        let _turn = self.writer_lock.acquire().await.map_err(sqlx::Error::Io)?;
        let mut conn = self.pool.acquire().await?;
        let subjects: Vec<String> = pending.iter().map(|&i| batch[i].input.subject()).collect();
        let entries: Vec<(&str, &str, Timestamp)> = pending
            .iter()
            .zip(&subjects)
            .map(|(&i, subject)| (batch[i].input.id.as_str(), subject.as_str(), batch[i].now))
            .collect();
        let fresh = store::open_batch(&mut conn, stored, &entries).await?;
        // Outputs of the inputs applied in this batch, by input id (an id delivered twice in
        // one batch is applied once; the second delivery answers with the first's outputs).
        let mut applied_here: HashMap<&str, Vec<OutboxRow>> = HashMap::new();
        let mut applied = Vec::with_capacity(pending.len());
        for &i in pending {
            let WriteRequest { input, now, .. } = &batch[i];
            let id = input.id.as_str();
            if let Some(rows) = applied_here.get(id) {
                applied.push((i, Applied::Duplicate(rows.clone())));
                continue;
            }
            if !fresh.contains(id) {
                match store::outbox_for_cause(&mut conn, &input.id).await {
                    Ok(rows) => applied.push((i, Applied::Duplicate(rows))),
                    Err(e) => {
                        store::abort_batch(&mut conn).await;
                        return Err(e);
                    }
                }
                continue;
            }
            let outcome = match self.worker.apply(&mut conn, input, *now).await {
                Ok(outputs) => to_rows(&outputs),
                Err(error) => Err(error),
            };
            match outcome {
                Ok(rows) => {
                    applied_here.insert(id, rows.clone());
                    applied.push((i, Applied::New(rows)));
                }
                Err(error) => {
                    store::abort_batch(&mut conn).await;
                    return Ok(Attempt::Failed { index: i, error });
                }
            }
        }
        let outputs: Vec<(Option<&str>, &OutboxRow)> = applied
            .iter()
            .filter_map(|(i, applied)| match applied {
                Applied::New(rows) => Some((batch[*i].input.id.as_str(), rows)),
                Applied::Duplicate(_) => None,
            })
            .flat_map(|(cause, rows)| rows.iter().map(move |row| (Some(cause), row)))
            .collect();
        store::close_batch(&mut conn, &outputs, Timestamp::now()).await?;
        Ok(Attempt::Committed(applied))
    }

    /// Runs the service's timers in one transaction and returns what they produced.
    pub async fn tick(&self, now: Timestamp) -> Result<Vec<OutboxRow>, HandleError> {
        let _turn = self
            .writer_lock
            .acquire()
            .await
            .map_err(|e| HandleError::Transient(format!("writer lock: {e}")))?;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let outputs = self.worker.tick(&mut tx, now).await?;
        if outputs.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let rows = to_rows(&outputs)?;
        store::outbox_insert(&mut tx, None, &rows, now).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Decides what to do with one delivery. `delivered` counts deliveries, 1 the first.
    pub async fn handle(&self, subject: &str, payload: &[u8], delivered: i64) -> Verdict {
        let input = match Envelope::decode(subject, payload) {
            Ok(input) => input,
            Err(e) => {
                return Verdict::DeadLetter {
                    reason: format!("undecodable message: {e}"),
                };
            }
        };
        let started = Instant::now();
        let verdict = match self.apply(&input, Timestamp::now()).await {
            Ok(Applied::New(rows)) => {
                Metrics::inc(&self.metrics.handled);
                self.publish_then_ack(&rows).await
            }
            Ok(Applied::Duplicate(rows)) => {
                Metrics::inc(&self.metrics.duplicates);
                self.publish_then_ack(&rows).await
            }
            Err(HandleError::Permanent(reason)) => Verdict::DeadLetter { reason },
            Err(HandleError::Transient(reason)) => {
                Metrics::inc(&self.metrics.failed);
                if delivered >= streams::MAX_DELIVER {
                    Verdict::DeadLetter {
                        reason: format!("gave up after {delivered} deliveries: {reason}"),
                    }
                } else {
                    Verdict::Retry {
                        delay: retry_delay(delivered),
                        reason,
                    }
                }
            }
        };
        self.metrics.observe(started.elapsed());
        tracing::debug!(%subject, id = %input.id, delivered, ?verdict, "handled");
        verdict
    }

    async fn publish_then_ack(&self, rows: &[OutboxRow]) -> Verdict {
        match self.publisher.publish(rows).await {
            Ok(()) => Verdict::Ack,
            // The outputs are safe in the outbox; retrying the input republishes them.
            Err(e) => Verdict::Retry {
                delay: Duration::from_secs(1),
                reason: e.to_string(),
            },
        }
    }

    /// Carries out a verdict on a JetStream message.
    pub async fn settle(&self, message: &jetstream::Message, verdict: Verdict) {
        let info = message.info().ok();
        let (sequence, delivered) = info
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 0));
        let result = match verdict {
            Verdict::Ack => message.ack().await,
            Verdict::Retry { delay, reason } => {
                tracing::warn!(subject = %message.subject, delivered, %reason, ?delay, "will retry");
                message.ack_with(AckKind::Nak(Some(delay))).await
            }
            Verdict::DeadLetter { reason } => {
                tracing::error!(subject = %message.subject, delivered, %reason, "dead letter");
                let record = DeadLetter {
                    service: self.service.name().to_owned(),
                    instance: self.instance.clone(),
                    subject: message.subject.to_string(),
                    stream_sequence: sequence,
                    deliveries: delivered.max(0) as u64,
                    message_id: message_id_of(&message.payload),
                    reason,
                    payload: String::from_utf8_lossy(&message.payload).into_owned(),
                    failed_at: Timestamp::now(),
                };
                match self.record_dead_letter(&record).await {
                    Ok(()) => {
                        Metrics::inc(&self.metrics.dead_lettered);
                        message.ack_with(AckKind::Term).await
                    }
                    Err(e) => {
                        // Never drop a message unrecorded: leave it for redelivery.
                        tracing::error!(error = %e, "could not record dead letter; will retry");
                        message
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                            .await
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, subject = %message.subject, "ack failed; the server will redeliver");
        }
    }

    async fn record_dead_letter(&self, record: &DeadLetter) -> Result<(), String> {
        let subject = DeadLetter::subject_for(self.service.name(), record.stream_sequence);
        let body = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        let message = jetstream::message::PublishMessage::build()
            .payload(body.into())
            .message_id(format!("dlq-{}-{}", self.service, record.stream_sequence))
            .header(
                ridesaga_schemas::dead_letter::REASON_HEADER,
                record.reason.replace(['\r', '\n'], " ").as_str(),
            );
        let ack = self
            .js
            .send_publish(subject, message)
            .await
            .map_err(|e| e.to_string())?;
        ack.await.map_err(|e| e.to_string())?;
        Ok(())
    }
}

fn to_rows(outputs: &[Envelope]) -> Result<Vec<OutboxRow>, HandleError> {
    outputs
        .iter()
        .map(|e| {
            e.validate()
                .map_err(|err| HandleError::Permanent(format!("invalid output: {err}")))?;
            Ok(OutboxRow::from_envelope(e))
        })
        .collect()
}

/// The envelope id of a payload that may not decode, for the dead-letter record.
fn message_id_of(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_and_is_capped() {
        assert_eq!(retry_delay(1), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(50), Duration::from_secs(30));
    }
}
