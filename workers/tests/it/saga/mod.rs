//! The ride saga end to end: all five workers against a real nats-server, one test per path;
//! in `cluster`, many sagas at once on a three-node cluster that loses nodes and leaders; in
//! `replicas`, a backlog behind a stopped service drained by three replicas, then a scale-down
//! under load.

mod cluster;
mod earnings;
mod fakerides;
mod notify;
mod refunds;
mod replicas;
mod schedules;
mod traces;
mod tracking;

use std::time::Duration;

use crate::support::{System, count, describe, find};
use ridesaga_schemas::*;
use ridesaga_testkit::Identity;

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);
const FAR_AWAY: (f64, f64) = (48.1374, 11.5755);

async fn confirmed_ride(sys: &System, rider: &str) -> RideId {
    let ride = sys.request(rider, PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    ride
}

/// Waits until `ride` is confirmed (its driver) or cancelled (`None`).
async fn confirmed_or_cancelled(
    sys: &System,
    ride: &RideId,
    timeout: Duration,
) -> Option<DriverId> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let saga = sys.saga(ride).await;
        for envelope in &saga {
            match &envelope.message {
                Message::RideConfirmed(c) => return Some(c.driver_id.clone()),
                Message::RideCancelled(_) => return None,
                _ => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride} never settled:\n{}",
            describe(&saga)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn happy_path_completes_and_captures_the_fare() {
    let sys = System::start().await;
    let driver = sys.driver("d_ann", "Ann", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_happy").await;
    sys.start_and_complete(&ride, 5.0, 12.0).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    sys.wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    let saga_with_receipt = sys
        .wait_for(&ride, MessageKind::NotificationSent, Duration::from_secs(5))
        .await;

    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    assert_eq!(done.driver_id, driver);
    assert_eq!(
        captured.amount_cents, done.fare_cents,
        "capture equals the fare"
    );
    // Defaults: 250 + 120/km + 30/min.
    assert_eq!(done.fare_cents, 250 + 5 * 120 + 12 * 30);
    for kind in [
        MessageKind::RideRequested,
        MessageKind::FraudCleared,
        MessageKind::DriverAssigned,
        MessageKind::PaymentAuthorized,
        MessageKind::RideConfirmed,
        MessageKind::RideCompleted,
        MessageKind::PaymentCaptured,
    ] {
        assert_eq!(count(&saga, kind), 1, "{kind} once in\n{}", describe(&saga));
    }
    assert_eq!(count(&saga, MessageKind::PaymentVoided), 0);
    assert!(count(&saga_with_receipt, MessageKind::NotificationSent) >= 1);
    sys.shutdown().await;
}

#[tokio::test]
async fn fraud_flagged_rejects_with_nothing_reserved_or_charged() {
    let sys = System::start().await;
    sys.driver("d_bea", "Bea", NEARBY).await;
    let rider = RiderId::parse("u_blocked").unwrap();
    sys.command(
        BlockRider {
            rider_id: rider.clone(),
            reason: Some("chargebacks".into()),
        },
        None,
    )
    .await;
    // Requests are scored concurrently, so wait until the block took effect.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sys.read("evt.fraud.blocklist.u_blocked").await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "block never took effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ride = sys.request("u_blocked", PICKUP, DROPOFF, "tok_visa").await;
    let saga = sys.settle(&ride, MessageKind::RideRejected).await;
    assert_eq!(count(&saga, MessageKind::FraudFlagged), 1);
    assert_eq!(
        count(&saga, MessageKind::DriverAssigned),
        0,
        "{}",
        describe(&saga)
    );
    assert_eq!(count(&saga, MessageKind::PaymentAuthorized), 0);
    assert_eq!(count(&saga, MessageKind::PaymentCaptured), 0);
    // The driver is still free for someone else.
    confirmed_ride(&sys, "u_honest").await;
    sys.shutdown().await;
}

#[tokio::test]
async fn no_driver_in_range_cancels_after_the_deadline() {
    let sys = System::start().await;
    sys.driver("d_far", "Far", FAR_AWAY).await;
    let ride = sys.request("u_lonely", PICKUP, DROPOFF, "tok_visa").await;
    let saga = sys.settle(&ride, MessageKind::RideCancelled).await;
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::NoDriver);
    assert_eq!(count(&saga, MessageKind::DriverUnavailable), 1);
    assert_eq!(count(&saga, MessageKind::PaymentAuthorized), 0);
    sys.shutdown().await;
}

#[tokio::test]
async fn card_declined_releases_the_driver_and_cancels_the_ride() {
    let sys = System::start().await;
    let driver = sys.driver("d_cid", "Cid", NEARBY).await;
    let ride = sys
        .request("u_broke", PICKUP, DROPOFF, "tok_chargeDeclined")
        .await;
    let saga = sys.settle(&ride, MessageKind::RideCancelled).await;
    sys.wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::PaymentDeclined);
    assert_eq!(count(&saga, MessageKind::PaymentDeclined), 1);
    assert_eq!(count(&saga, MessageKind::RideConfirmed), 0);
    // The released driver takes the next ride.
    let next = confirmed_ride(&sys, "u_solvent").await;
    let next_saga = sys.saga(&next).await;
    let Message::DriverAssigned(assigned) = find(&next_saga, MessageKind::DriverAssigned) else {
        unreachable!()
    };
    assert_eq!(assigned.driver_id, driver);
    sys.shutdown().await;
}

#[tokio::test]
async fn rider_cancel_after_confirmation_voids_the_hold_and_frees_the_driver() {
    let sys = System::start().await;
    let driver = sys.driver("d_dot", "Dot", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_fickle").await;
    sys.command(CancelRide {}, Some(&ride)).await;
    let saga = sys.settle(&ride, MessageKind::PaymentVoided).await;
    sys.wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::Rider);
    let Message::PaymentVoided(voided) = find(&saga, MessageKind::PaymentVoided) else {
        unreachable!()
    };
    let Message::PaymentAuthorized(held) = find(&saga, MessageKind::PaymentAuthorized) else {
        unreachable!()
    };
    assert_eq!(voided.amount_cents, held.amount_cents);
    assert_eq!(count(&saga, MessageKind::PaymentCaptured), 0);
    let next = confirmed_ride(&sys, "u_next").await;
    let Message::DriverAssigned(assigned) =
        find(&sys.saga(&next).await, MessageKind::DriverAssigned).clone()
    else {
        unreachable!()
    };
    assert_eq!(assigned.driver_id, driver);
    sys.shutdown().await;
}

#[tokio::test]
async fn two_concurrent_requests_and_one_driver_confirm_exactly_one() {
    let sys = System::start().await;
    sys.driver("d_eve", "Eve", NEARBY).await;
    let (a, b) = tokio::join!(
        sys.request("u_first", PICKUP, DROPOFF, "tok_visa"),
        sys.request("u_second", PICKUP, DROPOFF, "tok_visa"),
    );
    // One is confirmed; the other finds no driver before its deadline.
    let mut outcomes = Vec::new();
    for ride in [&a, &b] {
        let outcome = confirmed_or_cancelled(&sys, ride, Duration::from_secs(20)).await;
        outcomes.push(outcome.map_or("cancelled", |_| "confirmed"));
    }
    outcomes.sort();
    assert_eq!(outcomes, ["cancelled", "confirmed"]);
    let assigned = sys.read("evt.driver.assigned.*").await;
    assert_eq!(assigned.len(), 1, "one driver, one assignment");
    sys.shutdown().await;
}

#[tokio::test]
async fn a_duplicate_request_with_the_same_ride_id_creates_one_ride() {
    let sys = System::start().await;
    sys.driver("d_fay", "Fay", NEARBY).await;
    let ride = RideId::generate();
    // Two distinct commands (a retried ridectl call) for the same ride id.
    sys.request_as(&ride, "u_retry", PICKUP, DROPOFF, "tok_visa")
        .await;
    sys.request_as(&ride, "u_retry", PICKUP, DROPOFF, "tok_visa")
        .await;
    let saga = sys.settle(&ride, MessageKind::RideConfirmed).await;
    assert_eq!(count(&saga, MessageKind::RequestRide), 2);
    assert_eq!(
        count(&saga, MessageKind::RideRequested),
        1,
        "{}",
        describe(&saga)
    );
    assert_eq!(count(&saga, MessageKind::PaymentAuthorized), 1);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_saga_survives_workers_crashing_mid_flight() {
    let mut sys = System::start().await;
    sys.driver("d_gus", "Gus", NEARBY).await;
    // Payment is down when the ride is requested; ride and driver crash right after.
    sys.kill_worker(Service::Payment).await;
    let ride = sys.request("u_chaos", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::DriverAssigned, Duration::from_secs(10))
        .await;
    sys.kill_worker(Service::Ride).await;
    sys.kill_worker(Service::Driver).await;
    sys.start_worker(Service::Payment);
    sys.start_worker(Service::Ride);
    sys.start_worker(Service::Driver);
    let saga = sys.settle(&ride, MessageKind::RideConfirmed).await;
    assert_eq!(
        count(&saga, MessageKind::PaymentAuthorized),
        1,
        "{}",
        describe(&saga)
    );
    assert_eq!(count(&saga, MessageKind::DriverAssigned), 1);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_ride_not_confirmed_in_time_expires_and_releases_its_driver() {
    let mut sys = System::start().await;
    sys.driver("d_hal", "Hal", NEARBY).await;
    // Without payment nothing confirms the ride: it expires at match deadline + grace.
    sys.stop_worker(Service::Payment).await;
    let ride = sys.request("u_waiting", PICKUP, DROPOFF, "tok_visa").await;
    let saga = sys.settle(&ride, MessageKind::DriverReleased).await;
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::Expired);
    // Payment comes back, sees the assignment and the cancellation: no hold survives.
    sys.start_worker(Service::Payment);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let saga = sys.saga(&ride).await;
    let held = count(&saga, MessageKind::PaymentAuthorized);
    assert_eq!(
        held,
        count(&saga, MessageKind::PaymentVoided),
        "{}",
        describe(&saga)
    );
    assert_eq!(count(&saga, MessageKind::RideConfirmed), 0);
    sys.shutdown().await;
}

#[tokio::test]
async fn replaying_a_finished_saga_changes_nothing() {
    let sys = System::start().await;
    sys.driver("d_ida", "Ida", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_replay").await;
    sys.command(StartRide {}, Some(&ride)).await;
    sys.wait_for(&ride, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    sys.command(
        CompleteRide {
            distance_km: None,
            duration_min: None,
        },
        Some(&ride),
    )
    .await;
    sys.wait_for(&ride, MessageKind::PaymentCaptured, Duration::from_secs(10))
        .await;
    sys.settle(&ride, MessageKind::DriverReleased).await;
    sys.wait_for(&ride, MessageKind::NotificationSent, Duration::from_secs(5))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sys.saga(&ride).await;
    let effects_before = effects(&sys).await;

    // Every message again, as a redelivery would bring it: same envelope, new Nats-Msg-Id, so
    // the stream stores the copies and only the services' inboxes can tell.
    for envelope in &before {
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(envelope.encode().into())
            .message_id(format!("{}-again", envelope.id));
        sys.js
            .send_publish(envelope.subject(), msg)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = sys.saga(&ride).await;
    assert_eq!(
        after.len(),
        2 * before.len(),
        "only the copies were added:\n{}",
        describe(&after)
    );
    let kinds = |saga: &[Envelope]| {
        let mut ids: Vec<String> = saga.iter().map(|e| e.id.to_string()).collect();
        ids.sort();
        ids.dedup();
        ids
    };
    assert_eq!(kinds(&after), kinds(&before), "no new message id");
    assert_eq!(
        effects(&sys).await,
        effects_before,
        "no effect happened twice"
    );
    sys.shutdown().await;
}

/// Side effects as the services recorded them: gateway operations, notifications written to
/// the channel log, and inputs applied per service.
async fn effects(sys: &System) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (service, sql) in [
        (Service::Payment, "SELECT COUNT(*) FROM payment_operations"),
        (Service::Notification, "SELECT COUNT(*) FROM notifications"),
        (Service::Driver, "SELECT COUNT(*) FROM driver_rides"),
    ] {
        out.push((sql.to_string(), sys.scalar(service, sql).await));
        let applied = sys.scalar(service, "SELECT COUNT(*) FROM inbox").await;
        out.push((format!("{service} inbox"), applied));
    }
    let log = std::fs::read_to_string(sys.dir.path().join("notifications.jsonl")).unwrap();
    out.push(("notification log lines".into(), log.lines().count() as i64));
    out
}

#[tokio::test]
async fn every_notification_is_sent_exactly_once() {
    let sys = System::start().await;
    sys.driver("d_jo", "Jo", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_told").await;
    sys.start_and_complete(&ride, 3.0, 9.0).await;
    sys.wait_for(&ride, MessageKind::PaymentCaptured, Duration::from_secs(10))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut sent = loop {
        let saga = sys.saga(&ride).await;
        let sent: Vec<(NotificationKind, Recipient)> = saga
            .iter()
            .filter_map(|e| match &e.message {
                Message::NotificationSent(n) => Some((n.kind, n.recipient)),
                _ => None,
            })
            .collect();
        if sent.iter().any(|(k, _)| *k == NotificationKind::Receipt)
            || tokio::time::Instant::now() > deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    sent.sort_by_key(|(k, r)| (k.as_str(), *r == Recipient::Driver));
    assert_eq!(
        sent,
        [
            (NotificationKind::DriverAssigned, Recipient::Rider),
            (NotificationKind::DriverAssigned, Recipient::Driver),
            (NotificationKind::Receipt, Recipient::Rider),
            (NotificationKind::RideConfirmed, Recipient::Rider),
        ]
    );
    let log = std::fs::read_to_string(sys.dir.path().join("notifications.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    sys.shutdown().await;
}

/// The notifications of `kind` to the rider in a saga, with their texts.
fn told_rider(saga: &[Envelope], kind: NotificationKind) -> Vec<String> {
    saga.iter()
        .filter_map(|e| match &e.message {
            Message::NotificationSent(n) if n.kind == kind && n.recipient == Recipient::Rider => {
                Some(n.text.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_request_over_the_trip_limit_ends_rejected_and_the_rider_is_told_why() {
    let sys = System::start().await;
    sys.driver("d_kim", "Kim", NEARBY).await;
    // Berlin to Munich: about 500 km, over the 200 km limit.
    let ride = sys.request("u_far", PICKUP, FAR_AWAY, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideRejected, Duration::from_secs(10))
        .await;
    sys.wait_for(
        &ride,
        MessageKind::NotificationSent,
        Duration::from_secs(10),
    )
    .await;
    let saga = sys.settle(&ride, MessageKind::NotificationSent).await;
    let Message::RideRejected(rejected) = find(&saga, MessageKind::RideRejected) else {
        unreachable!()
    };
    assert_eq!(rejected.reasons, ["invalid_request"]);
    let told = told_rider(&saga, NotificationKind::RideRejected);
    assert_eq!(told.len(), 1, "{}", describe(&saga));
    assert!(told[0].contains("at most 200 km"), "{}", told[0]);
    assert_eq!(count(&saga, MessageKind::RideCommandRefused), 1);
    for kind in [
        MessageKind::RideRequested,
        MessageKind::FraudCleared,
        MessageKind::DriverAssigned,
        MessageKind::PaymentAuthorized,
    ] {
        assert_eq!(count(&saga, kind), 0, "{kind} in\n{}", describe(&saga));
    }
    // The driver is still free for someone else.
    confirmed_ride(&sys, "u_near").await;
    sys.shutdown().await;
}

#[tokio::test]
async fn a_capture_that_fails_for_good_is_told_to_the_rider_once() {
    let sys = System::start().await;
    sys.driver("d_lou", "Lou", NEARBY).await;
    let ride = sys
        .request("u_broke", PICKUP, DROPOFF, "tok_capture_fails")
        .await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.start_and_complete(&ride, 4.0, 10.0).await;
    sys.wait_for(
        &ride,
        MessageKind::PaymentCaptureFailed,
        Duration::from_secs(15),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while told_rider(&sys.saga(&ride).await, NotificationKind::PaymentFailed).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rider was never told:\n{}",
            describe(&sys.saga(&ride).await)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saga = sys.settle(&ride, MessageKind::PaymentCaptureFailed).await;
    let told = told_rider(&saga, NotificationKind::PaymentFailed);
    assert_eq!(told.len(), 1, "{}", describe(&saga));
    assert!(told[0].contains("could not charge"), "{}", told[0]);
    assert_eq!(count(&saga, MessageKind::PaymentCaptured), 0);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_confirmed_ride_never_started_is_cancelled_for_the_driver_and_compensated() {
    let sys = System::start_with(&[("RIDESAGA_PICKUP_DEADLINE", "2s")]).await;
    let driver = sys.driver("d_noa", "Noa", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_patient").await;
    let saga = sys.settle(&ride, MessageKind::PaymentVoided).await;
    sys.wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    let Message::RideConfirmed(confirmed) = find(&saga, MessageKind::RideConfirmed) else {
        unreachable!()
    };
    assert!(confirmed.pickup_deadline.is_some());
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::DriverNoShow);
    assert_eq!(cancelled.driver_id.as_ref(), Some(&driver));
    assert_eq!(count(&saga, MessageKind::RideCancelled), 1);
    assert_eq!(count(&saga, MessageKind::PaymentCaptured), 0);
    // The driver takes the next ride.
    let next = confirmed_ride(&sys, "u_next_noa").await;
    let Message::DriverAssigned(assigned) =
        find(&sys.saga(&next).await, MessageKind::DriverAssigned).clone()
    else {
        unreachable!()
    };
    assert_eq!(assigned.driver_id, driver);
    sys.shutdown().await;
}

#[tokio::test]
async fn a_rider_who_does_not_show_after_the_arrival_pays_the_no_show_fee() {
    let sys = System::start_with(&[
        ("RIDESAGA_PICKUP_DEADLINE", "30s"),
        ("RIDESAGA_RIDER_WAIT", "1s"),
        ("RIDESAGA_NO_SHOW_FEE_CENTS", "300"),
    ])
    .await;
    sys.driver("d_oli", "Oli", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_absent").await;
    sys.command(ArriveRide {}, Some(&ride)).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    sys.wait_for(&ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    assert_eq!(count(&saga, MessageKind::DriverArrived), 1);
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::RiderNoShow);
    let Message::PaymentCaptured(fee) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    assert_eq!(fee.amount_cents, 300);
    assert_eq!(count(&saga, MessageKind::PaymentVoided), 0);
    sys.shutdown().await;
}

#[tokio::test]
async fn three_replicas_of_every_service_never_book_a_driver_twice() {
    let mut sys = System::start().await;
    sys.add_replicas(2);
    let drivers = ["d_r1", "d_r2", "d_r3", "d_r4"];
    for (i, id) in drivers.iter().enumerate() {
        let at = (NEARBY.0 + i as f64 * 0.0005, NEARBY.1);
        sys.driver(id, id, at).await;
    }
    // Ten riders at once for four drivers: the replicas race for every driver.
    let requests = (0..10).map(|i| {
        let rider = format!("u_race_{i}");
        let sys = &sys;
        async move { sys.request(&rider, PICKUP, DROPOFF, "tok_visa").await }
    });
    let rides = futures_util::future::join_all(requests).await;
    let mut confirmed = Vec::new();
    let mut cancelled = 0;
    for ride in &rides {
        match confirmed_or_cancelled(&sys, ride, Duration::from_secs(30)).await {
            Some(driver) => confirmed.push(driver.to_string()),
            None => cancelled += 1,
        }
    }
    confirmed.sort();
    assert_eq!(
        confirmed, drivers,
        "each driver confirmed for exactly one ride"
    );
    assert_eq!(cancelled, 6);
    let assigned = sys.read("evt.driver.assigned.*").await;
    assert_eq!(assigned.len(), 4, "one assignment per driver");
    sys.shutdown().await;
}

#[tokio::test]
async fn a_message_stored_twice_is_applied_once_by_racing_replicas() {
    let mut sys = System::start().await;
    sys.add_replicas(2);
    sys.driver("d_twin", "Twin", NEARBY).await;
    let ride = RideId::generate();
    let request = Envelope::new(
        RequestRide {
            rider_id: RiderId::parse("u_twin").unwrap(),
            pickup: GeoPoint::new(PICKUP.0, PICKUP.1).unwrap(),
            dropoff: GeoPoint::new(DROPOFF.0, DROPOFF.1).unwrap(),
            payment_token: "tok_visa".into(),
        },
        Some(ride.clone()),
        "test",
    );
    // The same message stored three times (as a publisher outside the duplicate window
    // would), so that replicas receive copies at the same moment: the inbox decides.
    sys.send_copies(&request, 3).await;
    let saga = sys.settle(&ride, MessageKind::RideConfirmed).await;
    assert_eq!(count(&saga, MessageKind::RequestRide), 3);
    for kind in [
        MessageKind::RideRequested,
        MessageKind::FraudCleared,
        MessageKind::DriverAssigned,
        MessageKind::PaymentAuthorized,
        MessageKind::RideConfirmed,
    ] {
        assert_eq!(count(&saga, kind), 1, "{kind} once in\n{}", describe(&saga));
    }
    sys.shutdown().await;
}

#[tokio::test]
async fn sagas_survive_postgresql_crashing_under_load_and_nothing_is_applied_twice() {
    let server = ridesaga_testkit::Postgres::start().expect("PostgreSQL starts");
    // Deadlines longer than the outage: the saga waits for the database, not for a driver.
    let sys = System::start_on(&server, &[("RIDESAGA_MATCH_DEADLINE", "30s")]).await;
    sys.driver("d_pg1", "Pia", NEARBY).await;
    sys.driver("d_pg2", "Per", (NEARBY.0 + 0.001, NEARBY.1))
        .await;
    let before = confirmed_ride(&sys, "u_before").await;
    // The database goes away with a ride in flight and another requested while it is gone:
    // the workers' batches fail, their inputs are retried, and they go through once it is back.
    sys.command(StartRide {}, Some(&before)).await;
    sys.wait_for(&before, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    server.crash().expect("crashes");
    let during = sys.request("u_during", PICKUP, DROPOFF, "tok_visa").await;
    sys.command(
        CompleteRide {
            distance_km: Some(4.0),
            duration_min: Some(9.0),
        },
        Some(&before),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().expect("restarts");
    let saga = sys.settle(&before, MessageKind::PaymentCaptured).await;
    for kind in [
        MessageKind::RideStarted,
        MessageKind::RideCompleted,
        MessageKind::PaymentCaptured,
    ] {
        assert_eq!(count(&saga, kind), 1, "{kind} once in\n{}", describe(&saga));
    }
    let saga = sys.settle(&during, MessageKind::RideConfirmed).await;
    for kind in [
        MessageKind::RideRequested,
        MessageKind::FraudCleared,
        MessageKind::DriverAssigned,
        MessageKind::PaymentAuthorized,
        MessageKind::RideConfirmed,
    ] {
        assert_eq!(count(&saga, kind), 1, "{kind} once in\n{}", describe(&saga));
    }
    let mut dead_letters = sys
        .js
        .get_stream(streams::DEAD_LETTER_STREAM)
        .await
        .expect("dead-letter stream");
    let dead = dead_letters
        .info()
        .await
        .expect("stream info")
        .state
        .messages;
    assert_eq!(dead, 0, "nothing dead-lettered");
    sys.shutdown().await;
}

#[tokio::test]
async fn a_slow_gateway_still_confirms_and_completes_the_ride_once() {
    let sys = System::start_with(&[("RIDESAGA_GATEWAY_LATENCY", "300ms")]).await;
    sys.driver("d_pat", "Pat", NEARBY).await;
    let ride = confirmed_ride(&sys, "u_slow").await;
    sys.start_and_complete(&ride, 4.0, 10.0).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    for kind in [
        MessageKind::PaymentAuthorized,
        MessageKind::RideConfirmed,
        MessageKind::RideCompleted,
        MessageKind::PaymentCaptured,
    ] {
        assert_eq!(count(&saga, kind), 1, "{kind} once in\n{}", describe(&saga));
    }
    assert_eq!(count(&saga, MessageKind::PaymentVoided), 0);
    sys.shutdown().await;
}

/// Waits until `ride`'s hold ended declined with `code`: the ride cancelled `payment_declined`,
/// the driver released, the rider told; nothing confirmed, held or charged. The saga.
async fn declined_by_the_gateway(sys: &System, ride: &RideId, code: &str) -> Vec<Envelope> {
    let saga = sys.settle(ride, MessageKind::RideCancelled).await;
    let Message::RideCancelled(cancelled) = find(&saga, MessageKind::RideCancelled) else {
        unreachable!()
    };
    assert_eq!(cancelled.reason, CancelReason::PaymentDeclined);
    let Message::PaymentDeclined(declined) = find(&saga, MessageKind::PaymentDeclined) else {
        unreachable!()
    };
    assert_eq!(declined.code, code, "{}", describe(&saga));
    sys.wait_for(ride, MessageKind::DriverReleased, Duration::from_secs(10))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while told_rider(&sys.saga(ride).await, NotificationKind::RideCancelled).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rider was never told:\n{}",
            describe(&sys.saga(ride).await)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saga = sys.saga(ride).await;
    assert_eq!(count(&saga, MessageKind::PaymentDeclined), 1);
    assert_eq!(count(&saga, MessageKind::RideCancelled), 1);
    for kind in [
        MessageKind::RideConfirmed,
        MessageKind::PaymentAuthorized,
        MessageKind::PaymentCaptured,
    ] {
        assert_eq!(count(&saga, kind), 0, "{kind} in\n{}", describe(&saga));
    }
    saga
}

#[tokio::test]
async fn a_gateway_down_past_the_deadline_cancels_the_ride_payment_declined() {
    let sys = System::start_with(&[
        ("RIDESAGA_GATEWAY_FAILURE_RATE", "1.0"),
        ("RIDESAGA_EFFECT_DEADLINE", "1s"),
    ])
    .await;
    sys.driver("d_quin", "Quin", NEARBY).await;
    let ride = sys.request("u_offline", PICKUP, DROPOFF, "tok_visa").await;
    declined_by_the_gateway(&sys, &ride, "gateway_unavailable").await;
    sys.shutdown().await;
}

#[tokio::test]
async fn a_card_the_gateway_rejects_cancels_the_ride_payment_declined() {
    let sys = System::start().await;
    let driver = sys.driver("d_rae", "Rae", NEARBY).await;
    let ride = sys
        .request("u_rejected", PICKUP, DROPOFF, "tok_gateway_rejects")
        .await;
    declined_by_the_gateway(&sys, &ride, "gateway_error").await;
    // The released driver takes the next ride.
    let next = confirmed_ride(&sys, "u_accepted").await;
    let Message::DriverAssigned(assigned) =
        find(&sys.saga(&next).await, MessageKind::DriverAssigned).clone()
    else {
        unreachable!()
    };
    assert_eq!(assigned.driver_id, driver);
    sys.shutdown().await;
}

/// A payment worker in a process of its own on `sys`'s server and database, with its
/// settings, for a test that kills it outright (an in-process worker's tasks outlive an abort).
fn payment_process(sys: &System) -> std::process::Child {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_payment-worker"));
    command
        .envs(sys.nats_env[&Identity::Worker(Service::Payment)].clone())
        .env("DATABASE_URL", sys.database_url(Service::Payment))
        .env("RIDESAGA_HTTP_ADDR", "off")
        .env("RIDESAGA_TICK", "100ms")
        .env("RIDESAGA_INSTANCE", "payment-process")
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (name, value) in &sys.extra {
        command.env(name, value);
    }
    command.spawn().expect("payment-worker starts")
}

#[tokio::test]
async fn a_hold_interrupted_by_a_crash_is_performed_again_and_announced_once() {
    // A slow gateway keeps the hold in flight long enough to kill the payment worker during
    // it; the ride waits longer than the claim the crash leaves behind.
    let mut sys = System::start_with(&[
        ("RIDESAGA_GATEWAY_LATENCY", "2s"),
        ("RIDESAGA_EFFECT_TIMEOUT", "3s"),
        ("RIDESAGA_MATCH_DEADLINE", "30s"),
    ])
    .await;
    sys.stop_worker(Service::Payment).await;
    let mut process = payment_process(&sys);
    sys.driver("d_sam", "Sam", NEARBY).await;
    let ride = sys.request("u_crash", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::DriverAssigned, Duration::from_secs(10))
        .await;
    let in_flight = format!(
        "SELECT COUNT(*) FROM effects WHERE effect_id = '{ride}/hold' AND claimed_until > 0"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sys.scalar(Service::Payment, &in_flight).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold was never claimed:\n{}",
            describe(&sys.saga(&ride).await)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL while the gateway call is in flight: nothing settled, the claim left behind.
    process.kill().expect("kills");
    process.wait().expect("exits");
    let saga = sys.saga(&ride).await;
    assert_eq!(
        count(&saga, MessageKind::PaymentAuthorized),
        0,
        "{}",
        describe(&saga)
    );
    assert_eq!(sys.scalar(Service::Payment, &in_flight).await, 1);

    sys.start_worker(Service::Payment);
    let saga = sys.settle(&ride, MessageKind::RideConfirmed).await;
    assert_eq!(
        count(&saga, MessageKind::PaymentAuthorized),
        1,
        "{}",
        describe(&saga)
    );
    assert_eq!(count(&saga, MessageKind::RideConfirmed), 1);
    let held = format!(
        "SELECT COUNT(*) FROM payment_operations WHERE ride_id = '{ride}' AND outcome = 'held'"
    );
    assert_eq!(sys.scalar(Service::Payment, &held).await, 1);
    assert_eq!(
        sys.scalar(Service::Payment, "SELECT COUNT(*) FROM effects")
            .await,
        0,
        "nothing left pending"
    );
    sys.shutdown().await;
}
