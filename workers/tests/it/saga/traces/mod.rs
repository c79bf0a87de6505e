//! One ride, one trace: every message of a completed saga (a happy path, and a compensation
//! path through an effect's outcome) carries the trace context of the ride in its headers,
//! with exporting off and on. With exporting on, a local OTLP/HTTP receiver records what the
//! workers export and the test walks each message's span up to the message that caused it. An
//! exporter whose collector never answers neither stops nor slows the saga. A deadline's steps
//! stay in the ride's trace. On SQLite and PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use ridesaga_schemas::trace::TraceId;
use ridesaga_schemas::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{System, describe};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);

/// A span as the receiver decoded it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent: Option<String>,
    name: String,
    attributes: HashMap<String, String>,
}

/// A local OTLP/HTTP receiver: answers every POST 200 and keeps the spans it decodes.
struct Receiver {
    url: String,
    spans: Arc<Mutex<Vec<Got>>>,
    requests: Arc<Mutex<usize>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let spans: Arc<Mutex<Vec<Got>>> = Arc::default();
        let requests: Arc<Mutex<usize>> = Arc::default();
        let (kept, counted) = (spans.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (kept, counted) = (kept.clone(), counted.clone());
                tokio::spawn(async move {
                    let mut data = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let body = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        data.extend_from_slice(&chunk[..n]);
                        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
                        assert!(head.starts_with("post /v1/traces "), "{head}");
                        assert!(head.contains("content-type: application/json"), "{head}");
                        let length: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .expect("a content length");
                        if data.len() >= end + 4 + length {
                            break data[end + 4..end + 4 + length].to_vec();
                        }
                    };
                    let request: serde_json::Value =
                        serde_json::from_slice(&body).expect("OTLP JSON");
                    let got = decode(&request);
                    kept.lock().unwrap().extend(got);
                    *counted.lock().unwrap() += 1;
                    let _ = socket
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                        .await;
                });
            }
        });
        Receiver {
            url,
            spans,
            requests,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

/// The spans of an `ExportTraceServiceRequest` in OTLP JSON.
fn decode(request: &serde_json::Value) -> Vec<Got> {
    let strings = |attributes: &serde_json::Value| -> HashMap<String, String> {
        attributes
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let value = &a["value"];
                let value = value["stringValue"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| value["intValue"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| value.to_string());
                (a["key"].as_str().unwrap().to_owned(), value)
            })
            .collect()
    };
    let mut out = Vec::new();
    for resource in request["resourceSpans"].as_array().expect("resourceSpans") {
        let service = strings(&resource["resource"]["attributes"])
            .remove("service.name")
            .expect("service.name");
        for scope in resource["scopeSpans"].as_array().unwrap() {
            for span in scope["spans"].as_array().unwrap() {
                let id = |key: &str| span[key].as_str().map(str::to_owned);
                let trace_id = id("traceId").unwrap();
                assert_eq!(trace_id.len(), 32);
                assert!(span["startTimeUnixNano"].as_str().is_some());
                out.push(Got {
                    service: service.clone(),
                    trace_id,
                    span_id: id("spanId").unwrap(),
                    parent: id("parentSpanId"),
                    name: span["name"].as_str().unwrap().to_owned(),
                    attributes: strings(&span["attributes"]),
                });
            }
        }
    }
    out
}

/// A message of the saga and the trace context it was stored with.
type Traced = (Envelope, Option<TraceContext>);

/// Every stored message of `ride` with its headers' trace context, in stream order.
async fn traced_saga(js: &jetstream::Context, ride: &RideId) -> Vec<Traced> {
    let filter = saga_filter(ride.as_str());
    let messages = ridesaga_testkit::system::stored(js, streams::SAGA_STREAM, &filter)
        .await
        .unwrap();
    messages
        .iter()
        .map(|m| {
            let envelope = Envelope::decode(&m.subject, &m.payload).unwrap();
            (envelope, TraceContext::from_headers(m.headers.as_ref()))
        })
        .collect()
}

/// Publishes a command with `context` in its headers, as `ridectl` does.
async fn send(
    sys: &System,
    message: impl Into<Message>,
    ride: Option<&RideId>,
    context: &TraceContext,
) -> Envelope {
    let envelope = Envelope::new(message, ride.cloned(), "ridectl");
    let mut headers = async_nats::HeaderMap::new();
    context.insert_into(&mut headers);
    let msg = jetstream::message::PublishMessage::build()
        .payload(envelope.encode().into())
        .message_id(envelope.id.as_str())
        .headers(headers)
        .message_id(envelope.id.as_str());
    sys.js
        .send_publish(envelope.subject(), msg)
        .await
        .unwrap()
        .await
        .unwrap();
    envelope
}

