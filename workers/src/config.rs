//! Typed configuration, read from the environment once at start-up. A bad setting fails fast
//! with a message that names it; secrets are wrapped so they never reach logs.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ridesaga_schemas::duration::parse_duration;
use ridesaga_schemas::{Service, auth};

use crate::runtime::Kind;

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {problem}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub problem: String,
}

/// Where settings come from: the process environment, or a fixed list in tests.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    overrides: Vec<(String, String)>,
    use_env: bool,
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Self {
        Settings {
            overrides: Vec::new(),
            use_env: true,
        }
    }

    /// Only the given settings (tests); everything else takes its default.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Settings {
            overrides: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            use_env: false,
        }
    }

    /// Adds or replaces one setting.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.overrides.retain(|(k, _)| k != name);
        self.overrides.push((name.to_owned(), value.into()));
        self
    }

    /// The raw value of a setting, if set.
    pub fn raw(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.overrides.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if self.use_env {
            std::env::var(name).ok().filter(|v| !v.is_empty())
        } else {
            None
        }
    }

    /// A setting parsed with `FromStr`, or `default` when unset.
    pub fn get<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError {
                name: name.to_owned(),
                problem: e.to_string(),
                value,
            }),
        }
    }

    /// A duration such as `30s`, `250ms`, `2m` or `1h` ([`parse_duration`]), or `default` when
    /// unset.
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.raw(name) {
            None => Ok(default),
            Some(value) => parse_duration(&value).map_err(|problem| ConfigError {
                name: name.to_owned(),
                value,
                problem,
            }),
        }
    }

    /// A secret, never printed.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        self.raw(name).map(Secret)
    }

    /// A secret from `NAME`, or from the file `NAME_FILE` names (its content, less a trailing
    /// line break), never printed; not both.
    pub fn secret_or_file(&self, name: &str) -> Result<Option<Secret>, ConfigError> {
        let file_setting = format!("{name}_FILE");
        match (self.raw(name), self.raw(&file_setting)) {
            (Some(_), Some(path)) => Err(ConfigError {
                name: file_setting,
                value: path,
                problem: format!("{name} is set too; give the secret one way"),
            }),
            (Some(value), None) => Ok(Some(Secret(value))),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
                    name: file_setting,
                    value: path,
                    problem: e.to_string(),
                })?;
                Ok(Some(Secret(text.trim_end_matches(['\r', '\n']).to_owned())))
            }
            (None, None) => Ok(None),
        }
    }
}

/// A secret value: `Debug` and `Display` print a placeholder.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How a worker connects to NATS.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// `NATS_URL`, comma-separated for several servers of a cluster; `tls://` requires TLS.
    pub url: String,
    /// `NATS_USER` and `NATS_PASSWORD`.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// `NATS_CREDS`: path to a credentials file (JWT and seed).
    pub creds_file: Option<String>,
    /// `NATS_NKEY_FILE`: path to the file holding the worker's NKEY seed, read at start.
    pub nkey: Option<Secret>,
    /// `NATS_CA_FILE`: the CA certificate (PEM) the server's certificate must be signed by;
    /// TLS is then required.
    pub ca_file: Option<PathBuf>,
    /// `NATS_INBOX_PREFIX`: where replies come back; the server lets each identity subscribe
    /// under its own prefix only. Default `_INBOX_<service>-worker`.
    pub inbox_prefix: String,
}

impl NatsConfig {
    /// Reads the settings of `service`'s workers; the seed file and CA file must be readable.
    pub fn load(service: &str, s: &Settings) -> Result<Self, ConfigError> {
        let nkey = match s.raw("NATS_NKEY_FILE") {
            None => None,
            Some(path) => Some(Secret(
                auth::read_seed(Path::new(&path))
                    .map_err(|e| ConfigError {
                        name: "NATS_NKEY_FILE".into(),
                        value: path.clone(),
                        problem: e.to_string(),
                    })?
                    .expose()
                    .to_owned(),
            )),
        };
        let ca_file = match s.raw("NATS_CA_FILE") {
            None => None,
            Some(path) => {
                std::fs::File::open(&path).map_err(|e| ConfigError {
                    name: "NATS_CA_FILE".into(),
                    value: path.clone(),
                    problem: e.to_string(),
                })?;
                Some(PathBuf::from(path))
            }
        };
        let default_prefix = match Service::from_name(service) {
            Some(service) => auth::Identity::Worker(service).inbox_prefix(),
            None => auth::DEFAULT_INBOX_PREFIX.to_owned(),
        };
        Ok(NatsConfig {
            url: s.get("NATS_URL", "nats://127.0.0.1:4222".to_owned())?,
            user: s.raw("NATS_USER"),
            password: s.secret("NATS_PASSWORD"),
            creds_file: s.raw("NATS_CREDS"),
            nkey,
            ca_file,
            inbox_prefix: s.get("NATS_INBOX_PREFIX", default_prefix)?,
        })
    }

