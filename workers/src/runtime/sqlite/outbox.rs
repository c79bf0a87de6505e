//! The outbox's statements: storing a batch's outputs, reading what is still to publish, and
//! forgetting what the server has stored. The statements that open and close a batch (in
//! [`super`]) share their text.

use super::*;

/// Stores outputs; an output already stored (same id) is kept once.
pub async fn outbox_insert(
    conn: &mut SqliteConnection,
    cause: Option<&MessageId>,
    rows: &[OutboxRow],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    let entries: Vec<(Option<&str>, &OutboxRow)> = rows
        .iter()
        .map(|row| (cause.map(MessageId::as_str), row))
        .collect();
    outbox_insert_many(conn, &entries, now).await
}

/// Stores the outputs of several inputs (`(cause, row)`), in one statement (see
/// [`inbox_insert_many`]); an output already stored (same id) is kept once.
pub(crate) async fn outbox_insert_many(
    conn: &mut SqliteConnection,
    entries: &[(Option<&str>, &OutboxRow)],
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let (payloads, rows) = outbox_rows(entries)?;
    sqlx::query(OUTBOX_INSERT_SQL)
        .bind(payloads)
        .bind(now.unix_millis())
        .bind(rows)
        .execute(conn)
        .await?;
    Ok(())
}

/// Outbox rows as the inserts take them: every payload in one blob, and the JSON array of the
/// rows, each with its payload's slice of the blob.
pub(super) fn outbox_rows(
    entries: &[(Option<&str>, &OutboxRow)],
) -> Result<(Vec<u8>, String), sqlx::Error> {
    let mut payloads = Vec::with_capacity(entries.iter().map(|(_, row)| row.payload.len()).sum());
    let mut rows = Vec::with_capacity(entries.len());
    for (cause, row) in entries {
        let start = payloads.len() + 1;
        payloads.extend_from_slice(&row.payload);
        rows.push((
            row.message_id.as_str(),
            *cause,
            row.subject.as_str(),
            start,
            row.payload.len(),
            row.traceparent(),
            row.tracestate(),
        ));
    }
    Ok((payloads, json_array(&rows)?))
}

/// Outputs of `cause` still waiting to be published (after a crash between commit and publish).
pub(crate) async fn outbox_for_cause(
    conn: &mut SqliteConnection,
    cause: &MessageId,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query("SELECT message_id, subject, payload, traceparent, tracestate FROM outbox WHERE cause_id = ?")
        .bind(cause.as_str())
        .fetch_all(conn)
        .await?;
    Ok(rows.iter().map(row_to_outbox).collect())
}

/// Rows older than `older_than_ms`, oldest first: what the relay publishes.
pub(crate) async fn outbox_stale(
    pool: &SqlitePool,
    older_than_ms: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT message_id, subject, payload, traceparent, tracestate FROM outbox WHERE created_at <= ? \
         ORDER BY created_at LIMIT ?",
    )
    .bind(older_than_ms)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.iter().map(row_to_outbox).collect())
}

fn row_to_outbox(row: &SqliteRow) -> OutboxRow {
    OutboxRow {
        message_id: row.get("message_id"),
        subject: row.get("subject"),
        payload: row.get("payload"),
        trace: OutboxRow::trace_of(row.get("traceparent"), row.get("tracestate")),
    }
}

/// Forgets rows the server has stored, in one statement whatever their number.
pub(crate) async fn outbox_delete(
    conn: &mut SqliteConnection,
    ids: &[String],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(outbox_delete_sql!())
        .bind(json_array(ids)?)
        .execute(conn)
        .await?;
    Ok(())
}
