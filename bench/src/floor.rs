//! The runtime's own ceiling: the workers' runtime around a service that does nothing, on the
//! same server as the relay.
//!
//! Like the relay ([`crate::relay`]), but each message goes through the runtime every worker
//! runs (`ridesaga_workers::runtime::run_on`), with the workers' settings: decoded, recorded in
//! the inbox and its one output stored in the outbox in one transaction of the workers' kind of
//! database (batched as the workers batch), the output published with its `Nats-Msg-Id` after the commit, the input
//! acked last. The service in between, [`Floor`], reads and writes nothing: its rate, F, is
//! what exactly-once effects cost before any domain logic, so no service on this runtime can
//! run more than F / D sagas per second, and S / (F / D) says how much of that the services'
//! own work leaves.
//!
//! Its inputs are driver releases and its outputs payment voids, on the saga stream (the
//! runtime reads envelopes, and every envelope's subject belongs to that stream), through a
//! consumer of its own that exists only for the run. No service consumes payment voids, and
//! the floor runs before any worker starts; its messages are purged afterwards.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use ridesaga_schemas::{
    DriverId, DriverReleased, Envelope, Message, PaymentVoided, RideId, RideState, RiderId,
    Service, Timestamp, streams,
};
use ridesaga_workers::config::{RuntimeConfig, Settings};
use ridesaga_workers::runtime::{self, HandleError, Worker};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;

use crate::results::FloorRun;

const FLOOR_CONSUMER: &str = "bench-floor";
const INPUTS: &str = "evt.driver.released.*";
const OUTPUTS: &str = "evt.payment.voided.*";
const PRODUCER: &str = "ridesaga-bench";

/// The service of the floor: one output per input, no table read or written.
#[derive(Debug)]
pub struct Floor {
    rider: RiderId,
}

static NO_TABLES: Migrator = Migrator::DEFAULT;

impl Worker for Floor {
    /// Names only (metrics labels, the NATS service it registers, its dead-letter subject):
    /// its consumer, stream subjects and database are its own.
    fn service(&self) -> Service {
        Service::Notification
    }

    fn migrator(&self, _kind: runtime::Kind) -> &'static Migrator {
        &NO_TABLES
    }

    async fn handle<'a>(
        &'a self,
        _conn: &'a mut runtime::Conn<'_>,
        input: &'a Envelope,
        _now: Timestamp,
    ) -> Result<Vec<Envelope>, HandleError> {
        let Message::DriverReleased(_) = &input.message else {
            return Err(HandleError::Permanent(format!(
                "the floor relays driver releases, not {}",
                input.kind()
            )));
        };
        let void = PaymentVoided {
            rider_id: self.rider.clone(),
            hold_id: "floor".into(),
            amount_cents: 0,
        };
        Ok(vec![Envelope::caused_by(input, void, "floor", PRODUCER)])
    }
}

