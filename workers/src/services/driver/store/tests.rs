//! Tests of the driver service's tables: loading state and writing back changes.

use proptest::prelude::*;
use ridesaga_schemas::{
    CancelReason, DriverOffline, DriverOnline, Envelope, FraudCleared, Message, MessageId,
    MessageKind, MoveDriver, PaymentDeclined, RegisterDriver, RideCancelled, RideCompleted,
    RideRejected, RideRequested,
};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::super::{DriverConfig, DriverService, domain, input_of};
use super::*;
use crate::runtime::{BatchError, HandleError, Worker};
use crate::testing::{
    KINDS, TestDb, handle_batch_in_tx, handle_each_in_tx, handle_in_tx, tick_in_tx, timeless,
};

/// A fresh database on `kind` with the driver tables.
async fn db(kind: Kind) -> TestDb {
    let service = service();
    TestDb::open(
        kind,
        service.migrator(Kind::Sqlite),
        service.migrator(Kind::Postgres),
    )
    .await
}

fn service() -> DriverService {
    DriverService::new(DriverConfig::default())
}

/// One input as the runtime applies it: in its own transaction, committed on success.
async fn apply(
    db: &mut TestDb,
    input: &Envelope,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    handle_in_tx(&service(), db.conn(), input, now).await
}

async fn tick(db: &mut TestDb, now: Timestamp) -> Vec<Envelope> {
    tick_in_tx(&service(), db.conn(), now).await.unwrap()
}

/// The rows of `sql` (without parameters), on either backend.
async fn select<T>(db: &mut TestDb, sql: &'static str) -> Vec<T>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
{
    match db.conn() {
        Conn::Sqlite(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
        Conn::Postgres(c) => sqlx::query_as(sql).fetch_all(c).await.unwrap(),
    }
}

/// Runs `sql` (without parameters), on either backend.
async fn execute(db: &mut TestDb, sql: &'static str) -> Result<(), sqlx::Error> {
    match db.conn() {
        Conn::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        Conn::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
    }
}

fn kinds(out: &[Envelope]) -> Vec<(MessageKind, String)> {
    out.iter()
        .map(|e| (e.kind(), e.subject_id().to_owned()))
        .collect()
}

async fn reserved_drivers(db: &mut TestDb) -> Vec<(String, String)> {
    select(
        db,
        "SELECT driver_id, current_ride FROM drivers WHERE current_ride IS NOT NULL \
         ORDER BY driver_id",
    )
    .await
}

/// Every driver and ride in the tables, as the domain sees them.
async fn load_all(db: &mut TestDb) -> State {
    let drivers = concat!("SELECT ", driver_columns!(""), " FROM drivers");
    let rides = concat!("SELECT ", ride_columns!(""), " FROM driver_rides");
    let (drivers, rides): (Vec<Driver>, Vec<StoredRide>) = match db.conn() {
        Conn::Sqlite(c) => {
            let d = sqlx::query(drivers).fetch_all(&mut *c).await.unwrap();
            let r = sqlx::query(rides).fetch_all(&mut *c).await.unwrap();
            (
                d.iter().map(|row| driver_at(row, 0).unwrap()).collect(),
                r.iter().map(|row| ride_at(row, 0).unwrap()).collect(),
            )
        }
        Conn::Postgres(c) => {
            let d = sqlx::query(drivers).fetch_all(&mut *c).await.unwrap();
            let r = sqlx::query(rides).fetch_all(&mut *c).await.unwrap();
            (
                d.iter().map(|row| driver_at(row, 0).unwrap()).collect(),
                r.iter().map(|row| ride_at(row, 0).unwrap()).collect(),
            )
        }
    };
    let mut state = State::default();
    for d in drivers {
        state.drivers.insert(d.id.clone(), d);
    }
    for (r, _) in rides {
        state.rides.insert(r.id.clone(), r);
    }
    state
}

#[test]
fn a_ride_row_has_as_many_columns_as_its_reader_skips() {
    assert_eq!(ride_columns!("").split(", ").count(), RIDE_COLUMNS);
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + seconds * 1000)
}
fn near(dlat: f64, dlng: f64) -> GeoPoint {
    GeoPoint::new(52.52 + dlat, 13.41 + dlng).unwrap()
}
fn rid(n: usize) -> RideId {
    RideId::parse(format!("r_{n}")).unwrap()
}
fn did(n: usize) -> DriverId {
    DriverId::parse(format!("d_{n}")).unwrap()
}
fn uid(n: usize) -> RiderId {
    RiderId::parse(format!("u_{n}")).unwrap()
}

/// A message as its producer would publish it, `occurred` seconds into the test.
fn msg(message: impl Into<Message>, ride: Option<usize>, occurred: i64) -> Envelope {
    let mut e = Envelope::new(message, ride.map(rid), "test");
    e.occurred_at = at(occurred);
    e
}
fn register(n: usize, location: GeoPoint, t: i64) -> Envelope {
    msg(
        RegisterDriver {
            driver_id: did(n),
            name: format!("Driver {n}"),
            location,
            email: None,
            phone: None,
        },
        None,
        t,
    )
}
fn online(n: usize, t: i64) -> Envelope {
    msg(
        DriverOnline {
            driver_id: did(n),
            location: None,
        },
        None,
        t,
    )
}
fn requested(n: usize, pickup: GeoPoint, deadline: Timestamp) -> Envelope {
    let m = RideRequested {
        rider_id: uid(n),
        pickup,
        dropoff: pickup,
        payment_token: "tok_visa".into(),
        estimated_distance_km: 3.0,
        estimated_fare_cents: 1200,
        match_deadline: deadline,
        expires_at: None,
    };
    msg(m, Some(n), 0)
}
fn cleared(n: usize) -> Envelope {
    msg(
        FraudCleared {
            rider_id: uid(n),
            score: 0,
            reasons: vec![],
        },
        Some(n),
        0,
    )
}
fn completed(n: usize) -> Envelope {
    let m = RideCompleted {
        rider_id: uid(n),
        driver_id: did(0),
        distance_km: 3.0,
        duration_min: 9.0,
        fare_cents: 1200,
        distance_source: ridesaga_schemas::DistanceSource::Reported,
        route_points: 0,
        fare: None,
        route: None,
    };
    msg(m, Some(n), 0)
}
fn cancelled(n: usize, reason: CancelReason) -> Envelope {
    msg(
        RideCancelled {
            rider_id: uid(n),
            reason,
            driver_id: None,
        },
        Some(n),
        0,
    )
}
fn declined(n: usize) -> Envelope {
    let m = PaymentDeclined {
        rider_id: uid(n),
        code: "card_declined".into(),
        message: "no".into(),
    };
    msg(m, Some(n), 0)
}
fn rejected(n: usize) -> Envelope {
    msg(
        RideRejected {
            rider_id: uid(n),
            score: 100,
            reasons: vec!["rider_blocked".into()],
            detail: None,
        },
        Some(n),
        0,
    )
}

async fn drivers_online(db: &mut TestDb, positions: &[(f64, f64)]) {
    for (n, (dlat, dlng)) in positions.iter().enumerate() {
        apply(db, &register(n, near(*dlat, *dlng), -10), at(0))
            .await
            .unwrap();
        apply(db, &online(n, -9), at(0)).await.unwrap();
    }
}

async fn a_redelivered_cleared_event_reserves_one_driver(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.02, 0.0), (0.01, 0.0)]).await;
    let request = requested(1, near(0.0, 0.0), at(60));
    assert!(apply(&mut db, &request, at(0)).await.unwrap().is_empty());
    let clearance = cleared(1);
    let out = apply(&mut db, &clearance, at(0)).await.unwrap();
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverAssigned, "r_1".to_owned())]
    );
    let Message::DriverAssigned(assigned) = &out[0].message else {
        panic!()
    };
    assert_eq!(
        (assigned.driver_id.as_str(), assigned.rider_id.as_str()),
        ("d_1", "u_1")
    );
    assert_eq!(
        out[0].id,
        MessageId::derive_from_key("r_1/evt.driver.assigned")
    );
    assert_eq!(
        out[0].correlation_id, request.correlation_id,
        "the saga's correlation id"
    );
    assert_eq!(out[0].causation_id.as_ref(), Some(&clearance.id));
    out[0].validate().unwrap();

    // The same message past the inbox, and a copy under another id: nothing more.
    assert!(apply(&mut db, &clearance, at(1)).await.unwrap().is_empty());
    assert!(apply(&mut db, &cleared(1), at(1)).await.unwrap().is_empty());
    assert_eq!(
        reserved_drivers(&mut db).await,
        [("d_1".to_owned(), "r_1".to_owned())]
    );
}

