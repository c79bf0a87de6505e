//! The backlog drain of a run (`--backlog`): drivers online through one replica of every
//! worker, which then stops; ride requests stored while no worker runs; then every replica
//! started at once, the drain followed to its last event, and `ridectl audit` over the log it
//! left. The drain passes when every saga completed, the consumers are empty, and
//! `ridectl audit --settle 0s` (every saga judged as finished, liveness invariants included)
//! finds every saga of the log ended and no invariant broken.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use ridesaga_schemas::auth::Identity;

use super::{READY_TIMEOUT, Run, backlog_drivers, by_name, usage_between};
use crate::consumers;
use crate::fleet::{self, Fleet};
use crate::generator::Generator;
use crate::notes::note_phase_problems;
use crate::results::{Audit, Backlog, Phase, Results};

/// How long `ridectl audit` may take.
const AUDIT_TIMEOUT: Duration = Duration::from_secs(300);

impl Run {
    /// Queues `queued` ride requests, drains them with `replicas` replicas of every worker and
    /// audits the log with `ridectl`; puts the drain in the results.
    pub(super) async fn backlog(
        &mut self,
        queued: u64,
        replicas: u32,
        ridectl: &Path,
        results: &mut Results,
    ) -> anyhow::Result<()> {
        let drivers = backlog_drivers(&self.settings, queued);
        eprintln!("bench: backlog: one replica of every worker brings {drivers} drivers online");
        self.fleet.start_replica(1, &self.pids)?;
        self.fleet
            .wait_ready(&self.client, 1, READY_TIMEOUT, self.ticks)
            .await?;
        let mut generator = Generator::connect(self.server.connect().await?).await?;
        generator
            .bring_drivers_online(drivers, READY_TIMEOUT)
            .await?;
        self.wait_quiet(READY_TIMEOUT).await?;
        eprintln!("bench: backlog: stopping the workers");
        self.fleet.stop().await;
        // The same databases for the replicas that drain the backlog.
        self.fleet = Fleet::new(self.fleet.config().clone());

        eprintln!("bench: backlog: storing {queued} ride requests while no worker runs");
        let backlog = generator.queue_requests(queued).await?;
        let waiting = backlog.waiting;
        let drain_timeout = self.settings.drain_timeout.max(Duration::from_secs(120))
            + Duration::from_millis(50 * queued);

        let bytes_before = self.fleet.database_bytes().await?;
        let deliveries_before = consumers::snapshot(&self.js).await?;
        let cpu_before = self.sample_all()?;
        eprintln!("bench: backlog: starting {replicas} replicas of every worker");
        let started = Instant::now();
        for replica in 1..=replicas {
            self.fleet.start_replica(replica, &self.pids)?;
        }
        let fleet = &mut self.fleet;
        let server = &mut self.server;
        let mut health = || {
            server.process.check_running()?;
            fleet.check_running()
        };
        let outcome = generator
            .drain(backlog, started, drain_timeout, &mut health)
            .await?;
        let cpu_after = self.sample_all()?;
        let deliveries_after = consumers::snapshot(&self.js).await?;
        eprintln!(
            "bench: backlog: {} of {queued} sagas completed in {:.2} s ({:.1} per second)",
            outcome.captured,
            outcome.elapsed.as_secs_f64(),
            outcome.per_second()
        );
        let phase = Phase {
            deliveries: by_name(consumers::deliveries_between(
                &deliveries_before,
                &deliveries_after,
            )),
            worker_counts: by_name(fleet::worker_counts(&self.client).await?),
            usage: usage_between(&cpu_before, &cpu_after),
            ..outcome.into_phase(None)
        };
        note_phase_problems(results, "backlog drain", &phase);
        let handled_per_replica = fleet::handled_per_replica(&self.client).await?;
        for (service, handled) in &handled_per_replica {
            if handled.len() != replicas as usize {
                results.problems.push(format!(
                    "backlog: {} of {replicas} {service} replicas answered at the end",
                    handled.len()
                ));
            }
        }

        let bytes_after = self.fleet.database_bytes().await?;
        let stored_bytes = bytes_after
            .iter()
            .map(|(service, after)| {
                let before = bytes_before.get(service).copied().unwrap_or(0);
                (service.name().to_owned(), after.saturating_sub(before))
            })
            .collect();
        eprintln!("bench: backlog: ridectl audit");
        let audit = self.audit(ridectl).await?;
        eprintln!("bench: backlog: audit {}", audit.verdict());
        let run = Backlog {
            queued,
            waiting,
            replicas,
            drivers,
            drain: phase,
            handled_per_replica: by_name(handled_per_replica),
            stored_bytes,
            audit,
        };
        results.problems.extend(run.problems());
        results.backlog = Some(run);
        Ok(())
    }

    /// Waits until no service consumer has anything pending or awaiting an ack.
    async fn wait_quiet(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let snapshot = consumers::snapshot(&self.js).await?;
            if consumers::is_quiet(&snapshot) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the service consumers were not empty after {timeout:?}: {snapshot:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `ridectl --output json audit --settle 0s` against the run's server: every saga in the
    /// log is judged as finished, so the liveness invariants are checked for all of them.
    async fn audit(&self, ridectl: &Path) -> anyhow::Result<Audit> {
        let args = ["--output", "json", "audit", "--settle", "0s"];
        let mut command = Command::new(ridectl);
        command
            .args(args)
            .env("NATS_URL", self.server.url())
            // As the run's server's ridectl-admin; credentials for another server must not be
            // sent.
            .env_remove("NATS_USER")
            .env_remove("NATS_PASSWORD")
            .env_remove("NATS_CREDS")
            .env_remove("NATS_CA_FILE")
            .envs(self.server.identities.env(Identity::Admin))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(AUDIT_TIMEOUT, command.output())
            .await
            .with_context(|| format!("ridectl audit took longer than {AUDIT_TIMEOUT:?}"))?
            .with_context(|| format!("running {}", ridectl.display()))?;
        Ok(parse_audit(
            format!("ridectl {}", args.join(" ")),
            output.status.success(),
            &String::from_utf8_lossy(&output.stdout),
            &String::from_utf8_lossy(&output.stderr),
        ))
    }
}

/// Reads the JSON report `ridectl --output json audit` prints (`sagas`, `terminal`,
/// `in_flight`, `violations`), and its exit status.
pub fn parse_audit(command: String, success: bool, stdout: &str, stderr: &str) -> Audit {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn audit(success: bool, stdout: &str) -> Audit {
        parse_audit("ridectl audit".into(), success, stdout, "error: boom\n")
    }

    #[test]
    fn the_audit_is_read_from_ridectl_s_json_report() {
        let clean = audit(
            true,
            r#"{"sagas":2000,"terminal":2000,"in_flight":0,"violations":[]}"#,
        );
        assert!(clean.clean(), "{clean:?}");
        let broken = audit(
            false,
            r#"{"sagas":3,"terminal":3,"in_flight":0,"violations":[
                {"ride_id":"r_1","invariant":2,"message":"driver d_1 assigned twice"}]}"#,
        );
        assert_eq!(
            broken.violations,
            ["r_1: invariant 2: driver d_1 assigned twice"]
        );
        let unreadable = audit(false, "");
        assert!(!unreadable.clean());
        assert!(
            unreadable.verdict().contains("stderr: error: boom"),
            "{}",
            unreadable.verdict()
        );
    }
}
