//! The effect executor: performs the effects the service's transactions recorded, outside any
//! transaction, and settles their outcomes (see [`super::effects`]).
//!
//! One task per replica ([`Shared::effect_loop`]) wakes when a batch records effects and on
//! every tick. It claims due effects in a short write transaction (a claim lasts the attempt's
//! timeout and a margin, so replicas do not perform one effect at the same time; a claim that
//! expired is taken again, which resumes an effect a crash interrupted), performs each in a
//! task of its own (at most `RIDESAGA_EFFECT_CONCURRENCY` at once, each attempt bounded by
//! `RIDESAGA_EFFECT_TIMEOUT`), and settles the results that are in whenever it gets to them in
//! one transaction (group commit): an outcome through [`Worker::settle`], which also forgets
//! the effect and stores its outputs and the effects it makes due; a transient failure before
//! the deadline as another attempt after a growing delay. Outputs are published after the
//! commit.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use ridesaga_schemas::Timestamp;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::to_rows;
use super::db::{self, Conn, EffectRetry, NewEffects, OutboxRow};
use super::effects::{Effect, EffectError, EffectOutcome, PendingEffect};
use super::handler::{HandleError, Worker};
use super::metrics::Metrics;
use super::process::Shared;

/// How the executor runs.
#[derive(Debug, Clone, Copy)]
pub struct EffectSettings {
    /// `RIDESAGA_EFFECT_CONCURRENCY`: attempts in flight at once.
    pub concurrency: usize,
    /// `RIDESAGA_EFFECT_TIMEOUT`: how long one attempt may take.
    pub timeout: Duration,
    /// How often to look for due effects besides the wake-ups from batches.
    pub tick: Duration,
}

/// How much longer than an attempt's timeout a claim lasts: the time to settle the attempt.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// The delay after the first transient failure; it doubles with every attempt after that.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest delay between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The most effects one claim takes.
const CLAIM_MAX: usize = 256;

/// The delay before the next attempt at an effect that had `attempts` attempts before the one
/// that just failed: 200 ms, 400 ms, 800 ms ... capped at 10 s.
pub fn backoff(attempts: u32) -> Duration {
    BACKOFF_FIRST
        .saturating_mul(1u32 << attempts.min(16))
        .min(BACKOFF_CAP)
}

/// One attempt at an effect, and how it ended.
struct Attempt {
    effect: PendingEffect,
    result: Result<String, EffectError>,
}

/// What follows an attempt.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Settle(EffectOutcome),
    Retry(EffectRetry),
}

/// What follows an attempt at `effect` that ended with `result` at `now`.
fn next_step(effect: &PendingEffect, result: Result<String, EffectError>, now: Timestamp) -> Next {
    match result {
        Ok(result) => Next::Settle(EffectOutcome::Done(result)),
        Err(EffectError::Permanent(reason)) => Next::Settle(EffectOutcome::Failed(reason)),
        Err(EffectError::Transient(error)) if now >= effect.deadline => {
            Next::Settle(EffectOutcome::GaveUp(error))
        }
        Err(EffectError::Transient(error)) => Next::Retry(retry_of(effect, error, now)),
    }
}

/// `effect` due again after the backoff (not after its deadline while that is ahead, so the
/// last attempt comes at the deadline), with `error` as its last error.
fn retry_of(effect: &PendingEffect, error: String, now: Timestamp) -> EffectRetry {
    let now_ms = now.unix_millis();
    let deadline_ms = effect.deadline.unix_millis();
    let mut next = now_ms.saturating_add(backoff(effect.attempts).as_millis() as i64);
    if now_ms < deadline_ms {
        next = next.min(deadline_ms);
    }
    EffectRetry {
        id: effect.effect.id.clone(),
        attempts: effect.attempts.saturating_add(1),
        next_at: Timestamp::from_unix_millis(next),
        last_error: error,
    }
}

/// Why a settle transaction was rolled back.
enum SettleError {
    /// The service could not settle the outcome at this index of the group.
    Effect {
        index: usize,
        error: HandleError,
    },
    Database(sqlx::Error),
}

impl From<sqlx::Error> for SettleError {
    fn from(e: sqlx::Error) -> Self {
        SettleError::Database(e)
    }
}

