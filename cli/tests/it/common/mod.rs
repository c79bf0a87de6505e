//! Shared by the integration tests: a real nats-server per test (from the testkit) with the
//! streams and consumers provisioned, and the `ridectl` binary run against it.

use std::process::Output;

use assert_cmd::Command;
use async_nats::jetstream;
use ridesaga_schemas::streams::{ProvisionOptions, SAGA_STREAM, provision};
use ridesaga_testkit::{Identity, NatsServer};

/// A server with the Ridesaga streams, and a way to run `ridectl` against it.
pub struct Harness {
    pub server: NatsServer,
    pub js: jetstream::Context,
}

impl Harness {
    /// A fresh server with streams and consumers provisioned.
    pub async fn provisioned() -> Harness {
        let harness = Harness::bare().await;
        provision(&harness.js, ProvisionOptions::default())
            .await
            .expect("provisioning succeeds");
        harness
    }

    /// A fresh server with nothing provisioned.
    pub async fn bare() -> Harness {
        Harness::on(NatsServer::start().await.expect("nats-server starts")).await
    }

    /// A fresh server without authentication (anonymous clients, the global account), with
    /// streams and consumers provisioned: for a stand-in that plays every service at once,
    /// which no identity of an installation may.
    pub async fn provisioned_without_auth() -> Harness {
        let server = NatsServer::builder()
            .without_auth()
            .start()
            .await
            .expect("nats-server starts");
        let harness = Harness::on(server).await;
        provision(&harness.js, ProvisionOptions::default())
            .await
            .expect("provisioning succeeds");
        harness
    }

    async fn on(server: NatsServer) -> Harness {
        let js = server.jetstream().await.expect("client connects");
        Harness { server, js }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The environment of `ridectl` as `ridectl-admin` on this server.
    pub fn env(&self) -> Vec<(String, String)> {
        self.server.env(Identity::Admin)
    }

    /// Runs `ridectl args...` as `ridectl-admin` against this server (blocking work off the
    /// async runtime).
    pub async fn ridectl(&self, args: &[&str]) -> Output {
        run_ridectl(&self.env(), args).await
    }

    /// Runs `ridectl args...` as `identity` against this server.
    pub async fn ridectl_as(&self, identity: Identity, args: &[&str]) -> Output {
        run_ridectl(&self.server.env(identity), args).await
    }

    /// Messages stored in the saga stream.
    pub async fn saga_messages(&self) -> u64 {
        let mut stream = self.js.get_stream(SAGA_STREAM).await.expect("saga stream");
        stream.info().await.expect("stream info").state.messages
    }
}

/// Runs `ridectl` with `env` (`NATS_URL`, the identity's seed file, ...) and nothing else of
/// the caller's NATS settings, no colours, stdout captured (so JSON).
pub async fn run_ridectl(env: &[(String, String)], args: &[&str]) -> Output {
    let env = env.to_vec();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::cargo_bin("ridectl").expect("the ridectl binary is built");
        for name in [
            "NATS_URL",
            "NATS_USER",
            "NATS_PASSWORD",
            "NATS_CREDS",
            "NATS_NKEY_FILE",
            "NATS_INBOX_PREFIX",
            "NATS_CA_FILE",
        ] {
            cmd.env_remove(name);
        }
        cmd.env("NO_COLOR", "1").envs(env).args(&args);
        cmd.output().expect("ridectl runs")
    })
    .await
    .expect("the ridectl task completes")
}

/// The environment of `ridectl` with `NATS_URL` alone.
pub fn url_only(url: &str) -> Vec<(String, String)> {
    vec![("NATS_URL".to_owned(), url.to_owned())]
}

/// The exit code, with stdout and stderr in the panic message when it is not `want`.
pub fn assert_code(output: &Output, want: i32) {
    assert_eq!(
        output.status.code(),
        Some(want),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(output),
        stderr(output)
    );
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Parses stdout as one JSON document.
pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

/// Parses stdout as JSON lines.
pub fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}
