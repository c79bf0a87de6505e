//! The effect executor: performs the effects the service's transactions recorded, outside any
//! transaction, and settles their outcomes (see [`super::effects`]).
//!
//! One task per replica ([`WorkerContext::effect_loop`]). The effects a replica's transactions record
//! are recorded claimed by it (for an attempt's timeout and a margin) and reach its executor
//! in memory once they commit ([`Handoff`](super::handoff::Handoff)), so the common path costs no claim. The executor
//! also claims, on every tick, due effects nobody holds: the retries it scheduled, and the
//! effects of a replica that stopped or crashed before performing them (their claims expired).
//! A claim is a short write transaction, so replicas never perform one effect at the same
//! time while claims hold. Each effect is performed in a task of its own (at most
//! `RIDESAGA_EFFECT_CONCURRENCY` at once, each attempt bounded by `RIDESAGA_EFFECT_TIMEOUT`).
//! Outcomes settle in one transaction at a time, which runs beside the loop (attempts keep
//! starting while it commits), and the attempts that end meanwhile form the next group (group
//! commit) through [`Worker::settle`], which also forgets the effects and stores their outputs
//! and the effects they make due; a transient failure before the deadline becomes another
//! attempt after a growing delay. Outputs are published after the
//! commit. A stopping executor starts nothing more, hands the claims of the effects it had not
//! started back, and lets the attempts in flight finish.

use std::collections::{HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use ridesaga_schemas::trace::{Span, SpanKind, attr, now_unix_nanos};
use ridesaga_schemas::{RideId, Timestamp, TraceContext};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::batch::to_rows;
use super::db::{self, Conn, EffectRetry, OutboxRow};
use super::effects::{Effect, EffectError, EffectOutcome, Finished, PendingEffect};
use super::handler::{BatchError, HandleError, Worker};
use super::handoff::CLAIM_MARGIN;
use super::metrics::Metrics;
use super::process::WorkerContext;

/// How the executor runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct EffectSettings {
    /// `RIDESAGA_EFFECT_CONCURRENCY`: attempts in flight at once.
    pub concurrency: usize,
    /// `RIDESAGA_EFFECT_TIMEOUT`: how long one attempt may take.
    pub timeout: Duration,
    /// How often to look for due effects besides the wake-ups from batches.
    pub tick: Duration,
}

/// The delay after the first transient failure; it doubles with every attempt after that.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest delay between two attempts.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The most effects one claim takes.
const CLAIM_MAX: usize = 256;

/// The delay before the next attempt at an effect that had `attempts` attempts before the one
/// that just failed: 200 ms, 400 ms, 800 ms ... capped at 10 s.
pub(super) fn backoff(attempts: u32) -> Duration {
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
    Effect { index: usize, error: HandleError },
    /// Nothing in the group could be settled (the database failed).
    Group(HandleError),
}

impl From<sqlx::Error> for SettleError {
    fn from(e: sqlx::Error) -> Self {
        SettleError::Group(e.into())
    }
}

/// What a settle transaction committed.
struct Committed {
    /// The outputs, for the publisher.
    rows: Vec<OutboxRow>,
    /// Outcomes settled (those another replica had not settled first).
    settled: usize,
    /// The effects the outcomes made due, recorded claimed by this replica.
    effects: Vec<Effect>,
}

/// How the loop looks for due effects nobody holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// Not now.
    No,
    /// A read first; the claim only if something is due.
    Peek,
    /// Claim at once (the last claim was full).
    Claim,
}

/// The executor's state.
struct Executor {
    settings: EffectSettings,
    limit: Arc<Semaphore>,
    tasks: TaskTracker,
    done: mpsc::UnboundedSender<Attempt>,
    /// Ids of the effects this executor holds: waiting in `queue` or being attempted.
    held: HashSet<String>,
    /// Effects handed or claimed, waiting for a permit.
    queue: VecDeque<PendingEffect>,
}

