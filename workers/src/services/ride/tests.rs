//! Tests of the ride worker: inputs applied one by one and as batches, against a real
//! database of each backend (every body runs once on SQLite and once on PostgreSQL).

use ridesaga_schemas::{
    ArriveRide, CancelReason, DriverAssigned, DriverId, GeoPoint, PaymentAuthorized, RequestRide,
    RideCancelled, RideRejected, RiderId, StartRide,
};

use super::domain::Status;
use super::*;
use crate::runtime::db;
use crate::testing::each_backend;
use crate::testing::{
    TestDb, handle_batch_in_tx, handle_each_in_tx, handle_in_tx, tick_in_tx, timeless,
};

const T0: i64 = 1_700_000_000_000;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(T0 + seconds * 1000)
}

fn service() -> RideService {
    RideService::new(RideConfig::default())
}

/// A fresh database of `kind` with the ride service's tables.
async fn database(kind: Kind) -> TestDb {
    TestDb::open(kind, &MIGRATOR, &PG_MIGRATOR).await
}

/// One transaction, as the runtime runs it (without the inbox).
async fn apply(conn: &mut Conn<'_>, input: &Envelope, now: Timestamp) -> Vec<Envelope> {
    handle_in_tx(&service(), conn, input, now).await.unwrap()
}

async fn tick(conn: &mut Conn<'_>, now: Timestamp) -> Vec<Envelope> {
    tick_in_tx(&service(), conn, now).await.unwrap()
}

fn ride(id: &str) -> Option<RideId> {
    Some(RideId::parse(id).unwrap())
}

fn request(id: &str) -> Envelope {
    let message = RequestRide {
        rider_id: RiderId::parse("u_ada").unwrap(),
        pickup: GeoPoint::new(52.52, 13.40).unwrap(),
        dropoff: GeoPoint::new(52.50, 13.45).unwrap(),
        payment_token: "tok_visa".into(),
    };
    Envelope::new(message, ride(id), "ridectl")
}

fn assigned(id: &str) -> Envelope {
    let message = DriverAssigned {
        rider_id: RiderId::parse("u_ada").unwrap(),
        driver_id: DriverId::parse("d_bob").unwrap(),
        driver_name: "Bob".into(),
        pickup_distance_km: 0.5,
    };
    Envelope::new(message, ride(id), "driver")
}

fn authorized(id: &str) -> Envelope {
    let message = PaymentAuthorized {
        rider_id: RiderId::parse("u_ada").unwrap(),
        hold_id: "hold_x".into(),
        amount_cents: 1000,
    };
    Envelope::new(message, ride(id), "payment")
}

async fn status(conn: &mut Conn<'_>, id: &str) -> Option<Status> {
    let ride_id = RideId::parse(id).unwrap();
    store::load(conn, &ride_id)
        .await
        .unwrap()
        .map(|(ride, _)| ride.status)
}

async fn a_ride_survives_between_transactions_until_it_is_confirmed(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let input = request("r_1");
    let out = apply(&mut conn, &input, at(0)).await;
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].subject(), "evt.ride.requested.r_1");
    assert_eq!(
        out[0].id,
        MessageId::derive(&input.id, "evt.ride.requested/")
    );
    assert_eq!(out[0].causation_id.as_ref(), Some(&input.id));

    assert!(apply(&mut conn, &authorized("r_1"), at(1)).await.is_empty());
    let out = apply(&mut conn, &assigned("r_1"), at(2)).await;
    assert_eq!(out[0].subject(), "evt.ride.confirmed.r_1");
    assert_eq!(status(&mut conn, "r_1").await, Some(Status::Confirmed));

    let (ride, origin) = store::load(&mut conn, &RideId::parse("r_1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ride.driver_id.unwrap().as_str(), "d_bob");
    assert_eq!(origin.correlation_id, input.correlation_id);
}

/// Every ride's stored state, by ride id.
async fn all_rides(conn: &mut Conn<'_>) -> Vec<(Ride, Origin)> {
    let sql = "SELECT ride_id FROM rides ORDER BY ride_id";
    let ids: Vec<String> = match conn {
        Conn::Sqlite(conn) => sqlx::query_scalar(sql).fetch_all(&mut **conn).await,
        Conn::Postgres(conn) => sqlx::query_scalar(sql).fetch_all(&mut **conn).await,
    }
    .unwrap();
    let mut rides = Vec::new();
    for id in ids {
        let ride_id = RideId::parse(id).unwrap();
        rides.push(store::load(conn, &ride_id).await.unwrap().unwrap());
    }
    rides
}

async fn a_batch_gives_the_outputs_and_state_of_its_inputs_applied_one_by_one(kind: Kind) {
    let inputs: Vec<(Envelope, Timestamp)> = [
        request("r_1"),
        request("r_2"),
        authorized("r_1"),
        Envelope::new(StartRide {}, ride("r_ghost"), "ridectl"),
        assigned("r_1"),
        Envelope::new(StartRide {}, ride("r_1"), "ridectl"),
        assigned("r_2"),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, input)| (input, at(i as i64)))
    .collect();
    let mut one_db = database(kind).await;
    let mut one = one_db.conn();
    let one_by_one = handle_each_in_tx(&service(), &mut one, &inputs).await;
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let batch = handle_batch_in_tx(&service(), &mut conn, &inputs)
        .await
        .unwrap();

    assert_eq!(timeless(batch), timeless(one_by_one));
    let stored = all_rides(&mut conn).await;
    assert_eq!(stored, all_rides(&mut one).await);
    assert_eq!(stored.len(), 2, "the refused command stored nothing");
    assert_eq!(stored[0].0.status, Status::Started);
    assert_eq!(stored[0].0.pickup, GeoPoint::new(52.52, 13.40).unwrap());
}

