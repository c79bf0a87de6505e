//! Test support shared by the services' unit tests: a throwaway migrated database, and inputs
//! and ticks applied in their own transaction as the runtime runs them.

use std::path::{Path, PathBuf};

use ridesaga_schemas::{Envelope, Timestamp};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Sqlite, Transaction};
use tempfile::TempDir;

use crate::runtime::{BatchError, Conn, HandleError, Input, Worker};

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

/// The Unix epoch: the time for tests in which time plays no part.
pub(crate) fn epoch() -> Timestamp {
    Timestamp::from_unix_millis(0)
}

/// One input as the runtime applies it (without the inbox): in its own transaction, committed
/// on success and rolled back on error.
pub(crate) async fn apply_in_tx<W: Worker>(
    worker: &W,
    conn: &mut SqliteConnection,
    input: &Envelope,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    let mut tx = conn.begin().await.unwrap();
    let result = worker.apply(&mut Conn::Sqlite(&mut tx), input, now).await;
    finish(tx, &result).await;
    result
}

/// Inputs applied as one batch, as the runtime applies them (without the inbox): in one
/// transaction, with the service's writes run before the commit; rolled back on error.
pub(crate) async fn apply_batch_in_tx<W: Worker>(
    worker: &W,
    conn: &mut SqliteConnection,
    inputs: &[(Envelope, Timestamp)],
) -> Result<Vec<Vec<Envelope>>, BatchError> {
    let batch: Vec<Input<'_>> = inputs
        .iter()
        .map(|(envelope, now)| Input {
            envelope,
            now: *now,
        })
        .collect();
    let mut tx = conn.begin().await.unwrap();
    let done = match worker.apply_batch(&mut Conn::Sqlite(&mut tx), &batch).await {
        Ok(done) => done,
        Err(e) => {
            tx.rollback().await.unwrap();
            return Err(e);
        }
    };
    for write in &done.writes {
        write.execute(&mut Conn::Sqlite(&mut tx)).await.unwrap();
    }
    tx.commit().await.unwrap();
    Ok(done.outputs)
}

/// The same inputs applied one by one, each in its own transaction.
pub(crate) async fn apply_each_in_tx<W: Worker>(
    worker: &W,
    conn: &mut SqliteConnection,
    inputs: &[(Envelope, Timestamp)],
) -> Vec<Vec<Envelope>> {
    let mut outputs = Vec::with_capacity(inputs.len());
    for (input, now) in inputs {
        outputs.push(apply_in_tx(worker, conn, input, *now).await.unwrap());
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
pub(crate) async fn tick_in_tx<W: Worker>(
    worker: &W,
    conn: &mut SqliteConnection,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    let mut tx = conn.begin().await.unwrap();
    let result = worker.tick(&mut Conn::Sqlite(&mut tx), now).await;
    finish(tx, &result).await;
    result
}

/// Commits `tx` if `result` is a success, rolls it back otherwise.
async fn finish<T>(tx: Transaction<'_, Sqlite>, result: &Result<T, HandleError>) {
    match result {
        Ok(_) => tx.commit().await.unwrap(),
        Err(_) => tx.rollback().await.unwrap(),
    }
}
