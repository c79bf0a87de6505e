//! [`Postgres`]: one real PostgreSQL server for the tests of one process, on a free loopback
//! port with its cluster in a temporary directory, and a fresh database per test.
//!
//! Creating a cluster takes a second or two, a database a few tens of milliseconds, so the
//! tests of one binary share one server ([`Postgres::shared`]) and each takes databases of its
//! own ([`Postgres::create_database`]). A fault test starts a server of its own
//! ([`Postgres::start`]) to [`Postgres::crash`] and [`Postgres::restart`] it. Every server has
//! a watchdog shell that stops it and deletes its directory once the test process has exited,
//! so nothing outlives the run even though a shared server is never dropped. Everything here
//! is blocking (processes and a TCP probe), so it works from any test, async or not.
//!
//! PostgreSQL refuses to run as root: when the tests run as root, the cluster belongs to the
//! `postgres` system user (created by Debian's package) and its programs run as that user.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, ports};

/// Where to look for PostgreSQL's programs besides `RIDESAGA_PG_BIN` and `pg_config`.
const DEBIAN_BIN_DIRS: &str = "/usr/lib/postgresql";
const USER: &str = "ridesaga";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running PostgreSQL server.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    password: String,
    /// Runs a program as the cluster's owner (empty when the tests do not run as root).
    run_as: Vec<String>,
}

