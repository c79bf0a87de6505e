//! Running one service: open the database, bind the durable consumer, then pull with bounded
//! concurrency until shutdown, with the relay, the timers, the effect executor, the NATS
//! service API and the HTTP endpoints beside it. On shutdown: stop pulling, finish and ack
//! what is in flight, let the calls in flight finish, exit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use async_nats::service::ServiceExt;
use futures_util::StreamExt;
use ridesaga_schemas::{RideId, Timestamp, streams};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::BatchWriter;
use super::db::{self, Database};
use super::handler::Worker;
use super::handoff::Handoff;
use super::http::{self, HttpState};
use super::metrics::Metrics;
use super::perform::EffectSettings;
use super::process::WorkerContext;
use super::publish::Publisher;
use super::saga_trace;
use super::trace::Tracer;
use crate::config::RuntimeConfig;

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("database {url}: {source}")]
    Database { url: String, source: db::OpenError },
    #[error("connecting to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error(
        "consumer {consumer} on stream {stream} is not available ({error}); \
         provision it first with `ridectl provision`"
    )]
    Consumer {
        consumer: String,
        stream: String,
        error: String,
    },
    #[error("pulling messages: {0}")]
    Pull(String),
    #[error("HTTP endpoint on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("registering the NATS service: {0}")]
    Service(String),
}

/// How long to keep trying to bind the consumer before giving up (it may be provisioned by a
/// job that starts at the same time).
const BIND_PATIENCE: Duration = Duration::from_secs(30);

/// How long stopping may wait on NATS (service deregistration, flushing acks, draining).
const NATS_GOODBYE: Duration = Duration::from_secs(5);

/// Runs `worker` until `shutdown` is cancelled: opens its database, connects to NATS, binds
/// the service's durable consumer on the saga stream, then serves it (see [`run_on`]).
pub async fn run<W: Worker>(
    worker: W,
    config: RuntimeConfig,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    // The database first: a bad URL or a failed migration is reported at once, not after NATS
    // came up.
    let database = open_database(&worker, &config).await?;
    let client = config
        .nats
        .connect(&config.instance)
        .await
        .map_err(|source| RunError::Connect {
            url: config.nats.url.clone(),
            source,
        })?;
    let js = jetstream::new(client.clone());
    let name = worker.service().consumer_name();
    let Some(consumer) = bind_consumer(&js, name, &shutdown).await? else {
        tracing::info!("stopped before the consumer was bound");
        return Ok(());
    };
    serve(worker, config, database, client, consumer, shutdown).await
}

/// Runs `worker` on a consumer the caller bound, on any stream, until `shutdown` is
/// cancelled: everything [`run`] does once it has its consumer. For harnesses that measure the
/// runtime itself (the benchmark's floor); services use [`run`].
pub async fn run_on<W: Worker>(
    worker: W,
    config: RuntimeConfig,
    client: async_nats::Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let database = open_database(&worker, &config).await?;
    serve(worker, config, database, client, consumer, shutdown).await
}

/// Opens and migrates the worker's database (the backend `DATABASE_URL` names).
async fn open_database<W: Worker>(
    worker: &W,
    config: &RuntimeConfig,
) -> Result<Database, RunError> {
    Database::open(&config.database_url, config.db_pool, |kind| {
        worker.migrator(kind)
    })
    .await
    .map_err(|source| RunError::Database {
        url: redacted(&config.database_url),
        source,
    })
}

/// `url` with its password, if it has one, replaced by `***`, for logs and error messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

