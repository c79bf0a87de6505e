//! Counters and a latency histogram for one worker replica, rendered as Prometheus text and as
//! the JSON the NATS service API's stats carry.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the handler latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// One replica's figures. Shared by reference (`Arc`) between the tasks that update it.
#[derive(Debug, Default)]
pub struct Metrics {
    pub handled: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub redelivered: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub published: AtomicU64,
    pub relayed: AtomicU64,
    /// Write transactions the batch writer committed: inputs applied per batch is
    /// `handled / batches`, how well group commit amortises a transaction.
    pub batches: AtomicU64,
    /// Attempts at effects (calls to the outside world), whatever their result.
    pub effects_performed: AtomicU64,
    /// Attempts at effects that failed (transiently, permanently or by timing out).
    pub effects_failed: AtomicU64,
    /// Effect outcomes committed (done, failed or given up).
    pub effects_settled: AtomicU64,
    /// Outcomes the service could not settle (the effect is performed again later).
    pub effects_settle_failed: AtomicU64,
    /// Spans not exported: the exporter's queue was full, or the collector did not take them.
    pub spans_dropped: AtomicU64,
    /// Effects recorded and not settled, as counted when this replica last claimed some.
    pub effects_pending: AtomicI64,
    pub in_flight: AtomicI64,
    /// Consumer pending + ack pending, as last read from the server (-1: unknown).
    pub consumer_lag: AtomicI64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics::default();
        m.consumer_lag.store(-1, Ordering::Relaxed);
        m
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long handling one message took.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// The stats the NATS service API reports for this replica.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "handled": self.handled.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "redelivered": self.redelivered.load(Ordering::Relaxed),
            "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
            "published": self.published.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "effects_performed": self.effects_performed.load(Ordering::Relaxed),
            "effects_failed": self.effects_failed.load(Ordering::Relaxed),
            "effects_settled": self.effects_settled.load(Ordering::Relaxed),
            "effects_settle_failed": self.effects_settle_failed.load(Ordering::Relaxed),
            "effects_pending": self.effects_pending.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "consumer_lag": self.consumer_lag.load(Ordering::Relaxed),
        })
    }

    /// Prometheus text exposition format.
    pub fn render(&self, service: &str, instance: &str) -> String {
        let labels = format!("service=\"{service}\",instance=\"{instance}\"");
        let mut out = String::new();
        let counters = [
            (
                "ridesaga_messages_handled_total",
                "Inputs applied",
                &self.handled,
            ),
            (
                "ridesaga_messages_duplicate_total",
                "Inputs already applied (inbox hits)",
                &self.duplicates,
            ),
            (
                "ridesaga_messages_failed_total",
                "Transient handler failures (nak'ed)",
                &self.failed,
            ),
            (
                "ridesaga_messages_redelivered_total",
                "Deliveries after the first",
                &self.redelivered,
            ),
            (
                "ridesaga_messages_dead_lettered_total",
                "Inputs sent to the dead-letter path",
                &self.dead_lettered,
            ),
            (
                "ridesaga_messages_published_total",
                "Outputs stored by the server",
                &self.published,
            ),
            (
                "ridesaga_outbox_relayed_total",
                "Outputs published by the relay",
                &self.relayed,
            ),
            (
                "ridesaga_batches_total",
                "Write transactions committed by the batch writer",
                &self.batches,
            ),
            (
                "ridesaga_effects_performed_total",
                "Attempts at effects (calls to the outside world)",
                &self.effects_performed,
            ),
            (
                "ridesaga_effects_failed_total",
                "Attempts at effects that failed or timed out",
                &self.effects_failed,
            ),
            (
                "ridesaga_effects_settled_total",
                "Effect outcomes committed",
                &self.effects_settled,
            ),
            (
                "ridesaga_effects_settle_failed_total",
                "Effect outcomes the service could not settle (performed again later)",
                &self.effects_settle_failed,
            ),
            (
                "ridesaga_trace_spans_dropped_total",
                "Spans not exported (queue full or collector unreachable)",
                &self.spans_dropped,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            let _ = writeln!(out, "{name}{{{labels}}} {}", value.load(Ordering::Relaxed));
        }
        let gauges = [
            (
                "ridesaga_messages_in_flight",
                "Inputs being handled",
                self.in_flight.load(Ordering::Relaxed),
            ),
            (
                "ridesaga_consumer_lag",
                "Consumer pending + ack pending (-1 unknown)",
                self.consumer_lag.load(Ordering::Relaxed),
            ),
            (
                "ridesaga_effects_pending",
                "Effects recorded and not settled, as of this replica's last claim",
                self.effects_pending.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"
            );
        }
        let name = "ridesaga_handler_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to apply one input\n# TYPE {name} histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {count}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_every_bucket_at_or_above_it() {
        let m = Metrics::new();
        m.observe(Duration::from_millis(3));
        let text = m.render("ride", "r1");
        assert!(text.contains("le=\"0.0025\"} 0"), "{text}");
        assert!(text.contains("le=\"0.005\"} 1"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 1"), "{text}");
        assert!(text.contains("ridesaga_consumer_lag{service=\"ride\",instance=\"r1\"} -1"));
    }
}
