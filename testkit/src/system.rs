//! A whole Ridesaga in one test (feature `system`): a real nats-server (or a three-node
//! cluster the test owns), provisioned streams, and the five workers running in-process
//! (`ridesaga_workers::app::run`) on temporary databases, each of which can be stopped,
//! restarted and started again with settings of its own. The workers stop when the system is
//! dropped.
//!
//! The databases are SQLite files unless `RIDESAGA_TEST_DB=postgres`: then each service gets a
//! fresh database of its own on a PostgreSQL server the test process shares (see
//! [`Postgres`](crate::Postgres)).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use ridesaga_schemas::*;
use ridesaga_workers::app;
use ridesaga_workers::config::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Identity, NatsCluster, NatsServer, Postgres};

/// How long a publish or a read of the stream is retried (a cluster may be electing a leader).
const RETRY_FOR: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct System {
    /// The server the system runs on; `None` on a cluster, which the test owns.
    pub server: Option<NatsServer>,
    /// How each identity connects: `NATS_URL`, its seed file and inbox prefix.
    pub nats_env: HashMap<Identity, Vec<(String, String)>>,
    pub js: jetstream::Context,
    pub dir: tempfile::TempDir,
    /// Each service's `DATABASE_URL`.
    databases: HashMap<Service, String>,
    /// The running replicas of each service.
    workers: HashMap<Service, Vec<(CancellationToken, JoinHandle<()>)>>,
    pub extra: Vec<(String, String)>,
}

impl System {
    /// Starts everything with short deadlines: a ride must find a driver within `match_deadline`.
    pub async fn start() -> System {
        Self::start_with(&[]).await
    }

    /// Starts everything with each service's database on `server` (a PostgreSQL server of the
    /// test's own, for tests that crash it).
    pub async fn start_on(server: &Postgres, extra: &[(&str, &str)]) -> System {
        let databases = Service::ALL
            .into_iter()
            .map(|service| {
                let url = server
                    .create_database(service.name())
                    .expect("creates a database");
                (service, url)
            })
            .collect();
        Self::start_databases(extra, Some(databases)).await
    }

    /// Starts everything with each service's database on the tests' shared PostgreSQL server.
    pub async fn start_on_postgres(extra: &[(&str, &str)]) -> System {
        let server = Postgres::shared().expect("PostgreSQL starts");
        Self::start_on(server, extra).await
    }

    /// [`System::start`] with more settings for every worker (they override the defaults).
    pub async fn start_with(extra: &[(&str, &str)]) -> System {
        Self::start_databases(extra, None).await
    }

    /// A server with the streams provisioned and no worker running: the test starts them, with
    /// [`System::start_worker`] or [`System::start_worker_with`].
    pub async fn without_workers(extra: &[(&str, &str)]) -> System {
        Self::provisioned(extra, None).await
    }

    /// Starts everything on `cluster`, with streams and consumers of three replicas.
    pub async fn start_on_cluster(cluster: &NatsCluster, extra: &[(&str, &str)]) -> System {
        let js = cluster.jetstream().await.expect("connects to the cluster");
        let env = Identity::ALL
            .into_iter()
            .map(|i| (i, cluster.env(i)))
            .collect();
        let mut system = Self::start_nats(None, env, js, 3, extra, None).await;
        system.start_all();
        system
    }

    async fn start_databases(
        extra: &[(&str, &str)],
        databases: Option<HashMap<Service, String>>,
    ) -> System {
        let mut system = Self::provisioned(extra, databases).await;
        system.start_all();
        system
    }

    async fn provisioned(
        extra: &[(&str, &str)],
        databases: Option<HashMap<Service, String>>,
    ) -> System {
        let server = NatsServer::start().await.expect("nats-server starts");
        let js = jetstream::new(server.client().await.expect("connects"));
        let env = Identity::ALL
            .into_iter()
            .map(|i| (i, server.env(i)))
            .collect();
        Self::start_nats(Some(server), env, js, 1, extra, databases).await
    }