async fn serve<W: Worker>(
    worker: W,
    config: RuntimeConfig,
    database: Database,
    client: async_nats::Client,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let service = worker.service();
    let js = jetstream::new(client.clone());

    let metrics = Arc::new(Metrics::with_saga_outcomes(worker.saga_outcomes()));
    let publisher = Publisher::new(js.clone(), database.clone(), metrics.clone());
    let (writer, write_requests) = BatchWriter::channel(config.max_in_flight);
    // Background tasks stop on `background`, which is cancelled only after in-flight work
    // drained, so their last outputs still go out.
    let background = CancellationToken::new();
    let tasks = TaskTracker::new();
    let tracer = match &config.otlp_endpoint {
        Some(endpoint) => {
            let (tracer, exporter) = Tracer::exporting(
                endpoint.clone(),
                config.otel_service_name.clone(),
                config.instance.clone(),
                metrics.clone(),
                background.clone(),
            );
            tasks.spawn(exporter);
            tracer
        }
        None => Tracer::off(metrics.clone()),
    };
    let context = Arc::new(WorkerContext {
        tracer,
        worker,
        service,
        instance: config.instance.clone(),
        js: js.clone(),
        publisher,
        metrics: metrics.clone(),
        writer,
        database: database.clone(),
        effects: Handoff::new(config.effect_deadline, config.effect_timeout),
    });

    if let Some(addr) = config.http_addr {
        let state = HttpState {
            service: service.name(),
            instance: config.instance.clone(),
            metrics: metrics.clone(),
            nats: client.clone(),
        };
        let bound = http::serve(addr, state, background.clone())
            .await
            .map_err(|source| RunError::Http { addr, source })?;
        tracing::info!(%bound, "serving /healthz and /metrics");
    }
    let nats_service = register_service(
        &client,
        service.name(),
        &config.instance,
        metrics.clone(),
        database.clone(),
    )
    .await?;
    tasks.spawn({
        let (context, stop, max) = (context.clone(), background.clone(), config.max_in_flight);
        async move { context.writer_task().run(write_requests, max, stop).await }
    });
    tasks.spawn(relay_loop(
        context.clone(),
        config.relay_interval,
        background.clone(),
    ));
    tasks.spawn(tick_loop(context.clone(), config.tick, background.clone()));
    tasks.spawn(context.clone().effect_loop(
        EffectSettings {
            concurrency: config.effect_concurrency,
            timeout: config.effect_timeout,
            tick: config.tick,
        },
        background.clone(),
    ));
    tasks.spawn({
        let (database, stop) = (database.clone(), background.clone());
        async move { database.maintain(stop).await }
    });
    if let Some(side) = context
        .worker
        .side_loop(js.clone(), database.clone(), background.clone())
    {
        tasks.spawn(side);
    }
    tasks.spawn(lag_loop(
        consumer.clone(),
        metrics.clone(),
        background.clone(),
    ));
    tasks.spawn(sample_loop(context.clone(), background.clone()));

    tracing::info!(service = %service, instance = %config.instance, "worker started");
    let result = consume(context.clone(), consumer, &config, &shutdown).await;

    tracing::info!("draining");
    // Bounded: with the server gone these would wait for a reconnect forever.
    let _ = tokio::time::timeout(NATS_GOODBYE, nats_service.stop()).await;
    background.cancel();
    tasks.close();
    if tokio::time::timeout(config.drain_timeout, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks did not stop in time");
    }
    let goodbye = async {
        let _ = client.flush().await;
        let _ = client.drain().await;
    };
    if tokio::time::timeout(NATS_GOODBYE, goodbye).await.is_err() {
        tracing::warn!("NATS unreachable while stopping; unflushed acks will be redelivered");
    }
    database.close().await;
    tracing::info!("worker stopped");
    result
}

