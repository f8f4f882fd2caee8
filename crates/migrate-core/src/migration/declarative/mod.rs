//! Migrations declared in a TOML file: [`SqlMigration`], a [`Migration`] whose table, key and
//! change are data.
//!
//! - `spec.rs` reads and checks the file ([`MigrationSpec`], [`SpecError`]);
//! - `sql.rs` writes its statements for SQLite or PostgreSQL (a pure function of the file);
//! - `sqlite.rs` and `postgres.rs` run them, one implementation of [`Runner`] per database,
//!   chosen once when the migration is built;
//! - this file holds what both share: the outcome of each key of a batch, and the batch's
//!   bookkeeping call.

mod json;
mod postgres;
mod spec;
mod sql;
mod sqlite;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;

use crate::components::component::BoxError;
use crate::connection::{Backend, Database};
use crate::database::DbError;
use crate::engine::migrator::{BatchError, Outcome, PreflightError, RecordFailure};
use crate::migration::key::{Key, KeyColumn, KeyKind, KeyMap, KeySet, KeyValue};
use crate::migration::timeouts::BatchTimeouts;
use crate::migration::{Migration, Noun};
use crate::store::bookkeeping::BatchJournal;

pub use spec::{MigrationSpec, SpecError};

use spec::Dialect;
use sql::{Args, Plan, Statement};

/// A migration declared in a TOML file: any table, any key, a change written as SQL.
///
/// # The file
///
/// ```toml
/// # migrations/orders-normalize.toml: tidy the status and currency of old orders.
/// name = "orders-normalize"          # default: the file's name without `.toml`
/// table = "orders"                   # or "schema.table"; names are quoted as written
/// # The key columns, in the order that sorts the table: integer, text or uuid.
/// key = [
///   { column = "region", type = "text" },
///   { column = "order_no", type = "integer" },
/// ]
/// noun = { one = "order", many = "orders" }   # default: record, records
/// batch-size = 500                   # default: 1000
///
/// # Which rows still need the change: the write's guard, so that no row is changed twice.
/// pending = "normalized_at IS NULL"
/// # Pending rows that are not valid are not changed: each is a failure with `message`.
/// valid = "lower(trim(status)) IN ('new', 'paid', 'shipped', 'cancelled')"
/// message = "unknown order status"
///
/// # The change: column = SQL expression, evaluated on the row as it was.
/// [set]
/// status = "lower(trim(status))"
/// currency = "upper(trim(currency))"
/// normalized_at = "{now}"            # the batch's time, RFC 3339 text: 2026-01-02T03:04:05Z
///
/// # Text values bound as parameters, used as {name} in any expression.
/// [params]
/// blanks = " \t"
///
/// # What differs on one database: replaces `pending`, `valid`, or assignments of `set`
/// # (one column at a time; a column only set here is added).
/// [postgres.set]
/// status = "lower(btrim(status, {blanks}))"
/// ```
///
/// Expressions and predicates are SQL fragments that belong to the file's author, pasted into
/// the statements as written (predicates between parentheses); names (`table`, key and `set`
/// columns) must be plain identifiers and are always quoted. A predicate that is NULL counts as
/// false. `{now}` and the `[params]` names are the only tokens: braces around anything else
/// (a JSON literal) are SQL text. On SQLite, keep UUIDs as canonical lowercase text.
///
/// # What it runs
///
/// Pages are keyset pages on row values, `WHERE (k1, k2) > (?, ?) ORDER BY k1, k2 LIMIT ?`,
/// returned in the database's order (its collation for text, never re-sorted here). A batch is
/// one transaction: the update applies `set` to the batch's rows that are pending and valid,
/// and every other key is classified in the same transaction: a missing row is
/// [`Outcome::Gone`], a row no longer pending [`Outcome::PreviouslyMigrated`], a pending row
/// that is not valid a permanent failure with `message`, and a pending, valid row that the
/// update did not change (a concurrent write) a transient failure, tried again. A dry run
/// only classifies.
///
/// A batch that is every row from its first key to its last (a batch cut from a page) is
/// updated as that range, an index range scan, once the database confirms that the range
/// holds the batch's rows and no other; any other batch is updated by its keys.
#[derive(Debug)]
pub struct SqlMigration {
    /// The file, as read.
    spec: MigrationSpec,
    /// Its statements for the backend.
    plan: Plan,
    /// Runs them: one implementation per database, chosen when the migration is built.
    runner: Box<dyn Runner>,
    /// The database, for the bookkeeping tables.
    database: Database,
    /// The audit and failure bookkeeping each batch writes in its transaction, prepared
    /// (its tables created) before the first batch that writes: never on a dry run.
    journal: tokio::sync::OnceCell<BatchJournal>,
    /// Whether a page's order is checked here rather than sorted by the database: keys of
    /// integers, and keys of integers and text once [`check`](Migration::check) found that
    /// the database orders the text by its bytes, as Rust does.
    checks_page_order: std::sync::atomic::AtomicBool,
}

