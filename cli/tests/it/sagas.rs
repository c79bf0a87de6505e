//! Whole sagas with the five real workers running in-process (`ridesaga_testkit::system`,
//! short deadlines, a temporary SQLite file per service) and `ridectl` driving them: the exit
//! codes 0 and 3 on real outcomes, JSON parsed by the test, and a clean audit afterwards.

use ridesaga_testkit::Identity;
use ridesaga_testkit::system::System;

use crate::common::{assert_code, json, run_ridectl, stderr};

/// The five workers on a server of their own, a ride's match deadline `match_deadline`.
async fn system(match_deadline: &str) -> System {
    system_with(match_deadline, &[]).await
}

/// [`system`] with more settings for every worker.
async fn system_with(match_deadline: &str, extra: &[(&str, &str)]) -> System {
    let settings: Vec<(&str, &str)> = [("RIDESAGA_MATCH_DEADLINE", match_deadline)]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    System::start_with(&settings).await
}

/// `ridectl` as `ridectl-admin` against a system.
trait Ridectl {
    async fn ridectl(&self, args: &[&str]) -> std::process::Output;
    async fn driver_online(&self, id: &str, at: &str);
}

impl Ridectl for System {
    async fn ridectl(&self, args: &[&str]) -> std::process::Output {
        run_ridectl(&self.env(Identity::Admin), args).await
    }

    async fn driver_online(&self, id: &str, at: &str) {
        let register = [
            "driver", "register", id, "--name", "Test", "--at", at, "--wait",
        ];
        assert_code(&self.ridectl(&register).await, 0);
        assert_code(&self.ridectl(&["driver", "online", id, "--wait"]).await, 0);
    }
}

fn request<'a>(rider: &'a str, card: &'a str, expect: &'a str) -> Vec<&'a str> {
    vec![
        "ride",
        "request",
        "--rider",
        rider,
        "--from",
        "52.5200,13.4050",
        "--to",
        "52.5100,13.4300",
        "--card",
        card,
        "--expect",
        expect,
        "--timeout",
        "30s",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ride_is_confirmed_completed_and_captured_for_its_fare() {
    let s = system("10s").await;
    s.driver_online("d_happy", "52.5205,13.4060").await;

    let out = s
        .ridectl(&request("u_happy", "tok_visa", "confirmed"))
        .await;
    assert_code(&out, 0);
    let ride = json(&out)["ride_id"].as_str().unwrap().to_owned();
    assert_eq!(json(&out)["driver_id"], "d_happy");

    let out = s
        .ridectl(&["ride", "start", &ride, "--expect", "started"])
        .await;
    assert_code(&out, 0);
    let out = s
        .ridectl(&[
            "ride",
            "complete",
            &ride,
            "--expect",
            "completed",
            "--timeout",
            "30s",
        ])
        .await;
    assert_code(&out, 0);
    let saga = json(&out);
    assert_eq!(saga["captured_cents"], saga["fare_cents"]);

    let services = json(&s.ridectl(&["services", "--wait", "1s"]).await);
    assert_eq!(services.as_array().unwrap().len(), 5, "{services}");
    let audit = s.ridectl(&["audit"]).await;
    assert_code(&audit, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_card_expected_to_confirm_exits_3_and_frees_the_driver() {
    let s = system("10s").await;
    s.driver_online("d_decl", "52.5205,13.4060").await;

    let out = s
        .ridectl(&request("u_decl", "tok_chargeDeclined", "confirmed"))
        .await;
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("payment_declined"),
        "{}",
        stderr(&out)
    );
    assert_eq!(json(&out)["driver_released"], true);

    let out = s.ridectl(&request("u_next", "tok_visa", "confirmed")).await;
    assert_code(&out, 0);
    assert_eq!(json(&out)["driver_id"], "d_decl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_drivers_the_ride_is_cancelled_after_the_match_deadline() {
    let s = system("2s").await;
    let out = s
        .ridectl(&request("u_alone", "tok_visa", "cancelled:no_driver"))
        .await;
    assert_code(&out, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blocked_rider_is_rejected_and_nothing_is_held() {
    let s = system("10s").await;
    s.driver_online("d_fraud", "52.5205,13.4060").await;
    let block = ["fraud", "block", "u_blocked", "--reason", "test", "--wait"];
    assert_code(&s.ridectl(&block).await, 0);
    let out = s
        .ridectl(&request("u_blocked", "tok_visa", "rejected"))
        .await;
    assert_code(&out, 0);
    let saga = json(&out);
    assert_eq!(saga["held_cents"], 0);
    assert!(saga.get("driver_id").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_stuck_at_the_gateway_shows_in_ride_show_and_saga_trace() {
    let s = system_with(
        "30s",
        &[
            ("RIDESAGA_GATEWAY_FAILURE_RATE", "1.0"),
            ("RIDESAGA_EFFECT_DEADLINE", "5m"),
        ],
    )
    .await;
    s.driver_online("d_stuck", "52.5205,13.4060").await;
    let request = [
        "ride",
        "request",
        "--rider",
        "u_stuck",
        "--from",
        "52.5200,13.4050",
        "--to",
        "52.5100,13.4300",
        "--card",
        "tok_visa",
        "--id",
        "r_stuck",
    ];
    assert_code(&s.ridectl(&request).await, 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let shown = json(&s.ridectl(&["ride", "show", "r_stuck"]).await);
        let pending = shown["pending_effects"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let hold = pending.iter().find(|e| e["kind"] == "payment.hold");
        if let Some(hold) = hold.filter(|h| h["attempts"].as_u64() > Some(0)) {
            assert_eq!(hold["id"], "r_stuck/hold");
            assert_eq!(hold["service"], "payment");
            assert!(
                hold["last_error"].as_str().unwrap().contains("unavailable"),
                "{hold}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never showed as pending: {shown}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let table = s.ridectl(&["ride", "show", "r_stuck", "-o", "table"]).await;
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("pending") && text.contains("payment.hold r_stuck/hold"),
        "{text}"
    );
    let trace = s
        .ridectl(&["saga", "trace", "r_stuck", "-o", "table"])
        .await;
    let text = String::from_utf8_lossy(&trace.stdout);
    assert!(
        text.contains("pending: payment.hold r_stuck/hold"),
        "{text}"
    );
}