async fn bind_consumer(
    js: &jetstream::Context,
    name: String,
    shutdown: &CancellationToken,
) -> Result<Option<jetstream::consumer::Consumer<pull::Config>>, RunError> {
    let deadline = tokio::time::Instant::now() + BIND_PATIENCE;
    loop {
        let attempt = async {
            let stream = js
                .get_stream(streams::SAGA_STREAM)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .get_consumer::<pull::Config>(&name)
                .await
                .map_err(|e| e.to_string())
        };
        let attempt = async {
            tokio::select! {
                _ = shutdown.cancelled() => Err("shutting down".to_owned()),
                result = tokio::time::timeout(Duration::from_secs(10), attempt) => {
                    result.unwrap_or_else(|_| Err("no answer from the server".to_owned()))
                }
            }
        };
        match attempt.await {
            Ok(consumer) => return Ok(Some(consumer)),
            Err(_) if shutdown.is_cancelled() => return Ok(None),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                return Err(RunError::Consumer {
                    consumer: name,
                    stream: streams::SAGA_STREAM.into(),
                    error,
                });
            }
            Err(error) => {
                tracing::warn!(consumer = %name, %error, "consumer not available yet; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Pulls messages and handles each in its own task, at most `max_in_flight` at a time.
async fn consume<W: Worker>(
    context: Arc<WorkerContext<W>>,
    consumer: jetstream::consumer::Consumer<pull::Config>,
    config: &RuntimeConfig,
    shutdown: &CancellationToken,
) -> Result<(), RunError> {
    let limit = Arc::new(Semaphore::new(config.max_in_flight));
    let in_flight = TaskTracker::new();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| RunError::Pull(e.to_string()))?;
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                // Missed heartbeats and the like: the stream recovers by itself.
                tracing::warn!(error = %e, "pull stream error; continuing");
                continue;
            }
            None => return Err(RunError::Pull("message stream ended".into())),
        };
        let context = context.clone();
        // The handling's log lines carry the message's trace, saga and id (recorded once the
        // message is decoded).
        let span = tracing::info_span!(
            "message",
            trace_id = tracing::field::Empty,
            saga_id = tracing::field::Empty,
            message_id = tracing::field::Empty,
        );
        in_flight.spawn(tracing::Instrument::instrument(
            async move {
                let _permit = permit;
                context.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
                let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
                if delivered > 1 {
                    Metrics::inc(&context.metrics.redelivered);
                }
                let deciding = context.decide(
                    &message.subject,
                    message.headers.as_ref(),
                    &message.payload,
                    delivered,
                );
                let verdict = with_progress(&message, deciding).await;
                context.settle(&message, verdict).await;
                context.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
            },
            span,
        ));
    }
    // Stop pulling: messages buffered but not started are not acked and will be redelivered
    // to another replica after ack_wait.
    drop(messages);
    in_flight.close();
    if tokio::time::timeout(config.drain_timeout, in_flight.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight messages did not finish within the drain timeout");
    }
    Ok(())
}

/// Tells the server the message is still being worked on (a slow gateway, a busy database)
/// every half ack wait, so it is not redelivered to another replica meanwhile.
async fn with_progress<F: Future>(message: &jetstream::Message, work: F) -> F::Output {
    let every = streams::BACKOFF[0] / 2;
    let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tokio::pin!(work);
    loop {
        tokio::select! {
            output = &mut work => return output,
            _ = progress.tick() => {
                if let Err(e) = message.ack_with(jetstream::AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress ack failed");
                }
            }
        }
    }
}

/// Publishes outbox rows left behind (a crash between commit and publish, a failed publish).
async fn relay_loop<W: Worker>(
    context: Arc<WorkerContext<W>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_retention: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = context.publisher.delete_acked().await {
            tracing::warn!(error = %e, "could not clear published outbox rows");
        }
        // Rows younger than this are still being published by the task that wrote them.
        let settled = Timestamp::now().unix_millis() - 2 * every.as_millis() as i64;
        match context.database.outbox_stale(settled, 500).await {
            Ok(rows) if !rows.is_empty() => match context.publisher.publish(&rows).await {
                Ok(()) => {
                    context
                        .metrics
                        .relayed
                        .fetch_add(rows.len() as u64, Ordering::Relaxed);
                    tracing::info!(count = rows.len(), "relayed outbox rows");
                }
                Err(e) => tracing::warn!(error = %e, "relay could not publish"),
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "relay could not read the outbox"),
        }
        if last_retention.is_none_or(|at| at.elapsed() > RETENTION_EVERY) {
            last_retention = Some(tokio::time::Instant::now());
            let now = Timestamp::now().unix_millis();
            let horizon = inbox_horizon(&context.js, now).await;
            match prune_inbox(&context.database, now, horizon).await {
                Ok(0) => {}
                Ok(forgotten) => tracing::info!(forgotten, horizon, "inbox retention"),
                Err(e) => tracing::warn!(error = %e, "could not prune the inbox"),
            }
        }
    }
}

