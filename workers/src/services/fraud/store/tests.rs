//! Tests of the fraud service's tables, each run on both backends: loading state, the
//! windows' bounds, retention, and batches against the domain input by input.

use proptest::prelude::*;
use ridesaga_schemas::{
    BlockRider, Envelope, Message, MessageId, MessageKind, PaymentDeclined, RideRequested,
    UnblockRider,
};

use super::super::rides::RideRules;
use super::super::{FraudConfig, FraudService, PRUNE_BATCH, domain, input_of};
use super::*;
use crate::runtime::Worker;
use crate::testing::{TestDb, handle_batch_in_tx, handle_in_tx, tick_in_tx};

crate::testing::each_backend!(
    a_redelivered_request_is_scored_once,
    the_sixth_request_within_a_minute_is_flagged,
    the_windows_hold_what_is_after_their_start_and_up_to_the_request,
    repeated_declines_and_impossible_trips_are_flagged,
    a_blocked_rider_is_flagged_until_unblocked,
    rows_past_retention_are_pruned_on_tick,
    prune_deletes_the_oldest_rows_before_the_time_up_to_its_limit,
    replicas_scoring_one_rider_at_once_count_each_others_requests,
    a_teleporting_route_is_flagged_once_and_a_normal_one_not,
    the_fifth_ride_of_a_pair_is_flagged_even_within_one_batch,
    a_flagged_ride_is_reviewed_once_and_an_unflagged_one_not_at_all,
    judged_rides_past_retention_are_pruned_unless_awaiting_review,
);

/// A fresh database on `kind` with the fraud tables.
async fn db(kind: Kind) -> TestDb {
    let service = service();
    TestDb::open(
        kind,
        service.migrator(Kind::Sqlite),
        service.migrator(Kind::Postgres),
    )
    .await
}

fn service() -> FraudService {
    FraudService::new(FraudConfig::default())
}

/// One input as the runtime applies it: in its own transaction, committed.
async fn apply(db: &mut TestDb, input: &Envelope) -> Vec<Envelope> {
    let out = handle_in_tx(&service(), db.conn(), input, at(0))
        .await
        .unwrap();
    for e in &out {
        e.validate().unwrap();
    }
    out
}

/// The first column of `sql`'s single row, an integer.
async fn count(db: &mut TestDb, sql: &'static str) -> i64 {
    match db.conn() {
        Conn::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
        Conn::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await.unwrap(),
    }
}

