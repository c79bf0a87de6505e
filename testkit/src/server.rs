//! [`NatsServer`]: one real `nats-server` process with JetStream, owned by one test.
//!
//! The first start lets the server choose free loopback ports (`-1`) and reads them back from
//! its ports file, so parallel tests never race for a port; the configuration is then rewritten
//! with those ports so [`NatsServer::restart`] comes back on the same address with the same store.
//! A [`crate::NatsCluster`]'s nodes are started with ports chosen up front instead, since each
//! node's routes must name the others'.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use crate::{
    Error,
    config::{self, ClusterBlock, Layout, Ports},
    probe,
};

/// How long a start or restart may take before it is reported as failed.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(20);
pub(crate) const LOG_TAIL_LINES: usize = 30;
/// `server_name` of a server that is no cluster's node.
const DEFAULT_NAME: &str = "ridesaga_testkit";

/// Options for a test server; [`NatsServer::start`] uses the defaults.
#[derive(Debug, Clone)]
pub struct Builder {
    binary: Option<PathBuf>,
    extra_config: String,
    startup_timeout: Duration,
    name: String,
    ports: Ports,
    cluster: Option<ClusterBlock>,
    dir_prefix: &'static str,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            binary: None,
            extra_config: String::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            name: DEFAULT_NAME.to_string(),
            ports: Ports::default(),
            cluster: None,
            dir_prefix: "ridesaga-nats-",
        }
    }
}

impl Builder {
    /// Uses this binary instead of searching with [`crate::find_nats_server`].
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Appends configuration text (accounts, users, limits) to the generated file.
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config = text.into();
        self
    }

    /// How long each start or restart may take.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// A node of a cluster: its `server_name`, fixed client and monitoring ports, and its
    /// `cluster {}` block.
    pub(crate) fn node(mut self, name: String, ports: Ports, cluster: ClusterBlock) -> Self {
        self.name = name;
        self.ports = ports;
        self.cluster = Some(cluster);
        self.dir_prefix = "ridesaga-nats-node-";
        self
    }

    /// Starts the server and waits until it accepts clients and reports itself healthy.
    pub async fn start(self) -> Result<NatsServer, Error> {
        let binary = match self.binary {
            Some(binary) => binary,
            None => config::find_nats_server()?,
        };
        let dir = tempfile::Builder::new()
            .prefix(self.dir_prefix)
            .tempdir()
            .map_err(Error::io("create the server's temporary directory"))?;
        let layout = Layout::new(dir.path());
        fs::create_dir_all(&layout.ports).map_err(Error::io("create the ports directory"))?;
        let mut server = NatsServer {
            binary,
            extra_config: self.extra_config,
            startup_timeout: self.startup_timeout,
            name: self.name,
            cluster: self.cluster,
            layout,
            ports: self.ports,
            child: None,
            dir,
        };
        server.launch().await?;
        Ok(server)
    }
}

