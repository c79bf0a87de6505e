//! Notifications people receive, through the real workers: riders by email (a real SMTP
//! server, aiosmtpd, started by the test harness) and drivers by SMS (the harness's HTTP
//! receiver, answering like a provider), with the addresses and numbers of their
//! registrations. Each notification arrives once, with its content; an SMTP server that is
//! down delays the mails but no ride, and they arrive once when it returns; redelivered
//! events send nothing again; a provider that answers 500 and then accepts sends once. On
//! SQLite and PostgreSQL.

use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use base64::Engine;
use ridesaga_schemas::*;
use ridesaga_testkit::{SmsReceiver, SmtpServer, mail};

use crate::support::{System, count, find};

const PICKUP: (f64, f64) = (52.5200, 13.4050);
const DROPOFF: (f64, f64) = (52.5000, 13.4500);
const NEARBY: (f64, f64) = (52.5230, 13.4100);

const RIDER_EMAIL: &str = "ada@example.com";
const DRIVER_PHONE: &str = "+4917000000001";
const SMS_FROM: &str = "+15005550006";

/// The mail server, the SMS provider, and the settings that send riders' notifications by
/// email and drivers' by SMS.
struct Outside {
    smtp: SmtpServer,
    sms: SmsReceiver,
}

impl Outside {
    async fn start() -> Outside {
        Outside {
            smtp: SmtpServer::start().await.expect("aiosmtpd starts"),
            sms: SmsReceiver::start().await.expect("the SMS receiver starts"),
        }
    }

