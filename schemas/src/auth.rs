//! Who may say what on the bus: the NATS identities of an installation, what each may publish
//! and subscribe to, and the files that hold them.
//!
//! Everything lives in one account, [`ACCOUNT`]; the server's own monitoring in
//! [`SYSTEM_ACCOUNT`]. Each identity is an NKEY: the server's configuration holds public keys
//! only ([`render_server_config`]), each process gets the seed of its own identity in a file
//! of mode 0600 ([`init`] writes them, [`read_seed`] reads one), and the server authenticates
//! it by challenge and signature, so no secret crosses the wire or sits in a server's file.
//!
//! The permissions follow the contract: a worker publishes its own events
//! (`evt.<service>.>`) and dead letters (`dlq.<service>.>`), pulls from and acks its own
//! durable consumer, reads the saga stream's state, receives replies on its own inbox prefix
//! and answers the service API under its own name; it cannot create, change or delete streams
//! or consumers. `ridectl-admin` operates everything; `ridectl-viewer` reads (streams,
//! consumers, stored messages through consumers of its own, the workers' service API) and
//! publishes nothing; `ridesaga-provision` creates and updates the streams and the services'
//! consumers, nothing else. Drivers' positions (`pos.driver.<id>`) are published by
//! `ridectl-admin` and read by the ride worker through its own consumer.

use std::fmt::{self, Write as _};
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::position::POSITION_PREFIX;
use crate::streams::{
    DEAD_LETTER_PREFIX, DEAD_LETTER_STREAM, POSITION_STREAM, RIDE_POSITIONS_CONSUMER, SAGA_STREAM,
    Service,
};

/// The account every Ridesaga identity belongs to, and whose JetStream holds the streams.
pub const ACCOUNT: &str = "RIDESAGA";
/// The server's system account (its own monitoring and events).
pub const SYSTEM_ACCOUNT: &str = "SYS";
/// The file, beside the seeds, that a server's configuration includes.
pub const SERVER_CONFIG_FILE: &str = "auth.conf";
/// The extension of a seed file: `<identity>.nk`.
pub const SEED_EXTENSION: &str = "nk";
/// The inbox prefix of `ridectl-admin`: the client library's default, so that the admin's
/// seed alone is enough for `ridectl` and other NATS tools.
pub const DEFAULT_INBOX_PREFIX: &str = "_INBOX";

/// One identity on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A service's workers (every replica of it).
    Worker(Service),
    /// `ridectl` for operators: commands, provisioning, dead-letter replay, everything.
    Admin,
    /// `ridectl` read-only: streams, consumers, events, saga traces, audits, services.
    Viewer,
    /// The provisioning job: creates and updates the streams and the services' consumers.
    Provision,
    /// The system account's user, for the server's own monitoring requests.
    System,
}

impl Identity {
    /// Every identity of an installation.
    pub const ALL: [Identity; 9] = [
        Identity::Worker(Service::Ride),
        Identity::Worker(Service::Driver),
        Identity::Worker(Service::Fraud),
        Identity::Worker(Service::Payment),
        Identity::Worker(Service::Notification),
        Identity::Admin,
        Identity::Viewer,
        Identity::Provision,
        Identity::System,
    ];

    /// Its name: `<service>-worker`, `ridectl-admin`, `ridectl-viewer`, `ridesaga-provision`,
    /// `sys`. It names the seed file and, but for the admin, the inbox prefix.
    pub fn name(self) -> String {
        match self {
            Identity::Worker(service) => service.consumer_name(),
            Identity::Admin => "ridectl-admin".into(),
            Identity::Viewer => "ridectl-viewer".into(),
            Identity::Provision => "ridesaga-provision".into(),
            Identity::System => "sys".into(),
        }
    }

    /// The identity called `name`.
    pub fn from_name(name: &str) -> Option<Identity> {
        Identity::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The account it belongs to.
    pub fn account(self) -> &'static str {
        match self {
            Identity::System => SYSTEM_ACCOUNT,
            _ => ACCOUNT,
        }
    }

