//! The SQL databases as the engine meets them: errors with their purpose and what they mean
//! for a run (retry, refuse one record, or stop), and the few statements every part needs.
//!
//! Queries are built at run time (no compile-time database needed). Each statement is written
//! once with `?` placeholders and numbered (`$1`, `$2`...) for PostgreSQL.

use sqlx::{AssertSqlSafe, Row, SqlSafeStr, SqlStr};

use crate::connection::Database;
use crate::engine::migrator::BatchError;

/// A database error with the statement's purpose in front.
#[derive(Debug, thiserror::Error)]
#[error("while {doing}: {source}")]
pub struct DbError {
    doing: &'static str,
    #[source]
    source: sqlx::Error,
}

/// What a database error means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Another attempt may succeed: a lost connection, a deadlock, a serialization failure.
    Transient,
    /// Another session holds what the statement needs, or the statement ran too long: a lock
    /// or statement timeout (PostgreSQL), a busy or locked database (SQLite). Another attempt
    /// may succeed once the other session is done; the records are not at fault.
    Contended,
    /// The database refused a value of the batch: a constraint, a value out of range. Only
    /// the records at fault should fail.
    Rejected,
    /// No attempt can succeed until someone changes the database or the configuration: a
    /// missing table or column, a type mismatch, a permission, a read-only or full database.
    Fatal,
}

impl DbError {
    /// What this error means for the run.
    pub(crate) fn kind(&self) -> ErrorKind {
        error_kind(&self.source)
    }
}

impl DbError {
    /// The batch error for a statement that was prepared before the run (see
    /// [`Migration::check`](crate::Migration::check)): an SQL error at run time then comes
    /// from a row's data (a function refusing a value), not from the schema, so SQLite's
    /// generic `ERROR` refuses the batch's records instead of stopping the run.
    pub(crate) fn into_checked_batch_error(self) -> BatchError {
        const SQLITE_ERROR: i32 = 1;
        let generic_sqlite_error = matches!(&self.source, sqlx::Error::Database(e)
            if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some()
                && e.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff)
                    == Some(SQLITE_ERROR));
        if generic_sqlite_error {
            BatchError::Rejected(self.into())
        } else {
            self.into()
        }
    }
}

impl BatchError {
    /// The batch error for a database error met while `doing` something in a batch: retried,
    /// refused for its records, or fatal, by the error's SQLSTATE (PostgreSQL) or result code
    /// (SQLite), as the built-in migrations classify theirs (`docs/running.md`).
    pub fn from_database(doing: &'static str, error: sqlx::Error) -> BatchError {
        DbError {
            doing,
            source: error,
        }
        .into()
    }
}

impl From<DbError> for BatchError {
    fn from(error: DbError) -> BatchError {
        match error.kind() {
            ErrorKind::Transient => BatchError::Transient(error.into()),
            ErrorKind::Contended => BatchError::Contended(error.into()),
            ErrorKind::Rejected => BatchError::Rejected(error.into()),
            ErrorKind::Fatal => BatchError::Fatal {
                error: error.into(),
                committed: None,
            },
        }
    }
}

/// Classifies a driver error. PostgreSQL errors by their SQLSTATE, SQLite errors by their
/// primary result code; anything unknown is transient, so that it is retried rather than
/// given up.
pub(crate) fn error_kind(error: &sqlx::Error) -> ErrorKind {
    use sqlx::postgres::PgDatabaseError;
    use sqlx::sqlite::SqliteError;
    match error {
        sqlx::Error::Database(e) => {
            if let Some(pg) = e.try_downcast_ref::<PgDatabaseError>() {
                postgres_error_kind(pg.code())
            } else if e.try_downcast_ref::<SqliteError>().is_some() {
                let code = e.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or(0);
                sqlite_error_kind(code)
            } else {
                ErrorKind::Transient
            }
        }
        // The rows do not have the shape the statement expects: a schema problem.
        sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::Configuration(_) => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    }
}

/// See [`error_kind`]: 55P03 (lock_not_available: `lock_timeout`) and 57014 (query_canceled:
/// `statement_timeout`) are contended; SQLSTATE classes 08 (connection), 53 (resources), 57P
/// (server shutting down) and the codes 40001, 40P01 are transient; 22 (data) and 23 (integrity)
/// reject a value; 42 (undefined table or column, type mismatch, privilege) and 25006 (read
/// only transaction) are fatal.
fn postgres_error_kind(sqlstate: &str) -> ErrorKind {
    match sqlstate {
        "55P03" | "57014" => ErrorKind::Contended,
        "40001" | "40P01" => ErrorKind::Transient,
        // Read-only transaction, disk full, no such database.
        "25006" | "53100" | "3D000" => ErrorKind::Fatal,
        s if s.starts_with("08") || s.starts_with("53") || s.starts_with("57P") => {
            ErrorKind::Transient
        }
        // A value refused, a constraint, a subquery returning several rows, an exception
        // raised by a function or a trigger for this row: the records at fault fail.
        s if s.starts_with("22")
            || s.starts_with("23")
            || s.starts_with("21")
            || s.starts_with("P0")
            || s.starts_with("38")
            || s.starts_with("39")
            || s.starts_with("2F") =>
        {
            ErrorKind::Rejected
        }
        // Syntax or access rule (undefined table or column, type mismatch, privilege),
        // authorization (a password rotated, a role dropped), a feature the server lacks, a
        // system error (I/O).
        s if s.starts_with("42")
            || s.starts_with("28")
            || s.starts_with("0A")
            || s.starts_with("58") =>
        {
            ErrorKind::Fatal
        }
        _ => ErrorKind::Transient,
    }
}

