//! The shared runtime against a real nats-server, with small test services: inputs take effect
//! once under redelivery and duplicates, outputs left behind by a crash are relayed, poison
//! messages are dead-lettered with their reason, transient failures are retried, and calls to
//! the outside world (effects) are made and settled once through crashes, timeouts and
//! outages, on both backends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use ridesaga_schemas::*;
use ridesaga_testkit::{Identity, NatsServer};
use ridesaga_workers::config::{RuntimeConfig, Settings};
use ridesaga_workers::runtime::{
    self, BatchError, BatchOutput, BatchWrite, Conn, Effect, EffectError, EffectOutcome, Finished,
    HandleError, Input, Kind, PendingEffect, Settled, Worker,
    sqlite::{self as store, writer_lock::WriterLock},
};
use sqlx::migrate::Migrator;
use sqlx::{Connection, SqliteConnection};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

/// Answers every `cmd.fraud.block` with `evt.fraud.blocklist`, counting what it applied in its
/// database (table `applied`); fails transiently for riders named `u_flaky*` on the first deliveries, and
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

    async fn handle(
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
        sqlx::query("CREATE TABLE IF NOT EXISTS applied (rider TEXT NOT NULL)")
            .execute(&mut *conn)
            .await?;
        sqlx::query("INSERT INTO applied (rider) VALUES (?)")
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
/// CHECK, failing the commit; for a rider named `u_badinsert*` a row without a rider is
/// inserted at once, failing the whole batch with the database's error.
#[derive(Clone, Default)]
struct Ledger;

impl Worker for Ledger {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn migrator(&self, _kind: Kind) -> &'static Migrator {
        &NO_MIGRATIONS
    }

    async fn handle(
        &self,
        conn: &mut Conn<'_>,
        input: &Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        runtime::handle_as_batch(self, conn, input, now).await
    }

    async fn handle_batch(
        &self,
        conn: &mut Conn<'_>,
        inputs: &[Input<'_>],
    ) -> Result<BatchOutput, BatchError> {
        let Conn::Sqlite(conn) = conn else {
            unreachable!("the runtime's tests run their workers on SQLite files")
        };
        let conn: &mut SqliteConnection = conn;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS applied \
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
            if block.rider_id.as_str().starts_with("u_badinsert") {
                sqlx::query("INSERT INTO applied (rider) VALUES (NULL)")
                    .execute(&mut *conn)
                    .await
                    .map_err(|e| BatchError::Batch(e.into()))?;
            }
            riders.push(block.rider_id.to_string());
            let out = RiderBlockChanged {
                rider_id: block.rider_id.clone(),
                blocked: true,
                reason: None,
            };
            outputs.push(vec![Envelope::caused_by(input.envelope, out, "", "fraud")]);
        }
        let write = BatchWrite::new(
            "INSERT INTO applied (rider) SELECT value FROM json_each(?)",
            &riders,
        )
        .map_err(BatchError::Batch)?;
        Ok(BatchOutput {
            outputs,
            writes: vec![write],
            effects: Vec::new(),
        })
    }
}

struct Harness {
    server: NatsServer,
    js: jetstream::Context,
    dir: tempfile::TempDir,
    /// The workers' `DATABASE_URL`.
    database: String,
}

impl Harness {
    /// A server and a SQLite file for the workers.
    async fn start() -> Harness {
        Harness::start_on(Kind::Sqlite).await
    }

    /// A server and a fresh database of `kind` for the workers (PostgreSQL: on the server the
    /// test process shares).
    async fn start_on(kind: Kind) -> Harness {
        if std::env::var_os("RUST_LOG").is_some() {
            ridesaga_workers::telemetry::init("info");
        }
        let server = NatsServer::start().await.unwrap();
        let js = jetstream::new(server.client().await.unwrap());
        streams::provision(&js, streams::ProvisionOptions::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let database = match kind {
            Kind::Sqlite => format!("sqlite://{}", dir.path().join("fraud.db").display()),
            Kind::Postgres => ridesaga_testkit::Postgres::shared()
                .unwrap()
                .create_database("runtime")
                .unwrap(),
        };
        Harness {
            server,
            js,
            dir,
            database,
        }
    }

    fn database_url(&self) -> String {
        self.database.clone()
    }

    fn config(&self, extra: &[(&str, String)]) -> RuntimeConfig {
        let mut settings = Settings::from_pairs(
            self.server
                .env(Identity::Worker(Service::Fraud))
                .into_iter()
                .chain([
                    ("DATABASE_URL".to_owned(), self.database_url()),
                    ("RIDESAGA_HTTP_ADDR".to_owned(), "off".to_owned()),
                    ("RIDESAGA_RELAY_INTERVAL".to_owned(), "100ms".to_owned()),
                ]),
        );
        for (name, value) in extra {
            settings = settings.with(name, value.clone());
        }
        RuntimeConfig::load("fraud", &settings).unwrap()
    }

    fn spawn(&self, worker: Blocklist) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        self.spawn_with(worker, &[])
    }

    fn spawn_with<W: Worker>(
        &self,
        worker: W,
        extra: &[(&str, String)],
    ) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let config = self.config(extra);
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

