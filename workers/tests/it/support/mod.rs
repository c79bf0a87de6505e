//! The saga tests' system is `ridesaga_testkit::system` (the five workers in-process); here,
//! what it is checked with that needs `ridectl`'s fold of the saga.

use std::time::Duration;

use ridesaga_schemas::*;
pub use ridesaga_testkit::system::{System, count, describe, find};

/// After `rides` completed rides whose stored steps are `steps`: one hold and one capture
/// each and no other gateway operation; four notifications each (driver assigned to rider
/// and driver, ride confirmed, receipt), announced, recorded and written once; no effect
/// left pending; nothing dead-lettered.
pub async fn assert_each_effect_once(sys: &System, steps: &[ridectl::saga::Step], rides: i64) {
    for (operation, outcome) in [("hold", "held"), ("capture", "captured")] {
        let sql = format!(
            "SELECT COUNT(*) FROM payment_operations WHERE operation = '{operation}' AND outcome = '{outcome}'"
        );
        assert_eq!(sys.scalar(Service::Payment, &sql).await, rides, "{sql}");
    }
    assert_eq!(
        sys.scalar(Service::Payment, "SELECT COUNT(*) FROM payment_operations")
            .await,
        2 * rides,
        "no other gateway operation"
    );
    let notified = 4 * rides;
    let announced = steps
        .iter()
        .filter(|s| s.kind() == MessageKind::NotificationSent)
        .count() as i64;
    assert_eq!(announced, notified, "notifications announced");
    assert_eq!(
        sys.scalar(Service::Notification, "SELECT COUNT(*) FROM notifications")
            .await,
        notified
    );
    let log = std::fs::read_to_string(sys.dir.path().join("notifications.jsonl"))
        .expect("the notification log");
    assert_eq!(log.lines().count() as i64, notified, "each sent once");
    for service in [Service::Payment, Service::Notification] {
        assert_eq!(
            sys.scalar(service, "SELECT COUNT(*) FROM effects").await,
            0,
            "{service}: nothing left pending"
        );
    }
    // On a cluster the stream may be electing a leader: asked again for up to a minute.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dead = loop {
        let info = async {
            let mut stream = sys.js.get_stream(streams::DEAD_LETTER_STREAM).await?;
            Ok::<_, async_nats::Error>(stream.info().await?.state.messages)
        };
        match info.await {
            Ok(messages) => break messages,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("the dead-letter stream's info failed, again: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the dead-letter stream's info: {e}"),
        }
    };
    assert_eq!(dead, 0, "nothing dead-lettered");
}
