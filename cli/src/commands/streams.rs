//! `ridectl streams`, `ridectl consumers` and `ridectl provision`: the JetStream side of the
//! system, as the contract crate defines it.

use async_nats::jetstream::consumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use futures_util::TryStreamExt;
use ridesaga_schemas::Service;
use ridesaga_schemas::streams::{ProvisionOptions, SAGA_STREAM, provision as provision_all};
use serde::Serialize;

use super::Ctx;
use crate::cli::ProvisionArgs;
use crate::exit::HintExt;
use crate::output::{Paint, Table, bytes, format_time, rfc3339};

#[derive(Debug, Serialize)]
struct StreamRow {
    name: String,
    messages: u64,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_time: Option<String>,
    subjects: Vec<String>,
    consumers: usize,
}

pub async fn streams(ctx: &Ctx) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let infos: Vec<_> = nats
        .js
        .streams()
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("could not list streams: {e}"))
        .hint("is JetStream enabled on the server?")?;
    let mut rows: Vec<StreamRow> = infos
        .into_iter()
        .map(|info| {
            let state = &info.state;
            let has = state.messages > 0;
            StreamRow {
                name: info.config.name.clone(),
                messages: state.messages,
                bytes: state.bytes,
                first_seq: state.first_sequence,
                last_seq: state.last_sequence,
                first_time: has.then(|| rfc3339(state.first_timestamp)),
                last_time: has.then(|| rfc3339(state.last_timestamp)),
                subjects: info.config.subjects.clone(),
                consumers: state.consumer_count,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    if ctx.out.is_json() {
        return ctx.out.json(&rows);
    }
    if rows.is_empty() {
        crate::output::note("no streams");
        crate::output::note("hint: create them with `ridectl provision`");
        return Ok(());
    }
    let mut table = Table::new([
        "STREAM",
        "MESSAGES",
        "BYTES",
        "FIRST",
        "LAST",
        "CONSUMERS",
        "SUBJECTS",
    ]);
    for row in &rows {
        let infos = infos_times(row);
        table.row([
            row.name.clone(),
            row.messages.to_string(),
            bytes(row.bytes),
            infos.0,
            infos.1,
            row.consumers.to_string(),
            row.subjects.join(", "),
        ]);
    }
    ctx.out.table(&table);
    Ok(())
}

fn infos_times(row: &StreamRow) -> (String, String) {
    let show = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or_else(|| "-".to_string(), format_time)
    };
    (show(&row.first_time), show(&row.last_time))
}

#[derive(Debug, Serialize)]
struct ConsumerRow {
    service: &'static str,
    consumer: String,
    exists: bool,
    pending: u64,
    ack_pending: u64,
    redelivered: u64,
    /// pending + ack pending: what an autoscaler watches.
    lag: u64,
    waiting: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_delivery: Option<String>,
    filter_subjects: Vec<String>,
}

pub async fn consumers(ctx: &Ctx) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let mut rows = Vec::new();
    for service in Service::ALL {
        let name = service.consumer_name();
        let row = match stream.consumer_info(&name).await {
            Ok(info) => consumer_row(service, &info),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => ConsumerRow {
                service: service.name(),
                consumer: name,
                exists: false,
                pending: 0,
                ack_pending: 0,
                redelivered: 0,
                lag: 0,
                waiting: 0,
                last_delivery: None,
                filter_subjects: Vec::new(),
            },
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context(format!("could not read consumer {name}"))
                );
            }
        };
        rows.push(row);
    }
    let missing: Vec<&str> = rows
        .iter()
        .filter(|r| !r.exists)
        .map(|r| r.service)
        .collect();
    if ctx.out.is_json() {
        ctx.out.json(&rows)?;
    } else {
        let out = &ctx.out;
        let mut table = Table::new([
            "SERVICE",
            "CONSUMER",
            "PENDING",
            "ACK PENDING",
            "REDELIVERED",
            "LAG",
            "WAITING",
            "LAST DELIVERY",
        ]);
        for row in &rows {
            if !row.exists {
                table.row([
                    row.service.to_string(),
                    out.paint(Paint::Red, &format!("{} (missing)", row.consumer)),
                ]);
                continue;
            }
            let lag = if row.lag > 0 {
                out.paint(Paint::Yellow, &row.lag.to_string())
            } else {
                row.lag.to_string()
            };
            table.row([
                row.service.to_string(),
                row.consumer.clone(),
                row.pending.to_string(),
                row.ack_pending.to_string(),
                row.redelivered.to_string(),
                lag,
                row.waiting.to_string(),
                row.last_delivery.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        out.table(&table);
    }
    // Stream name in the hint keeps it concrete for operators with several accounts.
    if !missing.is_empty() {
        crate::output::warn(format!(
            "no consumer on {SAGA_STREAM} for: {}",
            missing.join(", ")
        ));
        crate::output::note("hint: create them with `ridectl provision`");
    }
    Ok(())
}

fn consumer_row(service: Service, info: &consumer::Info) -> ConsumerRow {
    let pending = info.num_pending;
    let ack_pending = info.num_ack_pending as u64;
    ConsumerRow {
        service: service.name(),
        consumer: info.name.clone(),
        exists: true,
        pending,
        ack_pending,
        redelivered: info.num_redelivered as u64,
        lag: pending + ack_pending,
        waiting: info.num_waiting as u64,
        last_delivery: info.delivered.last_active.map(format_time),
        filter_subjects: info.config.filter_subjects.clone(),
    }
}

pub async fn provision(ctx: &Ctx, args: ProvisionArgs) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    let options = ProvisionOptions {
        replicas: usize::from(args.replicas),
    };
    let report = provision_all(&nats.js, options)
        .await
        .map_err(anyhow::Error::new)
        .hint("provisioning needs JetStream enabled and permission to manage streams")?;
    if ctx.out.is_json() {
        return ctx.out.json(&serde_json::json!({
            "streams": report.streams,
            "consumers": report.consumers,
            "replicas": args.replicas,
        }));
    }
    for name in &report.streams {
        ctx.out.line(format!("stream {name}: ok"));
    }
    for name in &report.consumers {
        ctx.out.line(format!("consumer {SAGA_STREAM}/{name}: ok"));
    }
    Ok(())
}
