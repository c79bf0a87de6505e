//! `ridectl step-down`: moves a replicated stream's or consumer's leader to another node of the
//! cluster (`$JS.API.STREAM.LEADER.STEPDOWN.<stream>`,
//! `$JS.API.CONSUMER.LEADER.STEPDOWN.<stream>.<consumer>`) and reports the old and new leader.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use async_nats::jetstream::response::Response;
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::cli::StepDownArgs;
use crate::exit::{HintExt, TimedOut};
use crate::nats::Nats;

const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long one look-up of the new leader may take: without a leader nobody answers, and the
/// request would otherwise wait for the client's whole request timeout.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// What steps down: a stream's leader, or one of its consumers'.
#[derive(Debug, Clone)]
struct Target {
    stream: String,
    consumer: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.consumer {
            None => write!(f, "stream {}", self.stream),
            Some(consumer) => write!(f, "consumer {}/{consumer}", self.stream),
        }
    }
}

impl Target {
    /// The JetStream API subject, without the `$JS.API.` prefix.
    fn subject(&self) -> String {
        match &self.consumer {
            None => format!("STREAM.LEADER.STEPDOWN.{}", self.stream),
            Some(consumer) => format!("CONSUMER.LEADER.STEPDOWN.{}.{consumer}", self.stream),
        }
    }

    /// The `server_name` of the current leader; `None` while there is none (an election), and
    /// an error for a target with a single replica (on a server without a cluster, say).
    async fn leader(&self, nats: &Nats) -> anyhow::Result<Option<String>> {
        let stream = nats.stream(&self.stream).await?;
        let cluster = match &self.consumer {
            None => stream.cached_info().cluster.clone(),
            Some(consumer) => {
                stream
                    .consumer_info(consumer)
                    .await
                    .with_context(|| format!("could not read consumer {}/{consumer}", self.stream))
                    .hint("`ridectl consumers` lists the service consumers")?
                    .cluster
            }
        };
        let Some(cluster) = cluster.filter(|c| !c.replicas.is_empty()) else {
            return Err(anyhow!(
                "{self} has a single replica: no other node could lead it"
            ))
            .hint(
                "replicas take a JetStream cluster (scripts/up --cluster) and \
                 `ridectl provision --replicas 3`",
            );
        };
        Ok(cluster.leader.filter(|leader| !leader.is_empty()))
    }
}

/// The server's answer to a step-down request.
#[derive(Debug, Deserialize)]
struct StepDownResponse {
    #[serde(default)]
    success: bool,
}

#[derive(Debug, Serialize)]
struct StepDownReport {
    stream: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    consumer: Option<String>,
    old_leader: String,
    new_leader: String,
}

pub async fn step_down(ctx: &Ctx, args: StepDownArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let target = Target {
        stream: args.stream,
        consumer: args.consumer,
    };
    let Some(old_leader) = target.leader(&nats).await? else {
        bail!("{target} has no leader right now (an election is under way); try again");
    };
    let response: Response<StepDownResponse> = nats
        .js
        .request(target.subject(), &serde_json::json!({}))
        .await
        .with_context(|| format!("no answer to the step-down request for {target}"))?;
    match response {
        Response::Err { error } => {
            return Err(anyhow!("{error}"))
                .with_context(|| format!("the server refused to move the leader of {target}"))
                .hint("every other replica may be offline or behind: see `ridectl streams`");
        }
        Response::Ok(StepDownResponse { success: false }) => {
            bail!("the server did not move the leader of {target}");
        }
        Response::Ok(_) => {}
    }
    let deadline = tokio::time::Instant::now() + args.timeout;
    let mut last_seen = format!("leader {old_leader}");
    let new_leader = loop {
        // Look-ups fail or go unanswered while the replicas elect: ask until the deadline.
        match tokio::time::timeout(LOOKUP_TIMEOUT, target.leader(&nats)).await {
            Ok(Ok(Some(leader))) if leader != old_leader => break leader,
            Ok(Ok(Some(leader))) => last_seen = format!("leader {leader}"),
            Ok(Ok(None)) => last_seen = "no leader yet".into(),
            Ok(Err(e)) => last_seen = format!("{e:#}"),
            Err(_) => last_seen = "no answer while the replicas elect".into(),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TimedOut {
                waiting_for: format!("a new leader of {target}"),
                after: args.timeout,
                last_seen,
            }
            .into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    let report = StepDownReport {
        stream: target.stream.clone(),
        consumer: target.consumer.clone(),
        old_leader,
        new_leader,
    };
    if ctx.out.is_json() {
        return ctx.out.json(&report);
    }
    ctx.out.line(format!(
        "{target}: leader {} -> {}",
        report.old_leader, report.new_leader
    ));
    Ok(())
}