    /// Connects, retrying in the background if the server is not up yet. What the server
    /// reports (refused credentials, a permission it denied) is logged.
    pub async fn connect(
        &self,
        name: &str,
    ) -> Result<async_nats::Client, async_nats::ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name(name)
            .custom_inbox_prefix(&self.inbox_prefix)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|event| async move { log_event(event) });
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.expose().to_owned());
        }
        if let Some(path) = &self.creds_file {
            options = options.credentials_file(path).await?;
        }
        if let Some(seed) = &self.nkey {
            options = options.nkey(seed.expose().to_owned());
        }
        if let Some(path) = &self.ca_file {
            options = options
                .add_root_certificates(path.clone())
                .require_tls(true);
        }
        let servers: Vec<&str> = self.url.split(',').map(str::trim).collect();
        options.connect(servers).await
    }
}

/// Logs what the client library reports about the connection.
fn log_event(event: async_nats::Event) {
    use async_nats::Event;
    match event {
        Event::Connected => tracing::info!("connected to NATS"),
        Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
        Event::ServerError(e) => tracing::error!(error = %e, "the NATS server reports an error"),
        Event::ClientError(e) => tracing::warn!(error = %e, "NATS client error"),
        Event::SlowConsumer(sid) => tracing::warn!(sid, "slow consumer"),
        Event::LameDuckMode => tracing::warn!("the NATS server is shutting down (lame duck)"),
        other => tracing::debug!(event = %other, "NATS"),
    }
}

/// `RIDESAGA_RUNTIME_THREADS`: threads of the worker's async runtime. Default 1, a
/// current-thread runtime: a replica's inputs meet at one database writer anyway, the work
/// between two awaits is short, and one thread spares the hand-offs between runtime threads
/// that cost more CPU than they save on a busy node. Scale out with replicas; raise it for a
/// replica that should use several cores (with PostgreSQL, say).
pub fn runtime_threads(s: &Settings) -> Result<usize, ConfigError> {
    let threads: usize = s.get("RIDESAGA_RUNTIME_THREADS", 1)?;
    if threads == 0 {
        return Err(ConfigError {
            name: "RIDESAGA_RUNTIME_THREADS".into(),
            value: "0".into(),
            problem: "must be at least 1".into(),
        });
    }
    Ok(threads)
}

/// Settings of the shared runtime, the same for every service.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub nats: NatsConfig,
    /// `DATABASE_URL`, default `sqlite://.run/data/<service>.db`.
    pub database_url: String,
    /// `RIDESAGA_DB_POOL`: database connections for reads (the relay's look for outbox rows
    /// left behind). Every write goes through the writer's own connection, one turn at a time
    /// (SQLite admits one writer at a time), whatever this says. Default 1.
    pub db_pool: u32,
    /// `RIDESAGA_BATCH`: messages requested per pull. No larger than the in-flight limit by
    /// default: a message waiting in the client's buffer gets no progress acks, and one that
    /// waits past the ack wait is redelivered to another replica.
    pub batch: usize,
    /// `RIDESAGA_MAX_IN_FLIGHT`: messages handled concurrently by one replica. Both default to
    /// [`default_window`] of the database's kind.
    pub max_in_flight: usize,
    /// `RIDESAGA_TICK`: how often timers (deadlines) are checked.
    pub tick: Duration,
    /// `RIDESAGA_RELAY_INTERVAL`: how often the outbox relay looks for rows left behind.
    pub relay_interval: Duration,
    /// `RIDESAGA_HTTP_ADDR`: `/healthz` and `/metrics`; port 0 picks a free port; `off` disables.
    pub http_addr: Option<SocketAddr>,
    /// `RIDESAGA_DRAIN_TIMEOUT`: how long in-flight messages may take after SIGTERM.
    pub drain_timeout: Duration,
    /// `RIDESAGA_INSTANCE`: this replica's name (default: host name and pid).
    pub instance: String,
    /// `RIDESAGA_EFFECT_CONCURRENCY`: calls to the outside world (effects) one replica makes
    /// at once. Default 1024.
    pub effect_concurrency: usize,
    /// `RIDESAGA_EFFECT_TIMEOUT`: how long one attempt at an effect may take before it counts
    /// as a transient failure. Default 10s.
    pub effect_timeout: Duration,
    /// `RIDESAGA_EFFECT_DEADLINE`: how long after it was recorded an effect that fails
    /// transiently is retried before it settles as given up. Default 2m.
    pub effect_deadline: Duration,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`:
    /// where spans are exported (OTLP/HTTP JSON, `http://`); none when neither is set.
    pub otlp_endpoint: Option<ridesaga_schemas::trace::Endpoint>,
    /// `OTEL_SERVICE_NAME`: the spans' `service.name` (default `<service>-worker`).
    pub otel_service_name: String,
}

