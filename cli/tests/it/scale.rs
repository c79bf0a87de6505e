//! `ridectl scale plan` against real nats-servers: the lag it reads from the monitoring port the
//! way KEDA's nats-jetstream scaler does equals what `ridectl consumers` reports (pending + ack
//! pending) and the worker's own `ridesaga_consumer_lag` gauge, for a backlog behind a stopped
//! worker and behind a running worker that cannot acknowledge; missing things are named; and on
//! a three-node cluster the consumer leader's node is the one read.

use std::time::Duration;

use crate::common::{Harness, assert_code, json, run_ridectl, stderr, stdout};
use async_nats::jetstream::consumer::pull;
use futures_util::StreamExt;
use ridectl::monitor::{self, MonitorUrl};
use ridesaga_schemas::Service;
use ridesaga_schemas::streams::{ProvisionOptions, SAGA_STREAM, provision};
use ridesaga_testkit::system::System;
use ridesaga_testkit::{Identity, NatsCluster};
use serde_json::Value;
use tempfile::TempDir;

/// Ride requests queued for the ride service.
const RIDES: u64 = 5;

/// The workers' settings in these tests: a short match deadline.
const SETTINGS: &[(&str, &str)] = &[("RIDESAGA_MATCH_DEADLINE", "1s")];

fn free_port() -> u16 {
    ridesaga_testkit::ports::free_one().expect("a free port")
}

async fn request_rides(env: &[(String, String)], n: u64) {
    for i in 0..n {
        let rider = format!("u_scale_{i}");
        let out = run_ridectl(
            env,
            &[
                "ride",
                "request",
                "--rider",
                &rider,
                "--from",
                "52.5200,13.4050",
                "--to",
                "52.5100,13.4300",
                "--card",
                "tok_visa",
            ],
        )
        .await;
        assert_code(&out, 0);
    }
}

/// Fetches `n` messages of a consumer and leaves them unacknowledged (ack pending).
async fn fetch_without_ack(js: &async_nats::jetstream::Context, consumer: &str, n: usize) {
    let stream = js.get_stream(SAGA_STREAM).await.expect("saga stream");
    let consumer: async_nats::jetstream::consumer::Consumer<pull::Config> =
        stream.get_consumer(consumer).await.expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(n)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut got = 0;
    while let Some(message) = batch.next().await {
        message.expect("a message");
        got += 1;
    }
    assert_eq!(got, n, "fetched messages");
}

/// The consumer's leader as the JetStream API reports it; none while an election runs (the
/// request may then time out).
async fn consumer_leader(js: &async_nats::jetstream::Context, consumer: &str) -> Option<String> {
    let stream = js.get_stream(SAGA_STREAM).await.ok()?;
    let info = stream.consumer_info(consumer).await.ok()?;
    info.cluster.and_then(|c| c.leader)
}

/// `scale plan -o json` against these monitoring URLs, with extra flags.
async fn plan(
    env: &[(String, String)],
    monitors: &[String],
    extra: &[&str],
) -> std::process::Output {
    let monitor = monitors.join(",");
    let mut args = vec!["scale", "plan", "-o", "json", "--monitor", &monitor];
    args.extend_from_slice(extra);
    run_ridectl(env, &args).await
}

fn service<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let list = doc
        .as_array()
        .or_else(|| doc["services"].as_array())
        .expect("a list of services");
    list.iter()
        .find(|row| row["service"] == name)
        .unwrap_or_else(|| panic!("no row for {name} in {doc}"))
}

/// (lag, pending, ack pending) of a service in `scale plan` or `consumers` JSON.
fn figures(doc: &Value, name: &str) -> (u64, u64, u64) {
    let row = service(doc, name);
    let n = |key: &str| {
        row[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} of {name} in {row}"))
    };
    (n("lag"), n("pending"), n("ack_pending"))
}

async fn consumers(env: &[(String, String)]) -> Value {
    let out = run_ridectl(env, &["consumers", "-o", "json"]).await;
    assert_code(&out, 0);
    json(&out)
}

/// The worker's `ridesaga_consumer_lag` gauge from its `/metrics`, -1 while it has none (the
/// worker has not read its consumer's state yet).
async fn metric_lag(port: u16) -> i64 {
    let url: MonitorUrl = format!("http://127.0.0.1:{port}").parse().unwrap();
    let body = monitor::get(&url, "/metrics", Duration::from_secs(5))
        .await
        .expect("the worker serves /metrics");
    let text = String::from_utf8(body).expect("UTF-8 metrics");
    let Some(line) = text
        .lines()
        .find(|line| line.starts_with("ridesaga_consumer_lag{"))
    else {
        return -1;
    };
    line.rsplit(' ')
        .next()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no value in {line:?}"))
}

