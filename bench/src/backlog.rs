//! The backlog drain (`--backlog N`): what it measured, the verdict of `ridectl audit` on the
//! log it left, its section of the report and its fields of the summary line. The run itself
//! is in [`crate::run`].
//!
//! Ride requests are stored while no worker runs; then `--replicas` replicas of every worker
//! start at once and the generator follows every saga to its capture, as a phase does once it
//! stops starting sagas. The drain passes when every saga completed, the consumers are empty,
//! and `ridectl audit --settle 0s` (every saga judged as finished, liveness invariants
//! included) finds every saga of the log ended and no invariant broken.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ridesaga_schemas::Service;

use crate::report::Phase;
use crate::stats::Summary;

/// What the drain measured.
#[derive(Debug, Clone, Default)]
pub struct BacklogRun {
    /// Ride requests stored before any worker of the drain started.
    pub queued: u64,
    /// Messages waiting for the ride service once they were stored.
    pub waiting: u64,
    pub replicas: u32,
    pub drivers: usize,
    /// The drain, its times from the workers' start: `elapsed` to the last event, `confirm_ms`
    /// and `saga_ms` to each saga's confirmation and capture.
    pub phase: Phase,
    /// Inputs each replica handled, per service, largest first.
    pub handled_per_replica: BTreeMap<Service, Vec<u64>>,
    /// How much each service's database grew during the drain, in bytes.
    pub stored_bytes: BTreeMap<Service, u64>,
    pub audit: Audit,
}

/// `ridectl audit` over the whole saga stream after the drain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audit {
    /// The command as run (without the environment).
    pub command: String,
    /// It exited with 0.
    pub success: bool,
    pub sagas: u64,
    pub terminal: u64,
    pub in_flight: u64,
    /// Broken invariants, as `ride: invariant N: message`.
    pub violations: Vec<String>,
    /// Why its output could not be read, with the end of what it wrote to stderr.
    pub error: Option<String>,
}