/// Relays `messages` messages through the runtime with `batch` and `max_in_flight`, connected
/// with the NATS settings `nats` (`NATS_URL`, and a seed allowed the floor's consumer and
/// subjects), and measures the rate, from the runtime's first delivery to its last ack (the server's times
/// of both), on the database `database_url` names. `meter` is called right before and right
/// after the timed part.
pub async fn run<T>(
    js: &jetstream::Context,
    nats: &[(String, String)],
    database_url: &str,
    messages: u64,
    (batch, max_in_flight): (usize, usize),
    mut meter: impl FnMut() -> T,
) -> anyhow::Result<(FloorRun, T, T)> {
    let stream = js
        .get_stream(streams::SAGA_STREAM)
        .await
        .context("opening the saga stream")?;
    let _ = stream.delete_consumer(FLOOR_CONSUMER).await;
    let mut config = Service::Notification.consumer_config();
    config.durable_name = Some(FLOOR_CONSUMER.into());
    config.description = Some("ridesaga-bench: the runtime's floor".into());
    config.filter_subjects = vec![INPUTS.into()];
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .create_consumer(config)
        .await
        .context("creating the floor's consumer")?;
    preload(js, messages).await?;

    let settings = Settings::from_pairs(
        nats.iter().cloned().chain(
            [
                ("DATABASE_URL", database_url.to_owned()),
                ("RIDESAGA_HTTP_ADDR", "off".into()),
                ("RIDESAGA_BATCH", batch.to_string()),
                ("RIDESAGA_MAX_IN_FLIGHT", max_in_flight.to_string()),
                ("RIDESAGA_INSTANCE", "bench-floor".into()),
            ]
            .map(|(name, value)| (name.to_owned(), value)),
        ),
    );
    let runtime_config = RuntimeConfig::load("floor", &settings)?;
    let stop = CancellationToken::new();
    let worker = spawn_worker(runtime_config, stop.clone())?;

    let measured = async {
        let mut consumer = consumer.clone();
        let deadline = Duration::from_secs(60) + Duration::from_millis(messages);
        let started = Instant::now();
        let mut first = None;
        loop {
            let info = consumer.info().await?;
            let delivered = info.delivered.consumer_sequence;
            if first.is_none() && delivered > 0 {
                // The first look that finds the runtime pulling: timing starts at the last
                // delivery the server had made by then (on the server's clock), at most one
                // look after the first.
                first = Some((info.delivered.last_active, meter()));
            }
            if delivered >= messages && info.num_pending == 0 && info.num_ack_pending == 0 {
                let Some((Some(from), before)) = first else {
                    bail!("the server did not say when the floor's first delivery was");
                };
                let Some(to) = info.ack_floor.last_active else {
                    bail!("the server did not say when the floor's last ack was");
                };
                let elapsed = Duration::try_from(to - from).unwrap_or_default();
                return anyhow::Ok((elapsed, before, meter()));
            }
            if started.elapsed() > deadline {
                bail!(
                    "the floor did not finish in {deadline:?}: {delivered} deliveries of \
                     {messages} messages, {} waiting, {} not acked",
                    info.num_pending,
                    info.num_ack_pending
                );
            }
            // Often until the runtime has started, then seldom: a look costs the server.
            let pause = if first.is_none() { 2 } else { 20 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
    .await;
    stop.cancel();
    let stopped = tokio::task::spawn_blocking(move || worker.join()).await;
    let _ = stream.delete_consumer(FLOOR_CONSUMER).await;
    let mut purged = Vec::new();
    for subject in [INPUTS, OUTPUTS] {
        let done = stream
            .purge()
            .filter(subject)
            .await
            .with_context(|| format!("purging {subject} from the saga stream"))?;
        purged.push(done.purged);
    }
    let (elapsed, before, after) = measured?;
    // Every input acked is not enough: a dead letter is acked too (terminated).
    if purged != [messages, messages] {
        bail!(
            "the floor stored {} outputs for {} inputs of {messages}",
            purged[1],
            purged[0]
        );
    }
    match stopped {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => bail!("the floor's runtime failed: {e}"),
        Ok(Err(_)) | Err(_) => bail!("the floor's runtime panicked"),
    }
    let run = FloorRun {
        messages,
        max_in_flight,
        seconds: elapsed.as_secs_f64(),
        per_second: crate::stats::per_second(messages, elapsed),
        usage: Default::default(),
    };
    Ok((run, before, after))
}

/// The runtime on a thread of its own with a current-thread async runtime and a connection of
/// its own, as in a worker process.
fn spawn_worker(
    config: RuntimeConfig,
    stop: CancellationToken,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    std::thread::Builder::new()
        .name("bench-floor".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the floor's async runtime")?;
            runtime.block_on(async move {
                let client = config
                    .nats
                    .connect("ridesaga-bench-floor")
                    .await
                    .context("connecting the floor's runtime")?;
                let consumer = jetstream::new(client.clone())
                    .get_stream(streams::SAGA_STREAM)
                    .await
                    .context("opening the saga stream")?
                    .get_consumer::<pull::Config>(FLOOR_CONSUMER)
                    .await
                    .map_err(|e| anyhow::anyhow!("binding the floor's consumer: {e}"))?;
                let worker = Floor {
                    rider: RiderId::generate(),
                };
                runtime::run_on(worker, config, client, consumer, stop).await?;
                anyhow::Ok(())
            })
        })
        .context("starting the floor's thread")
}

/// Publishes the floor's inputs, pipelined; not part of the measurement.
async fn preload(js: &jetstream::Context, messages: u64) -> anyhow::Result<()> {
    let driver = DriverId::generate();
    let mut next = 0;
    while next < messages {
        let end = (next + 1024).min(messages);
        let mut acks = Vec::with_capacity((end - next) as usize);
        for _ in next..end {
            let released = DriverReleased {
                driver_id: driver.clone(),
                reason: RideState::Completed.to_string(),
            };
            let envelope = Envelope::new(released, Some(RideId::generate()), PRODUCER);
            let publish = PublishMessage::build()
                .payload(envelope.encode().into())
                .message_id(envelope.id.as_str());
            let ack = js
                .send_publish(envelope.subject(), publish)
                .await
                .context("publishing the floor's input")?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.context("storing the floor's input")?;
        }
        next = end;
    }
    Ok(())
}
