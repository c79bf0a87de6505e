//! Driver schedules through the real workers: a driver off shift is passed over for one on
//! shift, a shift that ends while the ride is under way never releases its driver (only the
//! ride's end does), a schedule command delivered again is applied once, and one in a zone
//! that does not exist is dead-lettered with the reason. On SQLite and
//! PostgreSQL.

use std::time::Duration;

use ridesaga_schemas::*;
use time::OffsetDateTime;

use crate::support::{System, find};

// Berlin.
const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5150, 13.4150);
const NEARER: (f64, f64) = (52.5210, 13.4060);
const FARTHER: (f64, f64) = (52.5260, 13.4100);
// Hamburg: more than the match radius away from Berlin.
const HH_PICKUP: (f64, f64) = (53.5500, 9.9900);
const HH_DROPOFF: (f64, f64) = (53.5300, 10.0000);
const HH_DRIVER: (f64, f64) = (53.5510, 9.9910);

/// `now` plus `minutes` as a local date-time in UTC, to the minute.
fn utc_local(minutes: i64) -> String {
    let t = OffsetDateTime::now_utc() + time::Duration::minutes(minutes);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A schedule in UTC with one shift from `from` to `to` minutes from now.
fn shift(from: i64, to: i64) -> DriverSchedule {
    DriverSchedule {
        zone: "UTC".into(),
        weekly: Vec::new(),
        shifts: vec![OneOffShift {
            start: utc_local(from),
            end: utc_local(to),
        }],
    }
}

fn set(driver: &DriverId, schedule: Option<DriverSchedule>) -> Envelope {
    Envelope::new(
        SetDriverSchedule {
            driver_id: driver.clone(),
            schedule,
        },
        None,
        "test",
    )
}

/// Waits until the driver service announced `n` schedules of `driver`; returns them.
async fn schedules(sys: &System, driver: &DriverId, n: usize) -> Vec<Envelope> {
    let subject = subject_for(MessageKind::DriverScheduleChanged, driver.as_str());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = sys.read(&subject).await;
        if got.len() >= n {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{subject}: {} announced, expected {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first dead letter whose reason mentions `reason`, within 20 s.
async fn dead_letter(sys: &System, reason: &str) -> DeadLetter {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let letters =
            ridesaga_testkit::system::stored(&sys.js, streams::DEAD_LETTER_STREAM, "dlq.>")
                .await
                .expect("reads the dead letters");
        for m in letters {
            let letter: DeadLetter = serde_json::from_slice(&m.payload).expect("a dead letter");
            if letter.reason.contains(reason) {
                return letter;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no dead letter saying {reason:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn stored_schedules(sys: &System, driver: &DriverId) -> i64 {
    let sql = format!(
        "SELECT COUNT(*) FROM drivers WHERE driver_id = '{driver}' AND schedule IS NOT NULL"
    );
    sys.scalar(Service::Driver, &sql).await
}

fn assigned_driver(saga: &[Envelope]) -> DriverId {
    match find(saga, MessageKind::DriverAssigned) {
        Message::DriverAssigned(m) => m.driver_id.clone(),
        _ => unreachable!(),
    }
}

async fn drivers_off_shift_are_passed_over_and_shift_ends_release_no_one(sys: System) {
    // The nearer driver's only shift is tomorrow; the farther one is on shift for two hours.
    let nearer = sys.driver("d_sch_near", "Nia", NEARER).await;
    let farther = sys.driver("d_sch_far", "Fay", FARTHER).await;
    sys.send(&set(&nearer, Some(shift(24 * 60, 26 * 60)))).await;
    sys.send(&set(&farther, Some(shift(-60, 120)))).await;
    schedules(&sys, &nearer, 1).await;
    schedules(&sys, &farther, 1).await;

    let ride = sys.request("u_sch_1", PICKUP, DROPOFF, "tok_visa").await;
    let saga = sys
        .wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(20))
        .await;
    assert_eq!(assigned_driver(&saga), farther, "the driver on shift");

    // Without a schedule, the nearer driver is matched whenever online again.
    sys.send(&set(&nearer, None)).await;
    schedules(&sys, &nearer, 2).await;
    assert_eq!(stored_schedules(&sys, &nearer).await, 0);
    let second = sys.request("u_sch_2", PICKUP, DROPOFF, "tok_visa").await;
    let saga = sys
        .wait_for(&second, MessageKind::RideConfirmed, Duration::from_secs(20))
        .await;
    assert_eq!(assigned_driver(&saga), nearer);

    // The first ride starts; then the farther driver's shift is over (their schedule now
    // has only a shift that ended an hour ago), and timers run: they stay reserved.
    sys.command(StartRide {}, Some(&ride)).await;
    sys.wait_for(&ride, MessageKind::RideStarted, Duration::from_secs(10))
        .await;
    sys.send(&set(&farther, Some(shift(-180, -60)))).await;
    schedules(&sys, &farther, 2).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let saga = sys.saga(&ride).await;
    assert!(
        !saga.iter().any(|e| e.kind() == MessageKind::DriverReleased),
        "released by the end of a shift: {saga:?}"
    );
    let sql = format!("SELECT COUNT(*) FROM drivers WHERE current_ride = '{ride}'");
    assert_eq!(sys.scalar(Service::Driver, &sql).await, 1);
    sys.command(
        CompleteRide {
            distance_km: Some(1.0),
            duration_min: Some(4.0),
        },
        Some(&ride),
    )
    .await;
    let saga = sys.settle(&ride, MessageKind::DriverReleased).await;
    let Message::DriverReleased(released) = find(&saga, MessageKind::DriverReleased) else {
        unreachable!()
    };
    assert_eq!(
        (&released.driver_id, released.reason.as_str()),
        (&farther, "completed")
    );
    sys.shutdown().await;
}

async fn a_shift_too_short_for_the_trip_is_not_matched_and_a_redelivered_schedule_applies_once(
    sys: System,
) {
    let driver = sys.driver("d_sch_hh", "Hal", HH_DRIVER).await;
    // A shift ending within the next two minutes is too short for this trip: 2.4 km in all
    // at 30 km/h take 4.8 minutes.
    let short = set(&driver, Some(shift(-30, 2)));
    sys.send_copies(&short, 3).await;
    let announced = schedules(&sys, &driver, 1).await;
    let ride = sys
        .request("u_sch_3", HH_PICKUP, HH_DROPOFF, "tok_visa")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let saga = sys.saga(&ride).await;
    assert!(
        !saga.iter().any(|e| e.kind() == MessageKind::DriverAssigned),
        "a driver whose shift ends before the trip does: {saga:?}"
    );
    // The three copies were one command: one announcement.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sys.read(&announced[0].subject()).await.len(), 1);

    // A long enough shift: the waiting ride gets the driver.
    let long = shift(-30, 180);
    sys.send(&set(&driver, Some(long.clone()))).await;
    schedules(&sys, &driver, 2).await;
    let saga = sys
        .wait_for(&ride, MessageKind::DriverAssigned, Duration::from_secs(20))
        .await;
    assert_eq!(assigned_driver(&saga), driver);

    // The first command delivered again, later: applied once already, it changes nothing.
    let late = async_nats::jetstream::message::PublishMessage::build()
        .payload(short.encode().into())
        .message_id(format!("{}-late", short.id));
    sys.js
        .send_publish(short.subject(), late)
        .await
        .expect("publishes")
        .await
        .expect("stored");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(sys.read(&announced[0].subject()).await.len(), 2);
    let sql = format!(
        "SELECT COUNT(*) FROM drivers WHERE driver_id = '{driver}' AND schedule LIKE '%{}%'",
        long.shifts[0].end
    );
    assert_eq!(
        sys.scalar(Service::Driver, &sql).await,
        1,
        "the newer schedule stays"
    );

    // A schedule in a zone that does not exist, published past ridectl's check: the driver
    // service dead-letters it with the reason and keeps the schedule it has.
    let mars = DriverSchedule {
        zone: "Mars/Olympus".into(),
        ..long.clone()
    };
    sys.send(&set(&driver, Some(mars))).await;
    let letter = dead_letter(&sys, "unknown time zone").await;
    assert_eq!(letter.service, "driver");
    assert!(
        letter.subject.starts_with("cmd.driver.schedule."),
        "{letter:?}"
    );
    assert_eq!(sys.read(&announced[0].subject()).await.len(), 2);
    assert_eq!(sys.scalar(Service::Driver, &sql).await, 1);
    sys.shutdown().await;
}

/// Long enough for a waiting ride to outlast a schedule change.
const PATIENT: [(&str, &str); 1] = [("RIDESAGA_MATCH_DEADLINE", "30s")];

#[tokio::test]
async fn schedules_steer_matching_on_sqlite() {
    drivers_off_shift_are_passed_over_and_shift_ends_release_no_one(System::start().await).await;
}

#[tokio::test]
async fn schedules_steer_matching_on_postgres() {
    drivers_off_shift_are_passed_over_and_shift_ends_release_no_one(
        System::start_on_postgres(&[]).await,
    )
    .await;
}

#[tokio::test]
async fn short_shifts_and_redelivery_on_sqlite() {
    a_shift_too_short_for_the_trip_is_not_matched_and_a_redelivered_schedule_applies_once(
        System::start_with(&PATIENT).await,
    )
    .await;
}

#[tokio::test]
async fn short_shifts_and_redelivery_on_postgres() {
    a_shift_too_short_for_the_trip_is_not_matched_and_a_redelivered_schedule_applies_once(
        System::start_on_postgres(&PATIENT).await,
    )
    .await;
}
