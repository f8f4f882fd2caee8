//! A declared migration's statements on SQLite.

use std::borrow::Cow;

use async_trait::async_trait;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Arguments, AssertSqlSafe, Executor, SqlSafeStr, SqliteConnection, SqlitePool};

use crate::database::{DbError, context, protocol};
use crate::engine::migrator::{Outcome, RecordFailure};
use crate::migration::key::{Key, KeyColumn, KeyMap, KeySet};

use super::json::{keys_from_json, keys_from_page, states};
use super::sql::{self, Args, Plan, Statement, Value};
use super::{Batch, Runner};

#[derive(Debug)]
pub(super) struct SqliteRunner {
    pool: SqlitePool,
    /// SQLite has one writer at a time: batches wait for it here, on an async lock that hands
    /// it over the moment it is free, rather than in SQLite's busy handler, which sleeps for
    /// growing intervals. Held from `BEGIN IMMEDIATE` to the commit; never by a dry run.
    /// Shared with the progress store's writes (see `SqlMigration::sharing_writer`).
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl SqliteRunner {
    pub(super) fn new(pool: SqlitePool) -> SqliteRunner {
        SqliteRunner {
            pool,
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

/// `statement`'s SQL and its arguments for `args`.
fn bound(
    plan: &Plan,
    statement: &Statement,
    args: &Args<'_>,
    doing: &'static str,
) -> Result<(sqlx::SqlStr, SqliteArguments), DbError> {
    let mut arguments = SqliteArguments::default();
    for bind in &statement.binds {
        let added = match bind
            .value(args, &plan.key)
            .map_err(|e| protocol(doing, e))?
        {
            Value::Int(n) => arguments.add(n),
            Value::Text(text) => arguments.add(text.into_owned()),
            Value::Ints(_) | Value::Texts(_) => {
                unreachable!("SQLite statements bind JSON, not arrays")
            }
        };
        added.map_err(|e| protocol(doing, e))?;
    }
    // The statement is the file's own SQL, which its author owns (see `sql`).
    Ok((
        AssertSqlSafe(statement.sql.clone()).into_sql_str(),
        arguments,
    ))
}

/// The state of each row of the batch, by key, as [`Plan::classify`] reads it.
async fn classify(
    conn: &mut SqliteConnection,
    plan: &Plan,
    args: &Args<'_>,
) -> Result<KeyMap<i64>, DbError> {
    let doing = "classifying a batch";
    let (sql, arguments) = bound(plan, &plan.classify, args, doing)?;
    let json: String = sqlx::query_scalar_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    states(&json, &plan.key, doing)
}

/// The batch's bookkeeping, written in its transaction before the commit: the audit row of
/// what it migrated, and the resolution of earlier failures of what is now settled.
async fn write_journal(
    conn: &mut SqliteConnection,
    batch: &Batch<'_>,
    migrated: &[Key],
    outcomes: &[Outcome],
) -> Result<(), DbError> {
    let Some(journal) = batch.journal else {
        return Ok(());
    };
    let settled = super::settled_for(journal, batch.keys, outcomes);
    journal
        .write_sqlite(conn, batch.args.now, migrated, &settled)
        .await
}

#[async_trait]
impl Runner for SqliteRunner {
    fn set_writer(&mut self, writer: std::sync::Arc<tokio::sync::Mutex<()>>) {
        self.writer = writer;
    }

    async fn columns(&self, table: &str) -> Result<Option<Vec<String>>, DbError> {
        let (schema, table) = match table.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("main", table),
        };
        let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info(?, ?)")
            .bind(table)
            .bind(schema)
            .fetch_all(&self.pool)
            .await
            .map_err(context("reading the columns of the migration's table"))?;
        Ok((!columns.is_empty()).then_some(columns))
    }

    fn same_column(&self, found: &str, name: &str) -> bool {
        found.eq_ignore_ascii_case(name)
    }

    async fn text_in_byte_order(&self, table: &str, _key: &[KeyColumn]) -> Result<bool, DbError> {
        // A column's collation is in its table's definition: with no `COLLATE` anywhere in
        // it, every column compares text as `BINARY` (by its bytes).
        let (schema, table) = match table.split_once('.') {
            Some((schema, table)) => (schema, table),
            None => ("main", table),
        };
        let sql = format!(
            "SELECT sql FROM \"{}\".sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            schema.replace('"', "\"\"")
        );
        let definition: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(table)
            .fetch_optional(&self.pool)
            .await
            .map_err(context("reading the definition of the migration's table"))?;
        Ok(definition.is_some_and(|sql| !sql.to_ascii_uppercase().contains("COLLATE")))
    }

    async fn prepare(&self, _plan: &Plan, statement: &Statement) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(statement.sql.clone()).into_sql_str();
        (&self.pool).prepare(sql).await.map(drop)
    }

    async fn page(
        &self,
        plan: &Plan,
        statement: &Statement,
        args: Args<'_>,
    ) -> Result<Vec<Key>, DbError> {
        let doing = "reading a page of keys";
        let (sql, arguments) = bound(plan, statement, &args, doing)?;
        let json: String = sqlx::query_scalar_with(sql, arguments)
            .fetch_one(&self.pool)
            .await
            .map_err(context(doing))?;
        keys_from_page(&json, &plan.key, doing)
    }

    async fn count(
        &self,
        plan: &Plan,
        statement: &Statement,
        args: Args<'_>,
    ) -> Result<u64, DbError> {
        let doing = "counting keys";
        let (sql, arguments) = bound(plan, statement, &args, doing)?;
        let count: i64 = sqlx::query_scalar_with(sql, arguments)
            .fetch_one(&self.pool)
            .await
            .map_err(context(doing))?;
        Ok(count.max(0) as u64)
    }

    /// Under SQLite's single write lock nothing changes between statements. The batch is
    /// updated much as a hand-written loop would: one read of which of its rows are not pending
    /// (a cheap predicate, and only their keys cross), one update of the others guarded by both
    /// predicates, and only when the update left some of them, a read of those (see
    /// [`update_first`]). A batch with a key that has no row is classified first instead (see
    /// [`classify_first`]). A dry run reads without a transaction or the write lock: one
    /// statement sees one snapshot.
    async fn migrate(
        &self,
        plan: &Plan,
        batch: &Batch<'_>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, DbError> {
        if dry_run {
            let mut conn = self
                .pool
                .acquire()
                .await
                .map_err(context("starting a batch"))?;
            let states = classify(&mut conn, plan, &batch.args).await?;
            return Ok(super::outcomes(batch, &[], &states, true));
        }
        let queued = std::time::Instant::now();
        let _writer = self.writer.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(context("starting a batch"))?;
        crate::report_wait(queued.elapsed());
        let outcomes = match span_first(&mut tx, plan, batch).await? {
            Some(outcomes) => outcomes,
            None => match update_first(&mut tx, plan, batch).await? {
                Some(outcomes) => outcomes,
                None => classify_first(&mut tx, plan, batch).await?,
            },
        };
        tx.commit().await.map_err(context("committing a batch"))?;
        Ok(outcomes)
    }
}

/// Updates the batch as a span of the table, as a hand-written loop updates a range of keys,
/// when the rows from its first key to its last are its keys and no other, in its order (a
/// batch of a page, which is every key of the table in that span as the page was read). One
/// read of the span (at most one row more than the batch: bounded whatever the keys), with
/// whether each row is pending; one update of the span, guarded by both predicates; and only
/// when it did not update every pending row, a read of those it left (not valid: failures).
/// Scans of a span read the table's rows in order, where a list of keys looks each one up.
///
/// When the span holds other rows (a key deleted or added since the page was read, or a batch
/// that is not a span: keys from a file or failures tried again), nothing is written and
/// `None` returned: the batch is then updated by its keys (see [`update_first`]).
async fn span_first(
    conn: &mut SqliteConnection,
    plan: &Plan,
    batch: &Batch<'_>,
) -> Result<Option<Vec<Outcome>>, DbError> {
    let Some(args) = batch.span_args() else {
        return Ok(None);
    };
    let doing = "reading the rows of a batch's span";
    let (sql, arguments) = bound(plan, &plan.span, &args, doing)?;
    let (json, flags): (String, Option<String>) = sqlx::query_as_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    let rows = keys_from_page(&json, &plan.key, doing)?;
    let flags = flags.unwrap_or_default();
    if rows != batch.keys || flags.len() != rows.len() {
        return Ok(None);
    }
    let pending: Vec<bool> = flags.bytes().map(|flag| flag == b'1').collect();
    let expected = pending.iter().filter(|p| **p).count() as u64;
    let updated = match expected {
        0 => 0,
        _ => {
            let doing = "running the migration's update";
            let (sql, arguments) = bound(plan, &plan.span_update, &args, doing)?;
            sqlx::query_with(sql, arguments)
                .execute(&mut *conn)
                .await
                .map_err(context(doing))?
                .rows_affected()
        }
    };
    let mut left = KeyMap::default();
    if updated != expected {
        left = read_left(conn, plan, &plan.span_leftover, &args, updated, expected).await?;
        let pending_left = batch
            .keys
            .iter()
            .zip(&pending)
            .filter(|(key, pending)| **pending && left.contains_key(*key))
            .count();
        if pending_left != left.len() {
            return Err(changed_answer(updated, left.len(), expected));
        }
    }
    let mut migrated = Vec::with_capacity(expected as usize);
    let outcomes: Vec<Outcome> = batch
        .keys
        .iter()
        .zip(&pending)
        .map(|(key, pending)| {
            if !pending {
                Outcome::PreviouslyMigrated
            } else if left.contains_key(key) {
                Outcome::Failed(RecordFailure::permanent(batch.message))
            } else {
                migrated.push(key.clone());
                Outcome::Migrated
            }
        })
        .collect();
    write_journal(conn, batch, &migrated, &outcomes).await?;
    Ok(Some(outcomes))
}

/// Reads which of the batch's rows are not pending, then updates the others, guarded by both
/// predicates; when it did not update them all, reads the state of those it left (not valid:
/// failures). When a key has no row, nothing is done and `None` returned: the batch is then
/// classified first (see [`classify_first`]), which tells gone keys apart.
async fn update_first(
    conn: &mut SqliteConnection,
    plan: &Plan,
    batch: &Batch<'_>,
) -> Result<Option<Vec<Outcome>>, DbError> {
    let doing = "reading which rows of a batch are not pending";
    let (sql, arguments) = bound(plan, &plan.settled, &batch.args, doing)?;
    let (found, json): (i64, String) = sqlx::query_as_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    if found != batch.keys.len() as i64 {
        return Ok(None);
    }
    let before: KeySet = keys_from_json(&json, &plan.key, doing)?;
    let pending: Cow<'_, [Key]> = if before.is_empty() {
        Cow::Borrowed(batch.keys)
    } else {
        Cow::Owned(
            batch
                .keys
                .iter()
                .filter(|key| !before.contains(*key))
                .cloned()
                .collect(),
        )
    };
    let updated = match pending.is_empty() {
        true => 0,
        false => update(conn, plan, batch, &pending).await?,
    };
    let mut left = KeyMap::default();
    if updated != pending.len() as u64 {
        let args = Args {
            batch: &pending,
            ..batch.args
        };
        let expected = pending.len() as u64;
        left = read_left(conn, plan, &plan.leftover, &args, updated, expected).await?;
    }
    let outcomes: Vec<Outcome> = batch
        .keys
        .iter()
        .map(|key| {
            if before.contains(key) {
                Outcome::PreviouslyMigrated
            } else if left.contains_key(key) {
                Outcome::Failed(RecordFailure::permanent(batch.message))
            } else {
                Outcome::Migrated
            }
        })
        .collect();
    let migrated: Cow<'_, [Key]> = if left.is_empty() {
        pending
    } else {
        Cow::Owned(
            pending
                .iter()
                .filter(|key| !left.contains_key(*key))
                .cloned()
                .collect(),
        )
    };
    write_journal(conn, batch, &migrated, &outcomes).await?;
    Ok(Some(outcomes))
}

