//! `ridectl events tail`: prints stored commands and events, then follows new ones.

use async_nats::jetstream::consumer::DeliverPolicy;
use time::OffsetDateTime;

use super::Ctx;
use crate::cli::{EventsCommand, TailArgs};
use crate::nats::{Record, follow, scan};
use crate::output::{format_time, rfc3339};
use crate::saga::describe::summary;

pub async fn run(ctx: &Ctx, command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::Tail(args) => tail(ctx, args).await,
    }
}

async fn tail(ctx: &Ctx, args: TailArgs) -> anyhow::Result<()> {
    let filters: Vec<String> = args.filter.iter().cloned().collect();
    let nats = ctx.connect().await?;
    let stream = nats.saga_stream().await?;
    let deliver = match (args.since, args.no_follow) {
        (Some(since), _) => DeliverPolicy::ByStartTime {
            start_time: OffsetDateTime::now_utc() - since,
        },
        (None, true) => DeliverPolicy::All,
        (None, false) => DeliverPolicy::New,
    };
    if args.no_follow {
        for record in scan(&stream, &filters, deliver).await? {
            print_record(ctx, &record)?;
        }
        return Ok(());
    }
    if !ctx.out.is_json() {
        crate::output::note("following; ctrl-c stops");
    }
    let mut feed = follow(&stream, &filters, deliver).await?;
    while let Some(record) = feed.next().await? {
        print_record(ctx, &record)?;
    }
    Ok(())
}

/// One message: a line of text, or a JSON line with the envelope as stored.
fn print_record(ctx: &Ctx, record: &Record) -> anyhow::Result<()> {
    if ctx.out.is_json() {
        let envelope: serde_json::Value = serde_json::from_slice(&record.payload)
            .unwrap_or_else(|_| String::from_utf8_lossy(&record.payload).into());
        return ctx.out.json(&serde_json::json!({
            "seq": record.seq,
            "time": rfc3339(record.time),
            "subject": record.subject,
            "envelope": envelope,
        }));
    }
    let (producer, text) =
        match ridesaga_schemas::Envelope::decode(&record.subject, &record.payload) {
            Ok(envelope) => (envelope.producer.clone(), summary(&envelope.message)),
            Err(e) => ("?".to_string(), format!("(undecodable: {e})")),
        };
    ctx.out.line(format!(
        "{:>6}  {}  {}  {}  {}",
        record.seq,
        format_time(record.time),
        record.subject,
        producer,
        text
    ));
    Ok(())
}