async fn a_driver_outside_each_small_search_circle_still_wins_when_nearest(kind: Kind) {
    for (step, km) in NEAR_FIRST_KM.into_iter().enumerate() {
        let mut db = db(kind).await;
        let pickup = near(0.0, 0.0);
        // d_0 is due north, just outside this step's circle; d_1 sits in a corner of its box:
        // found first, but farther away.
        let degrees = km / 111.2;
        let corner_lng = 0.8 * degrees / pickup.lat.to_radians().cos();
        let north_point = (1.1 * degrees, 0.0);
        let corner_point = (0.8 * degrees, corner_lng);
        drivers_online(&mut db, &[north_point, corner_point]).await;
        let north = pickup.distance_km(&near(north_point.0, north_point.1));
        let corner = pickup.distance_km(&near(corner_point.0, corner_point.1));
        assert!(
            km < north && north < corner,
            "step {step}: {north} {corner}"
        );
        apply(&mut db, &requested(1, pickup, at(60)), at(0))
            .await
            .unwrap();
        let out = apply(&mut db, &cleared(1), at(0)).await.unwrap();
        let Message::DriverAssigned(assigned) = &out[0].message else {
            panic!("{out:?}")
        };
        assert_eq!(assigned.driver_id.as_str(), "d_0", "step {step}");
    }
}

/// What `load_for_input` reads for `input` at `now`.
async fn loaded_for(db: &mut TestDb, input: &Envelope, now: Timestamp) -> Loaded {
    let rules = DriverConfig::default().rules;
    load_for_input(
        &mut db.conn(),
        &input_of(input).unwrap(),
        now,
        &rules,
        &BatchView::default(),
    )
    .await
    .unwrap()
}

fn driver_names(state: &State) -> Vec<&str> {
    state.drivers.keys().map(DriverId::as_str).collect()
}

async fn only_an_input_that_may_match_its_ride_searches_for_drivers(kind: Kind) {
    let mut db = db(kind).await;
    // Forty available drivers within 1.5 km of the pickups, nearer ones first.
    let positions: Vec<(f64, f64)> = (0..40).map(|i| (0.0003 * i as f64, 0.0)).collect();
    drivers_online(&mut db, &positions).await;
    let pickup = near(0.0, 0.0);

    // Requested, not cleared: only the ride could change, so no search.
    let request = requested(1, pickup, at(60));
    assert!(driver_names(&loaded_for(&mut db, &request, at(1)).await.state).is_empty());
    apply(&mut db, &request, at(1)).await.unwrap();
    // Cleared: a bounded set of candidates, which holds the nearest (the first, smallest
    // circle already has some: of the 15 drivers in its box, only the nearest few are read).
    let loaded = loaded_for(&mut db, &cleared(1), at(1)).await;
    assert_eq!(loaded.state.drivers.len(), NEARBY_DRIVERS as usize);
    assert!(loaded.state.drivers.contains_key(&did(0)));
    apply(&mut db, &cleared(1), at(1)).await.unwrap();
    assert_eq!(
        reserved_drivers(&mut db).await,
        [("d_0".to_owned(), "r_1".to_owned())]
    );
    // A redelivered request or clearance of the assigned ride: nothing to match.
    for again in [requested(1, pickup, at(60)), cleared(1)] {
        let loaded = loaded_for(&mut db, &again, at(2)).await;
        assert!(driver_names(&loaded.state).is_empty());
    }
    // Completed: the ride and its driver, who may take a waiting ride; no driver search.
    let loaded = loaded_for(&mut db, &completed(1), at(5)).await;
    assert_eq!(driver_names(&loaded.state), ["d_0"]);
    assert_eq!(loaded.state.rides.len(), 1);

    // Cleared first: nothing to match until the request arrives, which then searches, unless
    // the deadline has passed (the ride becomes unavailable without any driver).
    apply(&mut db, &cleared(2), at(1)).await.unwrap();
    assert!(driver_names(&loaded_for(&mut db, &cleared(2), at(1)).await.state).is_empty());
    let request = requested(2, pickup, at(60));
    let loaded = loaded_for(&mut db, &request, at(1)).await;
    // The nearest few of the first box but d_0, now reserved.
    assert_eq!(loaded.state.drivers.len(), NEARBY_DRIVERS as usize);
    assert!(!loaded.state.drivers.contains_key(&did(0)));
    let late = loaded_for(&mut db, &request, at(60)).await;
    assert!(driver_names(&late.state).is_empty());

    // Ending a ride that never got a driver reads the ride only.
    let loaded = loaded_for(&mut db, &cancelled(2, CancelReason::Rider), at(1)).await;
    assert!(driver_names(&loaded.state).is_empty());
}

