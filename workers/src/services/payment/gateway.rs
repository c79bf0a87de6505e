//! The payment gateway behind a trait, and the built-in simulated gateway that follows test
//! card tokens, with optional latency and transient outages.
//!
//! Every call carries an idempotency key (ride id + operation) that the gateway honours: the
//! same key always gets the same answer and never moves money twice. The simulated gateway is
//! deterministic (hold ids and decisions derive from the key and the token), so replicas that
//! share nothing still agree; it also keeps a per-process ledger of calls, which tests count
//! and which remembers the keys it answered: a key answered once is answered again even while
//! the simulated outage lasts, as a real gateway returns the first result of a key it stored.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::{ConfigError, Settings};

/// Places a hold for `amount_cents` on the card behind `token`.
#[derive(Debug, Clone, PartialEq)]
pub struct HoldRequest {
    pub idempotency_key: String,
    pub token: String,
    pub amount_cents: u64,
}

/// The gateway's answer to a hold.
#[derive(Debug, Clone, PartialEq)]
pub enum HoldOutcome {
    Approved { hold_id: String },
    Declined { code: String, message: String },
}

/// Captures (`capture`) or releases (`void`) a hold.
#[derive(Debug, Clone, PartialEq)]
pub struct SettleRequest {
    pub idempotency_key: String,
    pub hold_id: String,
    pub amount_cents: u64,
}

/// Gives back `amount_cents` of what was captured on a hold. `captured_cents` is the capture
/// as payment recorded it: the simulated gateway goes by it for a capture it did not make
/// itself (another process made it); a real gateway knows its charges.
#[derive(Debug, Clone, PartialEq)]
pub struct RefundRequest {
    pub idempotency_key: String,
    pub hold_id: String,
    pub amount_cents: u64,
    pub captured_cents: u64,
}

/// The code of a refund the gateway refuses because it would give back more than was captured.
pub const REFUND_TOO_LARGE: &str = "refund_exceeds_charge";

/// Why a gateway call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// Timeouts, outages: try again later with the same idempotency key.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
    /// The gateway answered and refused; asking again gets the same answer.
    #[error("payment gateway refused ({code}): {message}")]
    Refused { code: String, message: String },
}

/// A payment gateway.
pub trait Gateway: Send + Sync + 'static {
    /// Short name for logs.
    fn name(&self) -> &'static str;

    fn hold(
        &self,
        request: &HoldRequest,
    ) -> impl Future<Output = Result<HoldOutcome, GatewayError>> + Send;

    fn capture(
        &self,
        request: &SettleRequest,
    ) -> impl Future<Output = Result<(), GatewayError>> + Send;

    fn void(
        &self,
        request: &SettleRequest,
    ) -> impl Future<Output = Result<(), GatewayError>> + Send;

    /// Gives captured money back; never more than the hold's capture, all refunds together.
    fn refund(
        &self,
        request: &RefundRequest,
    ) -> impl Future<Output = Result<(), GatewayError>> + Send;
}

/// A token whose holds succeed but whose captures are refused (to exercise the alert path).
pub const CAPTURE_FAILS_TOKEN: &str = "tok_capture_fails";

/// A token the gateway itself refuses every call for (a gateway error, not a card decline),
/// to exercise the path of an operation that fails for good.
pub const GATEWAY_REJECTS_TOKEN: &str = "tok_gateway_rejects";

/// Prefix of the hold ids placed on [`CAPTURE_FAILS_TOKEN`].
const FRAGILE_HOLD: &str = "hold_fragile_";

/// What the simulated gateway decides for a hold on `token`: `tok_chargeDeclined` and
/// `tok_insufficient_funds` decline, [`GATEWAY_REJECTS_TOKEN`] is refused, anything else that
/// starts with `tok_` approves (holds on [`CAPTURE_FAILS_TOKEN`] cannot be captured later),
/// and anything else is not a token.
pub fn decide_hold(idempotency_key: &str, token: &str) -> Result<HoldOutcome, GatewayError> {
    let declined = |code: &str, message: &str| {
        Ok(HoldOutcome::Declined {
            code: code.into(),
            message: message.into(),
        })
    };
    match token {
        GATEWAY_REJECTS_TOKEN => Err(GatewayError::Refused {
            code: "gateway_error".into(),
            message: "The gateway rejected the request.".into(),
        }),
        "tok_chargeDeclined" => declined("card_declined", "Your card was declined."),
        "tok_insufficient_funds" => {
            declined("insufficient_funds", "Your card has insufficient funds.")
        }
        t if t.starts_with("tok_") => {
            // The hold id says whether its capture will fail, so the gateway needs no memory.
            let prefix = if t == CAPTURE_FAILS_TOKEN {
                FRAGILE_HOLD
            } else {
                "hold_"
            };
            let hash = fnv1a(&[idempotency_key.as_bytes()]);
            Ok(HoldOutcome::Approved {
                hold_id: format!("{prefix}{hash:016x}"),
            })
        }
        _ => declined("invalid_token", "The payment method is not a known token."),
    }
}

