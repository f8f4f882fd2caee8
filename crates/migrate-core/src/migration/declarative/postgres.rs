//! A declared migration's statements on PostgreSQL.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow, PgTypeInfo};
use sqlx::{
    Arguments, AssertSqlSafe, Executor, PgConnection, PgPool, Postgres, Row, SqlSafeStr, Type,
};

use crate::database::{DbError, context, misdefined, protocol};
use crate::engine::migrator::Outcome;
use crate::migration::key::{Key, KeyColumn, KeyKind, KeyMap, KeySet, KeyValue};
use crate::migration::timeouts::BatchTimeouts;

use super::json::{keys_from_page, states};
use super::sql::{Args, Bind, Plan, Statement, Value, quote_table};
use super::{Batch, Runner};

#[derive(Debug)]
pub(super) struct PostgresRunner {
    pool: PgPool,
    /// Longest wait of a batch for a lock, and longest statement (see
    /// `SqlMigration::with_timeouts`).
    timeouts: BatchTimeouts,
}

impl PostgresRunner {
    pub(super) fn new(pool: PgPool, timeouts: BatchTimeouts) -> PostgresRunner {
        PostgresRunner { pool, timeouts }
    }
}

/// `statement`'s SQL and its arguments for `args`.
fn bound(
    plan: &Plan,
    statement: &Statement,
    args: &Args<'_>,
    doing: &'static str,
) -> Result<(sqlx::SqlStr, PgArguments), DbError> {
    let mut arguments = PgArguments::default();
    for bind in &statement.binds {
        let added = match bind
            .value(args, &plan.key)
            .map_err(|e| protocol(doing, e))?
        {
            Value::Int(n) => arguments.add(n),
            Value::Text(text) => arguments.add(text.into_owned()),
            Value::Ints(values) => arguments.add(values),
            Value::Texts(values) => arguments.add(values),
        };
        added.map_err(|e| protocol(doing, e))?;
    }
    // The statement is the file's own SQL, which its author owns (see `sql`).
    Ok((
        AssertSqlSafe(statement.sql.clone()).into_sql_str(),
        arguments,
    ))
}

/// The type each parameter of `statement` is bound as (what [`bound`] binds).
fn parameter_types(plan: &Plan, statement: &Statement) -> Vec<PgTypeInfo> {
    let scalar = |kind: KeyKind| match kind {
        KeyKind::Integer => <i64 as Type<Postgres>>::type_info(),
        KeyKind::Text | KeyKind::Uuid => <String as Type<Postgres>>::type_info(),
    };
    statement
        .binds
        .iter()
        .map(|bind| match *bind {
            Bind::Param(_) | Bind::Batch => <String as Type<Postgres>>::type_info(),
            Bind::After(i) | Bind::End(i) => scalar(plan.key[i].kind),
            Bind::Limit => <i64 as Type<Postgres>>::type_info(),
            Bind::BatchColumn(i) => match plan.key[i].kind {
                KeyKind::Integer => <Vec<i64> as Type<Postgres>>::type_info(),
                KeyKind::Text | KeyKind::Uuid => <Vec<String> as Type<Postgres>>::type_info(),
            },
        })
        .collect()
}

