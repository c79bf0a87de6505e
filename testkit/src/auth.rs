//! The identities and TLS a test server runs with, as an installation's would.
//!
//! [`Credentials`]: a temporary directory of NKEY seeds, one per identity
//! ([`ridesaga_schemas::auth::init`]), and the server configuration that knows their public
//! keys and permissions. [`Tls`]: a certificate authority and a server certificate for
//! 127.0.0.1 and localhost, made with `openssl` as `scripts/up --tls` makes them.
//! [`connect_options`] connects as an identity, verifying the server against the CA when TLS is
//! on.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::Duration,
};

pub use ridesaga_schemas::auth::Identity;
use ridesaga_schemas::auth::{self, Installation};
use tempfile::TempDir;

use crate::Error;

/// An installation's identities in a temporary directory, removed when the last server that
/// uses them is dropped.
#[derive(Debug)]
pub struct Credentials {
    installation: Installation,
    server_config: String,
    _dir: TempDir,
}

impl Credentials {
    /// Generates a seed for every identity and the server configuration.
    pub fn generate() -> Result<Arc<Credentials>, Error> {
        let dir = tempfile::Builder::new()
            .prefix("ridesaga-auth-")
            .tempdir()
            .map_err(Error::io("create the identities' directory"))?;
        let installation = auth::init(dir.path()).map_err(|e| Error::Io {
            action: "generate the identities".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let server_config = fs::read_to_string(installation.server_config())
            .map_err(Error::io("read the generated auth.conf"))?;
        Ok(Arc::new(Credentials {
            installation,
            server_config,
            _dir: dir,
        }))
    }

    /// The seed file of `identity` (mode 0600).
    pub fn seed_file(&self, identity: Identity) -> PathBuf {
        self.installation.seed_file(identity)
    }

    /// The directory of the seeds and `auth.conf`.
    pub fn dir(&self) -> &Path {
        &self.installation.dir
    }

    /// The accounts, users and permissions, as the server's configuration includes them.
    pub fn server_config(&self) -> &str {
        &self.server_config
    }
}

/// A certificate authority and the server certificate it signed, in a temporary directory.
#[derive(Debug)]
pub struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _dir: TempDir,
}

impl Tls {
    /// Makes a CA and a server certificate for `127.0.0.1` and `localhost` with `openssl`.
    pub fn generate() -> Result<Arc<Tls>, Error> {
        let dir = tempfile::Builder::new()
            .prefix("ridesaga-tls-")
            .tempdir()
            .map_err(Error::io("create the certificates' directory"))?;
        let path = |name: &str| dir.path().join(name);
        let (ca, ca_key) = (path("ca.pem"), path("ca-key.pem"));
        let (cert, key, csr) = (
            path("server.pem"),
            path("server-key.pem"),
            path("server.csr"),
        );
        let extensions = path("server.ext");
        fs::write(
            &extensions,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth\n\
             keyUsage=digitalSignature,keyEncipherment\n",
        )
        .map_err(Error::io("write the certificate's extensions"))?;
        let text = |p: &Path| p.display().to_string();
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ridesaga test CA",
            "-keyout",
            &text(&ca_key),
            "-out",
            &text(&ca),
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &text(&key),
            "-out",
            &text(&csr),
        ])?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &text(&csr),
            "-CA",
            &text(&ca),
            "-CAkey",
            &text(&ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &text(&extensions),
            "-out",
            &text(&cert),
        ])?;
        Ok(Arc::new(Tls {
            ca,
            cert,
            key,
            _dir: dir,
        }))
    }

    /// The CA certificate clients verify the server with.
    pub fn ca_file(&self) -> &Path {
        &self.ca
    }

    /// The server's `tls {}` block: TLS required of every client.
    pub(crate) fn server_block(&self) -> String {
        format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 2\n}}\n",
            crate::config::quote(&self.cert),
            crate::config::quote(&self.key),
        )
    }
}

fn openssl(args: &[&str]) -> Result<(), Error> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .map_err(Error::io("run openssl (install it to test TLS)"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Io {
            action: format!("openssl {}", args.first().copied().unwrap_or_default()),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        })
    }
}

/// Options that connect as `identity` (its seed and inbox prefix) when `credentials` are
/// given, and verify the server against the CA when `tls` is.
pub fn connect_options(
    identity: Identity,
    credentials: Option<&Credentials>,
    tls: Option<&Tls>,
) -> Result<async_nats::ConnectOptions, Error> {
    let mut options = async_nats::ConnectOptions::new().connection_timeout(Duration::from_secs(5));
    if let Some(credentials) = credentials {
        let seed = auth::read_seed(&credentials.seed_file(identity)).map_err(|e| Error::Io {
            action: format!("read the seed of {identity}"),
            source: std::io::Error::other(e.to_string()),
        })?;
        options = options
            .nkey(seed.expose().to_owned())
            .custom_inbox_prefix(identity.inbox_prefix());
    }
    if let Some(tls) = tls {
        options = options
            .add_root_certificates(tls.ca_file().to_owned())
            .require_tls(true);
    }
    Ok(options)
}

/// The environment a process needs to connect as `identity` to `url`: `NATS_URL`, and with
/// credentials `NATS_NKEY_FILE` and `NATS_INBOX_PREFIX`, with TLS `NATS_CA_FILE`.
pub fn environment(
    url: String,
    identity: Identity,
    credentials: Option<&Credentials>,
    tls: Option<&Tls>,
) -> Vec<(String, String)> {
    let mut env = vec![("NATS_URL".to_owned(), url)];
    if let Some(credentials) = credentials {
        env.push((
            "NATS_NKEY_FILE".into(),
            credentials.seed_file(identity).display().to_string(),
        ));
        env.push(("NATS_INBOX_PREFIX".into(), identity.inbox_prefix()));
    }
    if let Some(tls) = tls {
        env.push(("NATS_CA_FILE".into(), tls.ca_file().display().to_string()));
    }
    env
}