/// The default of `RIDESAGA_BATCH` and `RIDESAGA_MAX_IN_FLIGHT` on SQLite.
const SQLITE_WINDOW: usize = 64;
/// Their default on PostgreSQL, where a transaction costs network round trips and takes the
/// service's writer lock: a replica keeps four times as many inputs in flight, so that the
/// batches that amortise those are as large as its share of the load allows.
const POSTGRES_WINDOW: usize = 256;

/// How many inputs a replica pulls at once and handles at once by default, on `kind`.
pub fn default_window(kind: Kind) -> usize {
    match kind {
        Kind::Sqlite => SQLITE_WINDOW,
        Kind::Postgres => POSTGRES_WINDOW,
    }
}

impl RuntimeConfig {
    pub fn load(service: &str, s: &Settings) -> Result<Self, ConfigError> {
        let http_addr = match s.raw("RIDESAGA_HTTP_ADDR").as_deref() {
            Some("off") => None,
            _ => Some(s.get("RIDESAGA_HTTP_ADDR", SocketAddr::from(([127, 0, 0, 1], 0)))?),
        };
        let positive = |name: &str, value: usize| {
            if value == 0 {
                Err(ConfigError {
                    name: name.into(),
                    value: "0".into(),
                    problem: "must be at least 1".into(),
                })
            } else {
                Ok(value)
            }
        };
        let nonzero = |name: &str, value: Duration| {
            if value.is_zero() {
                Err(ConfigError {
                    name: name.into(),
                    value: s.raw(name).unwrap_or_default(),
                    problem: "must be longer than 0".into(),
                })
            } else {
                Ok(value)
            }
        };
        let database_url: String =
            s.get("DATABASE_URL", format!("sqlite://.run/data/{service}.db"))?;
        let window = Kind::of_url(&database_url).map_or(SQLITE_WINDOW, default_window);
        let traces = s.raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let base = s.raw("OTEL_EXPORTER_OTLP_ENDPOINT");
        let otlp_endpoint =
            ridesaga_schemas::trace::traces_endpoint(traces.as_deref(), base.as_deref()).map_err(
                |problem| ConfigError {
                    name: if traces.is_some() {
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT".into()
                    } else {
                        "OTEL_EXPORTER_OTLP_ENDPOINT".into()
                    },
                    value: traces.clone().or(base.clone()).unwrap_or_default(),
                    problem,
                },
            )?;
        Ok(RuntimeConfig {
            nats: NatsConfig::load(service, s)?,
            database_url,
            db_pool: s.get("RIDESAGA_DB_POOL", 1)?,
            batch: positive("RIDESAGA_BATCH", s.get("RIDESAGA_BATCH", window)?)?,
            max_in_flight: positive(
                "RIDESAGA_MAX_IN_FLIGHT",
                s.get("RIDESAGA_MAX_IN_FLIGHT", window)?,
            )?,
            tick: s.duration("RIDESAGA_TICK", Duration::from_millis(250))?,
            relay_interval: s.duration("RIDESAGA_RELAY_INTERVAL", Duration::from_secs(1))?,
            http_addr,
            drain_timeout: s.duration("RIDESAGA_DRAIN_TIMEOUT", Duration::from_secs(20))?,
            instance: s.get(
                "RIDESAGA_INSTANCE",
                format!("{service}-{}", std::process::id()),
            )?,
            effect_concurrency: positive(
                "RIDESAGA_EFFECT_CONCURRENCY",
                s.get("RIDESAGA_EFFECT_CONCURRENCY", 1024)?,
            )?,
            effect_timeout: nonzero(
                "RIDESAGA_EFFECT_TIMEOUT",
                s.duration("RIDESAGA_EFFECT_TIMEOUT", Duration::from_secs(10))?,
            )?,
            effect_deadline: nonzero(
                "RIDESAGA_EFFECT_DEADLINE",
                s.duration("RIDESAGA_EFFECT_DEADLINE", Duration::from_secs(120))?,
            )?,
            otlp_endpoint,
            otel_service_name: s.get("OTEL_SERVICE_NAME", format!("{service}-worker"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_setting_names_the_variable_and_needs_a_unit() {
        let settings = Settings::from_pairs([("RIDESAGA_TICK", "250")]);
        let error = settings
            .duration("RIDESAGA_TICK", Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("RIDESAGA_TICK") && error.contains("no unit"),
            "{error}"
        );
    }
    #[test]
    fn a_bad_setting_is_named_in_the_error() {
        let s = Settings::from_pairs([("RIDESAGA_BATCH", "lots")]);
        let err = RuntimeConfig::load("ride", &s).unwrap_err().to_string();
        assert!(
            err.starts_with("invalid setting RIDESAGA_BATCH=\"lots\""),
            "{err}"
        );
    }

    #[test]
    fn the_window_defaults_by_the_database_and_can_be_set() {
        let window = |pairs: &[(&str, &str)]| {
            let config =
                RuntimeConfig::load("ride", &Settings::from_pairs(pairs.to_vec())).unwrap();
            (config.batch, config.max_in_flight)
        };
        assert_eq!(window(&[]), (64, 64));
        let postgres = ("DATABASE_URL", "postgres://u:p@127.0.0.1:5432/ride");
        assert_eq!(window(&[postgres]), (256, 256));
        assert_eq!(
            window(&[
                postgres,
                ("RIDESAGA_BATCH", "32"),
                ("RIDESAGA_MAX_IN_FLIGHT", "48")
            ]),
            (32, 48)
        );
    }

    #[test]
    fn effect_settings_have_defaults_and_refuse_zero() {
        let config =
            RuntimeConfig::load("payment", &Settings::from_pairs::<_, &str, &str>([])).unwrap();
        assert_eq!(config.effect_concurrency, 1024);
        assert_eq!(config.effect_timeout, Duration::from_secs(10));
        assert_eq!(config.effect_deadline, Duration::from_secs(120));
        for (name, value) in [
            ("RIDESAGA_EFFECT_CONCURRENCY", "0"),
            ("RIDESAGA_EFFECT_TIMEOUT", "0s"),
            ("RIDESAGA_EFFECT_DEADLINE", "0ms"),
        ] {
            let err = RuntimeConfig::load("payment", &Settings::from_pairs([(name, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid setting {name}=")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_runtime_has_one_thread_unless_told_otherwise() {
        assert_eq!(
            runtime_threads(&Settings::from_pairs::<_, &str, &str>([])).unwrap(),
            1
        );
        let four = Settings::from_pairs([("RIDESAGA_RUNTIME_THREADS", "4")]);
        assert_eq!(runtime_threads(&four).unwrap(), 4);
        let zero = Settings::from_pairs([("RIDESAGA_RUNTIME_THREADS", "0")]);
        let err = runtime_threads(&zero).unwrap_err().to_string();
        assert!(
            err.contains("RIDESAGA_RUNTIME_THREADS") && err.contains("at least 1"),
            "{err}"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let dir = tempfile::tempdir().unwrap();
        let installation = auth::init(dir.path()).unwrap();
        let seed_file = installation.seed_file(auth::Identity::Worker(Service::Ride));
        let seed = auth::read_seed(&seed_file).unwrap();
        let s = Settings::from_pairs([
            ("NATS_PASSWORD", "hunter2".to_owned()),
            ("NATS_NKEY_FILE", seed_file.display().to_string()),
        ]);
        let config = NatsConfig::load("ride", &s).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(!printed.contains(seed.expose()), "{printed}");
        assert_eq!(config.nkey.unwrap().expose(), seed.expose());
    }

    #[test]
    fn a_worker_replies_on_its_own_inbox_prefix_unless_told_otherwise() {
        let none = Settings::from_pairs::<_, &str, &str>([]);
        assert_eq!(
            NatsConfig::load("payment", &none).unwrap().inbox_prefix,
            "_INBOX_payment-worker"
        );
        let set = Settings::from_pairs([("NATS_INBOX_PREFIX", "_INBOX_bench")]);
        assert_eq!(
            NatsConfig::load("payment", &set).unwrap().inbox_prefix,
            "_INBOX_bench"
        );
    }

    #[test]
    fn an_unreadable_seed_or_ca_file_stops_the_worker_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.nk");
        let bad = dir.path().join("bad.nk");
        std::fs::write(&bad, "SUNOTASEED").unwrap();
        for (name, path) in [
            ("NATS_NKEY_FILE", &missing),
            ("NATS_NKEY_FILE", &bad),
            ("NATS_CA_FILE", &missing),
        ] {
            let s = Settings::from_pairs([(name, path.display().to_string())]);
            let err = NatsConfig::load("ride", &s).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("invalid setting {name}=")),
                "{err}"
            );
            assert!(!err.contains("SUNOTASEED"), "the file's content in {err}");
        }
    }
}
