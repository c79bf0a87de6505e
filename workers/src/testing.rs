//! Test support shared by the services' unit tests: a throwaway migrated database of either
//! backend, and inputs and ticks applied in their own transaction as the runtime runs them.
//!
//! Every helper that takes a connection takes anything that turns into a [`Conn`]: a
//! `&mut SqliteConnection`, a `&mut PgConnection`, or a `&mut Conn` (of a [`TestDb`]).

use std::path::{Path, PathBuf};

use ridesaga_schemas::{Envelope, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, PgConnection, Transaction};
use tempfile::TempDir;

use crate::runtime::{
    BatchError, Conn, EffectOutcome, Finished, HandleError, Input, Kind, PendingEffect, Settled,
    Worker, postgres,
};

/// Both backends, for tests that run one body on each.
pub(crate) const KINDS: [Kind; 2] = [Kind::Sqlite, Kind::Postgres];

/// Where [`database`] puts the database file inside its directory.
pub(crate) fn database_file(dir: &TempDir) -> PathBuf {
    dir.path().join("service.db")
}

/// A fresh database file `<tmp>/service.db` with `migrator`'s tables; the directory (and the
/// file) is deleted when the returned [`TempDir`] drops.
pub(crate) async fn database(migrator: &'static Migrator) -> (TempDir, SqliteConnection) {
    let dir = tempfile::tempdir().unwrap();
    let mut conn = connect(&database_file(&dir)).await;
    migrator.run(&mut conn).await.unwrap();
    (dir, conn)
}

/// A connection to the database file at `path`, created if missing (another replica's
/// connection, when `path` is a [`database_file`]).
pub(crate) async fn connect(path: &Path) -> SqliteConnection {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqliteConnection::connect_with(&options).await.unwrap()
}

/// A fresh PostgreSQL database with the runtime's tables and `migrator`'s, on the server the
/// test process shares, and its URL (for another replica's connection).
pub(crate) async fn pg_database(migrator: &'static Migrator) -> (String, PgConnection) {
    let server = ridesaga_testkit::Postgres::shared().unwrap();
    let url = server.create_database("unit").unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    postgres::migrate(&pool, migrator).await.unwrap();
    pool.close().await;
    let conn = PgConnection::connect(&url).await.unwrap();
    (url, conn)
}

/// A fresh database of either backend, migrated, with one connection.
#[derive(Debug)]
pub(crate) enum TestDb {
    Sqlite {
        /// The file's directory, deleted when the database that made it drops (`None` for
        /// [`TestDb::another`]'s connections, which borrow the file).
        _dir: Option<TempDir>,
        path: PathBuf,
        conn: SqliteConnection,
    },
    Postgres {
        url: String,
        conn: PgConnection,
    },
}

impl TestDb {
    /// A fresh database on `kind`, with the service's tables (`sqlite` or `postgres`).
    pub(crate) async fn open(
        kind: Kind,
        sqlite: &'static Migrator,
        postgres: &'static Migrator,
    ) -> TestDb {
        match kind {
            Kind::Sqlite => {
                let (dir, conn) = database(sqlite).await;
                TestDb::Sqlite {
                    path: database_file(&dir),
                    _dir: Some(dir),
                    conn,
                }
            }
            Kind::Postgres => {
                let (url, conn) = pg_database(postgres).await;
                TestDb::Postgres { url, conn }
            }
        }
    }

    pub(crate) fn kind(&self) -> Kind {
        match self {
            TestDb::Sqlite { .. } => Kind::Sqlite,
            TestDb::Postgres { .. } => Kind::Postgres,
        }
    }

    /// The database's connection.
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            TestDb::Sqlite { conn, .. } => Conn::Sqlite(conn),
            TestDb::Postgres { conn, .. } => Conn::Postgres(conn),
        }
    }

    /// The database's URL, as a worker's `DATABASE_URL` names it.
    pub(crate) fn url(&self) -> String {
        match self {
            TestDb::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            TestDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// Another connection to the same database (another replica's); the database itself
    /// lives as long as `self`.
    pub(crate) async fn another(&self) -> TestDb {
        match self {
            TestDb::Sqlite { path, .. } => TestDb::Sqlite {
                _dir: None,
                path: path.clone(),
                conn: connect(path).await,
            },
            TestDb::Postgres { url, .. } => TestDb::Postgres {
                url: url.clone(),
                conn: PgConnection::connect(url).await.unwrap(),
            },
        }
    }
}

/// The Unix epoch: the time for tests in which time plays no part.
pub(crate) fn epoch() -> Timestamp {
    Timestamp::from_unix_millis(0)
}

/// Runs `body` in a transaction of its own on `conn`, committed when `commit` says so of its
/// result and rolled back otherwise.
macro_rules! in_tx {
    ($conn:expr, |$tx:ident| $body:expr, $commit:expr) => {
        match $conn.into() {
            Conn::Sqlite(c) => {
                let mut tx = c.begin().await.unwrap();
                let result = {
                    let $tx = &mut Conn::Sqlite(&mut tx);
                    $body
                };
                finish(tx, $commit(&result)).await;
                result
            }
            Conn::Postgres(c) => {
                let mut tx = c.begin().await.unwrap();
                let result = {
                    let $tx = &mut Conn::Postgres(&mut tx);
                    $body
                };
                finish(tx, $commit(&result)).await;
                result
            }
        }
    };
}

/// One input as the runtime handles it (without the inbox): in its own transaction, committed
/// on success and rolled back on error.
pub(crate) async fn handle_in_tx<'c, W: Worker>(
    worker: &W,
    conn: impl Into<Conn<'c>>,
    input: &Envelope,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    in_tx!(
        conn,
        |tx| worker.handle(tx, input, now).await,
        Result::is_ok
    )
}