impl SqlMigration {
    /// Reads the migration file at `path` for `backend`.
    pub fn from_file(path: impl AsRef<Path>, backend: &Backend) -> Result<SqlMigration, SpecError> {
        SqlMigration::new(MigrationSpec::from_file(path)?, backend)
    }

    /// The migration `spec` on `backend` (SQLite or PostgreSQL).
    pub fn new(spec: MigrationSpec, backend: &Backend) -> Result<SqlMigration, SpecError> {
        let Some(database) = backend.database() else {
            return Err(SpecError::Simulated { file: spec.file });
        };
        let (dialect, runner): (Dialect, Box<dyn Runner>) = match &database {
            Database::Sqlite(pool) => (
                Dialect::Sqlite,
                Box::new(sqlite::SqliteRunner::new(pool.clone())),
            ),
            Database::Postgres(pool) => (
                Dialect::Postgres,
                Box::new(postgres::PostgresRunner::new(
                    pool.clone(),
                    BatchTimeouts::default(),
                )),
            ),
        };
        let plan = Plan::new(&spec, dialect);
        Ok(SqlMigration {
            checks_page_order: plan.checks_page_order.into(),
            plan,
            spec,
            runner,
            database,
            journal: tokio::sync::OnceCell::new(),
        })
    }

    /// Bounds each batch's wait for a row lock on PostgreSQL (its `lock_timeout`), keeping
    /// the other timeouts: see [`SqlMigration::with_timeouts`].
    pub fn with_lock_timeout(mut self, lock_timeout: Duration) -> SqlMigration {
        if let Some(timeouts) = self.runner.timeouts() {
            self.runner.set_timeouts(timeouts.with_lock(lock_timeout));
        }
        self
    }

    /// Bounds each batch's wait for a lock and each of its statements on PostgreSQL (its
    /// `lock_timeout` and `statement_timeout`; [`BatchTimeouts::default`] unless set): a batch
    /// that times out fails as contended, and the engine retries it, splits it, and leaves
    /// the records still locked for the next run. No effect on SQLite.
    pub fn with_timeouts(mut self, timeouts: BatchTimeouts) -> SqlMigration {
        self.runner.set_timeouts(timeouts);
        self
    }

    /// Takes turns for SQLite's single writer on `writer`, the lock the progress store's
    /// writes take too ([`Connection::writer`](crate::Connection::writer)): without it the
    /// two would meet in SQLite's busy handler, and a short busy timeout would fail them.
    pub fn sharing_writer(
        mut self,
        writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    ) -> SqlMigration {
        self.runner.set_writer(writer);
        self
    }

    /// The file and what it declares.
    pub fn spec(&self) -> &MigrationSpec {
        &self.spec
    }

