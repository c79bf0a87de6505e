//! Tests of the runtime's store: batches, inbox and outbox.

use super::*;
use crate::testing::{database, epoch};

fn row(id: &str, payload: &[u8]) -> OutboxRow {
    OutboxRow {
        message_id: id.into(),
        subject: format!("evt.test.{id}"),
        payload: payload.to_vec(),
        trace: None,
    }
}

/// An inbox entry of a message that occurred and was received at `t`.
fn entry<'a>(id: &'a str, subject: &'a str, t: Timestamp) -> InboxEntry<'a> {
    InboxEntry {
        id,
        subject,
        occurred: t,
        received: t,
    }
}

async fn count(conn: &mut SqliteConnection, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_commits_its_inbox_entries_and_outputs_and_reports_which_inputs_are_new() {
    let (_dir, mut conn) = database(&RUNTIME_MIGRATOR).await;
    let t = epoch();
    let fresh = open_batch(
        &mut conn,
        &[],
        &[entry("m_1", "cmd.a", t), entry("m_1", "cmd.a", t)],
        None,
    )
    .await
    .unwrap()
    .fresh;
    assert_eq!(fresh, HashSet::from(["m_1".to_owned()]));
    let out = row("o_1", br#"{"a":"\"quoted\" and unicode: \u00e9"}"#);
    close_batch(&mut conn, &[], &[(Some("m_1"), &out)], NewEffects::NONE, t)
        .await
        .unwrap();
    assert_eq!(
        outbox_for_cause(&mut conn, &MessageId::parse("m_1").unwrap())
            .await
            .unwrap()[0]
            .payload,
        out.payload
    );

    // The next batch deletes the published row; the repeated input is not new.
    let fresh = open_batch(
        &mut conn,
        &["o_1".to_owned()],
        &[entry("m_1", "cmd.a", t), entry("m_2", "cmd.b", t)],
        None,
    )
    .await
    .unwrap()
    .fresh;
    assert_eq!(fresh, HashSet::from(["m_2".to_owned()]));
    close_batch(&mut conn, &[], &[], NewEffects::NONE, t)
        .await
        .unwrap();
    assert_eq!(count(&mut conn, "outbox").await, 0);
    assert_eq!(count(&mut conn, "inbox").await, 2);
}

#[tokio::test]
async fn an_aborted_or_failed_batch_leaves_nothing_behind_and_no_transaction_open() {
    let (_dir, mut conn) = database(&RUNTIME_MIGRATOR).await;
    let t = epoch();
    open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
        .await
        .unwrap();
    abort_batch(&mut conn).await;
    assert_eq!(count(&mut conn, "inbox").await, 0);

    // A write that breaks a constraint fails the close: rolled back, the inbox entry and the
    // outbox row included.
    open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
        .await
        .unwrap();
    let twice = BatchWrite::new(
        "INSERT INTO outbox (message_id, subject, payload, created_at) \
         SELECT value, 'evt.test', x'00', 0 FROM json_each(?)",
        &["o_9", "o_9"],
    )
    .unwrap();
    let out = row("o_1", b"{}");
    assert!(
        close_batch(
            &mut conn,
            &[twice],
            &[(Some("m_1"), &out)],
            NewEffects::NONE,
            t
        )
        .await
        .is_err()
    );
    assert_eq!(count(&mut conn, "inbox").await, 0);
    assert_eq!(count(&mut conn, "outbox").await, 0);

    // A transaction left open (a panicking handler) fails the next open, which rolls it
    // back, so the one after succeeds.
    sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
    assert!(
        open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
            .await
            .is_err()
    );
    open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
        .await
        .unwrap();
    close_batch(&mut conn, &[], &[], NewEffects::NONE, t)
        .await
        .unwrap();
    assert_eq!(count(&mut conn, "inbox").await, 1);
    // Aborting with no transaction open is harmless.
    abort_batch(&mut conn).await;
}

#[tokio::test]
async fn a_batch_runs_the_services_writes_before_its_outputs_in_the_closing_round_trip() {
    let (_dir, mut conn) = database(&RUNTIME_MIGRATOR).await;
    sqlx::query("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let upsert = "INSERT INTO kv (k, v) SELECT value ->> 0, value ->> 1 FROM json_each(?) \
                  WHERE true ON CONFLICT (k) DO UPDATE SET v = excluded.v";
    let writes = [
        BatchWrite::new(upsert, &[("a", 1), ("b", 2)]).unwrap(),
        BatchWrite::new(upsert, &[("b", 3)]).unwrap(),
    ];
    let t = epoch();
    open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
        .await
        .unwrap();
    let out = row("o_1", b"{}");
    close_batch(
        &mut conn,
        &writes,
        &[(Some("m_1"), &out)],
        NewEffects::NONE,
        t,
    )
    .await
    .unwrap();
    let kv: Vec<(String, i64)> = sqlx::query_as("SELECT k, v FROM kv ORDER BY k")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert_eq!(kv, [("a".to_owned(), 1), ("b".to_owned(), 3)]);
    assert_eq!(count(&mut conn, "outbox").await, 1);

    // A write that fails rolls back the whole batch, the inbox entry and outputs included.
    open_batch(&mut conn, &[], &[entry("m_2", "cmd.a", t)], None)
        .await
        .unwrap();
    let broken = [BatchWrite::new(upsert, &[("c", None::<i64>)]).unwrap()];
    let out = row("o_2", b"{}");
    close_batch(
        &mut conn,
        &broken,
        &[(Some("m_2"), &out)],
        NewEffects::NONE,
        t,
    )
    .await
    .unwrap_err();
    assert_eq!(count(&mut conn, "outbox").await, 1);
    assert_eq!(count(&mut conn, "inbox").await, 1);
    assert_eq!(count(&mut conn, "kv").await, 2);
}

#[tokio::test]
async fn a_preload_runs_in_the_opening_round_trip_with_its_own_parameter_and_rows() {
    let (_dir, mut conn) = database(&RUNTIME_MIGRATOR).await;
    let t = epoch();
    // A preload that reads the inbox itself: it runs after the batch's entries are in, in
    // the same transaction, and binds the third argument (not the first two).
    let preload = (
        "SELECT message_id AS id, subject FROM inbox \
         WHERE message_id IN (SELECT value FROM json_each(?)) ORDER BY message_id",
        r#"["m_2", "m_9"]"#.to_owned(),
    );
    let opened = open_batch(
        &mut conn,
        &["o_gone".to_owned()],
        &[entry("m_1", "cmd.a", t), entry("m_2", "cmd.b", t)],
        Some(preload),
    )
    .await
    .unwrap();
    assert_eq!(
        opened.fresh,
        HashSet::from(["m_1".to_owned(), "m_2".to_owned()])
    );
    let preloaded: Vec<(String, String)> = opened
        .preloaded
        .iter()
        .map(|row| {
            let AnyRow::Sqlite(row) = row else {
                panic!("a SQLite batch returned another backend's row")
            };
            (row.get("id"), row.get("subject"))
        })
        .collect();
    assert_eq!(preloaded, [("m_2".to_owned(), "cmd.b".to_owned())]);
    abort_batch(&mut conn).await;
    assert_eq!(count(&mut conn, "inbox").await, 0);
}

#[tokio::test]
async fn a_message_is_known_by_its_id_and_occurrence_and_the_legacy_entries_still_count() {
    // A database made before the inbox was keyed by occurrence, with one message applied.
    let dir = tempfile::tempdir().unwrap();
    let mut conn = crate::testing::connect(&crate::testing::database_file(&dir)).await;
    let first: Vec<_> = RUNTIME_MIGRATOR.iter().take(1).cloned().collect();
    Migrator::with_migrations(first)
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO inbox (message_id, subject, received_at) VALUES ('m_old', 'cmd.a', 5)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    RUNTIME_MIGRATOR.run(&mut conn).await.unwrap();

    let (early, late) = (
        Timestamp::from_unix_millis(1_000),
        Timestamp::from_unix_millis(9_000),
    );
    let opened = open_batch(
        &mut conn,
        &[],
        &[
            entry("m_old", "cmd.a", late),
            entry("m_new", "cmd.a", early),
            entry("m_late", "cmd.a", late),
        ],
        None,
    )
    .await
    .unwrap();
    close_batch(&mut conn, &[], &[], NewEffects::NONE, late)
        .await
        .unwrap();
    // The message applied before the migration is not applied again.
    assert_eq!(
        opened.fresh,
        HashSet::from(["m_new".to_owned(), "m_late".to_owned()])
    );
    // A redelivery carries the same id and occurrence: not new.
    let again = InboxEntry {
        received: Timestamp::from_unix_millis(20_000),
        ..entry("m_new", "cmd.a", early)
    };
    let fresh = inbox_insert_many(&mut conn, &[again]).await.unwrap();
    assert!(fresh.is_empty(), "{fresh:?}");

    // The retention drops what was received before the limit, from both tables; a message
    // that occurred before it but was received after it stays.
    sqlx::query("INSERT INTO inbox (occurred_at, message_id, subject, received_at) VALUES (1, 'm_slow', 'cmd.a', 8000)")
        .execute(&mut conn)
        .await
        .unwrap();
    let pool = SqlitePool::connect_with(
        SqliteConnectOptions::new().filename(crate::testing::database_file(&dir)),
    )
    .await
    .unwrap();
    let mut pruning = pool.acquire().await.unwrap();
    assert_eq!(
        inbox_prune(&mut pruning, 5_000, 1).await.unwrap(),
        2,
        "one of each table"
    );
    assert_eq!(inbox_prune(&mut pruning, 5_000, 1_000).await.unwrap(), 0);
    drop(pruning);
    let left: Vec<String> = sqlx::query_scalar(
        "SELECT message_id FROM inbox UNION ALL SELECT message_id FROM inbox_legacy ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(left, ["m_late", "m_slow"]);
}

#[tokio::test]
async fn the_outputs_of_a_batch_keep_their_payloads_byte_for_byte() {
    let (_dir, mut conn) = database(&RUNTIME_MIGRATOR).await;
    let t = epoch();
    open_batch(&mut conn, &[], &[entry("m_1", "cmd.a", t)], None)
        .await
        .unwrap();
    // Travelling in one blob, each payload must come back as its own slice of it, whatever
    // its length or bytes.
    let payloads: [&[u8]; 4] = [
        br#"{"text":"caf\u00e9 \"x\""}"#,
        "née à Zürich".as_bytes(),
        b"x",
        &[0, 0xff, b'"', b'\\', 0x7f],
    ];
    let rows: Vec<OutboxRow> = payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| row(&format!("o_{i}"), payload))
        .collect();
    let outputs: Vec<(Option<&str>, &OutboxRow)> = rows.iter().map(|r| (Some("m_1"), r)).collect();
    close_batch(&mut conn, &[], &outputs, NewEffects::NONE, t)
        .await
        .unwrap();
    let mut stored = outbox_for_cause(&mut conn, &MessageId::parse("m_1").unwrap())
        .await
        .unwrap();
    stored.sort_by(|a, b| a.message_id.cmp(&b.message_id));
    let stored: Vec<&[u8]> = stored.iter().map(|r| r.payload.as_slice()).collect();
    assert_eq!(stored, payloads);
}

#[tokio::test]
async fn a_database_a_newer_release_migrated_still_opens_with_an_older_one() {
    use std::borrow::Cow;

    use sqlx::SqlSafeStr;
    use sqlx::migrate::{Migration, MigrationType};

    // The newer release: this release's migrations and one more of its own.
    static OLDER: Migrator = Migrator::DEFAULT;
    let dir = tempfile::tempdir().unwrap();
    let path = crate::testing::database_file(&dir);
    let url = format!("sqlite://{}", path.display());
    let mut newer: Vec<Migration> = RUNTIME_MIGRATOR.iter().cloned().collect();
    newer.push(Migration::new(
        9_000,
        Cow::Borrowed("a later release's table"),
        MigrationType::Simple,
        "CREATE TABLE later (id TEXT PRIMARY KEY)".into_sql_str(),
        false,
    ));
    let mut conn = crate::testing::connect(&path).await;
    Migrator::with_migrations(newer)
        .run(&mut conn)
        .await
        .unwrap();
    drop(conn);

    // This release opens it: the unknown migration is left alone, its table kept.
    let db = Database::open(&url, 1, &OLDER).await.unwrap();
    let later: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM later")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(later, 0);
}
