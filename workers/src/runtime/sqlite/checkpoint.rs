//! Moving the write-ahead log into the database file, off the writer's path, while keeping the
//! log from growing for as long as the load lasts.
//!
//! The writer connection does not checkpoint (`wal_autocheckpoint=0`, so no input's commit
//! waits for a checkpoint's fsyncs); a connection of its own runs a passive checkpoint every
//! second. SQLite starts the log over only when a write transaction begins and finds every
//! frame copied. Under steady load the writer appends while a passive checkpoint copies, so
//! that never happens, and the log grew by hundreds of megabytes a minute at the benchmark's
//! maximum rate. So when the log holds more than [`RESTART_FRAMES`], the checkpointer takes a
//! writer's turn (see [`Writer`]: no other write of this replica or of the others sharing the
//! file runs meanwhile) for one more pass, which copies only what was written since the
//! first; the next batch then writes from the start of the log, and `journal_size_limit` cuts
//! the file back.

use std::time::Duration;

use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

use super::writer::Writer;

/// Frames (pages) the log may hold before a checkpoint takes a writer's turn: 64 MiB with
/// 4 KiB pages, about 20 s of writing at the benchmark's maximum rate. The turn pauses the
/// batches for the second pass, whose two fsyncs took up to 132 ms on a busy machine (usually
/// under 20 ms); a larger log pauses them less often.
pub(crate) const RESTART_FRAMES: i64 = 16_384;

/// How often the log is checkpointed.
const EVERY: Duration = Duration::from_secs(1);

/// What a checkpoint left: the frames (pages) in the log, and how many of them are copied into
/// the database file. Both are -1 for a database that has no log (in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogState {
    pub frames: i64,
    pub copied: i64,
}

/// One passive checkpoint: copies what it can from the log into the database file without
/// blocking writers (which keep appending to the log meanwhile).
async fn checkpoint(pool: &SqlitePool) -> Result<LogState, sqlx::Error> {
    let (_busy, frames, copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    Ok(LogState { frames, copied })
}

/// Checkpoints every second until `stop`, then once more, and closes `checkpoints`.
pub(crate) async fn checkpoint_loop(
    checkpoints: SqlitePool,
    writer: Writer,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if let Err(e) = checkpoint_round(&checkpoints, &writer, RESTART_FRAMES).await {
            tracing::warn!(error = %e, "checkpoint failed; retrying next second");
        }
    }
    let _ = checkpoint(&checkpoints).await;
    checkpoints.close().await;
}

/// One passive checkpoint on `checkpoints`; if the log then holds more than `limit` frames, a
/// second one while no batch writes, after which the next batch starts the log over (see the module's documentation). Returns the state of
/// the log after the last pass.
pub(super) async fn checkpoint_round(
    checkpoints: &SqlitePool,
    writer: &Writer,
    limit: i64,
) -> Result<LogState, sqlx::Error> {
    let state = checkpoint(checkpoints).await?;
    if state.frames <= limit {
        return Ok(state);
    }
    // Even when this pass copied every frame, a batch that began before it finished keeps the
    // log from starting over: the log starts over only for a write transaction that began
    // with every frame copied.
    let waited = std::time::Instant::now();
    let _turn = writer.turn().await?;
    let held = std::time::Instant::now();
    let state = checkpoint(checkpoints).await?;
    tracing::debug!(
        frames = state.frames,
        copied = state.copied,
        waited_ms = (held - waited).as_millis() as u64,
        held_ms = held.elapsed().as_millis() as u64,
        "the log starts over"
    );
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::sqlite::writer_lock::WriterLock;
    use crate::runtime::sqlite::{self as store, Checkpoints};

    /// Every frame is in the database file: the next write transaction starts the log over.
    fn all_copied(state: &LogState) -> bool {
        state.copied == state.frames
    }

    async fn pools(dir: &tempfile::TempDir) -> (Writer, SqlitePool) {
        let path = dir.path().join("service.db");
        let url = format!("sqlite://{}", path.display());
        let writes = store::open_with(&url, 1, Checkpoints::Background)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (v BLOB NOT NULL)")
            .execute(&writes)
            .await
            .unwrap();
        let checkpoints = store::open(&url, 1).await.unwrap();
        let writer = Writer::new(writes, WriterLock::beside(&path).unwrap());
        (writer, checkpoints)
    }

    /// Writes `rows` rows, each in a turn of its own, as batches do.
    async fn write(writer: &Writer, rows: usize) {
        for _ in 0..rows {
            let mut turn = writer.turn().await.unwrap();
            sqlx::query("INSERT INTO t (v) VALUES (zeroblob(3000))")
                .execute(turn.conn().await.unwrap())
                .await
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_log_over_the_limit_and_not_all_copied_gets_a_second_pass_in_a_writers_turn() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpoints) = pools(&dir).await;
        write(&writer, 20).await;
        // A reader's snapshot stops a passive checkpoint at the frames it sees.
        let reader = store::open(
            &format!("sqlite://{}", dir.path().join("service.db").display()),
            1,
        )
        .await
        .unwrap();
        let mut reading = reader.begin().await.unwrap();
        sqlx::query("SELECT COUNT(*) FROM t")
            .execute(&mut *reading)
            .await
            .unwrap();
        write(&writer, 10).await;

        // Under the limit: one pass, which leaves what it cannot copy and does not wait.
        let held = writer.turn().await.unwrap();
        let state = checkpoint_round(&checkpoints, &writer, 1_000)
            .await
            .unwrap();
        assert!(state.frames >= 30 && !all_copied(&state), "{state:?}");

        // Over it: the second pass waits for the writer's turn, then copies everything.
        let round = {
            let (checkpoints, writer) = (checkpoints.clone(), writer.clone());
            tokio::spawn(async move { checkpoint_round(&checkpoints, &writer, 1).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !round.is_finished(),
            "it must wait while a batch holds the writer"
        );
        reading.commit().await.unwrap();
        drop(held);
        let state = round.await.unwrap().unwrap();
        assert!(all_copied(&state), "{state:?}");
    }

    #[tokio::test]
    async fn the_log_starts_over_while_a_writer_never_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, checkpoints) = pools(&dir).await;
        let stop = CancellationToken::new();
        let writing = {
            let (writer, stop) = (writer.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    write(&writer, 1).await;
                }
            })
        };
        // Without the second pass, a writer that never pauses keeps the log from starting
        // over: it only grows. With it, each pass over the limit is followed by a log that
        // holds fewer frames than before.
        let limit = 256;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (mut last, mut restarts) = (0, 0);
        while restarts < 3 && tokio::time::Instant::now() < deadline {
            let state = checkpoint_round(&checkpoints, &writer, limit)
                .await
                .unwrap();
            if state.frames < last {
                restarts += 1;
            }
            last = state.frames;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        stop.cancel();
        writing.await.unwrap();
        assert_eq!(
            restarts, 3,
            "the log never started over (last {last} frames)"
        );
    }
}