async fn coordinates_and_distances_survive_the_json_rows_bit_for_bit(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let input = request("r_1");
    apply(&mut conn, &input, at(0)).await;
    let ride_id = RideId::parse("r_1").unwrap();
    let (template, origin) = store::load(&mut conn, &ride_id).await.unwrap().unwrap();
    // A fixed pseudo-random walk over the whole range of valid coordinates.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |span: f64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 * span - span
    };
    let mut rides = Vec::new();
    for i in 0..500 {
        let mut ride = template.clone();
        ride.pickup = GeoPoint::new(next(90.0), next(180.0)).unwrap();
        ride.dropoff = GeoPoint::new(next(90.0), next(180.0)).unwrap();
        ride.distance_km = next(1e4).abs();
        rides.push((RideId::parse(format!("r_x{i}")).unwrap(), ride));
    }
    let changed: Vec<Changed<'_>> = rides
        .iter()
        .map(|(ride_id, ride)| Changed {
            ride_id,
            ride,
            origin: &origin,
            at: at(1),
        })
        .collect();
    store::save_many(kind, &changed)
        .unwrap()
        .execute(&mut conn)
        .await
        .unwrap();
    for (ride_id, ride) in &rides {
        let (stored, _) = store::load(&mut conn, ride_id).await.unwrap().unwrap();
        assert_eq!(stored.pickup, ride.pickup, "{ride_id}");
        assert_eq!(stored.dropoff, ride.dropoff, "{ride_id}");
        assert_eq!(stored.distance_km.to_bits(), ride.distance_km.to_bits());
    }
}

