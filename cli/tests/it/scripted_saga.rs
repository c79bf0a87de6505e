//! `--wait`, `--expect`, `ride show` and `saga trace` against a real nats-server (without
//! authentication: the stand-in plays every service), with a small scripted stand-in for the
//! workers: it answers each ride command with the events the saga
//! would produce, so these tests pin down ridectl's side of the contract (following, resting
//! states, exit code 3) independently of the real workers (see `sagas.rs` for those).

use std::collections::HashSet;
use std::time::Duration;

use crate::common::{Harness, assert_code, json, stderr, stdout};
use async_nats::jetstream;
use bytes::Bytes;
use futures_util::StreamExt;
use ridesaga_schemas::*;

const FARE: u64 = 1150;
const HOLD: u64 = 1200;

/// Answers ride commands like the five services would, with a short pause between steps.
fn spawn_scripted_workers(client: async_nats::Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let js = jetstream::new(client.clone());
        let mut commands = client.subscribe("cmd.ride.>").await.unwrap();
        let mut confirmed: HashSet<String> = HashSet::new();
        while let Some(message) = commands.next().await {
            let Ok(cmd) = Envelope::decode(&message.subject, &message.payload) else {
                continue;
            };
            let ride = cmd.saga_id.clone().unwrap().to_string();
            let rider = RiderId::parse("u_1").unwrap();
            let driver = DriverId::parse("d_fake").unwrap();
            let hold = format!("h_{ride}");
            let mut out: Vec<(Message, &str)> = Vec::new();
            match &cmd.message {
                Message::RequestRide(m) => {
                    out.push((
                        RideRequested {
                            rider_id: m.rider_id.clone(),
                            pickup: m.pickup,
                            dropoff: m.dropoff,
                            payment_token: m.payment_token.clone(),
                            estimated_distance_km: 2.0,
                            estimated_fare_cents: HOLD,
                            match_deadline: Timestamp::now(),
                            expires_at: None,
                        }
                        .into(),
                        "ride",
                    ));
                    // tok_pending: a saga that stays requested, e.g. while no driver is found.
                    if m.payment_token != "tok_pending" {
                        out.push((
                            FraudCleared {
                                rider_id: rider.clone(),
                                score: 0,
                                reasons: vec![],
                            }
                            .into(),
                            "fraud",
                        ));
                        out.push((
                            DriverAssigned {
                                rider_id: rider.clone(),
                                driver_id: driver.clone(),
                                driver_name: "Fake".into(),
                                pickup_distance_km: 0.3,
                            }
                            .into(),
                            "driver",
                        ));
                        if m.payment_token == "tok_chargeDeclined" {
                            out.push((
                                PaymentDeclined {
                                    rider_id: rider.clone(),
                                    code: "card_declined".into(),
                                    message: "declined".into(),
                                }
                                .into(),
                                "payment",
                            ));
                            out.push((
                                RideCancelled {
                                    rider_id: rider.clone(),
                                    reason: CancelReason::PaymentDeclined,
                                    driver_id: Some(driver.clone()),
                                }
                                .into(),
                                "ride",
                            ));
                            out.push((
                                DriverReleased {
                                    driver_id: driver.clone(),
                                    reason: "declined".into(),
                                }
                                .into(),
                                "driver",
                            ));
                        } else {
                            out.push((
                                PaymentAuthorized {
                                    rider_id: rider.clone(),
                                    hold_id: hold.clone(),
                                    amount_cents: HOLD,
                                }
                                .into(),
                                "payment",
                            ));
                            out.push((
                                RideConfirmed {
                                    rider_id: rider.clone(),
                                    driver_id: driver.clone(),
                                    estimated_fare_cents: HOLD,
                                    pickup_deadline: None,
                                }
                                .into(),
                                "ride",
                            ));
                            confirmed.insert(ride.clone());
                        }
                    }
                }
                Message::StartRide(_) if confirmed.contains(&ride) => {
                    out.push((
                        RideStarted {
                            rider_id: rider,
                            driver_id: driver,
                        }
                        .into(),
                        "ride",
                    ));
                }
                Message::CompleteRide(_) => {
                    out.push((
                        RideCompleted {
                            rider_id: rider.clone(),
                            driver_id: driver,
                            distance_km: 2.0,
                            duration_min: 7.0,
                            fare_cents: FARE,
                            distance_source: DistanceSource::Reported,
                            route_points: 0,
                            fare: None,
                            route: None,
                        }
                        .into(),
                        "ride",
                    ));
                    out.push((
                        PaymentCaptured {
                            rider_id: rider,
                            hold_id: hold,
                            amount_cents: FARE,
                            earnings: None,
                            fare: None,
                        }
                        .into(),
                        "payment",
                    ));
                }
                Message::CancelRide(_) if confirmed.remove(&ride) => {
                    out.push((
                        RideCancelled {
                            rider_id: rider.clone(),
                            reason: CancelReason::Rider,
                            driver_id: Some(driver.clone()),
                        }
                        .into(),
                        "ride",
                    ));
                    out.push((
                        DriverReleased {
                            driver_id: driver,
                            reason: "cancelled".into(),
                        }
                        .into(),
                        "driver",
                    ));
                    out.push((
                        PaymentVoided {
                            rider_id: rider,
                            hold_id: hold,
                            amount_cents: HOLD,
                        }
                        .into(),
                        "payment",
                    ));
                }
                _ => out.push((
                    RideCommandRefused {
                        command: cmd.kind().to_string(),
                        reason: "not allowed in this state".into(),
                    }
                    .into(),
                    "ride",
                )),
            }
            for (i, (event, producer)) in out.into_iter().enumerate() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let envelope = Envelope::caused_by(&cmd, event, &i.to_string(), producer);
                let publish = jetstream::message::PublishMessage::build()
                    .payload(Bytes::from(envelope.encode()))
                    .message_id(envelope.id.as_str());
                js.send_publish(envelope.subject(), publish)
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    })
}