    fn settings(&self) -> Vec<(String, String)> {
        [
            ("RIDESAGA_NOTIFY_RIDER_CHANNEL", "email".to_owned()),
            ("RIDESAGA_NOTIFY_DRIVER_CHANNEL", "sms".to_owned()),
            ("RIDESAGA_SMTP_HOST", "127.0.0.1".to_owned()),
            ("RIDESAGA_SMTP_PORT", self.smtp.port().to_string()),
            ("RIDESAGA_SMTP_TLS", "none".to_owned()),
            (
                "RIDESAGA_SMTP_FROM",
                "Ridesaga <rides@ridesaga.test>".to_owned(),
            ),
            ("RIDESAGA_SMS_URL", self.sms.url("2010-04-01/Messages.json")),
            ("RIDESAGA_SMS_USER", "AC1".to_owned()),
            ("RIDESAGA_SMS_TOKEN", "test-token".to_owned()),
            ("RIDESAGA_SMS_FROM", SMS_FROM.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

async fn start(outside: &Outside, postgres: bool) -> System {
    let settings = outside.settings();
    let extra: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if postgres {
        System::start_on_postgres(&extra).await
    } else {
        System::start_with(&extra).await
    }
}

/// Registers the rider with an address and the driver with a phone number, and puts the
/// driver online.
async fn register(sys: &System, rider: &str, driver: &str) -> DriverId {
    sys.command(
        RegisterRider {
            rider_id: RiderId::parse(rider).unwrap(),
            email: Some(RIDER_EMAIL.into()),
            phone: None,
        },
        None,
    )
    .await;
    sys.driver_registered(RegisterDriver {
        driver_id: DriverId::parse(driver).unwrap(),
        name: "Sam".into(),
        location: GeoPoint::new(NEARBY.0, NEARBY.1).unwrap(),
        email: None,
        phone: Some(DRIVER_PHONE.into()),
    })
    .await
}

/// Requests, starts and completes a ride for `rider`; returns once its fare is captured.
async fn ride_to_the_end(sys: &System, rider: &str) -> (RideId, Vec<Envelope>) {
    let ride = sys.request(rider, PICKUP, DROPOFF, "tok_visa").await;
    sys.wait_for(&ride, MessageKind::RideConfirmed, Duration::from_secs(20))
        .await;
    sys.start_and_complete(&ride, 5.0, 12.0).await;
    let saga = sys
        .wait_for(&ride, MessageKind::PaymentCaptured, Duration::from_secs(20))
        .await;
    (ride, saga)
}

/// Polls `done` every 100 ms until it holds, for at most `timeout`.
async fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ride's `evt.notification.sent`, once `n` of them are stored.
async fn sent(sys: &System, ride: &RideId, n: usize) -> Vec<(MessageId, NotificationSent)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let saga = sys.saga(ride).await;
        let sent: Vec<(MessageId, NotificationSent)> = saga
            .iter()
            .filter_map(|e| match &e.message {
                Message::NotificationSent(s) => Some((e.id.clone(), s.clone())),
                _ => None,
            })
            .collect();
        if sent.len() >= n {
            return sent;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{ride}: {} of {n} notifications sent",
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the notification worker has handled everything stored for it.
async fn notification_caught_up(sys: &System) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stream = sys
            .js
            .get_stream(streams::SAGA_STREAM)
            .await
            .expect("stream");
        let mut consumer = stream
            .get_consumer::<pull::Config>(&Service::Notification.consumer_name())
            .await
            .expect("consumer");
        let info = consumer.info().await.expect("consumer info");
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "notification still has {} pending",
            info.num_pending + info.num_ack_pending as u64
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The rider's mails (three: driver assigned, confirmed, receipt) and the driver's SMS (one:
/// driver assigned) arrive once each, with their content and the ids of their events; the
/// provider's first answer is a 500, so the SMS is asked for twice with one key and sent once.
/// Copies of the events that called for them (stored again, as a redelivery or a replay
/// would bring them) send nothing more.
async fn a_saga_s_notifications_arrive_once_by_email_and_sms(postgres: bool) {
    let outside = Outside::start().await;
    outside.sms.fail_next(&[500]);
    let sys = start(&outside, postgres).await;
    register(&sys, "u_mail", "d_sms").await;
    let (ride, saga) = ride_to_the_end(&sys, "u_mail").await;
    let sent = sent(&sys, &ride, 4).await;
    eventually("three mails and one SMS", Duration::from_secs(20), || {
        outside.smtp.messages().len() == 3 && outside.sms.messages().len() == 1
    })
    .await;

    let mails = outside.smtp.messages();
    for (id, notice) in sent.iter().filter(|(_, s)| s.recipient == Recipient::Rider) {
        assert_eq!(notice.channel, "email");
        let message_id = format!("<{id}@ridesaga.test>");
        let mail = mails
            .iter()
            .find(|m| mail::header(m, "Message-ID").as_deref() == Some(message_id.as_str()))
            .unwrap_or_else(|| panic!("no mail {message_id} in {mails:#?}"));
        assert_eq!(mail::header(mail, "To").as_deref(), Some(RIDER_EMAIL));
        assert!(
            mail::header(mail, "From")
                .unwrap()
                .contains("rides@ridesaga.test")
        );
        assert!(
            mail::header(mail, "Subject")
                .unwrap()
                .starts_with(&format!("Ride {ride}: "))
        );
        assert_eq!(mail::body(mail).trim_end(), notice.text, "{mail}");
    }
    let Message::PaymentCaptured(captured) = find(&saga, MessageKind::PaymentCaptured) else {
        unreachable!()
    };
    let receipt = format!(
        "{}.{:02} charged",
        captured.amount_cents / 100,
        captured.amount_cents % 100
    );
    assert!(
        mails.iter().any(|m| mail::body(m).contains(&receipt)),
        "no receipt for {receipt} in {mails:#?}"
    );

    let (sms_id, to_driver) = sent
        .iter()
        .find(|(_, s)| s.recipient == Recipient::Driver)
        .expect("the driver is told");
    assert_eq!(to_driver.channel, "sms");
    let sms = &outside.sms.messages()[0];
    assert_eq!(
        (sms.to.as_str(), sms.from.as_str()),
        (DRIVER_PHONE, SMS_FROM)
    );
    assert_eq!(sms.body, to_driver.text);
    assert!(sms.body.starts_with(&format!("New ride {ride}")));
    let requests = outside.sms.requests();
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        [500, 201]
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("AC1:test-token");
    for request in &requests {
        assert_eq!(request.path, "/2010-04-01/Messages.json");
        assert_eq!(request.idempotency_key.as_deref(), Some(sms_id.as_str()));
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Basic {basic}").as_str())
        );
    }
    let provider_id = sys
        .scalar(
            Service::Notification,
            &format!(
                "SELECT COUNT(*) FROM notifications WHERE ride_id = '{ride}' \
                 AND channel = 'sms' AND provider_id = '{}'",
                sms.sid
            ),
        )
        .await;
    assert_eq!(provider_id, 1, "the provider's message id is recorded");

    // The events that called for the notifications, stored again.
    for kind in [
        MessageKind::DriverAssigned,
        MessageKind::RideConfirmed,
        MessageKind::PaymentCaptured,
    ] {
        let event = saga.iter().find(|e| e.kind() == kind).expect("in the saga");
        sys.send_copies(event, 2).await;
    }
    notification_caught_up(&sys).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(outside.smtp.messages().len(), 3, "no mail twice");
    assert_eq!(outside.sms.messages().len(), 1, "no SMS twice");
    assert_eq!(outside.sms.requests().len(), 2, "no SMS asked for again");
    assert_eq!(
        count(&sys.saga(&ride).await, MessageKind::NotificationSent),
        4
    );
    sys.shutdown().await;
}

/// With the SMTP server down, the ride completes as if nothing were wrong and the driver's
/// SMS goes out; the rider's mails wait, and arrive once each when the server is back.
async fn with_the_mail_server_down_rides_complete_and_the_mails_arrive_once_later(postgres: bool) {
    let mut outside = Outside::start().await;
    let sys = start(&outside, postgres).await;
    register(&sys, "u_late", "d_late").await;
    outside.smtp.stop();
    let started = tokio::time::Instant::now();
    let (ride, _) = ride_to_the_end(&sys, "u_late").await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the ride took {:?}",
        started.elapsed()
    );
    let sent_now = sent(&sys, &ride, 1).await;
    assert!(
        sent_now
            .iter()
            .all(|(_, s)| s.recipient == Recipient::Driver),
        "no mail can have gone: {sent_now:?}"
    );
    eventually("the driver's SMS", Duration::from_secs(10), || {
        outside.sms.messages().len() == 1
    })
    .await;
    assert!(outside.smtp.messages().is_empty());
    assert_eq!(
        sys.scalar(
            Service::Notification,
            &format!(
                "SELECT COUNT(*) FROM notifications WHERE ride_id = '{ride}' \
                 AND recipient = 'rider' AND status = 'due'"
            ),
        )
        .await,
        3,
        "the rider's notifications wait"
    );

    outside.smtp.restart().await.expect("aiosmtpd restarts");
    let sent = sent(&sys, &ride, 4).await;
    eventually("three mails", Duration::from_secs(30), || {
        outside.smtp.messages().len() >= 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = outside.smtp.messages();
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let mut ids: Vec<String> = mails
        .iter()
        .map(|m| mail::header(m, "Message-ID").unwrap())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = sent
        .iter()
        .filter(|(_, s)| s.recipient == Recipient::Rider)
        .map(|(id, _)| format!("<{id}@ridesaga.test>"))
        .collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(
        count(&sys.saga(&ride).await, MessageKind::NotificationSent),
        4
    );
    sys.shutdown().await;
}

#[tokio::test]
async fn notifications_by_email_and_sms_on_sqlite() {
    a_saga_s_notifications_arrive_once_by_email_and_sms(false).await;
}

#[tokio::test]
async fn notifications_by_email_and_sms_on_postgres() {
    a_saga_s_notifications_arrive_once_by_email_and_sms(true).await;
}

#[tokio::test]
async fn a_mail_outage_delays_mails_not_rides_on_sqlite() {
    with_the_mail_server_down_rides_complete_and_the_mails_arrive_once_later(false).await;
}

#[tokio::test]
async fn a_mail_outage_delays_mails_not_rides_on_postgres() {
    with_the_mail_server_down_rides_complete_and_the_mails_arrive_once_later(true).await;
}