async fn an_ending_that_frees_no_driver_does_not_look_for_waiting_rides(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db, &cleared(1), at(0)).await.unwrap();
    // Ride 2 waits for a driver while d_0 drives ride 1.
    apply(&mut db, &requested(2, near(0.01, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db, &cleared(2), at(0)).await.unwrap();
    let loaded = loaded_for(&mut db, &completed(1), at(1)).await;
    assert!(
        loaded.state.rides.contains_key(&rid(2)),
        "d_0 may take ride 2"
    );

    // Offline: released, but not available, so ride 2 is not loaded and keeps waiting.
    let offline = msg(DriverOffline { driver_id: did(0) }, None, 1);
    apply(&mut db, &offline, at(1)).await.unwrap();
    let loaded = loaded_for(&mut db, &completed(1), at(2)).await;
    assert!(!loaded.state.rides.contains_key(&rid(2)));
    let out = apply(&mut db, &completed(1), at(2)).await.unwrap();
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverReleased, "r_1".to_owned())]
    );
    assert!(reserved_drivers(&mut db).await.is_empty());
}

async fn events_about_a_ride_carry_the_first_correlation_id_it_heard(kind: Kind) {
    let mut db = db(kind).await;
    // A tombstone first (an ending carries no correlation of its own), then the clearance
    // and the request, each with its own correlation id: the clearance's is kept.
    apply(&mut db, &cancelled(1, CancelReason::Rider), at(0))
        .await
        .unwrap();
    let clearance = cleared(1);
    apply(&mut db, &clearance, at(0)).await.unwrap();
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let stored: Vec<(Option<String>,)> = select(
        &mut db,
        "SELECT correlation_id FROM driver_rides WHERE ride_id = 'r_1'",
    )
    .await;
    assert_eq!(stored, [(Some(clearance.correlation_id.clone()),)]);

    // Ride 2 hears its clearance first too, finds no driver and expires in a timer run.
    let clearance = cleared(2);
    apply(&mut db, &clearance, at(0)).await.unwrap();
    apply(&mut db, &requested(2, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let out = tick(&mut db, at(60)).await;
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverUnavailable, "r_2".to_owned())]
    );
    assert_eq!(out[0].correlation_id, clearance.correlation_id);
}

async fn an_unmatched_ride_gets_unavailable_at_its_deadline_once(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.5, 0.0)]).await;
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    assert!(apply(&mut db, &cleared(1), at(0)).await.unwrap().is_empty());
    assert!(tick(&mut db, at(59)).await.is_empty());

    // A second replica on the same database races the first.
    let mut replica = db.another().await;
    let out = tick(&mut db, at(60)).await;
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverUnavailable, "r_1".to_owned())]
    );
    assert_eq!(
        out[0].id,
        MessageId::derive_from_key("r_1/evt.driver.unavailable")
    );
    out[0].validate().unwrap();
    assert!(tick(&mut replica, at(61)).await.is_empty());
    assert!(tick(&mut db, at(62)).await.is_empty());
    let late = apply(&mut db, &cancelled(1, CancelReason::NoDriver), at(63))
        .await
        .unwrap();
    assert!(late.is_empty(), "nothing to release");
}

async fn a_release_hands_the_driver_to_the_next_waiting_ride(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    let mut requests = Vec::new();
    for n in 1..=2 {
        requests.push(requested(n, near(0.0, 0.0), at(60)));
        apply(&mut db, &requests[n - 1], at(0)).await.unwrap();
        apply(&mut db, &cleared(n), at(0)).await.unwrap();
    }
    let out = apply(&mut db, &completed(1), at(5)).await.unwrap();
    assert_eq!(
        kinds(&out),
        [
            (MessageKind::DriverReleased, "r_1".to_owned()),
            (MessageKind::DriverAssigned, "r_2".to_owned())
        ]
    );
    // Ride 2's assignment carries ride 2's saga and correlation, not the completion's.
    assert_eq!(out[1].saga_id, Some(rid(2)));
    assert_eq!(out[1].correlation_id, requests[1].correlation_id);
    assert_eq!(
        reserved_drivers(&mut db).await,
        [("d_0".to_owned(), "r_2".to_owned())]
    );
    assert!(
        apply(&mut db, &cancelled(1, CancelReason::Rider), at(6))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_cancel_before_the_clearance_leaves_a_tombstone(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    apply(&mut db, &cancelled(1, CancelReason::Rider), at(0))
        .await
        .unwrap();
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    assert!(apply(&mut db, &cleared(1), at(0)).await.unwrap().is_empty());
    assert!(tick(&mut db, at(90)).await.is_empty());
    assert!(reserved_drivers(&mut db).await.is_empty());
}

async fn a_command_for_an_unregistered_driver_is_retried_later(kind: Kind) {
    let mut db = db(kind).await;
    let err = apply(&mut db, &online(3, 0), at(0)).await.unwrap_err();
    assert!(
        matches!(err, HandleError::Transient(ref m) if m.contains("d_3")),
        "{err}"
    );
    let wrong = msg(ridesaga_schemas::CancelRide {}, Some(1), 0);
    assert!(matches!(
        apply(&mut db, &wrong, at(0)).await,
        Err(HandleError::Permanent(_))
    ));
}

async fn the_schema_refuses_a_second_driver_for_one_ride(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0), (0.5, 0.0)]).await;
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db, &cleared(1), at(0)).await.unwrap();
    let double = execute(
        &mut db,
        "UPDATE drivers SET current_ride = 'r_1' WHERE driver_id = 'd_1'",
    )
    .await;
    assert!(double.is_err(), "the unique index must refuse it");
}

