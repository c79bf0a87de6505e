//! Live tracking and fares through the real workers: positions published to the positions
//! stream while a ride is in progress become its route, the completion takes the route's
//! distance (and says so), the fare follows it, and positions outside the ride are not part of
//! it; the fare's breakdown (with a configured surge) travels with the completion, is stored
//! with the ride and is what payment captures. On SQLite and PostgreSQL.

use std::time::Duration;

use ridesaga_schemas::*;

use crate::support::{System, find};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);

async fn position(sys: &System, driver: &DriverId, (lat, lng): (f64, f64)) {
    let body = Position {
        lat,
        lng,
        at_ms: Timestamp::now().unix_millis(),
    };
    sys.js
        .publish(Position::subject(driver), body.encode().into())
        .await
        .expect("publishes")
        .await
        .expect("the positions stream stores it");
}

fn point((lat, lng): (f64, f64)) -> GeoPoint {
    GeoPoint::new(lat, lng).unwrap()
}

/// Waits until the ride service recorded `n` positions on the ride's route.
async fn route_points(sys: &System, ride: &RideId, n: i64) {
    let sql = format!("SELECT COUNT(*) FROM ride_route WHERE ride_id = '{ride}'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = sys.scalar(Service::Ride, &sql).await;
        if got == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: {got} route positions, expected {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_tracked_ride_is_charged_for_its_recorded_route(sys: System) {
    let driver = sys.driver("d_trk", "Tia", NEARBY).await;
    let ride = sys.request("u_trk", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    // On the way to the pickup: not part of the ride's route.
    position(&sys, &driver, NEARBY).await;
    sys.command(StartRide {}, Some(&ride)).await;
    sys.wait_for(&ride, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    let route = [PICKUP, (52.5150, 13.4200), (52.5080, 13.4350), DROPOFF];
    for at in route {
        position(&sys, &driver, at).await;
    }
    route_points(&sys, &ride, route.len() as i64).await;
    sys.command(
        CompleteRide {
            distance_km: Some(50.0),
            duration_min: Some(10.0),
        },
        Some(&ride),
    )
    .await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    let expected: f64 = route
        .windows(2)
        .map(|w| point(w[0]).distance_km(&point(w[1])))
        .sum();
    assert_eq!(done.distance_source, DistanceSource::Route);
    assert_eq!(done.route_points, 4);
    assert!(
        (done.distance_km - expected).abs() < 1e-6,
        "{} != {expected}",
        done.distance_km
    );
    let fare = (250.0 + 120.0 * expected + 30.0 * 10.0).round() as u64;
    assert_eq!(done.fare_cents, fare);
    let parts = done
        .fare
        .expect("a completed ride carries its fare breakdown");
    assert_eq!((parts.base_cents, parts.time_cents), (250, 300));
    assert_eq!((parts.surge_cents, parts.total_cents), (0, fare));
    assert!(parts.is_balanced(), "{parts:?}");
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    assert_eq!(captured.amount_cents, fare);

    // After the completion, positions add nothing to the ride.
    position(&sys, &driver, NEARBY).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    route_points(&sys, &ride, 4).await;
    sys.shutdown().await;
}

async fn an_untracked_ride_falls_back_to_the_reported_distance(sys: System) {
    sys.driver("d_untrk", "Uma", NEARBY).await;
    let ride = sys.request("u_untrk", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.start_and_complete(&ride, 5.0, 12.0).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    assert_eq!(done.distance_source, DistanceSource::Reported);
    assert_eq!(done.route_points, 0);
    assert_eq!(done.fare_cents, 250 + 5 * 120 + 12 * 30);
    sys.shutdown().await;
}

async fn a_surge_is_a_part_of_the_fare_and_of_the_capture(sys: System) {
    sys.driver("d_surge", "Sia", NEARBY).await;
    let ride = sys.request("u_surge", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.start_and_complete(&ride, 10.0, 20.0).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    let expected = FareBreakdown {
        base_cents: 250,
        distance_cents: 1200,
        time_cents: 600,
        surge_cents: 1025,
        total_cents: 3075,
    };
    assert_eq!(done.fare, Some(expected));
    assert_eq!(done.fare_cents, 3075);
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    assert_eq!(captured.amount_cents, 3075);
    let sql = format!(
        "SELECT fare_base_cents + fare_distance_cents + fare_time_cents + fare_surge_cents \
         FROM rides WHERE ride_id = '{ride}'"
    );
    assert_eq!(
        sys.scalar(Service::Ride, &sql).await,
        3075,
        "stored with the ride"
    );
    sys.shutdown().await;
}

const SURGE: [(&str, &str); 1] = [("RIDESAGA_FARE_SURGE_PERCENT", "150")];

#[tokio::test]
async fn surge_on_sqlite() {
    a_surge_is_a_part_of_the_fare_and_of_the_capture(System::start_with(&SURGE).await).await;
}

#[tokio::test]
async fn surge_on_postgres() {
    a_surge_is_a_part_of_the_fare_and_of_the_capture(System::start_on_postgres(&SURGE).await).await;
}

#[tokio::test]
async fn tracked_ride_on_sqlite() {
    a_tracked_ride_is_charged_for_its_recorded_route(System::start().await).await;
}

#[tokio::test]
async fn tracked_ride_on_postgres() {
    a_tracked_ride_is_charged_for_its_recorded_route(System::start_on_postgres(&[]).await).await;
}

#[tokio::test]
async fn untracked_ride_on_sqlite() {
    an_untracked_ride_falls_back_to_the_reported_distance(System::start().await).await;
}

#[tokio::test]
async fn untracked_ride_on_postgres() {
    an_untracked_ride_falls_back_to_the_reported_distance(System::start_on_postgres(&[]).await)
        .await;
}
