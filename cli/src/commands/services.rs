//! `ridectl services`: the running worker instances and their stats, discovered through the
//! NATS service API (`$SRV.INFO`, `$SRV.STATS`), so operators see which replicas are up without
//! Kubernetes. Every worker registers as `ridesaga-<service>` with an endpoint `status` whose
//! stats data counts handled, failed, redelivered, dead-lettered and in-flight messages.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use ridesaga_schemas::Service;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Ctx;
use crate::cli::ServicesArgs;
use crate::output::{Paint, Table};
use ridesaga_schemas::duration::format_duration;

/// The name prefix every Ridesaga worker registers with.
const PREFIX: &str = "ridesaga-";

#[derive(Debug, Deserialize)]
struct InfoReply {
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    metadata: Option<HashMap<String, String>>,
}

#[derive(Debug, Deserialize)]
struct StatsReply {
    name: String,
    id: String,
    #[serde(default)]
    version: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    started: Option<OffsetDateTime>,
    #[serde(default)]
    endpoints: Vec<EndpointStats>,
}

#[derive(Debug, Deserialize)]
struct EndpointStats {
    name: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// The counters a worker reports in its `status` endpoint's data.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Counters {
    pub handled: u64,
    pub failed: u64,
    pub redelivered: u64,
    pub dead_lettered: u64,
    pub in_flight: u64,
}

/// One running worker.
#[derive(Debug, Serialize)]
pub struct Instance {
    pub service: String,
    pub instance: String,
    pub id: String,
    pub version: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub started: Option<OffsetDateTime>,
    pub stats: Counters,
}

pub async fn run(ctx: &Ctx, args: ServicesArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let (infos, stats) = tokio::try_join!(
        gather(&nats.client, "$SRV.INFO", args.wait),
        gather(&nats.client, "$SRV.STATS", args.wait),
    )?;
    let infos: HashMap<String, InfoReply> = infos
        .iter()
        .filter_map(|b| serde_json::from_slice::<InfoReply>(b).ok())
        .map(|i| (i.id.clone(), i))
        .collect();
    let mut instances: Vec<Instance> = stats
        .iter()
        .filter_map(|b| serde_json::from_slice::<StatsReply>(b).ok())
        .filter(|s| s.name.starts_with(PREFIX))
        .map(|s| instance(s, &infos))
        .collect();
    instances.sort_by(|a, b| (&a.service, &a.instance).cmp(&(&b.service, &b.instance)));

    if ctx.out.is_json() {
        ctx.out.json(&instances)?;
    } else if !instances.is_empty() {
        print_table(ctx, &instances);
    }
    let mut up: BTreeMap<&str, usize> = BTreeMap::new();
    for i in &instances {
        *up.entry(i.service.as_str()).or_default() += 1;
    }
    let missing: Vec<&str> = Service::ALL
        .iter()
        .map(|s| s.name())
        .filter(|s| !up.contains_key(s))
        .collect();
    if !missing.is_empty() {
        crate::output::warn(format!(
            "no instance answered within {} for: {}",
            format_duration(args.wait),
            missing.join(", ")
        ));
        if instances.is_empty() {
            crate::output::note("hint: start the workers (scripts/up), or raise --wait");
        }
    }
    Ok(())
}

fn instance(s: StatsReply, infos: &HashMap<String, InfoReply>) -> Instance {
    let metadata = infos
        .get(&s.id)
        .and_then(|i| i.metadata.clone())
        .unwrap_or_default();
    let service = metadata
        .get("service")
        .cloned()
        .unwrap_or_else(|| s.name.trim_start_matches(PREFIX).to_owned());
    let version = if s.version.is_empty() {
        infos
            .get(&s.id)
            .map(|i| i.version.clone())
            .unwrap_or_default()
    } else {
        s.version.clone()
    };
    let stats = s
        .endpoints
        .iter()
        .find(|e| e.name == "status")
        .and_then(|e| e.data.clone())
        .and_then(|d| serde_json::from_value(d).ok())
        .unwrap_or_default();
    Instance {
        service,
        instance: metadata
            .get("instance")
            .cloned()
            .unwrap_or_else(|| s.id.clone()),
        id: s.id,
        version,
        started: s.started,
        stats,
    }
}

fn print_table(ctx: &Ctx, instances: &[Instance]) {
    let now = OffsetDateTime::now_utc();
    let mut table = Table::new([
        "SERVICE",
        "INSTANCE",
        "VERSION",
        "UP",
        "HANDLED",
        "FAILED",
        "REDELIVERED",
        "DEAD",
        "IN FLIGHT",
    ]);
    for i in instances {
        let up = i
            .started
            .and_then(|t| Duration::try_from(now - t).ok())
            .map_or_else(|| "-".to_string(), format_duration);
        let dead = if i.stats.dead_lettered > 0 {
            ctx.out
                .paint(Paint::Red, &i.stats.dead_lettered.to_string())
        } else {
            "0".to_string()
        };
        table.row([
            i.service.clone(),
            i.instance.clone(),
            i.version.clone(),
            up,
            i.stats.handled.to_string(),
            i.stats.failed.to_string(),
            i.stats.redelivered.to_string(),
            dead,
            i.stats.in_flight.to_string(),
        ]);
    }
    ctx.out.table(&table);
}

/// Sends one request to every responder on `subject` and collects answers for `wait`.
async fn gather(
    client: &async_nats::Client,
    subject: &str,
    wait: Duration,
) -> anyhow::Result<Vec<bytes::Bytes>> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .context("could not subscribe for service replies")?;
    client
        .publish_with_reply(subject.to_owned(), inbox, bytes::Bytes::new())
        .await
        .with_context(|| format!("could not send {subject}"))?;
    client.flush().await.context("could not flush")?;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, replies.next()).await {
        answers.push(message.payload);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stats_reply_becomes_an_instance_with_its_counters() {
        let info: InfoReply = serde_json::from_str(
            r#"{"type":"io.nats.micro.v1.info_response","name":"ridesaga-ride","id":"abc",
               "version":"0.1.0","description":"","metadata":{"service":"ride","instance":"ride-7"},
               "endpoints":[]}"#,
        )
        .unwrap();
        let stats: StatsReply = serde_json::from_str(
            r#"{"type":"io.nats.micro.v1.stats_response","name":"ridesaga-ride","id":"abc",
               "version":"0.1.0","started":"2025-01-01T00:00:00Z",
               "endpoints":[{"name":"status","subject":"ridesaga.ride.status","queue_group":"q",
                 "num_requests":0,"num_errors":0,"processing_time":0,"average_processing_time":0,
                 "data":{"handled":5,"failed":1,"redelivered":2,"dead_lettered":0,"in_flight":3}}]}"#,
        )
        .unwrap();
        let infos = HashMap::from([("abc".to_string(), info)]);
        let i = instance(stats, &infos);
        assert_eq!(
            (i.service.as_str(), i.instance.as_str()),
            ("ride", "ride-7")
        );
        assert_eq!(
            (i.stats.handled, i.stats.failed, i.stats.in_flight),
            (5, 1, 3)
        );
    }
}
