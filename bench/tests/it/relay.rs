//! The relay ceiling against a real nats-server: every message is relayed once, the rate is
//! positive, and the relay can run again on the same server.

use crate::common::BenchServer;

use ridesaga_bench::relay::{self, RELAY_STREAM};

#[tokio::test]
async fn the_relay_moves_every_message_once_and_can_run_again() {
    let bench = BenchServer::start().await;
    let js = bench.js.clone();

    for _ in 0..2 {
        let mut readings = 0;
        let (run, before, after) = relay::run(&js, 500, 16, 8, || {
            readings += 1;
            readings
        })
        .await
        .expect("the relay runs");
        assert_eq!((before, after), (1, 2), "metered right before and after");
        assert_eq!(run.messages, 500);
        assert!(run.per_second > 0.0);
        assert_eq!(run.payload_bytes, relay::PAYLOAD_BYTES);
    }
    let mut stream = js
        .get_stream(RELAY_STREAM)
        .await
        .expect("relay stream exists");
    let info = stream.info().await.expect("stream info");
    assert_eq!(
        info.state.messages, 0,
        "the relay empties its stream after each run"
    );
}
