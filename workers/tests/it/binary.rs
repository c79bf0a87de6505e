//! The worker binaries as an operator runs them: configured from the environment, visible
//! through the NATS service API, draining and exiting 0 on SIGTERM, and refusing a bad setting
//! with a message that names it.

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use ridesaga_schemas::{Service, streams};
use ridesaga_testkit::{Identity, NatsServer};

/// A worker process, killed if the test fails before it exits, so none outlives the test.
struct Worker(std::process::Child);

impl Worker {
    /// Starts `binary` as `service` against `server`, its database in `dir`.
    fn start(binary: &str, service: &str, server: &NatsServer, dir: &Path) -> Worker {
        let identity = Identity::Worker(Service::from_name(service).expect("a service"));
        let child = Command::new(binary)
            .envs(server.env(identity))
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.join(format!("{service}.db")).display()),
            )
            .env("RIDESAGA_HTTP_ADDR", "off")
            .env("RIDESAGA_INSTANCE", format!("{service}-test-1"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker(child)
    }

    /// Sends SIGTERM and waits up to `patience` for the exit.
    async fn terminate(&mut self, patience: Duration) -> ExitStatus {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "worker did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A provisioned server and a client of it.
async fn provisioned() -> (NatsServer, async_nats::Client) {
    let server = NatsServer::start().await.unwrap();
    let client = server.client().await.unwrap();
    streams::provision(&jetstream::new(client.clone()), Default::default())
        .await
        .unwrap();
    (server, client)
}

/// The `$SRV.PING` reply of `service` once a replica answers (it answers once it is running).
async fn ping_when_up(client: &async_nats::Client, service: &str) -> serde_json::Value {
    for _ in 0..100 {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.unwrap();
        let subject = format!("$SRV.PING.ridesaga-{service}");
        client
            .publish_with_reply(subject, inbox, "".into())
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_millis(200), replies.next()).await;
        // An empty reply is the server's "no responders": the worker is not up yet.
        if let Ok(Some(reply)) = reply.map(|r| r.filter(|m| !m.payload.is_empty())) {
            return serde_json::from_slice(&reply.payload).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the {service} worker never answered $SRV.PING");
}

#[tokio::test]
async fn a_worker_registers_with_the_service_api_and_drains_on_sigterm() {
    let (server, client) = provisioned().await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Worker::start(
        env!("CARGO_BIN_EXE_ride-worker"),
        "ride",
        &server,
        dir.path(),
    );
    let info = ping_when_up(&client, "ride").await;
    assert_eq!(info["name"], "ridesaga-ride");
    let status = worker.terminate(Duration::from_secs(15)).await;
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
    let (mut server, client) = provisioned().await;
    let dir = tempfile::tempdir().unwrap();
    let mut worker = Worker::start(
        env!("CARGO_BIN_EXE_fraud-worker"),
        "fraud",
        &server,
        dir.path(),
    );
    ping_when_up(&client, "fraud").await;
    server.stop();
    worker.terminate(Duration::from_secs(30)).await;
}
