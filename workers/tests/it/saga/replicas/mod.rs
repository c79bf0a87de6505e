//! A backlog behind a stopped service, drained by three replicas, then a scale-down under load.
//!
//! Payment stops while 2,000 rides are requested: each gets its fraud verdict and a driver, and
//! its request and assignment wait on payment's consumer. Three payment replicas then start on
//! that consumer and one database and drain the backlog together (holds and captures are
//! gateway calls, effects), while every ride is started once confirmed and completed once
//! started. Then 500 more rides are requested and two of the three replicas are stopped the way
//! SIGTERM stops them (drain: nothing new pulled, in-flight messages finished and acknowledged,
//! gateway calls in flight finished, the claims of calls not started handed back) in the middle
//! of that load. After each part every ride must have ended completed with its fare captured
//! once, each hold and capture performed once at the gateway, each message payment consumes
//! recorded once in its inbox, each command and event stored once, each notification sent once,
//! nothing dead-lettered, and `ridectl audit` clean.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt;
use ridectl::saga::{Saga, SagaState, Step};
use ridesaga_schemas::streams::SAGA_STREAM;
use ridesaga_schemas::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::System;

/// The service that is stopped, then scaled to three replicas and back down to one.
const SERVICE: Service = Service::Payment;
/// Rides requested while it is stopped; as many drivers, since none is released before
/// payment runs.
const BACKLOG: usize = 2_000;
const REPLICAS: usize = 3;
/// Rides requested during the scale-down (the backlog's drivers, released, take them).
const SCALE_DOWN_RIDES: usize = 500;
/// Replicas stopped in the middle of that load.
const STOPPED: usize = 2;
/// Requests published at once (each awaits its ack).
const REQUESTS_AT_ONCE: usize = 200;
/// New requests per round of the scale-down's load, a round every `ROUND`.
const REQUESTS_PER_ROUND: usize = 25;
const ROUND: Duration = Duration::from_millis(100);
const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
/// No ride may expire while payment is down; the gateway takes a moment, so that calls are in
/// flight whenever replicas stop.
const SETTINGS: &[(&str, &str)] = &[
    ("RIDESAGA_MATCH_DEADLINE", "600s"),
    ("RIDESAGA_CONFIRM_GRACE", "60s"),
    ("RIDESAGA_GATEWAY_LATENCY", "20ms"),
];
/// How long any one wait of the test may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How long the replicas' answers to a `$SRV` request are collected.
const GATHER: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_through_three_replicas_and_a_scale_down_loses_nothing() {
    let mut sys = System::start_with(SETTINGS).await;
    drivers(&sys, BACKLOG).await;
    sys.stop_worker(SERVICE).await;

    // Starts each ride once confirmed and completes it once started, as its driver would.
    let (captured, mut seen) = watch::channel(0usize);
    let driving = tokio::spawn(drive_rides(sys.js.clone(), captured));

    let mut rides: Vec<RideId> = (0..BACKLOG).map(|_| RideId::generate()).collect();
    for (chunk, batch) in rides.chunks(REQUESTS_AT_ONCE).enumerate() {
        let requests = batch.iter().enumerate().map(|(i, ride)| {
            let rider = format!("u_b{}", chunk * REQUESTS_AT_ONCE + i);
            let sys = &sys;
            async move {
                sys.request_as(ride, &rider, PICKUP, DROPOFF, "tok_visa")
                    .await
            }
        });
        futures_util::future::join_all(requests).await;
    }
    // The backlog: every ride's request and driver assignment, waiting for payment alone.
    let waiting = wait_for_backlog(&sys, 2 * BACKLOG as u64).await;
    eprintln!("backlog: {waiting} messages pending for {SERVICE}, no replica running");

    let drain = Instant::now();
    for _ in 0..REPLICAS {
        sys.start_worker(SERVICE);
    }
    wait_for_captures(&mut seen, &driving, BACKLOG).await;
    let steps = wait_until_finished(&sys, BACKLOG).await;
    eprintln!(
        "backlog: {BACKLOG} sagas completed {:.1?} after {REPLICAS} replicas started",
        drain.elapsed()
    );
    let handled = replica_stats(&sys, SERVICE, REPLICAS).await;
    eprintln!("backlog: inputs handled by each replica: {handled:?}");
    assert_eq!(
        handled.len(),
        REPLICAS,
        "every replica answers: {handled:?}"
    );
    for (instance, stats) in &handled {
        assert!(stats.handled > 0, "{instance} took no part in the drain");
    }
    // Each gateway call made once: a hold and a capture per ride, no attempt repeated.
    let calls: u64 = handled.values().map(|s| s.effects_performed).sum();
    assert_eq!(calls, 2 * BACKLOG as u64, "gateway calls by the replicas");
    check_every_saga_finished_once(&sys, steps, BACKLOG).await;

    // The scale-down: more rides while two of the three replicas drain and exit.
    rides.extend((0..SCALE_DOWN_RIDES).map(|_| RideId::generate()));
    let total = rides.len();
    let (requested, mut requested_seen) = watch::channel(0usize);
    let (stopping, mut stopping_seen) = watch::channel(false);
    let leaving = sys.take_replicas(SERVICE, STOPPED);
    let load = async {
        for (round, batch) in rides[BACKLOG..].chunks(REQUESTS_PER_ROUND).enumerate() {
            // The second half of the rides only once the scale-down has begun.
            if round * REQUESTS_PER_ROUND >= SCALE_DOWN_RIDES / 2 {
                let _ = stopping_seen.wait_for(|s| *s).await;
            }
            let requests = batch.iter().enumerate().map(|(i, ride)| {
                let rider = format!("u_s{}", round * REQUESTS_PER_ROUND + i);
                let sys = &sys;
                async move {
                    sys.request_as(ride, &rider, PICKUP, DROPOFF, "tok_visa")
                        .await
                }
            });
            futures_util::future::join_all(requests).await;
            requested.send_modify(|n| *n += batch.len());
            tokio::time::sleep(ROUND).await;
        }
    };
    let scale_down = async {
        // Mid-load: a third of the rides requested, and payment busy with gateway calls.
        tokio::time::timeout(
            TIMEOUT,
            requested_seen.wait_for(|n| *n >= SCALE_DOWN_RIDES / 3),
        )
        .await
        .expect("a third of the rides requested")
        .expect("the load runs");
        let deadline = Instant::now() + TIMEOUT;
        let calls = loop {
            let calls = sys.scalar(SERVICE, "SELECT COUNT(*) FROM effects").await;
            if calls > 0 {
                break calls;
            }
            assert!(Instant::now() < deadline, "no gateway call pending");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let busy = replica_stats(&sys, SERVICE, REPLICAS).await;
        assert_eq!(busy.len(), REPLICAS, "every replica answers: {busy:?}");
        for (instance, stats) in &busy {
            assert!(
                stats.handled > handled.get(instance).map_or(0, |s| s.handled),
                "{instance} took no part in the load before the scale-down"
            );
        }
        let now_captured = *seen.borrow() - BACKLOG;
        let now_requested = *requested_seen.borrow();
        eprintln!(
            "scale-down: stopping {STOPPED} of {REPLICAS} replicas with {now_requested} rides \
             requested, {now_captured} captured, {calls} gateway calls pending"
        );
        stopping.send_replace(true);
        let stopped = Instant::now();
        futures_util::future::join_all(leaving.into_iter().map(|r| r.stop())).await;
        eprintln!("scale-down: stopped in {:.1?}", stopped.elapsed());
    };
    tokio::join!(load, scale_down);
    wait_for_captures(&mut seen, &driving, total).await;
    let steps = wait_until_finished(&sys, total).await;
    // Every replica that answers within `GATHER`: the stopped ones must not.
    let left = replica_stats(&sys, SERVICE, REPLICAS).await;
    assert_eq!(left.len(), REPLICAS - STOPPED, "replicas left: {left:?}");
    check_every_saga_finished_once(&sys, steps, total).await;
    driving.abort();
    sys.shutdown().await;
}

/// Registers `n` drivers around the pickup, then brings them online, waiting after each wave
/// until the driver service has applied all of it (an online command must not overtake its
/// driver's registration).
async fn drivers(sys: &System, n: usize) {
    let ids: Vec<DriverId> = (0..n)
        .map(|i| DriverId::parse(format!("d_b{i}")).expect("a driver id"))
        .collect();
    let register = |i: usize, driver_id: DriverId| {
        let at = (
            PICKUP.0 + (i % 50) as f64 * 0.001,
            PICKUP.1 + (i / 50) as f64 * 0.001,
        );
        RegisterDriver {
            driver_id,
            name: format!("Driver {i}"),
            location: GeoPoint::new(at.0, at.1).expect("a point"),
            email: None,
            phone: None,
        }
    };
    for (start, chunk) in ids.chunks(REQUESTS_AT_ONCE).enumerate() {
        let commands = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| sys.command(register(start * REQUESTS_AT_ONCE + i, id.clone()), None));
        futures_util::future::join_all(commands).await;
    }
    wait_until_idle(sys, &[Service::Driver]).await;
    for chunk in ids.chunks(REQUESTS_AT_ONCE) {
        let commands = chunk.iter().map(|id| {
            let online = DriverOnline {
                driver_id: id.clone(),
                location: None,
            };
            sys.command(online, None)
        });
        futures_util::future::join_all(commands).await;
    }
    wait_until_idle(sys, &[Service::Driver]).await;
}

