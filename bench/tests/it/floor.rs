//! The runtime's floor against a real nats-server: every message goes through the workers'
//! runtime once (one output each, checked by the run itself), the runs leave the saga stream
//! as they found it, and a run can follow another on the same server.

use crate::common::BenchServer;

use ridesaga_bench::floor;
use ridesaga_schemas::streams::{self, ProvisionOptions};

#[tokio::test]
async fn the_floor_relays_every_message_through_the_runtime_and_cleans_up() {
    let bench = BenchServer::start().await;
    let js = bench.js.clone();
    streams::provision(&js, ProvisionOptions::default())
        .await
        .expect("streams provisioned");
    let dir = tempfile::tempdir().expect("temp dir");

    for (messages, settings) in [(300, (16, 8)), (40, (1, 1))] {
        let mut readings = 0;
        let database = format!(
            "sqlite://{}",
            dir.path()
                .join(format!("floor-{}.db", settings.1))
                .display()
        );
        let (run, before, after) = floor::run(
            &js,
            &bench.floor_nats(),
            &database,
            messages,
            settings,
            || {
                readings += 1;
                readings
            },
        )
        .await
        .expect("the floor runs");
        assert_eq!((before, after), (1, 2), "metered right before and after");
        assert_eq!(run.messages, messages);
        assert_eq!(run.max_in_flight, settings.1);
        assert!(
            run.per_second > 0.0 && run.ms_per_message() > 0.0,
            "{run:?}"
        );
    }
    let mut stream = js
        .get_stream(streams::SAGA_STREAM)
        .await
        .expect("saga stream exists");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 0, "the floor's messages are purged");
    assert_eq!(
        info.state.consumer_count, 5,
        "only the services' consumers remain"
    );
}
