//! The fraud service's tables (`migrations/fraud`): load the slice of state one input can read
//! (the ride's own decision, the rider's blocklist entry and recent history), and write back
//! what changed.
//!
//! SQL is kept portable to PostgreSQL (`$n` parameters, `ON CONFLICT`).

use ridesaga_schemas::{RideId, RiderId, Timestamp};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::domain::{Assessment, Block, Decline, FraudRules, Input, Scored, State};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A row this code cannot read back.
    #[error("unreadable row in {table}: {problem}")]
    Corrupt {
        table: &'static str,
        problem: String,
    },
}

fn corrupt(table: &'static str, problem: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        problem: problem.to_string(),
    }
}

/// What `input` can read: for a request, the ride's decision if there is one, else the
/// rider's blocklist entry and as much of the rider's recent requests and declines as the
/// rules can count (a rule only asks whether a threshold is reached).
pub async fn load_for_input(
    conn: &mut SqliteConnection,
    input: &Input,
    rules: &FraudRules,
) -> Result<State, StoreError> {
    let mut state = State::default();
    match input {
        Input::Requested {
            ride_id,
            rider_id,
            at,
            ..
        } => {
            let own = sqlx::query(
                "SELECT ride_id, rider_id, requested_at_ms, score, flagged, reasons \
                 FROM fraud_requests WHERE ride_id = $1",
            )
            .bind(ride_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = own {
                let (id, scored) = scored_from_row(&row)?;
                state.requests.insert(id, scored);
                return Ok(state);
            }
            load_block(conn, &mut state, rider_id).await?;
            let recent = sqlx::query(
                "SELECT ride_id, rider_id, requested_at_ms, score, flagged, reasons \
                 FROM fraud_requests WHERE rider_id = $1 \
                 AND requested_at_ms > $2 AND requested_at_ms <= $3 \
                 ORDER BY requested_at_ms DESC LIMIT $4",
            )
            .bind(rider_id.as_str())
            .bind(at.saturating_sub(rules.window_ms))
            .bind(*at)
            .bind(i64::from(rules.max_requests))
            .fetch_all(&mut *conn)
            .await?;
            for row in &recent {
                let (id, scored) = scored_from_row(row)?;
                state.requests.insert(id, scored);
            }
            let declines = sqlx::query(
                "SELECT ride_id, rider_id, declined_at_ms FROM fraud_declines WHERE rider_id = $1 \
                 AND declined_at_ms > $2 AND declined_at_ms <= $3 \
                 ORDER BY declined_at_ms DESC LIMIT $4",
            )
            .bind(rider_id.as_str())
            .bind(at.saturating_sub(rules.decline_window_ms))
            .bind(*at)
            .bind(i64::from(rules.max_declines))
            .fetch_all(&mut *conn)
            .await?;
            for row in &declines {
                let (id, decline) = decline_from_row(row)?;
                state.declines.insert(id, decline);
            }
        }
        Input::Declined { ride_id, .. } => {
            let own = sqlx::query(
                "SELECT ride_id, rider_id, declined_at_ms FROM fraud_declines WHERE ride_id = $1",
            )
            .bind(ride_id.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(row) = own {
                let (id, decline) = decline_from_row(&row)?;
                state.declines.insert(id, decline);
            }
        }
        Input::Block { rider_id, .. } | Input::Unblock { rider_id, .. } => {
            load_block(conn, &mut state, rider_id).await?;
        }
    }
    Ok(state)
}

async fn load_block(
    conn: &mut SqliteConnection,
    state: &mut State,
    rider_id: &RiderId,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT blocked, reason, changed_at_ms FROM fraud_blocklist WHERE rider_id = $1",
    )
    .bind(rider_id.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = row {
        let block = Block {
            blocked: row.try_get("blocked")?,
            reason: row.try_get("reason")?,
            at: row.try_get("changed_at_ms")?,
        };
        state.blocks.insert(rider_id.clone(), block);
    }
    Ok(())
}

/// Writes what differs between `before` (as loaded) and `after`. Requests and declines are
/// only ever added; a second writer of the same ride fails on the primary key and retries.
pub async fn save(
    conn: &mut SqliteConnection,
    before: &State,
    after: &State,
    now: Timestamp,
) -> Result<(), StoreError> {
    for (rider_id, block) in &after.blocks {
        if before.blocks.get(rider_id) == Some(block) {
            continue;
        }
        sqlx::query(
            "INSERT INTO fraud_blocklist (rider_id, blocked, reason, changed_at_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (rider_id) DO UPDATE SET \
             blocked = excluded.blocked, reason = excluded.reason, \
             changed_at_ms = excluded.changed_at_ms",
        )
        .bind(rider_id.as_str())
        .bind(block.blocked)
        .bind(block.reason.as_deref())
        .bind(block.at)
        .execute(&mut *conn)
        .await?;
    }
    for (ride_id, scored) in &after.requests {
        if before.requests.contains_key(ride_id) {
            continue;
        }
        let reasons = serde_json::to_string(&scored.assessment.reasons)
            .map_err(|e| corrupt("fraud_requests", e))?;
        sqlx::query(
            "INSERT INTO fraud_requests (ride_id, rider_id, requested_at_ms, score, flagged, \
             reasons, scored_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(ride_id.as_str())
        .bind(scored.rider_id.as_str())
        .bind(scored.at)
        .bind(i64::from(scored.assessment.score))
        .bind(scored.assessment.flagged)
        .bind(reasons)
        .bind(now.unix_millis())
        .execute(&mut *conn)
        .await?;
    }
    for (ride_id, decline) in &after.declines {
        if before.declines.contains_key(ride_id) {
            continue;
        }
        sqlx::query(
            "INSERT INTO fraud_declines (ride_id, rider_id, declined_at_ms) VALUES ($1, $2, $3)",
        )
        .bind(ride_id.as_str())
        .bind(decline.rider_id.as_str())
        .bind(decline.at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Deletes up to `limit` requests scored, and declines that happened, before `before`.
pub async fn prune(
    conn: &mut SqliteConnection,
    before: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    let requests = sqlx::query(
        "DELETE FROM fraud_requests WHERE ride_id IN (SELECT ride_id FROM fraud_requests \
         WHERE scored_at_ms < $1 ORDER BY scored_at_ms LIMIT $2)",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    let declines = sqlx::query(
        "DELETE FROM fraud_declines WHERE ride_id IN (SELECT ride_id FROM fraud_declines \
         WHERE declined_at_ms < $1 ORDER BY declined_at_ms LIMIT $2)",
    )
    .bind(before.unix_millis())
    .bind(limit)
    .execute(&mut *conn)
    .await?;
    Ok(requests.rows_affected() + declines.rows_affected())
}

fn scored_from_row(row: &SqliteRow) -> Result<(RideId, Scored), StoreError> {
    let bad = |e: &dyn ToString| corrupt("fraud_requests", e.to_string());
    let ride_id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.try_get::<String, _>("rider_id")?).map_err(|e| bad(&e))?;
    let reasons: String = row.try_get("reasons")?;
    let score: i64 = row.try_get("score")?;
    let assessment = Assessment {
        score: u32::try_from(score).map_err(|e| bad(&e))?,
        reasons: serde_json::from_str(&reasons).map_err(|e| bad(&e))?,
        flagged: row.try_get("flagged")?,
    };
    let at = row.try_get("requested_at_ms")?;
    Ok((
        ride_id,
        Scored {
            rider_id,
            at,
            assessment,
        },
    ))
}

fn decline_from_row(row: &SqliteRow) -> Result<(RideId, Decline), StoreError> {
    let bad = |e: &dyn ToString| corrupt("fraud_declines", e.to_string());
    let ride_id = RideId::parse(row.try_get::<String, _>("ride_id")?).map_err(|e| bad(&e))?;
    let rider_id = RiderId::parse(row.try_get::<String, _>("rider_id")?).map_err(|e| bad(&e))?;
    Ok((
        ride_id,
        Decline {
            rider_id,
            at: row.try_get("declined_at_ms")?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use ridesaga_schemas::{
        BlockRider, Envelope, Message, MessageId, MessageKind, PaymentDeclined, RideRequested,
        UnblockRider,
    };
    use sqlx::{Connection, SqliteConnection};

    use super::super::{FraudConfig, FraudService, domain, input_of};
    use super::*;
    use crate::runtime::Worker;
    use crate::testing::{apply_in_tx, database};

    /// A fresh database file with the fraud tables, deleted on drop.
    struct Db {
        _dir: tempfile::TempDir,
        conn: SqliteConnection,
    }

    async fn db() -> Db {
        let (dir, conn) = database(service().migrator()).await;
        Db { _dir: dir, conn }
    }

    fn service() -> FraudService {
        FraudService::new(FraudConfig::default())
    }

    /// One input as the runtime applies it: in its own transaction, committed.
    async fn apply(conn: &mut SqliteConnection, input: &Envelope) -> Vec<Envelope> {
        let out = apply_in_tx(&service(), conn, input, at(0)).await.unwrap();
        for e in &out {
            e.validate().unwrap();
        }
        out
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_700_000_000_000 + seconds * 1000)
    }
    fn rid(n: usize) -> RideId {
        RideId::parse(format!("r_{n}")).unwrap()
    }
    fn uid(n: usize) -> RiderId {
        RiderId::parse(format!("u_{n}")).unwrap()
    }
    fn msg(message: impl Into<Message>, ride: Option<usize>, occurred: i64) -> Envelope {
        let mut e = Envelope::new(message, ride.map(rid), "test");
        e.occurred_at = at(occurred);
        e
    }
    fn requested(ride: usize, rider: usize, km: f64, occurred: i64) -> Envelope {
        let pickup = ridesaga_schemas::GeoPoint::new(52.5, 13.4).unwrap();
        let m = RideRequested {
            rider_id: uid(rider),
            pickup,
            dropoff: pickup,
            payment_token: "tok_visa".into(),
            estimated_distance_km: km,
            estimated_fare_cents: 900,
            match_deadline: at(occurred + 30),
        };
        msg(m, Some(ride), occurred)
    }
    fn declined(ride: usize, rider: usize, occurred: i64) -> Envelope {
        let m = PaymentDeclined {
            rider_id: uid(rider),
            code: "card_declined".into(),
            message: "no".into(),
        };
        msg(m, Some(ride), occurred)
    }
    fn block(rider: usize, occurred: i64) -> Envelope {
        msg(
            BlockRider {
                rider_id: uid(rider),
                reason: Some("chargebacks".into()),
            },
            None,
            occurred,
        )
    }
    fn unblock(rider: usize, occurred: i64) -> Envelope {
        msg(
            UnblockRider {
                rider_id: uid(rider),
            },
            None,
            occurred,
        )
    }

    fn decision(out: &[Envelope]) -> (MessageKind, u32, Vec<String>) {
        match out {
            [e] => match &e.message {
                Message::FraudCleared(m) => (e.kind(), m.score, m.reasons.clone()),
                Message::FraudFlagged(m) => (e.kind(), m.score, m.reasons.clone()),
                other => panic!("not a decision: {other:?}"),
            },
            other => panic!("expected one decision, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redelivered_request_is_scored_once() {
        let mut db = db().await;
        let request = requested(1, 1, 8.0, 0);
        let out = apply(&mut db.conn, &request).await;
        assert_eq!(decision(&out), (MessageKind::FraudCleared, 0, vec![]));
        assert_eq!(
            out[0].id,
            MessageId::derive_from_key("r_1/evt.fraud.cleared")
        );
        assert_eq!(
            (out[0].saga_id.as_ref(), &out[0].correlation_id),
            (Some(&rid(1)), &request.correlation_id)
        );
        assert!(apply(&mut db.conn, &request).await.is_empty());
        assert!(
            apply(&mut db.conn, &requested(1, 1, 8.0, 0))
                .await
                .is_empty(),
            "a copy under a new id"
        );
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM fraud_requests")
            .fetch_one(&mut db.conn)
            .await
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[tokio::test]
    async fn the_sixth_request_within_a_minute_is_flagged() {
        let mut db = db().await;
        for n in 0..5 {
            let out = apply(&mut db.conn, &requested(n, 1, 8.0, n as i64 * 10)).await;
            assert_eq!(decision(&out).0, MessageKind::FraudCleared);
        }
        let (kind, score, reasons) =
            decision(&apply(&mut db.conn, &requested(5, 1, 8.0, 50)).await);
        assert_eq!(
            (kind, score),
            (MessageKind::FraudFlagged, domain::WEIGHT_VELOCITY)
        );
        assert!(reasons[0].starts_with("velocity"), "{reasons:?}");
        let later = apply(&mut db.conn, &requested(6, 1, 8.0, 71)).await;
        assert_eq!(decision(&later).0, MessageKind::FraudCleared);
    }

    #[tokio::test]
    async fn repeated_declines_and_impossible_trips_are_flagged() {
        let mut db = db().await;
        for n in 0..3 {
            assert!(
                apply(&mut db.conn, &declined(n, 1, -3600 + n as i64))
                    .await
                    .is_empty()
            );
        }
        assert!(
            apply(&mut db.conn, &declined(0, 1, -3600)).await.is_empty(),
            "one per ride"
        );
        let (kind, score, _) = decision(&apply(&mut db.conn, &requested(10, 1, 8.0, 0)).await);
        assert_eq!(
            (kind, score),
            (MessageKind::FraudFlagged, domain::WEIGHT_DECLINES)
        );
        let (kind, score, _) = decision(&apply(&mut db.conn, &requested(11, 2, 450.0, 0)).await);
        assert_eq!(
            (kind, score),
            (MessageKind::FraudFlagged, domain::WEIGHT_IMPOSSIBLE_TRIP)
        );
    }

    #[tokio::test]
    async fn a_blocked_rider_is_flagged_until_unblocked() {
        let mut db = db().await;
        let out = apply(&mut db.conn, &block(1, 0)).await;
        let Message::RiderBlockChanged(change) = &out[0].message else {
            panic!("{out:?}")
        };
        assert!(change.blocked && out[0].saga_id.is_none());
        let (kind, score, reasons) = decision(&apply(&mut db.conn, &requested(1, 1, 8.0, 1)).await);
        assert_eq!(
            (kind, score, reasons),
            (
                MessageKind::FraudFlagged,
                100,
                vec!["rider_blocked: chargebacks".to_owned()]
            )
        );
        apply(&mut db.conn, &unblock(1, 2)).await;
        assert!(
            matches!(&apply(&mut db.conn, &block(1, 1)).await[0].message,
            Message::RiderBlockChanged(c) if !c.blocked),
            "a late block does not undo the unblock"
        );
        assert_eq!(
            decision(&apply(&mut db.conn, &requested(2, 1, 8.0, 3)).await).0,
            MessageKind::FraudCleared
        );
    }

    #[tokio::test]
    async fn rows_past_retention_are_pruned_on_tick() {
        let mut db = db().await;
        apply(&mut db.conn, &requested(1, 1, 8.0, 0)).await;
        apply(&mut db.conn, &declined(1, 1, 0)).await;
        let mut tx = db.conn.begin().await.unwrap();
        assert!(service().tick(&mut tx, at(3600)).await.unwrap().is_empty());
        let late =
            Timestamp(at(0).0 + service().config().retention + std::time::Duration::from_secs(1));
        service().tick(&mut tx, late).await.unwrap();
        tx.commit().await.unwrap();
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM fraud_requests) + (SELECT COUNT(*) FROM fraud_declines)",
        )
        .fetch_one(&mut db.conn)
        .await
        .unwrap();
        assert_eq!(left, 0);
    }

    /// Every row, as the domain sees them.
    async fn load_all(conn: &mut SqliteConnection) -> State {
        let mut state = State::default();
        let q = "SELECT ride_id, rider_id, requested_at_ms, score, flagged, reasons FROM fraud_requests";
        for row in sqlx::query(q).fetch_all(&mut *conn).await.unwrap() {
            let (id, scored) = scored_from_row(&row).unwrap();
            state.requests.insert(id, scored);
        }
        for row in sqlx::query("SELECT ride_id, rider_id, declined_at_ms FROM fraud_declines")
            .fetch_all(&mut *conn)
            .await
            .unwrap()
        {
            let (id, decline) = decline_from_row(&row).unwrap();
            state.declines.insert(id, decline);
        }
        let riders: Vec<String> = sqlx::query_scalar("SELECT rider_id FROM fraud_blocklist")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        for rider in riders {
            load_block(conn, &mut state, &RiderId::parse(rider).unwrap())
                .await
                .unwrap();
        }
        state
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The store loads only a rider's recent history for a request; the domain over the
        /// whole state in memory must decide the same. Random requests, declines, blocks and
        /// unblocks of two riders go through `Worker::apply` on a real SQLite file and through
        /// [`domain::handle`]: same outputs, same state at the end.
        #[test]
        fn the_tables_hold_what_the_domain_decides(
            script in prop::collection::vec((0u8..6, 0usize..8, 0i64..40), 1..40),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            runtime.block_on(async {
                let mut db = db().await;
                let mut memory = State::default();
                let rules = FraudConfig::default().rules;
                let mut t = 0;
                for (kind, n, gap) in script {
                    t += gap;
                    let rider = n % 2;
                    let input = match kind {
                        0 | 1 => requested(n, rider, 8.0, t),
                        2 => requested(n, rider, 300.0, t),
                        3 => declined(n, rider, t),
                        4 => block(rider, t),
                        _ => unblock(rider, t),
                    };
                    let out: Vec<Message> = apply(&mut db.conn, &input).await.into_iter().map(|e| e.message).collect();
                    let expected = domain::handle(&mut memory, &input_of(&input).unwrap(), &rules);
                    let expected: Vec<Message> = expected.into_iter().map(|e| super::super::envelope(&input, e).message).collect();
                    assert_eq!(out, expected);
                }
                assert_eq!(load_all(&mut db.conn).await, memory);
            });
        }
    }
}