async fn texts_and_the_largest_amounts_survive_the_json_rows(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    apply(&mut conn, &request("r_1"), at(0)).await;
    let ride_id = RideId::parse("r_1").unwrap();
    let (mut ride, mut origin) = store::load(&mut conn, &ride_id).await.unwrap().unwrap();
    ride.payment_token = "tok_'single' \"double\" back\\slash\ttab\nline ünï 🚕".into();
    ride.estimated_fare_cents = i64::MAX as u64;
    ride.status = Status::Completed;
    ride.driver_id = Some(DriverId::parse("d_bob").unwrap());
    ride.started_at = Some(at(60));
    ride.fare_cents = Some(i64::MAX as u64);
    // A ride that no longer waits keeps no expiry: it reads back as its match deadline.
    ride.expires_at = ride.match_deadline;
    origin.correlation_id = "corr-'\"-ü".into();
    let changed = [Changed {
        ride_id: &ride_id,
        ride: &ride,
        origin: &origin,
        at: at(61),
    }];
    // A known ride keeps its places, token and estimate: only a new one is saved whole.
    let other = RideId::parse("r_2").unwrap();
    let new = [Changed {
        ride_id: &other,
        ..changed[0]
    }];
    for write in [&changed[..], &new[..]] {
        store::save_many(kind, write)
            .unwrap()
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let (stored, stored_origin) = store::load(&mut conn, &other).await.unwrap().unwrap();
    assert_eq!(stored, ride);
    assert_eq!(stored_origin, origin);
    let (updated, _) = store::load(&mut conn, &ride_id).await.unwrap().unwrap();
    assert_eq!(updated.fare_cents, Some(i64::MAX as u64));
    assert_eq!(updated.status, Status::Completed);
    assert_eq!(updated.payment_token, "tok_visa");

    let mut too_big = ride.clone();
    too_big.fare_cents = Some(i64::MAX as u64 + 1);
    let too_big = [Changed {
        ride: &too_big,
        ..changed[0]
    }];
    let err = store::save_many(kind, &too_big).unwrap_err();
    assert!(err.to_string().contains("does not fit BIGINT"), "{err}");
}

async fn a_failing_input_fails_alone_with_its_index(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let mut orphan = request("r_2");
    orphan.saga_id = None;
    let inputs = [request("r_1"), orphan];
    let batch: Vec<Input<'_>> = inputs
        .iter()
        .map(|envelope| Input {
            envelope,
            now: at(0),
            trace: None,
        })
        .collect();
    let err = service().handle_batch(&mut conn, &batch).await.unwrap_err();
    assert!(
        matches!(&err, BatchError::Input { index: 1, error: HandleError::Permanent(m) } if m.contains("saga id")),
        "{err:?}"
    );
}

async fn a_refused_command_stores_nothing(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let start = Envelope::new(StartRide {}, ride("r_ghost"), "ridectl");
    let out = apply(&mut conn, &start, at(0)).await;
    assert_eq!(out[0].subject(), "evt.ride.refused.r_ghost");
    assert_eq!(status(&mut conn, "r_ghost").await, None);
}

async fn the_tick_expires_due_rides_once_with_a_timer_id(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    let early = request("r_early");
    apply(&mut conn, &early, at(0)).await;
    apply(&mut conn, &request("r_late"), at(10)).await;
    apply(&mut conn, &request("r_done"), at(0)).await;
    apply(&mut conn, &assigned("r_done"), at(1)).await;
    apply(&mut conn, &authorized("r_done"), at(1)).await;

    assert!(tick(&mut conn, at(44)).await.is_empty());
    let out = tick(&mut conn, at(50)).await;
    assert_eq!(out.len(), 1, "{out:?}");
    let expired = &out[0];
    assert_eq!(expired.subject(), "evt.ride.cancelled.r_early");
    assert!(matches!(
        &expired.message,
        Message::RideCancelled(c) if c.reason == CancelReason::Expired
    ));
    assert_eq!(
        expired.id,
        MessageId::derive_from_key("ride/r_early/expired")
    );
    assert_eq!(expired.correlation_id, early.correlation_id);
    assert!(expired.causation_id.is_some());
    assert!(tick(&mut conn, at(50)).await.is_empty());
    assert_eq!(
        status(&mut conn, "r_early").await,
        Some(Status::Cancelled(CancelReason::Expired))
    );
    assert_eq!(status(&mut conn, "r_late").await, Some(Status::Requested));
    assert_eq!(status(&mut conn, "r_done").await, Some(Status::Confirmed));
}

async fn the_tick_cancels_confirmed_rides_that_do_not_start_by_their_deadlines(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    for id in ["r_absent", "r_waiting", "r_started"] {
        apply(&mut conn, &request(id), at(0)).await;
        apply(&mut conn, &assigned(id), at(1)).await;
        apply(&mut conn, &authorized(id), at(2)).await;
    }
    let arrive = Envelope::new(ArriveRide {}, ride("r_waiting"), "ridectl");
    let out = apply(&mut conn, &arrive, at(100)).await;
    assert_eq!(out[0].subject(), "evt.ride.driver_arrived.r_waiting");
    let start = Envelope::new(StartRide {}, ride("r_started"), "ridectl");
    apply(&mut conn, &start, at(100)).await;

    // The rider wait (5 minutes from the arrival) ends first.
    assert!(tick(&mut conn, at(399)).await.is_empty());
    let out = tick(&mut conn, at(400)).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(matches!(
        &out[0].message,
        Message::RideCancelled(c) if c.reason == CancelReason::RiderNoShow
    ));
    assert_eq!(
        out[0].id,
        MessageId::derive_from_key("ride/r_waiting/expired")
    );

    // The pickup deadline is 20 minutes from the confirmation.
    assert!(tick(&mut conn, at(2 + 1199)).await.is_empty());
    let out = tick(&mut conn, at(2 + 1200)).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].subject(), "evt.ride.cancelled.r_absent");
    assert!(matches!(
        &out[0].message,
        Message::RideCancelled(c)
            if c.reason == CancelReason::DriverNoShow && c.driver_id.is_some()
    ));
    assert!(tick(&mut conn, at(99_999)).await.is_empty());

    assert_eq!(
        status(&mut conn, "r_absent").await,
        Some(Status::Cancelled(CancelReason::DriverNoShow))
    );
    assert_eq!(
        status(&mut conn, "r_waiting").await,
        Some(Status::Cancelled(CancelReason::RiderNoShow))
    );
    assert_eq!(status(&mut conn, "r_started").await, Some(Status::Started));
}

