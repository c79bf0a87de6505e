//! One worker replica's figures, rendered as Prometheus text and as the JSON the NATS service
//! API's stats carry.
//!
//! Every figure on the message path is an atomic add (a histogram's observation is three), so
//! counting costs no lock and no allocation. Labels take values from fixed sets only
//! (outcome, dead-letter cause, a saga's terminal state and reason): never an id or free text.
//! Figures read from the database (outbox, effects, the ride service's deadlines) are sampled
//! every few seconds beside the message path (`run::sample_loop`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the handler latency buckets, in seconds.
const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the batch size buckets, in inputs per write transaction.
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How the handling of one input ended (the label `outcome` of the latency histogram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Applied for the first time (its outputs published).
    Applied,
    /// Applied before (an inbox hit): acknowledged without effect.
    Duplicate,
    /// A transient failure: nak'ed for a later delivery.
    Retry,
    /// Refused for good: dead-lettered.
    DeadLetter,
}

impl Outcome {
    const ALL: [Outcome; 4] = [
        Outcome::Applied,
        Outcome::Duplicate,
        Outcome::Retry,
        Outcome::DeadLetter,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Retry => "retry",
            Outcome::DeadLetter => "dead_letter",
        }
    }
}

/// Why an input was dead-lettered (the label `reason` of the dead-letter counter); the record
/// on `dlq.<service>.<seq>` has the full text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterCause {
    /// It did not decode (oversize, malformed, invalid, disagreeing with its subject, ...).
    Undecodable,
    /// The service refused it for good (a permanent handler error, a broken constraint).
    Rejected,
    /// It failed transiently on its last allowed delivery.
    MaxDeliveries,
}

impl DeadLetterCause {
    const ALL: [DeadLetterCause; 3] = [
        DeadLetterCause::Undecodable,
        DeadLetterCause::Rejected,
        DeadLetterCause::MaxDeliveries,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeadLetterCause::Undecodable => "undecodable",
            DeadLetterCause::Rejected => "rejected",
            DeadLetterCause::MaxDeliveries => "max_deliveries",
        }
    }
}

/// A terminal state of a saga and its reason (empty when the state has none), as the label
/// pair of `ridesaga_sagas_finished_total`.
pub type SagaOutcome = (&'static str, &'static str);

/// A histogram over fixed bounds: one counter per bucket (not cumulative, so an observation
/// adds to one bucket only) and the sum in units of `1 / scale`.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    scale: f64,
    /// `bounds.len() + 1` counters, the last for values above every bound.
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            scale,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, value: f64) {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum
            .fetch_add((value * self.scale) as u64, Ordering::Relaxed);
    }

    /// Cumulative buckets, `_sum` and `_count` (the `+Inf` bucket) of series `name`.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(bound) => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One replica's figures. Shared by reference (`Arc`) between the tasks that update it.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub handled: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub redelivered: AtomicU64,
    /// Dead letters recorded, by [`DeadLetterCause`] (its index in `DeadLetterCause::ALL`).
    dead_lettered: [AtomicU64; 3],
    pub published: AtomicU64,
    pub relayed: AtomicU64,
    /// Write transactions the batch writer committed: inputs applied per batch is
    /// `handled / batches`, how well group commit amortises a transaction.
    pub batches: AtomicU64,
    /// Inputs per committed batch.
    batch_inputs: Histogram,
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
    /// Effects recorded and not settled, as last read from the database.
    pub effects_pending: AtomicI64,
    /// How long the oldest pending effect has been recorded, in milliseconds, when last read.
    effects_oldest_ms: AtomicI64,
    /// Outbox rows not yet deleted, and the age of the oldest in milliseconds, when last read.
    outbox_rows: AtomicI64,
    outbox_oldest_ms: AtomicI64,
    /// Whether the outbox has been read once (its gauges are rendered from then on).
    sampled: AtomicBool,
    pub in_flight: AtomicI64,
    /// Consumer pending + ack pending, as last read from the server (-1: not read yet).
    pub consumer_lag: AtomicI64,
    /// Handler latency, by [`Outcome`] (its index in `Outcome::ALL`).
    latency: [Histogram; 4],
    /// The terminal states this service counts, and how many sagas reached each.
    saga_outcomes: &'static [SagaOutcome],
    sagas_finished: Box<[AtomicU64]>,
    /// Sagas waiting on a deadline, those past it, and how far past it the most overdue one
    /// is (milliseconds), when last read; rendered once `sagas_sampled`.
    sagas_waiting: AtomicI64,
    sagas_overdue: AtomicI64,
    sagas_overdue_ms: AtomicI64,
    sagas_sampled: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// What the database said when last sampled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sample {
    pub outbox_rows: i64,
    /// Age of the oldest outbox row, in milliseconds (0 when there is none).
    pub outbox_oldest_ms: i64,
    pub effects_pending: i64,
    /// Age of the oldest pending effect, in milliseconds (0 when there is none).
    pub effects_oldest_ms: i64,
}

