//! The worker binaries as an operator runs them: configured from the environment, visible
//! through the NATS service API, draining and exiting 0 on SIGTERM, and refusing a bad setting
//! with a message that names it.

use std::process::{Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use ridesaga_schemas::streams;
use ridesaga_testkit::NatsServer;

/// Kills the worker if the test fails before it exits, so no process outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_worker_registers_with_the_service_api_and_drains_on_sigterm() {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    streams::provision(&jetstream::new(client.clone()), Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ride-worker"))
        .env("NATS_URL", server.url())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("ride.db").display()),
        )
        .env("RIDESAGA_HTTP_ADDR", "off")
        .env("RIDESAGA_INSTANCE", "ride-test-1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);

    // The replica shows up in $SRV.PING replies once it is running.
    let mut found = false;
    for _ in 0..100 {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.unwrap();
        client
            .publish_with_reply("$SRV.PING.ridesaga-ride", inbox, "".into())
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_millis(200), replies.next()).await;
        // An empty reply is the server's "no responders": the worker is not up yet.
        if let Ok(Some(reply)) = reply.map(|r| r.filter(|m| !m.payload.is_empty())) {
            let info: serde_json::Value = serde_json::from_slice(&reply.payload).unwrap();
            assert_eq!(info["name"], "ridesaga-ride");
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the worker never answered $SRV.PING");

    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean drain exits 0, got {status}");
}

#[test]
fn a_bad_setting_is_refused_with_its_name() {
    let output = Command::new(env!("CARGO_BIN_EXE_payment-worker"))
        .env("RIDESAGA_MAX_IN_FLIGHT", "many")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RIDESAGA_MAX_IN_FLIGHT"), "{stderr}");
}

#[tokio::test]
async fn a_worker_stops_on_sigterm_even_when_the_server_is_gone() {
    let mut server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    streams::provision(&jetstream::new(client.clone()), Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_fraud-worker"))
        .env("NATS_URL", server.url())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.path().join("fraud.db").display()),
        )
        .env("RIDESAGA_HTTP_ADDR", "off")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // Up and bound to its consumer.
    let mut up = false;
    for _ in 0..100 {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.unwrap();
        client
            .publish_with_reply("$SRV.PING.ridesaga-fraud", inbox, "".into())
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_millis(200), replies.next()).await;
        if let Ok(Some(reply)) = reply.map(|r| r.filter(|m| !m.payload.is_empty())) {
            up = !reply.payload.is_empty();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the worker never answered $SRV.PING");

    server.stop();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.0.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "worker hung on SIGTERM without a server"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
