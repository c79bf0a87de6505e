//! Talking to NATS: connecting with the global options, publishing commands with their
//! `Nats-Msg-Id`, and reading the saga stream through ordered (ephemeral, unacknowledged)
//! consumers, either up to what is stored now ([`scan`]) or live ([`follow`]).

use std::time::Duration;

use anyhow::{Context, anyhow};
use async_nats::jetstream::{
    self, consumer,
    message::PublishMessage,
    publish::PublishAck,
    stream::{LastRawMessageErrorKind, Stream as JsStream},
};
use bytes::Bytes;
use futures_util::StreamExt;
use ridesaga_schemas::trace::{self, Span, SpanKind, attr};
use ridesaga_schemas::{Envelope, MessageKind, TraceContext, streams::SAGA_STREAM};
use time::OffsetDateTime;

use crate::cli::GlobalArgs;
use crate::exit::HintExt;
use crate::output::warn;
use crate::saga::Step;

/// How long one read from a consumer may stall before a scan gives up.
const READ_STALL: Duration = Duration::from_secs(10);

/// A connection and its JetStream context.
#[derive(Debug, Clone)]
pub struct Nats {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// The trace commands continue (`--traceparent`), if one was given.
    pub trace: Option<TraceContext>,
    /// Where ridectl's own spans go (`OTEL_EXPORTER_OTLP_ENDPOINT`), if anywhere.
    pub otlp: Option<trace::Endpoint>,
}

/// Connects with `--server` and `--nkey`, `--user/--password` or `--creds` (and `--tls-ca`),
/// failing fast when unreachable or refused. A request the server denies for want of a
/// permission is reported on stderr as it happens.
pub async fn connect(global: &GlobalArgs) -> anyhow::Result<Nats> {
    let mut options = async_nats::ConnectOptions::new()
        .name("ridectl")
        .connection_timeout(global.connect_timeout)
        .custom_inbox_prefix(&global.inbox_prefix)
        .event_callback(|event| async move {
            if let async_nats::Event::ServerError(error) = event {
                warn(format!("the server refused: {error}"));
            }
        });
    if let Some(path) = &global.nkey {
        let seed = ridesaga_schemas::auth::read_seed(path)
            .context("could not read the NKEY seed (--nkey, NATS_NKEY_FILE)")?;
        options = options.nkey(seed.expose().to_owned());
    }
    if let Some(path) = &global.tls_ca {
        std::fs::File::open(path).with_context(|| {
            format!(
                "could not read the CA certificate {} (--tls-ca, NATS_CA_FILE)",
                path.display()
            )
        })?;
        options = options
            .add_root_certificates(path.clone())
            .require_tls(true);
    }
    match (&global.user, &global.password) {
        (Some(user), Some(password)) => {
            options = options.user_and_password(user.clone(), password.clone());
        }
        (Some(_), None) => return Err(anyhow!("--user needs --password (or NATS_PASSWORD)")),
        _ => {}
    }
    if let Some(path) = &global.creds {
        options = options
            .credentials_file(path)
            .await
            .with_context(|| format!("could not read credentials file {}", path.display()))?;
    }
    let servers: Vec<&str> = global.server.split(',').map(str::trim).collect();
    let attempt = tokio::time::timeout(
        global.connect_timeout + Duration::from_secs(1),
        options.connect(servers.as_slice()),
    );
    let client = attempt
        .await
        .map_err(|_| anyhow!("no answer within {:?}", global.connect_timeout))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("could not connect to {}", global.server))?;
    let js = jetstream::new(client.clone());
    let (trace, otlp) = trace_options(global)?;
    Ok(Nats {
        client,
        js,
        trace,
        otlp,
    })
}