/// Polls `check` every 250 ms until it returns true, failing after `limit` with `what`.
async fn eventually<F: AsyncFnMut() -> bool>(limit: Duration, what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Holds the ride database's writer lock (what a replica holds while it writes a batch), so
/// the running ride worker can pull messages but never finishes, and so never acknowledges,
/// one. Released when dropped.
struct WriterLockHeld(std::fs::File);

impl WriterLockHeld {
    async fn take(data: &TempDir, service: Service) -> WriterLockHeld {
        let path = data
            .path()
            .join(format!("{}.db-writer.lock", service.name()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .expect("opens the writer lock file");
        tokio::task::spawn_blocking(move || {
            file.lock().expect("takes the writer lock");
            WriterLockHeld(file)
        })
        .await
        .expect("the lock task completes")
    }
}

impl Drop for WriterLockHeld {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lag_keda_reads_is_pending_plus_ack_pending_as_consumers_and_the_worker_report_it() {
    let mut sys = System::without_workers(SETTINGS).await;
    let server = sys.server.as_ref().expect("a server of its own");
    let (admin, monitors, node) = (
        sys.env(Identity::Admin),
        vec![server.monitor_url()],
        server.name().to_owned(),
    );
    for service in [
        Service::Driver,
        Service::Fraud,
        Service::Payment,
        Service::Notification,
    ] {
        sys.start_worker(service);
    }

    // Behind a stopped ride worker: the requests wait, one of them fetched and not acked.
    request_rides(&admin, RIDES).await;
    fetch_without_ack(&sys.js, "ride-worker", 1).await;
    let out = plan(&admin, &monitors, &["--lag-threshold", "2"]).await;
    assert_code(&out, 0);
    let keda = json(&out);
    assert_eq!(figures(&keda, "ride"), (RIDES, RIDES - 1, 1));
    assert_eq!(
        figures(&consumers(&admin).await, "ride"),
        (RIDES, RIDES - 1, 1)
    );
    let ride = service(&keda, "ride");
    assert_eq!(ride["replicas"], 3, "ceil(5 / 2): {ride}");
    assert_eq!(ride["node"], node);
    for other in ["driver", "fraud", "payment", "notification"] {
        assert_eq!(figures(&keda, other).0, 0, "{other}");
        assert_eq!(service(&keda, other)["replicas"], 1, "{other}: the minimum");
    }
    assert_eq!(keda["lag_threshold"], 2);
    let out = plan(&admin, &monitors, &["--lag-threshold", "2", "--max", "2"]).await;
    assert_eq!(
        service(&json(&out), "ride")["replicas"],
        2,
        "clamped to --max"
    );
    let out = run_ridectl(
        &admin,
        &["scale", "plan", "-o", "table", "--monitor", &monitors[0]],
    )
    .await;
    assert_code(&out, 0);
    let table = stdout(&out);
    let ride_line = table
        .lines()
        .find(|l| l.starts_with("ride "))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = ride_line.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        ["ride", "ride-worker", "5", "4", "1", "1"],
        "{table}"
    );

    // The ride worker starts on a paused consumer, its writer lock is taken, and the consumer
    // resumes: the worker pulls everything and acknowledges nothing.
    let stream = sys.js.get_stream(SAGA_STREAM).await.unwrap();
    let later = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    stream.pause_consumer("ride-worker", later).await.unwrap();
    let port = free_port();
    sys.start_worker_with(
        Service::Ride,
        &[("RIDESAGA_HTTP_ADDR", format!("127.0.0.1:{port}"))],
    );
    eventually(
        Duration::from_secs(30),
        "the ride worker's lag gauge",
        async || {
            let url: MonitorUrl = format!("http://127.0.0.1:{port}").parse().unwrap();
            monitor::get(&url, "/metrics", Duration::from_secs(1))
                .await
                .is_ok()
                && metric_lag(port).await >= 0
        },
    )
    .await;
    let held = WriterLockHeld::take(&sys.dir, Service::Ride).await;
    stream.resume_consumer("ride-worker").await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the worker to pull the backlog",
        async || {
            let keda = json(&plan(&admin, &monitors, &[]).await);
            figures(&keda, "ride") == (RIDES, 0, RIDES)
        },
    )
    .await;
    // The gauge refreshes every 5 s: after that, it has read the consumer in this state, in
    // which a gauge of pending messages alone would read 0.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let keda = json(&plan(&admin, &monitors, &[]).await);
    assert_eq!(figures(&keda, "ride"), (RIDES, 0, RIDES), "{keda}");
    assert_eq!(figures(&consumers(&admin).await, "ride"), (RIDES, 0, RIDES));
    assert_eq!(metric_lag(port).await, RIDES as i64);

    // Once the worker can write, it works the backlog off and all three readings reach 0.
    drop(held);
    eventually(
        Duration::from_secs(60),
        "all readings of the ride lag to reach 0",
        async || {
            let keda = figures(&json(&plan(&admin, &monitors, &[]).await), "ride").0;
            let listed = figures(&consumers(&admin).await, "ride").0;
            keda == 0 && listed == 0 && metric_lag(port).await == 0
        },
    )
    .await;

    sys.stop_worker(Service::Ride).await;
    sys.shutdown().await;
}

#[tokio::test]
async fn a_missing_consumer_is_an_error_for_its_service_and_a_missing_account_or_stream_fails() {
    let h = Harness::provisioned().await;
    let monitors = vec![h.server.monitor_url()];
    let stream = h.js.get_stream(SAGA_STREAM).await.unwrap();
    stream.delete_consumer("fraud-worker").await.unwrap();

    let out = plan(&h.env(), &monitors, &[]).await;
    assert_code(&out, 0);
    let keda = json(&out);
    let fraud = service(&keda, "fraud");
    assert_eq!(
        fraud["error"], "consumer fraud-worker not found on stream RIDESAGA",
        "{fraud}"
    );
    assert!(
        fraud["replicas"].is_null() && fraud["lag"].is_null(),
        "{fraud}"
    );
    assert_eq!(figures(&keda, "ride"), (0, 0, 0));
    assert!(
        stderr(&out).contains("no consumer on RIDESAGA for: fraud"),
        "{}",
        stderr(&out)
    );
    let out = run_ridectl(
        &h.env(),
        &["scale", "plan", "-o", "table", "--monitor", &monitors[0]],
    )
    .await;
    assert!(
        stdout(&out).contains("fallback  error: consumer fraud-worker not found"),
        "{}",
        stdout(&out)
    );

    let out = plan(&h.env(), &monitors, &["--account", "RIDERS"]).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("error: account RIDERS not found"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    let bare = Harness::bare().await;
    let out = plan(&bare.env(), &[bare.server.monitor_url()], &[]).await;
    assert_code(&out, 1);
    let text = stderr(&out);
    assert!(
        text.contains("error: stream RIDESAGA not found in account RIDESAGA")
            && text.contains("ridectl provision"),
        "{text}"
    );

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = plan(&h.env(), &[closed], &[]).await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("no answer from the monitoring port"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_consumer_leaders_node_is_read_and_followed_when_it_moves() {
    let cluster = NatsCluster::start().await.expect("the cluster starts");
    let js = cluster.jetstream().await.expect("connects");
    provision(&js, ProvisionOptions { replicas: 3 })
        .await
        .expect("provisions with three replicas");
    let urls = cluster.env(Identity::Admin);
    let monitors = cluster.monitor_urls();
    request_rides(&urls, RIDES).await;
    fetch_without_ack(&js, "ride-worker", 2).await;

    let first_leader = consumer_leader(&js, "ride-worker")
        .await
        .expect("the consumer has a leader");
    let out = plan(&urls, &monitors, &[]).await;
    assert_code(&out, 0);
    let keda = json(&out);
    assert_eq!(keda["clustered"], true);
    assert_eq!(figures(&keda, "ride"), (RIDES, RIDES - 2, 2));
    assert_eq!(service(&keda, "ride")["node"], first_leader.as_str());
    assert_eq!(
        figures(&consumers(&urls).await, "ride"),
        (RIDES, RIDES - 2, 2)
    );

    // A follower alone does not know the figures; on one machine its peers cannot be found
    // from it (every node advertises 127.0.0.1, and the monitoring ports differ), so the
    // service gets an error naming the leader.
    let leader_index = cluster.index_of(&first_leader).unwrap();
    let follower = monitors[(leader_index + 1) % monitors.len()].clone();
    let out = plan(&urls, &[follower], &[]).await;
    assert_code(&out, 0);
    let row = service(&json(&out), "ride").clone();
    let error = row["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("({first_leader})")) && error.contains("not among the nodes"),
        "{row}"
    );
    assert!(
        stderr(&out).contains("--monitor URL1,URL2,URL3"),
        "{}",
        stderr(&out)
    );

    // The leadership moves: the new leader's node is read, with the same lag.
    let client = cluster.client().await.unwrap();
    client
        .request(
            format!("$JS.API.CONSUMER.LEADER.STEPDOWN.{SAGA_STREAM}.ride-worker"),
            "".into(),
        )
        .await
        .expect("the consumer leader steps down");
    let mut new_leader = String::new();
    eventually(
        Duration::from_secs(20),
        "a new consumer leader",
        async || {
            new_leader = consumer_leader(&js, "ride-worker")
                .await
                .unwrap_or_default();
            !new_leader.is_empty() && new_leader != first_leader
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "scale plan to read the new leader",
        async || {
            let keda = json(&plan(&urls, &monitors, &[]).await);
            service(&keda, "ride")["node"] == new_leader.as_str()
                && figures(&keda, "ride") == (RIDES, RIDES - 2, 2)
        },
    )
    .await;
}
