//! Handling one input, from delivery to ack: decode, apply inside one transaction (inbox check,
//! state change, outbox rows; see the `batch` module), publish the outputs, then decide the ack.
//! Every ack decision is made here, in one place.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use ridesaga_schemas::{DeadLetter, Envelope, Service, Timestamp, streams};

use super::batch::{Applied, BatchWriter, WriterTask, to_rows};
use super::db::{self, Database, OutboxRow};
use super::handler::{HandleError, Worker};
use super::handoff::Handoff;
use super::metrics::{DeadLetterCause, Metrics, Outcome};
use super::publish::Publisher;
use super::saga_trace;
use super::trace::Tracer;
use ridesaga_schemas::TraceContext;
use ridesaga_schemas::trace::{Span, SpanKind, attr, now_unix_nanos};

/// A worker's context: the service, its database, the batch writer, the publisher, the
/// effects handoff, metrics and spans; what the handling of every message, the timers, the
/// relay and the effect executor share.
#[derive(Debug)]
pub(super) struct WorkerContext<W> {
    pub worker: W,
    pub service: Service,
    pub instance: String,
    pub js: jetstream::Context,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    /// Where every input goes to be applied.
    pub writer: BatchWriter,
    /// The service's database: every write goes through its writer, one turn at a time.
    pub database: Database,
    /// The effects this replica records, on their way to its executor.
    pub effects: Handoff,
    /// Spans, when they are exported.
    pub tracer: Tracer,
}

/// What happens to a delivered message.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// Applied (or already applied) and its outputs are stored by the server.
    Ack,
    /// Try again after the delay.
    Retry { delay: Duration, reason: String },
    /// Give up: record a dead letter with the reason, then terminate the message.
    DeadLetter {
        cause: DeadLetterCause,
        reason: String,
    },
}

/// Delay before the next attempt after a transient failure: 1 s, 2 s, 4 s ... capped at 30 s.
pub(super) fn retry_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(30))
}