/// After an update that changed `updated` of `pending` rows, reads the state of the rows it
/// left (`statement`: [`Plan::leftover`] or [`Plan::span_leftover`]), which must be the rest of
/// them, and not valid: failures.
async fn read_left(
    conn: &mut SqliteConnection,
    plan: &Plan,
    statement: &Statement,
    args: &Args<'_>,
    updated: u64,
    pending: u64,
) -> Result<KeyMap<i64>, DbError> {
    let doing = "reading the rows a batch's update left";
    let (sql, arguments) = bound(plan, statement, args, doing)?;
    let json: String = sqlx::query_scalar_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    let left = states(&json, &plan.key, doing)?;
    if updated + left.len() as u64 != pending || left.values().any(|state| *state != sql::INVALID) {
        return Err(changed_answer(updated, left.len(), pending));
    }
    Ok(left)
}

/// The predicates gave another answer in the update than in the reads around it under the
/// same lock (a predicate that is not deterministic): the batch is rolled back, and each record
/// tried alone.
fn changed_answer(updated: u64, left: usize, pending: u64) -> DbError {
    protocol(
        "running the migration's update",
        format!("{updated} rows updated and {left} left of {pending} pending"),
    )
}

/// Classifies the batch, then updates only its pending, valid keys, which must all change.
async fn classify_first(
    conn: &mut SqliteConnection,
    plan: &Plan,
    batch: &Batch<'_>,
) -> Result<Vec<Outcome>, DbError> {
    let states = classify(conn, plan, &batch.args).await?;
    let pending: Vec<Key> = batch
        .keys
        .iter()
        .filter(|key| states.get(*key) == Some(&sql::PENDING))
        .cloned()
        .collect();
    if !pending.is_empty() {
        let updated = update(conn, plan, batch, &pending).await?;
        if updated != pending.len() as u64 {
            // The predicates gave another answer in the update than in the classifying read
            // under the same lock (a predicate that is not deterministic): roll back, and let
            // each record be tried alone.
            return Err(protocol(
                "running the migration's update",
                format!(
                    "{updated} rows updated where {} were expected",
                    pending.len()
                ),
            ));
        }
    }
    let outcomes = super::outcomes(batch, &pending, &states, false);
    write_journal(conn, batch, &pending, &outcomes).await?;
    Ok(outcomes)
}

/// The guarded update of `keys`; the number of rows it changed.
async fn update(
    conn: &mut SqliteConnection,
    plan: &Plan,
    batch: &Batch<'_>,
    keys: &[Key],
) -> Result<u64, DbError> {
    let doing = "running the migration's update";
    let args = Args {
        batch: keys,
        ..batch.args
    };
    let (sql, arguments) = bound(plan, &plan.update, &args, doing)?;
    Ok(sqlx::query_with(sql, arguments)
        .execute(&mut *conn)
        .await
        .map_err(context(doing))?
        .rows_affected())
}