/// Waits until the saga has a `kind`, then until it has stopped growing.
async fn completed(sys: &System, ride: &RideId, kind: MessageKind) -> Vec<Traced> {
    sys.wait_for(ride, kind, Duration::from_secs(20)).await;
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let saga = traced_saga(&sys.js, ride).await;
        if saga.len() == last {
            return saga;
        }
        last = saga.len();
    }
}

fn show(saga: &[Traced]) -> String {
    saga.iter()
        .map(|(e, t)| {
            format!(
                "{} {} {}",
                e.subject(),
                e.producer,
                t.as_ref().map_or("-".into(), TraceContext::traceparent)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every message carries `trace`, under a span of its own.
fn assert_one_trace(saga: &[Traced], trace: TraceId) {
    let mut span_ids = std::collections::HashSet::new();
    for (envelope, context) in saga {
        let context = context.as_ref().unwrap_or_else(|| {
            panic!("{} has no traceparent:\n{}", envelope.subject(), show(saga))
        });
        assert_eq!(
            context.trace_id,
            trace,
            "{} is in another trace:\n{}",
            envelope.subject(),
            show(saga)
        );
        assert!(
            span_ids.insert(context.span_id),
            "{} reuses a span",
            envelope.subject()
        );
    }
}

/// With the spans the workers exported: each worker's message's span leads up, parent by
/// parent, to the span of the message that caused it (its causation, when it names one), all
/// in the ride's trace; every message was received and processed under the messaging
/// conventions.
async fn assert_caused_by_parents(receiver: &Receiver, saga: &[Traced], trace: TraceId) {
    let header_span: HashMap<String, &Envelope> = saga
        .iter()
        .map(|(e, t)| (t.as_ref().unwrap().span_id.to_hex(), e))
        .collect();
    let produced: Vec<&Traced> = saga
        .iter()
        .filter(|(e, _)| Service::ALL.iter().any(|s| s.name() == e.producer))
        .collect();
    // Spans arrive within the exporter's interval.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans = receiver.spans();
        let ids: std::collections::HashSet<&str> =
            spans.iter().map(|s| s.span_id.as_str()).collect();
        let missing: Vec<&str> = produced
            .iter()
            .filter(|(_, t)| !ids.contains(t.as_ref().unwrap().span_id.to_hex().as_str()))
            .map(|(e, _)| e.kind().as_str())
            .collect();
        if missing.is_empty() {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span exported for {missing:?}; got {} spans",
            spans.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_id: HashMap<&str, &Got> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for (envelope, context) in &produced {
        let own = context.as_ref().unwrap().span_id.to_hex();
        let created = by_id[own.as_str()];
        assert!(
            created.name.starts_with("create "),
            "{}: {}",
            envelope.subject(),
            created.name
        );
        let mut at = created;
        let mut path = vec![format!("{} ({})", at.name, at.service)];
        let cause = loop {
            assert_eq!(
                at.trace_id,
                trace.to_hex(),
                "{} leaves the trace: {path:?}",
                envelope.subject()
            );
            let parent = at.parent.clone().unwrap_or_else(|| {
                panic!("{}: the chain ends at a root: {path:?}", envelope.subject())
            });
            if let Some(cause) = header_span.get(&parent) {
                break *cause;
            }
            at = by_id.get(parent.as_str()).unwrap_or_else(|| {
                panic!(
                    "{}: parent {parent} not exported: {path:?}",
                    envelope.subject()
                )
            });
            path.push(format!("{} ({})", at.name, at.service));
            assert!(path.len() < 12, "{}: {path:?}", envelope.subject());
        };
        assert_ne!(cause.id, envelope.id);
        if let Some(causation) = &envelope.causation_id {
            assert_eq!(
                &cause.id,
                causation,
                "{}'s span leads to {} ({}), not to its cause: {path:?}",
                envelope.subject(),
                cause.subject(),
                cause.id
            );
        } else {
            assert_eq!(cause.saga_id, envelope.saga_id, "{path:?}");
        }
    }
    // Each message each service consumed was received and processed, with the messaging
    // conventions' attributes.
    for (envelope, _) in saga {
        let processed: Vec<&Got> = spans
            .iter()
            .filter(|s| {
                s.attributes
                    .get("messaging.operation.type")
                    .map(String::as_str)
                    == Some("process")
                    && s.attributes.get("messaging.message.id") == Some(&envelope.id.to_string())
            })
            .collect();
        for span in &processed {
            assert_eq!(span.attributes["messaging.system"], "nats");
            assert_eq!(
                span.attributes["messaging.destination.name"],
                envelope.subject()
            );
            assert_eq!(
                span.attributes["messaging.consumer.group.name"],
                span.service
            );
            assert_eq!(span.trace_id, trace.to_hex());
        }
        if envelope.kind().is_command() || envelope.kind() == MessageKind::RideRequested {
            assert!(
                !processed.is_empty(),
                "nobody processed {}",
                envelope.subject()
            );
        }
    }
    assert!(*receiver.requests.lock().unwrap() > 0);
}

async fn driver(sys: &System, id: &str) {
    let driver_id = DriverId::parse(id).unwrap();
    let location = GeoPoint::new(NEARBY.0, NEARBY.1).unwrap();
    let ctx = TraceContext::new_root();
    send(
        sys,
        RegisterDriver {
            driver_id: driver_id.clone(),
            name: "Trace".into(),
            location,
            email: None,
            phone: None,
        },
        None,
        &ctx,
    )
    .await;
    send(
        sys,
        DriverOnline {
            driver_id,
            location: None,
        },
        None,
        &ctx,
    )
    .await;
}

fn request(rider: &str, card: &str) -> RequestRide {
    RequestRide {
        rider_id: RiderId::parse(rider).unwrap(),
        pickup: GeoPoint::new(PICKUP.0, PICKUP.1).unwrap(),
        dropoff: GeoPoint::new(DROPOFF.0, DROPOFF.1).unwrap(),
        payment_token: card.into(),
    }
}

/// A ride to its completion, its commands in a trace the caller began (as `ridectl
/// --traceparent` continues one): every message of the saga in that trace.
async fn a_completed_ride_is_one_trace(sys: System, receiver: Option<&Receiver>) {
    driver(&sys, "d_trace").await;
    let caller = TraceContext::new_root();
    let ride = RideId::generate();
    send(
        &sys,
        request("u_trace", "tok_visa"),
        Some(&ride),
        &caller.child(),
    )
    .await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(20))
        .await;
    send(&sys, StartRide {}, Some(&ride), &caller.child()).await;
    sys.wait_for(&ride, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    let complete = CompleteRide {
        distance_km: Some(5.0),
        duration_min: Some(12.0),
    };
    send(&sys, complete, Some(&ride), &caller.child()).await;
    let saga = completed(&sys, &ride, MessageKind::PaymentCaptured).await;
    let kinds: Vec<MessageKind> = saga.iter().map(|(e, _)| e.kind()).collect();
    for kind in [
        MessageKind::RideRequested,
        MessageKind::FraudCleared,
        MessageKind::DriverAssigned,
        MessageKind::PaymentAuthorized,
        MessageKind::RideCompleted,
        MessageKind::PaymentCaptured,
        MessageKind::DriverReleased,
        MessageKind::NotificationSent,
    ] {
        assert!(kinds.contains(&kind), "no {kind}:\n{}", show(&saga));
    }
    assert_one_trace(&saga, caller.trace_id);
    if let Some(receiver) = receiver {
        assert_caused_by_parents(receiver, &saga, caller.trace_id).await;
    }
    sys.shutdown().await;
}

/// A declined card, its commands sent without a trace context (an older producer): the ride's
/// own trace holds every message, the compensations included.
async fn a_compensated_ride_is_its_own_trace(sys: System, receiver: Option<&Receiver>) {
    driver(&sys, "d_broke").await;
    let ride = RideId::generate();
    sys.command(request("u_broke", "tok_chargeDeclined"), Some(&ride))
        .await;
    sys.wait_for(&ride, MessageKind::RideCancelled, Duration::from_secs(20))
        .await;
    let saga = completed(&sys, &ride, MessageKind::DriverReleased).await;
    let kinds: Vec<MessageKind> = saga.iter().map(|(e, _)| e.kind()).collect();
    assert!(
        kinds.contains(&MessageKind::PaymentDeclined),
        "{}",
        show(&saga)
    );
    let ride_trace = TraceContext::for_saga(&ride).trace_id;
    // The command itself has no context; everything after it continues the ride's trace.
    assert!(saga[0].1.is_none(), "{}", show(&saga));
    assert_one_trace(&saga[1..], ride_trace);
    if let Some(receiver) = receiver {
        // The request has no span of its own: its process span's parent is the ride's root.
        let root = TraceContext::for_saga(&ride).span_id;
        let mut rest = saga[1..].to_vec();
        rest.insert(
            0,
            (
                saga[0].0.clone(),
                Some(TraceContext {
                    span_id: root,
                    ..TraceContext::for_saga(&ride)
                }),
            ),
        );
        assert_caused_by_parents(receiver, &rest, ride_trace).await;
    }
    sys.shutdown().await;
}

/// A ride no driver takes, in a caller's trace: the deadline's steps (a timer's, which no
/// message causes) are in the caller's trace too.
async fn a_timed_out_ride_stays_in_the_callers_trace(sys: System, receiver: Option<&Receiver>) {
    let caller = TraceContext::new_root();
    let ride = RideId::generate();
    send(
        &sys,
        request("u_alone", "tok_visa"),
        Some(&ride),
        &caller.child(),
    )
    .await;
    sys.wait_for(&ride, MessageKind::RideCancelled, Duration::from_secs(20))
        .await;
    let saga = completed(&sys, &ride, MessageKind::DriverUnavailable).await;
    let kinds: Vec<MessageKind> = saga.iter().map(|(e, _)| e.kind()).collect();
    assert!(
        kinds.contains(&MessageKind::DriverUnavailable),
        "{}",
        show(&saga)
    );
    assert_one_trace(&saga, caller.trace_id);
    if let Some(receiver) = receiver {
        assert_caused_by_parents(receiver, &saga, caller.trace_id).await;
    }
    sys.shutdown().await;
}

/// A collector that accepts connections and never answers.
async fn silent_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// Rides go through as fast with a collector that never answers as they would without one.
async fn a_silent_collector_neither_stops_nor_slows_the_saga(sys: System) {
    driver(&sys, "d_quiet").await;
    let started = tokio::time::Instant::now();
    for n in 0..3 {
        let ride = RideId::generate();
        sys.command(request(&format!("u_quiet{n}"), "tok_visa"), Some(&ride))
            .await;
        let saga = sys
            .wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(10))
            .await;
        sys.command(CancelRide {}, Some(&ride)).await;
        let saga_now = sys
            .wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
            .await;
        assert!(saga_now.len() > saga.len(), "{}", describe(&saga_now));
    }
    // The exporter's attempts time out after 5 s each; three sagas take far less.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "three rides took {:?}",
        started.elapsed()
    );
    sys.shutdown().await;
}

fn exporting(url: &str) -> [(&'static str, &str); 1] {
    [("OTEL_EXPORTER_OTLP_ENDPOINT", url)]
}

#[tokio::test]
async fn traces_on_sqlite_without_exporting() {
    a_completed_ride_is_one_trace(System::start().await, None).await;
    a_compensated_ride_is_its_own_trace(System::start().await, None).await;
}

#[tokio::test]
async fn a_deadline_on_sqlite_exported_and_on_postgres() {
    let receiver = Receiver::start().await;
    let sys = System::start_with(&exporting(&receiver.url)).await;
    a_timed_out_ride_stays_in_the_callers_trace(sys, Some(&receiver)).await;
    a_timed_out_ride_stays_in_the_callers_trace(System::start_on_postgres(&[]).await, None).await;
}

#[tokio::test]
async fn traces_on_sqlite_exported() {
    let receiver = Receiver::start().await;
    let sys = System::start_with(&exporting(&receiver.url)).await;
    a_completed_ride_is_one_trace(sys, Some(&receiver)).await;
    let receiver = Receiver::start().await;
    let sys = System::start_with(&exporting(&receiver.url)).await;
    a_compensated_ride_is_its_own_trace(sys, Some(&receiver)).await;
}

#[tokio::test]
async fn traces_on_postgres_exported_and_not() {
    a_completed_ride_is_one_trace(System::start_on_postgres(&[]).await, None).await;
    let receiver = Receiver::start().await;
    let sys = System::start_on_postgres(&exporting(&receiver.url)).await;
    a_completed_ride_is_one_trace(sys, Some(&receiver)).await;
    let receiver = Receiver::start().await;
    let sys = System::start_on_postgres(&exporting(&receiver.url)).await;
    a_compensated_ride_is_its_own_trace(sys, Some(&receiver)).await;
}

#[tokio::test]
async fn a_silent_collector_does_not_hold_the_saga_up() {
    let (url, _collector) = silent_collector().await;
    a_silent_collector_neither_stops_nor_slows_the_saga(System::start_with(&exporting(&url)).await)
        .await;
}
