//! The shared runtime against a real nats-server, with a small test service: effects happen
//! once under redelivery and duplicates, outputs left behind by a crash are relayed, poison
//! messages are dead-lettered with their reason, and transient failures are retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt;
use ridesaga_schemas::*;
use ridesaga_testkit::NatsServer;
use ridesaga_workers::config::{RuntimeConfig, Settings};
use ridesaga_workers::runtime::{
    self, BatchError, BatchOutput, BatchWrite, Conn, HandleError, Input, Kind, Worker,
    sqlite::{self as store, writer_lock::WriterLock},
};
use sqlx::migrate::Migrator;
use sqlx::{Connection, SqliteConnection};
use tokio_util::sync::CancellationToken;

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

/// Answers every `cmd.fraud.block` with `evt.fraud.blocklist`, counting the effect in its
/// database; fails transiently for riders named `u_flaky*` on the first deliveries, and
/// permanently for `u_poison*`.
#[derive(Clone, Default)]
struct Blocklist {
    attempts: Arc<AtomicU32>,
}

impl Worker for Blocklist {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn migrator(&self, _kind: Kind) -> &'static Migrator {
        &NO_MIGRATIONS
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        input: &Envelope,
        _now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("the runtime's tests run their workers on SQLite files")
        };
        let conn: &mut SqliteConnection = conn;
        let Message::BlockRider(block) = &input.message else {
            return Ok(Vec::new());
        };
        let rider = block.rider_id.as_str();
        if rider.starts_with("u_flaky") && self.attempts.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err(HandleError::Transient("gateway timeout".into()));
        }
        sqlx::query("CREATE TABLE IF NOT EXISTS effects (rider TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO effects (rider) VALUES (?)")
            .bind(rider)
            .execute(&mut *conn)
            .await?;
        // A poison input fails after writing: its savepoint must roll the write back.
        if rider.starts_with("u_poison") {
            return Err(HandleError::Permanent(format!("{rider} is poison")));
        }
        let out = RiderBlockChanged {
            rider_id: block.rider_id.clone(),
            blocked: true,
            reason: block.reason.clone(),
        };
        Ok(vec![Envelope::caused_by(input, out, "", "fraud")])
    }
}

/// Applies whole batches: records each `cmd.fraud.block` rider in its database with one write
/// that runs when the batch commits. The row of a rider named `u_badwrite*` breaks the table's
/// CHECK, failing the commit.
#[derive(Clone, Default)]
struct Ledger;

impl Worker for Ledger {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn migrator(&self, _kind: Kind) -> &'static Migrator {
        &NO_MIGRATIONS
    }

    async fn apply(
        &self,
        conn: &mut Conn<'_>,
        input: &Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        runtime::apply_as_batch(self, conn, input, now).await
    }

    async fn apply_batch(
        &self,
        conn: &mut Conn<'_>,
        inputs: &[Input<'_>],
    ) -> Result<BatchOutput, BatchError> {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("the runtime's tests run their workers on SQLite files")
        };
        let conn: &mut SqliteConnection = conn;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS effects \
             (rider TEXT NOT NULL CHECK (rider NOT LIKE 'u_badwrite%'))",
        )
        .execute(&mut *conn)
        .await
        .map_err(|e| BatchError::Batch(e.into()))?;
        let mut riders = Vec::new();
        let mut outputs = Vec::new();
        for input in inputs {
            let Message::BlockRider(block) = &input.envelope.message else {
                outputs.push(Vec::new());
                continue;
            };
            riders.push(block.rider_id.to_string());
            let out = RiderBlockChanged {
                rider_id: block.rider_id.clone(),
                blocked: true,
                reason: None,
            };
            outputs.push(vec![Envelope::caused_by(input.envelope, out, "", "fraud")]);
        }
        let write = BatchWrite::new(
            "INSERT INTO effects (rider) SELECT value FROM json_each(?)",
            &riders,
        )
        .map_err(BatchError::Batch)?;
        Ok(BatchOutput {
            outputs,
            writes: vec![write],
        })
    }
}

