//! A ride's pending effects (calls to the outside world that a service recorded and has not
//! settled yet), asked of the running workers through their service API, so that a stuck
//! gateway shows in `ride show` and `saga trace`.

use std::time::Duration;

use ridesaga_schemas::{RideId, Service};
use serde::{Deserialize, Serialize};

use crate::nats::Nats;
use crate::output::Table;

/// How long each service may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// One pending effect, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingEffect {
    pub service: Option<String>,
    pub kind: String,
    pub id: String,
    pub attempts: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    pub next_at: String,
    pub deadline: String,
}

/// What the workers said about a ride's effects.
#[derive(Debug, Default, Serialize)]
pub struct Effects {
    pub pending: Vec<PendingEffect>,
    /// Services that did not answer (no replica running, or too slow): their effects are not
    /// known.
    pub unanswered: Vec<String>,
}

/// Asks every service's workers for `ride`'s pending effects.
pub async fn of_ride(nats: &Nats, ride: &RideId) -> Effects {
    let asked = Service::ALL.map(|service| {
        let subject = format!("ridesaga.effects.{}", service.name());
        let reply = nats
            .client
            .request(subject, ride.as_str().to_owned().into_bytes().into());
        async move { (service, tokio::time::timeout(ASK_TIMEOUT, reply).await) }
    });
    let mut effects = Effects::default();
    for (service, answer) in futures_util::future::join_all(asked).await {
        match answer {
            Ok(Ok(reply)) => match serde_json::from_slice::<Vec<PendingEffect>>(&reply.payload) {
                Ok(list) => effects.pending.extend(list.into_iter().map(|mut e| {
                    e.service = Some(service.name().to_owned());
                    e
                })),
                Err(_) => effects.unanswered.push(service.name().to_owned()),
            },
            _ => effects.unanswered.push(service.name().to_owned()),
        }
    }
    effects
}

/// The pending effects as table rows `FIELD`/`VALUE` for `ride show`.
pub fn rows(effects: &Effects, table: &mut Table) {
    for effect in &effects.pending {
        table.row(["pending".to_string(), describe(effect)]);
    }
    if !effects.unanswered.is_empty() {
        table.row([
            "effects".to_string(),
            format!("unknown: no answer from {}", effects.unanswered.join(", ")),
        ]);
    }
}

/// `payment.hold r_1/hold: 3 attempts, next at ..., deadline ...; last error: ...`.
pub fn describe(effect: &PendingEffect) -> String {
    let mut text = format!(
        "{} {}: {} attempt{}, next at {}, deadline {}",
        effect.kind,
        effect.id,
        effect.attempts,
        if effect.attempts == 1 { "" } else { "s" },
        effect.next_at,
        effect.deadline
    );
    if let Some(error) = &effect.last_error {
        text.push_str(&format!("; last error: {error}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_effect_reads_as_a_line_with_its_last_error() {
        let reply = r#"[{"kind":"payment.hold","id":"r_1/hold","attempts":2,
            "last_error":"payment gateway unavailable","next_at":"2026-12-06T06:00:01Z",
            "deadline":"2026-12-06T06:02:00Z"}]"#;
        let list: Vec<PendingEffect> = serde_json::from_str(reply).unwrap();
        assert_eq!(
            describe(&list[0]),
            "payment.hold r_1/hold: 2 attempts, next at 2026-12-06T06:00:01Z, deadline \
             2026-12-06T06:02:00Z; last error: payment gateway unavailable"
        );
    }
}