/// Runs `sql`, a statement without parameters.
async fn execute(db: &mut TestDb, sql: &'static str) {
    match db.conn() {
        Conn::Sqlite(c) => drop(sqlx::query(sql).execute(c).await.unwrap()),
        Conn::Postgres(c) => drop(sqlx::query(sql).execute(c).await.unwrap()),
    }
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
    msg_at(message, ride, at(occurred))
}
fn msg_at(message: impl Into<Message>, ride: Option<usize>, occurred: Timestamp) -> Envelope {
    let mut e = Envelope::new(message, ride.map(rid), "test");
    e.occurred_at = occurred;
    e
}
fn requested(ride: usize, rider: usize, km: f64, occurred: i64) -> Envelope {
    requested_at(ride, rider, km, at(occurred))
}
fn requested_at(ride: usize, rider: usize, km: f64, occurred: Timestamp) -> Envelope {
    let pickup = ridesaga_schemas::GeoPoint::new(52.5, 13.4).unwrap();
    let m = RideRequested {
        rider_id: uid(rider),
        pickup,
        dropoff: pickup,
        payment_token: "tok_visa".into(),
        estimated_distance_km: km,
        estimated_fare_cents: 900,
        match_deadline: Timestamp::from_unix_millis(occurred.unix_millis() + 30_000),
        expires_at: None,
    };
    msg_at(m, Some(ride), occurred)
}
fn declined(ride: usize, rider: usize, occurred: i64) -> Envelope {
    declined_at(ride, rider, at(occurred))
}
fn declined_at(ride: usize, rider: usize, occurred: Timestamp) -> Envelope {
    let m = PaymentDeclined {
        rider_id: uid(rider),
        code: "card_declined".into(),
        message: "no".into(),
    };
    msg_at(m, Some(ride), occurred)
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

async fn a_redelivered_request_is_scored_once(kind: Kind) {
    let mut db = db(kind).await;
    let request = requested(1, 1, 8.0, 0);
    let out = apply(&mut db, &request).await;
    assert_eq!(decision(&out), (MessageKind::FraudCleared, 0, vec![]));
    assert_eq!(
        out[0].id,
        MessageId::derive_from_key("r_1/evt.fraud.cleared")
    );
    assert_eq!(
        (out[0].saga_id.as_ref(), &out[0].correlation_id),
        (Some(&rid(1)), &request.correlation_id)
    );
    assert!(apply(&mut db, &request).await.is_empty());
    assert!(
        apply(&mut db, &requested(1, 1, 8.0, 0)).await.is_empty(),
        "a copy under a new id"
    );
    assert_eq!(
        count(&mut db, "SELECT COUNT(*) FROM fraud_requests").await,
        1
    );
}

async fn the_sixth_request_within_a_minute_is_flagged(kind: Kind) {
    let mut db = db(kind).await;
    for n in 0..5 {
        let out = apply(&mut db, &requested(n, 1, 8.0, n as i64 * 10)).await;
        assert_eq!(decision(&out).0, MessageKind::FraudCleared);
    }
    let (kind, score, reasons) = decision(&apply(&mut db, &requested(5, 1, 8.0, 50)).await);
    assert_eq!(
        (kind, score),
        (MessageKind::FraudFlagged, domain::WEIGHT_VELOCITY)
    );
    assert!(reasons[0].starts_with("velocity"), "{reasons:?}");
    let later = apply(&mut db, &requested(6, 1, 8.0, 71)).await;
    assert_eq!(decision(&later).0, MessageKind::FraudCleared);
}

/// A window counts what happened after its start (the request's time less the window) and at
/// or before the request, to the millisecond, whether the rows are stored or added by the
/// batch; a request or decline later than the request is not counted.
async fn the_windows_hold_what_is_after_their_start_and_up_to_the_request(kind: Kind) {
    let rules = FraudConfig::default().rules;
    let t = at(0).unix_millis();
    let ms = Timestamp::from_unix_millis;
    let mut db = db(kind).await;
    // Rider 1: one request exactly at the window's start, four within it, one just after the
    // request: four earlier ones count, with the request itself five, not more than five.
    let mut stored = vec![requested_at(0, 1, 8.0, ms(t - rules.window_ms))];
    stored.extend((1..5).map(|n| requested_at(n, 1, 8.0, ms(t - 1000 * n as i64))));
    stored.push(requested_at(5, 1, 8.0, ms(t + 1)));
    // Rider 2: three declines, the first exactly at the decline window's start.
    stored.push(declined_at(10, 2, ms(t - rules.decline_window_ms)));
    stored.push(declined_at(11, 2, ms(t - 1)));
    stored.push(declined_at(12, 2, ms(t)));
    // Rider 3: three declines within the window, the last at the request's millisecond.
    stored.push(declined_at(20, 3, ms(t - rules.decline_window_ms + 1)));
    stored.push(declined_at(21, 3, ms(t - 1)));
    stored.push(declined_at(22, 3, ms(t)));
    for input in &stored {
        apply(&mut db, input).await;
    }
    let first = requested_at(6, 1, 8.0, ms(t));
    assert_eq!(
        decision(&apply(&mut db, &first).await).0,
        MessageKind::FraudCleared
    );
    // The same millisecond again: now five earlier ones count (rides 1 to 4 and 6).
    let second = requested_at(7, 1, 8.0, ms(t));
    let (kind_of, score, _) = decision(&apply(&mut db, &second).await);
    assert_eq!(
        (kind_of, score),
        (MessageKind::FraudFlagged, domain::WEIGHT_VELOCITY)
    );
    // Two declines within the window are fewer than three; three are enough.
    let two = requested_at(13, 2, 8.0, ms(t));
    assert_eq!(
        decision(&apply(&mut db, &two).await).0,
        MessageKind::FraudCleared
    );
    let three = requested_at(23, 3, 8.0, ms(t));
    let (kind_of, score, _) = decision(&apply(&mut db, &three).await);
    assert_eq!(
        (kind_of, score),
        (MessageKind::FraudFlagged, domain::WEIGHT_DECLINES)
    );

    // The same inputs as one batch on a fresh database decide the same, each request of the
    // batch counting what the ones before it added.
    let mut fresh = self::db(kind).await;
    let mut batch: Vec<Envelope> = stored.clone();
    batch.extend([first, second, two, three]);
    let inputs: Vec<(Envelope, Timestamp)> = batch.iter().map(|i| (i.clone(), at(0))).collect();
    let outputs = handle_batch_in_tx(&service(), fresh.conn(), &inputs)
        .await
        .unwrap();
    let kinds: Vec<MessageKind> = outputs[stored.len()..]
        .iter()
        .map(|out| decision(out).0)
        .collect();
    assert_eq!(
        kinds,
        [
            MessageKind::FraudCleared,
            MessageKind::FraudFlagged,
            MessageKind::FraudCleared,
            MessageKind::FraudFlagged
        ]
    );
}

async fn repeated_declines_and_impossible_trips_are_flagged(kind: Kind) {
    let mut db = db(kind).await;
    for n in 0..3 {
        assert!(
            apply(&mut db, &declined(n, 1, -3600 + n as i64))
                .await
                .is_empty()
        );
    }
    assert!(
        apply(&mut db, &declined(0, 1, -3600)).await.is_empty(),
        "one per ride"
    );
    assert_eq!(
        count(&mut db, "SELECT COUNT(*) FROM fraud_declines").await,
        3
    );
    let (kind, score, _) = decision(&apply(&mut db, &requested(10, 1, 8.0, 0)).await);
    assert_eq!(
        (kind, score),
        (MessageKind::FraudFlagged, domain::WEIGHT_DECLINES)
    );
    let (kind, score, _) = decision(&apply(&mut db, &requested(11, 2, 450.0, 0)).await);
    assert_eq!(
        (kind, score),
        (MessageKind::FraudFlagged, domain::WEIGHT_IMPOSSIBLE_TRIP)
    );
}

async fn a_blocked_rider_is_flagged_until_unblocked(kind: Kind) {
    let mut db = db(kind).await;
    let out = apply(&mut db, &block(1, 0)).await;
    let Message::RiderBlockChanged(change) = &out[0].message else {
        panic!("{out:?}")
    };
    assert!(change.blocked && out[0].saga_id.is_none());
    let (kind, score, reasons) = decision(&apply(&mut db, &requested(1, 1, 8.0, 1)).await);
    assert_eq!(
        (kind, score, reasons),
        (
            MessageKind::FraudFlagged,
            100,
            vec!["rider_blocked: chargebacks".to_owned()]
        )
    );
    apply(&mut db, &unblock(1, 2)).await;
    assert!(
        matches!(&apply(&mut db, &block(1, 1)).await[0].message,
        Message::RiderBlockChanged(c) if !c.blocked),
        "a late block does not undo the unblock"
    );
    assert_eq!(
        decision(&apply(&mut db, &requested(2, 1, 8.0, 3)).await).0,
        MessageKind::FraudCleared
    );
}

async fn rows_past_retention_are_pruned_on_tick(kind: Kind) {
    let mut db = db(kind).await;
    apply(&mut db, &requested(1, 1, 8.0, 0)).await;
    apply(&mut db, &declined(1, 1, 0)).await;
    let early = tick_in_tx(&service(), db.conn(), at(3600)).await.unwrap();
    assert!(early.is_empty());
    let both =
        "SELECT (SELECT COUNT(*) FROM fraud_requests) + (SELECT COUNT(*) FROM fraud_declines)";
    assert_eq!(count(&mut db, both).await, 2);
    let late =
        Timestamp(at(0).0 + service().config().retention + std::time::Duration::from_secs(1));
    tick_in_tx(&service(), db.conn(), late).await.unwrap();
    assert_eq!(count(&mut db, both).await, 0);
}

/// Requests by when they were scored, declines by when they happened: strictly before the
/// time, oldest first, at most the limit per table.
async fn prune_deletes_the_oldest_rows_before_the_time_up_to_its_limit(kind: Kind) {
    let mut db = db(kind).await;
    // Scored at 1000, 2000, 3000 ms; declined at 1000, 2000, 3000 ms.
    execute(
        &mut db,
        "INSERT INTO fraud_requests (ride_id, rider_id, requested_at_ms, score, flagged, \
         reasons, scored_at_ms) VALUES ('r_1', 'u_1', 0, 0, false, '[]', 1000), \
         ('r_2', 'u_1', 0, 0, false, '[]', 2000), ('r_3', 'u_1', 0, 0, false, '[]', 3000)",
    )
    .await;
    execute(
        &mut db,
        "INSERT INTO fraud_declines (ride_id, rider_id, declined_at_ms) \
         VALUES ('r_1', 'u_1', 1000), ('r_2', 'u_1', 2000), ('r_3', 'u_1', 3000)",
    )
    .await;
    let before = Timestamp::from_unix_millis(3000);
    assert_eq!(prune(&mut db.conn(), before, 1).await.unwrap(), 2);
    let oldest = "SELECT (SELECT MIN(scored_at_ms) FROM fraud_requests) \
                  + (SELECT MIN(declined_at_ms) FROM fraud_declines)";
    assert_eq!(count(&mut db, oldest).await, 4000);
    assert_eq!(prune(&mut db.conn(), before, PRUNE_BATCH).await.unwrap(), 2);
    assert_eq!(prune(&mut db.conn(), before, PRUNE_BATCH).await.unwrap(), 0);
    assert_eq!(count(&mut db, oldest).await, 6000);
}

/// Every row, as the domain sees them.
async fn load_all(db: &mut TestDb) -> State {
    const REQUESTS: &str = "SELECT ride_id, rider_id, requested_at_ms, score, flagged, reasons \
                            FROM fraud_requests";
    const DECLINES: &str = "SELECT ride_id, rider_id, declined_at_ms FROM fraud_declines";
    const BLOCKS: &str = "SELECT rider_id, blocked, reason, changed_at_ms FROM fraud_blocklist";
    let mut tables: [Vec<Row>; 3] = Default::default();
    for (sql, rows) in [REQUESTS, DECLINES, BLOCKS].into_iter().zip(&mut tables) {
        *rows = match db.conn() {
            Conn::Sqlite(c) => {
                let all = sqlx::query(sql).fetch_all(c).await.unwrap();
                all.into_iter().map(Row::Sqlite).collect()
            }
            Conn::Postgres(c) => {
                let all = sqlx::query(sql).fetch_all(c).await.unwrap();
                all.into_iter().map(Row::Postgres).collect()
            }
        };
    }
    let [requests, declines, blocks] = tables;
    let mut state = State::default();
    for row in &requests {
        let (id, scored) = scored_from_row(row).unwrap();
        state.requests.insert(id, scored);
    }
    for row in &declines {
        let (id, decline) = decline_from_row(row).unwrap();
        state.declines.insert(id, decline);
    }
    for row in &blocks {
        let (rider_id, block) = block_from_row(row).unwrap();
        state.blocks.insert(rider_id, block);
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

/// The store loads only a rider's recent history for a request; the domain over the whole
/// state in memory must decide the same. The script's requests, declines, blocks and unblocks
/// go through `Worker::handle` on a real database and through [`domain::handle`]: same
/// outputs, same state at the end.
fn the_tables_hold_what_the_domain_decides(kind: Kind, script: Vec<(u8, usize, i64)>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db(kind).await;
        let inputs = timed(script);
        let (expected, memory) = decided(&inputs);
        for (input, expected) in inputs.iter().zip(expected) {
            let out: Vec<Message> = apply(&mut db, input)
                .await
                .into_iter()
                .map(|e| e.message)
                .collect();
            assert_eq!(out, expected);
        }
        assert_eq!(load_all(&mut db).await, memory);
    });
}

/// A batch keeps what its inputs add in memory, laid over the tables for the inputs after
/// them, and writes it when it commits: it must decide what the domain decides input by
/// input, whatever the batches' sizes (many rides and small gaps, so that the velocity window
/// fills within a batch).
fn batches_decide_what_the_domain_decides_input_by_input(
    kind: Kind,
    script: Vec<(u8, usize, i64)>,
    sizes: Vec<usize>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db(kind).await;
        let inputs = timed(script);
        let (expected, memory) = decided(&inputs);
        let mut start = 0;
        for size in sizes.iter().cycle() {
            if start >= inputs.len() {
                break;
            }
            let end = (start + size).min(inputs.len());
            let batch: Vec<(Envelope, Timestamp)> = inputs[start..end]
                .iter()
                .map(|i| (i.clone(), at(0)))
                .collect();
            let outputs = handle_batch_in_tx(&service(), db.conn(), &batch)
                .await
                .unwrap();
            for (i, out) in (start..end).zip(outputs) {
                let out: Vec<Message> = out.into_iter().map(|e| e.message).collect();
                assert_eq!(out, expected[i], "input {i}");
            }
            start = end;
        }
        assert_eq!(load_all(&mut db).await, memory);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn the_tables_hold_what_the_domain_decides_on_sqlite(
        script in prop::collection::vec((0u8..6, 0usize..8, 0i64..40), 1..40),
    ) {
        the_tables_hold_what_the_domain_decides(Kind::Sqlite, script);
    }

    #[test]
    fn the_tables_hold_what_the_domain_decides_on_postgres(
        script in prop::collection::vec((0u8..6, 0usize..8, 0i64..40), 1..40),
    ) {
        the_tables_hold_what_the_domain_decides(Kind::Postgres, script);
    }

    #[test]
    fn batches_decide_what_the_domain_decides_input_by_input_on_sqlite(
        script in prop::collection::vec((0u8..6, 0usize..40, 0i64..6), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        batches_decide_what_the_domain_decides_input_by_input(Kind::Sqlite, script, sizes);
    }

    #[test]
    fn batches_decide_what_the_domain_decides_input_by_input_on_postgres(
        script in prop::collection::vec((0u8..6, 0usize..40, 0i64..6), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        batches_decide_what_the_domain_decides_input_by_input(Kind::Postgres, script, sizes);
    }
}

/// Four replicas score four requests of one rider, all made at the same instant, at the same
/// time, each in a write transaction of the runtime's: with at most one request allowed in the
/// window, exactly one is cleared. Replicas that counted without seeing each other's requests
/// would clear them all.
async fn replicas_scoring_one_rider_at_once_count_each_others_requests(kind: Kind) {
    let db = db(kind).await;
    let mut config = FraudConfig::default();
    config.rules.max_requests = 1;
    let service = FraudService::new(config);
    let url = db.url();
    let mut replicas = Vec::new();
    for _ in 0..4 {
        let opened = crate::runtime::Database::open(&url, 1, |kind| service.migrator(kind));
        replicas.push(opened.await.unwrap());
    }
    let inputs: Vec<Envelope> = (1..=4).map(|n| requested(n, 1, 8.0, 0)).collect();
    let scored =
        futures_util::future::join_all(replicas.iter().zip(&inputs).map(|(replica, input)| {
            let service = &service;
            async move {
                replica
                    .transaction(async |conn| service.handle(conn, input, at(0)).await)
                    .await
            }
        }))
        .await;
    let kinds: Vec<MessageKind> = scored
        .into_iter()
        .flat_map(|outputs| outputs.unwrap())
        .map(|e| e.kind())
        .collect();
    let cleared = kinds
        .iter()
        .filter(|k| **k == MessageKind::FraudCleared)
        .count();
    let flagged = kinds
        .iter()
        .filter(|k| **k == MessageKind::FraudFlagged)
        .count();
    assert_eq!((cleared, flagged), (1, 3), "{kinds:?}");
    for replica in replicas {
        replica.close().await;
    }
}

fn did(n: usize) -> ridesaga_schemas::DriverId {
    ridesaga_schemas::DriverId::parse(format!("d_{n}")).unwrap()
}

/// A completion of `ride` by driver `driver` for rider `rider`, with a route whose top speed
/// is `max_speed_kmh` (no route: `None`).
fn completed(
    ride: usize,
    driver: usize,
    rider: usize,
    max_speed_kmh: Option<f64>,
    occurred: i64,
) -> Envelope {
    let route = max_speed_kmh.map(|max_speed_kmh| ridesaga_schemas::RouteSummary {
        points: 20,
        length_km: 6.0,
        duration_s: 900.0,
        max_speed_kmh,
        displacement_km: 5.0,
        spread_km: 5.2,
    });
    let m = ridesaga_schemas::RideCompleted {
        rider_id: uid(rider),
        driver_id: did(driver),
        distance_km: 6.0,
        duration_min: 15.0,
        fare_cents: 1500,
        distance_source: ridesaga_schemas::DistanceSource::Route,
        route_points: 20,
        fare: None,
        route,
    };
    msg(m, Some(ride), occurred)
}

fn review(ride: usize, decision: ridesaga_schemas::ReviewDecision, occurred: i64) -> Envelope {
    let m = ridesaga_schemas::ReviewRide {
        decision,
        note: Some("checked the trip".into()),
    };
    msg(m, Some(ride), occurred)
}

async fn a_teleporting_route_is_flagged_once_and_a_normal_one_not(kind: Kind) {
    let mut db = db(kind).await;
    assert!(
        apply(&mut db, &completed(1, 1, 1, Some(70.0), 0))
            .await
            .is_empty()
    );
    let teleport = completed(2, 1, 2, Some(4_000.0), 10);
    let out = apply(&mut db, &teleport).await;
    let [flag] = out.as_slice() else {
        panic!("{out:?}")
    };
    let Message::RideFlagged(m) = &flag.message else {
        panic!("{flag:?}")
    };
    assert_eq!((&m.driver_id, &m.rider_id), (&did(1), &uid(2)));
    assert!(
        m.reasons[0].starts_with("impossible_speed: 4000 km/h"),
        "{m:?}"
    );
    assert_eq!(
        flag.id,
        MessageId::derive_from_key("r_2/evt.fraud.ride_flagged")
    );
    assert_eq!(flag.saga_id, Some(rid(2)));
    // Delivered again, or a copy under another id: judged once.
    assert!(apply(&mut db, &teleport).await.is_empty());
    assert!(
        apply(&mut db, &completed(2, 1, 2, Some(4_000.0), 10))
            .await
            .is_empty()
    );
    // Without a route, only the pairing rule applies.
    assert!(
        apply(&mut db, &completed(3, 2, 3, None, 20))
            .await
            .is_empty()
    );
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM fraud_rides").await, 3);
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM fraud_rides WHERE reasons IS NOT NULL"
        )
        .await,
        1
    );
}

async fn the_fifth_ride_of_a_pair_is_flagged_even_within_one_batch(kind: Kind) {
    let mut db = db(kind).await;
    for n in 0..3 {
        assert!(
            apply(&mut db, &completed(n, 7, 7, None, n as i64 * 60))
                .await
                .is_empty()
        );
    }
    // Another rider, and a ride of the pair outside the window, do not count.
    apply(&mut db, &completed(10, 7, 8, None, 200)).await;
    let window = RideRules::default().pair_window_ms / 1000;
    let batch = [
        (completed(3, 7, 7, None, 300), at(0)),
        (completed(4, 7, 7, None, 360), at(0)),
        (completed(5, 7, 7, None, 60 + window), at(0)),
    ];
    let out = handle_batch_in_tx(&service(), db.conn(), &batch)
        .await
        .unwrap();
    assert!(out[0].is_empty(), "the fourth: {:?}", out[0]);
    let [flag] = out[1].as_slice() else {
        panic!("{:?}", out[1])
    };
    let Message::RideFlagged(m) = &flag.message else {
        panic!("{flag:?}")
    };
    assert_eq!(
        m.reasons,
        ["repeated_pair: 5 rides of this driver and rider within 168h"]
    );
    // A week later the first two rides have left the window: four in it.
    assert!(out[2].is_empty(), "{:?}", out[2]);
}

async fn a_flagged_ride_is_reviewed_once_and_an_unflagged_one_not_at_all(kind: Kind) {
    use ridesaga_schemas::ReviewDecision::{Approve, Reject};
    let mut db = db(kind).await;
    apply(&mut db, &completed(1, 1, 1, Some(900.0), 0)).await;
    apply(&mut db, &completed(2, 1, 2, Some(50.0), 0)).await;
    let approve = review(1, Approve, 30);
    let out = apply(&mut db, &approve).await;
    let [decided] = out.as_slice() else {
        panic!("{out:?}")
    };
    let Message::RideReviewed(m) = &decided.message else {
        panic!("{decided:?}")
    };
    assert_eq!(
        (m.decision, &m.driver_id, &m.rider_id, m.note.as_deref()),
        (Approve, &did(1), &uid(1), Some("checked the trip"))
    );
    assert_eq!(
        decided.id,
        MessageId::derive_from_key("r_1/evt.fraud.reviewed")
    );
    // The same command again, or a later opposite decision: the first one stands.
    assert!(apply(&mut db, &approve).await.is_empty());
    assert!(apply(&mut db, &review(1, Reject, 40)).await.is_empty());
    // Not flagged, or never completed: nothing to review.
    assert!(apply(&mut db, &review(2, Reject, 40)).await.is_empty());
    assert!(apply(&mut db, &review(9, Reject, 40)).await.is_empty());
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM fraud_rides WHERE decision = 'approve'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM fraud_rides WHERE decision IS NOT NULL"
        )
        .await,
        1
    );
}

async fn judged_rides_past_retention_are_pruned_unless_awaiting_review(kind: Kind) {
    let mut db = db(kind).await;
    apply(&mut db, &completed(1, 1, 1, Some(50.0), 0)).await;
    apply(&mut db, &completed(2, 1, 2, Some(900.0), 0)).await;
    apply(&mut db, &completed(3, 1, 3, Some(900.0), 0)).await;
    apply(
        &mut db,
        &review(3, ridesaga_schemas::ReviewDecision::Reject, 10),
    )
    .await;
    let late =
        Timestamp(at(0).0 + service().config().retention + std::time::Duration::from_secs(1));
    tick_in_tx(&service(), db.conn(), late).await.unwrap();
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM fraud_rides WHERE ride_id = 'r_2'"
        )
        .await,
        1
    );
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM fraud_rides").await, 1);
}