    /// Whether pages of keys are read in the order the table's index gives them and checked
    /// here, rather than sorted again by the database: keys of integers, and keys of integers
    /// and text once [`check`](Migration::check) found that the database orders their text by
    /// its bytes (SQLite's `BINARY`, PostgreSQL's `C` or `POSIX`). Either way, pages are in
    /// the database's order.
    pub fn checks_page_order(&self) -> bool {
        self.checks_page_order
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl Migration for SqlMigration {
    fn name(&self) -> &str {
        &self.spec.name
    }

    fn noun(&self) -> &Noun {
        &self.spec.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.spec.key
    }

    async fn check(&self) -> Result<(), BoxError> {
        let file = &self.spec.file;
        let table = &self.spec.table;
        let Some(columns) = self.runner.columns(table).await? else {
            return Err(PreflightError::new(format!(
                "{file}: there is no table {table} (named by `table`)"
            ))
            .into());
        };
        let has = |name: &str| columns.iter().any(|c| self.runner.same_column(c, name));
        let missing: Vec<&str> = self
            .spec
            .key
            .iter()
            .map(|k| k.name.as_str())
            .chain(
                self.spec
                    .resolve(self.plan.dialect)
                    .set
                    .iter()
                    .map(|(_, c, _)| *c),
            )
            .filter(|name| !has(name))
            .collect();
        if !missing.is_empty() {
            return Err(PreflightError::new(format!(
                "{file}: table {table} has no column {} (named by `key` or `set`)",
                missing.join(", ")
            ))
            .into());
        }
        if let Some(problem) = self.runner.key_type_problem(table, &self.spec.key).await? {
            return Err(PreflightError::new(format!("{file}: {problem}")).into());
        }
        let integers_and_text = self
            .spec
            .key
            .iter()
            .all(|column| matches!(column.kind, KeyKind::Integer | KeyKind::Text));
        if integers_and_text
            && !self.plan.checks_page_order
            && self
                .runner
                .text_in_byte_order(table, &self.spec.key)
                .await?
        {
            self.checks_page_order
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let statements = self
            .plan
            .fragments
            .iter()
            .map(|(key, s)| (format!("in `{key}`"), s))
            .chain([
                ("in the page query".to_owned(), self.plan.page(true, true)),
                (
                    "in the sorted page query".to_owned(),
                    self.plan.ordered_page(true, true),
                ),
                ("in the count query".to_owned(), self.plan.count(true, true)),
                ("in the classifying query".to_owned(), &self.plan.classify),
                (
                    "in the query before the update".to_owned(),
                    &self.plan.settled,
                ),
                (
                    "in the query after the update".to_owned(),
                    &self.plan.leftover,
                ),
                ("in the update".to_owned(), &self.plan.update),
                ("in the query of a span".to_owned(), &self.plan.span),
                ("in the update of a span".to_owned(), &self.plan.span_update),
                (
                    "in the query after the update of a span".to_owned(),
                    &self.plan.span_leftover,
                ),
            ]);
        for (place, statement) in statements.filter(|(_, s)| !s.sql.is_empty()) {
            if let Err(error) = self.runner.prepare(&self.plan, statement).await {
                return Err(match error {
                    sqlx::Error::Database(e) => {
                        PreflightError::new(format!("{file}: {place}: {e}")).into()
                    }
                    other => Box::new(crate::database::context(
                        "preparing the migration's statements",
                    )(other)),
                });
            }
        }
        Ok(())
    }

    async fn page(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        let args = Args {
            after,
            end,
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            ..Args::default()
        };
        let (after_some, end_some) = (after.is_some(), end.is_some());
        if !self
            .checks_page_order
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let statement = self.plan.ordered_page(after_some, end_some);
            return Ok(self.runner.page(&self.plan, statement, args).await?);
        }
        let keys = self
            .runner
            .page(&self.plan, self.plan.page(after_some, end_some), args)
            .await?;
        if !ascending(&keys) {
            // Read in another order than the subquery's: sorted by the database instead.
            let statement = self.plan.ordered_page(after_some, end_some);
            return Ok(self.runner.page(&self.plan, statement, args).await?);
        }
        Ok(keys)
    }

    async fn remaining(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
    ) -> Result<Option<u64>, BoxError> {
        let args = Args {
            after,
            end,
            ..Args::default()
        };
        let statement = self.plan.count(after.is_some(), end.is_some());
        Ok(Some(self.runner.count(&self.plan, statement, args).await?))
    }

    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let journal = if dry_run {
            None
        } else {
            let prepare = || BatchJournal::prepare(&self.database, &self.spec.name);
            Some(self.journal.get_or_try_init(prepare).await?)
        };
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let batch = Batch {
            keys,
            journal,
            args: Args {
                now: &now,
                params: &self.spec.params,
                batch: keys,
                ..Args::default()
            },
            message: self.spec.message.as_deref().unwrap_or("not valid"),
        };
        self.runner
            .migrate(&self.plan, &batch, dry_run)
            .await
            .map_err(DbError::into_checked_batch_error)
    }

    fn default_batch_size(&self) -> usize {
        self.spec.batch_size.unwrap_or(1000)
    }

    /// A `batch-size` in the migration's file is explicit: it stays fixed.
    fn adaptive_batch_size(&self) -> bool {
        self.spec.batch_size.is_none()
    }
}

/// A batch to migrate: its keys, the values of its statements' parameters, the message of its
/// invalid rows, and its bookkeeping (none on a dry run).
#[derive(Debug)]
struct Batch<'a> {
    keys: &'a [Key],
    journal: Option<&'a BatchJournal>,
    args: Args<'a>,
    message: &'a str,
}