/// The key in the first columns of `row` (integers read as `bigint`, text and UUIDs as
/// `text`: see `sql::Gen::read_columns`).
fn key_from_row(row: &PgRow, columns: &[KeyColumn]) -> Result<Key, sqlx::Error> {
    columns
        .iter()
        .enumerate()
        .map(|(i, column)| match column.kind {
            KeyKind::Integer => row.try_get::<i64, _>(i).map(KeyValue::Int),
            KeyKind::Text | KeyKind::Uuid => row
                .try_get::<String, _>(i)
                .map(|text| KeyValue::Text(text.into_boxed_str())),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Key::new)
}

/// The batch's bookkeeping, written in its transaction before the commit: the audit row of
/// what it migrated, and the resolution of earlier failures of what is now settled.
async fn write_journal(
    conn: &mut PgConnection,
    batch: &Batch<'_>,
    migrated: &[Key],
    outcomes: &[Outcome],
) -> Result<(), DbError> {
    let Some(journal) = batch.journal else {
        return Ok(());
    };
    let settled = super::settled_for(journal, batch.keys, outcomes);
    journal
        .write_postgres(conn, batch.args.now, migrated, &settled)
        .await
}

/// The state of each row of the batch, by key, as [`Plan::classify`] reads it.
async fn classify(
    conn: &mut PgConnection,
    plan: &Plan,
    args: &Args<'_>,
) -> Result<KeyMap<i64>, DbError> {
    let doing = "classifying a batch";
    let (sql, arguments) = bound(plan, &plan.classify, args, doing)?;
    let rows = sqlx::query_with(sql, arguments)
        .fetch_all(&mut *conn)
        .await
        .map_err(context(doing))?;
    rows.iter()
        .map(|row| {
            let key = key_from_row(row, &plan.key).map_err(context(doing))?;
            let state: i32 = row.try_get(plan.key.len()).map_err(context(doing))?;
            Ok((key, i64::from(state)))
        })
        .collect()
}

#[async_trait]
impl Runner for PostgresRunner {
    async fn columns(&self, table: &str) -> Result<Option<Vec<String>>, DbError> {
        let doing = "reading the columns of the migration's table";
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(quote_table(table))
            .fetch_one(&self.pool)
            .await
            .map_err(context(doing))?;
        if !exists {
            return Ok(None);
        }
        let columns = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped",
        )
        .bind(quote_table(table))
        .fetch_all(&self.pool)
        .await
        .map_err(context(doing))?;
        Ok(Some(columns))
    }

    fn same_column(&self, found: &str, name: &str) -> bool {
        found == name
    }

    async fn key_type_problem(
        &self,
        table: &str,
        key: &[KeyColumn],
    ) -> Result<Option<String>, DbError> {
        // The type of each key column, a domain's base type for a domain.
        let types: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL)
               FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
              WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(quote_table(table))
        .fetch_all(&self.pool)
        .await
        .map_err(context("reading the types of the key columns"))?;
        for column in key {
            let Some((_, found)) = types.iter().find(|(name, _)| *name == column.name) else {
                continue;
            };
            let accepted: &[&str] = match column.kind {
                KeyKind::Integer => &["smallint", "integer", "bigint"],
                KeyKind::Text => &["text", "character varying"],
                KeyKind::Uuid => &["uuid"],
            };
            if !accepted.contains(&found.as_str()) {
                return Ok(Some(format!(
                    "key column {} is of type {found}, which pages of a `{}` key cannot follow \
                     in its order (its comparisons with {} values are not the column's); a \
                     `{}` key column is {}",
                    column.name,
                    column.kind,
                    column.kind,
                    column.kind,
                    accepted.join(", ")
                )));
            }
        }
        Ok(None)
    }

    async fn text_in_byte_order(&self, table: &str, key: &[KeyColumn]) -> Result<bool, DbError> {
        // A column of the database's default collation follows the database's locale, by the
        // C library unless the database uses ICU (`datlocprovider`, from PostgreSQL 15; read
        // through JSON so that older servers answer too).
        let names: Vec<String> = key.iter().map(|column| column.name.clone()).collect();
        let in_byte_order: Option<bool> = sqlx::query_scalar(
            "SELECT bool_and(c.collname IN ('C', 'POSIX')
                    OR (c.collname = 'default' AND coalesce(d.provider, 'c') = 'c'
                        AND d.datcollate IN ('C', 'POSIX')))
               FROM pg_attribute a
               JOIN pg_collation c ON c.oid = a.attcollation
              CROSS JOIN (SELECT to_jsonb(db) ->> 'datlocprovider' AS provider, datcollate::text
                            FROM pg_database db WHERE datname = current_database()) d
              WHERE a.attrelid = to_regclass($1) AND a.attname::text = ANY($2)
                AND a.attnum > 0 AND NOT a.attisdropped",
        )
        .bind(quote_table(table))
        .bind(names)
        .fetch_one(&self.pool)
        .await
        .map_err(context("reading the collations of the key columns"))?;
        Ok(in_byte_order.unwrap_or(false))
    }

    async fn prepare(&self, plan: &Plan, statement: &Statement) -> Result<(), sqlx::Error> {
        let sql = AssertSqlSafe(statement.sql.clone()).into_sql_str();
        let types = parameter_types(plan, statement);
        (&self.pool).prepare_with(sql, &types).await.map(drop)
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

    /// The update reads and writes each row in one statement, guarded by the predicates, so
    /// a concurrent application write is never overwritten with stale values; the same
    /// statement classifies the keys it did not change, from the snapshot it started with.
    /// The lock and statement timeouts are set with the `BEGIN`: a batch is four round trips
    /// (begin, the update, the journal, the commit). A dry run classifies every key.
    ///
    /// A batch is first updated as a span of the table, from its first key to its last, as a
    /// hand-written loop updates a range (an index range scan, where a list of keys descends
    /// the index once per key), when the span holds as many rows as the batch has keys (see
    /// [`Plan::span_update`]); otherwise by its keys. When the span's rows turn out to be
    /// others than the batch's (a row deleted and another added since the page was read), the
    /// span's update is rolled back and the batch updated by its keys.
    async fn migrate(
        &self,
        plan: &Plan,
        batch: &Batch<'_>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, DbError> {
        let queued = std::time::Instant::now();
        let mut tx = self.begin().await?;
        crate::report_wait(queued.elapsed());
        if dry_run {
            let states = classify(&mut tx, plan, &batch.args).await?;
            tx.commit().await.map_err(context("committing a batch"))?;
            return Ok(super::outcomes(batch, &[], &states, true));
        }
        let doing = "running the migration's update";
        let in_batch: KeySet<&Key> = batch.keys.iter().collect();
        let (migrated, states) = match update_span(&mut tx, plan, batch, &in_batch).await? {
            SpanUpdate::Done(migrated, states) => (migrated, states),
            SpanUpdate::Skipped => update_keys(&mut tx, plan, batch).await?,
            SpanUpdate::OtherRows => {
                tx.rollback()
                    .await
                    .map_err(context("rolling back a batch's span"))?;
                tx = self.begin().await?;
                update_keys(&mut tx, plan, batch).await?
            }
        };
        // The update may only touch the batch's rows: anything else means an expression
        // escaped the batch's restriction. Nothing of it is kept.
        if let Some(stray) = migrated.iter().find(|key| !in_batch.contains(key)) {
            return Err(misdefined(
                doing,
                format!(
                    "the update changed row {stray}, which is not in the batch: check the \
                     migration's expressions; the batch was rolled back"
                ),
            ));
        }
        let outcomes = super::outcomes(batch, &migrated, &states, false);
        write_journal(&mut tx, batch, &migrated, &outcomes).await?;
        tx.commit().await.map_err(context("committing a batch"))?;
        Ok(outcomes)
    }

    fn set_timeouts(&mut self, timeouts: BatchTimeouts) {
        self.timeouts = timeouts;
    }

    fn timeouts(&self) -> Option<BatchTimeouts> {
        Some(self.timeouts)
    }
}

