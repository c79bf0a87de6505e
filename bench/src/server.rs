//! The bench's own nats-server: the repository's `nats.conf`, free loopback ports chosen by the
//! server (`-p -1 -m -1`, read back from its ports file) and a temporary store, so it never
//! touches a development server or its data.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use ridesaga_testkit::probe;
use tokio::process::Command;
use tokio::time::Instant;

use crate::process::{PidLog, Spawned, log_tail};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running nats-server.
#[derive(Debug)]
pub struct Server {
    pub process: Spawned,
    pub client_port: u16,
    pub monitor_port: u16,
    pub version: String,
}

impl Server {
    /// Starts `binary -c conf` with its store, log and ports file under `dir`, and waits until
    /// it greets clients and `/healthz` answers 200.
    pub async fn start(
        binary: &Path,
        conf: &Path,
        dir: &Path,
        pids: &PidLog,
    ) -> anyhow::Result<Server> {
        let ports_dir = dir.join("ports");
        std::fs::create_dir_all(&ports_dir).context("creating the ports directory")?;
        let log = dir.join("nats-server.log");
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(conf)
            // The store on the command line, as `nats.conf` expects: without `-sd` the server
            // keeps it under the system's temp dir, shared by every run (and every earlier
            // run's streams would weigh on this one's figures).
            .arg("-sd")
            .arg(dir.join("store"))
            .args(["-p", "-1", "-m", "-1"])
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("-l")
            .arg(&log);
        let mut process =
            Spawned::start("nats-server", command, &dir.join("nats-server.out"), pids)?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let ports = loop {
            process.check_running().with_context(|| {
                format!(
                    "nats-server failed to start; its log:\n{}",
                    log_tail(&log, 20)
                )
            })?;
            if let Some(ports) = probe::read_ports_file(&ports_dir, process.pid)?
                && probe::client_port_ready(ports.client).await
                && probe::healthy(ports.monitor).await
            {
                break ports;
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server did not become ready within {STARTUP_TIMEOUT:?}; its log:\n{}",
                    log_tail(&log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Ok(Server {
            process,
            client_port: ports.client,
            monitor_port: ports.monitor,
            version: version(binary).await,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// `nats-server --version`, e.g. `nats-server: v2.15.1`, or `unknown`.
async fn version(binary: &Path) -> String {
    match Command::new(binary).arg("--version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(_) => "unknown".into(),
    }
}