impl<W: Worker> WorkerContext<W> {
    /// The executor, until `stop`: then it starts nothing more, hands back the claims of the
    /// effects it had not started, lets the attempts in flight finish (each within its
    /// timeout), settles them and waits for their outputs' publishing.
    pub(super) async fn effect_loop(
        self: Arc<Self>,
        settings: EffectSettings,
        stop: CancellationToken,
    ) {
        let (done, mut results) = mpsc::unbounded_channel::<Attempt>();
        let (settled, mut settles) = mpsc::unbounded_channel::<()>();
        let mut ex = Executor {
            settings,
            limit: Arc::new(Semaphore::new(settings.concurrency)),
            tasks: TaskTracker::new(),
            done,
            held: HashSet::new(),
            queue: VecDeque::new(),
        };
        let mut ticker = tokio::time::interval(settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut look = Look::No;
        let mut stopping = false;
        // The attempts that ended while a settle transaction was running: the next group.
        let mut ended: Vec<Attempt> = Vec::new();
        let mut settling = false;
        loop {
            if !stopping {
                self.take_handed(&mut ex);
                self.start_queued(&mut ex);
                if look != Look::No && ex.queue.is_empty() {
                    let more = self.claim(look, &mut ex).await;
                    self.start_queued(&mut ex);
                    look = if more { Look::Claim } else { Look::No };
                    if more && ex.limit.available_permits() > 0 {
                        continue;
                    }
                }
            }
            if !settling && !ended.is_empty() {
                // One settle transaction at a time, beside the loop: attempts keep starting
                // while it commits, and those that end meanwhile form the next group.
                settling = true;
                let (context, tasks, group) =
                    (self.clone(), ex.tasks.clone(), std::mem::take(&mut ended));
                let settled = settled.clone();
                ex.tasks.spawn(async move {
                    context.settle_attempts(group, &tasks).await;
                    let _ = settled.send(());
                });
            }
            if stopping && ex.held.is_empty() && !settling {
                break;
            }
            tokio::select! {
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    self.hand_back(&mut ex).await;
                }
                _ = self.effects.due.notified(), if !stopping => {}
                _ = ticker.tick(), if !stopping => {
                    if look == Look::No {
                        look = Look::Peek;
                    }
                }
                Some(()) = settles.recv() => settling = false,
                Some(first) = results.recv() => {
                    ended.push(first);
                    while let Ok(next) = results.try_recv() {
                        ended.push(next);
                    }
                }
            }
            // An attempt that ended is no longer held: its claim holds until it settles.
            for attempt in &ended {
                ex.held.remove(&attempt.effect.effect.id);
            }
        }
        ex.tasks.close();
        ex.tasks.wait().await;
    }

    /// Queues the effects this replica's transactions handed over.
    fn take_handed(&self, ex: &mut Executor) {
        for effect in self.effects.take() {
            if ex.held.insert(effect.effect.id.clone()) {
                ex.queue.push_back(effect);
            }
        }
    }

    /// Starts an attempt at each queued effect there is a permit for.
    fn start_queued(self: &Arc<Self>, ex: &mut Executor) {
        while !ex.queue.is_empty() {
            let Ok(permit) = ex.limit.clone().try_acquire_owned() else {
                return;
            };
            if let Some(effect) = ex.queue.pop_front() {
                self.start(ex, effect, permit);
            }
        }
    }

