//! The worker processes under test: the release binaries `<service>-worker`, one process per
//! service and replica, each replica of a service sharing that service's database (a temporary
//! SQLite file, or a database on the run's PostgreSQL cluster), HTTP endpoints off, logs in the
//! run's directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use ridesaga_schemas::Service;
use ridesaga_schemas::auth::Identity;
use tokio::process::Command;
use tokio::time::Instant;

use crate::process::{PidLog, Spawned, log_tail};
use crate::procfs::ProcSample;

/// How the workers run; `batch` and `max_in_flight` are the runtime's pull settings.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub bin_dir: PathBuf,
    pub dir: PathBuf,
    pub nats_url: String,
    /// The server's identities: each worker connects as its service's.
    pub identities: crate::server::Identities,
    pub batch: usize,
    pub max_in_flight: usize,
    pub databases: Databases,
    /// `RIDESAGA_GATEWAY_LATENCY` of the payment worker's simulated gateway, if set.
    pub gateway_latency: Option<Duration>,
}

/// Where each service of a fleet keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Databases {
    /// `data/<service>.db` in the fleet's directory.
    Sqlite,
    /// The `DATABASE_URL` of each service.
    Urls(BTreeMap<Service, String>),
}

impl Databases {
    /// The `DATABASE_URL` of `service` in a fleet whose data directory is `data`.
    pub fn url(&self, service: Service, data: &Path) -> anyhow::Result<String> {
        match self {
            Databases::Sqlite => Ok(format!(
                "sqlite://{}",
                data.join(format!("{service}.db")).display()
            )),
            Databases::Urls(urls) => urls
                .get(&service)
                .cloned()
                .with_context(|| format!("no database for the {service} service")),
        }
    }
}

/// One worker process.
#[derive(Debug)]
pub struct Worker {
    pub service: Service,
    pub replica: u32,
    pub process: Spawned,
    /// Its memory after start-up, before any load.
    pub idle: Option<ProcSample>,
}

/// Every worker process started so far.
#[derive(Debug)]
pub struct Fleet {
    config: FleetConfig,
    pub workers: Vec<Worker>,
}

impl Fleet {
    /// What each service's database holds now: a SQLite file's pages in use, or a PostgreSQL
    /// database's size (`pg_database_size`, its files).
    pub async fn database_bytes(&self) -> anyhow::Result<BTreeMap<Service, u64>> {
        let data = self.config.dir.join("data");
        let mut bytes = BTreeMap::new();
        for service in Service::ALL {
            let size = match &self.config.databases {
                // The pages in use, the write-ahead log's included (a reader sees them), not the
                // files' sizes: the log holds every version of a page written since the last
                // restart of the log.
                Databases::Sqlite => {
                    let path = data.join(format!("{service}.db"));
                    if !path.exists() {
                        0
                    } else {
                        let options = sqlx::sqlite::SqliteConnectOptions::new()
                            .filename(&path)
                            .read_only(true);
                        let mut conn =
                            <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
                                .await?;
                        let size: i64 = sqlx::query_scalar(
                            "SELECT (p.page_count - f.freelist_count) * s.page_size \
                             FROM pragma_page_count() p, pragma_freelist_count() f, \
                             pragma_page_size() s",
                        )
                        .fetch_one(&mut conn)
                        .await?;
                        u64::try_from(size).unwrap_or(0)
                    }
                }
                Databases::Urls(urls) => {
                    let url = urls
                        .get(&service)
                        .with_context(|| format!("no database for {service}"))?;
                    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url).await?;
                    let size: i64 =
                        sqlx::query_scalar("SELECT pg_database_size(current_database())")
                            .fetch_one(&mut conn)
                            .await?;
                    u64::try_from(size).unwrap_or(0)
                }
            };
            bytes.insert(service, size);
        }
        Ok(bytes)
    }
}

/// The binary of a service's worker.
pub fn binary(bin_dir: &Path, service: Service) -> PathBuf {
    bin_dir.join(format!("{}-worker", service.name()))
}

/// The worker binaries that are not built in `bin_dir`.
pub fn missing_binaries(bin_dir: &Path) -> Vec<PathBuf> {
    Service::ALL
        .into_iter()
        .map(|s| binary(bin_dir, s))
        .filter(|path| !path.is_file())
        .collect()
}

impl Fleet {
    pub fn new(config: FleetConfig) -> Self {
        Fleet {
            config,
            workers: Vec::new(),
        }
    }

