//! Refunds through the real workers: `cmd.payment.refund` redelivered and retried under its
//! refund id refunds once through the gateway, appends one reversal to the ledger and tells the
//! rider once; a partial refund then the rest reverse the whole capture, and the rider hears of
//! each, once however often its announcement is redelivered; a third is refused, as is one above
//! what is left. On SQLite and PostgreSQL.

use std::time::Duration;

use ridesaga_schemas::*;

use crate::support::{System, count, describe};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);

fn refund(id: &str, amount_cents: Option<u64>) -> RefundRide {
    RefundRide {
        refund_id: RefundId::parse(id).unwrap(),
        amount_cents,
        reason: Some("detour".into()),
    }
}

/// Waits until the ride's saga holds `n` messages of `kind`; the whole saga.
async fn wait_for_n(sys: &System, ride: &RideId, kind: MessageKind, n: usize) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saga = sys.saga(ride).await;
        if count(&saga, kind) >= n {
            return saga;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: fewer than {n} {kind}:\n{}",
            describe(&saga)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until payment answered `n` refunds (each answer once, whatever copies are stored).
async fn wait_for_answers(sys: &System, ride: &RideId, n: usize) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saga = sys.saga(ride).await;
        if answers(&saga).len() >= n {
            return saga;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: fewer than {n} answers to refunds:\n{}",
            describe(&saga)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The refunds the rider was told of, in stream order, one entry per `evt.notification.sent`.
fn told_of_refunds(saga: &[Envelope]) -> Vec<String> {
    saga.iter()
        .filter_map(|e| match &e.message {
            Message::NotificationSent(n) if n.kind == NotificationKind::Refund => Some(
                n.refund_id
                    .as_ref()
                    .map_or_else(|| "?".to_owned(), ToString::to_string),
            ),
            _ => None,
        })
        .collect()
}

/// Waits until the rider was told of `n` refunds; the whole saga.
async fn wait_for_refunds_told(sys: &System, ride: &RideId, n: usize) -> Vec<Envelope> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let saga = sys.saga(ride).await;
        if told_of_refunds(&saga).len() >= n {
            return saga;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: the rider was told of fewer than {n} refunds:\n{}",
            describe(&saga)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The answers to refunds, once per message id (the test stores copies of one).
fn answers(saga: &[Envelope]) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    saga.iter()
        .filter(|e| seen.insert(e.id.clone()))
        .filter_map(|e| match &e.message {
            Message::PaymentRefunded(m) => Some((m.refund_id.to_string(), "refunded".into())),
            Message::PaymentRefundRefused(m) => Some((m.refund_id.to_string(), m.code.clone())),
            _ => None,
        })
        .collect()
}

async fn a_refund_is_made_reversed_and_told_once(sys: &System) {
    sys.driver("d_refund", "Rae", NEARBY).await;
    let ride = sys.request("u_refund", PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(15))
        .await;
    sys.start_and_complete(&ride, 5.0, 12.0).await;
    sys.wait_for(&ride, MessageKind::PaymentCaptured, Duration::from_secs(15))
        .await;
    let fare: u64 = 250 + 5 * 120 + 12 * 30;

    // A partial refund, its command stored three times (redeliveries past the stream's
    // duplicate window) and asked for again under a new message id with the same refund id.
    let first = sys.command(refund("rf_part", Some(500)), Some(&ride)).await;
    sys.send_copies(&first, 2).await;
    sys.command(refund("rf_part", Some(500)), Some(&ride)).await;
    let saga = wait_for_n(sys, &ride, MessageKind::PaymentRefunded, 1).await;
    let refunded = saga
        .iter()
        .find_map(|e| match &e.message {
            Message::PaymentRefunded(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (
            refunded.amount_cents,
            refunded.refunded_cents,
            refunded.captured_cents
        ),
        (500, 500, fare)
    );
    let reversal = refunded.reversal.clone().expect("the ledger's reversal");
    assert_eq!(reversal.driver_cents + reversal.commission_cents, 500);
    assert_eq!(reversal.commission_cents, 100, "20 % of the refund");
    // The announcement redelivered to notification: the rider is told once.
    let announced = saga
        .iter()
        .find(|e| e.kind() == MessageKind::PaymentRefunded)
        .unwrap()
        .clone();
    sys.send_copies(&announced, 2).await;

    // Above what is left: refused at once.
    sys.command(refund("rf_big", Some(fare)), Some(&ride)).await;
    let saga = wait_for_n(sys, &ride, MessageKind::PaymentRefundRefused, 1).await;
    assert_eq!(
        answers(&saga),
        [
            ("rf_part".to_string(), "refunded".to_string()),
            ("rf_big".to_string(), REFUND_EXCEEDS_CAPTURE.to_string())
        ]
    );
    // The rest, then a third that finds nothing left.
    sys.command(refund("rf_rest", None), Some(&ride)).await;
    // Counted by answer, not by message: the stream holds copies of rf_part's.
    wait_for_answers(sys, &ride, 3).await;
    sys.command(refund("rf_third", Some(1)), Some(&ride)).await;
    wait_for_answers(sys, &ride, 4).await;
    // Both refunds' announcements redelivered to notification once the rider heard of both
    // (four copies each: the first two of rf_part's were stored above).
    let saga = wait_for_refunds_told(sys, &ride, 2).await;
    let mut redelivered = std::collections::HashSet::new();
    for announced in saga
        .iter()
        .filter(|e| e.kind() == MessageKind::PaymentRefunded)
        .filter(|e| redelivered.insert(e.id.clone()))
    {
        sys.send_copies(announced, 4).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let saga = sys.saga(&ride).await;
    assert_eq!(
        answers(&saga),
        [
            ("rf_part".to_string(), "refunded".to_string()),
            ("rf_big".to_string(), REFUND_EXCEEDS_CAPTURE.to_string()),
            ("rf_rest".to_string(), "refunded".to_string()),
            ("rf_third".to_string(), REFUND_EXCEEDS_CAPTURE.to_string()),
        ],
        "each refund answered once:\n{}",
        describe(&saga)
    );

    let payment = |sql: String| async move { sys.scalar(Service::Payment, &sql).await };
    assert_eq!(
        payment(format!(
            "SELECT COUNT(*) FROM payment_operations WHERE ride_id = '{ride}' \
             AND operation = 'refund' AND outcome = 'refunded'"
        ))
        .await,
        2,
        "two refunds through the gateway, none for the refused ones"
    );
    assert_eq!(
        payment(format!(
            "SELECT COUNT(*) FROM payment_operations WHERE ride_id = '{ride}' \
             AND operation = 'refund'"
        ))
        .await,
        2
    );
    let ledger = |what: &str| format!("SELECT {what} FROM ledger_entries WHERE ride_id = '{ride}'");
    assert_eq!(
        payment(ledger("COUNT(*)")).await,
        6,
        "capture + two reversals"
    );
    assert_eq!(
        payment(format!(
            "SELECT COUNT(*) FROM ledger_entries WHERE ride_id = '{ride}' \
             AND operation = 'refund' AND entry_id LIKE '%/rf_part/%'"
        ))
        .await,
        2,
        "one reversal of the redelivered refund"
    );
    assert_eq!(
        payment(ledger("CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT)")).await,
        0,
        "the whole capture reversed"
    );
    assert_eq!(
        payment("SELECT COUNT(*) FROM effects".into()).await,
        0,
        "nothing left pending"
    );
    let told =
        format!("SELECT COUNT(*) FROM notifications WHERE ride_id = '{ride}' AND kind = 'refund'");
    assert_eq!(
        sys.scalar(Service::Notification, &told).await,
        2,
        "one notification per refund"
    );
    assert_eq!(
        told_of_refunds(&saga),
        ["rf_part", "rf_rest"],
        "the rider told of each refund once:\n{}",
        describe(&saga)
    );
}

#[tokio::test]
async fn refunds_on_sqlite() {
    let sys = System::start().await;
    a_refund_is_made_reversed_and_told_once(&sys).await;
    sys.shutdown().await;
}

#[tokio::test]
async fn refunds_on_postgres() {
    let sys = System::start_on_postgres(&[]).await;
    a_refund_is_made_reversed_and_told_once(&sys).await;
    sys.shutdown().await;
}