/// Follows the saga stream: sends `cmd.ride.start` for each confirmed ride and
/// `cmd.ride.complete` for each started one, once each, and publishes how many rides have had
/// their payment captured.
async fn drive_rides(js: jetstream::Context, captured: watch::Sender<usize>) {
    let stream = js.get_stream(SAGA_STREAM).await.expect("the saga stream");
    let filters = [
        "evt.ride.confirmed.*",
        "evt.ride.started.*",
        "evt.payment.captured.*",
    ]
    .map(String::from);
    let mut feed = ridectl::nats::follow(&stream, &filters, DeliverPolicy::All)
        .await
        .expect("follows the saga stream");
    let mut done: HashSet<(MessageKind, RideId)> = HashSet::new();
    while let Some(record) = feed.next().await.expect("reads the saga stream") {
        let Some(step) = record.step() else { continue };
        let Some(ride) = step.envelope.saga_id.clone() else {
            continue;
        };
        if !done.insert((step.kind(), ride.clone())) {
            continue;
        }
        let command: Message = match step.kind() {
            MessageKind::RideConfirmed => StartRide {}.into(),
            MessageKind::RideStarted => CompleteRide {
                distance_km: Some(3.0),
                duration_min: Some(10.0),
            }
            .into(),
            MessageKind::PaymentCaptured => {
                captured.send_modify(|n| *n += 1);
                continue;
            }
            _ => continue,
        };
        let envelope = Envelope::new(command, Some(ride), "test");
        let publish = jetstream::message::PublishMessage::build()
            .payload(envelope.encode().into())
            .message_id(envelope.id.as_str());
        js.send_publish(envelope.subject(), publish)
            .await
            .expect("publishes")
            .await
            .expect("stored");
    }
    panic!("the feed of the saga stream ended");
}

