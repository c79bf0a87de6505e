//! One batch writer at a time among the replicas that share a SQLite file.
//!
//! SQLite admits one writer; a replica whose `BEGIN IMMEDIATE` finds another replica's
//! transaction open gets `SQLITE_BUSY`, and the busy handler retries after sleeps of 1, 2, 5,
//! 10 ... ms, however soon the lock is free again. Replicas take an advisory file lock (`flock`
//! on `<database>-writer.lock`) around each batch instead: a replica that has to wait sleeps in
//! the kernel and wakes the moment the other one releases it. Uncontended, taking the lock is
//! one system call on the writer's own thread; only a wait goes to the blocking pool.
//!
//! Every write takes it, in the writer's turn (see [`super::writer::Writer`]).

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lock shared by the replicas of one SQLite database; `None` for a database no other
/// process can open (in memory).
#[derive(Debug, Clone)]
pub struct WriterLock {
    file: Option<Arc<File>>,
}

/// Held while a batch writes; releases the lock when dropped.
#[derive(Debug)]
pub struct WriterGuard {
    file: Option<Arc<File>>,
}

impl WriterLock {
    /// The lock file next to the database file `database` (created if missing).
    pub fn beside(database: &Path) -> io::Result<Self> {
        if database.as_os_str().is_empty() || database == Path::new(":memory:") {
            return Ok(WriterLock { file: None });
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path(database))?;
        Ok(WriterLock {
            file: Some(Arc::new(file)),
        })
    }

    /// Waits until no other replica's batch is writing.
    pub async fn acquire(&self) -> io::Result<WriterGuard> {
        let Some(file) = &self.file else {
            return Ok(WriterGuard { file: None });
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let waiting = Arc::clone(file);
                tokio::task::spawn_blocking(move || waiting.lock())
                    .await
                    .map_err(io::Error::other)??;
            }
            Err(TryLockError::Error(e)) => return Err(e),
        }
        Ok(WriterGuard {
            file: Some(Arc::clone(file)),
        })
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        if let Some(file) = &self.file
            && let Err(e) = file.unlock()
        {
            tracing::warn!(error = %e, "could not release the writer lock");
        }
    }
}

fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-writer.lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_second_writer_waits_for_the_first_and_then_gets_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("service.db");
        // Two replicas: two opens of the lock file, as two processes would have.
        let first = WriterLock::beside(&database).unwrap();
        let second = WriterLock::beside(&database).unwrap();
        assert!(dir.path().join("service.db-writer.lock").exists());

        let held = first.acquire().await.unwrap();
        let waiting = tokio::spawn(async move { second.acquire().await.unwrap() });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "the second writer must wait");
        drop(held);
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the second writer gets the lock once the first lets go")
            .unwrap();
        drop(got);
        // And the first can take it again.
        drop(first.acquire().await.unwrap());
    }

    #[tokio::test]
    async fn an_in_memory_database_needs_no_lock() {
        let lock = WriterLock::beside(Path::new(":memory:")).unwrap();
        drop(lock.acquire().await.unwrap());
        drop(lock.acquire().await.unwrap());
    }
}
