//! Driver earnings through the real workers: a captured fare is split into the driver's share
//! and the platform's commission (`RIDESAGA_COMMISSION_PERCENT`), announced on
//! `evt.payment.captured` and appended to the payment service's ledger as two entries that add
//! up to the capture. On SQLite and PostgreSQL.

use std::time::Duration;

use ridesaga_schemas::*;

use crate::support::{System, find};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);

const COMMISSION: [(&str, &str); 1] = [("RIDESAGA_COMMISSION_PERCENT", "25")];

async fn a_captured_fare_is_split_into_balanced_ledger_entries(sys: System) {
    let driver = sys.driver("d_earn", "Eve", NEARBY).await;
    let ride = sys.request("u_earn", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.start_and_complete(&ride, 5.0, 12.0).await;
    let saga = sys.settle(&ride, MessageKind::PaymentCaptured).await;
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    let fare = 250 + 5 * 120 + 12 * 30;
    assert_eq!(captured.amount_cents, fare);
    let earnings = captured
        .earnings
        .clone()
        .expect("the capture names the split");
    assert_eq!(earnings.driver_id, driver);
    assert_eq!(earnings.commission_cents, (fare * 25 + 50) / 100);
    assert_eq!(earnings.driver_cents + earnings.commission_cents, fare);
    let Message::RideCompleted(done) = find(&saga, MessageKind::RideCompleted) else {
        unreachable!()
    };
    assert_eq!(
        captured.fare, done.fare,
        "the capture carries the fare's breakdown"
    );
    assert!(captured.fare.is_some());
    let sent = sys
        .wait_for(
            &ride,
            MessageKind::NotificationSent,
            Duration::from_secs(10),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saga_now = sent;
    loop {
        let receipt = saga_now.iter().find_map(|e| match &e.message {
            Message::NotificationSent(n) if n.kind == NotificationKind::Receipt => {
                Some(n.text.clone())
            }
            _ => None,
        });
        if let Some(text) = receipt {
            assert!(
                text.contains("(base 2.50 + distance 6.00 + time 3.60)"),
                "{text}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no receipt sent");
        tokio::time::sleep(Duration::from_millis(100)).await;
        saga_now = sys.saga(&ride).await;
    }

    let of = |what: &str| format!("SELECT {what} FROM ledger_entries WHERE ride_id = '{ride}'");
    assert_eq!(sys.scalar(Service::Payment, &of("COUNT(*)")).await, 2);
    assert_eq!(
        sys.scalar(Service::Payment, &of("CAST(SUM(amount_cents) AS BIGINT)"))
            .await,
        fare as i64,
        "the ledger's entries add up to the capture"
    );
    let driver_sql = format!(
        "SELECT amount_cents FROM ledger_entries WHERE ride_id = '{ride}' AND account = 'driver' \
         AND driver_id = '{driver}'"
    );
    assert_eq!(
        sys.scalar(Service::Payment, &driver_sql).await,
        earnings.driver_cents as i64
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn earnings_on_sqlite() {
    a_captured_fare_is_split_into_balanced_ledger_entries(System::start_with(&COMMISSION).await)
        .await;
}

#[tokio::test]
async fn earnings_on_postgres() {
    a_captured_fare_is_split_into_balanced_ledger_entries(
        System::start_on_postgres(&COMMISSION).await,
    )
    .await;
}
