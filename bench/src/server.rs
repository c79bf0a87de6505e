//! The bench's own nats-server: the repository's `nats.conf` with an installation's identities
//! (the workers and `ridectl` run with theirs, as `scripts/up` runs them), free loopback ports
//! chosen by the server (`-p -1 -m -1`, read back from its ports file) and a temporary store,
//! so it never touches a development server or its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use ridesaga_schemas::auth::{self, ACCOUNT, Identity, Installation, User};
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
    pub identities: Identities,
}

/// The identities the bench's server knows: an installation's, and the bench's own, allowed
/// everything in the account, for the measurement harness (the generator's subscriptions to
/// the events it times, the relay's stream and the floor's consumer).
#[derive(Debug, Clone)]
pub struct Identities {
    installation: Installation,
    bench_seed: PathBuf,
}

/// The bench's own user: its seed file's name and the comment above it in the configuration.
const BENCH_USER: &str = "ridesaga-bench";

impl Identities {
    /// Seeds for every identity and the bench, and the server's `auth.conf`, in `dir`.
    fn create(dir: &Path) -> anyhow::Result<Identities> {
        let installation = auth::init(dir)
            .with_context(|| format!("writing the identities into {}", dir.display()))?;
        let bench_seed = dir.join(format!("{BENCH_USER}.{}", auth::SEED_EXTENSION));
        let (seed, public_key) = auth::generate_seed().map_err(anyhow::Error::msg)?;
        auth::write_seed(&bench_seed, &seed)?;
        let mut users = installation.users();
        users.push(User {
            name: format!("{BENCH_USER}: the measurement harness"),
            account: ACCOUNT,
            public_key,
            permissions: None,
        });
        auth::write_server_config(&installation.server_config(), &users)?;
        Ok(Identities {
            installation,
            bench_seed,
        })
    }

    /// The server's include file.
    pub fn server_config(&self) -> PathBuf {
        self.installation.server_config()
    }

    /// `NATS_NKEY_FILE` and `NATS_INBOX_PREFIX` of a process connecting as `identity`.
    pub fn env(&self, identity: Identity) -> Vec<(String, String)> {
        vec![
            (
                "NATS_NKEY_FILE".into(),
                self.installation.seed_file(identity).display().to_string(),
            ),
            ("NATS_INBOX_PREFIX".into(), identity.inbox_prefix()),
        ]
    }

    /// The same for the bench's own user.
    pub fn bench_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "NATS_NKEY_FILE".into(),
                self.bench_seed.display().to_string(),
            ),
            (
                "NATS_INBOX_PREFIX".into(),
                auth::DEFAULT_INBOX_PREFIX.into(),
            ),
        ]
    }

    /// Connects to `url` as the bench's own user.
    pub async fn connect(&self, url: &str) -> anyhow::Result<async_nats::Client> {
        let seed = auth::read_seed(&self.bench_seed)?;
        async_nats::ConnectOptions::new()
            .name(BENCH_USER)
            .nkey(seed.expose().to_owned())
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))
    }
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
        let identities = Identities::create(&dir.join("auth"))?;
        let config = wrap_config(conf, dir, &identities)?;
        let log = dir.join("nats-server.log");
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&config)
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
            identities,
        })
    }

    /// Connects as the bench's own user.
    pub async fn connect(&self) -> anyhow::Result<async_nats::Client> {
        self.identities.connect(&self.url()).await
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

/// `dir/server.conf`: `conf` (linked into `dir` as `nats.conf`, since an include names a path
/// relative to the including file) and the identities' include file.
fn wrap_config(conf: &Path, dir: &Path, identities: &Identities) -> anyhow::Result<PathBuf> {
    let target = conf
        .canonicalize()
        .with_context(|| format!("finding {}", conf.display()))?;
    let linked = dir.join("nats.conf");
    let _ = std::fs::remove_file(&linked);
    std::os::unix::fs::symlink(&target, &linked)
        .with_context(|| format!("linking {} into {}", target.display(), dir.display()))?;
    let auth = identities
        .server_config()
        .strip_prefix(dir)
        .map(Path::to_path_buf)
        .context("the identities live beside the server's configuration")?;
    let wrapper = dir.join("server.conf");
    std::fs::write(
        &wrapper,
        format!(
            "# The bench's server: {} with an installation's identities.\ninclude ./nats.conf\ninclude \"./{}\"\n",
            target.display(),
            auth.display()
        ),
    )
    .with_context(|| format!("writing {}", wrapper.display()))?;
    Ok(wrapper)
}

/// `nats-server --version`, e.g. `nats-server: v2.15.1`, or `unknown`.
async fn version(binary: &Path) -> String {
    match Command::new(binary).arg("--version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(_) => "unknown".into(),
    }
}
