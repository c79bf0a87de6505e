//! Tests of the driver service's tables: loading state and writing back changes.

use proptest::prelude::*;
use ridesaga_schemas::{
    CancelReason, DriverOffline, DriverOnline, Envelope, FraudCleared, Message, MessageId,
    MessageKind, MoveDriver, PaymentDeclined, RegisterDriver, RideCancelled, RideCompleted,
    RideRejected, RideRequested,
};
use sqlx::{Connection, SqliteConnection};

use super::super::{DriverConfig, DriverService, domain, input_of};
use super::*;
use crate::runtime::{BatchError, HandleError, Worker};
use crate::testing::{
    apply_batch_in_tx, apply_in_tx, connect, database, database_file, tick_in_tx,
};

/// A fresh database file with the driver tables, deleted on drop.
struct Db {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    conn: SqliteConnection,
}

async fn db() -> Db {
    let (dir, conn) = database(service().migrator(crate::runtime::Kind::Sqlite)).await;
    let path = database_file(&dir);
    Db {
        _dir: dir,
        path,
        conn,
    }
}

fn service() -> DriverService {
    DriverService::new(DriverConfig::default())
}

/// One input as the runtime applies it: in its own transaction, committed on success.
async fn apply(
    conn: &mut SqliteConnection,
    input: &Envelope,
    now: Timestamp,
) -> Result<Vec<Envelope>, HandleError> {
    apply_in_tx(&service(), conn, input, now).await
}

async fn tick(conn: &mut SqliteConnection, now: Timestamp) -> Vec<Envelope> {
    tick_in_tx(&service(), conn, now).await.unwrap()
}

fn kinds(out: &[Envelope]) -> Vec<(MessageKind, String)> {
    out.iter()
        .map(|e| (e.kind(), e.subject_id().to_owned()))
        .collect()
}

async fn reserved_drivers(conn: &mut SqliteConnection) -> Vec<(String, String)> {
    sqlx::query_as("SELECT driver_id, current_ride FROM drivers WHERE current_ride IS NOT NULL")
        .fetch_all(conn)
        .await
        .unwrap()
}