async fn the_deadlines_of_a_confirmed_ride_survive_between_transactions(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    apply(&mut conn, &request("r_1"), at(0)).await;
    apply(&mut conn, &assigned("r_1"), at(1)).await;
    apply(&mut conn, &authorized("r_1"), at(2)).await;
    let arrive = Envelope::new(ArriveRide {}, ride("r_1"), "ridectl");
    apply(&mut conn, &arrive, at(60)).await;
    let ride_id = RideId::parse("r_1").unwrap();
    let (ride, _) = store::load(&mut conn, &ride_id).await.unwrap().unwrap();
    assert_eq!(ride.pickup_deadline, Some(at(2 + 1200)));
    assert_eq!(ride.rider_wait_deadline, Some(at(60 + 300)));
    assert_eq!(ride.deadline(), Some(at(60 + 300)));
}

async fn the_deadlines_count_waiting_and_overdue_rides_and_their_ends_are_counted(kind: Kind) {
    let mut db = database(kind).await;
    let mut conn = db.conn();
    apply(&mut conn, &request("r_early"), at(0)).await;
    apply(&mut conn, &request("r_late"), at(10)).await;
    apply(&mut conn, &request("r_started"), at(0)).await;
    apply(&mut conn, &assigned("r_started"), at(1)).await;
    apply(&mut conn, &authorized("r_started"), at(2)).await;
    let start = Envelope::new(StartRide {}, ride("r_started"), "ridectl");
    apply(&mut conn, &start, at(3)).await;
    let deadlines = |waiting, overdue, most_overdue_ms| SagaDeadlines {
        waiting,
        overdue,
        most_overdue_ms,
    };
    // A ride in progress has no deadline; the others expire 45 s after their request.
    assert_eq!(
        store::deadlines(&mut conn, at(5)).await.unwrap(),
        deadlines(2, 0, 0)
    );
    assert_eq!(
        store::deadlines(&mut conn, at(50)).await.unwrap(),
        deadlines(2, 1, 5000)
    );
    let out = tick(&mut conn, at(50)).await;
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        store::deadlines(&mut conn, at(50)).await.unwrap(),
        deadlines(1, 0, 0)
    );
    let row = db::OutboxRow::from_envelope(&out[0]);
    let outcome = service().saga_outcome(&row.subject, &row.payload);
    assert_eq!(
        outcome.map(|i| SAGA_OUTCOMES[i]),
        Some(("cancelled", "expired"))
    );
    let row = db::OutboxRow::from_envelope(&request("r_other"));
    assert_eq!(service().saga_outcome(&row.subject, &row.payload), None);
}

#[test]
fn every_way_a_ride_ends_is_a_counted_outcome() {
    let rider = RiderId::parse("u_ada").unwrap();
    let reasons = [
        CancelReason::Rider,
        CancelReason::NoDriver,
        CancelReason::PaymentDeclined,
        CancelReason::Expired,
        CancelReason::DriverNoShow,
        CancelReason::RiderNoShow,
    ];
    let mut ends: Vec<Message> = reasons
        .into_iter()
        .map(|reason| {
            Message::RideCancelled(RideCancelled {
                rider_id: rider.clone(),
                reason,
                driver_id: None,
            })
        })
        .collect();
    for reasons in [
        vec!["velocity".to_owned()],
        vec![INVALID_REQUEST.to_owned()],
    ] {
        ends.push(Message::RideRejected(RideRejected {
            rider_id: rider.clone(),
            score: 0,
            reasons,
            detail: None,
        }));
    }
    let mut seen: Vec<SagaOutcome> = ends
        .iter()
        .map(|end| saga_outcome(end).unwrap_or_else(|| panic!("no outcome for {end:?}")))
        .collect();
    seen.push(("completed", ""));
    seen.sort();
    let mut known = SAGA_OUTCOMES.to_vec();
    known.sort();
    assert_eq!(seen, known);
    let flagged = Message::RideRejected(RideRejected {
        rider_id: rider,
        score: 80,
        reasons: vec![],
        detail: None,
    });
    assert_eq!(saga_outcome(&flagged), Some(("rejected", "fraud_flagged")));
}

each_backend!(
    the_deadlines_count_waiting_and_overdue_rides_and_their_ends_are_counted,
    a_ride_survives_between_transactions_until_it_is_confirmed,
    a_batch_gives_the_outputs_and_state_of_its_inputs_applied_one_by_one,
    coordinates_and_distances_survive_the_json_rows_bit_for_bit,
    texts_and_the_largest_amounts_survive_the_json_rows,
    a_failing_input_fails_alone_with_its_index,
    a_refused_command_stores_nothing,
    the_tick_expires_due_rides_once_with_a_timer_id,
    the_tick_cancels_confirmed_rides_that_do_not_start_by_their_deadlines,
    the_deadlines_of_a_confirmed_ride_survive_between_transactions,
);
