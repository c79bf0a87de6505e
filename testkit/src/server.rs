//! [`NatsServer`]: one real `nats-server` process with JetStream, owned by one test.
//!
//! Its client and monitoring ports are chosen free up front, below the kernel's ephemeral range
//! ([`crate::ports`]), so [`NatsServer::restart`] comes back on the same address with the same
//! store even after the server was down a while. A start that finds a port taken by another
//! process meanwhile is tried again with new ports. A [`crate::NatsCluster`]'s nodes get their
//! ports from the cluster, since each node's routes must name the others'.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use async_nats::jetstream;
use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use crate::{
    Error,
    auth::{self, Credentials, Identity, Tls},
    config::{self, ClusterBlock, Layout, Ports},
    ports, probe,
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
    ports: Option<Ports>,
    cluster: Option<ClusterBlock>,
    dir_prefix: &'static str,
    auth: AuthChoice,
    tls: bool,
}

/// Whether a server authenticates its clients.
#[derive(Debug, Clone)]
enum AuthChoice {
    /// Identities generated for this server.
    Generate,
    /// These identities (shared by a cluster's nodes).
    Given(Arc<Credentials>),
    /// Anonymous clients in the global account.
    Off,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            binary: None,
            extra_config: String::new(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            name: DEFAULT_NAME.to_string(),
            ports: None,
            cluster: None,
            dir_prefix: "ridesaga-nats-",
            auth: AuthChoice::Generate,
            tls: false,
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

    /// No authentication: anonymous clients in the global account (`$G`), as before the
    /// server had identities. Only for a test that needs exactly that.
    pub fn without_auth(mut self) -> Self {
        self.auth = AuthChoice::Off;
        self
    }

    /// Requires TLS of every client, with a certificate signed by a CA made for the server
    /// ([`NatsServer::ca_file`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The identities of a cluster, shared by its nodes.
    pub(crate) fn credentials(mut self, credentials: Option<Arc<Credentials>>) -> Self {
        self.auth = match credentials {
            Some(credentials) => AuthChoice::Given(credentials),
            None => AuthChoice::Off,
        };
        self
    }

    /// A node of a cluster: its `server_name`, fixed client and monitoring ports, and its
    /// `cluster {}` block.
    pub(crate) fn node(mut self, name: String, ports: Ports, cluster: ClusterBlock) -> Self {
        self.name = name;
        self.ports = Some(ports);
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
        let credentials = match self.auth {
            AuthChoice::Generate => Some(Credentials::generate()?),
            AuthChoice::Given(credentials) => Some(credentials),
            AuthChoice::Off => None,
        };
        let tls = if self.tls {
            Some(Tls::generate()?)
        } else {
            None
        };
        let mut server = NatsServer {
            credentials,
            tls,
            binary,
            extra_config: self.extra_config,
            startup_timeout: self.startup_timeout,
            name: self.name,
            cluster: self.cluster,
            layout,
            ports: match self.ports {
                Some(ports) => ports,
                None => Ports::free()?,
            },
            child: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            match server.launch().await {
                Ok(()) => return Ok(server),
                // A cluster's node keeps its ports: the cluster starts again with new ones.
                Err(error)
                    if self.ports.is_none()
                        && attempt < ports::START_ATTEMPTS
                        && ports::taken(&error) =>
                {
                    attempt += 1;
                    server.ports = Ports::free()?;
                }
                Err(error) => return Err(error),
            }
        }
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
    credentials: Option<Arc<Credentials>>,
    tls: Option<Arc<Tls>>,
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
        self.ports.client
    }

    /// `http://127.0.0.1:<monitoring port>` (`/varz`, `/jsz`, `/healthz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port())
    }

    /// The HTTP monitoring port; the same across restarts.
    pub fn monitor_port(&self) -> u16 {
        self.ports.monitor
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

    /// The identities clients connect as; `None` for a server [`Builder::without_auth`].
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_deref()
    }

    /// The CA certificate of a server that requires TLS ([`Builder::tls`]).
    pub fn ca_file(&self) -> Option<&Path> {
        self.tls.as_deref().map(Tls::ca_file)
    }

    /// The account the streams live in: `RIDESAGA`, or `$G` without authentication (what
    /// `/jsz?acc=` and KEDA's `account` take).
    pub fn account(&self) -> &'static str {
        account_of(self.credentials.as_deref())
    }

    /// Connects as `ridectl-admin` (anonymously without authentication). It reconnects by
    /// itself across [`stop`](Self::stop) and [`restart`](Self::restart).
    pub async fn client(&self) -> Result<async_nats::Client, Error> {
        self.client_as(Identity::Admin).await
    }

    /// Connects as `identity`: its seed and inbox prefix (and the CA with TLS).
    pub async fn client_as(&self, identity: Identity) -> Result<async_nats::Client, Error> {
        if self.child.is_none() {
            return Err(Error::NotRunning);
        }
        let url = self.url();
        self.connect_options(identity)?
            .connect(&url)
            .await
            .map_err(|source| Error::Connect { url, source })
    }

    /// Options that connect as `identity`, for a test that adds its own.
    pub fn connect_options(&self, identity: Identity) -> Result<async_nats::ConnectOptions, Error> {
        auth::connect_options(identity, self.credentials.as_deref(), self.tls.as_deref())
    }

    /// The environment of a process (a worker, `ridectl`) connecting as `identity`:
    /// `NATS_URL`, `NATS_NKEY_FILE`, `NATS_INBOX_PREFIX`, and `NATS_CA_FILE` with TLS.
    pub fn env(&self, identity: Identity) -> Vec<(String, String)> {
        auth::environment(
            self.url(),
            identity,
            self.credentials.as_deref(),
            self.tls.as_deref(),
        )
    }

    /// Connects as `ridectl-admin` and wraps the client in a JetStream context.
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
        let ready = self.wait_until_ready().await;
        if ready.is_err() {
            self.stop();
        }
        ready
    }

    fn render(&self) -> String {
        let mut extra = self.extra_config.clone();
        if let Some(credentials) = &self.credentials {
            extra.push('\n');
            extra.push_str(credentials.server_config());
        }
        if let Some(tls) = &self.tls {
            extra.push('\n');
            extra.push_str(&tls.server_block());
        }
        config::render(
            &self.layout,
            &self.name,
            self.ports,
            self.cluster.as_ref(),
            &extra,
        )
    }

    async fn wait_until_ready(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.startup_timeout;
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
            let mut waiting_for = "the client port to greet with INFO";
            if probe::client_port_ready(self.ports.client).await {
                waiting_for = "/healthz to answer 200";
                if probe::healthy(self.ports.monitor).await {
                    return Ok(());
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

/// The account of the streams: `RIDESAGA` with identities, `$G` without.
pub(crate) fn account_of(credentials: Option<&Credentials>) -> &'static str {
    match credentials {
        Some(_) => ridesaga_schemas::auth::ACCOUNT,
        None => "$G",
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field then removes the directory with the store.
    }
}