impl PostgresRunner {
    /// A batch's transaction. For it only, a row locked by another session (55P03) or a
    /// statement running too long (57014) fails the batch, which the engine retries and
    /// splits, instead of blocking it, and the application's writes to its rows, for longer.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, DbError> {
        let begin = format!("BEGIN{}", self.timeouts.set_local());
        self.pool
            .begin_with(AssertSqlSafe(begin))
            .await
            .map_err(context("starting a batch"))
    }
}

/// What updating a batch as a span found.
enum SpanUpdate {
    /// The span's rows were the batch's: the keys updated, and the state of the others.
    Done(Vec<Key>, KeyMap<i64>),
    /// The batch is not a span that can be updated as one: more or fewer rows than the batch
    /// has keys, or first and last keys that differ in more than their last column. Nothing
    /// was written.
    Skipped,
    /// The span holds as many rows as the batch, but not the batch's: the update must be
    /// rolled back.
    OtherRows,
}

/// The values of `key` but its last column's.
fn key_prefix(key: &Key) -> &[KeyValue] {
    &key.values()[..key.values().len().saturating_sub(1)]
}

/// Updates the batch as the span of the table from its first key to its last, when that span
/// holds as many rows as the batch has keys (see [`Plan::span_update`]).
async fn update_span(
    conn: &mut PgConnection,
    plan: &Plan,
    batch: &Batch<'_>,
    in_batch: &KeySet<&Key>,
) -> Result<SpanUpdate, DbError> {
    let Some(args) = batch.span_args() else {
        return Ok(SpanUpdate::Skipped);
    };
    // A key of several columns: a span within one value of the others (see `sql::Gen::span`).
    if args.after.map(key_prefix) != args.end.map(key_prefix) {
        return Ok(SpanUpdate::Skipped);
    }
    let doing = "running the migration's update";
    let (sql, arguments) = bound(plan, &plan.span_update, &args, doing)?;
    let (rows, migrated, rest): (i64, String, String) = sqlx::query_as_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    if rows != batch.keys.len() as i64 {
        return Ok(SpanUpdate::Skipped);
    }
    let migrated = keys_from_page(&migrated, &plan.key, doing)?;
    let states = states(&rest, &plan.key, doing)?;
    let theirs = migrated
        .iter()
        .chain(states.keys())
        .all(|key| in_batch.contains(key));
    if !theirs || migrated.len() + states.len() != batch.keys.len() {
        return Ok(SpanUpdate::OtherRows);
    }
    Ok(SpanUpdate::Done(migrated, states))
}

/// Updates the batch's keys: the keys updated, and the state of the batch's other rows.
async fn update_keys(
    conn: &mut PgConnection,
    plan: &Plan,
    batch: &Batch<'_>,
) -> Result<(Vec<Key>, KeyMap<i64>), DbError> {
    let doing = "running the migration's update";
    let (sql, arguments) = bound(plan, &plan.update, &batch.args, doing)?;
    let (migrated, rest): (String, String) = sqlx::query_as_with(sql, arguments)
        .fetch_one(&mut *conn)
        .await
        .map_err(context(doing))?;
    Ok((
        keys_from_page(&migrated, &plan.key, doing)?,
        states(&rest, &plan.key, doing)?,
    ))
}