async fn a_batch_sees_what_its_earlier_inputs_wrote(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    let service = DriverService::new(DriverConfig::default());
    // Ride 1 is requested and cleared in one batch (absent from the rides read ahead, stored
    // by the request before the clearance loads), takes the only driver, and completes,
    // freeing the driver for ride 2, which was waiting in the same batch.
    let batch = [
        (requested(1, near(0.0, 0.0), at(60)), at(0)),
        (cleared(1), at(0)),
        (requested(2, near(0.0, 0.0), at(60)), at(0)),
        (cleared(2), at(0)),
        (completed(1), at(0)),
    ];
    let out = handle_batch_in_tx(&service, db.conn(), &batch)
        .await
        .unwrap();
    let kinds_of: Vec<Vec<MessageKind>> = out
        .iter()
        .map(|o| kinds(o).into_iter().map(|(k, _)| k).collect())
        .collect();
    assert!(
        kinds_of[1].contains(&MessageKind::DriverAssigned),
        "{kinds_of:?}"
    );
    assert!(
        !kinds_of[3].contains(&MessageKind::DriverAssigned),
        "{kinds_of:?}"
    );
    assert!(
        kinds_of[4].contains(&MessageKind::DriverReleased),
        "{kinds_of:?}"
    );
    assert!(
        kinds_of[4].contains(&MessageKind::DriverAssigned),
        "{kinds_of:?}"
    );
    let reserved: Vec<(String, Option<String>)> =
        select(&mut db, "SELECT driver_id, current_ride FROM drivers").await;
    assert_eq!(reserved, [("d_0".to_owned(), Some("r_2".to_owned()))]);
}

async fn a_driver_reserved_earlier_in_the_batch_does_not_stop_the_wider_search(kind: Kind) {
    let mut db = db(kind).await;
    // d_0 at the pickup, d_1 about 4.5 km away: outside the small first circle.
    drivers_online(&mut db, &[(0.0, 0.0), (0.04, 0.0)]).await;
    let service = DriverService::new(DriverConfig::default());
    let batch = [
        (requested(1, near(0.0, 0.0), at(60)), at(0)),
        (cleared(1), at(0)),
        (requested(2, near(0.0, 0.0), at(60)), at(0)),
        (cleared(2), at(0)),
    ];
    handle_batch_in_tx(&service, db.conn(), &batch)
        .await
        .unwrap();
    let reserved: Vec<(String, Option<String>)> = select(
        &mut db,
        "SELECT driver_id, current_ride FROM drivers ORDER BY driver_id",
    )
    .await;
    assert_eq!(
        reserved,
        [
            ("d_0".to_owned(), Some("r_1".to_owned())),
            ("d_1".to_owned(), Some("r_2".to_owned())),
        ]
    );
}

async fn a_batch_that_reserved_more_drivers_than_a_search_reads_still_finds_the_next_nearest(
    kind: Kind,
) {
    let mut db = db(kind).await;
    // More drivers than one search reads, each a little farther from the pickup than the one
    // before, all inside the first circle.
    let count = NEARBY_DRIVERS as usize + 4;
    let positions: Vec<(f64, f64)> = (0..count).map(|n| (0.0002 * n as f64, 0.0)).collect();
    drivers_online(&mut db, &positions).await;
    let service = DriverService::new(DriverConfig::default());
    // One batch: a ride more than a search reads, each takes the nearest driver left. The
    // stored rows still show every driver available; the batch's own reservations must
    // replace them, and the search must read past them.
    let rides = NEARBY_DRIVERS as usize + 2;
    let batch: Vec<(Envelope, Timestamp)> = (0..rides)
        .flat_map(|n| {
            [
                (requested(n, near(0.0, 0.0), at(60)), at(0)),
                (cleared(n), at(0)),
            ]
        })
        .collect();
    handle_batch_in_tx(&service, db.conn(), &batch)
        .await
        .unwrap();
    let mut reserved = reserved_drivers(&mut db).await;
    reserved.sort_by_key(|(_, ride)| ride[2..].parse::<usize>().unwrap());
    let expected: Vec<(String, String)> = (0..rides)
        .map(|n| (did(n).to_string(), rid(n).to_string()))
        .collect();
    assert_eq!(reserved, expected);
}

async fn an_ending_sees_its_driver_as_an_earlier_input_of_the_batch_moved_them(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    let service = DriverService::new(DriverConfig::default());
    let first = [
        (requested(1, near(0.0, 0.0), at(60)), at(0)),
        (cleared(1), at(0)),
    ];
    handle_batch_in_tx(&service, db.conn(), &first)
        .await
        .unwrap();
    // The ride's driver moves, then the ride completes, in one batch: the rides read ahead
    // hold the driver where they were, and the release must not write that back.
    let moved = msg(
        MoveDriver {
            driver_id: did(0),
            location: near(0.02, 0.0),
        },
        None,
        30,
    );
    let second = [(moved, at(30)), (completed(1), at(31))];
    handle_batch_in_tx(&service, db.conn(), &second)
        .await
        .unwrap();
    let stored: Vec<(f64, Option<String>)> =
        select(&mut db, "SELECT lat, current_ride FROM drivers").await;
    assert_eq!(stored, [(near(0.02, 0.0).lat, None)]);
}

