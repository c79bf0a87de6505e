//! Trace context on the bus, and spans as OpenTelemetry receives them.
//!
//! Every command and event travels with a W3C trace context in its NATS headers
//! (`traceparent`, and `tracestate` when there is one): `ridectl` starts or continues a trace
//! per command, each worker continues the trace of the message it handles, and the messages it
//! emits carry it on. A message without one (an older producer) belongs to its ride's own
//! trace, [`TraceContext::for_saga`], which is also where the steps a timer takes for a ride
//! (deadlines, expiry) go: one ride, one trace.
//!
//! Spans are exported as OTLP/HTTP JSON ([`encode_spans`], [`post`]). The encoding and the
//! HTTP/1.1 request are written here, a few hundred lines, rather than taken from the
//! OpenTelemetry crates (`opentelemetry_sdk`, `opentelemetry-otlp` and an HTTP client bring
//! some hundred crates, and minutes to every build, for what is one JSON document POSTed to a
//! collector); workers and `ridectl` share them.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::HeaderMap;
use serde_json::{Value, json};

use crate::RideId;

/// The W3C header that names a message's trace and its parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header with vendors' trace state, carried on unchanged.
pub const TRACESTATE: &str = "tracestate";
/// The longest `tracestate` carried on (the W3C limit is 32 members; 512 bytes is what
/// propagators must keep).
pub const MAX_TRACESTATE: usize = 512;

/// A trace's id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random trace id.
    pub fn random() -> TraceId {
        let high = random_u64();
        let low = random_u64() | 1;
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&high.to_be_bytes());
        bytes[8..].copy_from_slice(&low.to_be_bytes());
        TraceId(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl SpanId {
    /// A new random span id.
    pub fn random() -> SpanId {
        SpanId((random_u64() | 1).to_be_bytes())
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// Where a message stands in a trace: its trace, the span that produced it (the parent of
/// whatever handles it), whether the trace is sampled, and the vendors' state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
    pub state: Option<String>,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {problem}")]
pub struct TraceParentError {
    pub value: String,
    pub problem: &'static str,
}

impl TraceContext {
    /// A new trace: random ids, sampled.
    pub fn new_root() -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: true,
            state: None,
        }
    }

    /// The ride's own trace, whose root span is the ride itself: ids derived from the ride's
    /// id, so anyone who knows the ride finds its trace without asking anybody.
    pub fn for_saga(saga: &RideId) -> TraceContext {
        let trace = crate::ids::fnv1a_128(&[b"trace/", saga.as_str().as_bytes()]);
        let span = crate::ids::fnv1a_128(&[b"span/", saga.as_str().as_bytes()]);
        let mut trace_id = trace.to_be_bytes();
        trace_id[15] |= 1;
        let mut span_id = [0; 8];
        span_id.copy_from_slice(&span.to_be_bytes()[..8]);
        span_id[7] |= 1;
        TraceContext {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            sampled: true,
            state: None,
        }
    }

    /// A child span of this one: same trace, flags and state, a new span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: SpanId::random(),
            sampled: self.sampled,
            state: self.state.clone(),
        }
    }

    /// Parses a `traceparent` (version 00, or a later version read as 00 as the W3C
    /// recommendation says) and an optional `tracestate` (kept if not longer than
    /// [`MAX_TRACESTATE`]).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, TraceParentError> {
        let refuse = |problem| TraceParentError {
            value: traceparent.chars().take(80).collect(),
            problem,
        };
        let value = traceparent.trim();
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refuse(
                "expected version-traceid-parentid-flags (00-<32 hex>-<16 hex>-<2 hex>)",
            ));
        };
        let version = parse_hex::<1>(version).ok_or_else(|| refuse("version is not 2 hex"))?;
        if version[0] == 0xff {
            return Err(refuse("version ff is invalid"));
        }
        if version[0] == 0 && parts.next().is_some() {
            return Err(refuse("version 00 has four fields"));
        }
        let trace_id = parse_hex::<16>(trace).ok_or_else(|| refuse("trace id is not 32 hex"))?;
        let span_id = parse_hex::<8>(span).ok_or_else(|| refuse("parent id is not 16 hex"))?;
        let flags = parse_hex::<1>(flags).ok_or_else(|| refuse("flags are not 2 hex"))?;
        if trace_id == [0; 16] {
            return Err(refuse("trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(refuse("parent id is all zeros"));
        }
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
            .map(str::to_owned);
        Ok(TraceContext {
            trace_id: TraceId(trace_id),
            span_id: SpanId(span_id),
            sampled: flags[0] & 1 == 1,
            state,
        })
    }

    /// The `traceparent` header's value.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }

    /// The context in `headers`, if there is a valid one (an invalid one is ignored, as a
    /// W3C receiver does: the message then starts over in its ride's trace).
    pub fn from_headers(headers: Option<&HeaderMap>) -> Option<TraceContext> {
        let headers = headers?;
        let parent = headers.get(TRACEPARENT)?;
        let state = headers.get(TRACESTATE).map(|v| v.as_str());
        TraceContext::parse(parent.as_str(), state).ok()
    }

    /// Writes the context into `headers`.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.traceparent().as_str());
        if let Some(state) = &self.state {
            headers.insert(TRACESTATE, state.as_str());
        }
    }

    /// The context a message handled now continues: the one it carries, else its ride's,
    /// else a new trace.
    pub fn continued(carried: Option<TraceContext>, saga: Option<&RideId>) -> TraceContext {
        carried
            .or_else(|| saga.map(TraceContext::for_saga))
            .unwrap_or_else(TraceContext::new_root)
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Lowercase hex of exactly `N` bytes (the W3C format allows no uppercase).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id())
        ^ SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
}