    /// How its workers run.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Starts replica number `replica` (1, 2, ...) of every service.
    pub fn start_replica(&mut self, replica: u32, pids: &PidLog) -> anyhow::Result<()> {
        let data = self.config.dir.join("data");
        let logs = self.config.dir.join("logs");
        for dir in [&data, &logs] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for service in Service::ALL {
            let name = format!("{}-worker#{replica}", service.name());
            let instance = format!("{}-{replica}", service.name());
            let mut command = Command::new(binary(&self.config.bin_dir, service));
            command
                .env("DATABASE_URL", self.config.databases.url(service, &data)?)
                .env("NATS_URL", &self.config.nats_url)
                .envs(self.config.identities.env(Identity::Worker(service)))
                .env("RIDESAGA_BATCH", self.config.batch.to_string())
                .env(
                    "RIDESAGA_MAX_IN_FLIGHT",
                    self.config.max_in_flight.to_string(),
                )
                .env("RIDESAGA_HTTP_ADDR", "off")
                .env("RIDESAGA_INSTANCE", &instance)
                .env(
                    "RIDESAGA_NOTIFY_LOG",
                    data.join(format!("notifications-{instance}.jsonl")),
                )
                .env("RIDESAGA_DRAIN_TIMEOUT", "5s");
            if let Some(latency) = &self.config.gateway_latency {
                command.env(
                    "RIDESAGA_GATEWAY_LATENCY",
                    format!("{}ms", latency.as_millis()),
                );
            }
            let log = logs.join(format!("{instance}.log"));
            let process = Spawned::start(name, command, &log, pids)?;
            self.workers.push(Worker {
                service,
                replica,
                process,
                idle: None,
            });
        }
        Ok(())
    }