async fn a_reservation_guard_fails_the_transaction_instead_of_double_booking(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    // Loaded while the driver is free...
    let event = input_of(&cleared(1)).unwrap();
    let rules = DriverConfig::default().rules;
    let view = BatchView::default();
    let mut loaded = load_for_input(&mut db.conn(), &event, at(0), &rules, &view)
        .await
        .unwrap();
    let before = loaded.state.clone();
    domain::handle(&mut loaded.state, &event, at(0), &rules).unwrap();
    // ...but another replica reserved them meanwhile.
    let mut replica = db.another().await;
    let reserve = "UPDATE drivers SET current_ride = 'r_9' WHERE driver_id = 'd_0'";
    execute(&mut replica, reserve).await.unwrap();
    let err = save(&mut db.conn(), &before, &loaded, at(0))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("reserve d_0"), "{err}");
}

/// What the read-ahead statement of `db`'s backend reads for a batch whose inputs name `ids`,
/// run as the runtime runs a preload.
async fn read_ahead_of(db: &mut TestDb, ids: &[RideId]) -> BatchView {
    let sql = read_ahead_sql(db.kind());
    let names: Vec<&str> = ids.iter().map(RideId::as_str).collect();
    let parameter = serde_json::to_string(&names).unwrap();
    let rows = crate::runtime::db::preload_rows(&mut db.conn(), sql, parameter)
        .await
        .unwrap();
    let ids: Vec<&RideId> = ids.iter().collect();
    BatchView::read_ahead(&ids, &rows).unwrap()
}

async fn the_read_ahead_holds_the_named_rides_their_drivers_and_whether_any_waits(kind: Kind) {
    let mut db = db(kind).await;
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    // Nothing stored yet: no ride, and none waits.
    let view = read_ahead_of(&mut db, &[rid(1), rid(1), rid(9)]).await;
    assert_eq!(view.rides_waiting, Some(false));
    assert!(view.ride(&mut db.conn(), &rid(1)).await.unwrap().is_none());

    // Ride 1 takes the only driver; ride 2 waits, cleared.
    let request = requested(1, near(0.0, 0.0), at(60));
    for input in [
        request.clone(),
        cleared(1),
        requested(2, near(0.0, 0.0), at(60)),
        cleared(2),
    ] {
        apply(&mut db, &input, at(0)).await.unwrap();
    }
    let view = read_ahead_of(&mut db, &[rid(1), rid(2), rid(1), rid(9)]).await;
    assert_eq!(view.rides_waiting, Some(true));
    // The rides come from the read-ahead, not from the tables.
    execute(&mut db, "DELETE FROM driver_rides").await.unwrap();
    execute(&mut db, "DELETE FROM drivers").await.unwrap();
    let one = view.ride(&mut db.conn(), &rid(1)).await.unwrap().unwrap();
    assert_eq!(one.ride.stage, Stage::Assigned { driver_id: did(0) });
    assert_eq!(
        one.correlation.as_deref(),
        Some(request.correlation_id.as_str())
    );
    assert_eq!(one.driver.map(|d| d.current_ride), Some(Some(rid(1))));
    let two = view.ride(&mut db.conn(), &rid(2)).await.unwrap().unwrap();
    assert_eq!((two.ride.stage, two.ride.cleared), (Stage::Waiting, true));
    assert!(two.driver.is_none());
    assert!(view.ride(&mut db.conn(), &rid(9)).await.unwrap().is_none());
}

/// A driver registered at `location` under `id`, and online.
async fn driver_online_as(db: &mut TestDb, id: &str, location: GeoPoint) {
    let driver_id = DriverId::parse(id).unwrap();
    let register = RegisterDriver {
        driver_id: driver_id.clone(),
        name: id.to_owned(),
        location,
        email: None,
        phone: None,
    };
    apply(db, &msg(register, None, -10), at(0)).await.unwrap();
    let online = DriverOnline {
        driver_id,
        location: None,
    };
    apply(db, &msg(online, None, -9), at(0)).await.unwrap();
}

fn assigned_driver(out: &[Envelope]) -> String {
    match out.first().map(|e| &e.message) {
        Some(Message::DriverAssigned(assigned)) => assigned.driver_id.to_string(),
        _ => panic!("{out:?}"),
    }
}

