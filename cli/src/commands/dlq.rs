//! `ridectl dlq list|show|replay`: dead letters. The dead-letter stream holds the records
//! workers publish before terminating a message (`dlq.<service>.<seq>`, with the reason and the
//! original payload) and the server's MAX_DELIVERIES and MSG_TERMINATED advisories (which point
//! at the original by its saga stream sequence).

use anyhow::{Context, bail};
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use ridesaga_schemas::{DeadLetter, Envelope, streams::DEAD_LETTER_STREAM};
use serde::{Deserialize, Serialize};

use super::Ctx;
use crate::cli::DlqCommand;
use crate::nats::{Nats, Record, scan};
use crate::output::{Table, format_time, rfc3339};

pub async fn run(ctx: &Ctx, command: DlqCommand) -> anyhow::Result<()> {
    let nats = ctx.connect().await?;
    match command {
        DlqCommand::List => list(ctx, &nats).await,
        DlqCommand::Show { seq } => show(ctx, &nats, seq).await,
        DlqCommand::Replay { seq } => replay(ctx, &nats, seq).await,
    }
}

/// A server advisory about a message the saga stream's consumers gave up on.
#[derive(Debug, Deserialize)]
struct Advisory {
    #[serde(rename = "type")]
    kind: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
    #[serde(default)]
    reason: Option<String>,
}

/// One dead letter, whatever its source.
#[derive(Debug, Serialize)]
struct Letter {
    seq: u64,
    time: String,
    /// `record` (published by a worker), `max_deliveries` or `terminated` (server advisories).
    source: &'static str,
    service: String,
    /// The original message's sequence in the saga stream.
    stream_sequence: u64,
    deliveries: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    reason: String,
    #[serde(skip)]
    payload: Option<String>,
}

fn letter(record: &Record) -> anyhow::Result<Letter> {
    let time = rfc3339(record.time);
    if record.subject.starts_with("$JS.EVENT.ADVISORY.") {
        let advisory: Advisory = serde_json::from_slice(&record.payload)
            .with_context(|| format!("dead letter {} is not a readable advisory", record.seq))?;
        let source = if advisory.kind.ends_with("max_deliver") {
            "max_deliveries"
        } else {
            "terminated"
        };
        let reason = advisory.reason.clone().unwrap_or_else(|| match source {
            "max_deliveries" => {
                format!("not acknowledged after {} deliveries", advisory.deliveries)
            }
            _ => "terminated by the worker".into(),
        });
        return Ok(Letter {
            seq: record.seq,
            time,
            source,
            service: advisory.consumer.trim_end_matches("-worker").to_owned(),
            stream_sequence: advisory.stream_seq,
            deliveries: advisory.deliveries,
            subject: None,
            reason,
            payload: None,
        });
    }
    let dead: DeadLetter = serde_json::from_slice(&record.payload)
        .with_context(|| format!("dead letter {} is not a readable record", record.seq))?;
    Ok(Letter {
        seq: record.seq,
        time,
        source: "record",
        service: dead.service,
        stream_sequence: dead.stream_sequence,
        deliveries: dead.deliveries,
        subject: Some(dead.subject),
        reason: dead.reason,
        // An empty copy: the record left the payload out; the saga stream has the original.
        payload: Some(dead.payload).filter(|p| !p.is_empty()),
    })
}

async fn list(ctx: &Ctx, nats: &Nats) -> anyhow::Result<()> {
    let stream = nats.stream(DEAD_LETTER_STREAM).await?;
    let records = scan(&stream, &[], DeliverPolicy::All).await?;
    let letters: Vec<Letter> = records
        .iter()
        .filter_map(|r| {
            letter(r)
                .map_err(|e| crate::output::warn(format!("{e:#}")))
                .ok()
        })
        .collect();
    if ctx.out.is_json() {
        return ctx.out.json(&letters);
    }
    if letters.is_empty() {
        crate::output::note("no dead letters");
        return Ok(());
    }
    let mut table = Table::new([
        "SEQ",
        "TIME",
        "SOURCE",
        "SERVICE",
        "ORIGINAL SEQ",
        "DELIVERIES",
        "SUBJECT",
        "REASON",
    ]);
    for l in &letters {
        let when =
            time::OffsetDateTime::parse(&l.time, &time::format_description::well_known::Rfc3339)
                .map(format_time)
                .unwrap_or_else(|_| l.time.clone());
        table.row([
            l.seq.to_string(),
            when,
            l.source.to_string(),
            l.service.clone(),
            l.stream_sequence.to_string(),
            l.deliveries.to_string(),
            l.subject.clone().unwrap_or_else(|| "-".into()),
            l.reason.clone(),
        ]);
    }
    ctx.out.table(&table);
    Ok(())
}