/// Inputs handled as one batch, as the runtime handles them (without the inbox): in one
/// transaction, with the service's writes run before the commit; rolled back on error.
pub(crate) async fn handle_batch_in_tx<'c, W: Worker>(
    worker: &W,
    conn: impl Into<Conn<'c>>,
    inputs: &[(Envelope, Timestamp)],
) -> Result<Vec<Vec<Envelope>>, BatchError> {
    let batch: Vec<Input<'_>> = inputs
        .iter()
        .map(|(envelope, now)| Input {
            envelope,
            now: *now,
            trace: None,
        })
        .collect();
    in_tx!(
        conn,
        |tx| {
            match worker.handle_batch(tx, &batch).await {
                Ok(done) => {
                    for write in &done.writes {
                        write.execute(tx).await.unwrap();
                    }
                    Ok(done.outputs)
                }
                Err(e) => Err(e),
            }
        },
        Result::is_ok
    )
}

/// The same inputs handled one by one, each in its own transaction.
pub(crate) async fn handle_each_in_tx<'c, W: Worker>(
    worker: &W,
    conn: impl Into<Conn<'c>>,
    inputs: &[(Envelope, Timestamp)],
) -> Vec<Vec<Envelope>> {
    let mut conn = conn.into();
    let mut outputs = Vec::with_capacity(inputs.len());
    for (input, now) in inputs {
        outputs.push(handle_in_tx(worker, &mut conn, input, *now).await.unwrap());
    }
    outputs
}

/// Outputs with the wall clock of their making set aside, for comparing two runs.
pub(crate) fn timeless(mut outputs: Vec<Vec<Envelope>>) -> Vec<Vec<Envelope>> {
    for output in outputs.iter_mut().flatten() {
        output.occurred_at = epoch();
    }
    outputs
}

/// One tick as the runtime runs it: in its own transaction, committed on success and rolled
/// back on error.
pub(crate) async fn tick_in_tx<'c, W: Worker>(
    worker: &W,
    conn: impl Into<Conn<'c>>,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    in_tx!(conn, |tx| worker.tick(tx, now).await, Result::is_ok)
}

/// Commits `tx` if `commit`, rolls it back otherwise.
async fn finish<DB: sqlx::Database>(tx: Transaction<'_, DB>, commit: bool) {
    if commit {
        tx.commit().await.unwrap();
    } else {
        tx.rollback().await.unwrap();
    }
}

/// One test per backend for each body named (an `async fn(Kind)` of the calling module):
/// `<body>::sqlite` and `<body>::postgres`.
macro_rules! each_backend {
    ($($body:ident),* $(,)?) => {
        $(
            mod $body {
                #[tokio::test]
                async fn sqlite() {
                    super::$body($crate::runtime::Kind::Sqlite).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$body($crate::runtime::Kind::Postgres).await;
                }
            }
        )*
    };
}
pub(crate) use each_backend;

/// Runs `sql` (without parameters) on `conn`, for tests that write what the service would not.
pub(crate) async fn execute(conn: &mut Conn<'_>, sql: &'static str) {
    match conn {
        Conn::Sqlite(conn) => sqlx::query(sql).execute(&mut **conn).await.map(drop),
        Conn::Postgres(conn) => sqlx::query(sql).execute(&mut **conn).await.map(drop),
    }
    .unwrap();
}

/// [`Worker::settle`] for one effect.
pub(crate) trait SettleOne {
    async fn settle_one(
        &self,
        conn: &mut Conn<'_>,
        effect: &PendingEffect,
        outcome: EffectOutcome,
        now: Timestamp,
    ) -> Result<Settled, HandleError>;
}

impl<W: Worker> SettleOne for W {
    async fn settle_one(
        &self,
        conn: &mut Conn<'_>,
        effect: &PendingEffect,
        outcome: EffectOutcome,
        now: Timestamp,
    ) -> Result<Settled, HandleError> {
        let finished = [Finished {
            effect: effect.clone(),
            outcome,
        }];
        self.settle(conn, &finished, now)
            .await
            .map_err(|e| match e {
                BatchError::Input { error, .. } | BatchError::Batch(error) => error,
            })
    }
}