impl Postgres {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> Result<&'static Postgres, Error> {
        static SHARED: OnceLock<Result<Postgres, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Postgres::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|reason| Error::Postgres {
                step: "start the shared server".into(),
                reason: reason.clone(),
            })
    }

    /// Creates a cluster in a new temporary directory and starts a server on it, stopped
    /// (and the directory deleted) once this process exits.
    pub fn start() -> Result<Postgres, Error> {
        let bin = find_bin_dir()?;
        let dir = tempdir()?;
        let run_as = if is_root() {
            chown_to_postgres(&dir)?;
            vec![
                "setpriv".into(),
                "--reuid=postgres".into(),
                "--regid=postgres".into(),
                "--init-groups".into(),
            ]
        } else {
            Vec::new()
        };
        let password = random_hex(16)?;
        let mut server = Postgres {
            bin,
            dir,
            port: ports::free_one()?,
            password,
            run_as,
        };
        server.initdb()?;
        let mut attempt = 1;
        loop {
            match server.pg_ctl_start() {
                Ok(()) => break,
                Err(error) if attempt < ports::START_ATTEMPTS && ports::taken(&error) => {
                    attempt += 1;
                    server.port = ports::free_one()?;
                }
                Err(error) => return Err(error),
            }
        }
        server.watch()?;
        server.wait_ready()?;
        Ok(server)
    }

    /// Kills the server the way a crash or a lost host would (`pg_ctl stop -m immediate`):
    /// connections break, nothing is shut down cleanly. The data stays for [`Postgres::restart`].
    pub fn crash(&self) -> Result<(), Error> {
        self.pg_ctl(&["stop", "-m", "immediate", "-w"], "stop")
    }

    /// Starts the server again on the same port and data, after [`Postgres::crash`].
    pub fn restart(&self) -> Result<(), Error> {
        self.pg_ctl_start()?;
        self.wait_ready()
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server, with the test user's password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A new, empty database named after `prefix` (made unique), and its URL.
    pub fn create_database(&self, prefix: &str) -> Result<String, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name: String = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
        let status = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .arg(&name)
            .env("PGPASSWORD", &self.password)
            .stdout(Stdio::null())
            .output()
            .map_err(Error::io("run createdb"))?;
        if !status.status.success() {
            return Err(Error::Postgres {
                step: format!("create database {name}"),
                reason: String::from_utf8_lossy(&status.stderr).into_owned(),
            });
        }
        Ok(self.url(&name))
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn initdb(&self) -> Result<(), Error> {
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.password))
            .map_err(Error::io("write the password file"))?;
        if !self.run_as.is_empty() {
            chown_to_postgres(&pwfile)?;
        }
        let out = self
            .command(&self.bin.join("initdb"))
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                USER,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-sync")
            .output()
            .map_err(Error::io("run initdb"))?;
        let _ = fs::remove_file(&pwfile);
        if !out.status.success() {
            return Err(Error::Postgres {
                step: "initdb".into(),
                reason: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        Ok(())
    }

    /// Starts the server in the background (`pg_ctl start`), its log in the directory.
    fn pg_ctl_start(&self) -> Result<(), Error> {
        // No fsync: the data survives the server's crash (the tests' faults), not the host's.
        // Commits still wait for the log to reach the kernel, so a crash loses none.
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={dir} \
             -c fsync=off -c full_page_writes=off -c max_connections=300",
            port = self.port,
            dir = self.dir.display(),
        );
        let log = self.dir.join("postgres.log");
        let started = self.pg_ctl(
            &[
                "start",
                "-w",
                "-l",
                &log.display().to_string(),
                "-o",
                &options,
            ],
            "start",
        );
        started.map_err(|error| match error {
            // pg_ctl only says the server did not start; its log says why.
            Error::Postgres { step, reason } => Error::Postgres {
                step,
                reason: format!("{reason}\n{}", fs::read_to_string(&log).unwrap_or_default()),
            },
            other => other,
        })
    }

    fn pg_ctl(&self, args: &[&str], what: &str) -> Result<(), Error> {
        let out = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(Error::io(format!("run pg_ctl {what}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Postgres {
                step: format!("pg_ctl {what}"),
                reason: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
    }

    /// A shell that waits for this process to end, then stops the server (immediately: the
    /// data is thrown away) and deletes the cluster's directory.
    fn watch(&self) -> Result<(), Error> {
        let stop = format!(
            "{run_as} {pg_ctl} -D {data} stop -m immediate",
            run_as = self.run_as.join(" "),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data_dir().display(),
        );
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             {stop} >/dev/null 2>&1; rm -rf {dir}",
            parent = std::process::id(),
            dir = self.dir.display(),
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io("start the server's watchdog"))?;
        Ok(())
    }

    fn wait_ready(&self) -> Result<(), Error> {
        let started = Instant::now();
        while started.elapsed() < STARTUP_TIMEOUT {
            let listening = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if listening {
                let ready = Command::new(self.bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ready {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        Err(Error::Postgres {
            step: format!("start on port {} within {STARTUP_TIMEOUT:?}", self.port),
            reason: log.lines().rev().take(20).collect::<Vec<_>>().join("\n"),
        })
    }

    fn command(&self, program: &Path) -> Command {
        match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut command = Command::new(first);
                command.args(rest).arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

/// PostgreSQL's program directory: `RIDESAGA_PG_BIN`, else `pg_config --bindir`, else the
/// newest `/usr/lib/postgresql/<version>/bin` (Debian's layout).
pub fn find_bin_dir() -> Result<PathBuf, Error> {
    let has_postgres = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("RIDESAGA_PG_BIN") {
        let dir = PathBuf::from(dir);
        if has_postgres(&dir) {
            return Ok(dir);
        }
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_postgres(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(DEBIAN_BIN_DIRS)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let dir = entry.path().join("bin");
            has_postgres(&dir).then_some((version, dir))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or_else(|| Error::Postgres {
            step: "find PostgreSQL".into(),
            reason: format!(
                "no postgres and initdb in $RIDESAGA_PG_BIN, `pg_config --bindir` or \
             {DEBIAN_BIN_DIRS}/*/bin; run scripts/setup (it installs Debian's postgresql)"
            ),
        })
}

fn tempdir() -> Result<PathBuf, Error> {
    let dir = tempfile::Builder::new()
        .prefix("ridesaga-pg-")
        .tempdir()
        .map_err(Error::io("create the cluster's directory"))?;
    // Deleted by the watchdog once the server has stopped, not when this handle drops.
    Ok(dir.keep())
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn chown_to_postgres(path: &Path) -> Result<(), Error> {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .map_err(Error::io("chown the cluster's directory"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Postgres {
            step: "give the cluster's directory to the postgres user".into(),
            reason: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("read /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(url: &str, sql: &str) -> String {
        let out = Command::new(find_bin_dir().unwrap().join("psql"))
            .arg(url)
            .args(["-tAc", sql])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_crashed_server_restarts_with_its_data() {
        let server = Postgres::start().unwrap();
        let url = server.create_database("crash").unwrap();
        psql(
            &url,
            "CREATE TABLE kept (n int); INSERT INTO kept VALUES (7)",
        );
        server.crash().unwrap();
        assert_eq!(
            psql(&url, "SELECT 1"),
            "",
            "a crashed server answers nothing"
        );
        server.restart().unwrap();
        assert_eq!(psql(&url, "SELECT n FROM kept"), "7");
    }

    #[test]
    fn a_shared_server_gives_each_caller_a_database_of_its_own() {
        let server = Postgres::shared().unwrap();
        let a = server.create_database("t").unwrap();
        let b = server.create_database("t").unwrap();
        assert_ne!(a, b);
        let out = Command::new(find_bin_dir().unwrap().join("psql"))
            .arg(&a)
            .args(["-tAc", "SELECT 40 + 2"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{out:?}");
    }
}