impl<'a> Batch<'a> {
    /// The batch as a span of the table: its first key to its last, both included, read at
    /// most one row past the batch's size (so that a span holding other rows shows it whatever
    /// their number). `None` for an empty batch.
    fn span_args(&self) -> Option<Args<'a>> {
        let (first, last) = (self.keys.first()?, self.keys.last()?);
        Some(Args {
            after: Some(first),
            end: Some(last),
            limit: i64::try_from(self.keys.len() + 1).unwrap_or(i64::MAX),
            ..self.args
        })
    }
}

/// Runs the statements of a [`Plan`] on one kind of database.
#[async_trait]
trait Runner: Send + Sync + std::fmt::Debug {
    /// The columns of `table` (`schema.table`), or `None` when there is no such table.
    async fn columns(&self, table: &str) -> Result<Option<Vec<String>>, DbError>;

    /// Why a key column of `table` cannot be paged as the file declares it, if one cannot:
    /// its comparisons with a bound value of the declared type would follow another order than
    /// the column's own (PostgreSQL compares a `citext` or `char(n)` column with a `text` value
    /// as text, while its index and `ORDER BY` follow the column's type), so keyset pages
    /// would skip or repeat keys. SQLite compares by the column's collation: nothing to check.
    async fn key_type_problem(
        &self,
        _table: &str,
        _key: &[KeyColumn],
    ) -> Result<Option<String>, DbError> {
        Ok(None)
    }

    /// Whether the database orders every text column of `key` by its bytes (SQLite's
    /// `BINARY`, PostgreSQL's `C` or `POSIX`), as Rust compares strings: then the order of a
    /// page of such keys can be checked here instead of sorted there. `false` when unsure.
    async fn text_in_byte_order(&self, table: &str, key: &[KeyColumn]) -> Result<bool, DbError>;

    /// Whether the column found as `found` is the column the file names `name` (SQLite
    /// ignores the case of names, quoted or not; PostgreSQL does not, once they are quoted).
    fn same_column(&self, found: &str, name: &str) -> bool;

    /// Prepares `statement` without running it: the database's verdict on the file's SQL.
    async fn prepare(&self, plan: &Plan, statement: &Statement) -> Result<(), sqlx::Error>;

    /// A page of keys, in the database's order.
    async fn page(
        &self,
        plan: &Plan,
        statement: &Statement,
        args: Args<'_>,
    ) -> Result<Vec<Key>, DbError>;

    /// A count of keys.
    async fn count(
        &self,
        plan: &Plan,
        statement: &Statement,
        args: Args<'_>,
    ) -> Result<u64, DbError>;

    /// Migrates (or, on a dry run, classifies) a batch in one transaction, its bookkeeping
    /// included: one outcome per key.
    async fn migrate(
        &self,
        plan: &Plan,
        batch: &Batch<'_>,
        dry_run: bool,
    ) -> Result<Vec<Outcome>, DbError>;

    /// See [`SqlMigration::with_timeouts`].
    fn set_timeouts(&mut self, _timeouts: BatchTimeouts) {}

    /// The timeouts set, on a backend that has them.
    fn timeouts(&self) -> Option<BatchTimeouts> {
        None
    }

    /// See [`SqlMigration::sharing_writer`].
    fn set_writer(&mut self, _writer: std::sync::Arc<tokio::sync::Mutex<()>>) {}
}

/// One outcome per key of a batch: `migrated` were updated now; `states` are the states the
/// batch's transaction read of the other rows ([`sql::PENDING`] and so on; a key without a
/// state has no row).
fn outcomes(
    batch: &Batch<'_>,
    migrated: &[Key],
    states: &KeyMap<i64>,
    dry_run: bool,
) -> Vec<Outcome> {
    let migrated: KeySet<&Key> = migrated.iter().collect();
    batch
        .keys
        .iter()
        .map(|key| {
            if migrated.contains(key) {
                return Outcome::Migrated;
            }
            match states.get(key) {
                // Deleted since it was paged: nothing to migrate.
                None => Outcome::Gone,
                Some(&sql::NOT_PENDING) => Outcome::PreviouslyMigrated,
                Some(&sql::INVALID) => Outcome::Failed(RecordFailure::permanent(batch.message)),
                Some(_) if dry_run => Outcome::Migrated,
                // Pending and valid, yet the update did not change it: a concurrent write
                // changed it between the statements. Another try will see it as it is now.
                Some(_) => Outcome::Failed(RecordFailure::transient(format!(
                    "{key} changed while it was being migrated"
                ))),
            }
        })
        .collect()
}

