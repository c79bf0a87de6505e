//! Publishing outbox rows to JetStream with their `Nats-Msg-Id`, awaiting the server's acks,
//! with bounded retries for the moments a stream has no leader (publishes then answer "no
//! responders"). Retrying is safe: the same ids are dropped by the duplicate window. Each row
//! goes with the trace context it was stored with (`traceparent`, `tracestate` headers).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::db::{self, Database, OutboxRow};
use super::metrics::Metrics;
use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use ridesaga_schemas::trace::{TRACEPARENT, TRACESTATE};

/// Attempts per batch before giving up (the input is then nak'ed and the relay tries again).
const ATTEMPTS: u32 = 4;

/// Publishes outbox rows and remembers the ids of those JetStream acknowledged (`acked`), whose
/// outbox rows may now be deleted: the next write transaction deletes them (one delete per
/// batch instead of a transaction per message).
#[derive(Debug, Clone)]
pub(super) struct Publisher {
    js: jetstream::Context,
    database: Database,
    metrics: Arc<Metrics>,
    acked: Arc<Mutex<Vec<String>>>,
}

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
#[error("publishing {subject} failed after {ATTEMPTS} attempts: {error}")]
pub(super) struct PublishFailed {
    pub subject: String,
    pub error: String,
}

impl Publisher {
    pub(super) fn new(js: jetstream::Context, database: Database, metrics: Arc<Metrics>) -> Self {
        Publisher {
            js,
            database,
            metrics,
            acked: Arc::default(),
        }
    }

    /// Publishes every row, pipelined, and returns once the server stored them all. They are
    /// then deleted from the outbox by the next write transaction or the relay's next round; a
    /// crash before that only means the relay publishes them again, which the duplicate window
    /// and the consumers' inboxes absorb.
    pub(super) async fn publish(&self, rows: &[OutboxRow]) -> Result<(), PublishFailed> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.publish_once(rows).await {
                Ok(()) => break,
                Err(failure) if attempt >= ATTEMPTS => return Err(failure),
                Err(failure) => {
                    tracing::debug!(attempt, error = %failure.error, "publish failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        self.metrics
            .published
            .fetch_add(rows.len() as u64, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut acked) = self.acked.lock() {
            acked.extend(rows.iter().map(|r| r.message_id.clone()));
        }
        Ok(())
    }

    /// Takes the ids acknowledged since the last call, for deletion from the outbox.
    pub(super) fn take_acked(&self) -> Vec<String> {
        self.take_acked_if(0)
    }

    /// Takes the ids acknowledged since the last call if there are at least `min` of them.
    pub(super) fn take_acked_if(&self, min: usize) -> Vec<String> {
        self.acked
            .lock()
            .map(|mut ids| {
                if ids.len() >= min {
                    std::mem::take(&mut *ids)
                } else {
                    Vec::new()
                }
            })
            .unwrap_or_default()
    }

    /// Gives ids back after a failed delete, so a later one retries them.
    pub(super) fn restore_acked(&self, ids: Vec<String>) {
        if let Ok(mut acked) = self.acked.lock() {
            acked.extend(ids);
        }
    }

    /// Deletes the acknowledged rows in a transaction of their own (when no batch is coming).
    pub(super) async fn delete_acked(&self) -> Result<(), sqlx::Error> {
        let ids = self.take_acked();
        if ids.is_empty() {
            return Ok(());
        }
        let deleted = self
            .database
            .transaction(async |conn| db::outbox_delete(conn, &ids).await)
            .await;
        if deleted.is_err() {
            self.restore_acked(ids);
        }
        deleted
    }

    async fn publish_once(&self, rows: &[OutboxRow]) -> Result<(), PublishFailed> {
        let mut acks = Vec::with_capacity(rows.len());
        for row in rows {
            let mut message = PublishMessage::build()
                .payload(Bytes::from(row.payload.clone()))
                .message_id(&row.message_id);
            if let Some(trace) = &row.trace {
                message = message.header(TRACEPARENT, trace.traceparent().as_str());
                if let Some(state) = &trace.state {
                    message = message.header(TRACESTATE, state.as_str());
                }
            }
            let ack = self
                .js
                .send_publish(row.subject.clone(), message)
                .await
                .map_err(|e| PublishFailed {
                    subject: row.subject.clone(),
                    error: e.to_string(),
                })?;
            acks.push((row, ack));
        }
        for (row, ack) in acks {
            ack.await.map_err(|e| PublishFailed {
                subject: row.subject.clone(),
                error: e.to_string(),
            })?;
        }
        Ok(())
    }
}