    /// The prefix of the subjects it receives replies on (`ConnectOptions::custom_inbox_prefix`):
    /// `_INBOX_<name>`, or `_INBOX` for the admin. Nobody else may subscribe under it.
    pub fn inbox_prefix(self) -> String {
        match self {
            Identity::Admin | Identity::System => DEFAULT_INBOX_PREFIX.into(),
            _ => format!("{DEFAULT_INBOX_PREFIX}_{}", self.name()),
        }
    }

    /// Its seed file in the directory `dir`.
    pub fn seed_file(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.{SEED_EXTENSION}", self.name()))
    }

    /// What it may publish and subscribe to; `None` for the system user, whom the server
    /// restricts to its own account.
    pub fn permissions(self) -> Option<Permissions> {
        let api = |rest: &str| format!("$JS.API.{rest}");
        let inbox = format!("{}.>", self.inbox_prefix());
        Some(match self {
            Identity::Worker(service) => {
                let name = service.name();
                let consumer = service.consumer_name();
                let mut publish = vec![
                    format!("evt.{name}.>"),
                    format!("{DEAD_LETTER_PREFIX}.{name}.>"),
                ];
                publish.extend(pull_own(SAGA_STREAM, &consumer));
                if service == Service::Ride {
                    // The ride service records routes from the positions stream.
                    publish.extend(pull_own(POSITION_STREAM, RIDE_POSITIONS_CONSUMER));
                }
                Permissions {
                    publish,
                    publish_deny: Vec::new(),
                    subscribe: vec![
                        inbox,
                        "$SRV.PING".into(),
                        "$SRV.INFO".into(),
                        "$SRV.STATS".into(),
                        format!("$SRV.*.{}", service_api_name(service)),
                        format!("$SRV.*.{}.*", service_api_name(service)),
                        format!("ridesaga.status.{name}"),
                        format!("ridesaga.effects.{name}"),
                    ],
                    // Answers to the service API's requests, on the requester's reply subject.
                    allow_responses: true,
                }
            }
            Identity::Admin => Permissions {
                publish: vec![
                    "cmd.>".into(),
                    // A dead letter's original message is replayed on its own subject.
                    "evt.>".into(),
                    // Drivers' positions, for `ridectl driver position`.
                    format!("{POSITION_PREFIX}.>"),
                    api(">"),
                    "$SRV.>".into(),
                    "ridesaga.>".into(),
                ],
                publish_deny: Vec::new(),
                subscribe: vec![inbox],
                allow_responses: false,
            },
            Identity::Viewer => Permissions {
                publish: vec![
                    api("INFO"),
                    api("STREAM.NAMES"),
                    api("STREAM.LIST"),
                    api("STREAM.INFO.*"),
                    api("STREAM.MSG.GET.*"),
                    api("DIRECT.GET.>"),
                    api("CONSUMER.NAMES.*"),
                    api("CONSUMER.LIST.*"),
                    api("CONSUMER.INFO.*.*"),
                    // Its own consumers, to read a stream: created without a name, or named
                    // by the client when it recreates one.
                    api("CONSUMER.CREATE.*"),
                    api("CONSUMER.CREATE.*.>"),
                    api("CONSUMER.MSG.NEXT.*.*"),
                    // And deletes them once read (the server would keep them a while).
                    api("CONSUMER.DELETE.*.*"),
                    "$SRV.PING".into(),
                    "$SRV.INFO".into(),
                    "$SRV.STATS".into(),
                    "$SRV.*.*".into(),
                    "$SRV.*.*.*".into(),
                    "ridesaga.status.*".into(),
                    "ridesaga.effects.*".into(),
                ],
                // Never the services' consumers: neither changed nor pulled from.
                publish_deny: service_consumers()
                    .flat_map(|(stream, consumer)| {
                        [
                            api(&format!("CONSUMER.CREATE.{stream}.{consumer}")),
                            api(&format!("CONSUMER.CREATE.{stream}.{consumer}.>")),
                            api(&format!("CONSUMER.MSG.NEXT.{stream}.{consumer}")),
                            api(&format!("CONSUMER.DELETE.{stream}.{consumer}")),
                        ]
                    })
                    .collect(),
                subscribe: vec![inbox],
                allow_responses: false,
            },
            Identity::Provision => {
                let mut publish = vec![api("INFO")];
                for stream in [SAGA_STREAM, DEAD_LETTER_STREAM, POSITION_STREAM] {
                    for verb in ["INFO", "CREATE", "UPDATE"] {
                        publish.push(api(&format!("STREAM.{verb}.{stream}")));
                    }
                }
                for (stream, consumer) in service_consumers() {
                    publish.push(api(&format!("CONSUMER.CREATE.{stream}.{consumer}")));
                    publish.push(api(&format!("CONSUMER.CREATE.{stream}.{consumer}.>")));
                    publish.push(api(&format!("CONSUMER.INFO.{stream}.{consumer}")));
                }
                Permissions {
                    publish,
                    publish_deny: Vec::new(),
                    subscribe: vec![inbox],
                    allow_responses: false,
                }
            }
            Identity::System => return None,
        })
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// What a worker needs to pull from its own durable `consumer` on `stream` and ack.
fn pull_own(stream: &str, consumer: &str) -> [String; 4] {
    [
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]
}

/// Every durable consumer the services own, with its stream.
fn service_consumers() -> impl Iterator<Item = (&'static str, String)> {
    Service::ALL
        .into_iter()
        .map(|service| (SAGA_STREAM, service.consumer_name()))
        .chain([(POSITION_STREAM, RIDE_POSITIONS_CONSUMER.to_string())])
}

/// The name a service's workers register with the NATS service API (`$SRV.*.<name>`).
pub fn service_api_name(service: Service) -> String {
    format!("ridesaga-{}", service.name())
}

/// What one identity may do; anything not allowed is refused by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects it may publish to (requests included).
    pub publish: Vec<String>,
    /// Subjects it may not publish to even where `publish` allows them.
    pub publish_deny: Vec<String>,
    /// Subjects it may subscribe to.
    pub subscribe: Vec<String>,
    /// Whether it may answer requests it received (once each, on their reply subject).
    pub allow_responses: bool,
}

/// A user's NKEY seed. `Debug` prints a placeholder.
#[derive(Clone, PartialEq, Eq)]
pub struct Seed(String);

impl Seed {
    /// The seed's text (`SU...`), for the client library.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The public key (`U...`) the server knows the identity by.
    pub fn public_key(&self) -> Result<String, String> {
        nkeys::KeyPair::from_seed(&self.0)
            .map(|pair| pair.public_key())
            .map_err(|e| e.to_string())
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(***)")
    }
}

/// Why the identities could not be written or a seed read.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a user NKEY seed: {problem}")]
    BadSeed { path: PathBuf, problem: String },
}