/// Every driver and ride in the tables, as the domain sees them.
async fn load_all(conn: &mut SqliteConnection) -> State {
    let mut state = State::default();
    let q = concat!("SELECT ", driver_columns!(""), " FROM drivers");
    for row in sqlx::query(q).fetch_all(&mut *conn).await.unwrap() {
        let d = driver_at(&row, 0).unwrap();
        state.drivers.insert(d.id.clone(), d);
    }
    let q = concat!("SELECT ", ride_columns!(""), " FROM driver_rides");
    for row in sqlx::query(q).fetch_all(&mut *conn).await.unwrap() {
        let (r, _) = ride_at(&row, 0).unwrap();
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

async fn drivers_online(conn: &mut SqliteConnection, positions: &[(f64, f64)]) {
    for (n, (dlat, dlng)) in positions.iter().enumerate() {
        apply(conn, &register(n, near(*dlat, *dlng), -10), at(0))
            .await
            .unwrap();
        apply(conn, &online(n, -9), at(0)).await.unwrap();
    }
}

#[tokio::test]
async fn a_redelivered_cleared_event_reserves_one_driver() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.02, 0.0), (0.01, 0.0)]).await;
    let request = requested(1, near(0.0, 0.0), at(60));
    assert!(
        apply(&mut db.conn, &request, at(0))
            .await
            .unwrap()
            .is_empty()
    );
    let clearance = cleared(1);
    let out = apply(&mut db.conn, &clearance, at(0)).await.unwrap();
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
    assert!(
        apply(&mut db.conn, &clearance, at(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        apply(&mut db.conn, &cleared(1), at(1))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        reserved_drivers(&mut db.conn).await,
        [("d_1".to_owned(), "r_1".to_owned())]
    );
}

#[tokio::test]
async fn a_driver_outside_each_small_search_circle_still_wins_when_nearest() {
    for (step, km) in NEAR_FIRST_KM.into_iter().enumerate() {
        let mut db = db().await;
        let pickup = near(0.0, 0.0);
        // d_0 is due north, just outside this step's circle; d_1 sits in a corner of its box:
        // found first, but farther away.
        let degrees = km / 111.2;
        let corner_lng = 0.8 * degrees / pickup.lat.to_radians().cos();
        let north_point = (1.1 * degrees, 0.0);
        let corner_point = (0.8 * degrees, corner_lng);
        drivers_online(&mut db.conn, &[north_point, corner_point]).await;
        let north = pickup.distance_km(&near(north_point.0, north_point.1));
        let corner = pickup.distance_km(&near(corner_point.0, corner_point.1));
        assert!(
            km < north && north < corner,
            "step {step}: {north} {corner}"
        );
        apply(&mut db.conn, &requested(1, pickup, at(60)), at(0))
            .await
            .unwrap();
        let out = apply(&mut db.conn, &cleared(1), at(0)).await.unwrap();
        let Message::DriverAssigned(assigned) = &out[0].message else {
            panic!("{out:?}")
        };
        assert_eq!(assigned.driver_id.as_str(), "d_0", "step {step}");
    }
}

/// What `load_for_input` reads for `input` at `now`.
async fn loaded_for(conn: &mut SqliteConnection, input: &Envelope, now: Timestamp) -> Loaded {
    let rules = DriverConfig::default().rules;
    load_for_input(
        conn,
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

#[tokio::test]
async fn only_an_input_that_may_match_its_ride_searches_for_drivers() {
    let mut db = db().await;
    // Forty available drivers within 1.5 km of the pickups, nearer ones first.
    let positions: Vec<(f64, f64)> = (0..40).map(|i| (0.0003 * i as f64, 0.0)).collect();
    drivers_online(&mut db.conn, &positions).await;
    let pickup = near(0.0, 0.0);

    // Requested, not cleared: only the ride could change, so no search.
    let request = requested(1, pickup, at(60));
    assert!(driver_names(&loaded_for(&mut db.conn, &request, at(1)).await.state).is_empty());
    apply(&mut db.conn, &request, at(1)).await.unwrap();
    // Cleared: a bounded set of candidates, which holds the nearest (the first, smallest
    // circle already has some: of the 15 drivers in its box, only the nearest few are read).
    let loaded = loaded_for(&mut db.conn, &cleared(1), at(1)).await;
    assert_eq!(loaded.state.drivers.len(), NEARBY_DRIVERS as usize);
    assert!(loaded.state.drivers.contains_key(&did(0)));
    apply(&mut db.conn, &cleared(1), at(1)).await.unwrap();
    assert_eq!(
        reserved_drivers(&mut db.conn).await,
        [("d_0".to_owned(), "r_1".to_owned())]
    );
    // A redelivered request or clearance of the assigned ride: nothing to match.
    for again in [requested(1, pickup, at(60)), cleared(1)] {
        let loaded = loaded_for(&mut db.conn, &again, at(2)).await;
        assert!(driver_names(&loaded.state).is_empty());
    }
    // Completed: the ride and its driver, who may take a waiting ride; no driver search.
    let loaded = loaded_for(&mut db.conn, &completed(1), at(5)).await;
    assert_eq!(driver_names(&loaded.state), ["d_0"]);
    assert_eq!(loaded.state.rides.len(), 1);

    // Cleared first: nothing to match until the request arrives, which then searches, unless
    // the deadline has passed (the ride becomes unavailable without any driver).
    apply(&mut db.conn, &cleared(2), at(1)).await.unwrap();
    assert!(driver_names(&loaded_for(&mut db.conn, &cleared(2), at(1)).await.state).is_empty());
    let request = requested(2, pickup, at(60));
    let loaded = loaded_for(&mut db.conn, &request, at(1)).await;
    // The nearest few of the first box but d_0, now reserved.
    assert_eq!(loaded.state.drivers.len(), NEARBY_DRIVERS as usize);
    assert!(!loaded.state.drivers.contains_key(&did(0)));
    let late = loaded_for(&mut db.conn, &request, at(60)).await;
    assert!(driver_names(&late.state).is_empty());

    // Ending a ride that never got a driver reads the ride only.
    let loaded = loaded_for(&mut db.conn, &cancelled(2, CancelReason::Rider), at(1)).await;
    assert!(driver_names(&loaded.state).is_empty());
}

#[tokio::test]
async fn an_ending_that_frees_no_driver_does_not_look_for_waiting_rides() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db.conn, &cleared(1), at(0)).await.unwrap();
    // Ride 2 waits for a driver while d_0 drives ride 1.
    apply(&mut db.conn, &requested(2, near(0.01, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db.conn, &cleared(2), at(0)).await.unwrap();
    let loaded = loaded_for(&mut db.conn, &completed(1), at(1)).await;
    assert!(
        loaded.state.rides.contains_key(&rid(2)),
        "d_0 may take ride 2"
    );

    // Offline: released, but not available, so ride 2 is not loaded and keeps waiting.
    let offline = msg(DriverOffline { driver_id: did(0) }, None, 1);
    apply(&mut db.conn, &offline, at(1)).await.unwrap();
    let loaded = loaded_for(&mut db.conn, &completed(1), at(2)).await;
    assert!(!loaded.state.rides.contains_key(&rid(2)));
    let out = apply(&mut db.conn, &completed(1), at(2)).await.unwrap();
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverReleased, "r_1".to_owned())]
    );
    assert!(reserved_drivers(&mut db.conn).await.is_empty());
}