struct Harness {
    server: NatsServer,
    js: jetstream::Context,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        if std::env::var_os("RUST_LOG").is_some() {
            ridesaga_workers::telemetry::init("info");
        }
        let server = NatsServer::start().await.unwrap();
        let js = jetstream::new(server.client().await.unwrap());
        streams::provision(&js, streams::ProvisionOptions::default())
            .await
            .unwrap();
        Harness {
            server,
            js,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("fraud.db").display())
    }

    fn spawn(&self, worker: Blocklist) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        self.spawn_with(worker, &[])
    }

    fn spawn_with<W: Worker>(
        &self,
        worker: W,
        extra: &[(&str, String)],
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let mut settings = Settings::from_pairs([
            ("NATS_URL", self.server.url()),
            ("DATABASE_URL", self.database_url()),
            ("RIDESAGA_HTTP_ADDR", "off".to_string()),
            ("RIDESAGA_RELAY_INTERVAL", "100ms".to_string()),
        ]);
        for (name, value) in extra {
            settings = settings.with(name, value.clone());
        }
        let config = RuntimeConfig::load("fraud", &settings).unwrap();
        let token = CancellationToken::new();
        let handle = tokio::spawn({
            let token = token.clone();
            async move { runtime::run(worker, config, token).await.unwrap() }
        });
        (token, handle)
    }

    async fn publish(&self, envelope: &Envelope, msg_id: &str) {
        let msg = jetstream::message::PublishMessage::build()
            .payload(envelope.encode().into())
            .message_id(msg_id);
        self.js
            .send_publish(envelope.subject(), msg)
            .await
            .unwrap()
            .await
            .unwrap();
    }

    async fn effects(&self, rider: &str) -> i64 {
        let pool = store::open(&self.database_url(), 1).await.unwrap();
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM effects WHERE rider = ?")
            .bind(rider)
            .fetch_one(&pool)
            .await
            .unwrap_or(0);
        pool.close().await;
        count
    }

    /// The messages stored on `subject`, once there are at least `expected` (or after 20 s),
    /// plus a short grace so that an unwanted extra copy would show up too.
    async fn stored(&self, subject: &str, expected: usize) -> Vec<jetstream::Message> {
        let stream = self.js.get_stream(streams::SAGA_STREAM).await.unwrap();
        self.poll(&stream, subject, expected).await
    }

    async fn dead_letters(&self, expected: usize) -> Vec<DeadLetter> {
        let stream = self
            .js
            .get_stream(streams::DEAD_LETTER_STREAM)
            .await
            .unwrap();
        self.poll(&stream, "dlq.>", expected)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    async fn poll(
        &self,
        stream: &jetstream::stream::Stream,
        subject: &str,
        expected: usize,
    ) -> Vec<jetstream::Message> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.read(stream, subject).await;
            if found.len() >= expected || tokio::time::Instant::now() > deadline {
                tokio::time::sleep(Duration::from_millis(300)).await;
                return self.read(stream, subject).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn read(
        &self,
        stream: &jetstream::stream::Stream,
        subject: &str,
    ) -> Vec<jetstream::Message> {
        let consumer = stream
            .create_consumer(pull::Config {
                filter_subject: subject.to_string(),
                ack_policy: jetstream::consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .messages()
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(Ok(m)) = batch.next().await {
            out.push(m);
        }
        out
    }
}

fn block(rider: &str) -> Envelope {
    let rider_id = RiderId::parse(rider).unwrap();
    Envelope::new(
        BlockRider {
            rider_id,
            reason: None,
        },
        None,
        "test",
    )
}

#[tokio::test]
async fn a_message_delivered_twice_takes_effect_once_and_emits_once() {
    let h = Harness::start().await;
    let (stop, task) = h.spawn(Blocklist::default());
    let cmd = block("u_twice");
    // The same envelope under two different Nats-Msg-Ids: the stream stores both, so the
    // worker receives it twice and only its inbox can tell.
    h.publish(&cmd, "first").await;
    h.publish(&cmd, "second").await;
    let out = h.stored("evt.fraud.blocklist.u_twice", 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 1, "one output for two deliveries");
    assert_eq!(
        h.effects("u_twice").await,
        1,
        "one effect for two deliveries"
    );
}

#[tokio::test]
async fn outputs_left_in_the_outbox_by_a_crash_are_relayed() {
    let h = Harness::start().await;
    // A previous replica committed an output and died before publishing it.
    let pool = store::open(&h.database_url(), 1).await.unwrap();
    store::migrate(&pool, &NO_MIGRATIONS).await.unwrap();
    let cmd = block("u_crashed");
    let output = Envelope::caused_by(
        &cmd,
        RiderBlockChanged {
            rider_id: RiderId::parse("u_crashed").unwrap(),
            blocked: true,
            reason: None,
        },
        "",
        "fraud",
    );
    let mut conn = pool.acquire().await.unwrap();
    store::inbox_insert(&mut conn, &cmd, Timestamp::from_unix_millis(0))
        .await
        .unwrap();
    store::outbox_insert(
        &mut conn,
        Some(&cmd.id),
        &[runtime::db::OutboxRow::from_envelope(&output)],
        Timestamp::from_unix_millis(0),
    )
    .await
    .unwrap();
    drop(conn);
    pool.close().await;

    let (stop, task) = h.spawn(Blocklist::default());
    // The input is redelivered too: it must not apply again, and the output is stored once.
    h.publish(&cmd, "redelivered").await;
    let out = h.stored("evt.fraud.blocklist.u_crashed", 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(
        Envelope::decode(&out[0].subject, &out[0].payload)
            .unwrap()
            .id,
        output.id
    );
    assert_eq!(
        h.effects("u_crashed").await,
        0,
        "the redelivered input was not applied again"
    );
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_with_its_reason_and_not_retried() {
    let h = Harness::start().await;
    let worker = Blocklist::default();
    let (stop, task) = h.spawn(worker);
    h.publish(&block("u_poison1"), "p1").await;
    // Undecodable: a payload that is not an envelope at all.
    h.js.publish("cmd.fraud.block.u_garbage", "not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let letters = h.dead_letters(2).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let poison = letters
        .iter()
        .find(|l| l.subject.ends_with("u_poison1"))
        .unwrap();
    assert!(
        poison.reason.contains("u_poison1 is poison"),
        "{}",
        poison.reason
    );
    assert_eq!(poison.deliveries, 1, "terminated at once, not retried");
    let garbage = letters
        .iter()
        .find(|l| l.subject.ends_with("u_garbage"))
        .unwrap();
    assert!(
        garbage
            .reason
            .starts_with("undecodable message: malformed envelope"),
        "{}",
        garbage.reason
    );
    assert_eq!(garbage.payload, "not json");
}

#[tokio::test]
async fn a_transient_failure_is_retried_until_it_succeeds_once() {
    let h = Harness::start().await;
    let worker = Blocklist::default();
    let attempts = worker.attempts.clone();
    let (stop, task) = h.spawn(worker);
    h.publish(&block("u_flaky"), "f1").await;
    // Two failures, each nak'ed with a delay, then success.
    let out = h.stored("evt.fraud.blocklist.u_flaky", 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(out.len(), 1);
    assert_eq!(h.effects("u_flaky").await, 1);
    assert!(h.dead_letters(0).await.is_empty());
}

#[tokio::test]
async fn a_worker_resumes_after_the_server_restarts() {
    let mut h = Harness::start().await;
    let (stop, task) = h.spawn(Blocklist::default());
    h.publish(&block("u_before"), "b1").await;
    assert_eq!(h.stored("evt.fraud.blocklist.u_before", 1).await.len(), 1);
    h.server.stop();
    h.server.restart().await.unwrap();
    let js = jetstream::new(h.server.client().await.unwrap());
    h.js = js;
    h.publish(&block("u_after"), "a1").await;
    let out = h.stored("evt.fraud.blocklist.u_after", 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 1);
}

/// A loopback port nothing listens on (for the worker's HTTP endpoint).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn health_and_metrics_are_served_over_http() {
    let h = Harness::start().await;
    let port = free_port();
    let (stop, task) = h.spawn_with(
        Blocklist::default(),
        &[("RIDESAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    h.publish(&block("u_counted"), "c1").await;
    assert_eq!(h.stored("evt.fraud.blocklist.u_counted", 1).await.len(), 1);
    let health = http_get(port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    let metrics = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("ridesaga_messages_handled_total{service=\"fraud\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("ridesaga_handler_seconds_count"),
        "{metrics}"
    );
    assert!(http_get(port, "/nope").await.starts_with("HTTP/1.1 404"));
    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failing_input_in_a_batch_rolls_back_alone() {
    let h = Harness::start().await;
    // Published before the worker starts, so they arrive together and share batches.
    for n in 0..20 {
        h.publish(&block(&format!("u_good{n}")), &format!("g{n}"))
            .await;
        h.publish(&block(&format!("u_poison{n}")), &format!("p{n}"))
            .await;
    }
    let (stop, task) = h.spawn(Blocklist::default());
    let out = h.stored("evt.fraud.blocklist.*", 20).await;
    let letters = h.dead_letters(20).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 20);
    assert_eq!(letters.len(), 20);
    for n in 0..20 {
        assert_eq!(h.effects(&format!("u_good{n}")).await, 1, "u_good{n}");
        assert_eq!(h.effects(&format!("u_poison{n}")).await, 0, "u_poison{n}");
    }
}

#[tokio::test]
async fn a_write_that_fails_a_batch_commit_fails_only_its_own_input() {
    let h = Harness::start().await;
    // Published before the worker starts, so they arrive together and share batches.
    for n in 0..10 {
        h.publish(&block(&format!("u_good{n}")), &format!("g{n}"))
            .await;
    }
    h.publish(&block("u_badwrite1"), "b1").await;
    for n in 10..20 {
        h.publish(&block(&format!("u_good{n}")), &format!("g{n}"))
            .await;
    }
    let (stop, task) = h.spawn_with(Ledger, &[]);
    let out = h.stored("evt.fraud.blocklist.*", 20).await;
    let letters = h.dead_letters(1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 20);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].subject.ends_with("u_badwrite1"), "{letters:?}");
    assert!(
        letters[0].reason.contains("CHECK constraint failed"),
        "{}",
        letters[0].reason
    );
    assert_eq!(
        letters[0].deliveries, 1,
        "a broken constraint is not retried"
    );
    for n in 0..20 {
        assert_eq!(h.effects(&format!("u_good{n}")).await, 1, "u_good{n}");
    }
    assert_eq!(h.effects("u_badwrite1").await, 0);
}

/// Writes a row on every timer run and emits nothing: what a retention prune does.
#[derive(Clone, Default)]
struct Janitor;

impl Worker for Janitor {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn migrator(&self, _kind: Kind) -> &'static Migrator {
        &NO_MIGRATIONS
    }

    async fn apply(
        &self,
        _conn: &mut Conn<'_>,
        _input: &Envelope,
        _now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        Ok(Vec::new())
    }

    async fn tick(
        &self,
        conn: &mut Conn<'_>,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("the runtime's tests run their workers on SQLite files")
        };
        let conn: &mut SqliteConnection = conn;
        sqlx::query("CREATE TABLE IF NOT EXISTS swept (at INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO swept (at) VALUES (?)")
            .bind(now.unix_millis())
            .execute(&mut *conn)
            .await?;
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn a_timer_that_emits_nothing_still_keeps_its_writes() {
    let h = Harness::start().await;
    let (token, handle) = h.spawn_with(Janitor, &[("RIDESAGA_TICK", "50ms".to_string())]);
    // The worker creates its database as it starts; until then, and until the first timer
    // run commits, there is nothing to count.
    let count = || async {
        let mut conn = SqliteConnection::connect(&h.database_url()).await.ok()?;
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM swept")
            .fetch_one(&mut conn)
            .await
            .ok()
    };
    let mut swept = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        swept = count().await.unwrap_or(0);
        if swept >= 3 {
            break;
        }
    }
    token.cancel();
    handle.await.unwrap();
    assert!(swept >= 3, "timer runs committed: {swept}");
}

#[tokio::test]
async fn inputs_that_arrive_while_another_replica_writes_join_one_batch() {
    let h = Harness::start().await;
    let port = free_port();
    // Another replica's turn: the writer lock of the same database file, held.
    let other = WriterLock::beside(&h.dir.path().join("fraud.db")).unwrap();
    let turn = other.acquire().await.unwrap();
    let (stop, task) = h.spawn_with(
        Ledger,
        &[("RIDESAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    // The first input reaches the writer, which waits for its turn; the others arrive while
    // it waits.
    h.publish(&block("u_first"), "w0").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for n in 1..8 {
        h.publish(&block(&format!("u_later{n}")), &format!("w{n}"))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(turn);
    assert_eq!(h.stored("evt.fraud.blocklist.>", 8).await.len(), 8);
    let metrics = http_get(port, "/metrics").await;
    let batches = metrics
        .lines()
        .find(|line| line.starts_with("ridesaga_batches_total"))
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no batch count in {metrics}"));
    assert_eq!(batches, "1", "{metrics}");
    stop.cancel();
    task.await.unwrap();
}
