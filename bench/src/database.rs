//! The run's PostgreSQL cluster (`--db postgres`): one server started for the run with
//! [`ridesaga_testkit::Postgres`] (a new cluster in a temporary directory, on a free loopback
//! port, stopped and deleted once this process has exited, however it exits), a database per
//! service for every fleet, and the server's processes measured as one, `postgres`, beside
//! nats-server.
//!
//! The cluster runs with the harness's settings for throwaway data (`fsync=off`,
//! `full_page_writes=off`; the report states them as the server reports them): a commit waits
//! for its log to reach the kernel, not the disk, as on the SQLite side (WAL with
//! `synchronous=NORMAL`) and in nats-server between its `sync_interval`s.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use ridesaga_schemas::Service;
use ridesaga_testkit::Postgres;
use sqlx::Connection as _;

use crate::fleet::Databases;
use crate::procfs::{self, ProcSample};

/// What the report calls the cluster's processes together.
pub const PROCESS_NAME: &str = crate::results::DATABASE_PROCESS;

/// The run's PostgreSQL server.
#[derive(Debug)]
pub struct Cluster {
    server: Postgres,
    /// The postmaster: the server's first process, the parent of every other.
    pub postmaster: u32,
    /// `server_version`, e.g. `17.6 (Debian 17.6-0+deb13u1)`.
    pub version: String,
    /// The durability settings, as `name=value`.
    pub durability: Vec<String>,
}

/// The settings that decide what a commit waits for.
const DURABILITY: [&str; 3] = ["fsync", "synchronous_commit", "full_page_writes"];

impl Cluster {
    /// Creates and starts the cluster, and finds its postmaster: the first line of the
    /// `postmaster.pid` file in its data directory, which the server names.
    pub async fn start() -> anyhow::Result<Cluster> {
        let server = tokio::task::spawn_blocking(Postgres::start)
            .await
            .context("starting PostgreSQL")?
            .context("starting PostgreSQL")?;
        let url = server.url("postgres");
        let mut conn = sqlx::PgConnection::connect(&url)
            .await
            .context("connecting to the new PostgreSQL server")?;
        let setting = |name: &'static str| {
            sqlx::query_scalar::<_, String>("SELECT current_setting($1)").bind(name)
        };
        let data: String = setting("data_directory")
            .fetch_one(&mut conn)
            .await
            .context("asking PostgreSQL for its data directory")?;
        let version: String = setting("server_version")
            .fetch_one(&mut conn)
            .await
            .context("asking PostgreSQL for its version")?;
        let mut durability = Vec::new();
        for name in DURABILITY {
            let value: String = setting(name)
                .fetch_one(&mut conn)
                .await
                .with_context(|| format!("asking PostgreSQL for {name}"))?;
            durability.push(format!("{name}={value}"));
        }
        let _ = conn.close().await;
        let path = Path::new(&data).join("postmaster.pid");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let Some((postmaster, port)) = postmaster_pid(&text) else {
            bail!("{} names no pid and port", path.display());
        };
        if port != server.port() {
            bail!(
                "{} is the server's on port {port}, not {}",
                path.display(),
                server.port()
            );
        }
        Ok(Cluster {
            server,
            postmaster,
            version,
            durability,
        })
    }

    /// A new database for every service, named `<prefix>_<service>` (made unique).
    pub fn databases(&self, prefix: &str) -> anyhow::Result<Databases> {
        let mut urls = BTreeMap::new();
        for service in Service::ALL {
            urls.insert(service, self.database(&format!("{prefix}_{service}"))?);
        }
        Ok(Databases::Urls(urls))
    }

    /// A new, empty database named after `prefix`, and its URL. Runs `createdb` (tens of
    /// milliseconds, blocking), between phases only.
    pub fn database(&self, prefix: &str) -> anyhow::Result<String> {
        self.server
            .create_database(prefix)
            .with_context(|| format!("creating a database for {prefix}"))
    }

    /// CPU, memory and I/O of the postmaster and every process it started
    /// ([`procfs::sample_family`]).
    pub fn sample(&self, ticks_per_second: u64) -> anyhow::Result<ProcSample> {
        procfs::sample_family(self.postmaster, ticks_per_second).with_context(|| {
            format!(
                "reading /proc for PostgreSQL's postmaster (pid {})",
                self.postmaster
            )
        })
    }

    /// The report's line on the database.
    pub fn describe(&self) -> String {
        let durability: Vec<String> = self.durability.iter().map(|s| format!("`{s}`")).collect();
        format!(
            "PostgreSQL {} on 127.0.0.1:{}, a cluster started for the run ({}), a database per \
             service and fleet shared by the service's replicas; `{PROCESS_NAME}` is the \
             postmaster and every process it started (backends, background writers): their \
             CPU, ended ones' included, and their proportional set sizes, summed",
            self.version,
            self.server.port(),
            durability.join(", ")
        )
    }
}

/// The pid (line 1) and the port (line 4) of a `postmaster.pid` file.
pub fn postmaster_pid(text: &str) -> Option<(u32, u16)> {
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse().ok()?;
    let port = lines.get(3)?.trim().parse().ok()?;
    Some((pid, port))
}

/// The report's line on the database of a SQLite run.
pub const SQLITE_DESCRIPTION: &str = "SQLite, a file per service in the run's directory (WAL, \
                                      `synchronous=NORMAL`), shared by the service's replicas";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_postmaster_pid_file_names_the_pid_and_the_port() {
        let file = "81234\n/tmp/ridesaga-pg-x/data\n1765000000\n40123\n/tmp/ridesaga-pg-x\n\
                    127.0.0.1\n  5432001         0\nready   \n";
        assert_eq!(postmaster_pid(file), Some((81234, 40123)));
        assert_eq!(postmaster_pid("81234\n/tmp/data\n"), None);
        assert_eq!(postmaster_pid(""), None);
    }
}