#[tokio::test]
async fn events_about_a_ride_carry_the_first_correlation_id_it_heard() {
    let mut db = db().await;
    // A tombstone first (an ending carries no correlation of its own), then the clearance
    // and the request, each with its own correlation id: the clearance's is kept.
    apply(&mut db.conn, &cancelled(1, CancelReason::Rider), at(0))
        .await
        .unwrap();
    let clearance = cleared(1);
    apply(&mut db.conn, &clearance, at(0)).await.unwrap();
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let stored: Option<String> =
        sqlx::query_scalar("SELECT correlation_id FROM driver_rides WHERE ride_id = 'r_1'")
            .fetch_one(&mut db.conn)
            .await
            .unwrap();
    assert_eq!(stored, Some(clearance.correlation_id.clone()));

    // Ride 2 hears its clearance first too, finds no driver and expires in a timer run.
    let clearance = cleared(2);
    apply(&mut db.conn, &clearance, at(0)).await.unwrap();
    apply(&mut db.conn, &requested(2, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    let out = tick(&mut db.conn, at(60)).await;
    assert_eq!(
        kinds(&out),
        [(MessageKind::DriverUnavailable, "r_2".to_owned())]
    );
    assert_eq!(out[0].correlation_id, clearance.correlation_id);
}

#[tokio::test]
async fn an_unmatched_ride_gets_unavailable_at_its_deadline_once() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.5, 0.0)]).await;
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    assert!(
        apply(&mut db.conn, &cleared(1), at(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(tick(&mut db.conn, at(59)).await.is_empty());

    // A second replica on the same file races the first.
    let mut replica = connect(&db.path).await;
    let out = tick(&mut db.conn, at(60)).await;
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
    assert!(tick(&mut db.conn, at(62)).await.is_empty());
    let late = apply(&mut db.conn, &cancelled(1, CancelReason::NoDriver), at(63))
        .await
        .unwrap();
    assert!(late.is_empty(), "nothing to release");
}

#[tokio::test]
async fn a_release_hands_the_driver_to_the_next_waiting_ride() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
    let mut requests = Vec::new();
    for n in 1..=2 {
        requests.push(requested(n, near(0.0, 0.0), at(60)));
        apply(&mut db.conn, &requests[n - 1], at(0)).await.unwrap();
        apply(&mut db.conn, &cleared(n), at(0)).await.unwrap();
    }
    let out = apply(&mut db.conn, &completed(1), at(5)).await.unwrap();
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
        reserved_drivers(&mut db.conn).await,
        [("d_0".to_owned(), "r_2".to_owned())]
    );
    assert!(
        apply(&mut db.conn, &cancelled(1, CancelReason::Rider), at(6))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_cancel_before_the_clearance_leaves_a_tombstone() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
    apply(&mut db.conn, &cancelled(1, CancelReason::Rider), at(0))
        .await
        .unwrap();
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    assert!(
        apply(&mut db.conn, &cleared(1), at(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(tick(&mut db.conn, at(90)).await.is_empty());
    assert!(reserved_drivers(&mut db.conn).await.is_empty());
}

#[tokio::test]
async fn a_command_for_an_unregistered_driver_is_retried_later() {
    let mut db = db().await;
    let err = apply(&mut db.conn, &online(3, 0), at(0)).await.unwrap_err();
    assert!(
        matches!(err, HandleError::Transient(ref m) if m.contains("d_3")),
        "{err}"
    );
    let wrong = msg(ridesaga_schemas::CancelRide {}, Some(1), 0);
    assert!(matches!(
        apply(&mut db.conn, &wrong, at(0)).await,
        Err(HandleError::Permanent(_))
    ));
}

#[tokio::test]
async fn the_schema_refuses_a_second_driver_for_one_ride() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0), (0.5, 0.0)]).await;
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    apply(&mut db.conn, &cleared(1), at(0)).await.unwrap();
    let double = sqlx::query("UPDATE drivers SET current_ride = 'r_1' WHERE driver_id = 'd_1'")
        .execute(&mut db.conn)
        .await;
    assert!(double.is_err(), "the unique index must refuse it");
}