/// Whether keys of integers and text are in ascending order, each after the one before, text
/// compared by its bytes.
fn ascending(keys: &[Key]) -> bool {
    use std::cmp::Ordering;
    let order = |a: &Key, b: &Key| -> Option<Ordering> {
        if a.values().len() != b.values().len() {
            return None;
        }
        for (x, y) in a.values().iter().zip(b.values()) {
            match (x, y) {
                (KeyValue::Int(x), KeyValue::Int(y)) if x == y => {}
                (KeyValue::Int(x), KeyValue::Int(y)) => return Some(x.cmp(y)),
                (KeyValue::Text(x), KeyValue::Text(y)) if x == y => {}
                (KeyValue::Text(x), KeyValue::Text(y)) => {
                    return Some(x.as_bytes().cmp(y.as_bytes()));
                }
                _ => return None,
            }
        }
        Some(Ordering::Equal)
    };
    keys.windows(2)
        .all(|pair| order(&pair[0], &pair[1]) == Some(Ordering::Less))
}

/// What `journal` needs of the batch's settled keys (see [`settled`]): collected only when it
/// resolves failures, since it is a clone of every key of every batch.
fn settled_for(journal: &BatchJournal, keys: &[Key], outcomes: &[Outcome]) -> Vec<Key> {
    match journal.resolves_failures() {
        true => settled(keys, outcomes),
        false => Vec::new(),
    }
}

/// The keys of a batch whose records are settled: migrated now, found migrated, or gone (an
/// earlier failure of theirs no longer stands).
fn settled(keys: &[Key], outcomes: &[Outcome]) -> Vec<Key> {
    keys.iter()
        .zip(outcomes)
        .filter(|(_, outcome)| !matches!(outcome, Outcome::Failed(_)))
        .map(|(key, _)| key.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_of_integer_and_text_keys_are_checked_for_their_order() {
        let k = |values: &[i64]| Key::new(values.iter().map(|n| KeyValue::Int(*n)));
        assert!(ascending(&[]));
        assert!(ascending(&[k(&[5])]));
        assert!(ascending(&[k(&[-3]), k(&[2]), k(&[10])]));
        assert!(!ascending(&[k(&[2]), k(&[10]), k(&[3])]), "out of order");
        assert!(!ascending(&[k(&[2]), k(&[2])]), "the same key twice");
        assert!(ascending(&[k(&[1, 9]), k(&[2, 0]), k(&[2, 1])]));
        assert!(!ascending(&[k(&[2, 1]), k(&[1, 9])]));
        let t = |text: &str, n: i64| Key::new([KeyValue::Text(text.into()), KeyValue::Int(n)]);
        assert!(
            ascending(&[t("B", 9), t("a", 1), t("a", 2), t("ab", 0)]),
            "by bytes"
        );
        assert!(!ascending(&[t("a", 1), t("B", 2)]), "not by a collation");
        assert!(!ascending(&[t("a", 2), t("a", 1)]));
        assert!(
            !ascending(&[t("é", 1), t("z", 1)]),
            "UTF-8 bytes: é after z"
        );
        assert!(
            !ascending(&[Key::int(1), Key::text("2")]),
            "values of different kinds do not compare"
        );
    }

    #[test]
    fn each_key_of_a_batch_gets_its_own_outcome() {
        let keys: Vec<Key> = (1..=5).map(Key::int).collect();
        let batch = Batch {
            keys: &keys,
            journal: None,
            args: Args::default(),
            message: "bad status",
        };
        let states = KeyMap::from_iter([
            (Key::int(2), sql::NOT_PENDING),
            (Key::int(3), sql::INVALID),
            (Key::int(4), sql::PENDING),
        ]);
        let outcomes = outcomes(&batch, &[Key::int(1)], &states, false);
        assert_eq!(outcomes[0], Outcome::Migrated);
        assert_eq!(outcomes[1], Outcome::PreviouslyMigrated);
        assert_eq!(
            outcomes[2],
            Outcome::Failed(RecordFailure::permanent("bad status"))
        );
        assert!(matches!(&outcomes[3], Outcome::Failed(f) if f.retryable));
        assert_eq!(outcomes[4], Outcome::Gone);
        assert_eq!(
            settled(&keys, &outcomes),
            [Key::int(1), Key::int(2), Key::int(5)]
        );
        let dry = super::outcomes(&batch, &[], &states, true);
        assert_eq!(
            dry[3],
            Outcome::Migrated,
            "a dry run says what needs migrating"
        );
    }
}
