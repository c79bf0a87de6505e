//! Spans of a worker, and their export.
//!
//! The trace context always travels (see [`ridesaga_schemas::trace`]); spans are made and
//! exported only when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`, or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). Without one, [`Tracer::enabled`] is false and the
//! message path builds no span at all.
//!
//! With one, a finished span goes into a bounded queue ([`QUEUE`]) with `try_send`: a worker
//! never waits for the exporter. A span that finds the queue full is dropped and counted
//! (`ridesaga_trace_spans_dropped_total`), and so is every span of an export the collector did
//! not take (unreachable, slow past [`EXPORT_TIMEOUT`], or refusing). The exporter task sends
//! what gathered, up to [`BATCH`] spans a request, at least every [`EXPORT_INTERVAL`].
//!
//! The exporter is the small OTLP/HTTP JSON one of `ridesaga_schemas::trace`, not the
//! OpenTelemetry SDK: see there why.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ridesaga_schemas::trace::{Endpoint, Span, encode_spans, post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::metrics::Metrics;

/// Spans waiting for export, at most.
pub(super) const QUEUE: usize = 4096;
/// Spans in one export request, at most.
pub(super) const BATCH: usize = 512;
/// How long spans wait for an export, at most.
pub(super) const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How long one export may take.
pub(super) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands spans to the exporter, or nothing when exporting is off. Clones share the queue.
#[derive(Debug, Clone)]
pub(super) struct Tracer {
    queue: Option<mpsc::Sender<Span>>,
    metrics: Arc<Metrics>,
}

impl Tracer {
    /// A tracer that exports nothing.
    pub(super) fn off(metrics: Arc<Metrics>) -> Tracer {
        Tracer {
            queue: None,
            metrics,
        }
    }

    /// A tracer that exports to `endpoint` as `service` / `instance`, and its exporter task,
    /// which sends what is queued once `stop` is cancelled and the tracer's clones are gone
    /// (or `stop` plus one more interval), then ends.
    pub(super) fn exporting(
        endpoint: Endpoint,
        service: String,
        instance: String,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Tracer, impl Future<Output = ()> + Send + 'static) {
        let (queue, spans) = mpsc::channel(QUEUE);
        let exporter = export_loop(spans, endpoint, service, instance, metrics.clone(), stop);
        (
            Tracer {
                queue: Some(queue),
                metrics,
            },
            exporter,
        )
    }

    /// Whether spans are wanted: the message path makes none when they are not.
    pub(super) fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Queues a finished span for export; drops it (counted) when the queue is full.
    pub(super) fn record(&self, span: Span) {
        if let Some(queue) = &self.queue
            && queue.try_send(span).is_err()
        {
            Metrics::inc(&self.metrics.spans_dropped);
        }
    }
}

async fn export_loop(
    mut spans: mpsc::Receiver<Span>,
    endpoint: Endpoint,
    service: String,
    instance: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    tracing::info!(%endpoint, "exporting spans over OTLP/HTTP");
    let mut batch: Vec<Span> = Vec::with_capacity(BATCH);
    let mut last_warning: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let deadline = tokio::time::Instant::now() + EXPORT_INTERVAL;
        // Gather until the batch is full or the interval is over.
        while batch.len() < BATCH {
            tokio::select! {
                span = spans.recv() => match span {
                    Some(span) => batch.push(span),
                    None => { stopping = true; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = stop.cancelled(), if !stopping => { stopping = true; }
            }
        }
        if stopping {
            while batch.len() < BATCH {
                match spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
        }
        if !batch.is_empty() {
            let body = encode_spans(&service, &instance, &batch);
            if let Err(error) = post(&endpoint, &body, EXPORT_TIMEOUT).await {
                metrics
                    .spans_dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                // One warning a minute at most: a collector that is down is not news each second.
                if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(%error, spans = batch.len(), "spans not exported; dropped");
                    last_warning = Some(Instant::now());
                }
            }
            batch.clear();
        }
        if stopping && spans.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ridesaga_schemas::TraceContext;
    use ridesaga_schemas::trace::SpanKind;

    fn span() -> Span {
        Span::ended_now(&TraceContext::new_root(), None, "s", SpanKind::Internal, 0)
    }

    #[tokio::test]
    async fn a_full_queue_drops_spans_and_counts_them_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        // A collector that is not there: the exporter task is not even running.
        let endpoint = Endpoint::parse("http://127.0.0.1:9/v1/traces").unwrap();
        let (tracer, _exporter) = Tracer::exporting(
            endpoint,
            "ride-worker".into(),
            "ride-1".into(),
            metrics.clone(),
            CancellationToken::new(),
        );
        let started = Instant::now();
        for _ in 0..QUEUE + 100 {
            tracer.record(span());
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(metrics.spans_dropped.load(Ordering::Relaxed), 100);
    }

    #[tokio::test]
    async fn spans_a_collector_does_not_take_are_counted_as_dropped() {
        let metrics = Arc::new(Metrics::new());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}/v1/traces")).unwrap();
        let stop = CancellationToken::new();
        let (tracer, exporter) = Tracer::exporting(
            endpoint,
            "ride-worker".into(),
            "ride-1".into(),
            metrics.clone(),
            stop.clone(),
        );
        let exporter = tokio::spawn(exporter);
        for _ in 0..3 {
            tracer.record(span());
        }
        stop.cancel();
        drop(tracer);
        exporter.await.unwrap();
        assert_eq!(metrics.spans_dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_tracer_that_is_off_wants_no_spans() {
        let metrics = Arc::new(Metrics::new());
        let tracer = Tracer::off(metrics.clone());
        assert!(!tracer.enabled());
        tracer.record(span());
        assert_eq!(metrics.spans_dropped.load(Ordering::Relaxed), 0);
    }
}
