//! The broker's ceiling: a raw JetStream relay on the same server, pipelined like the workers.
//!
//! A durable pull consumer, configured like the service consumers, reads ride-request-sized
//! messages from `bench.relay.in.*` in batches of `batch`; at most `max_in_flight` are handled
//! at once, each one by publishing its payload to `bench.relay.out.<seq>` with a `Nats-Msg-Id`,
//! awaiting the publish ack, and acking the input: a worker with no database and no logic. The
//! relay stream is configured like the saga stream (file storage, duplicate window), so its
//! messages per second are what the broker allows a worker shaped like ours.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use bytes::Bytes;
use futures_util::StreamExt;
use ridesaga_schemas::{Envelope, GeoPoint, RequestRide, RideId, RiderId, Service, streams};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::results::RelayRun;

/// The relay's stream, consumer and subjects, apart from the saga's.
pub const RELAY_STREAM: &str = "BENCH_RELAY";
const RELAY_CONSUMER: &str = "bench-relay";
const IN_PREFIX: &str = "bench.relay.in";
const OUT_PREFIX: &str = "bench.relay.out";

/// How long one relay run of `messages` may take before it is reported as stuck: a minute,
/// plus a millisecond per message.
fn timeout_for(messages: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(messages)
}

/// How long the relay waits for the next message before it starts pulling again.
pub const STALL: Duration = Duration::from_secs(10);

/// Size of every relay message, about that of the saga's messages.
pub const PAYLOAD_BYTES: usize = 300;

/// The payload every relay message carries: an encoded ride request (the saga's first
/// message), cut or padded to [`PAYLOAD_BYTES`]. The relay never decodes it.
pub fn sample_payload() -> Bytes {
    let ride = RideId::generate();
    let point = |lat, lng| GeoPoint::new(lat, lng).unwrap_or(GeoPoint { lat: 0.0, lng: 0.0 });
    let request = RequestRide {
        rider_id: RiderId::generate(),
        pickup: point(52.520_008, 13.404_954),
        dropoff: point(52.507_222, 13.390_278),
        payment_token: "tok_visa".into(),
    };
    let mut bytes = Envelope::new(request, Some(ride), "ridesaga-bench").encode();
    bytes.resize(PAYLOAD_BYTES, b' ');
    Bytes::from(bytes)
}

/// Relays `messages` messages once and measures the rate, from the first pull to the last
/// input acked. Creates the relay stream and a fresh consumer first and empties the stream
/// afterwards, so runs can repeat on one server. `meter` is called right before and right
/// after the timed part, and its two readings are returned with the run.
pub async fn run<T>(
    js: &jetstream::Context,
    messages: u64,
    batch: usize,
    max_in_flight: usize,
    mut meter: impl FnMut() -> T,
) -> anyhow::Result<(RelayRun, T, T)> {
    let stream = prepare(js).await?;
    let payload = sample_payload();
    preload(js, messages, &payload).await?;
    let consumer: jetstream::consumer::Consumer<pull::Config> = stream
        .get_consumer(RELAY_CONSUMER)
        .await
        .map_err(|e| anyhow::anyhow!("binding the relay consumer: {e}"))?;

    let run = nuid::next().to_string();
    let limit = Arc::new(Semaphore::new(max_in_flight));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tracker = TaskTracker::new();
    let before = meter();
    let started = Instant::now();
    let mut stalls = 0;
    let relay = async {
        let pull = || {
            consumer
                .stream()
                .max_messages_per_batch(batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
        };
        let mut inputs = pull().await.context("pulling from the relay consumer")?;
        let mut received = 0;
        while received < messages {
            let permit = limit.clone().acquire_owned().await?;
            let message = match tokio::time::timeout(STALL, inputs.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => {
                    eprintln!("bench: relay pull error (continuing): {e}");
                    continue;
                }
                Ok(None) => bail!("the relay's message stream ended"),
                Err(_) => {
                    // A watchdog: a pull that went quiet with messages left is started again
                    // rather than waited on, and the report says so.
                    stalls += 1;
                    eprintln!(
                        "bench: relay: no message for {STALL:?} after {received} of {messages}; \
                         pulling again"
                    );
                    inputs = pull().await.context("pulling from the relay consumer")?;
                    continue;
                }
            };
            received += 1;
            let (js, run, done, failed) = (js.clone(), run.clone(), done.clone(), failed.clone());
            tracker.spawn(async move {
                let _permit = permit;
                let seq = message
                    .info()
                    .map(|i| i.stream_sequence)
                    .unwrap_or(received);
                let publish = PublishMessage::build()
                    .payload(message.payload.clone())
                    .message_id(format!("{run}-{seq}"));
                let stored = match js
                    .send_publish(format!("{OUT_PREFIX}.{seq}"), publish)
                    .await
                {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                if stored && message.ack().await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        tracker.close();
        tracker.wait().await;
        anyhow::Ok(())
    };
    let timeout = timeout_for(messages);
    tokio::time::timeout(timeout, relay).await.with_context(|| {
        format!(
            "the relay did not finish {messages} messages in {timeout:?} ({} relayed, {} failed)",
            done.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        )
    })??;
    let elapsed = started.elapsed();
    let after = meter();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {messages} relayed messages failed to publish or ack");
    }
    stream.purge().await.context("emptying the relay stream")?;
    let relayed = done.load(Ordering::Relaxed);
    let run = RelayRun {
        messages: relayed,
        payload_bytes: payload.len(),
        seconds: elapsed.as_secs_f64(),
        per_second: crate::stats::per_second(relayed, elapsed),
        stalls,
        usage: Default::default(),
    };
    Ok((run, before, after))
}

/// The relay stream, like the saga stream but with its own subjects, emptied, and a fresh
/// relay consumer configured like a service consumer.
async fn prepare(js: &jetstream::Context) -> anyhow::Result<jetstream::stream::Stream> {
    let mut config = streams::saga_stream_config();
    config.name = RELAY_STREAM.into();
    config.description = Some("ridesaga-bench: the relay ceiling".into());
    config.subjects = vec![format!("{IN_PREFIX}.*"), format!("{OUT_PREFIX}.*")];
    let stream = js
        .get_or_create_stream(config)
        .await
        .context("creating the relay stream")?;
    stream.purge().await.context("emptying the relay stream")?;
    let _ = stream.delete_consumer(RELAY_CONSUMER).await;
    let mut consumer = Service::Ride.consumer_config();
    consumer.durable_name = Some(RELAY_CONSUMER.into());
    consumer.description = Some("ridesaga-bench relay".into());
    consumer.filter_subjects = vec![format!("{IN_PREFIX}.*")];
    stream
        .create_consumer(consumer)
        .await
        .context("creating the relay consumer")?;
    Ok(stream)
}

/// Publishes the relay's input, pipelined; not part of the measurement.
async fn preload(js: &jetstream::Context, messages: u64, payload: &Bytes) -> anyhow::Result<()> {
    let mut next = 0;
    while next < messages {
        let end = (next + 1024).min(messages);
        let mut acks = Vec::with_capacity((end - next) as usize);
        for i in next..end {
            let ack = js
                .publish(format!("{IN_PREFIX}.{i}"), payload.clone())
                .await
                .context("publishing the relay's input")?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.context("storing the relay's input")?;
        }
        next = end;
    }
    Ok(())
}
