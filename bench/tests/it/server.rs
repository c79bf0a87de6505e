//! The bench's server runs with an installation's identities, as `scripts/up` runs the
//! system: an anonymous client is refused, a worker's identity may publish only its own
//! events, and the bench's own user may do what its measurements need.

use std::time::Duration;

use crate::common::BenchServer;
use ridesaga_schemas::Service;
use ridesaga_schemas::auth::{Identity, read_seed};
use ridesaga_schemas::streams::{ProvisionOptions, SAGA_STREAM, provision};

#[tokio::test]
async fn the_benchs_server_authenticates_and_restricts_the_workers() {
    let bench = BenchServer::start().await;
    provision(&bench.js, ProvisionOptions::default())
        .await
        .expect("the bench's user provisions");
    let url = bench.server.url();

    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(Some(1))
        .connect(&url)
        .await;
    assert!(anonymous.is_err(), "an anonymous client was let in");

    let env = bench
        .server
        .identities
        .env(Identity::Worker(Service::Payment));
    let seed = read_seed(std::path::Path::new(&env[0].1)).unwrap();
    let payment = async_nats::ConnectOptions::new()
        .nkey(seed.expose().to_owned())
        .custom_inbox_prefix(&env[1].1)
        .connect(&url)
        .await
        .expect("the payment worker's identity connects");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_millis(500))
        .build(payment);
    let ack = js
        .publish("cmd.ride.request.r_1", "{}".into())
        .await
        .unwrap();
    assert!(ack.await.is_err(), "the payment worker published a command");
    js.publish("evt.payment.voided.r_1", "{}".into())
        .await
        .unwrap()
        .await
        .expect("its own event is stored");

    bench
        .js
        .publish("cmd.ride.request.r_2", "{}".into())
        .await
        .unwrap()
        .await
        .expect("the bench's user publishes commands");
    let mut stream = bench.js.get_stream(SAGA_STREAM).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}