/// See [`error_kind`]: SQLite's primary result code is the low byte of the extended one.
fn sqlite_error_kind(extended_code: i32) -> ErrorKind {
    const ERROR: i32 = 1; // an SQL error: no such table or column
    const PERM: i32 = 3;
    const BUSY: i32 = 5; // another connection holds the write lock past the busy timeout
    const LOCKED: i32 = 6;
    const READONLY: i32 = 8;
    const IOERR: i32 = 10;
    const CORRUPT: i32 = 11;
    const FULL: i32 = 13;
    const CANTOPEN: i32 = 14;
    const TOOBIG: i32 = 18;
    const CONSTRAINT: i32 = 19;
    const MISMATCH: i32 = 20;
    const AUTH: i32 = 23;
    const RANGE: i32 = 25;
    const NOTADB: i32 = 26;
    match extended_code & 0xff {
        ERROR | PERM | READONLY | IOERR | CORRUPT | FULL | CANTOPEN | AUTH | NOTADB => {
            ErrorKind::Fatal
        }
        TOOBIG | CONSTRAINT | MISMATCH | RANGE => ErrorKind::Rejected,
        BUSY | LOCKED => ErrorKind::Contended,
        // NOMEM, PROTOCOL and anything else: try again.
        _ => ErrorKind::Transient,
    }
}

pub(crate) fn context(doing: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError { doing, source }
}

/// An answer from the database that is not what the statement promises.
pub(crate) fn protocol(doing: &'static str, message: impl std::fmt::Display) -> DbError {
    DbError {
        doing,
        source: sqlx::Error::Protocol(message.to_string()),
    }
}

/// A statement that did something the migration's own definition forbids (an update reaching
/// rows outside its batch): no retry can help, so it is fatal.
pub(crate) fn misdefined(doing: &'static str, message: impl std::fmt::Display) -> DbError {
    DbError {
        doing,
        source: sqlx::Error::Configuration(message.to_string().into()),
    }
}

/// `?` placeholders as `$1`, `$2`... for PostgreSQL.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// A statement for `backend`: built only from the static text of this module, so it is safe.
pub(crate) fn sql_for(backend: &Database, sql: &'static str) -> SqlStr {
    match backend {
        Database::Postgres(_) => AssertSqlSafe(numbered(sql)).into_sql_str(),
        _ => sql.into_sql_str(),
    }
}

pub(crate) async fn execute(
    backend: &Database,
    sql: &'static str,
    doing: &'static str,
) -> Result<(), DbError> {
    match backend {
        Database::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Database::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .map_err(context(doing))
}

/// Runs `sql`, a statement built at run time from text this crate controls.
pub(crate) async fn execute_owned(
    backend: &Database,
    sql: String,
    doing: &'static str,
) -> Result<(), DbError> {
    let sql = AssertSqlSafe(sql);
    match backend {
        Database::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Database::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .map_err(context(doing))
}

/// Whether `table` exists.
pub(crate) async fn table_exists(backend: &Database, table: &'static str) -> Result<bool, DbError> {
    let doing = "looking for a table";
    match backend {
        Database::Sqlite(pool) => {
            sqlx::query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?")
                .bind(table)
                .fetch_one(pool)
                .await
                .map(|row| row.get::<i64, _>(0) > 0)
        }
        Database::Postgres(pool) => sqlx::query("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(pool)
            .await
            .map(|row| row.get::<bool, _>(0)),
    }
    .map_err(context(doing))
}

/// The columns of `table`, lowercase; empty when there is no such table.
pub(crate) async fn columns(
    backend: &Database,
    table: &'static str,
) -> Result<Vec<String>, DbError> {
    let doing = "reading the columns of a table";
    match backend {
        Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT lower(name) FROM pragma_table_info(?)")
                .bind(table)
                .fetch_all(pool)
                .await
        }
        Database::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT lower(attname::text) FROM pg_attribute
                  WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
            )
            .bind(table)
            .fetch_all(pool)
            .await
        }
    }
    .map_err(context(doing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_are_classified_by_what_a_retry_can_do() {
        use ErrorKind::{Contended, Fatal, Rejected, Transient};
        for (sqlstate, kind) in [
            ("40001", Transient),
            ("40P01", Transient),
            ("55P03", Contended),
            ("57014", Contended),
            ("08006", Transient),
            ("53300", Transient),
            ("57P01", Transient),
            ("22001", Rejected),
            ("23505", Rejected),
            ("21000", Rejected),
            ("P0001", Rejected),
            ("42703", Fatal),
            ("42P01", Fatal),
            ("42804", Fatal),
            ("42501", Fatal),
            ("25006", Fatal),
            ("53100", Fatal),
            ("3D000", Fatal),
            ("28P01", Fatal),
            ("0A000", Fatal),
            ("58030", Fatal),
            ("XX000", Transient),
        ] {
            assert_eq!(postgres_error_kind(sqlstate), kind, "{sqlstate}");
        }
        // SQLite: primary codes, and extended codes built on them.
        for (code, kind) in [
            (5, Contended),   // BUSY
            (517, Contended), // BUSY_SNAPSHOT
            (6, Contended),   // LOCKED
            (7, Transient),   // NOMEM
            (1, Fatal),       // ERROR: no such table or column
            (8, Fatal),       // READONLY
            (1032, Fatal),    // READONLY_DBMOVED
            (13, Fatal),      // FULL
            (19, Rejected),   // CONSTRAINT
            (2067, Rejected), // CONSTRAINT_UNIQUE
            (20, Rejected),   // MISMATCH
        ] {
            assert_eq!(sqlite_error_kind(code), kind, "{code}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("SELECT id FROM t WHERE a > ? AND b < ? LIMIT ?"),
            "SELECT id FROM t WHERE a > $1 AND b < $2 LIMIT $3"
        );
    }
}
