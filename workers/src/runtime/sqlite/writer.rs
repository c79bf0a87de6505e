//! The writer: the one connection every write of a replica goes through, one turn at a time.
//!
//! Batches, timer runs, the relay's deletes of published rows, the inbox's retention and the
//! checkpointer's second pass all write, and SQLite admits one writer at a time. A turn orders
//! them inside the replica (an async mutex, first come first served), then among the replicas
//! that share the database file ([`WriterLock`]), and hands over the writer's connection.
//!
//! The connection stays checked out of its pool of one between turns. A connection given back
//! to a pool is tested on the way (a round trip to SQLite's thread, in a task of its own) before
//! anyone can take it again, which every batch used to wait for; a turn gives it back only
//! after a failure ([`Turn::give_back`]), so that the pool tests it and opens a new one if it
//! must.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Connection as _, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::writer_lock::{WriterGuard, WriterLock};

/// The writer of one replica; clones share it.
#[derive(Debug, Clone)]
pub struct Writer {
    /// Its own pool, of one connection, with the options of [`super::store::open_with`].
    pool: SqlitePool,
    held: Arc<Mutex<Option<PoolConnection<Sqlite>>>>,
    lock: WriterLock,
}

/// One turn: the writer's connection, to this holder alone until it is dropped.
#[derive(Debug)]
pub struct Turn {
    held: OwnedMutexGuard<Option<PoolConnection<Sqlite>>>,
    pool: SqlitePool,
    _lock: WriterGuard,
}

impl Writer {
    /// The writer over `pool` (which should hold one connection: nothing else writes through
    /// it), taking turns with other replicas through `lock`.
    pub fn new(pool: SqlitePool, lock: WriterLock) -> Self {
        Writer {
            pool,
            held: Arc::new(Mutex::new(None)),
            lock,
        }
    }

    /// Waits for the writer's turn: after whoever in this replica asked first, then until no
    /// other replica writes.
    pub async fn turn(&self) -> std::io::Result<Turn> {
        let held = self.held.clone().lock_owned().await;
        let lock = self.lock.acquire().await?;
        Ok(Turn {
            held,
            pool: self.pool.clone(),
            _lock: lock,
        })
    }

    /// Runs `write` in the writer's turn, in a transaction of its own (`BEGIN IMMEDIATE`),
    /// and commits when it succeeds. On any failure the transaction is rolled back and the
    /// connection given back (see [`Turn::give_back`]). For the writes beside the batches:
    /// timers, deletes of published outbox rows, the inbox's retention.
    pub async fn transaction<T, E>(
        &self,
        write: impl AsyncFnOnce(&mut SqliteConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<sqlx::Error>,
    {
        let mut turn = self.turn().await.map_err(|e| E::from(sqlx::Error::Io(e)))?;
        let done: Result<T, E> = async {
            let mut tx = turn.conn().await?.begin_with("BEGIN IMMEDIATE").await?;
            let value = write(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        if done.is_err() {
            turn.give_back();
        }
        done
    }

    /// Gives the connection back and closes the pool (when the replica stops).
    pub async fn close(&self) {
        self.held.lock().await.take();
        self.pool.close().await;
    }
}

impl Turn {
    /// The writer's connection, opened first if the last turn gave it back.
    pub async fn conn(&mut self) -> Result<&mut SqliteConnection, sqlx::Error> {
        if self.held.is_none() {
            *self.held = Some(self.pool.acquire().await?);
        }
        match self.held.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(sqlx::Error::PoolClosed),
        }
    }

    /// Gives the connection back to its pool, which tests it (and replaces it if it is
    /// broken) before the next turn takes it again: for after a failure, which may have been
    /// the connection's.
    pub fn give_back(&mut self) {
        self.held.take();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::sqlite as store;

    async fn writer(dir: &tempfile::TempDir) -> Writer {
        let path = dir.path().join("service.db");
        let pool = store::open(&format!("sqlite://{}", path.display()), 1)
            .await
            .unwrap();
        Writer::new(pool, WriterLock::beside(&path).unwrap())
    }

    #[tokio::test]
    async fn turns_in_one_replica_come_one_at_a_time_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        let mut first = writer.turn().await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER); BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .execute(first.conn().await.unwrap())
            .await
            .unwrap();
        let second = {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut turn = writer.turn().await.unwrap();
                let conn = turn.conn().await.unwrap();
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM t")
                    .fetch_one(conn)
                    .await
                    .unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!second.is_finished(), "the second turn waits for the first");
        sqlx::query("INSERT INTO t VALUES (2); COMMIT")
            .execute(first.conn().await.unwrap())
            .await
            .unwrap();
        drop(first);
        assert_eq!(second.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_connection_given_back_after_a_failure_is_taken_again_by_the_next_turn() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        let mut turn = writer.turn().await.unwrap();
        sqlx::query("SELECT * FROM missing")
            .execute(turn.conn().await.unwrap())
            .await
            .unwrap_err();
        turn.give_back();
        assert!(turn.held.is_none());
        drop(turn);
        let mut next = writer.turn().await.unwrap();
        let one: i64 = sqlx::query_scalar("SELECT 1")
            .fetch_one(next.conn().await.unwrap())
            .await
            .unwrap();
        assert_eq!(one, 1);
    }

    #[tokio::test]
    async fn a_transaction_commits_what_succeeds_and_rolls_back_what_fails() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(&dir).await;
        writer
            .transaction(async |conn| {
                sqlx::query("CREATE TABLE t (v INTEGER NOT NULL)")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
            .await
            .unwrap();
        let failed: Result<(), sqlx::Error> = writer
            .transaction(async |conn| {
                sqlx::query("INSERT INTO t VALUES (1)")
                    .execute(&mut *conn)
                    .await?;
                sqlx::query("INSERT INTO t VALUES (NULL)")
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        assert!(
            writer.held.lock().await.is_none(),
            "the connection is given back after a failure"
        );
        let count: i64 = writer
            .transaction(async |conn| {
                sqlx::query_scalar("SELECT COUNT(*) FROM t")
                    .fetch_one(conn)
                    .await
            })
            .await
            .unwrap();
        assert_eq!(count, 0, "the first insert went with the second");
        assert!(writer.held.lock().await.is_some());
    }
}