/// Reads the seed in `path`: one line `SU...` (surrounding whitespace is ignored).
pub fn read_seed(path: &Path) -> Result<Seed, AuthError> {
    let text = fs::read_to_string(path).map_err(|source| AuthError::Io {
        action: "reading",
        path: path.to_owned(),
        source,
    })?;
    parse_seed(text.trim()).map_err(|problem| AuthError::BadSeed {
        path: path.to_owned(),
        problem,
    })
}

fn parse_seed(text: &str) -> Result<Seed, String> {
    if !text.starts_with("SU") {
        return Err("a user seed starts with SU".into());
    }
    let pair = nkeys::KeyPair::from_seed(text).map_err(|e| e.to_string())?;
    if pair.key_pair_type() != nkeys::KeyPairType::User {
        return Err("not a user key".into());
    }
    Ok(Seed(text.to_owned()))
}

/// One identity as [`init`] left it.
#[derive(Debug, Clone)]
pub struct Member {
    pub identity: Identity,
    pub public_key: String,
    pub seed_file: PathBuf,
    /// Whether its seed was generated now (`false`: an existing one was kept).
    pub created: bool,
}

/// An installation's identities: a directory of seeds and the server's include file.
#[derive(Debug, Clone)]
pub struct Installation {
    pub dir: PathBuf,
    pub members: Vec<Member>,
}

