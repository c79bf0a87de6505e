//! Where a saga's time goes, hop by hop: for every message in a range of the saga stream, the
//! time the server stored it minus the time it stored the message that caused it (the
//! envelope's `causation_id`), grouped by the service that produced it and its type. Both times
//! come from the server's clock, so the figures need no clock agreement between processes; a
//! hop includes the delivery to the service, its transaction and its publish.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use ridesaga_schemas::{Envelope, streams};

use crate::results::{Hop, Summary};

/// How long reading the stream may stall before the scan gives up.
const READ_STALL: Duration = Duration::from_secs(10);

/// One stored message, as far as hops are concerned.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: String,
    pub cause: Option<String>,
    pub producer: String,
    pub kind: String,
    /// When the server stored it, in milliseconds since the Unix epoch.
    pub stored_ms: f64,
}

/// Reads the saga stream from `first_sequence` to the last message stored when the scan
/// begins, and returns the hops among those messages.
pub async fn measure(js: &jetstream::Context, first_sequence: u64) -> anyhow::Result<Vec<Hop>> {
    Ok(hops(&read(js, first_sequence).await?))
}

async fn read(js: &jetstream::Context, first_sequence: u64) -> anyhow::Result<Vec<Stored>> {
    let mut stream = js
        .get_stream(streams::SAGA_STREAM)
        .await
        .context("opening the saga stream")?;
    let last = stream.info().await?.state.last_sequence;
    if last < first_sequence {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: first_sequence,
            },
            ..Default::default()
        })
        .await
        .context("creating a consumer to read the saga stream")?;
    let mut messages = consumer.messages().await?;
    let mut stored = Vec::new();
    loop {
        let next = tokio::time::timeout(READ_STALL, messages.next())
            .await
            .map_err(|_| anyhow::anyhow!("reading the saga stream stalled"))?;
        let Some(message) = next else { break };
        let message = message.context("reading the saga stream")?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let sequence = info.stream_sequence;
        let stored_ms = info.published.unix_timestamp_nanos() as f64 / 1e6;
        if let Ok(envelope) = Envelope::decode(&message.subject, &message.payload) {
            stored.push(Stored {
                id: envelope.id.to_string(),
                cause: envelope.causation_id.as_ref().map(ToString::to_string),
                producer: envelope.producer.clone(),
                kind: envelope.kind().to_string(),
                stored_ms,
            });
        }
        if sequence >= last {
            break;
        }
    }
    Ok(stored)
}

/// The hops among `stored`: every message whose cause is among them too.
pub fn hops(stored: &[Stored]) -> Vec<Hop> {
    let at: HashMap<&str, f64> = stored
        .iter()
        .map(|s| (s.id.as_str(), s.stored_ms))
        .collect();
    let mut samples: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for message in stored {
        let Some(cause_at) = message.cause.as_deref().and_then(|c| at.get(c)) else {
            continue;
        };
        samples
            .entry((message.producer.as_str(), message.kind.as_str()))
            .or_default()
            .push(message.stored_ms - cause_at);
    }
    samples
        .into_iter()
        .filter_map(|((producer, effect), samples)| {
            Some(Hop {
                producer: producer.to_owned(),
                effect: effect.to_owned(),
                summary: Summary::of(&samples)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: &str, cause: Option<&str>, producer: &str, kind: &str, ms: f64) -> Stored {
        Stored {
            id: id.into(),
            cause: cause.map(Into::into),
            producer: producer.into(),
            kind: kind.into(),
            stored_ms: ms,
        }
    }

    #[test]
    fn a_hop_is_the_store_time_after_its_cause_by_producer_and_type() {
        let log = [
            stored("c1", None, "ridectl", "cmd.ride.request", 100.0),
            stored("e1", Some("c1"), "ride", "evt.ride.requested", 101.5),
            stored("e2", Some("e1"), "fraud", "evt.fraud.cleared", 104.0),
            stored("c2", None, "ridectl", "cmd.ride.request", 200.0),
            stored("e3", Some("c2"), "ride", "evt.ride.requested", 200.5),
            // Its cause is outside the range read: no hop.
            stored("e4", Some("gone"), "payment", "evt.payment.captured", 300.0),
        ];
        let hops = hops(&log);
        assert_eq!(hops.len(), 2);
        let fraud = hops.iter().find(|h| h.producer == "fraud").unwrap();
        assert_eq!(fraud.effect, "evt.fraud.cleared");
        assert_eq!(fraud.summary.count, 1);
        assert!((fraud.summary.p50 - 2.5).abs() < 1e-9);
        let ride = hops.iter().find(|h| h.producer == "ride").unwrap();
        assert_eq!(ride.summary.count, 2);
        assert!((ride.summary.max - 1.5).abs() < 1e-9);
    }
}