/// What a settle transaction committed.
struct Committed {
    /// The outputs, for the publisher.
    rows: Vec<OutboxRow>,
    /// Outcomes settled (those another replica had not settled first).
    settled: usize,
    /// New effects recorded.
    recorded: usize,
}

/// An outcome to settle.
type Outcome = (PendingEffect, EffectOutcome);

/// How the loop looks for due effects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Not now.
    No,
    /// A read first; the claim only if something is due.
    Peek,
    /// Claim at once (a batch or a settle just recorded effects).
    Claim,
}

impl<W: Worker> Shared<W> {
    /// The executor, until `stop`: then it claims nothing more, lets the attempts in flight
    /// finish (each within its timeout), settles them and waits for their outputs' publishing.
    pub async fn effect_loop(self: Arc<Self>, settings: EffectSettings, stop: CancellationToken) {
        let limit = Arc::new(Semaphore::new(settings.concurrency));
        let tasks = TaskTracker::new();
        let (done, mut results) = mpsc::unbounded_channel::<Attempt>();
        let mut in_flight: HashSet<String> = HashSet::new();
        let mut ticker = tokio::time::interval(settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut look = Look::No;
        let mut stopping = false;
        loop {
            if !stopping && look != Look::No {
                let more = self
                    .claim_and_perform(look, settings, &limit, &tasks, &done, &mut in_flight)
                    .await;
                look = if more { Look::Claim } else { Look::No };
                if more && limit.available_permits() > 0 {
                    continue;
                }
            }
            if stopping && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                _ = stop.cancelled(), if !stopping => stopping = true,
                _ = self.effects_due.notified(), if !stopping => look = Look::Claim,
                _ = ticker.tick(), if !stopping => {
                    if look == Look::No {
                        look = Look::Peek;
                    }
                }
                Some(first) = results.recv() => {
                    let mut group = vec![first];
                    while let Ok(next) = results.try_recv() {
                        group.push(next);
                    }
                    for attempt in &group {
                        in_flight.remove(&attempt.effect.effect.id);
                    }
                    if self.settle_attempts(group, &tasks).await {
                        look = Look::Claim;
                    }
                }
            }
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Claims as many due effects as there is room for and starts an attempt at each; true
    /// when more may be due than there was room for.
    async fn claim_and_perform(
        self: &Arc<Self>,
        look: Look,
        settings: EffectSettings,
        limit: &Arc<Semaphore>,
        tasks: &TaskTracker,
        done: &mpsc::UnboundedSender<Attempt>,
        in_flight: &mut HashSet<String>,
    ) -> bool {
        let room = limit.available_permits().min(CLAIM_MAX);
        let now = Timestamp::now().unix_millis();
        if look == Look::Peek {
            match self.database.effects_pending(now).await {
                Ok((pending, due)) => {
                    self.metrics
                        .effects_pending
                        .store(pending, Ordering::Relaxed);
                    if !due {
                        return false;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for due effects");
                    return false;
                }
            }
        }
        if room == 0 {
            // Every permit is taken: claim once an attempt finishes.
            return true;
        }
        let until = now.saturating_add((settings.timeout + CLAIM_MARGIN).as_millis() as i64);
        let claimed = self
            .database
            .transaction(async |conn| db::effects_claim(conn, now, until, room as i64).await)
            .await;
        let claimed = match claimed {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim due effects");
                return false;
            }
        };
        let full = claimed.len() >= room;
        for effect in claimed {
            // Claimed again by this replica while its attempt is still in flight (its claim
            // expired meanwhile): that attempt settles it.
            if !in_flight.insert(effect.effect.id.clone()) {
                continue;
            }
            let Ok(permit) = limit.clone().acquire_owned().await else {
                break;
            };
            let (shared, done, timeout) = (self.clone(), done.clone(), settings.timeout);
            tasks.spawn(async move {
                let _permit = permit;
                let result = shared.attempt(&effect, timeout).await;
                let _ = done.send(Attempt { effect, result });
            });
        }
        full
    }

    /// One attempt at `effect` through the service, within `timeout`. A panic in the service's
    /// call counts as a transient failure.
    async fn attempt(
        &self,
        effect: &PendingEffect,
        timeout: Duration,
    ) -> Result<String, EffectError> {
        let call = AssertUnwindSafe(self.worker.perform(effect)).catch_unwind();
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(EffectError::Transient("the call panicked".into())),
            Err(_) => Err(EffectError::Transient(format!(
                "no answer within {timeout:?}"
            ))),
        };
        Metrics::inc(&self.metrics.effects_performed);
        if let Err(error) = &result {
            Metrics::inc(&self.metrics.effects_failed);
            tracing::debug!(effect = %effect.effect.id, kind = %effect.effect.kind, attempts = effect.attempts, %error, "an attempt at an effect failed");
        }
        result
    }

    /// Settles a group of attempts in one transaction; true when that recorded new effects.
    /// When the transaction itself fails, each outcome is settled alone, so that one outcome's
    /// fault is its own; one that still fails is left to its claim's expiry (it is performed
    /// again then).
    async fn settle_attempts(self: &Arc<Self>, group: Vec<Attempt>, tasks: &TaskTracker) -> bool {
        let now = Timestamp::now();
        let mut outcomes = Vec::new();
        let mut retries = Vec::new();
        for Attempt { effect, result } in group {
            match next_step(&effect, result, now) {
                Next::Settle(outcome) => outcomes.push((effect, outcome)),
                Next::Retry(retry) => retries.push(retry),
            }
        }
        let error = match self.settle_group(&outcomes, &retries, now, tasks).await {
            Ok(recorded) => return recorded,
            Err(e) => e,
        };
        if outcomes.len() <= 1 {
            tracing::warn!(error = %error, "could not record effect outcomes; they are performed again once their claims expire");
            return false;
        }
        tracing::warn!(error = %error, outcomes = outcomes.len(), "settling effects failed; settling them one by one");
        let mut recorded = false;
        for one in outcomes.chunks(1) {
            match self.settle_group(one, &[], now, tasks).await {
                Ok(more) => recorded |= more,
                Err(e) => {
                    tracing::warn!(effect = %one[0].0.effect.id, error = %e, "could not record an effect's outcome; it is performed again once its claim expires");
                }
            }
        }
        if !retries.is_empty()
            && let Err(e) = self.settle_group(&[], &retries, now, tasks).await
        {
            tracing::warn!(error = %e, "could not schedule effects for another attempt; they are retried once their claims expire");
        }
        recorded
    }

    /// Settles `outcomes` and schedules `retries` in one transaction. An outcome the service
    /// cannot settle is left out and the transaction redone without it (failures are rare, and
    /// this keeps the common path free of a savepoint per outcome); the effect is then set up
    /// for another attempt. Returns whether the commit recorded new effects.
    async fn settle_group(
        self: &Arc<Self>,
        outcomes: &[Outcome],
        retries: &[EffectRetry],
        now: Timestamp,
        tasks: &TaskTracker,
    ) -> Result<bool, sqlx::Error> {
        let mut refused: Vec<(usize, HandleError)> = Vec::new();
        loop {
            let skip: HashSet<usize> = refused.iter().map(|(index, _)| *index).collect();
            let mut updates = retries.to_vec();
            updates.extend(refused.iter().map(|(index, error)| {
                retry_of(&outcomes[*index].0, format!("settle: {error}"), now)
            }));
            let attempt = self
                .database
                .transaction(async |conn| {
                    self.settle_once(conn, outcomes, &skip, &updates, now).await
                })
                .await;
            match attempt {
                Ok(committed) => {
                    self.metrics
                        .effects_settled
                        .fetch_add(committed.settled as u64, Ordering::Relaxed);
                    for (index, error) in &refused {
                        Metrics::inc(&self.metrics.effects_settle_failed);
                        tracing::warn!(effect = %outcomes[*index].0.effect.id, %error, "could not settle an effect's outcome; it is performed again later");
                    }
                    if !committed.rows.is_empty() {
                        let shared = self.clone();
                        tasks.spawn(async move {
                            if let Err(e) = shared.publisher.publish(&committed.rows).await {
                                tracing::warn!(error = %e, "effect outputs left to the relay");
                            }
                        });
                    }
                    return Ok(committed.recorded > 0);
                }
                Err(SettleError::Effect { index, error }) => refused.push((index, error)),
                Err(SettleError::Database(e)) => return Err(e),
            }
        }
    }

    /// One settle transaction's statements on `conn`: forgets the effects of `outcomes` (except
    /// those in `skip`), settles the ones that were still recorded (another replica may have
    /// settled one whose claim expired under this one), stores their outputs and the effects
    /// they make due, and applies `updates`.
    async fn settle_once(
        &self,
        conn: &mut Conn<'_>,
        outcomes: &[Outcome],
        skip: &HashSet<usize>,
        updates: &[EffectRetry],
        now: Timestamp,
    ) -> Result<Committed, SettleError> {
        let ids: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(index, _)| !skip.contains(index))
            .map(|(_, (effect, _))| effect.effect.id.clone())
            .collect();
        let recorded = db::effects_delete(conn, &ids).await?;
        let mut rows = Vec::new();
        let mut effects: Vec<Effect> = Vec::new();
        let mut settled = 0;
        for (index, (effect, outcome)) in outcomes.iter().enumerate() {
            if skip.contains(&index) {
                continue;
            }
            if !recorded.contains(&effect.effect.id) {
                tracing::debug!(effect = %effect.effect.id, "settled already");
                continue;
            }
            let done = self
                .worker
                .settle(conn, effect, outcome.clone(), now)
                .await
                .map_err(|error| SettleError::Effect { index, error })?;
            rows.extend(
                to_rows(&done.outputs).map_err(|error| SettleError::Effect { index, error })?,
            );
            effects.extend(done.effects);
            settled += 1;
        }
        db::outbox_insert(conn, None, &rows, now).await?;
        let new = NewEffects {
            effects: &effects,
            deadline: self.effect_deadline,
        };
        db::effects_insert(conn, new, now).await?;
        db::effects_retry(conn, updates).await?;
        Ok(Committed {
            rows,
            settled,
            recorded: effects.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Kind;
    use crate::runtime::db::InboxEntry;
    use crate::runtime::sqlite;
    use crate::testing::{TestDb, each_backend};
    use ridesaga_schemas::RideId;
    use sqlx::migrate::Migrator;

    static NO_TABLES: Migrator = Migrator::DEFAULT;

    fn pending(attempts: u32, deadline_ms: i64) -> PendingEffect {
        PendingEffect {
            effect: Effect {
                id: "r_1/hold".into(),
                kind: "payment.hold".into(),
                saga_id: None,
                request: "{}".into(),
            },
            attempts,
            recorded_at: Timestamp::from_unix_millis(0),
            deadline: Timestamp::from_unix_millis(deadline_ms),
        }
    }

    #[test]
    fn the_backoff_doubles_from_200ms_up_to_10s() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(6400));
        assert_eq!(backoff(6), Duration::from_secs(10));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn an_attempt_settles_or_comes_back_by_its_result_and_deadline() {
        let now = Timestamp::from_unix_millis(1_000);
        assert_eq!(
            next_step(&pending(0, 60_000), Ok("ok".into()), now),
            Next::Settle(EffectOutcome::Done("ok".into()))
        );
        assert_eq!(
            next_step(
                &pending(0, 60_000),
                Err(EffectError::Permanent("declined".into())),
                now
            ),
            Next::Settle(EffectOutcome::Failed("declined".into()))
        );
        assert_eq!(
            next_step(
                &pending(2, 60_000),
                Err(EffectError::Transient("down".into())),
                now
            ),
            Next::Retry(EffectRetry {
                id: "r_1/hold".into(),
                attempts: 3,
                next_at: Timestamp::from_unix_millis(1_800),
                last_error: "down".into(),
            })
        );
        // The last attempt comes at the deadline, not after it.
        let Next::Retry(retry) = next_step(
            &pending(9, 1_500),
            Err(EffectError::Transient("down".into())),
            now,
        ) else {
            panic!("retried before its deadline");
        };
        assert_eq!(retry.next_at, Timestamp::from_unix_millis(1_500));
        assert_eq!(
            next_step(
                &pending(9, 1_000),
                Err(EffectError::Transient("down".into())),
                now
            ),
            Next::Settle(EffectOutcome::GaveUp("down".into()))
        );
    }

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    fn effect(id: &str, saga: &str, request: &str) -> Effect {
        Effect {
            id: id.into(),
            kind: "test.call".into(),
            saga_id: Some(RideId::parse(saga).unwrap()),
            request: request.into(),
        }
    }

    fn ids(claimed: &[PendingEffect]) -> Vec<&str> {
        let mut ids: Vec<&str> = claimed.iter().map(|e| e.effect.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    each_backend!(
        the_effects_table_hands_each_due_effect_to_one_claim_at_a_time,
        a_batch_records_its_effects_when_it_commits,
    );

    async fn the_effects_table_hands_each_due_effect_to_one_claim_at_a_time(kind: Kind) {
        let mut db = TestDb::open(kind, &sqlite::RUNTIME_MIGRATOR, &NO_TABLES).await;
        let mut conn = db.conn();
        let minute = Duration::from_secs(60);
        let first = [
            effect("r_1/hold", "r_1", r#"{"n":1}"#),
            effect("r_2/hold", "r_2", "{}"),
        ];
        let new = |effects| NewEffects {
            effects,
            deadline: minute,
        };
        db::effects_insert(&mut conn, new(&first), at(1_000))
            .await
            .unwrap();
        // Recorded again (a settle that ran twice): the first record stays.
        let again = [effect("r_1/hold", "r_1", r#"{"n":2}"#)];
        db::effects_insert(&mut conn, new(&again), at(2_000))
            .await
            .unwrap();

        let claimed = db::effects_claim(&mut conn, 1_000, 5_000, 10)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["r_1/hold", "r_2/hold"]);
        let hold = claimed.iter().find(|e| e.effect.id == "r_1/hold").unwrap();
        assert_eq!(hold.effect, first[0]);
        assert_eq!(
            (hold.attempts, hold.recorded_at, hold.deadline),
            (0, at(1_000), at(61_000))
        );
        // Claimed: nobody else gets them until the claim expires.
        assert!(
            db::effects_claim(&mut conn, 2_000, 6_000, 10)
                .await
                .unwrap()
                .is_empty()
        );

        let retry = EffectRetry {
            id: "r_1/hold".into(),
            attempts: 1,
            next_at: at(3_000),
            last_error: "down".into(),
        };
        db::effects_retry(&mut conn, &[retry]).await.unwrap();
        assert!(
            db::effects_claim(&mut conn, 2_500, 7_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let claimed = db::effects_claim(&mut conn, 3_000, 8_000, 10)
            .await
            .unwrap();
        assert_eq!(ids(&claimed), ["r_1/hold"]);
        assert_eq!(claimed[0].attempts, 1);
        // An expired claim is claimed again (its replica died); the limit holds.
        let claimed = db::effects_claim(&mut conn, 9_000, 20_000, 1)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);

        // Forgetting tells which effects were still recorded.
        let gone = db::effects_delete(&mut conn, &["r_2/hold".into(), "r_9/hold".into()])
            .await
            .unwrap();
        assert_eq!(gone, HashSet::from(["r_2/hold".to_owned()]));
        let gone = db::effects_delete(&mut conn, &["r_2/hold".into()])
            .await
            .unwrap();
        assert!(gone.is_empty(), "settled once");
    }

    async fn a_batch_records_its_effects_when_it_commits(kind: Kind) {
        let mut db = TestDb::open(kind, &sqlite::RUNTIME_MIGRATOR, &NO_TABLES).await;
        let url = db.url();
        let mut conn = db.conn();
        let now = Timestamp::now();
        let entry = InboxEntry {
            id: "m_1",
            subject: "cmd.test",
            occurred: now,
            received: now,
        };
        let effects = [
            effect("r_1/hold", "r_1", "{}"),
            effect("r_1/void", "r_1", "{}"),
        ];
        db::open_batch(&mut conn, &[], &[entry], None)
            .await
            .unwrap();
        let new = NewEffects {
            effects: &effects,
            deadline: Duration::from_secs(60),
        };
        db::close_batch(&mut conn, &[], &[], new, now)
            .await
            .unwrap();

        let database = db::Database::open(&url, 1, |_| &NO_TABLES).await.unwrap();
        let saga = RideId::parse("r_1").unwrap();
        let listed = database.effects_of_saga(&saga).await.unwrap();
        assert_eq!(
            listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["r_1/hold", "r_1/void"]
        );
        assert_eq!(listed[0].attempts, 0);
        assert_eq!(listed[0].last_error, None);
        let later = now.unix_millis() + 1;
        assert_eq!(database.effects_pending(later).await.unwrap(), (2, true));
        let claimed = db::effects_claim(&mut conn, later, later + 10_000, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 2);
        assert_eq!(database.effects_pending(later).await.unwrap(), (2, false));
        database.close().await;
    }
}