/// `RIDESAGA_GATEWAY_LATENCY` and `RIDESAGA_GATEWAY_FAILURE_RATE`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GatewayConfig {
    /// Added to every call.
    pub latency: Duration,
    /// Share of calls (0.0 to 1.0) that fail as if the gateway were down; deterministic per
    /// idempotency key and attempt, so 1.0 always fails and 0.0 never does.
    pub failure_rate: f64,
}

impl GatewayConfig {
    pub fn load(s: &Settings) -> Result<Self, ConfigError> {
        let name = "RIDESAGA_GATEWAY_FAILURE_RATE";
        let failure_rate: f64 = s.get(name, 0.0)?;
        if !(0.0..=1.0).contains(&failure_rate) {
            return Err(ConfigError {
                name: name.into(),
                value: failure_rate.to_string(),
                problem: "must be between 0.0 and 1.0".into(),
            });
        }
        Ok(GatewayConfig {
            latency: s.duration("RIDESAGA_GATEWAY_LATENCY", Duration::ZERO)?,
            failure_rate,
        })
    }
}

/// Idempotency keys the ledger remembers before it starts over (bounded memory; answers do not
/// depend on it, only whether an outage can hit a key answered before).
const LEDGER_LIMIT: usize = 100_000;

/// The built-in gateway: test tokens, injected latency and outages, and a ledger of calls.
#[derive(Debug, Default)]
pub struct SimulatedGateway {
    config: GatewayConfig,
    /// What this process knows of each idempotency key.
    calls: Mutex<HashMap<String, Calls>>,
    /// What this process captured and refunded, per hold.
    money: Mutex<Money>,
}

/// The captures and refunds the simulated gateway made, so that it never refunds more than a
/// hold's capture and answers a refund's key again as it did the first time.
#[derive(Debug, Default)]
struct Money {
    /// Hold id -> amount captured.
    captured: HashMap<String, u64>,
    /// Refund idempotency key -> (hold id, amount, whether it was made).
    refunds: HashMap<String, (String, u64, bool)>,
}

/// One idempotency key in the ledger.
#[derive(Debug, Default, Clone, Copy)]
struct Calls {
    /// Calls made (the "attempt" the outage hash uses).
    made: u32,
    /// Whether one got past the outage: the key has its answer, which every later call gets.
    answered: bool,
}

impl SimulatedGateway {
    pub fn new(config: GatewayConfig) -> Self {
        SimulatedGateway {
            config,
            calls: Mutex::default(),
            money: Mutex::default(),
        }
    }

    /// How often this process called the gateway with `idempotency_key` (failed calls too).
    pub fn calls(&self, idempotency_key: &str) -> u32 {
        let calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        calls.get(idempotency_key).map_or(0, |c| c.made)
    }

    /// Latency, then an outage if this attempt is one of the unlucky ones, unless the key was
    /// answered before: its answer stands, outage or not.
    async fn call(&self, idempotency_key: &str) -> Result<(), GatewayError> {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if calls.len() >= LEDGER_LIMIT {
            calls.clear();
        }
        let key = calls.entry(idempotency_key.to_owned()).or_default();
        key.made += 1;
        if key.answered {
            return Ok(());
        }
        let attempt = key.made;
        let roll =
            fnv1a(&[idempotency_key.as_bytes(), &attempt.to_le_bytes()]) as f64 / u64::MAX as f64;
        if self.config.failure_rate >= 1.0 || roll < self.config.failure_rate {
            return Err(GatewayError::Unavailable(format!(
                "simulated outage on attempt {attempt} of {idempotency_key}"
            )));
        }
        key.answered = true;
        Ok(())
    }

    /// The same gateway with another configuration (an outage starting or ending), keeping
    /// what it answered.
    pub fn reconfigure(&mut self, config: GatewayConfig) {
        self.config = config;
    }
}

impl Gateway for SimulatedGateway {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn hold(&self, request: &HoldRequest) -> Result<HoldOutcome, GatewayError> {
        self.call(&request.idempotency_key).await?;
        decide_hold(&request.idempotency_key, &request.token)
    }