    fn start(self: &Arc<Self>, ex: &Executor, effect: PendingEffect, permit: OwnedSemaphorePermit) {
        let (context, done, timeout) = (self.clone(), ex.done.clone(), ex.settings.timeout);
        ex.tasks.spawn(async move {
            let _permit = permit;
            let mut effect = effect;
            // The attempt is a span under the one that made the effect due (else under the
            // ride); what its outcome produces is created under the attempt.
            let made_due =
                TraceContext::continued(effect.effect.trace.take(), effect.effect.saga_id.as_ref());
            let attempt = made_due.child();
            let started = now_unix_nanos();
            let result = context.attempt(&effect, timeout).await;
            if context.tracer.enabled() {
                let mut span = Span::ended_now(
                    &attempt,
                    Some(made_due.span_id),
                    format!("perform {}", effect.effect.kind),
                    SpanKind::Client,
                    started,
                )
                .attribute(attr::EFFECT_ID, effect.effect.id.as_str())
                .attribute(attr::EFFECT_KIND, effect.effect.kind.as_str())
                .attribute("ridesaga.effect.attempt", i64::from(effect.attempts) + 1);
                if let Some(saga) = &effect.effect.saga_id {
                    span = span.attribute(attr::SAGA_ID, saga.as_str());
                }
                if let Err(e) = &result {
                    span.error = Some(e.to_string());
                }
                context.tracer.record(span);
            }
            // A retry keeps the context it was recorded with (the table's); a settled outcome
            // carries the attempt's.
            effect.effect.trace = Some(attempt);
            let _ = done.send(Attempt { effect, result });
        });
    }

