//! Tests of the fraud service's tables: loading state and writing back changes.

use proptest::prelude::*;
use ridesaga_schemas::{
    BlockRider, Envelope, Message, MessageId, MessageKind, PaymentDeclined, RideRequested,
    UnblockRider,
};
use sqlx::{Connection, SqliteConnection};

use super::super::{FraudConfig, FraudService, domain, input_of};
use super::*;
use crate::runtime::Worker;
use crate::testing::{apply_batch_in_tx, apply_in_tx, database};

/// A fresh database file with the fraud tables, deleted on drop.
struct Db {
    _dir: tempfile::TempDir,
    conn: SqliteConnection,
}

async fn db() -> Db {
    let (dir, conn) = database(service().migrator(crate::runtime::Kind::Sqlite)).await;
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
        expires_at: None,
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
    let (kind, score, reasons) = decision(&apply(&mut db.conn, &requested(5, 1, 8.0, 50)).await);
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
    assert!(
        service()
            .tick(&mut crate::runtime::Conn::Sqlite(&mut tx), at(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let late =
        Timestamp(at(0).0 + service().config().retention + std::time::Duration::from_secs(1));
    service()
        .tick(&mut crate::runtime::Conn::Sqlite(&mut tx), late)
        .await
        .unwrap();
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
    let q =
        "SELECT ride_id, rider_id, requested_at_ms, score, flagged, reasons FROM fraud_requests";
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

/// An input of the store-versus-domain properties: requests (some of impossible trips),
/// declines, blocks and unblocks of two riders, `t` seconds in.
fn scripted((kind, n, _): (u8, usize, i64), t: i64) -> Envelope {
    let rider = n % 2;
    match kind {
        0 | 1 => requested(n, rider, 8.0, t),
        2 => requested(n, rider, 300.0, t),
        3 => declined(n, rider, t),
        4 => block(rider, t),
        _ => unblock(rider, t),
    }
}

/// The script's inputs, each at the sum of the gaps so far.
fn timed(script: Vec<(u8, usize, i64)>) -> Vec<Envelope> {
    let mut t = 0;
    script
        .into_iter()
        .map(|choice| {
            t += choice.2;
            scripted(choice, t)
        })
        .collect()
}

/// What the domain decides for each input, applied one at a time over a whole state in memory,
/// and that state at the end.
fn decided(inputs: &[Envelope]) -> (Vec<Vec<Message>>, State) {
    let rules = FraudConfig::default().rules;
    let mut memory = State::default();
    let outputs = inputs
        .iter()
        .map(|input| {
            domain::handle(&mut memory, &input_of(input).unwrap(), &rules)
                .into_iter()
                .map(|e| super::super::envelope(input, e).message)
                .collect()
        })
        .collect();
    (outputs, memory)
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
            let inputs = timed(script);
            let (expected, memory) = decided(&inputs);
            for (input, expected) in inputs.iter().zip(expected) {
                let out: Vec<Message> =
                    apply(&mut db.conn, input).await.into_iter().map(|e| e.message).collect();
                assert_eq!(out, expected);
            }
            assert_eq!(load_all(&mut db.conn).await, memory);
        });
    }

    /// A batch keeps what its inputs add in memory, laid over the tables for the inputs after
    /// them, and writes it when it commits: it must decide what the domain decides input by
    /// input, whatever the batches' sizes (many rides and small gaps, so that the velocity
    /// window fills within a batch).
    #[test]
    fn batches_decide_what_the_domain_decides_input_by_input(
        script in prop::collection::vec((0u8..6, 0usize..40, 0i64..6), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            let mut db = db().await;
            let inputs = timed(script);
            let (expected, memory) = decided(&inputs);
            let mut start = 0;
            for size in sizes.iter().cycle() {
                if start >= inputs.len() {
                    break;
                }
                let end = (start + size).min(inputs.len());
                let batch: Vec<(Envelope, Timestamp)> =
                    inputs[start..end].iter().map(|i| (i.clone(), at(0))).collect();
                let outputs = apply_batch_in_tx(&service(), &mut db.conn, &batch).await.unwrap();
                for (i, out) in (start..end).zip(outputs) {
                    let out: Vec<Message> = out.into_iter().map(|e| e.message).collect();
                    assert_eq!(out, expected[i], "input {i}");
                }
                start = end;
            }
            assert_eq!(load_all(&mut db.conn).await, memory);
        });
    }
}