    async fn capture(&self, request: &SettleRequest) -> Result<(), GatewayError> {
        self.call(&request.idempotency_key).await?;
        if request.hold_id.starts_with(FRAGILE_HOLD) {
            return Err(GatewayError::Refused {
                code: "capture_refused".into(),
                message: "The issuer refused the capture.".into(),
            });
        }
        let mut money = self.money.lock().unwrap_or_else(PoisonError::into_inner);
        if money.captured.len() >= LEDGER_LIMIT {
            money.captured.clear();
        }
        money
            .captured
            .insert(request.hold_id.clone(), request.amount_cents);
        Ok(())
    }

    async fn void(&self, request: &SettleRequest) -> Result<(), GatewayError> {
        self.call(&request.idempotency_key).await
    }

    async fn refund(&self, request: &RefundRequest) -> Result<(), GatewayError> {
        self.call(&request.idempotency_key).await?;
        let too_large = |refunded: u64, captured: u64| GatewayError::Refused {
            code: REFUND_TOO_LARGE.into(),
            message: format!(
                "A refund of {} cents would bring the refunds to {} cents, more than the {} \
                 cents captured.",
                request.amount_cents,
                refunded + request.amount_cents,
                captured
            ),
        };
        let mut money = self.money.lock().unwrap_or_else(PoisonError::into_inner);
        let captured = money
            .captured
            .get(&request.hold_id)
            .copied()
            .unwrap_or(request.captured_cents);
        let refunded_by = |money: &Money| -> u64 {
            money
                .refunds
                .iter()
                .filter(|(key, (hold, _, made))| {
                    *made && *hold == request.hold_id && **key != request.idempotency_key
                })
                .map(|(_, (_, amount, _))| *amount)
                .sum()
        };
        if let Some((_, _, made)) = money.refunds.get(&request.idempotency_key) {
            // The key's first answer stands.
            return if *made {
                Ok(())
            } else {
                Err(too_large(refunded_by(&money), captured))
            };
        }
        if money.refunds.len() >= LEDGER_LIMIT {
            money.refunds.clear();
        }
        let refunded = refunded_by(&money);
        let made = refunded.saturating_add(request.amount_cents) <= captured;
        money.refunds.insert(
            request.idempotency_key.clone(),
            (request.hold_id.clone(), request.amount_cents, made),
        );
        if made {
            Ok(())
        } else {
            Err(too_large(refunded, captured))
        }
    }
}