/// A running (or deliberately stopped) `nats-server` with JetStream, a temporary store and a
/// generated configuration file. Dropping it kills the process and deletes the store.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    extra_config: String,
    startup_timeout: Duration,
    name: String,
    cluster: Option<ClusterBlock>,
    layout: Layout,
    ports: Ports,
    child: Option<Child>,
    // Dropped last (see `Drop`): removes the store, configuration and logs.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server with the default options.
    pub async fn start() -> Result<NatsServer, Error> {
        Builder::default().start().await
    }

    /// Options for a server that needs more than the defaults.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The `server_name`: `ridesaga_testkit`, or `n0`, `n1`, ... in a [`crate::NatsCluster`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port())
    }

    /// The client port; the same across restarts.
    pub fn port(&self) -> u16 {
        self.ports
            .client
            .expect("a started server knows its client port")
    }

    /// `http://127.0.0.1:<monitoring port>` (`/varz`, `/jsz`, `/healthz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port())
    }

    /// The HTTP monitoring port; the same across restarts.
    pub fn monitor_port(&self) -> u16 {
        self.ports
            .monitor
            .expect("a started server knows its monitoring port")
    }

    /// The server's temporary directory (configuration, logs, store).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The JetStream store directory; it survives [`stop`](Self::stop) and restarts.
    pub fn store_dir(&self) -> &Path {
        &self.layout.store
    }

    /// The generated configuration file.
    pub fn config_path(&self) -> &Path {
        &self.layout.config
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.layout.log
    }

    /// The last `lines` lines of the server's log and console output.
    pub fn log_tail(&self, lines: usize) -> String {
        probe::tail(&[&self.layout.output, &self.layout.log], lines)
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Connects a client. It reconnects by itself across [`stop`](Self::stop) and
    /// [`restart`](Self::restart).
    pub async fn client(&self) -> Result<async_nats::Client, Error> {
        if self.child.is_none() {
            return Err(Error::NotRunning);
        }
        let url = self.url();
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(|source| Error::Connect { url, source })
    }

    /// Connects a client and wraps it in a JetStream context.
    pub async fn jetstream(&self) -> Result<jetstream::Context, Error> {
        Ok(jetstream::new(self.client().await?))
    }

    /// Kills the server abruptly (SIGKILL, like a crash) and keeps its store. Does nothing if
    /// it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has already exited; wait() still reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports with the same store, stopping it first if it
    /// is still running, and waits until it is ready (JetStream recovered).
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop();
        self.launch().await
    }

    async fn launch(&mut self) -> Result<(), Error> {
        let text = self.render();
        fs::write(&self.layout.config, text)
            .map_err(Error::io("write the server configuration"))?;
        let output = File::options()
            .create(true)
            .append(true)
            .open(&self.layout.output)
            .map_err(Error::io("open the server's console output file"))?;
        let errors = output
            .try_clone()
            .map_err(Error::io("duplicate a file handle"))?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&self.layout.config)
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(Error::io(format!("start {}", self.binary.display())))?;
        self.child = Some(child);
        if let Err(error) = self.wait_until_ready().await {
            self.stop();
            return Err(error);
        }
        // Pin the chosen ports so a restart comes back on the same address.
        let text = self.render();
        fs::write(&self.layout.config, text).map_err(Error::io("write the server configuration"))
    }

    fn render(&self) -> String {
        config::render(
            &self.layout,
            &self.name,
            self.ports,
            self.cluster.as_ref(),
            &self.extra_config,
        )
    }

    async fn wait_until_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.startup_timeout;
        let pid = self.pid().ok_or(Error::NotRunning)?;
        let mut waiting_for = "the ports file";
        loop {
            if let Some(child) = self.child.as_mut() {
                let status = child
                    .try_wait()
                    .map_err(Error::io("check the server process"))?;
                if let Some(status) = status {
                    self.child = None;
                    return Err(Error::Exited {
                        binary: self.binary.clone(),
                        status,
                        log_tail: self.log_tail(LOG_TAIL_LINES),
                    });
                }
            }
            let ports_unknown = self.ports.client.is_none() || self.ports.monitor.is_none();
            if ports_unknown && let Some(found) = probe::read_ports_file(&self.layout.ports, pid)? {
                self.ports = Ports {
                    client: Some(found.client),
                    monitor: Some(found.monitor),
                };
            }
            if let Ports {
                client: Some(client),
                monitor: Some(monitor),
            } = self.ports
            {
                waiting_for = "the client port to greet with INFO";
                if probe::client_port_ready(client).await {
                    waiting_for = "/healthz to answer 200";
                    if probe::healthy(monitor).await {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout: self.startup_timeout,
                    waiting_for: waiting_for.to_string(),
                    log_tail: self.log_tail(LOG_TAIL_LINES),
                });
            }
            sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field then removes the directory with the store.
    }
}