    async fn start_nats(
        server: Option<NatsServer>,
        nats_env: HashMap<Identity, Vec<(String, String)>>,
        js: jetstream::Context,
        replicas: usize,
        extra: &[(&str, &str)],
        databases: Option<HashMap<Service, String>>,
    ) -> System {
        if std::env::var_os("RUST_LOG").is_some() {
            ridesaga_workers::telemetry::init("info");
        }
        // Idempotent, so provisioning again is safe when a cluster is slow to answer.
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        while let Err(e) = streams::provision(&js, streams::ProvisionOptions { replicas }).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "provisioning failed for {RETRY_FOR:?}: {e}"
            );
            eprintln!("provisioning failed, again: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let databases = databases.unwrap_or_else(|| {
            Service::ALL
                .into_iter()
                .map(|service| (service, database_url(&dir, service)))
                .collect()
        });
        System {
            server,
            nats_env,
            js,
            dir,
            databases,
            workers: HashMap::new(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn start_all(&mut self) {
        for service in Service::ALL {
            self.start_worker(service);
        }
    }

    /// How `identity` connects to the system's server or cluster: `NATS_URL`, its seed file
    /// and inbox prefix.
    pub fn env(&self, identity: Identity) -> Vec<(String, String)> {
        self.nats_env[&identity].clone()
    }

    pub fn settings(&self, service: Service) -> Settings {
        let mut settings = Settings::from_pairs([
            ("DATABASE_URL", self.database_url(service)),
            ("RIDESAGA_HTTP_ADDR", "off".into()),
            ("RIDESAGA_TICK", "100ms".into()),
            ("RIDESAGA_RELAY_INTERVAL", "200ms".into()),
            ("RIDESAGA_MATCH_DEADLINE", "3s".into()),
            ("RIDESAGA_CONFIRM_GRACE", "2s".into()),
            (
                "RIDESAGA_NOTIFY_LOG",
                self.dir
                    .path()
                    .join("notifications.jsonl")
                    .display()
                    .to_string(),
            ),
        ]);
        for (k, v) in &self.nats_env[&Identity::Worker(service)] {
            settings = settings.with(k, v.clone());
        }
        for (k, v) in &self.extra {
            settings = settings.with(k, v.clone());
        }
        settings
    }

    /// The service's `DATABASE_URL`.
    pub fn database_url(&self, service: Service) -> String {
        self.databases[&service].clone()
    }

    /// The one number `sql` selects from the service's database, on either backend.
    pub async fn scalar(&self, service: Service, sql: &str) -> i64 {
        let url = self.database_url(service);
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        if url.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&url).await.expect("connects");
            let n = sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("query");
            pool.close().await;
            n
        } else {
            let pool = ridesaga_workers::runtime::sqlite::open(&url, 1)
                .await
                .expect("opens");
            let n = sqlx::query_scalar(sql)
                .fetch_one(&pool)
                .await
                .expect("query");
            pool.close().await;
            n
        }
    }

    /// Starts one more replica of `service`.
    pub fn start_worker(&mut self, service: Service) {
        self.start_worker_with(service, &[]);
    }

    /// Starts one more replica of `service` with more settings of its own (they override the
    /// system's).
    pub fn start_worker_with(&mut self, service: Service, extra: &[(&str, String)]) {
        let token = CancellationToken::new();
        let replica = self.workers.get(&service).map_or(0, Vec::len);
        let mut settings = self
            .settings(service)
            .with("RIDESAGA_INSTANCE", format!("{service}-{replica}"));
        for (name, value) in extra {
            settings = settings.with(name, value.clone());
        }
        let handle = tokio::spawn({
            let token = token.clone();
            async move {
                if let Err(e) = app::run(service, settings, token).await {
                    panic!("{service} worker failed: {e:#}");
                }
            }
        });
        self.workers
            .entry(service)
            .or_default()
            .push((token, handle));
    }

    /// Starts `n` more replicas of every service, on the same consumers and databases.
    pub fn add_replicas(&mut self, n: usize) {
        for service in Service::ALL {
            for _ in 0..n {
                self.start_worker(service);
            }
        }
    }

    /// Stops every replica of a service the way SIGTERM does (drain) and waits for them.
    pub async fn stop_worker(&mut self, service: Service) {
        for (token, handle) in self.workers.remove(&service).unwrap_or_default() {
            token.cancel();
            handle.await.expect("worker task");
        }
    }

    /// Takes the `n` most recently started replicas of a service out of the system, still
    /// running, for a test that stops them while it keeps using the system (a scale-down).
    pub fn take_replicas(&mut self, service: Service, n: usize) -> Vec<Replica> {
        let running = self.workers.entry(service).or_default();
        assert!(
            n <= running.len(),
            "{service}: {n} replicas asked for, {} running",
            running.len()
        );
        running
            .split_off(running.len() - n)
            .into_iter()
            .map(|(token, handle)| Replica { token, handle })
            .collect()
    }

    /// Kills every replica of a service without draining: their tasks are aborted mid-flight,
    /// like crashed pods.
    pub async fn kill_worker(&mut self, service: Service) {
        for (_, handle) in self.workers.remove(&service).unwrap_or_default() {
            handle.abort();
            let _ = handle.await;
        }
    }

    pub async fn shutdown(mut self) {
        for service in Service::ALL {
            self.stop_worker(service).await;
        }
    }

    /// Publishes a command (or any message) and waits for the server to store it, publishing
    /// again (same `Nats-Msg-Id`, so it is stored once) while a cluster elects a leader.
    pub async fn send(&self, envelope: &Envelope) {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            let msg = jetstream::message::PublishMessage::build()
                .payload(envelope.encode().into())
                .message_id(envelope.id.as_str());
            let stored = match self.js.send_publish(envelope.subject(), msg).await {
                Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("publish of {} failed, again: {e}", envelope.subject());
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!(
                    "{} not stored within {RETRY_FOR:?}: {e}",
                    envelope.subject()
                ),
            }
        }
    }

    /// Stores `envelope` `n` times, each copy under a `Nats-Msg-Id` of its own, so the stream's
    /// duplicate window keeps them all.
    pub async fn send_copies(&self, envelope: &Envelope, n: usize) {
        let acks = (0..n).map(|copy| {
            let msg = jetstream::message::PublishMessage::build()
                .payload(envelope.encode().into())
                .message_id(format!("{}-copy-{copy}", envelope.id));
            self.js.send_publish(envelope.subject(), msg)
        });
        for ack in futures_util::future::join_all(acks).await {
            ack.expect("publish").await.expect("stored");
        }
    }

    pub async fn command(&self, message: impl Into<Message>, ride: Option<&RideId>) -> Envelope {
        let envelope = Envelope::new(message, ride.cloned(), "test");
        self.send(&envelope).await;
        envelope
    }

    /// Registers driver `id` called `name` at `at`, without contact details, and puts them
    /// online.
    pub async fn driver(&self, id: &str, name: &str, at: (f64, f64)) -> DriverId {
        self.driver_registered(RegisterDriver {
            driver_id: DriverId::parse(id).unwrap(),
            name: name.into(),
            location: GeoPoint::new(at.0, at.1).unwrap(),
            email: None,
            phone: None,
        })
        .await
    }

    /// Registers a driver as `registration` says and puts them online.
    pub async fn driver_registered(&self, registration: RegisterDriver) -> DriverId {
        let driver_id = registration.driver_id.clone();
        self.command(registration, None).await;
        let online = DriverOnline {
            driver_id: driver_id.clone(),
            location: None,
        };
        self.command(online, None).await;
        driver_id
    }

    pub async fn request(
        &self,
        rider: &str,
        from: (f64, f64),
        to: (f64, f64),
        card: &str,
    ) -> RideId {
        let ride = RideId::generate();
        self.request_as(&ride, rider, from, to, card).await;
        ride
    }

    pub async fn request_as(
        &self,
        ride: &RideId,
        rider: &str,
        from: (f64, f64),
        to: (f64, f64),
        card: &str,
    ) -> Envelope {
        let request = RequestRide {
            rider_id: RiderId::parse(rider).unwrap(),
            pickup: GeoPoint::new(from.0, from.1).unwrap(),
            dropoff: GeoPoint::new(to.0, to.1).unwrap(),
            payment_token: card.into(),
        };
        self.command(request, Some(ride)).await
    }

    /// Starts the confirmed `ride`, waits until it has started, then completes it with the
    /// distance and duration the driver reports.
    pub async fn start_and_complete(&self, ride: &RideId, distance_km: f64, duration_min: f64) {
        self.command(StartRide {}, Some(ride)).await;
        self.wait_for(ride, MessageKind::RideStarted, Duration::from_secs(10))
            .await;
        self.command(
            CompleteRide {
                distance_km: Some(distance_km),
                duration_min: Some(duration_min),
            },
            Some(ride),
        )
        .await;
    }

    /// Every message stored for one ride, in stream order.
    pub async fn saga(&self, ride: &RideId) -> Vec<Envelope> {
        self.read(&saga_filter(ride.as_str())).await
    }

    /// Every stored message on `filter`, read again while a cluster elects a leader.
    pub async fn read(&self, filter: &str) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        loop {
            match self.try_read(filter).await {
                Ok(out) => return out,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("reading {filter} failed, again: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("could not read {filter} within {RETRY_FOR:?}: {e}"),
            }
        }
    }

    async fn try_read(&self, filter: &str) -> Result<Vec<Envelope>, String> {
        let messages = stored(&self.js, streams::SAGA_STREAM, filter).await?;
        Ok(messages
            .iter()
            .map(|m| Envelope::decode(&m.subject, &m.payload).expect("decodes"))
            .collect())
    }

    /// Waits until the ride's saga has a message of `kind`, then returns the whole saga.
    pub async fn wait_for(
        &self,
        ride: &RideId,
        kind: MessageKind,
        timeout: Duration,
    ) -> Vec<Envelope> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let saga = self.saga(ride).await;
            if saga.iter().any(|e| e.kind() == kind) {
                return saga;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{ride}: no {kind} within {timeout:?}; saga so far:\n{}",
                    describe(&saga)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `kind`, then a little longer, so that any unwanted extra message shows up.
    pub async fn settle(&self, ride: &RideId, kind: MessageKind) -> Vec<Envelope> {
        self.wait_for(ride, kind, Duration::from_secs(20)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.saga(ride).await
    }
}

impl Drop for System {
    /// Tells the workers still running to stop (they drain); [`System::shutdown`] also waits.
    fn drop(&mut self) {
        for (token, _) in self.workers.values().flatten() {
            token.cancel();
        }
    }
}

/// One running replica of a service, taken out of its system by [`System::take_replicas`].
#[derive(Debug)]
pub struct Replica {
    token: CancellationToken,
    handle: JoinHandle<()>,
}

impl Replica {
    /// Stops the replica the way SIGTERM does (drain) and waits until it has exited.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.await.expect("worker task");
    }
}