/// A service's sagas as its deadlines see them (the ride service's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SagaDeadlines {
    /// Sagas with a deadline ahead or behind (not finished, not in progress).
    pub waiting: i64,
    /// Those whose deadline has passed: the timers should have moved them on.
    pub overdue: i64,
    /// How far past its deadline the most overdue one is, in milliseconds (0: none).
    pub most_overdue_ms: i64,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        Metrics::with_saga_outcomes(&[])
    }

    /// A replica whose service counts the sagas that end in one of `outcomes`.
    pub(crate) fn with_saga_outcomes(outcomes: &'static [SagaOutcome]) -> Self {
        Metrics {
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            dead_lettered: Default::default(),
            published: AtomicU64::new(0),
            relayed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_inputs: Histogram::new(BATCH_BOUNDS, 1.0),
            effects_performed: AtomicU64::new(0),
            effects_failed: AtomicU64::new(0),
            effects_settled: AtomicU64::new(0),
            effects_settle_failed: AtomicU64::new(0),
            spans_dropped: AtomicU64::new(0),
            effects_pending: AtomicI64::new(0),
            effects_oldest_ms: AtomicI64::new(0),
            outbox_rows: AtomicI64::new(0),
            outbox_oldest_ms: AtomicI64::new(0),
            sampled: AtomicBool::new(false),
            in_flight: AtomicI64::new(0),
            consumer_lag: AtomicI64::new(-1),
            latency: Outcome::ALL.map(|_| Histogram::new(LATENCY_BOUNDS, 1e6)),
            saga_outcomes: outcomes,
            sagas_finished: outcomes.iter().map(|_| AtomicU64::new(0)).collect(),
            sagas_waiting: AtomicI64::new(0),
            sagas_overdue: AtomicI64::new(0),
            sagas_overdue_ms: AtomicI64::new(0),
            sagas_sampled: AtomicBool::new(false),
        }
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how long handling one input took, and how it ended.
    pub(crate) fn observe(&self, outcome: Outcome, elapsed: Duration) {
        self.latency[outcome as usize].observe(elapsed.as_secs_f64());
    }

    /// Records a dead letter.
    pub(crate) fn dead_lettered(&self, cause: DeadLetterCause) {
        Metrics::inc(&self.dead_lettered[cause as usize]);
    }

    /// Dead letters recorded, whatever their cause.
    pub(crate) fn dead_letters(&self) -> u64 {
        self.dead_lettered
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// Records a committed batch of `inputs` inputs.
    pub(crate) fn batch(&self, inputs: usize) {
        Metrics::inc(&self.batches);
        self.batch_inputs.observe(inputs as f64);
    }

    /// Records a saga that ended in `saga_outcomes()[index]`.
    pub(crate) fn saga_finished(&self, index: usize) {
        if let Some(counter) = self.sagas_finished.get(index) {
            Metrics::inc(counter);
        }
    }

    /// Stores what the database said.
    pub(crate) fn sampled(&self, sample: Sample) {
        self.outbox_rows
            .store(sample.outbox_rows, Ordering::Relaxed);
        self.outbox_oldest_ms
            .store(sample.outbox_oldest_ms, Ordering::Relaxed);
        self.effects_pending
            .store(sample.effects_pending, Ordering::Relaxed);
        self.effects_oldest_ms
            .store(sample.effects_oldest_ms, Ordering::Relaxed);
        self.sampled.store(true, Ordering::Relaxed);
    }

    /// Stores what the service's deadlines said.
    pub(crate) fn saga_deadlines(&self, deadlines: SagaDeadlines) {
        self.sagas_waiting
            .store(deadlines.waiting, Ordering::Relaxed);
        self.sagas_overdue
            .store(deadlines.overdue, Ordering::Relaxed);
        self.sagas_overdue_ms
            .store(deadlines.most_overdue_ms, Ordering::Relaxed);
        self.sagas_sampled.store(true, Ordering::Relaxed);
    }

    /// The stats the NATS service API reports for this replica.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "handled": self.handled.load(Ordering::Relaxed),
            "duplicates": self.duplicates.load(Ordering::Relaxed),
            "failed": self.failed.load(Ordering::Relaxed),
            "redelivered": self.redelivered.load(Ordering::Relaxed),
            "dead_lettered": self.dead_letters(),
            "published": self.published.load(Ordering::Relaxed),
            "batches": self.batches.load(Ordering::Relaxed),
            "effects_performed": self.effects_performed.load(Ordering::Relaxed),
            "effects_failed": self.effects_failed.load(Ordering::Relaxed),
            "effects_settled": self.effects_settled.load(Ordering::Relaxed),
            "effects_settle_failed": self.effects_settle_failed.load(Ordering::Relaxed),
            "effects_pending": self.effects_pending.load(Ordering::Relaxed),
            "outbox_rows": self.outbox_rows.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "consumer_lag": self.consumer_lag.load(Ordering::Relaxed),
        })
    }

    /// Prometheus text exposition format (0.0.4).
    pub(crate) fn render(&self, service: &str, instance: &str) -> String {
        let labels = format!("service=\"{service}\",replica=\"{instance}\"");
        let mut out = String::with_capacity(8192);
        let counters = [
            (
                "ridesaga_messages_handled_total",
                "Inputs applied for the first time",
                &self.handled,
            ),
            (
                "ridesaga_messages_duplicate_total",
                "Inputs already applied (inbox hits), acknowledged without effect",
                &self.duplicates,
            ),
            (
                "ridesaga_messages_failed_total",
                "Transient handler failures (nak'ed for a later delivery)",
                &self.failed,
            ),
            (
                "ridesaga_messages_redelivered_total",
                "Deliveries after the first",
                &self.redelivered,
            ),
            (
                "ridesaga_messages_published_total",
                "Outputs stored by the server",
                &self.published,
            ),
            (
                "ridesaga_outbox_relayed_total",
                "Outputs published by the relay (left behind by a crash or a failed publish)",
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

        let name = "ridesaga_messages_dead_lettered_total";
        let _ = writeln!(
            out,
            "# HELP {name} Inputs dead-lettered, by cause (undecodable, rejected by the \
             service, failed on the last allowed delivery)\n# TYPE {name} counter"
        );
        for cause in DeadLetterCause::ALL {
            let value = self.dead_lettered[cause as usize].load(Ordering::Relaxed);
            let reason = cause.as_str();
            let _ = writeln!(out, "{name}{{{labels},reason=\"{reason}\"}} {value}");
        }

        if !self.saga_outcomes.is_empty() {
            let name = "ridesaga_sagas_finished_total";
            let _ = writeln!(
                out,
                "# HELP {name} Sagas that reached a terminal state, by state and reason\n\
                 # TYPE {name} counter"
            );
            for ((state, reason), value) in self.saga_outcomes.iter().zip(&self.sagas_finished) {
                let value = value.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}{{{labels},state=\"{state}\",reason=\"{reason}\"}} {value}"
                );
            }
        }

        let seconds = |ms: &AtomicI64| ms.load(Ordering::Relaxed) as f64 / 1000.0;
        let mut gauges = vec![(
            "ridesaga_messages_in_flight",
            "Inputs being handled",
            self.in_flight.load(Ordering::Relaxed) as f64,
        )];
        let lag = self.consumer_lag.load(Ordering::Relaxed);
        if lag >= 0 {
            gauges.push((
                "ridesaga_consumer_lag",
                "The service consumer's pending + ack pending messages, as last read from \
                 the server",
                lag as f64,
            ));
        }
        gauges.push((
            "ridesaga_effects_pending",
            "Effects recorded and not settled, as last read",
            self.effects_pending.load(Ordering::Relaxed) as f64,
        ));
        if self.sampled.load(Ordering::Relaxed) {
            gauges.extend([
                (
                    "ridesaga_effects_oldest_pending_age_seconds",
                    "How long ago the oldest pending effect was recorded (0: none pending)",
                    seconds(&self.effects_oldest_ms),
                ),
                (
                    "ridesaga_outbox_rows",
                    "Outputs in the outbox: being published, or waiting for the relay",
                    self.outbox_rows.load(Ordering::Relaxed) as f64,
                ),
                (
                    "ridesaga_outbox_oldest_age_seconds",
                    "How long ago the oldest outbox row was written (0: outbox empty)",
                    seconds(&self.outbox_oldest_ms),
                ),
            ]);
        }
        if self.sagas_sampled.load(Ordering::Relaxed) {
            gauges.extend([
                (
                    "ridesaga_sagas_waiting",
                    "Sagas waiting on a deadline (neither finished nor in progress)",
                    self.sagas_waiting.load(Ordering::Relaxed) as f64,
                ),
                (
                    "ridesaga_sagas_overdue",
                    "Sagas past their deadline that the timers have not moved on yet",
                    self.sagas_overdue.load(Ordering::Relaxed) as f64,
                ),
                (
                    "ridesaga_sagas_overdue_seconds",
                    "How far past its deadline the most overdue saga is (0: none)",
                    seconds(&self.sagas_overdue_ms),
                ),
            ]);
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"
            );
        }

        let name = "ridesaga_handler_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a decoded input to its verdict (transaction and publish of \
             its outputs), by outcome\n# TYPE {name} histogram"
        );
        for outcome in Outcome::ALL {
            let labels = format!("{labels},outcome=\"{}\"", outcome.as_str());
            self.latency[outcome as usize].render(&mut out, name, &labels);
        }
        let name = "ridesaga_batch_inputs";
        let _ = writeln!(
            out,
            "# HELP {name} Inputs per write transaction of the batch writer\n# TYPE {name} histogram"
        );
        self.batch_inputs.render(&mut out, name, &labels);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'a>(text: &'a str, series: &str) -> &'a str {
        text.lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|rest| rest.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    #[test]
    fn latency_lands_in_every_bucket_at_or_above_it() {
        let m = Metrics::new();
        m.observe(Outcome::Applied, Duration::from_millis(3));
        m.observe(Outcome::Applied, Duration::from_millis(5));
        m.observe(Outcome::Applied, Duration::from_secs(20));
        let text = m.render("ride", "r1");
        let series = |le: &str| {
            format!(
                "ridesaga_handler_duration_seconds_bucket{{service=\"ride\",replica=\"r1\",\
                 outcome=\"applied\",le=\"{le}\"}}"
            )
        };
        assert_eq!(value(&text, &series("0.0025")), "0");
        // A bound counts the observations equal to it.
        assert_eq!(value(&text, &series("0.005")), "2");
        assert_eq!(value(&text, &series("10")), "2");
        assert_eq!(value(&text, &series("+Inf")), "3");
        let count = "ridesaga_handler_duration_seconds_count{service=\"ride\",replica=\"r1\",\
                     outcome=\"applied\"}";
        assert_eq!(value(&text, count), "3");
        let sum = "ridesaga_handler_duration_seconds_sum{service=\"ride\",replica=\"r1\",\
                   outcome=\"applied\"}";
        assert_eq!(value(&text, sum), "20.008");
        let retries = "ridesaga_handler_duration_seconds_count{service=\"ride\",replica=\"r1\",\
                       outcome=\"retry\"}";
        assert_eq!(value(&text, retries), "0");
    }

    #[test]
    fn unknown_figures_are_left_out_rather_than_made_up() {
        let m = Metrics::new();
        let text = m.render("ride", "r1");
        assert!(!text.contains("ridesaga_consumer_lag"), "{text}");
        assert!(!text.contains("ridesaga_outbox_rows"), "{text}");
        assert!(!text.contains("ridesaga_sagas_"), "{text}");
        m.consumer_lag.store(7, Ordering::Relaxed);
        m.sampled(Sample {
            outbox_rows: 2,
            outbox_oldest_ms: 1500,
            ..Sample::default()
        });
        let text = m.render("ride", "r1");
        assert_eq!(
            value(
                &text,
                "ridesaga_consumer_lag{service=\"ride\",replica=\"r1\"}"
            ),
            "7"
        );
        assert_eq!(
            value(
                &text,
                "ridesaga_outbox_oldest_age_seconds{service=\"ride\",replica=\"r1\"}"
            ),
            "1.5"
        );
    }

    #[test]
    fn dead_letters_batches_and_sagas_are_counted_by_bounded_labels() {
        const OUTCOMES: &[SagaOutcome] = &[("completed", ""), ("cancelled", "no_driver")];
        let m = Metrics::with_saga_outcomes(OUTCOMES);
        m.dead_lettered(DeadLetterCause::MaxDeliveries);
        m.dead_lettered(DeadLetterCause::MaxDeliveries);
        m.dead_lettered(DeadLetterCause::Undecodable);
        m.batch(3);
        m.batch(64);
        m.saga_finished(1);
        m.saga_finished(7); // not one of the service's outcomes: ignored
        let text = m.render("ride", "r1");
        let dlq = |reason: &str| {
            format!(
                "ridesaga_messages_dead_lettered_total{{service=\"ride\",replica=\"r1\",\
                 reason=\"{reason}\"}}"
            )
        };
        assert_eq!(value(&text, &dlq("max_deliveries")), "2");
        assert_eq!(value(&text, &dlq("undecodable")), "1");
        assert_eq!(value(&text, &dlq("rejected")), "0");
        assert_eq!(m.dead_letters(), 3);
        let batch = |le: &str| {
            format!("ridesaga_batch_inputs_bucket{{service=\"ride\",replica=\"r1\",le=\"{le}\"}}")
        };
        assert_eq!(value(&text, &batch("2")), "0");
        assert_eq!(value(&text, &batch("4")), "1");
        assert_eq!(value(&text, &batch("64")), "2");
        assert_eq!(
            value(
                &text,
                "ridesaga_batch_inputs_sum{service=\"ride\",replica=\"r1\"}"
            ),
            "67"
        );
        let sagas = |state: &str, reason: &str| {
            format!(
                "ridesaga_sagas_finished_total{{service=\"ride\",replica=\"r1\",\
                 state=\"{state}\",reason=\"{reason}\"}}"
            )
        };
        assert_eq!(value(&text, &sagas("completed", "")), "0");
        assert_eq!(value(&text, &sagas("cancelled", "no_driver")), "1");
    }
}