impl Audit {
    /// Reads the JSON report `ridectl --output json audit` prints (`sagas`, `terminal`,
    /// `in_flight`, `violations`), and its exit status.
    pub fn parse(command: String, success: bool, stdout: &str, stderr: &str) -> Audit {
        let mut audit = Audit {
            command,
            success,
            ..Audit::default()
        };
        let value = match serde_json::from_str::<serde_json::Value>(stdout.trim()) {
            Ok(value) if value.is_object() => value,
            _ => {
                let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                audit.error = Some(format!(
                    "no JSON report on stdout; stderr: {}",
                    if tail.is_empty() {
                        "(empty)".to_owned()
                    } else {
                        tail.join(" / ")
                    }
                ));
                return audit;
            }
        };
        let count = |key: &str| value[key].as_u64().unwrap_or(0);
        audit.sagas = count("sagas");
        audit.terminal = count("terminal");
        audit.in_flight = count("in_flight");
        audit.violations = value["violations"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|v| {
                        format!(
                            "{}: invariant {}: {}",
                            v["ride_id"].as_str().unwrap_or("?"),
                            v["invariant"],
                            v["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        audit
    }

    /// Exit 0, no violation, and every saga of the log ended and judged.
    pub fn clean(&self) -> bool {
        self.success
            && self.error.is_none()
            && self.violations.is_empty()
            && self.in_flight == 0
            && self.sagas > 0
            && self.terminal == self.sagas
    }

    /// One line: `clean: N sagas, N ended, 0 in flight`, or what is wrong.
    pub fn verdict(&self) -> String {
        let counts = format!(
            "{} sagas, {} ended, {} in flight",
            self.sagas, self.terminal, self.in_flight
        );
        if self.clean() {
            return format!("clean: {counts}");
        }
        let mut why = Vec::new();
        if let Some(error) = &self.error {
            why.push(error.clone());
        }
        if !self.success {
            why.push("exited with an error".to_owned());
        }
        if !self.violations.is_empty() {
            why.push(format!("{} invariant violations", self.violations.len()));
        }
        if self.error.is_none() && (self.in_flight > 0 || self.terminal != self.sagas) {
            why.push("not every saga ended".to_owned());
        }
        if self.error.is_none() && self.sagas == 0 {
            why.push("no saga in the log".to_owned());
        }
        format!("not clean ({}): {counts}", why.join("; "))
    }
}

impl BacklogRun {
    /// What the drain added to the databases per saga, per service and in all (each service's
    /// inbox, its state and its outbox until published), as a report line.
    pub fn stored_bytes_line(&self) -> Option<String> {
        let sagas = self.phase.outcome.captured.max(1) as f64;
        if self.stored_bytes.is_empty() {
            return None;
        }
        let total: u64 = self.stored_bytes.values().sum();
        let each: Vec<String> = self
            .stored_bytes
            .iter()
            .map(|(service, bytes)| format!("{service} {:.0}", *bytes as f64 / sagas))
            .collect();
        Some(format!(
            "- stored per saga (database growth during the drain / sagas): {:.0} bytes ({})",
            total as f64 / sagas,
            each.join(", ")
        ))
    }

    /// Every queued saga completed, none is left open, and the audit is clean.
    pub fn passed(&self) -> bool {
        let o = &self.phase.outcome;
        o.captured == self.queued
            && o.failed() == 0
            && o.unfinished == 0
            && o.quiet
            && self.audit.clean()
            && self.audit.sagas == self.queued
    }

    /// What the report lists under its problems.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let o = &self.phase.outcome;
        if o.captured != self.queued && o.failed() == 0 && o.unfinished == 0 {
            out.push(format!(
                "backlog: {} of {} queued sagas completed",
                o.captured, self.queued
            ));
        }
        if !self.audit.clean() {
            out.push(format!("backlog: ridectl audit: {}", self.audit.verdict()));
            for violation in self.audit.violations.iter().take(10) {
                out.push(format!("backlog: {violation}"));
            }
        } else if self.audit.sagas != self.queued {
            out.push(format!(
                "backlog: the audit found {} sagas in the log, {} were queued",
                self.audit.sagas, self.queued
            ));
        }
        out
    }

    /// CPU milliseconds per completed saga of the processes `filter` keeps.
    pub fn cpu_ms_per_saga(&self, filter: impl Fn(&str) -> bool) -> Option<f64> {
        let sagas = self.phase.outcome.captured;
        let cpu: f64 = self
            .phase
            .usage
            .iter()
            .filter(|(name, _)| filter(name))
            .map(|(_, usage)| usage.cpu_seconds)
            .sum();
        (sagas > 0).then(|| 1000.0 * cpu / sagas as f64)
    }

    /// Its fields of the summary line.
    pub fn summary_fields(&self) -> Vec<(&'static str, String)> {
        let o = &self.phase.outcome;
        let mut out = vec![
            ("backlog", self.queued.to_string()),
            ("replicas", self.replicas.to_string()),
            ("sagas", o.captured.to_string()),
            ("drain_s", format!("{:.2}", o.elapsed.as_secs_f64())),
            ("sagas_per_s", format!("{:.1}", o.per_second())),
        ];
        if let Some(confirmed) = Summary::of(&o.confirm_ms) {
            out.push(("p50_confirmed_s", format!("{:.2}", confirmed.p50 / 1000.0)));
        }
        if let Some(cpu) = self.cpu_ms_per_saga(|_| true) {
            out.push(("cpu_ms_per_saga", format!("{cpu:.3}")));
        }
        out.push((
            "audit",
            if self.audit.clean() {
                "clean"
            } else {
                "failed"
            }
            .into(),
        ));
        out.push(("failed", (o.failed() + o.unfinished).to_string()));
        out
    }

    /// The report's section.
    pub fn render(&self, out: &mut String) {
        let o = &self.phase.outcome;
        out.push_str("\n## Backlog drain\n\n");
        let _ = writeln!(
            out,
            "{} ride requests were stored while no worker ran ({} messages waiting for the ride \
             service), with {} drivers online around the city; then {} replicas of every worker \
             started at once, each service's replicas sharing its database. Times run from the \
             workers' start; the generator starts and completes each ride as its events arrive.\n",
            self.queued, self.waiting, self.drivers, self.replicas
        );
        let _ = writeln!(
            out,
            "- sagas: {} queued, {} completed, {} failed, {} unfinished; {} publish errors",
            self.queued,
            o.captured,
            o.failed(),
            o.unfinished,
            o.publish_errors
        );
        for (why, count) in &o.failures {
            let _ = writeln!(out, "- failed: {count} x {why}");
        }
        let _ = writeln!(
            out,
            "- drained in {:.2} s, from the workers' start to the last event: {:.1} sagas per \
             second (steady state, 10th to 90th percentile completion: {} per second); \
             consumers empty at the end: {}",
            o.elapsed.as_secs_f64(),
            o.per_second(),
            o.steady_per_second
                .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.1}")),
            if o.quiet { "yes" } else { "no" }
        );
        for (name, samples) in [("confirmed", &o.confirm_ms), ("captured", &o.saga_ms)] {
            if let Some(s) = Summary::of(samples) {
                let _ = writeln!(
                    out,
                    "- workers' start -> {name}: p50 {:.2} s, p99 {:.2} s, last {:.2} s",
                    s.p50 / 1000.0,
                    s.p99 / 1000.0,
                    s.max / 1000.0
                );
            }
        }
        if !self.handled_per_replica.is_empty() {
            let shares: Vec<String> = self
                .handled_per_replica
                .iter()
                .map(|(service, handled)| {
                    let each: Vec<String> = handled.iter().map(u64::to_string).collect();
                    format!("{service} {}", each.join(" / "))
                })
                .collect();
            let _ = writeln!(
                out,
                "- inputs handled by each replica: {}",
                shares.join(", ")
            );
        }
        if let Some(line) = self.stored_bytes_line() {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "- `{}`: {}", self.audit.command, self.audit.verdict());
        for violation in self.audit.violations.iter().take(20) {
            let _ = writeln!(out, "  - {violation}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::generator::Outcome;

    const CLEAN: &str = r#"{"sagas":2000,"terminal":2000,"in_flight":0,"violations":[]}"#;

    fn audit(success: bool, stdout: &str) -> Audit {
        Audit::parse("ridectl audit".into(), success, stdout, "error: boom\n")
    }

    #[test]
    fn an_audit_is_clean_only_with_every_saga_ended_and_nothing_broken() {
        let clean = audit(true, CLEAN);
        assert!(clean.clean(), "{clean:?}");
        assert_eq!(
            clean.verdict(),
            "clean: 2000 sagas, 2000 ended, 0 in flight"
        );

        let in_flight = audit(
            true,
            r#"{"sagas":2000,"terminal":1990,"in_flight":10,"violations":[]}"#,
        );
        assert!(!in_flight.clean());
        assert!(in_flight.verdict().contains("not every saga ended"));

        let broken = audit(
            false,
            r#"{"sagas":3,"terminal":3,"in_flight":0,"violations":[
                {"ride_id":"r_1","invariant":2,"message":"driver d_1 assigned twice"}]}"#,
        );
        assert!(!broken.clean());
        assert_eq!(
            broken.violations,
            ["r_1: invariant 2: driver d_1 assigned twice"]
        );
        assert!(broken.verdict().contains("1 invariant violations"));

        let unreadable = audit(false, "");
        assert!(!unreadable.clean());
        assert!(
            unreadable.verdict().contains("stderr: error: boom"),
            "{}",
            unreadable.verdict()
        );
        assert!(
            !audit(
                true,
                r#"{"sagas":0,"terminal":0,"in_flight":0,"violations":[]}"#
            )
            .clean()
        );
    }

    fn drained(captured: u64) -> BacklogRun {
        BacklogRun {
            queued: 2000,
            waiting: 2000,
            replicas: 3,
            drivers: 2000,
            phase: Phase {
                outcome: Outcome {
                    started: 2000,
                    captured,
                    elapsed: Duration::from_secs(8),
                    confirm_ms: vec![1000.0, 2000.0, 3000.0],
                    quiet: true,
                    ..Outcome::default()
                },
                usage: BTreeMap::from([
                    ("postgres".to_owned(), crate::report::fixture::usage(2.0)),
                    (
                        "ride-worker#1".to_owned(),
                        crate::report::fixture::usage(6.0),
                    ),
                ]),
                ..Phase::default()
            },
            handled_per_replica: BTreeMap::from([(Service::Ride, vec![2100, 2000, 1900])]),
            stored_bytes: BTreeMap::from([
                (Service::Ride, 3_000_000),
                (Service::Driver, 1_000_000),
            ]),
            audit: audit(true, CLEAN),
        }
    }

    #[test]
    fn a_drain_passes_when_every_saga_completed_and_the_audit_is_clean() {
        let run = drained(2000);
        assert!(run.passed());
        assert!(run.problems().is_empty());
        let fields: Vec<String> = run
            .summary_fields()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            fields.join(" "),
            "backlog=2000 replicas=3 sagas=2000 drain_s=8.00 sagas_per_s=250.0 \
             p50_confirmed_s=2.00 cpu_ms_per_saga=4.000 audit=clean failed=0"
        );
        assert_eq!(run.cpu_ms_per_saga(|n| n == "postgres"), Some(1.0));
        let mut text = String::new();
        run.render(&mut text);
        assert!(text.contains("- inputs handled by each replica: ride 2100 / 2000 / 1900"));
        assert!(
            text.contains("- stored per saga (database growth during the drain / sagas): 2000 bytes (ride 1500, driver 500)"),
            "{text}"
        );
        assert!(
            text.contains("- `ridectl audit`: clean: 2000 sagas"),
            "{text}"
        );

        let short = drained(1990);
        assert!(!short.passed());
        assert_eq!(
            short.problems(),
            ["backlog: 1990 of 2000 queued sagas completed"]
        );
        let mut unclean = drained(2000);
        unclean.audit = audit(false, "");
        assert!(!unclean.passed());
        assert!(unclean.problems()[0].starts_with("backlog: ridectl audit: not clean"));
    }
}