fn readable_time(rfc3339: &str) -> String {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(format_time)
        .unwrap_or_else(|_| rfc3339.to_owned())
}

/// The dead letter and its original message (subject and payload).
async fn load(nats: &Nats, seq: u64) -> anyhow::Result<(Letter, String, Bytes)> {
    let stream = nats.stream(DEAD_LETTER_STREAM).await?;
    let raw = stream
        .get_raw_message(seq)
        .await
        .with_context(|| format!("no dead letter {seq} in {DEAD_LETTER_STREAM}"))?;
    let record = Record {
        seq: raw.sequence,
        time: raw.time,
        subject: raw.subject.to_string(),
        payload: raw.payload,
        trace: None,
    };
    let mut letter = letter(&record)?;
    if let (Some(subject), Some(payload)) = (&letter.subject, &letter.payload) {
        let original = (subject.clone(), Bytes::from(payload.clone().into_bytes()));
        return Ok((letter, original.0, original.1));
    }
    let saga = nats.saga_stream().await?;
    let original = saga
        .get_raw_message(letter.stream_sequence)
        .await
        .with_context(|| {
            format!(
                "the original message (saga stream seq {}) is no longer stored",
                letter.stream_sequence
            )
        })?;
    letter.subject = Some(original.subject.to_string());
    Ok((letter, original.subject.to_string(), original.payload))
}

async fn show(ctx: &Ctx, nats: &Nats, seq: u64) -> anyhow::Result<()> {
    let (letter, subject, payload) = load(nats, seq).await?;
    let original: serde_json::Value = serde_json::from_slice(&payload)
        .unwrap_or_else(|_| String::from_utf8_lossy(&payload).into());
    if ctx.out.is_json() {
        let mut value = serde_json::to_value(&letter)?;
        value["original"] = original;
        return ctx.out.json(&value);
    }
    let mut table = Table::new(["FIELD", "VALUE"]);
    table.row(["dead letter".to_string(), letter.seq.to_string()]);
    table.row(["time".to_string(), readable_time(&letter.time)]);
    table.row(["source".to_string(), letter.source.to_string()]);
    table.row(["service".to_string(), letter.service.clone()]);
    table.row([
        "original seq".to_string(),
        letter.stream_sequence.to_string(),
    ]);
    table.row(["deliveries".to_string(), letter.deliveries.to_string()]);
    table.row(["subject".to_string(), subject]);
    table.row(["reason".to_string(), letter.reason.clone()]);
    ctx.out.table(&table);
    ctx.out.line(serde_json::to_string_pretty(&original)?);
    Ok(())
}

async fn replay(ctx: &Ctx, nats: &Nats, seq: u64) -> anyhow::Result<()> {
    let (_, subject, payload) = load(nats, seq).await?;
    let base = match Envelope::decode(&subject, &payload) {
        Ok(envelope) => envelope.id.to_string(),
        Err(e) => {
            if !subject.starts_with("cmd.") && !subject.starts_with("evt.") {
                bail!("dead letter {seq}'s original subject {subject:?} is not a saga subject");
            }
            crate::output::warn(format!(
                "the original does not decode ({e}); replaying it as it is"
            ));
            "dlq".to_string()
        }
    };
    let message_id = format!("{base}-replay-{seq}");
    let ack = nats
        .publish_raw(subject.clone(), payload, &message_id)
        .await?;
    if ctx.out.is_json() {
        return ctx.out.json(&serde_json::json!({
            "dead_letter": seq,
            "subject": subject,
            "message_id": message_id,
            "stream_sequence": ack.sequence,
            "duplicate": ack.duplicate,
        }));
    }
    let note = if ack.duplicate {
        " (already replayed: the stream dropped this copy)"
    } else {
        ""
    };
    ctx.out.line(format!(
        "replayed dead letter {seq} to {subject} as {message_id} (stream seq {}){note}",
        ack.sequence
    ));
    Ok(())
}