    /// Waits until every service answers the NATS service API's ping with `replicas`
    /// instances (a worker registers once it has bound its consumer), then records the idle
    /// memory of the workers that have none yet.
    pub async fn wait_ready(
        &mut self,
        client: &async_nats::Client,
        replicas: usize,
        timeout: Duration,
        ticks_per_second: u64,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for service in Service::ALL {
            loop {
                self.check_running()?;
                let subject = format!("$SRV.PING.ridesaga-{}", service.name());
                let found = responders(client, &subject, Duration::from_millis(200)).await?;
                if found >= replicas {
                    break;
                }
                if Instant::now() >= deadline {
                    let tails = self
                        .workers
                        .iter()
                        .filter(|w| w.service == service)
                        .map(|w| format!("{}:\n{}", w.process.name, log_tail(&w.process.log, 10)))
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!(
                        "{service} worker: {found} of {replicas} replicas ready after \
                         {timeout:?}; their logs end with:\n{tails}"
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Let start-up allocations settle before calling the memory idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for worker in self.workers.iter_mut().filter(|w| w.idle.is_none()) {
            worker.idle = Some(worker.process.sample(ticks_per_second)?);
        }
        Ok(())
    }

    /// Fails, with the end of its log, if a worker has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        self.workers
            .iter_mut()
            .try_for_each(|w| w.process.check_running())
    }

    /// Stops every worker (SIGTERM: they drain), all at once.
    pub async fn stop(&mut self) {
        let grace = Duration::from_secs(10);
        futures_util::future::join_all(self.workers.iter_mut().map(|w| w.process.stop(grace)))
            .await;
    }
}

/// The figures the workers count themselves, summed over the replicas of each service.
pub type WorkerCounts = BTreeMap<Service, BTreeMap<String, u64>>;

/// The counters every replica reports through the NATS service API's `STATS` (the runtime's
/// metrics: `handled`, `duplicates`, `failed`, `redelivered`, ...), summed per service. A
/// service that does not answer is left out.
pub async fn worker_counts(client: &async_nats::Client) -> anyhow::Result<WorkerCounts> {
    let mut out = WorkerCounts::new();
    for service in Service::ALL {
        let subject = format!("$SRV.STATS.ridesaga-{}", service.name());
        for reply in gather(client, &subject, Duration::from_millis(200)).await? {
            let sums = out.entry(service).or_default();
            for (name, value) in stats_counters(&reply) {
                *sums.entry(name).or_default() += value;
            }
        }
    }
    Ok(out)
}

/// The endpoint whose `STATS` data the bench reads. A worker reports its figures, worker-wide,
/// in the data of each of its endpoints (`status`, `effects`): one of them counts each once.
const STATS_ENDPOINT: &str = "status";

/// The whole-number fields of the `status` endpoint's `data` in a service API `STATS` reply.
pub fn stats_counters(reply: &[u8]) -> BTreeMap<String, u64> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(reply) else {
        return BTreeMap::new();
    };
    let endpoints = value["endpoints"].as_array().cloned().unwrap_or_default();
    let Some(data) = endpoints
        .iter()
        .find(|endpoint| endpoint["name"] == STATS_ENDPOINT)
        .and_then(|endpoint| endpoint["data"].as_object())
    else {
        return BTreeMap::new();
    };
    data.iter()
        .filter_map(|(name, value)| Some((name.clone(), value.as_u64()?)))
        .collect()
}

/// The `handled` counter of each replica that answers the NATS service API's `STATS`, per
/// service, largest first: how the replicas shared the work.
pub async fn handled_per_replica(
    client: &async_nats::Client,
) -> anyhow::Result<BTreeMap<Service, Vec<u64>>> {
    let mut out = BTreeMap::new();
    for service in Service::ALL {
        let subject = format!("$SRV.STATS.ridesaga-{}", service.name());
        let mut handled: Vec<u64> = gather(client, &subject, Duration::from_millis(200))
            .await?
            .iter()
            .map(|reply| stats_counters(reply).get("handled").copied().unwrap_or(0))
            .collect();
        handled.sort_unstable_by(|a, b| b.cmp(a));
        out.insert(service, handled);
    }
    Ok(out)
}

/// Counter increases between two readings (a counter that went down, a replica that
/// restarted, counts from zero).
pub fn counts_between(before: &WorkerCounts, after: &WorkerCounts) -> WorkerCounts {
    after
        .iter()
        .map(|(service, counters)| {
            let previous = before.get(service);
            let deltas = counters
                .iter()
                .map(|(name, now)| {
                    let then = previous.and_then(|p| p.get(name)).copied().unwrap_or(0);
                    let delta = if *now >= then { now - then } else { *now };
                    (name.clone(), delta)
                })
                .collect();
            (*service, deltas)
        })
        .collect()
}

/// How many instances answer a request on `subject` within `wait`.
async fn responders(
    client: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> anyhow::Result<usize> {
    Ok(gather(client, subject, wait).await?.len())
}

/// Every reply to a request on `subject` that arrives within `wait`.
async fn gather(
    client: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .context("subscribing for service replies")?;
    client
        .publish_with_reply(subject.to_owned(), inbox, bytes::Bytes::new())
        .await
        .with_context(|| format!("requesting {subject}"))?;
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
        out.push(reply.payload);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_read_once_from_the_status_endpoint() {
        let reply = br#"{"type":"io.nats.micro.v1.stats_response","name":"ridesaga-ride",
            "endpoints":[{"name":"status","data":{"handled":10,"redelivered":2,"in_flight":-1,
            "note":"x"}},{"name":"effects","data":{"handled":10,"redelivered":2}}]}"#;
        let counters = stats_counters(reply);
        assert_eq!(counters["handled"], 10);
        assert_eq!(counters["redelivered"], 2);
        assert!(!counters.contains_key("in_flight") && !counters.contains_key("note"));
        assert!(stats_counters(b"not json").is_empty());
    }

    #[test]
    fn sqlite_databases_are_files_in_the_fleet_and_postgres_ones_are_given() {
        let data = Path::new("/run/workers/data");
        assert_eq!(
            Databases::Sqlite.url(Service::Ride, data).unwrap(),
            "sqlite:///run/workers/data/ride.db"
        );
        let urls = Databases::Urls(BTreeMap::from([(
            Service::Fraud,
            "postgres://u:p@127.0.0.1:5433/fraud_1".to_owned(),
        )]));
        assert_eq!(
            urls.url(Service::Fraud, data).unwrap(),
            "postgres://u:p@127.0.0.1:5433/fraud_1"
        );
        assert!(urls.url(Service::Ride, data).is_err());
    }

    #[test]
    fn counter_increases_are_per_service_and_survive_a_restart() {
        let before = WorkerCounts::from([(
            Service::Ride,
            BTreeMap::from([("handled".to_owned(), 10), ("failed".to_owned(), 5)]),
        )]);
        let after = WorkerCounts::from([
            (
                Service::Ride,
                BTreeMap::from([("handled".to_owned(), 25), ("failed".to_owned(), 1)]),
            ),
            (Service::Fraud, BTreeMap::from([("handled".to_owned(), 4)])),
        ]);
        let delta = counts_between(&before, &after);
        assert_eq!(delta[&Service::Ride]["handled"], 15);
        assert_eq!(delta[&Service::Ride]["failed"], 1);
        assert_eq!(delta[&Service::Fraud]["handled"], 4);
    }
}