/// A user of the server's configuration: an installation's identity, or another (a
/// measurement harness's) that the caller adds.
#[derive(Debug, Clone)]
pub struct User {
    /// Shown in a comment above the user.
    pub name: String,
    pub account: &'static str,
    pub public_key: String,
    /// `None`: whatever the account allows.
    pub permissions: Option<Permissions>,
}

impl Installation {
    /// The users of the server's configuration, one per identity.
    pub fn users(&self) -> Vec<User> {
        self.members
            .iter()
            .map(|m| User {
                name: m.identity.name(),
                account: m.identity.account(),
                public_key: m.public_key.clone(),
                permissions: m.identity.permissions(),
            })
            .collect()
    }

    /// The server's include file ([`SERVER_CONFIG_FILE`] in the directory).
    pub fn server_config(&self) -> PathBuf {
        self.dir.join(SERVER_CONFIG_FILE)
    }

    /// The seed file of `identity`.
    pub fn seed_file(&self, identity: Identity) -> PathBuf {
        identity.seed_file(&self.dir)
    }
}

/// Makes `dir` (mode 0700) hold a seed for every identity (mode 0600; existing ones are kept,
/// so running it again changes nothing for processes already running) and the server's
/// include file with their public keys and permissions.
pub fn init(dir: &Path) -> Result<Installation, AuthError> {
    let io = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| AuthError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io("creating", dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("restricting", dir))?;
    let mut members = Vec::new();
    for identity in Identity::ALL {
        let path = identity.seed_file(dir);
        let (seed, created) = if path.exists() {
            (read_seed(&path)?, false)
        } else {
            let (seed, _) = generate_seed().map_err(|problem| AuthError::BadSeed {
                path: path.clone(),
                problem,
            })?;
            write_seed(&path, &seed)?;
            (seed, true)
        };
        let public_key = seed.public_key().map_err(|problem| AuthError::BadSeed {
            path: path.clone(),
            problem,
        })?;
        members.push(Member {
            identity,
            public_key,
            seed_file: path,
            created,
        });
    }
    let installation = Installation {
        dir: dir.to_owned(),
        members,
    };
    write_server_config(&installation.server_config(), &installation.users())?;
    Ok(installation)
}

/// Writes the server's configuration for `users` to `path` (mode 0600).
pub fn write_server_config(path: &Path, users: &[User]) -> Result<(), AuthError> {
    write_private(path, render_server_config(users).as_bytes())
}