/// How often the inbox's retention runs (and, on PostgreSQL, readies the days ahead).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Entries dropped per write turn of the retention, so batches never wait long behind it.
const RETENTION_CHUNK: i64 = 10_000;
/// The least the inbox remembers, whatever the stream still holds: a replica that was down
/// republishes the outputs it had stored (under their first ids) when it comes back.
const INBOX_FLOOR: Duration = Duration::from_secs(24 * 3600);

/// Until when the inbox may forget: a message can be delivered again only while the saga
/// stream holds it (a redelivery, a consumer started over from the beginning), so entries
/// received before the stream's oldest message can go, but never ones younger than
/// [`INBOX_FLOOR`]. Without the stream's state, its configured maximum age bounds it.
async fn inbox_horizon(js: &jetstream::Context, now_ms: i64) -> i64 {
    let oldest = async {
        let mut stream = js.get_stream(streams::SAGA_STREAM).await.ok()?;
        let info = stream.info().await.ok()?;
        // An empty stream reports the epoch: then nothing is forgotten.
        Some((info.state.first_timestamp.unix_timestamp_nanos() / 1_000_000) as i64)
    }
    .await;
    horizon(oldest, now_ms)
}

/// [`inbox_horizon`] given the time of the oldest message the saga stream holds, if known.
fn horizon(oldest_ms: Option<i64>, now_ms: i64) -> i64 {
    let floor = now_ms - INBOX_FLOOR.as_millis() as i64;
    let oldest = oldest_ms
        .unwrap_or_else(|| now_ms - streams::saga_stream_config().max_age.as_millis() as i64);
    oldest.min(floor)
}

/// Forgets the inbox entries of messages received before `before_ms`, a chunk per write turn.
async fn prune_inbox(database: &Database, now_ms: i64, before_ms: i64) -> Result<u64, sqlx::Error> {
    let mut forgotten = 0;
    loop {
        let step = database
            .transaction(async |conn| {
                db::inbox_prune(conn, now_ms, before_ms, RETENTION_CHUNK).await
            })
            .await?;
        forgotten += step;
        if step < RETENTION_CHUNK as u64 {
            database
                .transaction(async |conn| saga_trace::prune(conn, before_ms).await)
                .await?;
            return Ok(forgotten);
        }
    }
}

/// Runs the service's timers.
async fn tick_loop<W: Worker>(
    context: Arc<WorkerContext<W>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match context.tick(Timestamp::now()).await {
            Ok(rows) if !rows.is_empty() => {
                if let Err(e) = context.publisher.publish(&rows).await {
                    tracing::warn!(error = %e, "timer outputs left to the relay");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "timers failed; retrying next tick"),
        }
    }
}

/// Keeps the lag gauge (pending + ack pending, what an autoscaler watches) fresh.
async fn lag_loop(
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Ok(info) = consumer.info().await {
            let lag = info.num_pending as i64 + info.num_ack_pending as i64;
            metrics.consumer_lag.store(lag, Ordering::Relaxed);
        }
    }
}

/// How often the figures read from the database (outbox, effects, deadlines) are refreshed:
/// a few reads per interval, well inside a scrape interval.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Keeps the gauges read from the database fresh: the outbox's depth and the age of its
/// oldest row, the pending effects and the age of the oldest, and the service's sagas waiting
/// on deadlines (the ride service's). Reads only, on the read pool, never in the writer's turn.
async fn sample_loop<W: Worker>(context: Arc<WorkerContext<W>>, stop: CancellationToken) {
    let mut ticker = tokio::time::interval(SAMPLE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Timestamp::now();
        match context.database.sample(now.unix_millis()).await {
            Ok(sample) => context.metrics.sampled(sample),
            Err(e) => tracing::debug!(error = %e, "could not sample the outbox and effects"),
        }
        let deadlines = context
            .database
            .read(async |conn| context.worker.saga_deadlines(conn, now).await)
            .await;
        match deadlines {
            Ok(Some(deadlines)) => context.metrics.saga_deadlines(deadlines),
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "could not sample the saga deadlines"),
        }
    }
}

