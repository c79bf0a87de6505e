//! Least privilege, enforced by a real server running the generated configuration: each
//! identity connects with its own seed, and the server refuses what its permissions do not
//! allow. A worker publishes only its own events and dead letters, pulls and acks only its own
//! consumer and administers nothing; the viewer reads and publishes nothing; credentials that
//! are not an installation's are refused; with TLS on, a client that does not speak it or does
//! not trust the server's CA is refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use futures_util::StreamExt;
use ridesaga_schemas::Service;
use ridesaga_schemas::streams::{DEAD_LETTER_STREAM, ProvisionOptions, SAGA_STREAM, provision};
use ridesaga_testkit::{Identity, NatsServer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a refused request is given before it counts as unanswered (the server drops it).
const REFUSED_WITHIN: Duration = Duration::from_millis(750);

/// A client as `identity` with what the server reported to it (refusals) kept in order.
struct Client {
    js: jetstream::Context,
    client: async_nats::Client,
    errors: Arc<Mutex<Vec<String>>>,
}

impl Client {
    async fn connect(server: &NatsServer, identity: Identity) -> Client {
        let errors = Arc::new(Mutex::new(Vec::new()));
        let sink = errors.clone();
        let client = server
            .connect_options(identity)
            .unwrap()
            .event_callback(move |event| {
                let sink = sink.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        sink.lock().unwrap().push(e.to_string());
                    }
                }
            })
            .connect(server.url())
            .await
            .unwrap_or_else(|e| panic!("{identity} connects: {e}"));
        let js = jetstream::ContextBuilder::new()
            .timeout(REFUSED_WITHIN)
            .build(client.clone());
        Client { js, client, errors }
    }

    /// Waits until the server reported a permissions violation naming `subject`.
    async fn refused(&self, subject: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            {
                let errors = self.errors.lock().unwrap();
                if errors
                    .iter()
                    .any(|e| e.contains("Permissions Violation") && e.contains(subject))
                {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no permissions violation for {subject}; the server reported {errors:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes to the stream and waits for its acknowledgement.
    async fn publish(&self, subject: &str) -> Result<(), String> {
        let message = PublishMessage::build()
            .payload("{}".into())
            .message_id(format!("{subject}-{}", next_id()));
        self.js
            .send_publish(subject.to_owned(), message)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Publishes to the stream and expects the server to refuse it: no acknowledgement, a
    /// permissions violation for the subject.
    async fn publish_refused(&self, subject: &str) {
        let result = self.publish(subject).await;
        assert!(result.is_err(), "{subject} was stored");
        self.refused(subject).await;
    }
}

/// A number that differs between calls (message ids of this test).
fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A server with the streams and consumers provisioned by the provisioning identity.
async fn provisioned() -> NatsServer {
    let server = NatsServer::start().await.unwrap();
    let job = Client::connect(&server, Identity::Provision).await;
    provision(&job.js, ProvisionOptions::default())
        .await
        .expect("the provisioning identity creates the streams and consumers");
    server
}

async fn messages_in(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

#[tokio::test]
async fn the_payment_worker_publishes_only_its_own_events_and_dead_letters() {
    let server = provisioned().await;
    let admin = server.jetstream().await.unwrap();
    let payment = Client::connect(&server, Identity::Worker(Service::Payment)).await;

    payment
        .publish("evt.payment.authorized.r_1")
        .await
        .expect("its own event is stored");
    payment
        .publish("dlq.payment.7")
        .await
        .expect("its own dead letter is stored");
    for subject in [
        "evt.ride.confirmed.r_1",
        "evt.driver.assigned.r_1",
        "cmd.ride.request.r_2",
        "cmd.ride.cancel.r_1",
        "dlq.ride.7",
    ] {
        payment.publish_refused(subject).await;
    }
    assert_eq!(messages_in(&admin, SAGA_STREAM).await, 1);
    assert_eq!(messages_in(&admin, DEAD_LETTER_STREAM).await, 1);
}

#[tokio::test]
async fn the_payment_worker_pulls_and_acks_its_own_consumer_and_no_other() {
    let server = provisioned().await;
    let admin = server.jetstream().await.unwrap();
    // A ride request: both the driver and the payment service's consumers hold it.
    admin
        .publish("evt.ride.requested.r_1", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let payment = Client::connect(&server, Identity::Worker(Service::Payment)).await;

    let saga = payment.js.get_stream(SAGA_STREAM).await.unwrap();
    let own: consumer::PullConsumer = saga.get_consumer("payment-worker").await.unwrap();
    let mut batch = own
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let message = batch.next().await.expect("a message").unwrap();
    assert_eq!(message.subject.as_str(), "evt.ride.requested.r_1");
    message.double_ack().await.expect("its own ack is accepted");

    // Another service's consumer: neither its state nor its messages.
    assert!(
        saga.get_consumer::<consumer::pull::Config>("driver-worker")
            .await
            .is_err()
    );
    payment
        .refused("$JS.API.CONSUMER.INFO.RIDESAGA.driver-worker")
        .await;
    let pull = "$JS.API.CONSUMER.MSG.NEXT.RIDESAGA.driver-worker";
    let inbox = payment.client.new_inbox();
    let mut replies = payment.client.subscribe(inbox.clone()).await.unwrap();
    payment
        .client
        .publish_with_reply(pull, inbox, r#"{"batch":1,"expires":500000000}"#.into())
        .await
        .unwrap();
    payment.refused(pull).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(1), replies.next())
            .await
            .is_err(),
        "a message of driver-worker was delivered to the payment worker"
    );
    let driver = admin
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .consumer_info("driver-worker")
        .await
        .unwrap()
        .clone();
    assert_eq!(
        (driver.num_pending, driver.delivered.stream_sequence),
        (1, 0)
    );
    let own = admin
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .consumer_info("payment-worker")
        .await
        .unwrap()
        .clone();
    assert_eq!((own.num_pending, own.num_ack_pending), (0, 0), "acked");
}

#[tokio::test]
async fn a_worker_cannot_create_delete_or_purge_streams_or_consumers() {
    let server = provisioned().await;
    let admin = server.jetstream().await.unwrap();
    let payment = Client::connect(&server, Identity::Worker(Service::Payment)).await;

    assert!(payment.js.delete_stream(SAGA_STREAM).await.is_err());
    payment.refused("$JS.API.STREAM.DELETE.RIDESAGA").await;
    let saga = payment.js.get_stream(SAGA_STREAM).await.unwrap();
    assert!(saga.purge().await.is_err());
    payment.refused("$JS.API.STREAM.PURGE.RIDESAGA").await;
    assert!(saga.delete_consumer("payment-worker").await.is_err());
    payment
        .refused("$JS.API.CONSUMER.DELETE.RIDESAGA.payment-worker")
        .await;
    let mut changed = Service::Payment.consumer_config();
    changed.max_deliver = 100;
    assert!(saga.create_consumer(changed).await.is_err());
    payment
        .refused("$JS.API.CONSUMER.CREATE.RIDESAGA.payment-worker")
        .await;
    assert!(
        payment
            .js
            .create_stream(stream::Config {
                name: "MINE".into(),
                subjects: vec!["evt.payment.mine.>".into()],
                ..Default::default()
            })
            .await
            .is_err()
    );
    payment.refused("$JS.API.STREAM.CREATE.MINE").await;

    // Everything is as provisioned.
    let mut saga = admin.get_stream(SAGA_STREAM).await.unwrap();
    assert_eq!(saga.info().await.unwrap().state.consumer_count, 5);
    let consumer = saga.consumer_info("payment-worker").await.unwrap();
    assert_eq!(
        consumer.config.max_deliver,
        Service::Payment.consumer_config().max_deliver
    );
    assert!(admin.get_stream("MINE").await.is_err());
}

#[tokio::test]
async fn the_viewer_reads_everything_and_publishes_nothing() {
    let server = provisioned().await;
    let admin = server.jetstream().await.unwrap();
    admin
        .publish("evt.ride.requested.r_1", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let viewer = Client::connect(&server, Identity::Viewer).await;

    // Reading: the stream's state, and its messages through a consumer of its own.
    let mut saga = viewer.js.get_stream(SAGA_STREAM).await.unwrap();
    assert_eq!(saga.info().await.unwrap().state.messages, 1);
    let reader = saga
        .create_consumer(consumer::pull::OrderedConfig::default())
        .await
        .expect("an ordered consumer of its own");
    let mut messages = reader.messages().await.unwrap();
    let first = messages.next().await.unwrap().unwrap();
    assert_eq!(first.subject.as_str(), "evt.ride.requested.r_1");
    saga.consumer_info("ride-worker")
        .await
        .expect("the services' consumers are visible");

    for subject in [
        "cmd.ride.request.r_2",
        "evt.payment.captured.r_1",
        "dlq.ride.1",
    ] {
        viewer.publish_refused(subject).await;
    }
    viewer
        .client
        .publish("ridesaga.anything", "x".into())
        .await
        .unwrap();
    viewer.refused("ridesaga.anything").await;

    // The services' consumers stay untouched: not pulled from, not changed.
    let pull = "$JS.API.CONSUMER.MSG.NEXT.RIDESAGA.ride-worker";
    viewer
        .client
        .publish_with_reply(pull, viewer.client.new_inbox(), r#"{"batch":1}"#.into())
        .await
        .unwrap();
    viewer.refused(pull).await;
    let mut changed = Service::Ride.consumer_config();
    changed.max_deliver = 100;
    assert!(saga.create_consumer(changed).await.is_err());
    viewer
        .refused("$JS.API.CONSUMER.CREATE.RIDESAGA.ride-worker")
        .await;
    assert!(saga.delete_consumer("ride-worker").await.is_err());
    viewer
        .refused("$JS.API.CONSUMER.DELETE.RIDESAGA.ride-worker")
        .await;
    assert!(viewer.js.delete_stream(SAGA_STREAM).await.is_err());
    viewer.refused("$JS.API.STREAM.DELETE.RIDESAGA").await;
    assert!(saga.purge().await.is_err());
    viewer.refused("$JS.API.STREAM.PURGE.RIDESAGA").await;

    assert_eq!(messages_in(&admin, SAGA_STREAM).await, 1);
    let ride = admin
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .consumer_info("ride-worker")
        .await
        .unwrap()
        .clone();
    assert_eq!(ride.delivered.stream_sequence, 0);
    assert_eq!(
        ride.config.max_deliver,
        Service::Ride.consumer_config().max_deliver
    );
}

#[tokio::test]
async fn a_worker_receives_its_own_replies_and_requests_only() {
    let server = provisioned().await;
    let payment = Client::connect(&server, Identity::Worker(Service::Payment)).await;
    // Another service's endpoints: it cannot answer for the ride service.
    for subject in [
        "ridesaga.effects.ride",
        "$SRV.PING.ridesaga-ride",
        "evt.ride.>",
    ] {
        let _ = payment.client.subscribe(subject).await.unwrap();
        payment.client.flush().await.unwrap();
        payment.refused(subject).await;
    }
    let mut others = payment
        .client
        .subscribe("_INBOX.>")
        .await
        .expect("the client queues the subscription");
    payment.client.flush().await.unwrap();
    payment.refused("_INBOX.>").await;
    let admin = server.client().await.unwrap();
    admin.publish("_INBOX.x", "y".into()).await.unwrap();
    admin.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), others.next())
            .await
            .map_or(true, |m| m.is_none()),
        "another identity's reply reached the payment worker"
    );
}

/// The server's greeting on a raw connection: its `INFO` line as JSON.
async fn greeting(port: u16) -> (BufReader<TcpStream>, serde_json::Value) {
    let socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    let info = line.strip_prefix("INFO ").expect("an INFO greeting");
    (reader, serde_json::from_str(info).unwrap())
}

/// Sends `connect` (a CONNECT line's JSON) and a PING; returns the server's next line.
async fn answer_to(reader: &mut BufReader<TcpStream>, connect: serde_json::Value) -> String {
    let text = format!("CONNECT {connect}\r\nPING\r\n");
    reader.get_mut().write_all(text.as_bytes()).await.unwrap();
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    line
}

#[tokio::test]
async fn a_wrong_key_an_unknown_user_and_no_credentials_are_refused() {
    let server = provisioned().await;
    let refused = |result: Result<async_nats::Client, async_nats::ConnectError>, what: &str| {
        let error = result.err().unwrap_or_else(|| panic!("{what} was let in"));
        assert_eq!(
            error.kind(),
            async_nats::ConnectErrorKind::AuthorizationViolation,
            "{what}: {error}"
        );
    };
    let options = || {
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(Some(1))
    };
    let unknown = nkeys::KeyPair::new_user().seed().unwrap();
    refused(
        options().nkey(unknown).connect(server.url()).await,
        "an unknown key",
    );
    refused(options().connect(server.url()).await, "an anonymous client");
    refused(
        options()
            .user_and_password("payment-worker".into(), "guess".into())
            .connect(server.url())
            .await,
        "a user and password",
    );

    // The payment worker's public key, signed with another key: the server checks the
    // signature of its nonce against the public key it knows.
    let credentials = server.credentials().expect("identities");
    let payment_seed = ridesaga_schemas::auth::read_seed(
        &credentials.seed_file(Identity::Worker(Service::Payment)),
    )
    .unwrap();
    let payment_key = payment_seed.public_key().unwrap();
    let (mut reader, info) = greeting(server.port()).await;
    let nonce = info["nonce"].as_str().expect("a nonce to sign");
    let impostor = nkeys::KeyPair::new_user();
    let signature = impostor.sign(nonce.as_bytes()).unwrap();
    let encoded = base64url(&signature);
    let answer = answer_to(
        &mut reader,
        serde_json::json!({
            "verbose": false, "pedantic": false, "protocol": 1,
            "nkey": payment_key, "sig": encoded,
        }),
    )
    .await;
    assert!(
        answer.starts_with("-ERR 'Authorization Violation'"),
        "{answer:?}"
    );

    // Its own key signs, and is let in.
    let (mut reader, info) = greeting(server.port()).await;
    let nonce = info["nonce"].as_str().unwrap();
    let own = nkeys::KeyPair::from_seed(payment_seed.expose()).unwrap();
    let answer = answer_to(
        &mut reader,
        serde_json::json!({
            "verbose": false, "pedantic": false, "protocol": 1,
            "nkey": payment_key, "sig": base64url(&own.sign(nonce.as_bytes()).unwrap()),
        }),
    )
    .await;
    assert_eq!(answer.trim_end(), "PONG");
}

/// URL-safe base64 without padding, as the NATS protocol takes a signature.
fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn with_tls_on_a_client_without_tls_or_without_the_ca_is_refused() {
    let server = NatsServer::builder().tls().start().await.unwrap();
    let ca = server.ca_file().expect("a CA").to_owned();

    // Plain text: the server requires TLS and never reads the credentials.
    let (mut reader, info) = greeting(server.port()).await;
    assert_eq!(info["tls_required"], true, "{info}");
    let answer = answer_to(
        &mut reader,
        serde_json::json!({"verbose": false, "pedantic": false, "protocol": 1}),
    )
    .await;
    assert!(
        !answer.starts_with("PONG") && !answer.starts_with("+OK"),
        "a plain-text client got {answer:?}"
    );

    // TLS against the system's roots: the server's certificate is not trusted.
    let credentials = server.credentials().unwrap();
    let seed = ridesaga_schemas::auth::read_seed(&credentials.seed_file(Identity::Admin)).unwrap();
    let untrusting = async_nats::ConnectOptions::new()
        .nkey(seed.expose().to_owned())
        .require_tls(true)
        .connection_timeout(Duration::from_secs(5))
        .connect(server.url())
        .await;
    assert!(
        untrusting.is_err(),
        "a client that does not trust the CA got in"
    );

    // With the CA, the admin gets in and JetStream answers.
    let js = server
        .jetstream()
        .await
        .expect("connects over TLS with the CA");
    provision(&js, ProvisionOptions::default()).await.unwrap();
    assert_eq!(messages_in(&js, SAGA_STREAM).await, 0);
    assert!(ca.exists());
}

#[tokio::test]
async fn without_auth_a_server_takes_anonymous_clients_in_the_global_account() {
    let server = NatsServer::builder().without_auth().start().await.unwrap();
    assert_eq!(server.account(), "$G");
    assert!(server.credentials().is_none());
    let js = server.jetstream().await.unwrap();
    js.publish("anything", "x".into()).await.unwrap();
    assert!(js.get_stream(SAGA_STREAM).await.is_err());
}

#[tokio::test]
async fn the_system_user_monitors_the_server_and_the_admin_does_not() {
    let server = NatsServer::start().await.unwrap();
    let sys = server.client_as(Identity::System).await.unwrap();
    let pong = tokio::time::timeout(
        Duration::from_secs(5),
        sys.request("$SYS.REQ.SERVER.PING", "".into()),
    )
    .await
    .expect("an answer in time")
    .expect("the server answers its system account");
    let pong: serde_json::Value = serde_json::from_slice(&pong.payload).unwrap();
    assert!(pong["server"]["name"].is_string(), "{pong}");

    let admin = server.client().await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(2),
        admin.request("$SYS.REQ.SERVER.PING", "".into()),
    )
    .await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "the admin got the server's system answer"
    );
}
