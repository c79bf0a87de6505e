//! Streams and consumers, defined once: names, subjects, filter subjects, delivery limits,
//! backoff, ack wait and the duplicate window. `provision` creates or updates them; workers only
//! bind to their consumer by name.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

/// The stream that holds every command and event of every saga, in one total order.
pub const SAGA_STREAM: &str = "RIDESAGA";
/// The stream of dead-letter records: the server's MAX_DELIVERIES and MSG_TERMINATED advisories
/// for the saga stream, and the records workers publish (with the reason) before terminating a
/// message.
pub const DEAD_LETTER_STREAM: &str = "RIDESAGA_DLQ";
/// Subject prefix of the dead-letter records workers publish: `dlq.<service>.<stream seq>`.
pub const DEAD_LETTER_PREFIX: &str = "dlq";

/// The stream of driver positions (`pos.driver.<driver_id>`): high-rate, short-lived, kept
/// apart from the saga stream so that phones reporting every few seconds never slow a saga.
pub const POSITION_STREAM: &str = "RIDESAGA_POSITIONS";
/// How long positions are kept: the longest ride a route may be read back for.
pub const POSITION_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The ride service's durable consumer on the positions stream: it records the route of each
/// ride in progress.
pub const RIDE_POSITIONS_CONSUMER: &str = "ride-positions";

/// How long the saga stream remembers `Nats-Msg-Id`s to drop duplicate publishes. A short-term
/// guard only: lasting idempotency is each service's inbox table.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Deliveries of one message before the server gives up and emits a MAX_DELIVERIES advisory.
pub const MAX_DELIVER: i64 = 6;
/// Redelivery delays after an ack timeout, one per delivery (the last repeats). Handlers that
/// fail transiently nak with their own delay; see the workers' runtime.
pub const BACKOFF: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];
/// Messages a service may hold unacknowledged across all its replicas.
pub const MAX_ACK_PENDING: i64 = 1024;
/// How long provisioning waits for a stream whose replica count changed to have its peers
/// placed, before it updates the stream's consumers (which may not have more replicas than it).
pub const REPLICAS_TIMEOUT: Duration = Duration::from_secs(30);

/// The five saga services. Each has exactly one durable pull consumer on the saga stream, shared
/// by all its replicas; that consumer's pending + ack pending is the service's lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Ride,
    Driver,
    Fraud,
    Payment,
    Notification,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Ride,
        Service::Driver,
        Service::Fraud,
        Service::Payment,
        Service::Notification,
    ];

    /// Lower-case name, used in consumer names, logs, `producer` fields and binaries.
    pub fn name(self) -> &'static str {
        match self {
            Service::Ride => "ride",
            Service::Driver => "driver",
            Service::Fraud => "fraud",
            Service::Payment => "payment",
            Service::Notification => "notification",
        }
    }

    pub fn from_name(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The durable consumer's name.
    pub fn consumer_name(self) -> String {
        format!("{}-worker", self.name())
    }

    /// Exactly the subjects this service reacts to.
    pub fn filter_subjects(self) -> &'static [&'static str] {
        match self {
            Service::Ride => &[
                "cmd.ride.*.*",
                "evt.fraud.flagged.*",
                "evt.driver.assigned.*",
                "evt.driver.unavailable.*",
                "evt.payment.authorized.*",
                "evt.payment.declined.*",
            ],
            Service::Driver => &[
                "cmd.driver.*.*",
                "evt.ride.requested.*",
                "evt.fraud.cleared.*",
                "evt.ride.cancelled.*",
                "evt.ride.rejected.*",
                "evt.ride.completed.*",
                "evt.payment.declined.*",
            ],
            Service::Fraud => &[
                "cmd.fraud.*.*",
                "evt.ride.requested.*",
                "evt.ride.completed.*",
                "evt.payment.declined.*",
            ],
            Service::Payment => &[
                "cmd.payment.*.*",
                "evt.ride.requested.*",
                "evt.driver.assigned.*",
                "evt.ride.completed.*",
                "evt.ride.cancelled.*",
                "evt.ride.rejected.*",
                "evt.fraud.ride_flagged.*",
                "evt.fraud.reviewed.*",
            ],
            Service::Notification => &[
                "cmd.rider.register.*",
                "cmd.driver.register.*",
                "evt.driver.assigned.*",
                "evt.ride.confirmed.*",
                "evt.ride.cancelled.*",
                "evt.ride.rejected.*",
                "evt.payment.captured.*",
                "evt.payment.capture_failed.*",
                "evt.payment.refunded.*",
            ],
        }
    }

    /// The consumer's full definition.
    pub fn consumer_config(self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.consumer_name()),
            description: Some(format!(
                "{} worker: every replica pulls from here",
                self.name()
            )),
            filter_subjects: self
                .filter_subjects()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: BACKOFF[0],
            max_deliver: MAX_DELIVER,
            backoff: BACKOFF.to_vec(),
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The saga stream: file storage, limits retention so history stays inspectable.
pub fn saga_stream_config() -> stream::Config {
    stream::Config {
        name: SAGA_STREAM.to_string(),
        description: Some("Ridesaga commands and events, one total order for every saga".into()),
        subjects: vec!["cmd.>".into(), "evt.>".into()],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        duplicate_window: DUPLICATE_WINDOW,
        max_age: Duration::from_secs(30 * 24 * 3600),
        // Reserved up front by the server: keep it modest; operators raise it per deployment.
        max_bytes: 1024 * 1024 * 1024,
        max_message_size: crate::MAX_MESSAGE_BYTES as i32,
        num_replicas: 1,
        ..Default::default()
    }
}