/// Positions a hair's breadth from a pickup, valid if absurd: the search's estimate of their
/// distance underflows to zero, which PostgreSQL refuses in a product, and still finds them.
async fn a_driver_a_hairs_breadth_from_the_pickup_is_found(kind: Kind) {
    let mut db = db(kind).await;
    let at_point = |lat, lng| GeoPoint::new(lat, lng).unwrap();
    driver_online_as(&mut db, "d_0", at_point(1e-300, 0.0)).await;
    driver_online_as(&mut db, "d_1", at_point(0.0, 1e-300)).await;
    driver_online_as(&mut db, "d_2", at_point(0.001, 0.0)).await;
    // Both are at a great-circle distance of zero: the first id wins.
    apply(&mut db, &requested(1, at_point(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let out = apply(&mut db, &cleared(1), at(0)).await.unwrap();
    assert_eq!(assigned_driver(&out), "d_0");
    apply(
        &mut db,
        &requested(2, at_point(1e-300, 1e-300), at(60)),
        at(0),
    )
    .await
    .unwrap();
    let out = apply(&mut db, &cleared(2), at(0)).await.unwrap();
    assert_eq!(assigned_driver(&out), "d_1");
}

/// Drivers at one spot are read in the order of their ids' bytes (`d_E` before `d_a`), the
/// order in which the domain breaks ties, whatever the database's collation: a search that
/// read them in another order would leave the domain's choice out of the few rows it reads.
async fn drivers_at_one_spot_are_searched_in_the_order_of_their_ids(kind: Kind) {
    let mut db = db(kind).await;
    let ids = ["d_a", "d_b", "d_c", "d_d", "d_E"];
    assert!(ids.len() > NEARBY_DRIVERS as usize);
    for id in ids {
        driver_online_as(&mut db, id, near(0.001, 0.0)).await;
    }
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let out = apply(&mut db, &cleared(1), at(0)).await.unwrap();
    assert_eq!(assigned_driver(&out), "d_E");
    if kind == Kind::Postgres {
        let collations: Vec<(String, String)> = select(
            &mut db,
            "SELECT a.attrelid::regclass::text || '.' || a.attname, c.collname \
             FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
             WHERE a.attrelid IN ('drivers'::regclass, 'driver_rides'::regclass) \
             AND a.attname IN ('driver_id', 'ride_id', 'current_ride') ORDER BY 1",
        )
        .await;
        let c = |column: &str| (column.to_owned(), "C".to_owned());
        assert_eq!(
            collations,
            [
                c("driver_rides.driver_id"),
                c("driver_rides.ride_id"),
                c("drivers.current_ride"),
                c("drivers.driver_id"),
            ]
        );
    }
}

async fn a_timer_prunes_ended_rides_past_their_retention(kind: Kind) {
    let mut db = db(kind).await;
    let service = DriverService::new(DriverConfig {
        retention: std::time::Duration::from_secs(10),
        ..DriverConfig::default()
    });
    drivers_online(&mut db, &[(0.0, 0.0)]).await;
    // Ride 1 closed at 0 s (a tombstone); ride 2 released at 5 s; ride 3 waiting; ride 4
    // assigned.
    apply(&mut db, &cancelled(1, CancelReason::Rider), at(0))
        .await
        .unwrap();
    apply(&mut db, &requested(2, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db, &cleared(2), at(0)).await.unwrap();
    apply(&mut db, &completed(2), at(5)).await.unwrap();
    apply(&mut db, &requested(3, near(0.0, 0.0), at(600)), at(5))
        .await
        .unwrap();
    apply(&mut db, &requested(4, near(0.0, 0.0), at(600)), at(5))
        .await
        .unwrap();
    apply(&mut db, &cleared(4), at(5)).await.unwrap();
    let rides = "SELECT ride_id, stage FROM driver_rides ORDER BY ride_id";
    let stored = |pairs: &[(usize, &str)]| -> Vec<(String, String)> {
        let pair = |&(n, stage): &(usize, &str)| (rid(n).to_string(), stage.to_owned());
        pairs.iter().map(pair).collect()
    };
    let all = [
        (1, "closed"),
        (2, "released"),
        (3, "waiting"),
        (4, "assigned"),
    ];
    assert_eq!(
        select::<(String, String)>(&mut db, rides).await,
        stored(&all)
    );

    // Retention counts from each row's last change: at 14 s only the tombstone is older than
    // 10 s; at 16 s the released ride is too. Rides still going are kept.
    assert!(
        tick_in_tx(&service, db.conn(), at(14))
            .await
            .unwrap()
            .is_empty()
    );
    let left = select::<(String, String)>(&mut db, rides).await;
    assert_eq!(left, stored(&all[1..]));
    assert!(
        tick_in_tx(&service, db.conn(), at(16))
            .await
            .unwrap()
            .is_empty()
    );
    let left = select::<(String, String)>(&mut db, rides).await;
    assert_eq!(left, stored(&all[2..]));
}

async fn a_prune_deletes_the_oldest_ended_rides_first_up_to_its_limit(kind: Kind) {
    let mut db = db(kind).await;
    for n in [3, 1, 2] {
        let ended = cancelled(n, CancelReason::Rider);
        apply(&mut db, &ended, at(n as i64)).await.unwrap();
    }
    assert_eq!(prune(&mut db.conn(), at(100), 2).await.unwrap(), 2);
    let left: Vec<(String,)> = select(&mut db, "SELECT ride_id FROM driver_rides").await;
    assert_eq!(left, [("r_3".to_owned(),)]);
    assert_eq!(
        prune(&mut db.conn(), at(3), 500).await.unwrap(),
        0,
        "3 s is not before 3 s"
    );
    assert_eq!(prune(&mut db.conn(), at(4), 500).await.unwrap(), 1);
}

/// The same inputs as one batch and one by one, each on a fresh database: the same messages
/// (but for the time of their making) and the same tables.
async fn a_batch_applies_as_its_inputs_one_by_one(kind: Kind) {
    let moved = |n, location, t| {
        let m = MoveDriver {
            driver_id: did(n),
            location,
        };
        msg(m, None, t)
    };
    let offline = |n, t| msg(DriverOffline { driver_id: did(n) }, None, t);
    let inputs: Vec<(Envelope, Timestamp)> = [
        register(0, near(0.0, 0.0), 1),
        register(1, near(0.01, 0.0), 1),
        register(2, near(0.03, 0.01), 1),
        online(0, 2),
        online(1, 2),
        requested(1, near(0.0, 0.0), at(60)),
        cleared(1),
        requested(2, near(0.0, 0.0), at(60)),
        cancelled(3, CancelReason::Rider),
        cleared(2),
        requested(3, near(0.0, 0.0), at(60)),
        cleared(3),
        requested(4, near(0.02, 0.0), at(60)),
        cleared(4),
        online(2, 3),
        moved(0, near(0.005, 0.0), 4),
        completed(1),
        offline(1, 5),
        declined(2),
        rejected(5),
        requested(5, near(0.0, 0.0), at(60)),
        cancelled(4, CancelReason::Rider),
    ]
    .into_iter()
    .enumerate()
    .map(|(t, input)| (input, at(t as i64)))
    .collect();
    let service = service();
    let mut each = db(kind).await;
    let one_by_one = handle_each_in_tx(&service, each.conn(), &inputs).await;
    let mut whole = db(kind).await;
    let batch = handle_batch_in_tx(&service, whole.conn(), &inputs)
        .await
        .unwrap();
    let assigned = one_by_one
        .iter()
        .flatten()
        .filter(|e| e.kind() == MessageKind::DriverAssigned)
        .count();
    assert!(assigned >= 3, "the script assigns drivers ({assigned})");
    assert_eq!(timeless(batch), timeless(one_by_one));
    assert_eq!(load_all(&mut whole).await, load_all(&mut each).await);
    let correlations = "SELECT ride_id, correlation_id FROM driver_rides ORDER BY ride_id";
    assert_eq!(
        select::<(String, Option<String>)>(&mut whole, correlations).await,
        select::<(String, Option<String>)>(&mut each, correlations).await,
    );
}

/// A schedule command, `t` seconds into the test: one shift in UTC from `start` to `end`.
fn scheduled(n: usize, start: &str, end: &str, t: i64) -> Envelope {
    let schedule = ridesaga_schemas::DriverSchedule {
        zone: "UTC".into(),
        weekly: Vec::new(),
        shifts: vec![ridesaga_schemas::OneOffShift {
            start: start.into(),
            end: end.into(),
        }],
    };
    msg(
        ridesaga_schemas::SetDriverSchedule {
            driver_id: did(n),
            schedule: Some(schedule),
        },
        None,
        t,
    )
}

/// `at(0)` is 2023-11-14 22:13:20 UTC: five drivers nearer the pickup than any search reads
/// at once work tomorrow only, the sixth is on shift until 23:00.
async fn drivers_off_shift_never_hide_one_on_shift_behind_them(kind: Kind) {
    let mut db = db(kind).await;
    let spots: Vec<(f64, f64)> = (0..5)
        .map(|i| (0.0005 * f64::from(i + 1), 0.0))
        .chain([(0.01, 0.0)])
        .collect();
    drivers_online(&mut db, &spots).await;
    for n in 0..5 {
        let cmd = scheduled(n, "2023-11-15T08:00", "2023-11-15T16:00", -5);
        let out = apply(&mut db, &cmd, at(0)).await.unwrap();
        assert_eq!(
            kinds(&out),
            [(MessageKind::DriverScheduleChanged, did(n).to_string())]
        );
    }
    let on_shift = scheduled(5, "2023-11-14T22:00", "2023-11-14T23:00", -5);
    apply(&mut db, &on_shift, at(0)).await.unwrap();
    apply(&mut db, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let out = apply(&mut db, &cleared(1), at(0)).await.unwrap();
    assert_eq!(assigned_driver(&out), "d_5");

    // What the tables hold reads back as the domain wrote it.
    let state = load_all(&mut db).await;
    let d0 = &state.drivers[&did(0)];
    let Message::SetDriverSchedule(set) =
        &scheduled(0, "2023-11-15T08:00", "2023-11-15T16:00", -5).message
    else {
        unreachable!()
    };
    assert_eq!(
        (&d0.schedule, d0.schedule_at),
        (&set.schedule, at(-5).unix_millis())
    );
    let ride = &state.rides[&rid(1)];
    assert_eq!(ride.request.as_ref().map(|q| q.trip_km), Some(3.0));

    // A clear, and a late copy of an older schedule: last writer wins.
    let clear = msg(
        ridesaga_schemas::SetDriverSchedule {
            driver_id: did(0),
            schedule: None,
        },
        None,
        5,
    );
    apply(&mut db, &clear, at(5)).await.unwrap();
    let late = scheduled(0, "2023-11-16T08:00", "2023-11-16T16:00", 1);
    let out = apply(&mut db, &late, at(6)).await.unwrap();
    let Message::DriverScheduleChanged(now) = &out[0].message else {
        panic!("{out:?}")
    };
    assert_eq!(
        now.schedule, None,
        "the late command is answered with the schedule in force"
    );
    assert_eq!(load_all(&mut db).await.drivers[&did(0)].schedule, None);
}

crate::testing::each_backend!(
    drivers_off_shift_never_hide_one_on_shift_behind_them,
    a_redelivered_cleared_event_reserves_one_driver,
    a_driver_outside_each_small_search_circle_still_wins_when_nearest,
    only_an_input_that_may_match_its_ride_searches_for_drivers,
    an_ending_that_frees_no_driver_does_not_look_for_waiting_rides,
    events_about_a_ride_carry_the_first_correlation_id_it_heard,
    an_unmatched_ride_gets_unavailable_at_its_deadline_once,
    a_release_hands_the_driver_to_the_next_waiting_ride,
    a_cancel_before_the_clearance_leaves_a_tombstone,
    a_command_for_an_unregistered_driver_is_retried_later,
    the_schema_refuses_a_second_driver_for_one_ride,
    a_batch_sees_what_its_earlier_inputs_wrote,
    a_driver_reserved_earlier_in_the_batch_does_not_stop_the_wider_search,
    a_batch_that_reserved_more_drivers_than_a_search_reads_still_finds_the_next_nearest,
    an_ending_sees_its_driver_as_an_earlier_input_of_the_batch_moved_them,
    a_reservation_guard_fails_the_transaction_instead_of_double_booking,
    the_read_ahead_holds_the_named_rides_their_drivers_and_whether_any_waits,
    a_driver_a_hairs_breadth_from_the_pickup_is_found,
    drivers_at_one_spot_are_searched_in_the_order_of_their_ids,
    a_timer_prunes_ended_rides_past_their_retention,
    a_prune_deletes_the_oldest_ended_rides_first_up_to_its_limit,
    a_batch_applies_as_its_inputs_one_by_one,
);

/// An input for the store-versus-domain property.
fn scripted(choice: (u8, usize, f64, f64), t: i64) -> Envelope {
    let (kind, n, dlat, dlng) = choice;
    let (ride, driver) = (n % 4, n % 3);
    match kind {
        0 => register(driver, near(dlat, dlng), t),
        1 => online(driver, t),
        2 => msg(
            DriverOffline {
                driver_id: did(driver),
            },
            None,
            t,
        ),
        3 => msg(
            MoveDriver {
                driver_id: did(driver),
                location: near(dlat, dlng),
            },
            None,
            t,
        ),
        4 | 5 => requested(ride, near(dlat, dlng), at(60)),
        6 | 7 => cleared(ride),
        8 => completed(ride),
        9 => cancelled(ride, CancelReason::Rider),
        10 => declined(ride),
        _ => rejected(ride),
    }
}

/// Runs `script` through `Worker::handle` on a real SQLite file (input `t` at `clock(t)`) and
/// through [`domain::handle`] over a full in-memory state: same outputs, and the same state at
/// the end (after a timer past every deadline).
fn check_tables_against_domain(
    kind: Kind,
    script: &[(u8, usize, f64, f64)],
    clock: impl Fn(i64) -> Timestamp,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db(kind).await;
        let mut memory = State::default();
        let rules = DriverConfig::default().rules;
        for (t, &choice) in script.iter().enumerate() {
            let (input, now) = (scripted(choice, t as i64), clock(t as i64));
            let from_db = apply(&mut db, &input, now).await.map(|out| kinds(&out));
            let event = input_of(&input).unwrap();
            match domain::handle(&mut memory, &event, now, &rules) {
                Ok(effects) => {
                    let expected: Vec<_> = effects.iter().map(effect_key).collect();
                    assert_eq!(from_db.unwrap(), expected, "{kind:?}: input {t}");
                }
                Err(_) => assert!(
                    matches!(from_db, Err(HandleError::Transient(_))),
                    "{kind:?}: input {t}"
                ),
            }
        }
        let expected: Vec<_> = domain::tick(&mut memory, at(120), &rules)
            .iter()
            .map(effect_key)
            .collect();
        assert_eq!(kinds(&tick(&mut db, at(120)).await), expected, "{kind:?}");
        assert_eq!(load_all(&mut db).await, memory, "{kind:?}");
    });
}

/// Runs `script` through `Worker::handle_batch` in batches of the given sizes (taken in turn),
/// as the runtime does (an input that fails is answered alone and its batch redone without
/// it), and through [`domain::handle`] one input at a time over a full in-memory state: same
/// outputs for every input, and the same state at the end.
fn check_batches_against_domain(
    kind: Kind,
    script: &[(u8, usize, f64, f64)],
    sizes: &[usize],
    clock: impl Fn(i64) -> Timestamp,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db(kind).await;
        let service = DriverService::new(DriverConfig::default());
        let rules = DriverConfig::default().rules;
        let inputs: Vec<(Envelope, Timestamp)> = script
            .iter()
            .enumerate()
            .map(|(t, &choice)| (scripted(choice, t as i64), clock(t as i64)))
            .collect();
        let mut memory = State::default();
        // What the domain decides for each input; `None` where it refuses the input.
        let expected: Vec<Option<Vec<(MessageKind, String)>>> = inputs
            .iter()
            .map(|(input, now)| {
                let event = input_of(input).unwrap();
                domain::handle(&mut memory, &event, *now, &rules)
                    .ok()
                    .map(|effects| effects.iter().map(effect_key).collect())
            })
            .collect();
        let mut start = 0;
        for size in sizes.iter().cycle() {
            if start >= inputs.len() {
                break;
            }
            let end = (start + size).min(inputs.len());
            let mut pending: Vec<usize> = (start..end).collect();
            while !pending.is_empty() {
                let batch: Vec<(Envelope, Timestamp)> =
                    pending.iter().map(|&i| inputs[i].clone()).collect();
                match handle_batch_in_tx(&service, db.conn(), &batch).await {
                    Ok(outputs) => {
                        for (&i, out) in pending.iter().zip(&outputs) {
                            assert_eq!(Some(kinds(out)), expected[i], "{kind:?}: input {i}");
                        }
                        break;
                    }
                    Err(BatchError::Input { index, .. }) => {
                        let i = pending.remove(index);
                        assert_eq!(expected[i], None, "{kind:?}: input {i} failed");
                    }
                    Err(e) => panic!("{kind:?}: {e}"),
                }
            }
            start = end;
        }
        let expected: Vec<_> = domain::tick(&mut memory, at(120), &rules)
            .iter()
            .map(effect_key)
            .collect();
        assert_eq!(kinds(&tick(&mut db, at(120)).await), expected, "{kind:?}");
        assert_eq!(load_all(&mut db).await, memory, "{kind:?}");
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A batch reads its rides ahead and applies its inputs one by one, each reading again what
    /// an earlier one wrote: it must decide what the domain decides input by input, whatever
    /// the batches' sizes.
    #[test]
    fn batches_decide_what_the_domain_decides_input_by_input(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        for kind in KINDS {
            check_batches_against_domain(kind, &script, &sizes, |_| at(1));
        }
    }

    /// The same where every pickup and driver is within a few hundred metres, so that the
    /// first, smallest step of every search finds drivers, and the drivers an earlier input
    /// of the batch reserved or freed are among them.
    #[test]
    fn batches_decide_what_the_domain_decides_in_a_small_area(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.003f64..0.003, -0.003f64..0.003), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        for kind in KINDS {
            check_batches_against_domain(kind, &script, &sizes, |_| at(1));
        }
    }

    /// The same while the clock runs past the rides' deadlines.
    #[test]
    fn batches_decide_what_the_domain_decides_as_deadlines_pass(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        for kind in KINDS {
            check_batches_against_domain(kind, &script, &sizes, |t| at(t * 3));
        }
    }

    /// The store loads only a slice of the state for each input; the domain run over all of
    /// it in memory must decide the same. Random inputs: drivers registering, going online
    /// and offline, moving; rides requested, cleared and ended.
    #[test]
    fn the_tables_hold_what_the_domain_decides(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..40),
    ) {
        for kind in KINDS {
            check_tables_against_domain(kind, &script, |_| at(1));
        }
    }

    /// The same while the clock runs past the rides' deadlines (at 60 s): requests and
    /// clearances that arrive late must expire their ride without a driver search.
    #[test]
    fn the_tables_hold_what_the_domain_decides_as_deadlines_pass(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..40),
    ) {
        for kind in KINDS {
            check_tables_against_domain(kind, &script, |t| at(t * 3));
        }
    }
}

fn effect_key(effect: &domain::Effect) -> (MessageKind, String) {
    match effect {
        domain::Effect::DriverUpdated { driver_id, .. } => {
            (MessageKind::DriverUpdated, driver_id.to_string())
        }
        domain::Effect::ScheduleChanged { driver_id, .. } => {
            (MessageKind::DriverScheduleChanged, driver_id.to_string())
        }
        domain::Effect::Assigned { ride_id, .. } => {
            (MessageKind::DriverAssigned, ride_id.to_string())
        }
        domain::Effect::Released { ride_id, .. } => {
            (MessageKind::DriverReleased, ride_id.to_string())
        }
        domain::Effect::Unavailable { ride_id, .. } => {
            (MessageKind::DriverUnavailable, ride_id.to_string())
        }
    }
}
