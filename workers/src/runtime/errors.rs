//! Whether a database error may pass if the same work is tried again: the one place that
//! decides it, for an input (retried or dead-lettered, see `process`), a batch (applied again
//! input by input, see `batch`) and whatever else meets a database error.

use sqlx::error::ErrorKind;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// SQLite's primary result codes (the low byte of an extended code) that the same statement
/// on the same data meets again: a constraint, a datatype mismatch, a value too big, a
/// parameter out of range.
const SQLITE_PERMANENT: [i64; 4] = [19, 20, 18, 25];

/// PostgreSQL's SQLSTATE classes that the same statement on the same data meets again: a
/// data exception (a value out of range, text that is not a number) and an integrity
/// constraint violation.
const POSTGRES_PERMANENT: [&str; 2] = ["22", "23"];

/// Whether `e` may pass later: busy or locked, I/O, a pool timeout, a lost connection, a
/// serialization failure or deadlock on PostgreSQL, a conflict with another transaction's row
/// (a unique, foreign-key or exclusion violation: a replica may have committed the same key
/// first, and the work tried again reads that row and decides anew), a row not found (another
/// step may write it), and any error it cannot tell apart from those. Not so a NULL or CHECK
/// violation, a value the column cannot hold, or a row that does not decode: the same work
/// fails the same way every time. Work that keeps failing on a transient error still ends in
/// dead letters after the consumer's `max_deliver`.
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            match db.kind() {
                ErrorKind::UniqueViolation
                | ErrorKind::ForeignKeyViolation
                | ErrorKind::ExclusionViolation => return true,
                ErrorKind::NotNullViolation | ErrorKind::CheckViolation => return false,
                _ => {}
            }
            if let Some(pg) = db.try_downcast_ref::<PgDatabaseError>() {
                return !POSTGRES_PERMANENT.contains(&pg.code().get(..2).unwrap_or(""));
            }
            if db.try_downcast_ref::<SqliteError>().is_some() {
                let primary = db
                    .code()
                    .and_then(|code| code.parse::<i64>().ok())
                    .map(|code| code & 0xff);
                return !primary.is_some_and(|code| SQLITE_PERMANENT.contains(&code));
            }
            true
        }
        sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Encode(_)
        | sqlx::Error::Decode(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::InvalidSavePointStatement => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use sqlx::{Connection, PgConnection, Row};

    use super::is_transient;

    /// `sql` on `conn`, expected to fail.
    async fn sqlite_error(conn: &mut SqliteConnection, sql: &'static str) -> sqlx::Error {
        sqlx::query(sql).execute(&mut *conn).await.unwrap_err()
    }

    async fn pg_error(conn: &mut PgConnection, sql: &'static str) -> sqlx::Error {
        sqlx::query(sql).execute(&mut *conn).await.unwrap_err()
    }

    async fn pg_connection() -> (String, PgConnection) {
        let server = ridesaga_testkit::Postgres::shared().unwrap();
        let url = server.create_database("errors").unwrap();
        let conn = PgConnection::connect(&url).await.unwrap();
        (url, conn)
    }

    #[tokio::test]
    async fn sqlite_key_conflicts_pass_later_and_broken_values_never() {
        let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
        sqlx::query(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE \
             CHECK (name <> 'bad'), n INTEGER) STRICT",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO t (id, name) VALUES (1, 'a')")
            .execute(&mut conn)
            .await
            .unwrap();
        for sql in [
            "INSERT INTO t (id, name) VALUES (2, 'a')",
            "INSERT INTO t (id, name) VALUES (1, 'b')",
        ] {
            let e = sqlite_error(&mut conn, sql).await;
            assert!(
                is_transient(&e),
                "another row's key may be a race: {sql}: {e}"
            );
        }
        for sql in [
            "INSERT INTO t (id, name) VALUES (3, NULL)",
            "INSERT INTO t (id, name) VALUES (4, 'bad')",
            "INSERT INTO t (id, name, n) VALUES (5, 'c', 'not a number')",
        ] {
            let e = sqlite_error(&mut conn, sql).await;
            assert!(!is_transient(&e), "{sql}: {e}");
        }
        // A row that does not decode as asked.
        let row = sqlx::query("SELECT name FROM t").fetch_one(&mut conn).await;
        let e = row.unwrap().try_get::<i64, _>("name").unwrap_err();
        assert!(!is_transient(&e), "{e}");
    }

    #[tokio::test]
    async fn sqlite_busy_is_transient() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let mut holder = SqliteConnection::connect_with(&options).await.unwrap();
        let mut other = SqliteConnection::connect_with(&options).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut holder)
            .await
            .unwrap();
        let e = sqlite_error(&mut other, "BEGIN IMMEDIATE").await;
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("5")
        );
        assert!(is_transient(&e), "{e}");
    }

    #[tokio::test]
    async fn postgres_key_conflicts_pass_later_and_broken_values_never() {
        let (_url, mut conn) = pg_connection().await;
        sqlx::query(
            "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE \
             CHECK (name <> 'bad'))",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO t VALUES (1, 'a')")
            .execute(&mut conn)
            .await
            .unwrap();
        let e = pg_error(&mut conn, "INSERT INTO t VALUES (2, 'a')").await;
        assert!(is_transient(&e), "another row's key may be a race: {e}");
        for sql in [
            "INSERT INTO t VALUES (3, NULL)",
            "INSERT INTO t VALUES (4, 'bad')",
            "SELECT 'x'::BIGINT",
            "SELECT 1 / 0",
        ] {
            let e = pg_error(&mut conn, sql).await;
            assert!(!is_transient(&e), "{sql}: {e}");
        }
        let row = sqlx::query("SELECT name FROM t").fetch_one(&mut conn).await;
        let e = row.unwrap().try_get::<i64, _>("name").unwrap_err();
        assert!(!is_transient(&e), "{e}");
    }

    #[tokio::test]
    async fn postgres_lock_timeouts_deadlocks_and_lost_connections_are_transient() {
        let (url, mut holder) = pg_connection().await;
        let mut other = PgConnection::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (id BIGINT PRIMARY KEY)")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1), (2)")
            .execute(&mut holder)
            .await
            .unwrap();

        // A lock that is not free in time (55P03).
        let mut tx = holder.begin().await.unwrap();
        sqlx::query("LOCK TABLE t").execute(&mut *tx).await.unwrap();
        sqlx::query("SET lock_timeout = '50ms'")
            .execute(&mut other)
            .await
            .unwrap();
        let e = pg_error(&mut other, "SELECT * FROM t").await;
        assert!(is_transient(&e), "{e}");
        tx.rollback().await.unwrap();
        sqlx::query("SET lock_timeout = 0")
            .execute(&mut other)
            .await
            .unwrap();

        // Two transactions that wait on each other: one of them is chosen to fail (40P01).
        let mut first = holder.begin().await.unwrap();
        let mut second = other.begin().await.unwrap();
        sqlx::query("UPDATE t SET id = id WHERE id = 1")
            .execute(&mut *first)
            .await
            .unwrap();
        sqlx::query("UPDATE t SET id = id WHERE id = 2")
            .execute(&mut *second)
            .await
            .unwrap();
        let (a, b) = tokio::join!(
            sqlx::query("UPDATE t SET id = id WHERE id = 2").execute(&mut *first),
            sqlx::query("UPDATE t SET id = id WHERE id = 1").execute(&mut *second),
        );
        let e = a.err().or(b.err()).expect("a deadlock");
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("40P01")
        );
        assert!(is_transient(&e), "{e}");
        drop((first, second));

        // The server ends the connection.
        let e = pg_error(&mut other, "SELECT pg_terminate_backend(pg_backend_pid())").await;
        assert!(is_transient(&e), "{e}");
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::RowNotFound));
    }
}