    async fn publish_acked(
        &self,
        envelope: &Envelope,
        msg_id: &str,
    ) -> jetstream::publish::PublishAck {
        let msg = jetstream::message::PublishMessage::build()
            .payload(envelope.encode().into())
            .message_id(msg_id);
        self.js
            .send_publish(envelope.subject(), msg)
            .await
            .unwrap()
            .await
            .unwrap()
    }

    async fn applied(&self, rider: &str) -> i64 {
        let pool = store::open(&self.database_url(), 1).await.unwrap();
        let count = sqlx::query_scalar("SELECT COUNT(*) FROM applied WHERE rider = ?")
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
        self.poll(streams::SAGA_STREAM, subject, expected).await
    }

    async fn dead_letters(&self, expected: usize) -> Vec<DeadLetter> {
        self.poll(streams::DEAD_LETTER_STREAM, "dlq.>", expected)
            .await
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect()
    }

    async fn poll(&self, stream: &str, subject: &str, expected: usize) -> Vec<jetstream::Message> {
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

    async fn read(&self, stream: &str, subject: &str) -> Vec<jetstream::Message> {
        ridesaga_testkit::system::stored(&self.js, stream, subject)
            .await
            .unwrap()
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
        h.applied("u_twice").await,
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
        h.applied("u_crashed").await,
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
    assert_eq!(h.applied("u_flaky").await, 1);
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
/// Publishes `payload` on `subject` as it is (no `Nats-Msg-Id`), with `headers`.
async fn publish_raw(
    js: &jetstream::Context,
    subject: &str,
    headers: async_nats::HeaderMap,
    payload: Vec<u8>,
) -> Result<jetstream::publish::PublishAck, String> {
    let message = jetstream::message::PublishMessage::build()
        .payload(payload.into())
        .headers(headers);
    js.send_publish(subject.to_owned(), message)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())
}

impl Harness {
    /// Waits until the fraud consumer has nothing pending and nothing unacknowledged: every
    /// message published so far was handled and settled (acknowledged or terminated).
    async fn settled(&self) {
        let stream = self.js.get_stream(streams::SAGA_STREAM).await.unwrap();
        let mut consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&Service::Fraud.consumer_name())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let info = consumer.info().await.unwrap();
            if info.num_pending == 0 && info.num_ack_pending == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker did not settle: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn bad_raw_messages_are_dead_lettered_with_the_decoders_reason() {
    let h = Harness::start().await;
    let worker = Blocklist::default();
    let (stop, task) = h.spawn(worker);
    let none = async_nats::HeaderMap::new;
    let mut expected: Vec<(String, String)> = Vec::new();

    // A wrong type: the reason is the decoder's, word for word.
    let mut value: serde_json::Value = serde_json::from_slice(&block("u_types").encode()).unwrap();
    value["schema_version"] = "1".into();
    let payload = serde_json::to_vec(&value).unwrap();
    let subject = "cmd.fraud.block.u_types";
    let reason = Envelope::decode(subject, &payload).unwrap_err().to_string();
    assert!(reason.contains("expected u16"), "{reason}");
    publish_raw(&h.js, subject, none(), payload).await.unwrap();
    expected.push((subject.into(), format!("undecodable message: {reason}")));

    // Another major version of the contract: refused, whatever its fields.
    let mut value: serde_json::Value = serde_json::from_slice(&block("u_major").encode()).unwrap();
    value["schema_version"] = (SCHEMA_VERSION + 1).into();
    let subject = "cmd.fraud.block.u_major";
    publish_raw(&h.js, subject, none(), serde_json::to_vec(&value).unwrap())
        .await
        .unwrap();
    expected.push((
        subject.into(),
        format!(
            "undecodable message: cmd.fraud.block follows contract major version {}; this \
             reader reads major version {SCHEMA_VERSION} only",
            SCHEMA_VERSION + 1
        ),
    ));

    // A look-alike id in the subject (Cyrillic 'а').
    let subject = "cmd.fraud.block.u_\u{430}lice";
    publish_raw(&h.js, subject, none(), block("u_alice").encode())
        .await
        .unwrap();
    expected.push((
        subject.into(),
        "undecodable message: subject id: subject id \"u_\u{430}lice\" contains '\u{430}'; only \
         ASCII letters, digits, '_' and '-' are allowed (ids are NATS subject tokens)"
            .into(),
    ));

    // Subject and envelope that disagree.
    let subject = "cmd.fraud.block.u_other";
    publish_raw(&h.js, subject, none(), block("u_one").encode())
        .await
        .unwrap();
    expected.push((
        subject.into(),
        "undecodable message: cmd.fraud.block names rider_id \"u_one\" but its subject ends \
         with \"u_other\""
            .into(),
    ));

    // A terminal escape in a text field.
    let mut escape = block("u_escape");
    escape.message = Message::BlockRider(BlockRider {
        rider_id: RiderId::parse("u_escape").unwrap(),
        reason: Some("\u{1b}[2J".into()),
    });
    let subject = "cmd.fraud.block.u_escape";
    publish_raw(&h.js, subject, none(), escape.encode())
        .await
        .unwrap();
    expected.push((
        subject.into(),
        "undecodable message: invalid cmd.fraud.block payload: reason contains the control \
         character '\\u{1b}'"
            .into(),
    ));

    // Headers over the limit on an otherwise good message.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Filler", "x".repeat(5_000).as_str());
    let subject = "cmd.fraud.block.u_headers";
    publish_raw(&h.js, subject, headers, block("u_headers").encode())
        .await
        .unwrap();
    expected.push((
        subject.into(),
        "undecodable message: headers are 5024 bytes; the limit is 4096".into(),
    ));

    // 60 KiB of NUL bytes: six times that as JSON text, too much to copy into the record.
    let subject = "cmd.fraud.block.u_nul";
    let nul = publish_raw(&h.js, subject, none(), vec![0; 60 * 1024])
        .await
        .unwrap();
    expected.push((
        subject.into(),
        format!(
            "undecodable message: malformed envelope: expected value at line 1 column 1 (the \
             payload, 61440 bytes as text, is not copied: see saga stream sequence {})",
            nul.sequence
        ),
    ));

    // Far in the future: the receiver's clock is in the reason, so only its start is known.
    let mut future = block("u_future");
    future.occurred_at =
        Timestamp::from_unix_millis(Timestamp::now().unix_millis() + 2 * 24 * 3600 * 1000);
    let subject = "cmd.fraud.block.u_future";
    publish_raw(&h.js, subject, none(), future.encode())
        .await
        .unwrap();
    let future_reason = format!(
        "undecodable message: cmd.fraud.block occurred at {}, more than 24 hours ahead of the \
         receiver's clock (",
        future.occurred_at
    );

    // Over the size limit: the stream refuses it at once, so the publisher learns why.
    let refused = publish_raw(
        &h.js,
        "cmd.fraud.block.u_huge",
        none(),
        vec![b' '; MAX_MESSAGE_BYTES + 1],
    )
    .await
    .unwrap_err();
    assert!(
        refused.contains("message size exceeds maximum allowed"),
        "{refused}"
    );

    let letters = h.dead_letters(expected.len() + 1).await;
    h.settled().await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(letters.len(), expected.len() + 1, "{letters:#?}");
    for (subject, reason) in &expected {
        let letter = letters
            .iter()
            .find(|l| &l.subject == subject)
            .unwrap_or_else(|| panic!("no dead letter for {subject}: {letters:#?}"));
        assert_eq!(&letter.reason, reason);
        assert_eq!(letter.deliveries, 1, "dead-lettered at once, not retried");
        assert_eq!(letter.service, "fraud");
    }
    let future = letters
        .iter()
        .find(|l| l.subject == "cmd.fraud.block.u_future")
        .unwrap();
    assert!(
        future.reason.starts_with(&future_reason) && future.reason.ends_with(')'),
        "{}",
        future.reason
    );
    // The record keeps the original for replay, except where it would not fit (then the saga
    // stream has it, at the sequence the reason names).
    for letter in &letters {
        let original =
            h.js.get_stream(streams::SAGA_STREAM)
                .await
                .unwrap()
                .get_raw_message(letter.stream_sequence)
                .await
                .unwrap();
        assert_eq!(original.subject.as_str(), letter.subject);
        if letter.subject.ends_with("u_nul") {
            assert!(letter.payload.is_empty());
            assert_eq!(original.payload.len(), 60 * 1024);
        } else {
            assert_eq!(letter.payload.as_bytes(), &original.payload[..]);
        }
    }
    // Nothing was applied and nothing emitted.
    for rider in [
        "u_types",
        "u_major",
        "u_alice",
        "u_one",
        "u_escape",
        "u_headers",
        "u_future",
    ] {
        assert_eq!(h.applied(rider).await, 0, "{rider}");
    }
    assert!(h.stored("evt.fraud.blocklist.*", 0).await.is_empty());
}

#[tokio::test]
async fn a_newer_producers_message_with_fields_this_reader_does_not_know_is_applied_once() {
    let h = Harness::start().await;
    let (stop, task) = h.spawn(Blocklist::default());
    let none = async_nats::HeaderMap::new;
    let mut value: serde_json::Value = serde_json::from_slice(&block("u_newer").encode()).unwrap();
    value["trace_parent"] = "00-4bf92f3577b34da6-00f067aa0ba902b7-01".into();
    value["data"]["review_queue"] = serde_json::json!({"priority": 2, "team": "trust"});
    let payload = serde_json::to_vec(&value).unwrap();
    publish_raw(&h.js, "cmd.fraud.block.u_newer", none(), payload.clone())
        .await
        .unwrap();
    // Delivered again (as after a crash before the ack): still applied once.
    publish_raw(&h.js, "cmd.fraud.block.u_newer", none(), payload)
        .await
        .unwrap();
    let out = h.stored("evt.fraud.blocklist.u_newer", 1).await;
    h.settled().await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(h.applied("u_newer").await, 1, "applied once");
    assert!(h.dead_letters(0).await.is_empty(), "nothing dead-lettered");
}

#[tokio::test]
async fn a_replayed_message_with_changed_content_under_an_old_id_changes_nothing() {
    let h = Harness::start().await;
    let (stop, task) = h.spawn(Blocklist::default());
    let original = Envelope {
        message: Message::BlockRider(BlockRider {
            rider_id: RiderId::parse("u_replay").unwrap(),
            reason: Some("first".into()),
        }),
        ..block("u_replay")
    };
    let mut changed = original.clone();
    changed.message = Message::BlockRider(BlockRider {
        rider_id: RiderId::parse("u_replay").unwrap(),
        reason: Some("second".into()),
    });
    assert_ne!(original.encode(), changed.encode());

    let ack = h.publish_acked(&original, original.id.as_str()).await;
    assert!(!ack.duplicate);
    let out = h.stored("evt.fraud.blocklist.u_replay", 1).await;
    assert_eq!(out.len(), 1);

    // Within the duplicate window, the stream drops the changed copy: it is never delivered.
    let ack = h.publish_acked(&changed, original.id.as_str()).await;
    assert!(ack.duplicate, "the stream stored the changed copy: {ack:?}");

    // Past the window (another Nats-Msg-Id stands in for it), the copy is stored and delivered;
    // the inbox knows its id and occurrence, so it is acknowledged without effect.
    let ack = h.publish_acked(&changed, "after-the-window").await;
    assert!(!ack.duplicate);
    h.settled().await;
    let out = h.stored("evt.fraud.blocklist.u_replay", 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(out.len(), 1, "no second output");
    let emitted = Envelope::decode(&out[0].subject, &out[0].payload).unwrap();
    assert!(
        matches!(&emitted.message, Message::RiderBlockChanged(c) if c.reason.as_deref() == Some("first")),
        "the first content stands: {emitted:?}"
    );
    assert_eq!(h.applied("u_replay").await, 1, "applied once");
    assert!(
        h.dead_letters(0).await.is_empty(),
        "a duplicate is not an error"
    );
}

fn free_port() -> u16 {
    ridesaga_testkit::ports::free_one().expect("a free port")
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
    publish_raw(
        &h.js,
        "cmd.fraud.block.u_garbled",
        async_nats::HeaderMap::new(),
        b"{not json".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(h.dead_letters(1).await.len(), 1);
    let health = http_get(port, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200 OK"), "{health}");
    let metrics = http_get(port, "/metrics").await;
    // The figures by bounded labels: the handler's outcome, the dead letter's cause.
    let figure = |name: &str, labels: &[&str]| {
        metrics
            .lines()
            .filter(|line| line.starts_with(&format!("{name}{{")))
            .find(|line| labels.iter().all(|label| line.contains(label)))
            .and_then(|line| line.rsplit(' ').next())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{metrics}"))
            .to_owned()
    };
    let fraud = "service=\"fraud\"";
    assert_eq!(figure("ridesaga_messages_handled_total", &[fraud]), "1");
    let applied = "outcome=\"applied\"";
    let latency = "ridesaga_handler_duration_seconds_count";
    assert_eq!(figure(latency, &[fraud, applied]), "1");
    let dead_letters = "ridesaga_messages_dead_lettered_total";
    assert_eq!(figure(dead_letters, &["reason=\"undecodable\""]), "1");
    assert_eq!(figure(dead_letters, &["reason=\"rejected\""]), "0");
    assert_eq!(figure("ridesaga_batch_inputs_count", &[fraud]), "1");
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
        assert_eq!(h.applied(&format!("u_good{n}")).await, 1, "u_good{n}");
        assert_eq!(h.applied(&format!("u_poison{n}")).await, 0, "u_poison{n}");
    }
}

#[tokio::test]
async fn a_write_that_fails_a_batch_commit_fails_only_its_own_input() {
    one_broken_input_among_twenty("u_badwrite1", "CHECK constraint failed").await;
}

#[tokio::test]
async fn a_database_error_that_fails_a_whole_batch_fails_only_its_own_input() {
    one_broken_input_among_twenty("u_badinsert1", "NOT NULL constraint failed").await;
}

/// Twenty good inputs and `broken` (a rider [`Ledger`] fails the batch on) between them, in
/// shared batches: every good one is applied once, and `broken` alone is dead-lettered on its
/// first delivery with a reason containing `reason`.
async fn one_broken_input_among_twenty(broken: &str, reason: &str) {
    let h = Harness::start().await;
    // Published before the worker starts, so they arrive together and share batches.
    for n in 0..10 {
        h.publish(&block(&format!("u_good{n}")), &format!("g{n}"))
            .await;
    }
    h.publish(&block(broken), "b1").await;
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
    assert!(letters[0].subject.ends_with(broken), "{letters:?}");
    assert!(letters[0].reason.contains(reason), "{}", letters[0].reason);
    assert_eq!(
        letters[0].deliveries, 1,
        "a broken constraint is not retried"
    );
    for n in 0..20 {
        assert_eq!(h.applied(&format!("u_good{n}")).await, 1, "u_good{n}");
    }
    assert_eq!(h.applied(broken).await, 0);
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

    async fn handle(
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

// ---- effects ----------------------------------------------------------------------------------

/// An outside party (a gateway): performs each operation once per idempotency key and answers a
/// repeated key with its first answer, counting every call per key. It can be told to fail
/// transiently the next N calls, to answer the next call late (after performing it), to refuse,
/// or to be down.
#[derive(Default)]
struct Party {
    calls: Mutex<HashMap<String, u32>>,
    performed: Mutex<HashMap<String, String>>,
    busy_for: AtomicU32,
    late_once: Mutex<Option<Duration>>,
    refuses: AtomicBool,
    down: AtomicBool,
}

impl Party {
    async fn call(&self, key: &str) -> Result<String, EffectError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_default() += 1;
        if self.down.load(Ordering::SeqCst) {
            return Err(EffectError::Transient("the party is down".into()));
        }
        let busy = self
            .busy_for
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if busy.is_ok() {
            return Err(EffectError::Transient("busy, try again".into()));
        }
        if self.refuses.load(Ordering::SeqCst) {
            return Err(EffectError::Permanent("refused".into()));
        }
        let answer = {
            let mut performed = self.performed.lock().unwrap();
            let n = performed.len();
            performed
                .entry(key.to_owned())
                .or_insert_with(|| format!("answer {n} for {key}"))
                .clone()
        };
        let late = self.late_once.lock().unwrap().take();
        if let Some(late) = late {
            tokio::time::sleep(late).await;
        }
        Ok(answer)
    }

    fn calls(&self, key: &str) -> u32 {
        self.calls.lock().unwrap().get(key).copied().unwrap_or(0)
    }

    /// Operations performed (each key once, however often it was called).
    fn performed(&self) -> usize {
        self.performed.lock().unwrap().len()
    }
}

/// Declares a call to the [`Party`] for every `evt.ride.requested` (effect `<ride>/check`) and
/// settles it with `evt.fraud.cleared` (done) or `evt.fraud.flagged` (refused, gave up). It
/// can be told to stall its first call before it reaches the party, or to panic in its first
/// settle, each time telling the test through `reached`, or to fail the first settle of some
/// effects.
#[derive(Clone, Default)]
struct Caller {
    party: Arc<Party>,
    stall_first_call: Arc<AtomicBool>,
    panic_first_settle: Arc<AtomicBool>,
    refuse_settle_once: Arc<Mutex<std::collections::HashSet<String>>>,
    reached: Arc<Notify>,
    settled: Arc<Mutex<Vec<(String, EffectOutcome)>>>,
}

impl Caller {
    fn settled(&self) -> Vec<(String, EffectOutcome)> {
        self.settled.lock().unwrap().clone()
    }
}

impl Worker for Caller {
    fn service(&self) -> Service {
        Service::Fraud
    }

    fn migrator(&self, _kind: Kind) -> &'static Migrator {
        &NO_MIGRATIONS
    }

    async fn handle(
        &self,
        conn: &mut Conn<'_>,
        input: &Envelope,
        now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        runtime::handle_as_batch(self, conn, input, now).await
    }

    async fn handle_batch(
        &self,
        _conn: &mut Conn<'_>,
        inputs: &[Input<'_>],
    ) -> Result<BatchOutput, BatchError> {
        let mut effects = Vec::new();
        for input in inputs {
            if let (Message::RideRequested(requested), Some(ride)) =
                (&input.envelope.message, &input.envelope.saga_id)
            {
                effects.push(Effect {
                    id: format!("{ride}/check"),
                    kind: "test.check".into(),
                    saga_id: Some(ride.clone()),
                    request: serde_json::json!({ "rider": requested.rider_id }).to_string(),
                    trace: input.trace.cloned(),
                });
            }
        }
        Ok(BatchOutput {
            outputs: inputs.iter().map(|_| Vec::new()).collect(),
            writes: Vec::new(),
            effects,
        })
    }

    async fn perform(&self, effect: &PendingEffect) -> Result<String, EffectError> {
        if self.stall_first_call.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            std::future::pending::<()>().await;
        }
        self.party.call(&effect.effect.id).await
    }

    async fn settle(
        &self,
        _conn: &mut Conn<'_>,
        finished: &[Finished],
        now: Timestamp,
    ) -> Result<Settled, BatchError> {
        let mut outputs = Vec::new();
        for (index, f) in finished.iter().enumerate() {
            let event = self
                .settle_effect(&f.effect, f.outcome.clone(), now)
                .map_err(|error| BatchError::Input { index, error })?;
            outputs.push(event);
        }
        Ok(Settled {
            outputs,
            effects: Vec::new(),
        })
    }
}

impl Caller {
    /// Settles one effect: the event that announces its outcome.
    fn settle_effect(
        &self,
        effect: &PendingEffect,
        outcome: EffectOutcome,
        now: Timestamp,
    ) -> Result<Envelope, HandleError> {
        if self.panic_first_settle.swap(false, Ordering::SeqCst) {
            self.reached.notify_one();
            panic!(
                "the replica dies before the outcome of {} commits",
                effect.effect.id
            );
        }
        if self
            .refuse_settle_once
            .lock()
            .unwrap()
            .remove(&effect.effect.id)
        {
            return Err(HandleError::Transient(
                "the service could not settle".into(),
            ));
        }
        self.settled
            .lock()
            .unwrap()
            .push((effect.effect.id.clone(), outcome.clone()));
        let request: serde_json::Value = serde_json::from_str(&effect.effect.request)
            .map_err(|e| HandleError::Permanent(e.to_string()))?;
        let rider_id = RiderId::parse(request["rider"].as_str().unwrap_or_default())
            .map_err(|e| HandleError::Permanent(e.to_string()))?;
        let event = match outcome {
            EffectOutcome::Done(answer) => effect.event(
                FraudCleared {
                    rider_id,
                    score: 0,
                    reasons: vec![answer],
                },
                "c_test",
                "fraud",
                now,
            ),
            EffectOutcome::Failed(reason) | EffectOutcome::GaveUp(reason) => effect.event(
                FraudFlagged {
                    rider_id,
                    score: 100,
                    reasons: vec![reason],
                },
                "c_test",
                "fraud",
                now,
            ),
        };
        Ok(event)
    }
}

/// A replica on a runtime of its own, on a thread of its own, so that it can be killed: every
/// task it spawned stops wherever it was, as in a crashed process.
struct Replica {
    stop: CancellationToken,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Replica {
    /// Stops the replica without draining.
    async fn kill(mut self) {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.join().await;
    }

    /// Stops the replica the way SIGTERM does.
    async fn stop(mut self) {
        self.stop.cancel();
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join().unwrap())
                .await
                .unwrap();
        }
    }
}

impl Harness {
    fn replica<W: Worker>(&self, worker: W, extra: &[(&str, String)]) -> Replica {
        let config = self.config(extra);
        let stop = CancellationToken::new();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    tokio::select! {
                        result = runtime::run(worker, config, stop) => result.unwrap(),
                        _ = killed => {}
                    }
                });
                // Dropping the runtime drops every task the replica spawned.
                drop(runtime);
            }
        });
        Replica {
            stop,
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    /// A ride request for `ride`, as the ride service publishes it.
    async fn request(&self, ride: &str) -> RideId {
        let ride = RideId::parse(ride).unwrap();
        let point = |lat, lon| GeoPoint::new(lat, lon).unwrap();
        let requested = RideRequested {
            rider_id: RiderId::parse("u_effects").unwrap(),
            pickup: point(52.52, 13.40),
            dropoff: point(52.50, 13.45),
            payment_token: "tok_visa".into(),
            estimated_distance_km: 4.0,
            estimated_fare_cents: 1_200,
            match_deadline: Timestamp::now(),
            expires_at: None,
        };
        let envelope = Envelope::new(requested, Some(ride.clone()), "ride");
        self.publish(&envelope, envelope.id.as_str()).await;
        ride
    }

    /// What the replicas' service API answers for the pending effects of `ride` (once a
    /// replica has registered it).
    async fn pending_effects(&self, ride: &RideId) -> serde_json::Value {
        let client = self.server.client().await.unwrap();
        for _ in 0..100 {
            match client
                .request("ridesaga.effects.fraud", ride.to_string().into())
                .await
            {
                Ok(answer) => return serde_json::from_slice(&answer.payload).unwrap(),
                Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("asking for the effects of {ride}: {e}"),
            }
        }
        panic!("no replica answers for the effects of {ride}");
    }

    /// Until when the effect `id` is claimed (0: by nobody), if it is recorded.
    async fn claimed_until(&self, id: &str) -> Option<i64> {
        if self.database.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&self.database).await.unwrap();
            let until =
                sqlx::query_scalar("SELECT claimed_until FROM effects WHERE effect_id = $1")
                    .bind(id)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            pool.close().await;
            until
        } else {
            let pool = store::open(&self.database, 1).await.unwrap();
            let until = sqlx::query_scalar("SELECT claimed_until FROM effects WHERE effect_id = ?")
                .bind(id)
                .fetch_optional(&pool)
                .await
                .unwrap();
            pool.close().await;
            until
        }
    }

    /// Effects still recorded in the workers' database.
    async fn recorded_effects(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM effects";
        if self.database.starts_with("postgres") {
            let pool = sqlx::PgPool::connect(&self.database).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        } else {
            let pool = store::open(&self.database, 1).await.unwrap();
            let n = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            pool.close().await;
            n
        }
    }
}