pub fn count(saga: &[Envelope], kind: MessageKind) -> usize {
    saga.iter().filter(|e| e.kind() == kind).count()
}

pub fn describe(saga: &[Envelope]) -> String {
    saga.iter()
        .map(|e| format!("  {} ({})\n", e.subject(), e.producer))
        .collect()
}

pub fn find(saga: &[Envelope], kind: MessageKind) -> &Message {
    &saga
        .iter()
        .find(|e| e.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} in\n{}", describe(saga)))
        .message
}

/// Where `service` keeps its state in a new system: a SQLite file in `dir`, or a fresh
/// PostgreSQL database when `RIDESAGA_TEST_DB=postgres`.
fn database_url(dir: &tempfile::TempDir, service: Service) -> String {
    match std::env::var("RIDESAGA_TEST_DB").as_deref() {
        Ok("postgres") => Postgres::shared()
            .expect("PostgreSQL starts")
            .create_database(service.name())
            .expect("creates a database"),
        Ok("sqlite") | Err(_) => {
            format!(
                "sqlite://{}",
                dir.path().join(format!("{service}.db")).display()
            )
        }
        Ok(other) => panic!("RIDESAGA_TEST_DB={other}: expected sqlite or postgres"),
    }
}

/// Every message `stream` holds on `filter`, in stream order, read through a consumer of its
/// own that acknowledges nothing (and goes away 5 s after its last read).
pub async fn stored(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<Vec<jetstream::Message>, String> {
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: filter.to_string(),
            ack_policy: jetstream::consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(5),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("consumer: {e}"))?;
    let mut batch = consumer
        .fetch()
        .max_messages(10_000)
        .messages()
        .await
        .map_err(|e| format!("fetch: {e}"))?;
    let mut out = Vec::new();
    while let Some(m) = batch.next().await {
        out.push(m.map_err(|e| format!("fetch: {e}"))?);
    }
    Ok(out)
}