/// FNV-1a, 64-bit: stable across builds, enough to spread keys (not a security boundary).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(token: &str) -> HoldRequest {
        HoldRequest {
            idempotency_key: "r_1/hold".into(),
            token: token.into(),
            amount_cents: 1000,
        }
    }

    #[tokio::test]
    async fn test_tokens_approve_or_decline_with_their_codes() {
        let gateway = SimulatedGateway::default();
        for (token, code) in [
            ("tok_chargeDeclined", "card_declined"),
            ("tok_insufficient_funds", "insufficient_funds"),
            ("visa", "invalid_token"),
        ] {
            let outcome = gateway.hold(&hold(token)).await.unwrap();
            assert!(matches!(outcome, HoldOutcome::Declined { code: c, .. } if c == code));
        }
        for token in ["tok_visa", "tok_mastercard"] {
            let outcome = gateway.hold(&hold(token)).await.unwrap();
            assert!(matches!(outcome, HoldOutcome::Approved { .. }), "{token}");
        }
    }

    #[tokio::test]
    async fn the_same_idempotency_key_gets_the_same_hold() {
        let gateway = SimulatedGateway::default();
        let first = gateway.hold(&hold("tok_visa")).await.unwrap();
        let again = SimulatedGateway::default().hold(&hold("tok_visa")).await;
        assert_eq!(again.unwrap(), first);
        assert_eq!(gateway.calls("r_1/hold"), 1);
    }

    #[tokio::test]
    async fn the_gateway_rejects_token_is_refused_on_every_call_not_declined() {
        let gateway = SimulatedGateway::default();
        for _ in 0..2 {
            let err = gateway
                .hold(&hold(GATEWAY_REJECTS_TOKEN))
                .await
                .unwrap_err();
            assert!(
                matches!(&err, GatewayError::Refused { code, .. } if code == "gateway_error"),
                "{err:?}"
            );
        }
        assert_eq!(gateway.calls("r_1/hold"), 2);
    }

    #[tokio::test]
    async fn an_outage_after_a_key_was_answered_still_returns_the_first_answer() {
        let mut gateway = SimulatedGateway::default();
        let first = gateway.hold(&hold("tok_visa")).await.unwrap();
        let rejects = HoldRequest {
            idempotency_key: "r_3/hold".into(),
            ..hold(GATEWAY_REJECTS_TOKEN)
        };
        let refused = gateway.hold(&rejects).await.unwrap_err();
        let capture = SettleRequest {
            idempotency_key: "r_1/capture".into(),
            hold_id: "hold_1".into(),
            amount_cents: 1000,
        };
        gateway.capture(&capture).await.unwrap();
        gateway.reconfigure(GatewayConfig {
            latency: Duration::ZERO,
            failure_rate: 1.0,
        });
        for _ in 0..3 {
            assert_eq!(gateway.hold(&hold("tok_visa")).await.unwrap(), first);
            assert_eq!(gateway.capture(&capture).await, Ok(()));
            assert_eq!(gateway.hold(&rejects).await.unwrap_err(), refused);
        }
        // A key asked for the first time during the outage gets the outage.
        let other = HoldRequest {
            idempotency_key: "r_2/hold".into(),
            ..hold("tok_visa")
        };
        assert!(matches!(
            gateway.hold(&other).await,
            Err(GatewayError::Unavailable(_))
        ));
        assert_eq!(gateway.calls("r_1/hold"), 4);
    }

    #[tokio::test]
    async fn a_failure_rate_of_one_always_fails_and_zero_never_does() {
        let down = SimulatedGateway::new(GatewayConfig {
            latency: Duration::ZERO,
            failure_rate: 1.0,
        });
        for _ in 0..3 {
            let err = down.hold(&hold("tok_visa")).await.unwrap_err();
            assert!(matches!(err, GatewayError::Unavailable(_)));
        }
        assert_eq!(down.calls("r_1/hold"), 3);
        assert!(
            SimulatedGateway::default()
                .hold(&hold("tok_visa"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn a_partial_failure_rate_eventually_lets_a_retry_through() {
        let flaky = SimulatedGateway::new(GatewayConfig {
            latency: Duration::ZERO,
            failure_rate: 0.5,
        });
        let mut attempts = 0;
        while flaky.hold(&hold("tok_visa")).await.is_err() {
            attempts += 1;
            assert!(attempts < 64, "never succeeded");
        }
    }

    fn refund(key: &str, amount_cents: u64) -> RefundRequest {
        RefundRequest {
            idempotency_key: key.into(),
            hold_id: "hold_1".into(),
            amount_cents,
            captured_cents: 1000,
        }
    }

    #[tokio::test]
    async fn refunds_never_give_back_more_than_the_capture_and_a_key_refunds_once() {
        let gateway = SimulatedGateway::default();
        let capture = SettleRequest {
            idempotency_key: "r_1/capture".into(),
            hold_id: "hold_1".into(),
            amount_cents: 800,
        };
        gateway.capture(&capture).await.unwrap();
        // The gateway's own record of the capture (800) wins over the request's (1000).
        gateway.refund(&refund("r_1/refund/a", 500)).await.unwrap();
        gateway.refund(&refund("r_1/refund/a", 500)).await.unwrap();
        let refused = gateway
            .refund(&refund("r_1/refund/b", 301))
            .await
            .unwrap_err();
        assert!(
            matches!(&refused, GatewayError::Refused { code, .. } if code == REFUND_TOO_LARGE),
            "{refused:?}"
        );
        // A refused key stays refused, even once the amount would fit.
        assert_eq!(
            gateway.refund(&refund("r_1/refund/b", 301)).await,
            Err(refused)
        );
        gateway.refund(&refund("r_1/refund/c", 300)).await.unwrap();
        assert!(gateway.refund(&refund("r_1/refund/d", 1)).await.is_err());
    }

    #[tokio::test]
    async fn a_refund_of_a_capture_made_elsewhere_goes_by_the_stated_capture() {
        let gateway = SimulatedGateway::default();
        gateway.refund(&refund("r_2/refund/a", 1000)).await.unwrap();
        assert!(gateway.refund(&refund("r_2/refund/b", 1)).await.is_err());
    }

    #[test]
    fn the_failure_rate_setting_is_checked() {
        let s = Settings::from_pairs([("RIDESAGA_GATEWAY_FAILURE_RATE", "1.5")]);
        let err = GatewayConfig::load(&s).unwrap_err().to_string();
        assert!(err.contains("RIDESAGA_GATEWAY_FAILURE_RATE"), "{err}");
        let s = Settings::from_pairs([
            ("RIDESAGA_GATEWAY_FAILURE_RATE", "0.25"),
            ("RIDESAGA_GATEWAY_LATENCY", "20ms"),
        ]);
        let config = GatewayConfig::load(&s).unwrap();
        assert_eq!(config.failure_rate, 0.25);
        assert_eq!(config.latency, Duration::from_millis(20));
    }
}