/// The dead-letter stream.
pub fn dead_letter_stream_config() -> stream::Config {
    stream::Config {
        name: DEAD_LETTER_STREAM.to_string(),
        description: Some("Ridesaga dead letters: advisories and records with reasons".into()),
        subjects: vec![
            format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{SAGA_STREAM}.*"),
            format!("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{SAGA_STREAM}.*"),
            format!("{DEAD_LETTER_PREFIX}.>"),
        ],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age: Duration::from_secs(30 * 24 * 3600),
        num_replicas: 1,
        ..Default::default()
    }
}

/// The positions stream: file storage, kept a day, old positions dropped first when full. A
/// driver's last position is the last message on its subject.
pub fn position_stream_config() -> stream::Config {
    stream::Config {
        name: POSITION_STREAM.to_string(),
        description: Some("Ridesaga driver positions, pos.driver.<driver_id>".into()),
        subjects: vec![format!("{}.*", crate::position::POSITION_PREFIX)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: POSITION_MAX_AGE,
        max_bytes: 1024 * 1024 * 1024,
        max_message_size: crate::position::MAX_POSITION_BYTES as i32,
        // Direct gets answer `ridectl ride track` with a driver's last position from any replica.
        allow_direct: true,
        num_replicas: 1,
        ..Default::default()
    }
}

/// The ride service's consumer of positions: explicit ack, new positions only (a route starts
/// with the ride), redelivered after the ack wait.
pub fn ride_positions_consumer_config() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(RIDE_POSITIONS_CONSUMER.to_string()),
        description: Some("ride worker: records the route of rides in progress".into()),
        filter_subject: format!("{}.*", crate::position::POSITION_PREFIX),
        ack_policy: consumer::AckPolicy::Explicit,
        deliver_policy: consumer::DeliverPolicy::New,
        ack_wait: BACKOFF[0],
        max_deliver: MAX_DELIVER,
        max_ack_pending: MAX_ACK_PENDING * 4,
        ..Default::default()
    }
}

