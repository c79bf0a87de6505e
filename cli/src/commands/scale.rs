//! `ridectl scale plan`: each service's consumer lag as KEDA's `nats-jetstream` scaler reads
//! it from the monitoring port, and the replica count KEDA's HPA would choose (see
//! [`crate::lag`]).

use anyhow::Context;
use clap::CommandFactory;
use ridesaga_schemas::Service;
use ridesaga_schemas::streams::SAGA_STREAM;
use serde::Serialize;

use super::Ctx;
use crate::cli::{Cli, ScaleCommand, ScalePlanArgs};
use crate::exit::HintExt;
use crate::lag::{self, LagError, ScalePolicy, Target};
use crate::monitor;
use crate::output::{Paint, Table, note, warn};

pub async fn run(ctx: &Ctx, command: ScaleCommand) -> anyhow::Result<()> {
    match command {
        ScaleCommand::Plan(args) => plan(ctx, args).await,
    }
}

/// The whole plan, as `-o json` prints it.
#[derive(Debug, Serialize)]
struct Plan {
    account: String,
    stream: &'static str,
    lag_threshold: u64,
    activation_lag_threshold: u64,
    min_replicas: u32,
    max_replicas: u32,
    /// Whether the monitored server is a JetStream cluster (lag read from consumer leaders).
    clustered: bool,
    services: Vec<PlanRow>,
}

/// One service. Without `error`, every figure is present; with it, none is (KEDA applies the
/// ScaledObject's fallback).
#[derive(Debug, Serialize)]
struct PlanRow {
    service: &'static str,
    consumer: String,
    /// pending + ack pending: KEDA's metric.
    lag: Option<u64>,
    pending: Option<u64>,
    ack_pending: Option<u64>,
    /// Lag above the activation threshold.
    active: Option<bool>,
    replicas: Option<u32>,
    /// The `server_name` of the node whose answer was used (the consumer leader in a cluster).
    node: Option<String>,
    /// That node's monitoring URL.
    monitor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

async fn plan(ctx: &Ctx, args: ScalePlanArgs) -> anyhow::Result<()> {
    if args.min > args.max {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("--min {} is above --max {}", args.min, args.max),
            )
            .exit();
    }
    let policy = ScalePolicy {
        lag_threshold: args.lag_threshold,
        activation_lag_threshold: args.activation_lag_threshold,
        min_replicas: args.min,
        max_replicas: args.max,
    };
    let urls: Vec<String> = args.monitor.iter().map(ToString::to_string).collect();
    let gathered = monitor::gather(&args.monitor, &args.account, ctx.global.connect_timeout)
        .await
        .with_context(|| format!("no answer from the monitoring port ({})", urls.join(", ")))
        .hint(
            "is nats-server running with monitoring on (-m 8222)? Check --monitor or \
             RIDESAGA_MONITOR_URL (`source .run/env` after scripts/up)",
        )?;
    for (url, error) in &gathered.unreachable {
        warn(format!("{url}: {}", crate::exit::chain_text(error)));
    }
    let reports = &gathered.reports;

    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let mut leaderless = Vec::new();
    for service in Service::ALL {
        let consumer = service.consumer_name();
        let target = Target {
            account: &args.account,
            stream: SAGA_STREAM,
            consumer: &consumer,
        };
        let row = match lag::resolve(reports, target) {
            Ok(found) => PlanRow {
                service: service.name(),
                consumer: consumer.clone(),
                lag: Some(found.lag()),
                pending: Some(found.pending),
                ack_pending: Some(found.ack_pending),
                active: Some(policy.active(found.lag())),
                replicas: Some(policy.replicas(found.lag())),
                node: Some(found.node),
                monitor: Some(found.url),
                error: None,
            },
            Err(error) if error.is_shared() => return shared_error(error),
            Err(error) => {
                match error {
                    LagError::LeaderNotFound { .. } => leaderless.push(service.name()),
                    _ => missing.push(service.name()),
                }
                PlanRow {
                    service: service.name(),
                    consumer: consumer.clone(),
                    lag: None,
                    pending: None,
                    ack_pending: None,
                    active: None,
                    replicas: None,
                    node: None,
                    monitor: None,
                    error: Some(error.to_string()),
                }
            }
        };
        rows.push(row);
    }

    let plan = Plan {
        account: args.account.clone(),
        stream: SAGA_STREAM,
        lag_threshold: policy.lag_threshold,
        activation_lag_threshold: policy.activation_lag_threshold,
        min_replicas: policy.min_replicas,
        max_replicas: policy.max_replicas,
        clustered: lag::clustered(reports),
        services: rows,
    };
    if ctx.out.is_json() {
        ctx.out.json(&plan)?;
    } else {
        print_table(ctx, &plan);
    }
    if !missing.is_empty() {
        warn(format!(
            "no consumer on {SAGA_STREAM} for: {} (KEDA applies the fallback)",
            missing.join(", ")
        ));
        note("hint: create them with `ridectl provision`");
    }
    if !leaderless.is_empty() {
        warn(format!(
            "no consumer leader among the monitored nodes for: {}",
            leaderless.join(", ")
        ));
        note("hint: give every node's monitoring URL, e.g. --monitor URL1,URL2,URL3");
    }
    Ok(())
}

fn print_table(ctx: &Ctx, plan: &Plan) {
    let out = &ctx.out;
    out.line(format!(
        "lagThreshold {}, activationLagThreshold {}, replicas {}..{} (account {}, stream {}{})",
        plan.lag_threshold,
        plan.activation_lag_threshold,
        plan.min_replicas,
        plan.max_replicas,
        plan.account,
        plan.stream,
        if plan.clustered {
            ", lag from each consumer's leader"
        } else {
            ""
        }
    ));
    let mut table = Table::new([
        "SERVICE",
        "CONSUMER",
        "LAG",
        "PENDING",
        "ACK PENDING",
        "REPLICAS",
        "NODE",
    ]);
    for row in &plan.services {
        let number = |n: Option<u64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        match &row.error {
            Some(error) => table.row([
                row.service.to_owned(),
                row.consumer.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "fallback".into(),
                out.paint(Paint::Red, &format!("error: {error}")),
            ]),
            None => {
                let lag = number(row.lag);
                let lag = if row.lag.unwrap_or_default() > 0 {
                    out.paint(Paint::Yellow, &lag)
                } else {
                    lag
                };
                table.row([
                    row.service.to_owned(),
                    row.consumer.clone(),
                    lag,
                    number(row.pending),
                    number(row.ack_pending),
                    row.replicas
                        .map_or_else(|| "-".to_owned(), |r| r.to_string()),
                    row.node.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
        }
    }
    out.table(&table);
}

/// A missing account or stream fails the command, with what to do about it.
fn shared_error(error: LagError) -> anyhow::Result<()> {
    let hint = match &error {
        LagError::AccountNotFound { .. } => {
            "Ridesaga's account is RIDESAGA, and a server without accounts has $G; otherwise \
             give --account NAME (or its id), as the ScaledObject's `account` names it"
        }
        LagError::StreamNotFound { .. } => {
            "create the streams and consumers with `ridectl provision`"
        }
        _ => "check --monitor: it should be the NATS server's monitoring port (http, 8222)",
    };
    Err(error).hint(hint)
}