impl<W: Worker> WorkerContext<W> {
    /// The batch writer's loop on this replica's service, database, publisher and effects.
    pub(super) fn writer_task(&self) -> WriterTask<'_, W> {
        WriterTask {
            worker: &self.worker,
            database: &self.database,
            publisher: &self.publisher,
            effects: &self.effects,
            metrics: &self.metrics,
        }
    }

    /// Runs the service's timers in one transaction and returns what they produced.
    /// Committed even when the timers emit nothing: what they wrote (a retention prune, a
    /// state change without an event) is kept. A commit that changed nothing writes nothing to
    /// the log.
    pub(super) async fn tick(&self, now: Timestamp) -> Result<Vec<OutboxRow>, HandleError> {
        self.database
            .transaction(async |conn| {
                let outputs = self.worker.tick(conn, now).await?;
                let mut rows = to_rows(&outputs)?;
                // A timer's step for a ride belongs to the ride's trace.
                let parents = saga_trace::place_timer_outputs(conn, &outputs, &mut rows).await?;
                for ((row, output), parent) in rows.iter().zip(&outputs).zip(&parents) {
                    if let Some(created) = &row.trace {
                        self.record_created(created, Some(parent), output, "tick");
                    }
                }
                if !rows.is_empty() {
                    db::outbox_insert(conn, None, &rows, now).await?;
                }
                Ok(rows)
            })
            .await
            .inspect(|rows| self.count_saga_outcomes(rows))
    }

    /// Counts the sagas that `rows`, outputs just committed, end (see
    /// [`Worker::saga_outcome`]).
    pub(super) fn count_saga_outcomes(&self, rows: &[OutboxRow]) {
        for row in rows {
            if let Some(index) = self.worker.saga_outcome(&row.subject, &row.payload) {
                self.metrics.saga_finished(index);
            }
        }
    }

    /// Decides what to do with one delivery. `delivered` counts deliveries, 1 the first. A
    /// delivery that does not decode (oversize headers or payload, a malformed or invalid
    /// envelope, one that disagrees with its subject, one from the future) is dead-lettered
    /// with the decoder's reason.
    ///
    /// A message already applied (the inbox knows its `occurred_at` and id) is acknowledged
    /// without effect, whatever its content: the first copy applied stands. A copy published
    /// under the same `Nats-Msg-Id` within the stream's duplicate window is never delivered.
    pub(super) async fn decide(
        &self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: &[u8],
        delivered: i64,
    ) -> Verdict {
        let received_at = if self.tracer.enabled() {
            now_unix_nanos()
        } else {
            0
        };
        let carried = TraceContext::from_headers(headers);
        let decoded =
            Envelope::check_headers(headers).and_then(|()| Envelope::decode(subject, payload));
        let input = match decoded {
            Ok(input) => input,
            Err(e) => {
                if let Some(trace) = &carried {
                    tracing::Span::current()
                        .record("trace_id", tracing::field::display(trace.trace_id));
                }
                return Verdict::DeadLetter {
                    cause: DeadLetterCause::Undecodable,
                    reason: format!("undecodable message: {e}"),
                };
            }
        };
        let started = Instant::now();
        let id = input.id.clone();
        // The message continues the trace it carries (else its ride's); its outputs are
        // created under the span that processes it.
        let context = TraceContext::continued(carried, input.saga_id.as_ref());
        let log = tracing::Span::current();
        log.record("trace_id", tracing::field::display(context.trace_id));
        if let Some(saga) = &input.saga_id {
            log.record("saga_id", saga.as_str());
        }
        log.record("message_id", id.as_str());
        let spans = self.tracer.enabled().then(|| MessageSpans {
            receive: context.child(),
            received_at,
            decoded_at: now_unix_nanos(),
            saga: input.saga_id.as_ref().map(|s| s.as_str().to_owned()),
            correlation: input.correlation_id.clone(),
        });
        let process = match &spans {
            Some(spans) => spans.receive.child(),
            None => context.clone(),
        };
        let (outcome, verdict) = match self
            .writer
            .write(input, Timestamp::now(), process.clone())
            .await
        {
            Ok(Applied::New(rows)) => {
                Metrics::inc(&self.metrics.handled);
                self.count_saga_outcomes(&rows);
                if self.tracer.enabled() {
                    for row in &rows {
                        self.record_created_row(row, &process);
                    }
                }
                (
                    Outcome::Applied,
                    self.publish_then_ack(&rows, &process).await,
                )
            }
            Ok(Applied::Duplicate(rows)) => {
                Metrics::inc(&self.metrics.duplicates);
                tracing::debug!(%subject, %id, "already applied; acknowledged without effect");
                (
                    Outcome::Duplicate,
                    self.publish_then_ack(&rows, &process).await,
                )
            }
            Err(error) if !error.is_transient() => (
                Outcome::DeadLetter,
                Verdict::DeadLetter {
                    cause: DeadLetterCause::Rejected,
                    reason: error.reason(),
                },
            ),
            Err(error) => {
                let reason = error.reason();
                Metrics::inc(&self.metrics.failed);
                if delivered >= streams::MAX_DELIVER {
                    let verdict = Verdict::DeadLetter {
                        cause: DeadLetterCause::MaxDeliveries,
                        reason: format!("gave up after {delivered} deliveries: {reason}"),
                    };
                    (Outcome::DeadLetter, verdict)
                } else {
                    let verdict = Verdict::Retry {
                        delay: retry_delay(delivered),
                        reason,
                    };
                    (Outcome::Retry, verdict)
                }
            }
        };
        // A publish that failed after the commit makes an applied input a retry.
        let outcome = match verdict {
            Verdict::Retry { .. } => Outcome::Retry,
            _ => outcome,
        };
        self.metrics.observe(outcome, started.elapsed());
        tracing::debug!(%subject, %id, delivered, ?verdict, "handled");
        if let Some(spans) = spans {
            self.record_message_spans(subject, &id, delivered, &context, spans, &process, &verdict);
        }
        verdict
    }

    /// The receive and process spans of a message handled with `verdict` (when exporting).
    #[allow(clippy::too_many_arguments)]
    fn record_message_spans(
        &self,
        subject: &str,
        id: &ridesaga_schemas::MessageId,
        delivered: i64,
        context: &TraceContext,
        spans: MessageSpans,
        process: &TraceContext,
        verdict: &Verdict,
    ) {
        let destination = destination_template(subject);
        let consumer = self.service.consumer_name();
        let common = |span: Span, operation: &'static str| {
            let mut span = span
                .attribute(attr::SYSTEM, attr::NATS)
                .attribute(attr::OPERATION_TYPE, operation)
                .attribute(attr::OPERATION_NAME, operation)
                .attribute(attr::DESTINATION, subject)
                .attribute(attr::DESTINATION_TEMPLATE, format!("{destination}.*"))
                .attribute(attr::CONSUMER_GROUP, consumer.as_str())
                .attribute(attr::MESSAGE_ID, id.as_str())
                .attribute(attr::CONVERSATION_ID, spans.correlation.as_str())
                .attribute(attr::DELIVERY_COUNT, delivered);
            if let Some(saga) = &spans.saga {
                span = span.attribute(attr::SAGA_ID, saga.as_str());
            }
            span
        };
        let mut receive = common(
            Span::ended_now(
                &spans.receive,
                Some(context.span_id),
                format!("receive {destination}"),
                SpanKind::Consumer,
                spans.received_at,
            ),
            "receive",
        );
        receive.end_unix_nanos = spans.decoded_at;
        let mut processed = common(
            Span::ended_now(
                process,
                Some(spans.receive.span_id),
                format!("process {destination}"),
                SpanKind::Consumer,
                spans.decoded_at,
            ),
            "process",
        );
        match verdict {
            Verdict::Ack => {}
            Verdict::Retry { reason, .. } => processed.error = Some(format!("retry: {reason}")),
            Verdict::DeadLetter { reason, .. } => {
                processed.error = Some(format!("dead letter: {reason}"))
            }
        }
        self.tracer.record(receive);
        self.tracer.record(processed);
    }

    /// The create span of an outbox row, under `parent` (when exporting).
    fn record_created_row(&self, row: &OutboxRow, parent: &TraceContext) {
        let Some(created) = &row.trace else { return };
        let span = create_span(created, Some(parent), &row.subject, row.message_id.as_str());
        self.tracer.record(span);
    }

    /// The create span of `output`, made by `by` (a timer, an effect's outcome) under `parent`
    /// (when exporting).
    pub(super) fn record_created(
        &self,
        created: &TraceContext,
        parent: Option<&TraceContext>,
        output: &Envelope,
        by: &'static str,
    ) {
        if !self.tracer.enabled() {
            return;
        }
        let mut span = create_span(created, parent, &output.subject(), output.id.as_str())
            .attribute("ridesaga.created_by", by);
        if let Some(saga) = &output.saga_id {
            span = span.attribute(attr::SAGA_ID, saga.as_str());
        }
        self.tracer.record(span);
    }

    async fn publish_then_ack(&self, rows: &[OutboxRow], process: &TraceContext) -> Verdict {
        let sending = (self.tracer.enabled() && !rows.is_empty())
            .then(|| (process.child(), now_unix_nanos()));
        let published = self.publisher.publish(rows).await;
        if let Some((send, started)) = sending {
            let mut span = Span::ended_now(
                &send,
                Some(process.span_id),
                "send",
                SpanKind::Producer,
                started,
            )
            .attribute(attr::SYSTEM, attr::NATS)
            .attribute(attr::OPERATION_TYPE, "send")
            .attribute(attr::OPERATION_NAME, "publish")
            .attribute(attr::BATCH_COUNT, rows.len() as i64);
            if let [row] = rows {
                span.name = format!("send {}", destination_template(&row.subject));
                span = span
                    .attribute(attr::DESTINATION, row.subject.as_str())
                    .attribute(attr::MESSAGE_ID, row.message_id.as_str());
            }
            span.links = rows.iter().filter_map(|r| r.trace.clone()).collect();
            if let Err(e) = &published {
                span.error = Some(e.to_string());
            }
            self.tracer.record(span);
        }
        match published {
            Ok(()) => Verdict::Ack,
            // The outputs are safe in the outbox; retrying the input republishes them.
            Err(e) => Verdict::Retry {
                delay: Duration::from_secs(1),
                reason: e.to_string(),
            },
        }
    }

    /// Carries out a verdict on a JetStream message.
    pub(super) async fn settle(&self, message: &jetstream::Message, verdict: Verdict) {
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
            Verdict::DeadLetter { cause, reason } => {
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
                }
                .bounded();
                match self.record_dead_letter(&record).await {
                    Ok(()) => {
                        self.metrics.dead_lettered(cause);
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

/// What the spans of one message need beside its context (made only when exporting).
#[derive(Debug)]
struct MessageSpans {
    receive: TraceContext,
    received_at: u64,
    decoded_at: u64,
    saga: Option<String>,
    correlation: String,
}

/// A subject without its last token (the id): `evt.ride.requested` for
/// `evt.ride.requested.r_1`, a name of few values for spans.
fn destination_template(subject: &str) -> &str {
    subject.rsplit_once('.').map_or(subject, |(head, _)| head)
}

/// The envelope id of a payload that may not decode, for the dead-letter record.
fn message_id_of(payload: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(payload).ok()?;
    value.get("id")?.as_str().map(str::to_owned)
}

/// The span of a message created on `subject` with `message_id`, under `parent`: OpenTelemetry's
/// messaging "create" operation.
fn create_span(
    created: &TraceContext,
    parent: Option<&TraceContext>,
    subject: &str,
    message_id: &str,
) -> Span {
    let destination = destination_template(subject);
    Span::ended_now(
        created,
        parent.map(|p| p.span_id),
        format!("create {destination}"),
        SpanKind::Producer,
        now_unix_nanos(),
    )
    .attribute(attr::SYSTEM, attr::NATS)
    .attribute(attr::OPERATION_TYPE, "create")
    .attribute(attr::OPERATION_NAME, "create")
    .attribute(attr::DESTINATION, subject)
    .attribute(attr::DESTINATION_TEMPLATE, format!("{destination}.*"))
    .attribute(attr::MESSAGE_ID, message_id)
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
