//! A durable pull consumer across a server crash: unacknowledged messages come back after the
//! server restarts on the same store, and the client that was connected reconnects by itself.

use std::time::Duration;

use async_nats::{
    connection::State,
    jetstream::{self, consumer, stream},
};
use futures_util::StreamExt;
use ridesaga_testkit::NatsServer;
use tokio::time::{Instant, sleep};

const ACK_WAIT: Duration = Duration::from_millis(500);

/// Pulls until `count` messages arrived or `within` passed; returns (stream seq, deliveries).
async fn pull(
    consumer: &consumer::PullConsumer,
    count: usize,
    within: Duration,
) -> Vec<(u64, i64)> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while seen.len() < count && Instant::now() < deadline {
        let batch = consumer
            .batch()
            .max_messages(count - seen.len())
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let Ok(mut batch) = batch else {
            sleep(Duration::from_millis(100)).await; // JetStream still coming back
            continue;
        };
        while let Some(Ok(message)) = batch.next().await {
            let info = message.info().unwrap();
            seen.push((info.stream_sequence, info.delivered));
        }
    }
    seen
}

#[tokio::test]
async fn a_durable_pull_consumer_sees_its_unacked_messages_again_after_the_server_restarts() {
    let mut server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "WORK".into(),
            subjects: vec!["evt.work.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("worker".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            ..Default::default()
        })
        .await
        .unwrap();
    for n in 1..=3 {
        js.publish(format!("evt.work.{n}"), "job".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    let first = pull(&consumer, 3, Duration::from_secs(5)).await;
    assert_eq!(
        first,
        [(1, 1), (2, 1), (3, 1)],
        "delivered once each, left unacked"
    );

    server.stop();
    server.restart().await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(15);
    while client.connection_state() != State::Connected {
        assert!(Instant::now() < deadline, "the client did not reconnect");
        sleep(Duration::from_millis(50)).await;
    }
    let mut again = pull(&consumer, 3, Duration::from_secs(15)).await;
    again.sort();
    let sequences: Vec<u64> = again.iter().map(|(sequence, _)| *sequence).collect();
    assert_eq!(
        sequences,
        [1, 2, 3],
        "every unacked message is delivered again"
    );
    // The delivery count is not asserted: the server writes a consumer's delivery state lazily,
    // so after a crash (SIGKILL) it may report a redelivery as a first delivery. Handlers must
    // not use the count to detect duplicates; the inbox table does that.
}