/// Waits until `n` rides have had their payment captured.
async fn wait_for_captures(
    seen: &mut watch::Receiver<usize>,
    driving: &tokio::task::JoinHandle<()>,
    n: usize,
) {
    let deadline = Instant::now() + TIMEOUT;
    while *seen.borrow_and_update() < n {
        assert!(!driving.is_finished(), "the task driving the rides stopped");
        assert!(
            Instant::now() < deadline,
            "{} of {n} rides captured within {TIMEOUT:?}",
            *seen.borrow()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), seen.changed()).await;
    }
}

/// Waits until every other service is idle and `SERVICE`'s consumer holds `expected` messages
/// no replica has taken; returns its pending count.
async fn wait_for_backlog(sys: &System, expected: u64) -> u64 {
    let others: Vec<Service> = Service::ALL.into_iter().filter(|s| *s != SERVICE).collect();
    wait_until_idle(sys, &others).await;
    let info = consumer_info(sys, SERVICE).await;
    assert_eq!(
        (info.num_pending, info.num_ack_pending),
        (expected, 0),
        "{SERVICE}'s consumer: pending, unacknowledged"
    );
    info.num_pending
}

async fn consumer_info(sys: &System, service: Service) -> jetstream::consumer::Info {
    let stream = sys
        .js
        .get_stream(SAGA_STREAM)
        .await
        .expect("the saga stream");
    stream
        .consumer_info(service.consumer_name())
        .await
        .expect("consumer info")
}