async fn harness() -> (Harness, tokio::task::JoinHandle<()>) {
    // The stand-in answers for all five services, which no identity may (tests/sagas.rs runs
    // the real workers with theirs): a server without authentication.
    let h = Harness::provisioned_without_auth().await;
    let workers = spawn_scripted_workers(h.server.client().await.unwrap());
    // Let the subscription reach the server before the first command.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (h, workers)
}

fn request<'a>(id: &'a str, card: &'a str, tail: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "ride",
        "request",
        "--rider",
        "u_1",
        "--from",
        "48.85,2.35",
        "--to",
        "48.86,2.36",
        "--card",
        card,
        "--id",
        id,
        "--timeout",
        "10s",
    ];
    args.extend_from_slice(tail);
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_request_exits_0_with_the_saga_as_json_and_steps_on_stderr() {
    let (h, _workers) = harness().await;
    let out = h
        .ridectl(&request("r_ok", "tok_visa", &["--expect", "confirmed"]))
        .await;
    assert_code(&out, 0);
    let saga = json(&out);
    assert_eq!(saga["state"], "confirmed");
    assert_eq!(saga["driver_id"], "d_fake");
    assert_eq!(saga["held_cents"], HOLD);
    let steps = stderr(&out);
    let fraud = steps
        .find("evt.fraud.cleared.r_ok")
        .expect("fraud step printed");
    let confirmed = steps
        .find("evt.ride.confirmed.r_ok")
        .expect("confirmed step printed");
    assert!(fraud < confirmed, "steps in order:\n{steps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_expected_to_confirm_exits_3() {
    let (h, _workers) = harness().await;
    let out = h
        .ridectl(&request(
            "r_declined",
            "tok_chargeDeclined",
            &["--expect", "confirmed"],
        ))
        .await;
    assert_code(&out, 3);
    assert!(
        stderr(&out)
            .contains("ride r_declined is cancelled (payment_declined), expected confirmed"),
        "{}",
        stderr(&out)
    );
    let saga = json(&out);
    assert_eq!(
        saga["driver_released"], true,
        "rests only after the compensation"
    );

    let out = h
        .ridectl(&request(
            "r_declined2",
            "tok_chargeDeclined",
            &["--expect", "cancelled:payment_declined"],
        ))
        .await;
    assert_code(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_returns_once_the_fare_is_captured() {
    let (h, _workers) = harness().await;
    assert_code(
        &h.ridectl(&request("r_trip", "tok_visa", &["--wait"])).await,
        0,
    );
    let out = h
        .ridectl(&["ride", "start", "r_trip", "--expect", "started"])
        .await;
    assert_code(&out, 0);
    let out = h
        .ridectl(&[
            "ride",
            "complete",
            "r_trip",
            "--distance-km",
            "2",
            "--expect",
            "completed",
        ])
        .await;
    assert_code(&out, 0);
    let saga = json(&out);
    assert_eq!(saga["fare_cents"], FARE);
    assert_eq!(saga["captured_cents"], FARE);

    let out = h.ridectl(&["ride", "show", "r_trip", "-o", "table"]).await;
    assert_code(&out, 0);
    assert!(
        stdout(&out).contains("captured        11.50"),
        "{}",
        stdout(&out)
    );
    let out = h
        .ridectl(&["ride", "show", "r_trip", "--expect", "cancelled"])
        .await;
    assert_code(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_an_error_unless_expected() {
    let (h, _workers) = harness().await;
    let out = h.ridectl(&request("r_pending", "tok_pending", &[])).await;
    assert_code(&out, 0);
    let out = h
        .ridectl(&["ride", "start", "r_pending", "--wait", "--timeout", "10s"])
        .await;
    assert_code(&out, 1);
    assert!(
        stderr(&out).contains("the ride service refused cmd.ride.start for ride r_pending"),
        "{}",
        stderr(&out)
    );
    let out = h
        .ridectl(&[
            "ride",
            "start",
            "r_pending",
            "--expect",
            "refused",
            "--timeout",
            "10s",
        ])
        .await;
    assert_code(&out, 0);
    assert_eq!(json(&out)["outcome"], "refused");
    let out = h
        .ridectl(&[
            "ride",
            "start",
            "r_pending",
            "--expect",
            "started",
            "--timeout",
            "10s",
        ])
        .await;
    assert_code(&out, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_for_a_ride_at_rest_returns_its_state_and_a_cancel_waits_for_compensation() {
    let (h, _workers) = harness().await;
    let out = h
        .ridectl(&request("r_nostart", "tok_chargeDeclined", &["--wait"]))
        .await;
    assert_code(&out, 0);
    let out = h
        .ridectl(&["ride", "start", "r_nostart", "--wait", "--timeout", "10s"])
        .await;
    // The saga already rests (cancelled) when the start is stored: that is its state.
    assert_code(&out, 0);
    assert_eq!(json(&out)["state"], "cancelled");

    let out = h
        .ridectl(&request("r_cancel", "tok_visa", &["--wait"]))
        .await;
    assert_code(&out, 0);
    let out = h
        .ridectl(&["ride", "cancel", "r_cancel", "--expect", "cancelled:rider"])
        .await;
    assert_code(&out, 0);
    let saga = json(&out);
    assert_eq!(saga["voided_cents"], HOLD);
    assert_eq!(saga["driver_released"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trace_lists_every_step_in_order_with_compensations_marked() {
    let (h, _workers) = harness().await;
    assert_code(
        &h.ridectl(&request("r_t", "tok_visa", &["--wait"])).await,
        0,
    );
    assert_code(&h.ridectl(&["ride", "cancel", "r_t", "--wait"]).await, 0);

    let out = h.ridectl(&["saga", "trace", "r_t"]).await;
    assert_code(&out, 0);
    let trace = json(&out);
    assert_eq!(trace["state"], "cancelled");
    let steps = trace["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"cmd.ride.request"));
    assert!(kinds.contains(&"cmd.ride.cancel"));
    let seqs: Vec<u64> = steps.iter().map(|s| s["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let compensations: Vec<&str> = steps
        .iter()
        .filter(|s| s["compensation"] == true)
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert!(
        compensations.contains(&"evt.payment.voided"),
        "{compensations:?}"
    );
    assert!(compensations.contains(&"evt.driver.released"));
    assert_eq!(steps[1]["producer"], "ride");

    let out = h.ridectl(&["saga", "trace", "r_t", "-o", "table"]).await;
    assert!(stdout(&out).contains("[compensation]"));
    assert!(stdout(&out).contains("ride r_t: cancelled (rider)"));

    let list = json(&h.ridectl(&["saga", "list", "--state", "terminal"]).await);
    assert_eq!(list[0]["ride_id"], "r_t");
}
