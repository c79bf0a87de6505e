//! The five service consumers as the server counts them: deliveries (the consumer sequence,
//! which counts redeliveries too), pending and ack pending. Two snapshots give the deliveries
//! of a phase; zero pending everywhere means the system is quiet.

use std::collections::BTreeMap;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use ridesaga_schemas::Service;
use ridesaga_schemas::streams::SAGA_STREAM;

/// One consumer's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub delivered: u64,
    pub pending: u64,
    pub ack_pending: u64,
}

impl From<&consumer::Info> for Counters {
    fn from(info: &consumer::Info) -> Self {
        Counters {
            delivered: info.delivered.consumer_sequence,
            pending: info.num_pending,
            ack_pending: info.num_ack_pending as u64,
        }
    }
}

/// Every service consumer's counters.
pub type Snapshot = BTreeMap<Service, Counters>;

/// Reads the counters of the five service consumers.
pub async fn snapshot(js: &jetstream::Context) -> anyhow::Result<Snapshot> {
    let stream = js
        .get_stream(SAGA_STREAM)
        .await
        .with_context(|| format!("looking up stream {SAGA_STREAM}"))?;
    let mut out = Snapshot::new();
    for service in Service::ALL {
        let name = service.consumer_name();
        let info = stream
            .consumer_info(&name)
            .await
            .with_context(|| format!("reading consumer {name}"))?;
        out.insert(service, Counters::from(&info));
    }
    Ok(out)
}

/// Nothing is waiting for or being handled by any service.
pub fn is_quiet(snapshot: &Snapshot) -> bool {
    snapshot
        .values()
        .all(|c| c.pending == 0 && c.ack_pending == 0)
}

/// Deliveries per service between two snapshots.
pub fn deliveries_between(before: &Snapshot, after: &Snapshot) -> BTreeMap<Service, u64> {
    after
        .iter()
        .map(|(service, a)| {
            let b = before.get(service).copied().unwrap_or_default();
            (*service, a.delivered.saturating_sub(b.delivered))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(delivered: u64, pending: u64) -> Counters {
        Counters {
            delivered,
            pending,
            ..Counters::default()
        }
    }

    #[test]
    fn deliveries_are_the_difference_of_the_consumer_sequences() {
        let before = Snapshot::from([
            (Service::Ride, counters(10, 0)),
            (Service::Fraud, counters(5, 0)),
        ]);
        let after = Snapshot::from([
            (Service::Ride, counters(70, 0)),
            (Service::Fraud, counters(25, 0)),
            (Service::Payment, counters(8, 0)),
        ]);
        let deliveries = deliveries_between(&before, &after);
        assert_eq!(deliveries[&Service::Ride], 60);
        assert_eq!(deliveries[&Service::Fraud], 20);
        assert_eq!(deliveries[&Service::Payment], 8);
    }

    #[test]
    fn any_pending_message_means_not_quiet() {
        let mut snapshot = Snapshot::from([(Service::Ride, counters(1, 0))]);
        assert!(is_quiet(&snapshot));
        snapshot.insert(Service::Driver, counters(1, 3));
        assert!(!is_quiet(&snapshot));
    }
}