/// Registers this replica with the NATS service API (`$SRV.PING|INFO|STATS`), so `ridectl
/// services` lists it, with an endpoint `status` that answers with the replica's figures and
/// an endpoint `effects` (`ridesaga.effects.<service>`) that answers a ride id with the JSON
/// list of the ride's pending effects (kind, id, attempts, last error, when next attempted,
/// deadline), so that an operator sees a call that is stuck.
async fn register_service(
    client: &async_nats::Client,
    service: &str,
    instance: &str,
    metrics: Arc<Metrics>,
    database: Database,
) -> Result<async_nats::service::Service, RunError> {
    let stats_metrics = metrics.clone();
    let nats_service = client
        .service_builder()
        .description(format!("Ridesaga {service} worker"))
        .metadata(HashMap::from([
            ("service".to_owned(), service.to_owned()),
            ("instance".to_owned(), instance.to_owned()),
        ]))
        .stats_handler(move |_endpoint, _stats| stats_metrics.to_json())
        .start(format!("ridesaga-{service}"), env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| RunError::Service(e.to_string()))?;
    let mut endpoint = nats_service
        .endpoint_builder()
        .name("status")
        .add(format!("ridesaga.status.{service}"))
        .await
        .map_err(|e| RunError::Service(e.to_string()))?;
    tokio::spawn(async move {
        while let Some(request) = endpoint.next().await {
            let body = serde_json::to_vec(&metrics.to_json()).unwrap_or_default();
            let _ = request.respond(Ok(body.into())).await;
        }
    });
    let mut effects = nats_service
        .endpoint_builder()
        .name("effects")
        .add(format!("ridesaga.effects.{service}"))
        .await
        .map_err(|e| RunError::Service(e.to_string()))?;
    tokio::spawn(async move {
        while let Some(request) = effects.next().await {
            let answer = pending_effects(&database, &request.message.payload).await;
            let _ = request.respond(answer.map(Into::into)).await;
        }
    });
    Ok(nats_service)
}

/// The `effects` endpoint's answer to `request` (a ride id): the JSON list of the ride's
/// pending effects ([`Database::effects_of_saga`]), or an error (400: not a ride id; 500: the
/// database could not be read).
async fn pending_effects(
    database: &Database,
    request: &[u8],
) -> Result<Vec<u8>, async_nats::service::error::Error> {
    let error = |code, status| async_nats::service::error::Error { status, code };
    let text = String::from_utf8_lossy(request);
    let ride = RideId::parse(text.trim().trim_matches('"'))
        .map_err(|e| error(400, format!("{text:?} is not a ride id: {e}")))?;
    let effects = database
        .effects_of_saga(&ride)
        .await
        .map_err(|e| error(500, format!("reading the effects of {ride}: {e}")))?;
    serde_json::to_vec(&effects).map_err(|e| error(500, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn the_inbox_remembers_what_the_stream_holds_and_at_least_a_day() {
        use super::horizon;
        const HOUR: i64 = 3600 * 1000;
        let now = 1_000 * 24 * HOUR;
        // The stream holds 30 days: everything it holds is remembered.
        assert_eq!(
            horizon(Some(now - 30 * 24 * HOUR), now),
            now - 30 * 24 * HOUR
        );
        // The stream holds an hour (its byte limit): a day is remembered anyway.
        assert_eq!(horizon(Some(now - HOUR), now), now - 24 * HOUR);
        // The stream's state unknown: its configured maximum age.
        assert_eq!(horizon(None, now), now - 30 * 24 * HOUR);
    }

    #[test]
    fn a_database_password_never_reaches_an_error_message() {
        assert_eq!(
            redacted("postgres://ridesaga:s3cr:et@127.0.0.1:5432/ridesaga_ride"),
            "postgres://ridesaga:***@127.0.0.1:5432/ridesaga_ride"
        );
        assert_eq!(
            redacted("sqlite://.run/data/ride.db"),
            "sqlite://.run/data/ride.db"
        );
        assert_eq!(
            redacted("postgres://ridesaga@host/db"),
            "postgres://ridesaga@host/db"
        );
    }
}