/// Runs an effect scenario on each backend: `<name>_on_sqlite` and `<name>_on_postgres`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn on_sqlite() {
                super::$name(Harness::start_on(Kind::Sqlite).await).await;
            }

            #[tokio::test]
            async fn on_postgres() {
                super::$name(Harness::start_on(Kind::Postgres).await).await;
            }
        }
    };
}

fn waits(what: &'static str) -> impl FnOnce(tokio::time::error::Elapsed) {
    move |_| panic!("timed out waiting for {what}")
}

on_both_backends!(an_effect_is_performed_once_and_settled_once);
async fn an_effect_is_performed_once_and_settled_once(h: Harness) {
    let worker = Caller::default();
    let (stop, task) = h.spawn_with(worker.clone(), &[]);
    let ride = h.request("r_once").await;
    let cleared = h.stored(&format!("evt.fraud.cleared.{ride}"), 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(cleared.len(), 1, "one event");
    assert_eq!(worker.party.calls("r_once/check"), 1, "one call");
    assert_eq!(
        worker.settled(),
        [(
            "r_once/check".to_owned(),
            EffectOutcome::Done("answer 0 for r_once/check".into())
        )]
    );
    assert_eq!(
        h.recorded_effects().await,
        0,
        "settled effects are forgotten"
    );
}

on_both_backends!(a_crash_after_the_intent_commits_and_before_the_call_calls_once);
async fn a_crash_after_the_intent_commits_and_before_the_call_calls_once(h: Harness) {
    let worker = Caller::default();
    worker.stall_first_call.store(true, Ordering::SeqCst);
    let settings = [("RIDESAGA_EFFECT_TIMEOUT", "3s".to_string())];
    let first = h.replica(worker.clone(), &settings);
    let ride = h.request("r_crash_before").await;
    tokio::time::timeout(Duration::from_secs(20), worker.reached.notified())
        .await
        .unwrap_or_else(waits("the first replica's call"));
    first.kill().await;
    assert_eq!(worker.party.calls("r_crash_before/check"), 0);

    // The effect is still recorded, claimed by the dead replica: the next one performs it
    // once the claim expires.
    let second = h.replica(worker.clone(), &settings);
    let cleared = h.stored(&format!("evt.fraud.cleared.{ride}"), 1).await;
    second.stop().await;
    assert_eq!(cleared.len(), 1, "one event");
    assert_eq!(worker.party.calls("r_crash_before/check"), 1, "one call");
    assert_eq!(worker.settled().len(), 1, "settled once");
    assert_eq!(h.recorded_effects().await, 0);
}

on_both_backends!(a_stopping_replica_hands_back_the_effects_it_had_not_started);
async fn a_stopping_replica_hands_back_the_effects_it_had_not_started(h: Harness) {
    let worker = Caller::default();
    worker.stall_first_call.store(true, Ordering::SeqCst);
    let settings = [
        ("RIDESAGA_EFFECT_CONCURRENCY", "1".to_string()),
        ("RIDESAGA_EFFECT_TIMEOUT", "2s".to_string()),
    ];
    let first = h.replica(worker.clone(), &settings);
    let stalled = h.request("r_stalled").await;
    tokio::time::timeout(Duration::from_secs(20), worker.reached.notified())
        .await
        .unwrap_or_else(waits("the first call"));
    // Recorded by the first replica, claimed by it, and waiting for its only slot.
    let waiting = h.request("r_waiting").await;
    let id = format!("{waiting}/check");
    tokio::time::timeout(Duration::from_secs(20), async {
        while h.claimed_until(&id).await.is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(waits("the second effect's record"));
    assert!(
        h.claimed_until(&id).await > Some(0),
        "claimed by its replica"
    );

    first.stop().await;
    assert_eq!(worker.party.calls(&id), 0, "never started");
    assert_eq!(
        h.claimed_until(&id).await,
        Some(0),
        "handed back: the next replica need not wait for the claim to expire"
    );
    let second = h.replica(worker.clone(), &[]);
    let cleared = h.stored("evt.fraud.cleared.*", 2).await;
    second.stop().await;
    assert_eq!(cleared.len(), 2, "one event each");
    for ride in [&stalled, &waiting] {
        assert_eq!(worker.party.calls(&format!("{ride}/check")), 1, "{ride}");
    }
    assert_eq!(h.recorded_effects().await, 0);
}

on_both_backends!(a_crash_after_the_call_performs_it_again_with_the_same_key);
async fn a_crash_after_the_call_performs_it_again_with_the_same_key(h: Harness) {
    let worker = Caller::default();
    worker.panic_first_settle.store(true, Ordering::SeqCst);
    let settings = [("RIDESAGA_EFFECT_TIMEOUT", "1s".to_string())];
    let first = h.replica(worker.clone(), &settings);
    let ride = h.request("r_crash_after").await;
    tokio::time::timeout(Duration::from_secs(20), worker.reached.notified())
        .await
        .unwrap_or_else(waits("the first replica's settle"));
    first.kill().await;
    assert_eq!(worker.party.calls("r_crash_after/check"), 1);

    let second = h.replica(worker.clone(), &settings);
    let cleared = h.stored(&format!("evt.fraud.cleared.{ride}"), 1).await;
    second.stop().await;
    assert_eq!(cleared.len(), 1, "one event");
    assert_eq!(
        worker.party.calls("r_crash_after/check"),
        2,
        "called again, with the same key"
    );
    assert_eq!(worker.party.performed(), 1, "one effect at the party");
    assert_eq!(
        worker.settled(),
        [(
            "r_crash_after/check".to_owned(),
            EffectOutcome::Done("answer 0 for r_crash_after/check".into())
        )]
    );
    assert_eq!(h.recorded_effects().await, 0);
}

on_both_backends!(a_call_that_times_out_and_then_succeeds_takes_effect_once);
async fn a_call_that_times_out_and_then_succeeds_takes_effect_once(h: Harness) {
    let worker = Caller::default();
    // The party performs the first call but answers after the attempt's timeout.
    *worker.party.late_once.lock().unwrap() = Some(Duration::from_secs(3));
    let (stop, task) = h.spawn_with(
        worker.clone(),
        &[("RIDESAGA_EFFECT_TIMEOUT", "500ms".to_string())],
    );
    let ride = h.request("r_late").await;
    let cleared = h.stored(&format!("evt.fraud.cleared.{ride}"), 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(cleared.len(), 1, "one event");
    assert_eq!(
        worker.party.calls("r_late/check"),
        2,
        "timed out, then again"
    );
    assert_eq!(worker.party.performed(), 1, "one effect at the party");
    assert_eq!(worker.settled().len(), 1, "settled once");
}

on_both_backends!(transient_failures_are_retried_until_the_call_succeeds);
async fn transient_failures_are_retried_until_the_call_succeeds(h: Harness) {
    let worker = Caller::default();
    worker.party.busy_for.store(3, Ordering::SeqCst);
    let (stop, task) = h.spawn_with(worker.clone(), &[]);
    let ride = h.request("r_busy").await;
    let cleared = h.stored(&format!("evt.fraud.cleared.{ride}"), 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(cleared.len(), 1, "one event");
    assert_eq!(
        worker.party.calls("r_busy/check"),
        4,
        "three failures, then success"
    );
    assert_eq!(worker.settled().len(), 1);
}

on_both_backends!(a_refused_call_settles_as_failed_once);
async fn a_refused_call_settles_as_failed_once(h: Harness) {
    let worker = Caller::default();
    worker.party.refuses.store(true, Ordering::SeqCst);
    let (stop, task) = h.spawn_with(worker.clone(), &[]);
    let ride = h.request("r_refused").await;
    let flagged = h.stored(&format!("evt.fraud.flagged.{ride}"), 1).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(flagged.len(), 1, "one event");
    assert_eq!(worker.party.calls("r_refused/check"), 1, "not retried");
    assert_eq!(
        worker.settled(),
        [(
            "r_refused/check".to_owned(),
            EffectOutcome::Failed("refused".into())
        )]
    );
}

on_both_backends!(a_party_down_past_the_deadline_settles_as_given_up_once);
async fn a_party_down_past_the_deadline_settles_as_given_up_once(h: Harness) {
    let worker = Caller::default();
    worker.party.down.store(true, Ordering::SeqCst);
    let (stop, task) = h.spawn_with(
        worker.clone(),
        &[("RIDESAGA_EFFECT_DEADLINE", "3s".to_string())],
    );
    let ride = h.request("r_down").await;
    // While it is retried, the control plane sees the stuck call.
    let mut pending = serde_json::Value::Null;
    for _ in 0..100 {
        pending = h.pending_effects(&ride).await;
        if pending[0]["attempts"].as_u64().unwrap_or(0) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert_eq!(pending[0]["id"], "r_down/check", "{pending}");
    assert_eq!(pending[0]["kind"], "test.check", "{pending}");
    assert_eq!(pending[0]["last_error"], "the party is down", "{pending}");
    assert!(pending[0]["next_at"].is_string(), "{pending}");

    let flagged = h.stored(&format!("evt.fraud.flagged.{ride}"), 1).await;
    let after = h.pending_effects(&ride).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(flagged.len(), 1, "one event");
    assert_eq!(
        worker.settled(),
        [(
            "r_down/check".to_owned(),
            EffectOutcome::GaveUp("the party is down".into())
        )]
    );
    assert!(worker.party.calls("r_down/check") >= 3);
    assert_eq!(after, serde_json::json!([]));
}

on_both_backends!(an_outcome_that_fails_to_settle_is_retried_without_holding_up_the_others);
async fn an_outcome_that_fails_to_settle_is_retried_without_holding_up_the_others(h: Harness) {
    let worker = Caller::default();
    worker
        .refuse_settle_once
        .lock()
        .unwrap()
        .insert("r_group2/check".into());
    // Requested before the worker starts: one batch records the three effects, whose
    // outcomes come in together.
    let rides = [
        h.request("r_group1").await,
        h.request("r_group2").await,
        h.request("r_group3").await,
    ];
    let port = free_port();
    let (stop, task) = h.spawn_with(
        worker.clone(),
        &[("RIDESAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    let cleared = h.stored("evt.fraud.cleared.*", 3).await;
    let metrics = http_get(port, "/metrics").await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(cleared.len(), 3, "one event each");
    for ride in &rides {
        let id = format!("{ride}/check");
        let calls = if ride.as_str() == "r_group2" { 2 } else { 1 };
        assert_eq!(worker.party.calls(&id), calls, "{id}");
    }
    assert_eq!(worker.party.performed(), 3);
    // A settle the group's transaction rolled back (with the one that failed) ran again in
    // the transaction redone without it: count the commits.
    let mut settled: Vec<String> = worker.settled().into_iter().map(|(id, _)| id).collect();
    settled.sort();
    settled.dedup();
    assert_eq!(settled.len(), 3, "{settled:?}");
    for line in [
        "ridesaga_effects_settle_failed_total{service=\"fraud\",replica=",
        "ridesaga_effects_settled_total{service=\"fraud\",replica=",
        "ridesaga_effects_performed_total{service=\"fraud\",replica=",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let figure = |name: &str| {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(
        figure("ridesaga_effects_settle_failed_total").as_deref(),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        figure("ridesaga_effects_settled_total").as_deref(),
        Some("3"),
        "committed once each: {metrics}"
    );
    assert_eq!(h.recorded_effects().await, 0);
}

on_both_backends!(effects_beyond_the_concurrency_wait_for_a_free_slot);
async fn effects_beyond_the_concurrency_wait_for_a_free_slot(h: Harness) {
    let worker = Caller::default();
    let mut rides = Vec::new();
    for n in 0..6 {
        rides.push(h.request(&format!("r_slot{n}")).await);
    }
    let (stop, task) = h.spawn_with(
        worker.clone(),
        &[("RIDESAGA_EFFECT_CONCURRENCY", "1".to_string())],
    );
    let cleared = h.stored("evt.fraud.cleared.*", rides.len()).await;
    stop.cancel();
    task.await.unwrap();
    assert_eq!(cleared.len(), rides.len(), "one event each");
    for ride in &rides {
        assert_eq!(worker.party.calls(&format!("{ride}/check")), 1, "{ride}");
    }
    assert_eq!(h.recorded_effects().await, 0);
}