/// The trace given with `--traceparent` (and `--tracestate`), and where spans go.
fn trace_options(
    global: &GlobalArgs,
) -> anyhow::Result<(Option<TraceContext>, Option<trace::Endpoint>)> {
    let given = match &global.traceparent {
        Some(parent) => Some(
            TraceContext::parse(parent, global.tracestate.as_deref())
                .context("--traceparent (TRACEPARENT)")
                .hint("a W3C traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>")?,
        ),
        None => None,
    };
    let var = |name: &str| std::env::var(name).ok();
    let otlp = trace::traces_endpoint(
        var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").as_deref(),
        var("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
    )
    .map_err(|e| anyhow!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    Ok((given, otlp))
}

impl Nats {
    /// The saga stream, with a hint when it does not exist yet.
    pub async fn saga_stream(&self) -> anyhow::Result<JsStream> {
        self.stream(SAGA_STREAM).await
    }

    /// A stream by name, with a hint when it does not exist yet.
    pub async fn stream(&self, name: &str) -> anyhow::Result<JsStream> {
        self.js
            .get_stream(name)
            .await
            .with_context(|| format!("could not open stream {name}"))
            .hint("create the streams and consumers with `ridectl provision`")
    }

    /// Publishes an envelope on its subject with its id as `Nats-Msg-Id` and waits for the
    /// stream's acknowledgement. An envelope the contract refuses (the checks every receiver
    /// makes, and the size limit) is not published.
    ///
    /// The command carries a trace context: a span of the trace given with `--traceparent`,
    /// else of its ride's own trace (under the ride's root span, so every command about a ride
    /// is in one trace), else of a new trace. With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
    /// span is exported (and, for a ride's request in its own trace, the ride's root span).
    pub async fn publish(&self, envelope: &Envelope) -> anyhow::Result<PublishAck> {
        let subject = envelope.subject();
        let payload = envelope
            .encode_checked()
            .with_context(|| format!("refusing to publish {subject}"))?;
        let parent = match &self.trace {
            Some(given) => given.clone(),
            None => TraceContext::continued(None, envelope.saga_id.as_ref()),
        };
        let context = parent.child();
        let started = trace::now_unix_nanos();
        let ack = self
            .publish_traced(
                subject.clone(),
                Bytes::from(payload),
                envelope.id.as_str(),
                Some(&context),
            )
            .await;
        if let Some(endpoint) = &self.otlp {
            let mut spans = Vec::new();
            let destination = subject
                .rsplit_once('.')
                .map_or(subject.as_str(), |(h, _)| h);
            let mut send = Span::ended_now(
                &context,
                Some(parent.span_id),
                format!("send {destination}"),
                SpanKind::Producer,
                started,
            )
            .attribute(attr::SYSTEM, attr::NATS)
            .attribute(attr::OPERATION_TYPE, "send")
            .attribute(attr::OPERATION_NAME, "publish")
            .attribute(attr::DESTINATION, subject.as_str())
            .attribute(attr::DESTINATION_TEMPLATE, format!("{destination}.*"))
            .attribute(attr::MESSAGE_ID, envelope.id.as_str());
            if let Some(saga) = &envelope.saga_id {
                send = send.attribute(attr::SAGA_ID, saga.as_str());
            }
            if let Err(e) = &ack {
                send.error = Some(e.to_string());
            }
            spans.push(send);
            if let (None, Some(saga), MessageKind::RequestRide) =
                (&self.trace, &envelope.saga_id, envelope.kind())
            {
                spans.push(
                    Span::ended_now(
                        &parent,
                        None,
                        format!("ride {saga}"),
                        SpanKind::Internal,
                        started,
                    )
                    .attribute(attr::SAGA_ID, saga.as_str()),
                );
            }
            let body = trace::encode_spans("ridectl", "ridectl", &spans);
            if let Err(e) = trace::post(endpoint, &body, Duration::from_secs(2)).await {
                tracing::debug!("spans not exported: {e}");
            }
        }
        ack
    }

    /// Publishes bytes with a message id and waits for the stream's acknowledgement.
    pub async fn publish_raw(
        &self,
        subject: String,
        payload: Bytes,
        message_id: &str,
    ) -> anyhow::Result<PublishAck> {
        self.publish_traced(subject, payload, message_id, None)
            .await
    }

    /// [`Nats::publish_raw`] with a trace context in the headers.
    async fn publish_traced(
        &self,
        subject: String,
        payload: Bytes,
        message_id: &str,
        context: Option<&TraceContext>,
    ) -> anyhow::Result<PublishAck> {
        let mut message = PublishMessage::build()
            .payload(payload)
            .message_id(message_id);
        if let Some(context) = context {
            message = message.header(trace::TRACEPARENT, context.traceparent().as_str());
            if let Some(state) = &context.state {
                message = message.header(trace::TRACESTATE, state.as_str());
            }
        }
        let ack = self
            .js
            .send_publish(subject.clone(), message)
            .await
            .with_context(|| format!("could not publish {subject}"))?
            .await
            .with_context(|| format!("no acknowledgement from the stream for {subject}"))
            .hint("the stream may not exist: run `ridectl provision`")?;
        Ok(ack)
    }
}

/// Whether the stream holds any message on `subject`.
pub async fn has_subject(stream: &JsStream, subject: &str) -> anyhow::Result<bool> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("could not look up {subject}")),
    }
}

/// A stored message, not yet decoded.
#[derive(Debug, Clone)]
pub struct Record {
    pub seq: u64,
    pub time: OffsetDateTime,
    pub subject: String,
    pub payload: Bytes,
    /// The trace context in its headers, if it has one.
    pub trace: Option<TraceContext>,
}

