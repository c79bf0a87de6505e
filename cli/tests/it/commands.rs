//! `ridectl` against a real nats-server (or a three-node cluster), without workers:
//! provisioning, inspection, input validation, publishing, dead letters, service discovery, the
//! audit, leader step-down, and the exit codes that need no saga (1 error, 2 usage, 4 timeout).

use std::time::Duration;

use crate::common::{
    Harness, assert_code, json, json_lines, run_ridectl, stderr, stdout, url_only,
};
use async_nats::service::ServiceExt;
use bytes::Bytes;
use ridesaga_schemas::streams::SAGA_STREAM;
use ridesaga_schemas::{DeadLetter, Envelope, RideId, Service, StartRide, Timestamp};
use ridesaga_testkit::Identity;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_name_the_field_and_publish_nothing() {
    let h = Harness::provisioned().await;
    let out = h
        .ridectl(&[
            "ride", "request", "--rider", "u_1", "--from", "91,0", "--to", "1,1", "--card",
            "tok_visa",
        ])
        .await;
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("--from") && err.contains("latitude out of range: 91"),
        "{err}"
    );

    let out = h
        .ridectl(&["ride", "start", "r_1", "--expect", "flying"])
        .await;
    assert_code(&out, 2);
    assert!(stderr(&out).contains("unknown state"));
    let out = h.ridectl(&["ride", "start", "r.1"]).await;
    assert_code(&out, 2);
    let out = h
        .ridectl(&["ride", "start", "r_1", "--wait", "--timeout", "30"])
        .await;
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no unit"));
    let out = h.ridectl(&["driver", "move", "d_1", "--at", "0,181"]).await;
    assert_code(&out, 2);
    assert!(stderr(&out).contains("longitude out of range"));

    assert_eq!(h.saga_messages().await, 0, "nothing may be published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_exits_1_with_the_cause_and_a_hint() {
    let out = run_ridectl(&url_only("nats://127.0.0.1:1"), &["streams"]).await;
    assert_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("error: could not connect to nats://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_are_generated_for_a_shell() {
    let out = run_ridectl(&[], &["completions", "bash"]).await;
    assert_code(&out, 0);
    assert!(stdout(&out).contains("_ridectl"));
    let out = run_ridectl(&[], &["completions", "tcsh"]).await;
    assert_code(&out, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_is_idempotent_and_streams_and_consumers_show_the_result() {
    let h = Harness::bare().await;
    let out = h.ridectl(&["streams"]).await;
    assert_code(&out, 0);
    assert_eq!(json(&out), serde_json::json!([]));

    for _ in 0..2 {
        let out = h.ridectl(&["provision"]).await;
        assert_code(&out, 0);
        // The five service consumers and the ride service's positions consumer.
        assert_eq!(json(&out)["consumers"].as_array().unwrap().len(), 6);
    }

    let out = h.ridectl(&["streams"]).await;
    assert_code(&out, 0);
    let streams = json(&out);
    let saga = &streams
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == SAGA_STREAM)
        .unwrap();
    assert_eq!(saga["subjects"], serde_json::json!(["cmd.>", "evt.>"]));
    assert_eq!(saga["messages"], 0);

    let out = h.ridectl(&["consumers", "-o", "table"]).await;
    assert_code(&out, 0);
    assert!(stdout(&out).contains("payment-worker"));
    let out = h.ridectl(&["consumers"]).await;
    let consumers = json(&out);
    let consumers = consumers.as_array().unwrap();
    assert_eq!(consumers.len(), 5);
    assert!(
        consumers
            .iter()
            .all(|c| c["exists"] == true && c["lag"] == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_prints_its_ride_id_and_the_same_id_twice_is_one_command() {
    let h = Harness::provisioned().await;
    let request = [
        "ride",
        "request",
        "--rider",
        "u_1",
        "--from",
        "52.52,13.40",
        "--to",
        "52.50,13.45",
        "--card",
        "tok_visa",
        "--id",
        "r_dup",
    ];
    let first = h.ridectl(&request).await;
    assert_code(&first, 0);
    let first = json(&first);
    assert_eq!(first["ride_id"], "r_dup");
    assert_eq!(first["duplicate"], false);
    let second = json(&h.ridectl(&request).await);
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["message_id"], first["message_id"]);
    assert_eq!(h.saga_messages().await, 1);

    let mut table = request.to_vec();
    table.extend(["-o", "table"]);
    let at = table.iter().position(|a| *a == "r_dup").unwrap();
    table[at] = "r_other";
    let out = h.ridectl(&table).await;
    assert_eq!(stdout(&out).trim(), "r_other");

    let out = h
        .ridectl(&["ride", "show", "r_dup", "--expect", "pending"])
        .await;
    assert_code(&out, 0);
    assert_eq!(json(&out)["rider_id"], "u_1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_carry_a_trace_context_and_saga_trace_prints_the_trace() {
    let h = Harness::provisioned().await;
    let request = |ride: &'static str| {
        [
            "ride",
            "request",
            "--rider",
            "u_1",
            "--from",
            "52.52,13.40",
            "--to",
            "52.50,13.45",
            "--card",
            "tok_visa",
            "--id",
            ride,
        ]
    };
    // Continuing a trace given to it.
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut continued = request("r_traced").to_vec();
    continued.extend(["--traceparent", given, "--tracestate", "vendor=1"]);
    assert_code(&h.ridectl(&continued).await, 0);
    let out = h.ridectl(&["saga", "trace", "r_traced"]).await;
    assert_code(&out, 0);
    let trace = json(&out);
    assert_eq!(trace["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    let step = trace["steps"][0]["traceparent"].as_str().unwrap();
    assert!(
        step.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{step}"
    );
    assert!(
        !step.contains("00f067aa0ba902b7"),
        "a span of its own under the given one"
    );
    // Without one, a ride's commands are in the ride's own trace.
    assert_code(&h.ridectl(&request("r_own")).await, 0);
    assert_code(&h.ridectl(&["ride", "cancel", "r_own"]).await, 0);
    let trace = json(&h.ridectl(&["saga", "trace", "r_own"]).await);
    let own = ridesaga_schemas::TraceContext::for_saga(&RideId::parse("r_own").unwrap());
    assert_eq!(trace["trace_id"], own.trace_id.to_hex());
    assert_eq!(trace["trace_ids"].as_array().unwrap().len(), 1, "{trace}");
    let out = h.ridectl(&["saga", "trace", "r_own", "-o", "table"]).await;
    assert!(
        stdout(&out).contains(&format!("trace: {}", own.trace_id)),
        "{}",
        stdout(&out)
    );
    // A malformed one is refused before anything is published.
    let before = h.saga_messages().await;
    let mut bad = request("r_bad").to_vec();
    bad.extend(["--traceparent", "00-nothex-00f067aa0ba902b7-01"]);
    let out = h.ridectl(&bad).await;
    assert_code(&out, 1);
    assert!(stderr(&out).contains("--traceparent"), "{}", stderr(&out));
    assert_eq!(h.saga_messages().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_an_unknown_ride_is_refused_before_anything_is_published() {
    let h = Harness::provisioned().await;
    for command in ["cancel", "arrive", "start", "complete", "show"] {
        let out = h.ridectl(&["ride", command, "r_missing"]).await;
        assert_code(&out, 1);
        assert!(
            stderr(&out).contains("ride r_missing does not exist"),
            "{}",
            stderr(&out)
        );
    }
    let out = h.ridectl(&["saga", "trace", "r_missing"]).await;
    assert_code(&out, 1);
    assert_eq!(h.saga_messages().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_without_workers_times_out_with_code_4() {
    let h = Harness::provisioned().await;
    let out = h
        .ridectl(&[
            "ride",
            "request",
            "--rider",
            "u_1",
            "--from",
            "1,1",
            "--to",
            "1.01,1",
            "--card",
            "tok_visa",
            "--wait",
            "--timeout",
            "1s",
        ])
        .await;
    assert_code(&out, 4);
    let err = stderr(&out);
    assert!(
        err.contains("timed out after 1.0s") && err.contains("pending"),
        "{err}"
    );
    assert!(
        err.contains("cmd.ride.request."),
        "the command step is shown: {err}"
    );

    let out = h
        .ridectl(&["driver", "online", "d_1", "--wait", "--timeout", "300ms"])
        .await;
    assert_code(&out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_finds_running_workers_through_the_service_api() {
    let h = Harness::provisioned().await;
    // As the ride worker, the one identity allowed to answer for ridesaga-ride.
    let client = h
        .server
        .client_as(Identity::Worker(Service::Ride))
        .await
        .unwrap();
    let service = client
        .service_builder()
        .description("ride worker")
        .metadata(
            [("service", "ride"), ("instance", "ride-test-1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .stats_handler(|_, _| {
            serde_json::json!({"handled": 7, "failed": 1, "redelivered": 2,
                               "dead_lettered": 0, "in_flight": 3})
        })
        .start("ridesaga-ride", "0.1.0")
        .await
        .unwrap();
    let _endpoint = service.endpoint("status").await.unwrap();
    client.flush().await.unwrap();

    let out = h.ridectl(&["services"]).await;
    assert_code(&out, 0);
    let found = json(&out);
    let found = found.as_array().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["service"], "ride");
    assert_eq!(found[0]["instance"], "ride-test-1");
    assert_eq!(found[0]["version"], "0.1.0");
    assert_eq!(found[0]["stats"]["handled"], 7);
    assert!(stderr(&out).contains("driver, fraud, payment, notification"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_shown_and_replayed_with_a_fresh_message_id() {
    let h = Harness::provisioned().await;
    let ride = RideId::parse("r_dead").unwrap();
    let original = Envelope::new(StartRide {}, Some(ride), "ridectl");
    let record = DeadLetter {
        service: "ride".into(),
        instance: "ride-1".into(),
        subject: original.subject(),
        stream_sequence: 42,
        deliveries: 6,
        message_id: Some(original.id.to_string()),
        reason: "permanent: ride does not exist".into(),
        payload: String::from_utf8(original.encode()).unwrap(),
        failed_at: Timestamp::now(),
    };
    // Published as the ride worker, the one identity allowed to dead-letter for ride.
    let ride_worker = async_nats::jetstream::new(
        h.server
            .client_as(Identity::Worker(Service::Ride))
            .await
            .unwrap(),
    );
    let ack = ride_worker
        .publish(
            DeadLetter::subject_for("ride", 42),
            Bytes::from(serde_json::to_vec(&record).unwrap()),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let seq = ack.sequence.to_string();

    let listed = json(&h.ridectl(&["dlq", "list"]).await);
    assert_eq!(listed[0]["reason"], "permanent: ride does not exist");
    assert_eq!(listed[0]["subject"], "cmd.ride.start.r_dead");
    assert_eq!(listed[0]["source"], "record");

    let shown = json(&h.ridectl(&["dlq", "show", &seq]).await);
    assert_eq!(shown["original"]["id"], original.id.as_str());

    let replayed = h.ridectl(&["dlq", "replay", &seq]).await;
    assert_code(&replayed, 0);
    let replayed = json(&replayed);
    assert_eq!(
        replayed["message_id"],
        format!("{}-replay-{seq}", original.id)
    );
    assert_eq!(replayed["duplicate"], false);
    let again = json(&h.ridectl(&["dlq", "replay", &seq]).await);
    assert_eq!(
        again["duplicate"], true,
        "a second replay is dropped by the stream"
    );
    assert_eq!(h.saga_messages().await, 1);

    let out = h.ridectl(&["dlq", "show", "999"]).await;
    assert_code(&out, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_what_is_stored_with_a_filter() {
    let h = Harness::provisioned().await;
    for (ride, rider) in [("r_a", "u_a"), ("r_b", "u_b")] {
        let out = h
            .ridectl(&[
                "ride", "request", "--rider", rider, "--from", "1,1", "--to", "1,1.01", "--card",
                "tok_visa", "--id", ride,
            ])
            .await;
        assert_code(&out, 0);
    }
    let out = h.ridectl(&["events", "tail", "--no-follow"]).await;
    assert_eq!(json_lines(&out).len(), 2);
    let out = h
        .ridectl(&["events", "tail", "*.*.*.r_b", "--no-follow"])
        .await;
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["subject"], "cmd.ride.request.r_b");
    assert_eq!(lines[0]["envelope"]["data"]["rider_id"], "u_b");
    let out = h
        .ridectl(&[
            "events",
            "tail",
            "--since",
            "1m",
            "--no-follow",
            "-o",
            "table",
        ])
        .await;
    assert_eq!(stdout(&out).lines().count(), 2);

    let list = json(&h.ridectl(&["saga", "list", "--state", "active"]).await);
    assert_eq!(list.as_array().unwrap().len(), 2);
    let list = json(
        &h.ridectl(&["saga", "list", "--state", "stuck", "--stuck-after", "0s"])
            .await,
    );
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_passes_on_an_empty_log_and_fails_on_a_stuck_saga() {
    let h = Harness::provisioned().await;
    let out = h.ridectl(&["audit"]).await;
    assert_code(&out, 0);
    assert_eq!(json(&out)["violations"], serde_json::json!([]));

    let out = h
        .ridectl(&[
            "ride", "request", "--rider", "u_1", "--from", "1,1", "--to", "1,1.01", "--card",
            "tok_visa", "--id", "r_stuck",
        ])
        .await;
    assert_code(&out, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = h.ridectl(&["audit"]).await;
    assert_code(&out, 0); // in flight: only safety invariants apply
    let out = h.ridectl(&["audit", "--settle", "100ms"]).await;
    assert_code(&out, 1);
    let report = json(&out);
    assert_eq!(report["violations"][0]["ride_id"], "r_stuck");
    assert_eq!(report["violations"][0]["invariant"], 1);

    // Every read above went through a consumer of its own, deleted once read: only the
    // services' durable consumers remain.
    let mut stream = h.js.get_stream("RIDESAGA").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.consumer_count, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_on_a_single_server_fails_saying_a_cluster_is_needed() {
    let h = Harness::provisioned().await;
    for args in [
        &["step-down"][..],
        &["step-down", "--consumer", "payment-worker"],
    ] {
        let out = h.ridectl(args).await;
        assert_code(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("single replica") && err.contains("scripts/up --cluster"),
            "{err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_moves_the_leader_of_a_stream_and_of_a_consumer_on_a_cluster() {
    let cluster = ridesaga_testkit::NatsCluster::start().await.unwrap();
    let js = cluster.jetstream().await.unwrap();
    ridesaga_schemas::streams::provision(
        &js,
        ridesaga_schemas::streams::ProvisionOptions { replicas: 3 },
    )
    .await
    .unwrap();
    let env = cluster.env(Identity::Admin);
    for (args, consumer) in [
        (&["step-down"][..], None),
        (
            &[
                "step-down",
                "--stream",
                SAGA_STREAM,
                "--consumer",
                "payment-worker",
            ],
            Some("payment-worker"),
        ),
    ] {
        let out = run_ridectl(&env, args).await;
        assert_code(&out, 0);
        let report = json(&out);
        assert_eq!(report["stream"], SAGA_STREAM);
        assert_eq!(report["consumer"].as_str(), consumer);
        let (old, new) = (&report["old_leader"], &report["new_leader"]);
        assert_ne!(old, new, "{report}");
        for leader in [old, new] {
            let name = leader.as_str().unwrap_or_default();
            assert!(cluster.index_of(name).is_some(), "{report}");
        }
    }
}