#[tokio::test]
async fn a_batch_sees_what_its_earlier_inputs_wrote() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
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
    let out = apply_batch_in_tx(&service, &mut db.conn, &batch)
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
        sqlx::query_as("SELECT driver_id, current_ride FROM drivers")
            .fetch_all(&mut db.conn)
            .await
            .unwrap();
    assert_eq!(reserved, [("d_0".to_owned(), Some("r_2".to_owned()))]);
}

#[tokio::test]
async fn a_driver_reserved_earlier_in_the_batch_does_not_stop_the_wider_search() {
    let mut db = db().await;
    // d_0 at the pickup, d_1 about 4.5 km away: outside the small first circle.
    drivers_online(&mut db.conn, &[(0.0, 0.0), (0.04, 0.0)]).await;
    let service = DriverService::new(DriverConfig::default());
    let batch = [
        (requested(1, near(0.0, 0.0), at(60)), at(0)),
        (cleared(1), at(0)),
        (requested(2, near(0.0, 0.0), at(60)), at(0)),
        (cleared(2), at(0)),
    ];
    apply_batch_in_tx(&service, &mut db.conn, &batch)
        .await
        .unwrap();
    let reserved: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT driver_id, current_ride FROM drivers ORDER BY driver_id")
            .fetch_all(&mut db.conn)
            .await
            .unwrap();
    assert_eq!(
        reserved,
        [
            ("d_0".to_owned(), Some("r_1".to_owned())),
            ("d_1".to_owned(), Some("r_2".to_owned())),
        ]
    );
}

#[tokio::test]
async fn a_batch_that_reserved_more_drivers_than_a_search_reads_still_finds_the_next_nearest() {
    let mut db = db().await;
    // More drivers than one search reads, each a little farther from the pickup than the one
    // before, all inside the first circle.
    let count = NEARBY_DRIVERS as usize + 4;
    let positions: Vec<(f64, f64)> = (0..count).map(|n| (0.0002 * n as f64, 0.0)).collect();
    drivers_online(&mut db.conn, &positions).await;
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
    apply_batch_in_tx(&service, &mut db.conn, &batch)
        .await
        .unwrap();
    let mut reserved = reserved_drivers(&mut db.conn).await;
    reserved.sort_by_key(|(_, ride)| ride[2..].parse::<usize>().unwrap());
    let expected: Vec<(String, String)> = (0..rides)
        .map(|n| (did(n).to_string(), rid(n).to_string()))
        .collect();
    assert_eq!(reserved, expected);
}

#[tokio::test]
async fn an_ending_sees_its_driver_as_an_earlier_input_of_the_batch_moved_them() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
    let service = DriverService::new(DriverConfig::default());
    let first = [
        (requested(1, near(0.0, 0.0), at(60)), at(0)),
        (cleared(1), at(0)),
    ];
    apply_batch_in_tx(&service, &mut db.conn, &first)
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
    apply_batch_in_tx(&service, &mut db.conn, &second)
        .await
        .unwrap();
    let stored: Vec<(f64, Option<String>)> =
        sqlx::query_as("SELECT lat, current_ride FROM drivers")
            .fetch_all(&mut db.conn)
            .await
            .unwrap();
    assert_eq!(stored, [(near(0.02, 0.0).lat, None)]);
}

#[tokio::test]
async fn a_reservation_guard_fails_the_transaction_instead_of_double_booking() {
    let mut db = db().await;
    drivers_online(&mut db.conn, &[(0.0, 0.0)]).await;
    apply(&mut db.conn, &requested(1, near(0.0, 0.0), at(60)), at(0))
        .await
        .unwrap();
    // Loaded while the driver is free...
    let event = input_of(&cleared(1)).unwrap();
    let rules = DriverConfig::default().rules;
    let mut tx = db.conn.begin().await.unwrap();
    let mut loaded = load_for_input(&mut tx, &event, at(0), &rules, &BatchView::default())
        .await
        .unwrap();
    let before = loaded.state.clone();
    domain::handle(&mut loaded.state, &event, at(0), &rules).unwrap();
    // ...but someone reserved them meanwhile.
    sqlx::query("UPDATE drivers SET current_ride = 'r_9' WHERE driver_id = 'd_0'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = save(&mut tx, &before, &loaded, at(0)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("reserve d_0"), "{err}");
}

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

/// Runs `script` through `Worker::apply` on a real SQLite file (input `t` at `clock(t)`) and
/// through [`domain::handle`] over a full in-memory state: same outputs, and the same state at
/// the end (after a timer past every deadline).
fn check_tables_against_domain(
    script: Vec<(u8, usize, f64, f64)>,
    clock: impl Fn(i64) -> Timestamp,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db().await;
        let mut memory = State::default();
        let rules = DriverConfig::default().rules;
        for (t, choice) in script.into_iter().enumerate() {
            let (input, now) = (scripted(choice, t as i64), clock(t as i64));
            let from_db = apply(&mut db.conn, &input, now)
                .await
                .map(|out| kinds(&out));
            let event = input_of(&input).unwrap();
            match domain::handle(&mut memory, &event, now, &rules) {
                Ok(effects) => {
                    let expected: Vec<_> = effects.iter().map(effect_key).collect();
                    assert_eq!(from_db.unwrap(), expected);
                }
                Err(_) => assert!(matches!(from_db, Err(HandleError::Transient(_)))),
            }
        }
        let expected: Vec<_> = domain::tick(&mut memory, at(120), &rules)
            .iter()
            .map(effect_key)
            .collect();
        assert_eq!(kinds(&tick(&mut db.conn, at(120)).await), expected);
        assert_eq!(load_all(&mut db.conn).await, memory);
    });
}