/// Waits until each of `services`' consumers has delivered everything and had it acknowledged.
async fn wait_until_idle(sys: &System, services: &[Service]) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut busy = Vec::new();
        for service in services {
            let info = consumer_info(sys, *service).await;
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                busy.push(format!(
                    "{service}: {} pending, {} unacknowledged",
                    info.num_pending, info.num_ack_pending
                ));
            }
        }
        if busy.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "consumers still busy: {busy:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the stream holds `n` sagas, every one finished and every consumer idle; returns
/// the stream's steps.
async fn wait_until_finished(sys: &System, n: usize) -> Vec<Step> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        wait_until_idle(sys, &Service::ALL).await;
        let steps = all_steps(sys).await;
        let sagas = fold(&steps);
        let finished = sagas.values().filter(|s| is_finished(s)).count();
        if sagas.len() == n && finished == n {
            return steps;
        }
        if Instant::now() >= deadline {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for saga in sagas.values().filter(|s| !is_finished(s)) {
                *states.entry(saga.label()).or_default() += 1;
            }
            panic!(
                "{finished} of {n} sagas finished within {TIMEOUT:?} ({} in the stream); the \
                 others: {states:?}",
                sagas.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Completed, captured once, the driver released and the receipt sent.
fn is_finished(saga: &Saga) -> bool {
    saga.state == SagaState::Ride(RideState::Completed)
        && saga.holds.iter().map(|h| h.captures).sum::<u32>() == 1
        && saga.driver_released
        && saga
            .notifications
            .iter()
            .any(|n| n.kind == NotificationKind::Receipt)
}

/// What must hold once `n` rides have finished: nothing stored, performed or applied twice,
/// nothing left pending or dead-lettered, the audit clean.
async fn check_every_saga_finished_once(sys: &System, steps: Vec<Step>, n: usize) {
    let sagas = fold(&steps);
    assert_eq!(sagas.len(), n, "one saga per ride");
    for saga in sagas.values() {
        assert!(is_finished(saga), "{}: {}", saga.ride_id, saga.label());
        let fare = saga.fare_cents.expect("a completed ride has a fare");
        assert_eq!(saga.captured_cents, fare, "{}", saga.ride_id);
    }

    // Each command once (the test sends one per subject), each event once.
    let mut commands: HashMap<String, usize> = HashMap::new();
    let mut events: HashMap<String, usize> = HashMap::new();
    for step in &steps {
        let subject = step.envelope.subject();
        if subject.starts_with("cmd.") {
            *commands.entry(subject).or_default() += 1;
        } else {
            *events.entry(step.envelope.id.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = commands.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        twice.is_empty(),
        "commands stored more than once: {twice:?}"
    );
    let twice: Vec<_> = events.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");
    for kind in [MessageKind::PaymentAuthorized, MessageKind::PaymentCaptured] {
        let stored = steps.iter().filter(|s| s.kind() == kind).count();
        assert_eq!(stored, n, "{kind} once per ride");
    }

    let report =
        ridectl::saga::audit::audit(&steps, time::OffsetDateTime::now_utc(), Duration::ZERO);
    assert_eq!((report.sagas, report.terminal), (n, n), "sagas, ended");
    assert!(
        report.violations.is_empty(),
        "audit violations: {:#?}",
        report.violations
    );

    // Payment applied each message of its consumer once: one inbox entry per stored message.
    let stream = sys
        .js
        .get_stream(SAGA_STREAM)
        .await
        .expect("the saga stream");
    let filters: Vec<String> = SERVICE
        .filter_subjects()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let consumed = ridectl::nats::scan(&stream, &filters, DeliverPolicy::All)
        .await
        .expect("scans payment's subjects")
        .len() as i64;
    assert_eq!(
        sys.scalar(SERVICE, "SELECT COUNT(*) FROM inbox").await,
        consumed,
        "{SERVICE}'s inbox: one entry per message it consumes"
    );

    crate::support::assert_each_effect_once(sys, &steps, n as i64).await;
}

async fn all_steps(sys: &System) -> Vec<Step> {
    let stream = sys
        .js
        .get_stream(SAGA_STREAM)
        .await
        .expect("the saga stream");
    ridectl::nats::scan_steps(&stream, &[], DeliverPolicy::All)
        .await
        .expect("scans the saga stream")
}

fn fold(steps: &[Step]) -> HashMap<String, Saga> {
    let mut sagas: HashMap<String, Saga> = HashMap::new();
    for step in steps {
        if let Some(ride) = step.ride() {
            sagas
                .entry(ride.to_string())
                .or_insert_with(|| Saga::new(ride))
                .apply(step);
        }
    }
    sagas
}

/// The counters a replica reports through the NATS service API.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(default)]
struct ReplicaStats {
    handled: u64,
    duplicates: u64,
    redelivered: u64,
    effects_performed: u64,
}

/// Each running replica of `service` (its `RIDESAGA_INSTANCE`) and its counters, from
/// `$SRV.INFO` and `$SRV.STATS`: the answers of `expected` replicas, or of all that answer
/// within `GATHER`.
async fn replica_stats(
    sys: &System,
    service: Service,
    expected: usize,
) -> BTreeMap<String, ReplicaStats> {
    let (info, stats) = (
        format!("$SRV.INFO.ridesaga-{service}"),
        format!("$SRV.STATS.ridesaga-{service}"),
    );
    let (infos, stats) = tokio::join!(gather(sys, &info, expected), gather(sys, &stats, expected));
    let instances: HashMap<String, String> = infos
        .into_iter()
        .filter_map(|info| {
            let id = info["id"].as_str()?.to_owned();
            let instance = info["metadata"]["instance"].as_str()?.to_owned();
            Some((id, instance))
        })
        .collect();
    stats
        .into_iter()
        .map(|stats| {
            let id = stats["id"].as_str().expect("a service id");
            let instance = instances
                .get(id)
                .unwrap_or_else(|| panic!("no $SRV.INFO answer from {id}"))
                .clone();
            let data = stats["endpoints"]
                .as_array()
                .and_then(|all| all.iter().find(|e| e["name"] == "status"))
                .map(|e| e["data"].clone())
                .expect("a status endpoint");
            let counters = serde_json::from_value(data).expect("the status counters");
            (instance, counters)
        })
        .collect()
}

/// The answers to one request on `subject`: `expected` of them, or all within `GATHER`.
async fn gather(sys: &System, subject: &str, expected: usize) -> Vec<serde_json::Value> {
    let client = sys.js.client();
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribes");
    client
        .publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .expect("requests");
    let mut out = Vec::new();
    let until = Instant::now() + GATHER;
    while out.len() < expected {
        let Ok(Some(answer)) = tokio::time::timeout_at(until, answers.next()).await else {
            break;
        };
        out.push(serde_json::from_slice(&answer.payload).expect("a JSON answer"));
    }
    out
}