/// What provisioning did.
#[derive(Debug, Clone, Default)]
pub struct ProvisionReport {
    pub streams: Vec<String>,
    pub consumers: Vec<String>,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("could not create or update stream {name}: {source}")]
    Stream {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(
        "stream {name} did not take on {replicas} replicas within {timeout:?} (last seen: {last_seen})"
    )]
    Replicas {
        name: String,
        replicas: usize,
        timeout: Duration,
        last_seen: String,
    },
    #[error("could not create or update consumer {name}: {source}")]
    Consumer {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// `num_replicas` to use: 1 on a single server, 3 on a cluster. Provisioning takes it as a
/// parameter so a clustered deployment needs no code change; run again with another count, it
/// scales the existing streams and consumers (their history stays).
#[derive(Debug, Clone, Copy)]
pub struct ProvisionOptions {
    pub replicas: usize,
}

impl Default for ProvisionOptions {
    fn default() -> Self {
        Self { replicas: 1 }
    }
}

/// Creates or updates the three streams, the five saga consumers and the positions consumer with `options.replicas` replicas each.
/// Idempotent. A stream whose replica count changes is updated in place and waited for (see
/// [`REPLICAS_TIMEOUT`]) before its consumers are.
pub async fn provision(
    js: &jetstream::Context,
    options: ProvisionOptions,
) -> Result<ProvisionReport, ProvisionError> {
    let mut report = ProvisionReport::default();
    for mut config in [
        saga_stream_config(),
        dead_letter_stream_config(),
        position_stream_config(),
    ] {
        config.num_replicas = options.replicas;
        let name = config.name.clone();
        let result = match js.get_stream(&name).await {
            Ok(_) => js
                .update_stream(config)
                .await
                .map(|_| ())
                .map_err(Into::into),
            Err(_) => js
                .create_stream(config)
                .await
                .map(|_| ())
                .map_err(Into::into),
        };
        result.map_err(|source| ProvisionError::Stream {
            name: name.clone(),
            source,
        })?;
        wait_for_replicas(js, &name, options.replicas).await?;
        report.streams.push(name);
    }
    let stream = js
        .get_stream(SAGA_STREAM)
        .await
        .map_err(|e| ProvisionError::Stream {
            name: SAGA_STREAM.into(),
            source: e.into(),
        })?;
    for service in Service::ALL {
        let mut config = service.consumer_config();
        config.num_replicas = options.replicas;
        let name = service.consumer_name();
        // create_consumer creates, or updates in place when the durable already exists with
        // an updatable difference.
        stream
            .create_consumer(config)
            .await
            .map_err(|e| ProvisionError::Consumer {
                name: name.clone(),
                source: e.into(),
            })?;
        report.consumers.push(name);
    }
    let positions = js
        .get_stream(POSITION_STREAM)
        .await
        .map_err(|e| ProvisionError::Stream {
            name: POSITION_STREAM.into(),
            source: e.into(),
        })?;
    let mut config = ride_positions_consumer_config();
    config.num_replicas = options.replicas;
    positions
        .create_consumer(config)
        .await
        .map_err(|e| ProvisionError::Consumer {
            name: RIDE_POSITIONS_CONSUMER.into(),
            source: e.into(),
        })?;
    report.consumers.push(RIDE_POSITIONS_CONSUMER.to_string());
    Ok(report)
}

/// Waits until the stream reports `replicas` in its configuration and as many placed peers
/// (the leader and its followers): the server applies a changed count after it answers the
/// update, and refuses a consumer with more replicas than its stream has until then.
async fn wait_for_replicas(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
) -> Result<(), ProvisionError> {
    let deadline = tokio::time::Instant::now() + REPLICAS_TIMEOUT;
    loop {
        let last_seen = match js.get_stream(name).await {
            Ok(stream) => {
                let info = stream.cached_info();
                let peers = info.cluster.as_ref().map_or(0, |c| c.replicas.len()) + 1;
                if info.config.num_replicas == replicas && peers == replicas {
                    return Ok(());
                }
                format!("{} configured, {peers} placed", info.config.num_replicas)
            }
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(ProvisionError::Replicas {
                name: name.to_string(),
                replicas,
                timeout: REPLICAS_TIMEOUT,
                last_seen,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