/// Runs `script` through `Worker::apply_batch` in batches of the given sizes (taken in turn),
/// as the runtime does (an input that fails is answered alone and its batch redone without
/// it), and through [`domain::handle`] one input at a time over a full in-memory state: same
/// outputs for every input, and the same state at the end.
fn check_batches_against_domain(
    script: Vec<(u8, usize, f64, f64)>,
    sizes: Vec<usize>,
    clock: impl Fn(i64) -> Timestamp,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db = db().await;
        let service = DriverService::new(DriverConfig::default());
        let rules = DriverConfig::default().rules;
        let inputs: Vec<(Envelope, Timestamp)> = script
            .into_iter()
            .enumerate()
            .map(|(t, choice)| (scripted(choice, t as i64), clock(t as i64)))
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
                match apply_batch_in_tx(&service, &mut db.conn, &batch).await {
                    Ok(outputs) => {
                        for (&i, out) in pending.iter().zip(&outputs) {
                            assert_eq!(Some(kinds(out)), expected[i], "input {i}");
                        }
                        break;
                    }
                    Err(BatchError::Input { index, .. }) => {
                        let i = pending.remove(index);
                        assert_eq!(expected[i], None, "input {i} failed");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            start = end;
        }
        let expected: Vec<_> = domain::tick(&mut memory, at(120), &rules)
            .iter()
            .map(effect_key)
            .collect();
        assert_eq!(kinds(&tick(&mut db.conn, at(120)).await), expected);
        assert_eq!(load_all(&mut db.conn).await, memory);
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
        check_batches_against_domain(script, sizes, |_| at(1));
    }

    /// The same where every pickup and driver is within a few hundred metres, so that the
    /// first, smallest step of every search finds drivers, and the drivers an earlier input
    /// of the batch reserved or freed are among them.
    #[test]
    fn batches_decide_what_the_domain_decides_in_a_small_area(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.003f64..0.003, -0.003f64..0.003), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        check_batches_against_domain(script, sizes, |_| at(1));
    }

    /// The same while the clock runs past the rides' deadlines.
    #[test]
    fn batches_decide_what_the_domain_decides_as_deadlines_pass(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..60),
        sizes in prop::collection::vec(1usize..12, 1..6),
    ) {
        check_batches_against_domain(script, sizes, |t| at(t * 3));
    }

    /// The store loads only a slice of the state for each input; the domain run over all of
    /// it in memory must decide the same. Random inputs: drivers registering, going online
    /// and offline, moving; rides requested, cleared and ended.
    #[test]
    fn the_tables_hold_what_the_domain_decides(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..40),
    ) {
        check_tables_against_domain(script, |_| at(1));
    }

    /// The same while the clock runs past the rides' deadlines (at 60 s): requests and
    /// clearances that arrive late must expire their ride without a driver search.
    #[test]
    fn the_tables_hold_what_the_domain_decides_as_deadlines_pass(
        script in prop::collection::vec((0u8..12, 0usize..12, -0.08f64..0.08, -0.08f64..0.08), 1..40),
    ) {
        check_tables_against_domain(script, |t| at(t * 3));
    }
}

fn effect_key(effect: &domain::Effect) -> (MessageKind, String) {
    match effect {
        domain::Effect::DriverUpdated { driver_id, .. } => {
            (MessageKind::DriverUpdated, driver_id.to_string())
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