/// SplitMix64 over a per-thread state seeded from the process's random hasher keys: ids that
/// are unique and unpredictable enough for tracing, at a few nanoseconds each.
fn random_u64() -> u64 {
    RNG.with(|state| {
        let next = state.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        state.set(next);
        let mut z = next;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// What a span stands for, as OTLP numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for AttributeValue {
    fn from(v: &str) -> Self {
        AttributeValue::Str(v.to_owned())
    }
}

impl From<String> for AttributeValue {
    fn from(v: String) -> Self {
        AttributeValue::Str(v)
    }
}

impl From<i64> for AttributeValue {
    fn from(v: i64) -> Self {
        AttributeValue::Int(v)
    }
}

impl From<bool> for AttributeValue {
    fn from(v: bool) -> Self {
        AttributeValue::Bool(v)
    }
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, AttributeValue)>,
    /// Spans of other traces (or of this one) this span follows from.
    pub links: Vec<TraceContext>,
    /// An error's description; `None` for a span that went well.
    pub error: Option<String>,
}

impl Span {
    /// A span of `context` (its ids) under `parent`, started at `start_unix_nanos` and ending
    /// now.
    pub fn ended_now(
        context: &TraceContext,
        parent: Option<SpanId>,
        name: impl Into<String>,
        kind: SpanKind,
        start_unix_nanos: u64,
    ) -> Span {
        Span {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent,
            name: name.into(),
            kind,
            start_unix_nanos,
            end_unix_nanos: now_unix_nanos().max(start_unix_nanos),
            attributes: Vec::new(),
            links: Vec::new(),
            error: None,
        }
    }

    pub fn attribute(mut self, key: &'static str, value: impl Into<AttributeValue>) -> Span {
        self.attributes.push((key, value.into()));
        self
    }
}

/// Messaging attributes (OpenTelemetry's semantic conventions for messaging).
pub mod attr {
    pub const SYSTEM: &str = "messaging.system";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const DESTINATION_TEMPLATE: &str = "messaging.destination.template";
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    pub const MESSAGE_ID: &str = "messaging.message.id";
    pub const CONVERSATION_ID: &str = "messaging.message.conversation_id";
    pub const BATCH_COUNT: &str = "messaging.batch.message_count";
    pub const DELIVERY_COUNT: &str = "messaging.nats.message.delivery_count";
    pub const SAGA_ID: &str = "ridesaga.saga_id";
    pub const EFFECT_ID: &str = "ridesaga.effect.id";
    pub const EFFECT_KIND: &str = "ridesaga.effect.kind";
    /// `messaging.system`'s value.
    pub const NATS: &str = "nats";
}

/// The body of an OTLP/HTTP JSON export request (`ExportTraceServiceRequest`) of `spans`, all
/// from `service` (the resource's `service.name`) and `instance`.
pub fn encode_spans(service: &str, instance: &str, spans: &[Span]) -> Vec<u8> {
    let attribute = |key: &str, value: &AttributeValue| {
        let value = match value {
            AttributeValue::Str(s) => json!({ "stringValue": s }),
            AttributeValue::Int(i) => json!({ "intValue": i.to_string() }),
            AttributeValue::Bool(b) => json!({ "boolValue": b }),
        };
        json!({ "key": key, "value": value })
    };
    let spans: Vec<Value> = spans
        .iter()
        .map(|span| {
            let mut out = json!({
                "traceId": span.trace_id.to_hex(),
                "spanId": span.span_id.to_hex(),
                "name": span.name,
                "kind": span.kind as i32,
                "startTimeUnixNano": span.start_unix_nanos.to_string(),
                "endTimeUnixNano": span.end_unix_nanos.to_string(),
                "attributes": span.attributes.iter().map(|(k, v)| attribute(k, v)).collect::<Vec<_>>(),
            });
            if let Some(parent) = span.parent {
                out["parentSpanId"] = json!(parent.to_hex());
            }
            if !span.links.is_empty() {
                out["links"] = span
                    .links
                    .iter()
                    .map(|l| json!({ "traceId": l.trace_id.to_hex(), "spanId": l.span_id.to_hex() }))
                    .collect();
            }
            out["status"] = match &span.error {
                Some(message) => json!({ "code": 2, "message": message }),
                None => json!({}),
            };
            out
        })
        .collect();
    let body = json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                attribute("service.name", &AttributeValue::from(service)),
                attribute("service.instance.id", &AttributeValue::from(instance)),
                attribute("service.namespace", &AttributeValue::from("ridesaga")),
            ]},
            "scopeSpans": [{
                "scope": { "name": "ridesaga" },
                "spans": spans,
            }],
        }]
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Where OTLP/HTTP traces go: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as it is, else
/// `OTEL_EXPORTER_OTLP_ENDPOINT` with `/v1/traces`; `None` when neither is set (or empty).
pub fn traces_endpoint(
    traces: Option<&str>,
    base: Option<&str>,
) -> Result<Option<Endpoint>, String> {
    let url = match (
        traces.filter(|s| !s.trim().is_empty()),
        base.filter(|s| !s.trim().is_empty()),
    ) {
        (Some(url), _) => url.trim().to_owned(),
        (None, Some(base)) => format!("{}/v1/traces", base.trim().trim_end_matches('/')),
        (None, None) => return Ok(None),
    };
    Endpoint::parse(&url).map(Some)
}