impl Record {
    /// Decodes the envelope; `None` (with a warning) for messages this build cannot read.
    pub fn step(&self) -> Option<Step> {
        match Envelope::decode(&self.subject, &self.payload) {
            Ok(envelope) => Some(Step {
                seq: self.seq,
                time: self.time,
                envelope,
                trace: self.trace.clone(),
            }),
            Err(e) => {
                warn(format!(
                    "skipping message {} on {}: {e}",
                    self.seq, self.subject
                ));
                None
            }
        }
    }
}

fn ordered_config(
    filters: &[String],
    deliver: consumer::DeliverPolicy,
) -> consumer::pull::OrderedConfig {
    let mut config = consumer::pull::OrderedConfig {
        deliver_policy: deliver,
        ..Default::default()
    };
    match filters {
        [] => {}
        [one] => config.filter_subject = one.clone(),
        many => config.filter_subjects = many.to_vec(),
    }
    config
}

/// Every stored message matching `filters` from `deliver` on, up to the last one stored when
/// the scan began.
pub async fn scan(
    stream: &JsStream,
    filters: &[String],
    deliver: consumer::DeliverPolicy,
) -> anyhow::Result<Vec<Record>> {
    let mut stream = stream.clone();
    let last = stream
        .info()
        .await
        .context("could not read the stream's state")?
        .state
        .last_sequence;
    let consumer = stream
        .create_consumer(ordered_config(filters, deliver))
        .await
        .context("could not create a consumer to read the stream")?;
    let name = consumer.cached_info().name.clone();
    let records = read_to(consumer, last).await;
    // The server would keep the consumer for its inactivity threshold (30 s): a script that
    // runs many commands would pile them up against the stream's limit.
    if let Err(e) = stream.delete_consumer(&name).await {
        tracing::debug!("could not delete consumer {name}: {e}");
    }
    records
}

/// The messages `consumer` delivers, up to stream sequence `last`.
async fn read_to(
    consumer: consumer::Consumer<consumer::pull::OrderedConfig>,
    last: u64,
) -> anyhow::Result<Vec<Record>> {
    if consumer.cached_info().num_pending == 0 {
        return Ok(Vec::new());
    }
    let mut messages = consumer
        .messages()
        .await
        .context("could not read the stream")?;
    let mut records = Vec::new();
    loop {
        let next = tokio::time::timeout(READ_STALL, messages.next())
            .await
            .map_err(|_| anyhow!("reading the stream stalled for {READ_STALL:?}"))?;
        let Some(message) = next else { break };
        let message = message.context("could not read the stream")?;
        let info = message
            .info()
            .map_err(|e| anyhow!("message without stream metadata: {e}"))?;
        let (seq, pending, time) = (info.stream_sequence, info.pending, info.published);
        records.push(Record {
            seq,
            time,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
            trace: TraceContext::from_headers(message.headers.as_ref()),
        });
        if pending == 0 || seq >= last {
            break;
        }
    }
    Ok(records)
}

/// Decoded steps of everything matching `filters`.
pub async fn scan_steps(
    stream: &JsStream,
    filters: &[String],
    deliver: consumer::DeliverPolicy,
) -> anyhow::Result<Vec<Step>> {
    Ok(scan(stream, filters, deliver)
        .await?
        .iter()
        .filter_map(Record::step)
        .collect())
}

/// A live feed of messages matching `filters` from `deliver` on.
pub struct Feed {
    messages: consumer::pull::Ordered,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Feed")
    }
}

impl Feed {
    /// The next message; `None` when the feed ended.
    pub async fn next(&mut self) -> anyhow::Result<Option<Record>> {
        loop {
            let Some(message) = self.messages.next().await else {
                return Ok(None);
            };
            let message = match message {
                Ok(message) => message,
                // The ordered consumer recreates itself; a missed heartbeat is worth a note.
                Err(e) => {
                    tracing::debug!("feed: {e}");
                    continue;
                }
            };
            let info = message
                .info()
                .map_err(|e| anyhow!("message without stream metadata: {e}"))?;
            return Ok(Some(Record {
                seq: info.stream_sequence,
                time: info.published,
                subject: message.subject.to_string(),
                payload: message.payload.clone(),
                trace: TraceContext::from_headers(message.headers.as_ref()),
            }));
        }
    }
}

/// Follows messages matching `filters` as they are stored.
pub async fn follow(
    stream: &JsStream,
    filters: &[String],
    deliver: consumer::DeliverPolicy,
) -> anyhow::Result<Feed> {
    let consumer = stream
        .create_consumer(ordered_config(filters, deliver))
        .await
        .context("could not create a consumer to follow the stream")?;
    let messages = consumer
        .messages()
        .await
        .context("could not follow the stream")?;
    Ok(Feed { messages })
}
