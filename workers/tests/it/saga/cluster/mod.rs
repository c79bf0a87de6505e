//! Many sagas at once on a three-node JetStream cluster (streams and consumers with three
//! replicas) while it loses nodes and leaders: a node killed and restarted and the saga stream's
//! leader moved (`ridectl step-down`), or the node leading a service's consumer killed mid-load.
//! Every ride must end completed with its payment captured once, each command and event stored
//! once, each gateway operation and notification performed once, nothing dead-lettered, and
//! `ridectl audit` clean.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;
use clap::Parser;
use ridectl::saga::{Saga, SagaState, Step};
use ridesaga_schemas::streams::SAGA_STREAM;
use ridesaga_schemas::*;
use ridesaga_testkit::NatsCluster;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::support::System;

/// Rides in one test; as many drivers, so none waits for a driver.
const RIDES: usize = 200;
/// New requests per round of the load.
const REQUESTS_PER_ROUND: usize = 10;
const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
/// Deadlines far longer than any outage here: a ride waits for the cluster, never expires.
const SETTINGS: &[(&str, &str)] = &[
    ("RIDESAGA_MATCH_DEADLINE", "90s"),
    ("RIDESAGA_CONFIRM_GRACE", "30s"),
];
/// Rides held back until the chaos is over, so that the load outlasts it however slow the
/// machine is.
const HELD_BACK: usize = 40;
/// How long the whole load may take, node outages included.
const LOAD_TIMEOUT: Duration = Duration::from_secs(240);
/// How long a look-up against the cluster is retried while it elects a leader.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// How far the load is: rides requested, and rides finished (completed, captured, driver
/// released, receipt sent).
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    requested: usize,
    finished: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_finish_once_through_a_node_crash_and_a_stream_leader_step_down() {
    let mut cluster = NatsCluster::start().await.expect("the cluster starts");
    let sys = System::start_on_cluster(&cluster, SETTINGS).await;
    drivers(&sys).await;
    let (progress, mut seen) = watch::channel(Progress::default());
    let (gate, allowed) = watch::channel(RIDES - HELD_BACK);
    let chaos = async {
        // The saga stream's leader: every publish and every consumer's reads go through it.
        wait_for_progress(&mut seen, "30 rides requested", |p| p.requested >= 30).await;
        let victim = cluster
            .index_of(&stream_leader(&sys).await)
            .expect("a node leads");
        cluster.stop(victim);
        eprintln!("chaos: killed n{victim}, the saga stream's leader");
        wait_for_progress(&mut seen, "30 rides finished with a node down", |p| {
            p.finished >= 30
        })
        .await;
        cluster.restart(victim).await.expect("the node restarts");
        eprintln!("chaos: restarted n{victim}");
        wait_for_progress(&mut seen, "half the rides finished", |p| {
            p.finished >= RIDES / 2
        })
        .await;
        let before = stream_leader(&sys).await;
        ridectl(&cluster, &["step-down", "--stream", SAGA_STREAM]).await;
        let after = stream_leader(&sys).await;
        eprintln!("chaos: the saga stream's leader moved from {before} to {after}");
        assert_ne!(before, after, "step-down moved the leader");
        assert!(
            seen.borrow().finished < RIDES,
            "the load ended before the step-down"
        );
        gate.send_replace(RIDES);
    };
    let (steps, ()) = tokio::join!(run_load(&sys, progress, allowed), chaos);
    check_every_saga_finished_once(&sys, steps).await;
    sys.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagas_finish_once_when_the_node_leading_a_service_consumer_crashes_mid_load() {
    let mut cluster = NatsCluster::start().await.expect("the cluster starts");
    let sys = System::start_on_cluster(&cluster, SETTINGS).await;
    drivers(&sys).await;
    let (progress, mut seen) = watch::channel(Progress::default());
    let (gate, allowed) = watch::channel(RIDES - HELD_BACK);
    let chaos = async {
        // Payment's consumer: holds and captures go through the node that leads it.
        wait_for_progress(&mut seen, "40 rides requested", |p| p.requested >= 40).await;
        let leader = consumer_leader(&sys, Service::Payment).await;
        let victim = cluster.index_of(&leader).expect("a node leads");
        cluster.stop(victim);
        eprintln!("chaos: killed {leader}, the payment consumer's leader");
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            let now_leading = consumer_leader(&sys, Service::Payment).await;
            if now_leading != leader {
                eprintln!("chaos: {now_leading} leads the payment consumer now");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the payment consumer kept {leader} as its leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        wait_for_progress(
            &mut seen,
            "half the rides finished with the node down",
            |p| p.finished >= RIDES / 2,
        )
        .await;
        cluster.restart(victim).await.expect("the node restarts");
        eprintln!("chaos: restarted {leader}");
        assert!(
            seen.borrow().finished < RIDES,
            "the load ended before the node came back"
        );
        gate.send_replace(RIDES);
    };
    let (steps, ()) = tokio::join!(run_load(&sys, progress, allowed), chaos);
    check_every_saga_finished_once(&sys, steps).await;
    sys.shutdown().await;
}

/// Registers `RIDES` drivers around the pickup, online, and waits until the driver service has
/// applied every registration and every availability.
async fn drivers(sys: &System) {
    for i in 0..RIDES {
        let at = (
            PICKUP.0 + (i % 20) as f64 * 0.001,
            PICKUP.1 + (i / 20) as f64 * 0.001,
        );
        sys.driver(&format!("d_c{i}"), &format!("Driver {i}"), at)
            .await;
    }
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let applied = sys.read("evt.driver.updated.*").await.len();
        if applied >= 2 * RIDES {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{applied} of {} driver updates applied",
            2 * RIDES
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Requests `RIDES` rides, `REQUESTS_PER_ROUND` a round, starts each once it is confirmed and
/// completes it once started, publishing `progress` each round. Returns the stream's steps once
/// every ride has finished.
/// Requests no more rides than `allowed` says at the time.
async fn run_load(
    sys: &System,
    progress: watch::Sender<Progress>,
    allowed: watch::Receiver<usize>,
) -> Vec<Step> {
    let rides: Vec<RideId> = (0..RIDES).map(|_| RideId::generate()).collect();
    let mut requested = 0;
    let mut started = HashSet::new();
    let mut completed = HashSet::new();
    let deadline = Instant::now() + LOAD_TIMEOUT;
    loop {
        let upto = (requested + REQUESTS_PER_ROUND).min(*allowed.borrow());
        for (i, ride) in rides.iter().enumerate().take(upto).skip(requested) {
            sys.request_as(ride, &format!("u_c{i}"), PICKUP, DROPOFF, "tok_visa")
                .await;
        }
        requested = upto;
        let steps = all_steps(sys).await;
        let sagas = fold(&steps);
        let mut finished = 0;
        for ride in &rides[..requested] {
            let Some(saga) = sagas.get(ride.as_str()) else {
                continue;
            };
            match saga.state {
                SagaState::Ride(RideState::Confirmed) if started.insert(ride.clone()) => {
                    sys.command(StartRide {}, Some(ride)).await;
                }
                SagaState::Ride(RideState::Started) if completed.insert(ride.clone()) => {
                    let complete = CompleteRide {
                        distance_km: Some(3.0),
                        duration_min: Some(10.0),
                    };
                    sys.command(complete, Some(ride)).await;
                }
                _ => {}
            }
            if is_finished(saga) {
                finished += 1;
            }
        }
        progress.send_replace(Progress {
            requested,
            finished,
        });
        if finished == RIDES {
            return steps;
        }
        if Instant::now() >= deadline {
            let mut states: BTreeMap<String, usize> = BTreeMap::new();
            for ride in &rides {
                let label = sagas
                    .get(ride.as_str())
                    .map_or("not stored".to_string(), |s| s.label());
                *states.entry(label).or_default() += 1;
            }
            panic!("{finished} of {RIDES} rides finished within {LOAD_TIMEOUT:?}: {states:?}");
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

/// What must hold once the load is over: every saga finished, nothing stored, performed or
/// applied twice, nothing dead-lettered, the audit clean.
async fn check_every_saga_finished_once(sys: &System, steps: Vec<Step>) {
    wait_until_consumers_are_idle(sys).await;
    // Everything is acknowledged now: read again, so late duplicates would show.
    let steps = {
        let again = all_steps(sys).await;
        assert!(again.len() >= steps.len());
        again
    };
    let sagas = fold(&steps);
    assert_eq!(sagas.len(), RIDES, "one saga per ride");
    for saga in sagas.values() {
        assert!(is_finished(saga), "{}: {}", saga.ride_id, saga.label());
        let fare = saga.fare_cents.expect("a completed ride has a fare");
        assert_eq!(saga.captured_cents, fare, "{}", saga.ride_id);
    }

    // Each command once per ride (a publish retried across a leader change is deduplicated),
    // each event once (the relays' republishes too).
    // The test sends each command once per subject (`cmd.ride.start.<ride>`, ...).
    let mut commands: HashMap<String, usize> = HashMap::new();
    let mut event_ids: HashMap<String, usize> = HashMap::new();
    for step in &steps {
        let envelope = &step.envelope;
        let subject = envelope.subject();
        if subject.starts_with("cmd.") {
            *commands.entry(subject).or_default() += 1;
        } else {
            *event_ids.entry(envelope.id.to_string()).or_default() += 1;
        }
    }
    let twice: Vec<_> = commands.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "commands stored more than once: {twice:?}"
    );
    let twice: Vec<_> = event_ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events stored more than once: {twice:?}");

    let report =
        ridectl::saga::audit::audit(&steps, time::OffsetDateTime::now_utc(), Duration::ZERO);
    assert_eq!(report.sagas, RIDES);
    assert!(
        report.violations.is_empty(),
        "audit violations: {:#?}",
        report.violations
    );

    crate::support::assert_each_effect_once(sys, &steps, RIDES as i64).await;
}

/// Waits until every service's consumer has delivered everything and had it acknowledged.
async fn wait_until_consumers_are_idle(sys: &System) {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        let mut busy = Vec::new();
        for service in Service::ALL {
            let info = retry("consumer info", || async {
                let stream = sys.js.get_stream(SAGA_STREAM).await?;
                Ok::<_, async_nats::Error>(stream.consumer_info(service.consumer_name()).await?)
            })
            .await;
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every step of the saga stream, read again while the cluster elects a leader.
async fn all_steps(sys: &System) -> Vec<Step> {
    retry("a scan of the saga stream", || async {
        let stream = sys.js.get_stream(SAGA_STREAM).await?;
        ridectl::nats::scan_steps(&stream, &[], DeliverPolicy::All)
            .await
            .map_err(async_nats::Error::from)
    })
    .await
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

/// The `server_name` of the saga stream's leader.
async fn stream_leader(sys: &System) -> String {
    retry("the saga stream's leader", || async {
        let stream = sys.js.get_stream(SAGA_STREAM).await?;
        stream
            .cached_info()
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .ok_or_else(|| "no leader yet".into())
    })
    .await
}

/// The `server_name` of the leader of `service`'s consumer.
async fn consumer_leader(sys: &System, service: Service) -> String {
    retry("a consumer's leader", || async {
        let stream = sys.js.get_stream(SAGA_STREAM).await?;
        let info = stream.consumer_info(service.consumer_name()).await?;
        info.cluster
            .and_then(|c| c.leader)
            .ok_or_else(|| "no leader yet".into())
    })
    .await
}

/// Runs `ridectl ARGS...` in-process against the cluster until it succeeds (a command may land
/// in an election).
async fn ridectl(cluster: &NatsCluster, args: &[&str]) {
    let urls = cluster.urls();
    let seed = cluster
        .credentials()
        .expect("the cluster has identities")
        .seed_file(ridesaga_testkit::Identity::Admin)
        .display()
        .to_string();
    let mut argv = vec![
        "ridectl", "--server", &urls, "--nkey", &seed, "--output", "json",
    ];
    argv.extend_from_slice(args);
    retry(&format!("ridectl {}", args.join(" ")), || async {
        let cli = ridectl::cli::Cli::try_parse_from(&argv).expect("the arguments parse");
        ridectl::run(cli).await.map_err(|e| format!("{e:#}").into())
    })
    .await
}

/// `attempt` until it succeeds, for up to `RETRY_FOR`.
async fn retry<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, async_nats::Error>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if Instant::now() < deadline => {
                eprintln!("{what} failed, again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what} kept failing for {RETRY_FOR:?}: {e}"),
        }
    }
}

/// Waits until the load's progress satisfies `done`; fails if the load ends first.
async fn wait_for_progress(
    seen: &mut watch::Receiver<Progress>,
    what: &str,
    done: impl FnMut(&Progress) -> bool,
) {
    let waited = tokio::time::timeout(LOAD_TIMEOUT, seen.wait_for(done))
        .await
        .map(|reached| reached.is_ok());
    match waited {
        Ok(true) => {}
        Ok(false) => panic!("the load ended before {what}"),
        Err(_) => panic!("no {what} within {LOAD_TIMEOUT:?}: {:?}", *seen.borrow()),
    }
}
