//! Fake rides through the real workers: positions published on the positions stream become
//! the ride's route, the completion carries the route's summary, fraud flags a teleporting
//! driver, payment holds the driver's share in the ledger, an operator's approval releases it;
//! a ride with an ordinary route is not flagged. Completion, flag and review delivered again
//! act once. On SQLite and PostgreSQL.

use std::time::Duration;

use ridesaga_schemas::*;

use crate::support::{System, count, find};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);
/// Hamburg, 250 km from Berlin.
const FAR: (f64, f64) = (53.5500, 9.9900);

/// Publishes a position of `driver` reported at `at_ms`.
async fn position(sys: &System, driver: &DriverId, (lat, lng): (f64, f64), at_ms: i64) {
    let body = Position { lat, lng, at_ms };
    sys.js
        .publish(Position::subject(driver), body.encode().into())
        .await
        .expect("publishes")
        .await
        .expect("the positions stream stores it");
}

/// Waits until the ride service recorded `n` positions on the ride's route.
async fn route_points(sys: &System, ride: &RideId, n: i64) {
    let sql = format!("SELECT COUNT(*) FROM ride_route WHERE ride_id = '{ride}'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sys.scalar(Service::Ride, &sql).await != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: not {n} positions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A confirmed, started ride of a new driver `driver` near the pickup, driven along `route`
/// (positions reported a minute apart), then completed.
async fn driven(sys: &System, driver: &str, rider: &str, route: &[(f64, f64)]) -> RideId {
    let driver = sys.driver(driver, "Dee", NEARBY).await;
    let ride = sys.request(rider, PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.command(StartRide {}, Some(&ride)).await;
    sys.wait_for(&ride, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    let start = Timestamp::now().unix_millis() - 60_000 * route.len() as i64;
    for (n, at) in route.iter().enumerate() {
        position(sys, &driver, *at, start + 60_000 * n as i64).await;
    }
    route_points(sys, &ride, route.len() as i64).await;
    sys.command(
        CompleteRide {
            distance_km: None,
            duration_min: Some(10.0),
        },
        Some(&ride),
    )
    .await;
    ride
}

/// The payment ledger of `ride`: its entries' count and their sum.
async fn ledger(sys: &System, ride: &RideId) -> (i64, i64) {
    let of = |what: &str| format!("SELECT {what} FROM ledger_entries WHERE ride_id = '{ride}'");
    (
        sys.scalar(Service::Payment, &of("COUNT(*)")).await,
        sys.scalar(
            Service::Payment,
            &of("CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT)"),
        )
        .await,
    )
}

/// Messages of `kind` in `saga` with distinct ids.
fn distinct(saga: &[Envelope], kind: MessageKind) -> usize {
    let ids: std::collections::HashSet<_> = saga
        .iter()
        .filter(|e| e.kind() == kind)
        .map(|e| e.id.clone())
        .collect();
    ids.len()
}

fn hold_steps(saga: &[Envelope]) -> Vec<(EarningsHoldStatus, u64)> {
    saga.iter()
        .filter_map(|e| match &e.message {
            Message::EarningsHold(m) => Some((m.status, m.amount_cents)),
            _ => None,
        })
        .collect()
}

async fn a_teleporting_driver_is_flagged_held_approved_and_released(sys: System) {
    let ride = driven(&sys, "d_tele", "u_tele", &[PICKUP, FAR, DROPOFF]).await;
    let saga = sys.settle(&ride, MessageKind::EarningsHold).await;
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    let route = done.route.expect("the completion summarises the route");
    assert_eq!(route.points, 3);
    // 250 km in a minute.
    assert!(route.max_speed_kmh > 10_000.0, "{route:?}");
    let Message::RideFlagged(flag) = find(&saga, MessageKind::RideFlagged) else {
        unreachable!()
    };
    assert!(flag.reasons[0].starts_with("impossible_speed"), "{flag:?}");
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    let share = captured.earnings.as_ref().expect("a split").driver_cents;
    assert_eq!(hold_steps(&saga), [(EarningsHoldStatus::Held, share)]);
    assert_eq!(ledger(&sys, &ride).await, (4, captured.amount_cents as i64));

    // The completion and the flag delivered again: judged once, held once.
    let completed = saga.iter().find(|e| e.kind() == MessageKind::RideCompleted);
    let flagged = saga.iter().find(|e| e.kind() == MessageKind::RideFlagged);
    sys.send_copies(completed.unwrap(), 2).await;
    sys.send_copies(flagged.unwrap(), 2).await;

    let review = ReviewRide {
        decision: ReviewDecision::Approve,
        note: Some("GPS glitch in a tunnel".into()),
    };
    let approve = sys.command(review.clone(), Some(&ride)).await;
    sys.wait_for(&ride, MessageKind::RideReviewed, Duration::from_secs(10))
        .await;
    // The review delivered again, and a second review under a new id: decided once.
    sys.send_copies(&approve, 2).await;
    sys.command(
        ReviewRide {
            decision: ReviewDecision::Reject,
            note: None,
        },
        Some(&ride),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let saga = loop {
        let saga = sys.saga(&ride).await;
        if hold_steps(&saga).len() >= 2 {
            break saga;
        }
        assert!(tokio::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(saga);
    // Long enough for any second decision or step to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let saga = sys.saga(&ride).await;
    assert_eq!(
        hold_steps(&saga),
        [
            (EarningsHoldStatus::Held, share),
            (EarningsHoldStatus::Released, share)
        ]
    );
    // The copies this test stored carry the flag's id; fraud announced it once.
    assert_eq!(distinct(&saga, MessageKind::RideFlagged), 1);
    assert_eq!(count(&saga, MessageKind::RideReviewed), 1);
    let Message::RideReviewed(decided) = find(&saga, MessageKind::RideReviewed) else {
        unreachable!()
    };
    assert_eq!(decided.decision, ReviewDecision::Approve);
    // Six entries (capture, hold, release: two each) that still add up to the capture.
    assert_eq!(ledger(&sys, &ride).await, (6, captured.amount_cents as i64));
    let driver_sql = format!(
        "SELECT CAST(SUM(amount_cents) AS BIGINT) FROM ledger_entries WHERE ride_id = '{ride}' \
         AND account = 'driver'"
    );
    assert_eq!(
        sys.scalar(Service::Payment, &driver_sql).await,
        share as i64
    );
    sys.shutdown().await;
}

async fn an_ordinary_route_is_not_flagged(sys: System) {
    let route = [PICKUP, (52.5150, 13.4200), (52.5080, 13.4350), DROPOFF];
    let ride = driven(&sys, "d_fair", "u_fair", &route).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    let summary = done.route.expect("a route summary");
    assert_eq!(summary.points, 4);
    assert!(summary.max_speed_kmh < 250.0, "{summary:?}");
    assert!(summary.spread_km > 3.0, "{summary:?}");
    assert_eq!(count(&saga, MessageKind::RideFlagged), 0);
    assert!(hold_steps(&saga).is_empty());
    let sql = format!("SELECT COUNT(*) FROM fraud_rides WHERE ride_id = '{ride}'");
    assert_eq!(sys.scalar(Service::Fraud, &sql).await, 1, "judged and kept");
    assert_eq!(ledger(&sys, &ride).await.0, 2, "the capture's split only");
    sys.shutdown().await;
}

#[tokio::test]
async fn teleporting_driver_on_sqlite() {
    a_teleporting_driver_is_flagged_held_approved_and_released(System::start().await).await;
}

#[tokio::test]
async fn teleporting_driver_on_postgres() {
    a_teleporting_driver_is_flagged_held_approved_and_released(
        System::start_on_postgres(&[]).await,
    )
    .await;
}

#[tokio::test]
async fn ordinary_route_on_sqlite() {
    an_ordinary_route_is_not_flagged(System::start().await).await;
}

#[tokio::test]
async fn ordinary_route_on_postgres() {
    an_ordinary_route_is_not_flagged(System::start_on_postgres(&[]).await).await;
}