    /// Claims as many due effects nobody holds as there are free permits, and queues them;
    /// true when more may be due than there was room for.
    async fn claim(&self, look: Look, ex: &mut Executor) -> bool {
        let room = ex.limit.available_permits().min(CLAIM_MAX);
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
        let until = now.saturating_add((ex.settings.timeout + CLAIM_MARGIN).as_millis() as i64);
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
            // Claimed again while this executor still holds it (its claim expired
            // meanwhile): the attempt it holds settles it.
            if ex.held.insert(effect.effect.id.clone()) {
                ex.queue.push_back(effect);
            }
        }
        full
    }

    /// Clears the claims of the effects this executor holds but has not started, so that
    /// another replica performs them without waiting for the claims to expire.
    async fn hand_back(&self, ex: &mut Executor) {
        self.take_handed(ex);
        let ids: Vec<String> = ex.queue.drain(..).map(|e| e.effect.id).collect();
        for id in &ids {
            ex.held.remove(id);
        }
        if ids.is_empty() {
            return;
        }
        let released = self
            .database
            .transaction(async |conn| db::effects_release(conn, &ids).await)
            .await;
        match released {
            Ok(()) => tracing::info!(effects = ids.len(), "handed unstarted effects back"),
            Err(e) => {
                tracing::warn!(error = %e, effects = ids.len(), "could not hand effects back; another replica performs them once their claims expire");
            }
        }
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

    /// Settles a group of attempts in one transaction. When the transaction itself fails,
    /// each outcome is settled alone, so that one outcome's fault is its own; one that still
    /// fails is left to its claim's expiry (it is performed again then).
    async fn settle_attempts(self: &Arc<Self>, group: Vec<Attempt>, tasks: &TaskTracker) {
        let now = Timestamp::now();
        let mut outcomes = Vec::new();
        let mut retries = Vec::new();
        for Attempt { effect, result } in group {
            match next_step(&effect, result, now) {
                Next::Settle(outcome) => outcomes.push(Finished { effect, outcome }),
                Next::Retry(retry) => retries.push(retry),
            }
        }
        let error = match self.settle_group(&outcomes, &retries, now, tasks).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if outcomes.len() <= 1 {
            tracing::warn!(error = %error, "could not record effect outcomes; they are performed again once their claims expire");
            return;
        }
        tracing::warn!(error = %error, outcomes = outcomes.len(), "settling effects failed; settling them one by one");
        for one in outcomes.chunks(1) {
            if let Err(e) = self.settle_group(one, &[], now, tasks).await {
                tracing::warn!(effect = %one[0].effect.effect.id, error = %e, "could not record an effect's outcome; it is performed again once its claim expires");
            }
        }
        if !retries.is_empty()
            && let Err(e) = self.settle_group(&[], &retries, now, tasks).await
        {
            tracing::warn!(error = %e, "could not schedule effects for another attempt; they are retried once their claims expire");
        }
    }

    /// Settles `outcomes` and schedules `retries` in one transaction. An outcome the service
    /// cannot settle is left out and the transaction redone without it (failures are rare, and
    /// this keeps the common path free of a savepoint per outcome); the effect is then set up
    /// for another attempt. The effects the outcomes make due go to this executor.
    async fn settle_group(
        self: &Arc<Self>,
        outcomes: &[Finished],
        retries: &[EffectRetry],
        now: Timestamp,
        tasks: &TaskTracker,
    ) -> Result<(), HandleError> {
        let mut refused: Vec<(usize, HandleError)> = Vec::new();
        let started = std::time::Instant::now();
        loop {
            let skip: HashSet<usize> = refused.iter().map(|(index, _)| *index).collect();
            let mut updates = retries.to_vec();
            updates.extend(refused.iter().map(|(index, error)| {
                retry_of(&outcomes[*index].effect, format!("settle: {error}"), now)
            }));
            let attempt = self
                .database
                .transaction(async |conn| {
                    self.settle_once(conn, outcomes, &skip, &updates, now).await
                })
                .await;
            match attempt {
                Ok(committed) => {
                    tracing::debug!(
                        outcomes = outcomes.len(),
                        retries = retries.len(),
                        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                        "effect outcomes settled"
                    );
                    self.metrics
                        .effects_settled
                        .fetch_add(committed.settled as u64, Ordering::Relaxed);
                    for (index, error) in &refused {
                        Metrics::inc(&self.metrics.effects_settle_failed);
                        tracing::warn!(effect = %outcomes[*index].effect.effect.id, %error, "could not settle an effect's outcome; it is performed again later");
                    }
                    self.effects
                        .hand(self.effects.record(&committed.effects), now);
                    if !committed.rows.is_empty() {
                        let context = self.clone();
                        tasks.spawn(async move {
                            if let Err(e) = context.publisher.publish(&committed.rows).await {
                                tracing::warn!(error = %e, "effect outputs left to the relay");
                            }
                        });
                    }
                    return Ok(());
                }
                Err(SettleError::Effect { index, error }) => refused.push((index, error)),
                Err(SettleError::Group(e)) => return Err(e),
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
        outcomes: &[Finished],
        skip: &HashSet<usize>,
        updates: &[EffectRetry],
        now: Timestamp,
    ) -> Result<Committed, SettleError> {
        let ids: Vec<String> = outcomes
            .iter()
            .enumerate()
            .filter(|(index, _)| !skip.contains(index))
            .map(|(_, finished)| finished.effect.effect.id.clone())
            .collect();
        let recorded = db::effects_delete(conn, &ids).await?;
        // The outcomes to settle, and the index of each in `outcomes`.
        let (indices, group): (Vec<usize>, Vec<Finished>) = outcomes
            .iter()
            .enumerate()
            .filter(|(index, finished)| {
                let id = &finished.effect.effect.id;
                let settle = !skip.contains(index) && recorded.contains(id);
                if !settle && !skip.contains(index) {
                    tracing::debug!(effect = %id, "settled already");
                }
                settle
            })
            .map(|(index, finished)| (index, finished.clone()))
            .unzip();
        let done = if group.is_empty() {
            Default::default()
        } else {
            self.worker
                .settle(conn, &group, now)
                .await
                .map_err(|e| match e {
                    BatchError::Input { index, error } => SettleError::Effect {
                        index: indices.get(index).copied().unwrap_or(indices[0]),
                        error,
                    },
                    BatchError::Batch(error) => SettleError::Group(error),
                })?
        };
        let mut done = done;
        let mut rows = to_rows(&done.outputs).map_err(SettleError::Group)?;
        // Outputs and further effects go under the attempt that settled their saga's effect.
        let attempt_of = |saga: Option<&RideId>| {
            group
                .iter()
                .find(|f| f.effect.effect.saga_id.as_ref() == saga)
                .and_then(|f| f.effect.effect.trace.clone())
        };
        for (row, output) in rows.iter_mut().zip(&done.outputs) {
            let parent = TraceContext::continued(
                attempt_of(output.saga_id.as_ref()),
                output.saga_id.as_ref(),
            );
            let created = parent.child();
            self.record_created(&created, Some(&parent), output, "effect");
            row.trace = Some(created);
        }
        for effect in done.effects.iter_mut().filter(|e| e.trace.is_none()) {
            effect.trace = attempt_of(effect.saga_id.as_ref());
        }
        db::store_outputs(
            conn,
            &rows,
            self.effects.record(&done.effects),
            updates,
            now,
        )
        .await?;
        Ok(Committed {
            rows,
            settled: group.len(),
            effects: done.effects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Kind;
    use crate::runtime::db::{InboxEntry, NewEffects};
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
                trace: None,
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
            trace: None,
        }
    }

    fn ids(claimed: &[PendingEffect]) -> Vec<&str> {
        let mut ids: Vec<&str> = claimed.iter().map(|e| e.effect.id.as_str()).collect();
        ids.sort_unstable();
        ids
    }

    each_backend!(
        the_metrics_sample_counts_the_outbox_and_effects_and_their_oldest,
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
            claim: Duration::ZERO,
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
            claim: Duration::ZERO,
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

    async fn the_metrics_sample_counts_the_outbox_and_effects_and_their_oldest(kind: Kind) {
        use crate::runtime::metrics::Sample;
        let mut db = TestDb::open(kind, &sqlite::RUNTIME_MIGRATOR, &NO_TABLES).await;
        let url = db.url();
        let database = db::Database::open(&url, 1, |_| &NO_TABLES).await.unwrap();
        let now = Timestamp::now();
        assert_eq!(
            database.sample(now.unix_millis()).await.unwrap(),
            Sample::default()
        );
        let mut conn = db.conn();
        let row = |id: &str| OutboxRow {
            message_id: id.into(),
            subject: format!("evt.test.done.{id}"),
            payload: b"{}".to_vec(),
            trace: None,
        };
        // A batch three seconds ago left two outputs and two effects; one output a second ago.
        let (first, second, third) = (row("m_1"), row("m_2"), row("m_3"));
        let effects = [
            effect("r_1/hold", "r_1", "{}"),
            effect("r_2/hold", "r_2", "{}"),
        ];
        let new = NewEffects {
            effects: &effects,
            deadline: Duration::from_secs(60),
            claim: Duration::ZERO,
        };
        let at = |ms_ago: i64| Timestamp::from_unix_millis(now.unix_millis() - ms_ago);
        db::open_batch(&mut conn, &[], &[], None).await.unwrap();
        let outputs = [(None, &first), (None, &second)];
        db::close_batch(&mut conn, &[], &outputs, new, at(3000))
            .await
            .unwrap();
        let none = NewEffects {
            effects: &[],
            ..new
        };
        db::open_batch(&mut conn, &[], &[], None).await.unwrap();
        db::close_batch(&mut conn, &[], &[(None, &third)], none, at(1000))
            .await
            .unwrap();
        let sample = database.sample(now.unix_millis()).await.unwrap();
        assert_eq!(
            sample,
            Sample {
                outbox_rows: 3,
                outbox_oldest_ms: 3000,
                effects_pending: 2,
                effects_oldest_ms: 3000,
            }
        );
        db::outbox_delete(&mut conn, &["m_1".into(), "m_2".into()])
            .await
            .unwrap();
        let sample = database.sample(now.unix_millis()).await.unwrap();
        assert_eq!((sample.outbox_rows, sample.outbox_oldest_ms), (1, 1000));
        database.close().await;
    }
}
