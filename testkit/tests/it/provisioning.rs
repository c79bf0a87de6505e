//! The contract's streams and consumers, provisioned on a real server: what exists afterwards,
//! that provisioning again changes nothing, that the saga stream drops duplicate publishes, and
//! that on a cluster provisioning again with another replica count scales what exists.

use std::collections::BTreeSet;

use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::TryStreamExt;
use ridesaga_schemas::streams::{
    self, DEAD_LETTER_STREAM, POSITION_STREAM, ProvisionOptions, RIDE_POSITIONS_CONSUMER,
    SAGA_STREAM, Service,
};
use ridesaga_testkit::{NatsCluster, NatsServer};

async fn consumer_names(js: &jetstream::Context) -> BTreeSet<String> {
    let stream = js.get_stream(SAGA_STREAM).await.unwrap();
    stream.consumer_names().try_collect().await.unwrap()
}

#[tokio::test]
async fn provisioning_creates_both_streams_and_every_service_consumer_with_its_filters() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await.unwrap();

    let report = streams::provision(&js, ProvisionOptions::default())
        .await
        .unwrap();
    assert_eq!(
        report.streams,
        [SAGA_STREAM, DEAD_LETTER_STREAM, POSITION_STREAM]
    );
    // The five service consumers and the ride service's positions consumer.
    assert_eq!(report.consumers.len(), Service::ALL.len() + 1);
    assert_eq!(report.consumers.last().unwrap(), RIDE_POSITIONS_CONSUMER);

    let names: BTreeSet<String> = js.stream_names().try_collect().await.unwrap();
    assert!(
        names.contains(SAGA_STREAM) && names.contains(DEAD_LETTER_STREAM),
        "{names:?}"
    );
    let saga = js
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(saga.config.subjects, streams::saga_stream_config().subjects);
    let dead = js
        .get_stream(DEAD_LETTER_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(
        dead.config.subjects,
        streams::dead_letter_stream_config().subjects
    );

    let expected: BTreeSet<String> = Service::ALL.iter().map(|s| s.consumer_name()).collect();
    assert_eq!(consumer_names(&js).await, expected);
    let stream = js.get_stream(SAGA_STREAM).await.unwrap();
    for service in Service::ALL {
        let info = stream.consumer_info(service.consumer_name()).await.unwrap();
        let filters: BTreeSet<&str> = info
            .config
            .filter_subjects
            .iter()
            .map(String::as_str)
            .collect();
        let defined: BTreeSet<&str> = service.filter_subjects().iter().copied().collect();
        assert_eq!(filters, defined, "filters of {service}");
        assert_eq!(
            info.config.durable_name.as_deref(),
            Some(service.consumer_name().as_str())
        );
    }
}

#[tokio::test]
async fn provisioning_twice_is_idempotent() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await.unwrap();

    streams::provision(&js, ProvisionOptions::default())
        .await
        .unwrap();
    js.publish("evt.ride.requested.r1", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let before = js
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();

    streams::provision(&js, ProvisionOptions::default())
        .await
        .unwrap();
    let after = js
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();

    assert_eq!(
        after.created, before.created,
        "the stream was not recreated"
    );
    assert_eq!(
        after.state.messages, 1,
        "provisioning again keeps the history"
    );
    assert_eq!(after.state.consumer_count, Service::ALL.len());
    let names: Vec<String> = js.stream_names().try_collect().await.unwrap();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[tokio::test]
async fn an_event_published_twice_with_the_same_message_id_is_stored_once() {
    let server = NatsServer::start().await.unwrap();
    let js = server.jetstream().await.unwrap();
    streams::provision(&js, ProvisionOptions::default())
        .await
        .unwrap();

    let publish = || {
        let message = PublishMessage::build()
            .payload("{}".into())
            .message_id("evt-1");
        js.send_publish("evt.ride.requested.r1", message)
    };
    let first = publish().await.unwrap().await.unwrap();
    let second = publish().await.unwrap().await.unwrap();

    assert!(!first.duplicate);
    assert!(second.duplicate, "the server dropped the copy");
    assert_eq!(second.sequence, first.sequence);
    let info = js
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 1);
}

/// Replicas of both streams and the five consumers, as the server reports them.
async fn replicas(js: &jetstream::Context) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for name in [SAGA_STREAM, DEAD_LETTER_STREAM] {
        let info = js.get_stream(name).await.unwrap().get_info().await.unwrap();
        out.push((name.to_string(), info.config.num_replicas));
    }
    let stream = js.get_stream(SAGA_STREAM).await.unwrap();
    for service in Service::ALL {
        let info = stream.consumer_info(service.consumer_name()).await.unwrap();
        out.push((info.name.clone(), info.config.num_replicas));
    }
    out
}

#[tokio::test]
async fn provisioning_again_with_another_replica_count_on_a_cluster_scales_what_exists() {
    let cluster = NatsCluster::start().await.unwrap();
    let js = cluster.jetstream().await.unwrap();

    streams::provision(&js, ProvisionOptions { replicas: 1 })
        .await
        .unwrap();
    js.publish("evt.ride.requested.r1", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(replicas(&js).await.iter().all(|(_, n)| *n == 1));

    streams::provision(&js, ProvisionOptions { replicas: 3 })
        .await
        .unwrap();
    let all = replicas(&js).await;
    assert!(all.iter().all(|(_, n)| *n == 3), "{all:?}");
    let info = js
        .get_stream(SAGA_STREAM)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(info.state.messages, 1, "the history is kept");
    let placement = info.cluster.expect("clustered");
    assert_eq!(placement.replicas.len(), 2, "{placement:?}");

    // And back down.
    streams::provision(&js, ProvisionOptions { replicas: 1 })
        .await
        .unwrap();
    let all = replicas(&js).await;
    assert!(all.iter().all(|(_, n)| *n == 1), "{all:?}");
}