/// Writes `bytes` to `path` with mode 0600, through a temporary file renamed over it.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    let err = |action: &'static str, at: &Path| {
        let at = at.to_owned();
        move |source| AuthError::Io {
            action,
            path: at,
            source,
        }
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .map_err(err("creating", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(err("writing", &temporary))?;
    fs::rename(&temporary, path).map_err(err("replacing", path))
}

/// The server's configuration for `users` (public keys only): the accounts, each user with its
/// permissions, and the system account.
pub fn render_server_config(users: &[User]) -> String {
    let mut text = String::from(
        "# Ridesaga's NATS identities: NKEY users (public keys only; each process holds its own\n\
         # seed) and what each may publish and subscribe to. Generated by `ridectl auth init`;\n\
         # see ridesaga_schemas::auth for the rules.\n\
         accounts {\n",
    );
    for account in [ACCOUNT, SYSTEM_ACCOUNT] {
        let _ = writeln!(text, "  {account} {{");
        if account == ACCOUNT {
            text.push_str("    jetstream: enabled\n");
        }
        text.push_str("    users: [\n");
        for user in users.iter().filter(|u| u.account == account) {
            let _ = writeln!(text, "      # {}", user.name.replace(['\r', '\n'], " "));
            let _ = write!(text, "      {{ nkey: {}", user.public_key);
            if let Some(p) = &user.permissions {
                text.push_str(", permissions: {\n");
                let _ = writeln!(
                    text,
                    "          publish: {{ allow: {}, deny: {} }}",
                    list(&p.publish),
                    list(&p.publish_deny)
                );
                let _ = writeln!(
                    text,
                    "          subscribe: {{ allow: {} }}",
                    list(&p.subscribe)
                );
                if p.allow_responses {
                    text.push_str("          allow_responses: true\n");
                }
                text.push_str("      } }\n");
            } else {
                text.push_str(" }\n");
            }
        }
        text.push_str("    ]\n  }\n");
    }
    let _ = writeln!(text, "}}\nsystem_account: {SYSTEM_ACCOUNT}");
    text
}

/// A new user key pair: its seed, and its public key.
pub fn generate_seed() -> Result<(Seed, String), String> {
    let pair = nkeys::KeyPair::new_user();
    let seed = pair.seed().map_err(|e| e.to_string())?;
    Ok((Seed(seed), pair.public_key()))
}

/// Writes `seed` to `path` with mode 0600.
pub fn write_seed(path: &Path, seed: &Seed) -> Result<(), AuthError> {
    write_private(path, format!("{}\n", seed.expose()).as_bytes())
}

fn list(subjects: &[String]) -> String {
    let quoted: Vec<String> = subjects.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MessageKind;

    /// Whether `subject` matches the NATS pattern `pattern` (`*` one token, `>` the rest).
    fn matches(pattern: &str, subject: &str) -> bool {
        let mut subject = subject.split('.');
        for token in pattern.split('.') {
            match (token, subject.next()) {
                (">", Some(_)) => return true,
                (_, None) => return false,
                ("*", Some(_)) => {}
                (literal, Some(actual)) if literal == actual => {}
                _ => return false,
            }
        }
        subject.next().is_none()
    }

    fn may_publish(identity: Identity, subject: &str) -> bool {
        let p = identity.permissions().unwrap();
        p.publish.iter().any(|a| matches(a, subject))
            && !p.publish_deny.iter().any(|d| matches(d, subject))
    }

    #[test]
    fn the_pattern_matcher_follows_nats() {
        assert!(matches("evt.ride.>", "evt.ride.requested.r_1"));
        assert!(!matches("evt.ride.>", "evt.ride"));
        assert!(matches(
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.INFO.RIDESAGA"
        ));
        assert!(!matches("$JS.API.STREAM.INFO.*", "$JS.API.STREAM.INFO.A.B"));
    }

    #[test]
    fn each_worker_publishes_exactly_its_own_events_and_dead_letters() {
        for service in Service::ALL {
            let worker = Identity::Worker(service);
            for kind in MessageKind::ALL {
                let subject = format!("{}.r_1", kind.as_str());
                let own = !kind.is_command() && kind.domain() == service.name();
                assert_eq!(may_publish(worker, &subject), own, "{worker} {subject}");
            }
            assert!(may_publish(worker, &format!("dlq.{service}.42")));
            for other in Service::ALL.into_iter().filter(|o| *o != service) {
                assert!(!may_publish(worker, &format!("dlq.{other}.42")));
                let pull = format!(
                    "$JS.API.CONSUMER.MSG.NEXT.RIDESAGA.{}",
                    other.consumer_name()
                );
                assert!(!may_publish(worker, &pull), "{worker} {pull}");
            }
            for forbidden in [
                "$JS.API.STREAM.DELETE.RIDESAGA",
                "$JS.API.STREAM.PURGE.RIDESAGA",
                "$JS.API.STREAM.CREATE.RIDESAGA",
                "$JS.API.CONSUMER.DELETE.RIDESAGA.ride-worker",
                "$JS.API.CONSUMER.CREATE.RIDESAGA.ride-worker",
                "$SRV.PING",
            ] {
                assert!(!may_publish(worker, forbidden), "{worker} {forbidden}");
            }
        }
    }

    #[test]
    fn the_viewer_publishes_nothing_to_the_streams_and_leaves_the_services_consumers_alone() {
        let viewer = Identity::Viewer;
        for kind in MessageKind::ALL {
            assert!(!may_publish(viewer, &format!("{}.r_1", kind.as_str())));
        }
        assert!(!may_publish(viewer, "dlq.ride.1"));
        for service in Service::ALL {
            let consumer = service.consumer_name();
            for subject in [
                format!("$JS.API.CONSUMER.MSG.NEXT.RIDESAGA.{consumer}"),
                format!("$JS.API.CONSUMER.CREATE.RIDESAGA.{consumer}"),
                format!("$JS.API.CONSUMER.CREATE.RIDESAGA.{consumer}.evt.>"),
                format!("$JS.API.CONSUMER.DELETE.RIDESAGA.{consumer}"),
            ] {
                assert!(!may_publish(viewer, &subject), "{subject}");
            }
        }
        for allowed in [
            "$JS.API.STREAM.INFO.RIDESAGA",
            "$JS.API.CONSUMER.CREATE.RIDESAGA",
            "$JS.API.CONSUMER.CREATE.RIDESAGA.abc_1.evt.ride.>",
            "$JS.API.CONSUMER.MSG.NEXT.RIDESAGA.abc_1",
            "$JS.API.CONSUMER.DELETE.RIDESAGA.abc_1",
            "$SRV.INFO",
            "ridesaga.effects.payment",
        ] {
            assert!(may_publish(viewer, allowed), "{allowed}");
        }
        for forbidden in [
            "$JS.API.STREAM.DELETE.RIDESAGA",
            "$JS.API.STREAM.PURGE.RIDESAGA",
            "$JS.API.STREAM.UPDATE.RIDESAGA",
            "$JS.API.CONSUMER.DURABLE.CREATE.RIDESAGA.x",
        ] {
            assert!(!may_publish(viewer, forbidden), "{forbidden}");
        }
    }

    #[test]
    fn provisioning_creates_and_updates_but_never_deletes() {
        let job = Identity::Provision;
        assert!(may_publish(job, "$JS.API.STREAM.CREATE.RIDESAGA"));
        assert!(may_publish(job, "$JS.API.STREAM.UPDATE.RIDESAGA_DLQ"));
        assert!(may_publish(
            job,
            "$JS.API.CONSUMER.CREATE.RIDESAGA.payment-worker"
        ));
        for forbidden in [
            "$JS.API.STREAM.DELETE.RIDESAGA",
            "$JS.API.STREAM.PURGE.RIDESAGA",
            "$JS.API.CONSUMER.DELETE.RIDESAGA.payment-worker",
            "$JS.API.CONSUMER.CREATE.RIDESAGA.other",
            "cmd.ride.request.r_1",
            "evt.ride.requested.r_1",
        ] {
            assert!(!may_publish(job, forbidden), "{forbidden}");
        }
    }

    #[test]
    fn inbox_prefixes_are_distinct() {
        let mut prefixes: Vec<String> = Identity::ALL
            .into_iter()
            .filter(|i| *i != Identity::System)
            .map(Identity::inbox_prefix)
            .collect();
        let count = prefixes.len();
        prefixes.sort();
        prefixes.dedup();
        assert_eq!(prefixes.len(), count);
        assert_eq!(Identity::Admin.inbox_prefix(), "_INBOX");
        assert_eq!(
            Identity::Worker(Service::Payment).inbox_prefix(),
            "_INBOX_payment-worker"
        );
        for identity in Identity::ALL {
            assert_eq!(Identity::from_name(&identity.name()), Some(identity));
        }
    }

    #[test]
    fn init_writes_private_seeds_once_and_a_config_of_public_keys() {
        let dir = std::env::temp_dir().join(format!("ridesaga-auth-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = init(&dir).unwrap();
        assert!(first.members.iter().all(|m| m.created));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let config = fs::read_to_string(first.server_config()).unwrap();
        assert_eq!(mode(&first.server_config()), 0o600);
        for member in &first.members {
            assert_eq!(mode(&member.seed_file), 0o600);
            let seed = read_seed(&member.seed_file).unwrap();
            assert!(config.contains(&member.public_key));
            assert!(
                !config.contains(seed.expose()),
                "a seed in the server's file"
            );
            assert_eq!(format!("{seed:?}"), "Seed(***)");
        }
        let second = init(&dir).unwrap();
        assert!(second.members.iter().all(|m| !m.created));
        let keys = |i: &Installation| {
            i.members
                .iter()
                .map(|m| m.public_key.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&first), keys(&second));
        fs::write(Identity::Viewer.seed_file(&dir), "not a seed").unwrap();
        assert!(matches!(init(&dir), Err(AuthError::BadSeed { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}