/// An `http://host:port/path` to POST to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// Parses a plain `http://` URL (a collector beside the worker; TLS to a remote one is
    /// the collector's business).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            format!("{url:?}: only http:// endpoints are supported (a local collector)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("{url:?}: bad port {port:?}"))?,
            ),
            _ => (authority, 80),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        Ok(Endpoint {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            path: path.to_owned(),
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// POSTs an OTLP/HTTP JSON body to `endpoint` within `timeout` (connect, write and the
/// answer's status line together); Ok when the collector answered 2xx.
pub async fn post(endpoint: &Endpoint, body: &[u8], timeout: Duration) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("connect {endpoint}: {e}"))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            endpoint.path,
            endpoint.host,
            endpoint.port,
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| format!("write {endpoint}: {e}"))?;
        stream
            .write_all(body)
            .await
            .map_err(|e| format!("write {endpoint}: {e}"))?;
        let mut answer = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < 4096 {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read {endpoint}: {e}"))?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        let status_line = String::from_utf8_lossy(&answer);
        let status = status_line.split_whitespace().nth(1).unwrap_or("");
        if status.starts_with('2') {
            Ok(())
        } else {
            Err(format!(
                "{endpoint} answered {:?}",
                status_line.lines().next().unwrap_or("nothing")
            ))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("{endpoint}: no answer within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_round_trips() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let ctx = TraceContext::parse(value, Some("vendor=x")).unwrap();
        assert_eq!(ctx.traceparent(), value);
        assert!(ctx.sampled);
        assert_eq!(ctx.state.as_deref(), Some("vendor=x"));
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, ctx.span_id);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ] {
            assert!(TraceContext::parse(bad, None).is_err(), "{bad:?} accepted");
        }
        // A later version is read as 00, its extra fields ignored.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(!TraceContext::parse(later, None).unwrap().sampled);
    }

    #[test]
    fn a_ride_has_one_trace_of_its_own() {
        let ride = RideId::parse("r_1").unwrap();
        let a = TraceContext::for_saga(&ride);
        assert_eq!(a, TraceContext::for_saga(&ride));
        assert_ne!(
            a.trace_id,
            TraceContext::for_saga(&RideId::parse("r_2").unwrap()).trace_id
        );
        assert_eq!(TraceContext::parse(&a.traceparent(), None).unwrap(), a);
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| SpanId::random()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn endpoints_are_parsed() {
        let e = traces_endpoint(None, Some("http://127.0.0.1:4318/")).unwrap();
        assert_eq!(
            e,
            Some(Endpoint {
                host: "127.0.0.1".into(),
                port: 4318,
                path: "/v1/traces".into()
            })
        );
        let e = traces_endpoint(Some("http://collector/x"), Some("http://other:1")).unwrap();
        assert_eq!(e.unwrap().to_string(), "http://collector:80/x");
        assert_eq!(traces_endpoint(None, Some("")).unwrap(), None);
        assert!(traces_endpoint(None, Some("https://c:4318")).is_err());
    }

    #[test]
    fn spans_encode_as_otlp_json() {
        let ctx = TraceContext::new_root();
        let span = Span::ended_now(
            &ctx,
            None,
            "process evt.ride.requested",
            SpanKind::Consumer,
            1,
        )
        .attribute(attr::SYSTEM, attr::NATS)
        .attribute(attr::DELIVERY_COUNT, 2);
        let body: Value = serde_json::from_slice(&encode_spans("ride", "ride-1", &[span])).unwrap();
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], ctx.trace_id.to_hex());
        assert_eq!(span["kind"], 5);
        assert_eq!(span["attributes"][1]["value"]["intValue"], "2");
        assert!(span.get("parentSpanId").is_none());
    }
}
