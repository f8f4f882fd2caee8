//! The bookkeeping tables a migration leaves in its database, all keyed by migration name so
//! that several migrations share one database, and what a batch writes to them inside its own
//! transaction.
//!
//! | table | one row per |
//! |---|---|
//! | `migration_checkpoints` | unfinished scan (migration, scope): low-water key, keys done above it |
//! | `migration_failures` | failed record (migration, key): error, attempts, when, when resolved |
//! | `migration_audit` | committed batch: the keys it migrated |
//! | `migration_runs` | run (migration, run id): host, process id, settings, started, heartbeat, ended, ending, counts |
//! | `migration_controls` | migration: paused, the last stop request, setting overrides, who changed it and when, generation |
//!
//! `migration_runs` has the columns `migration`, `run_id`, `host`, `pid`, `settings` (a small
//! JSON object: processes, batch size, rate limit, dry run, reset, input digest or range),
//! `started_at`, `updated_at` (the heartbeat, refreshed every
//! [`HEARTBEAT_PERIOD`](crate::HEARTBEAT_PERIOD)), `ended_at`, `ending` (`completed`,
//! `interrupted`, `aborted`; NULL while running, and forever for a run killed with SIGKILL),
//! `migrated`, `previously_migrated`, `gone`, `failed` and `abort_reason`. A dry run writes no
//! row.
//!
//! `migration_controls` (see [`StoredControls`](crate::store::controls::StoredControls)) has
//! the columns `migration`, `paused` (no new batch starts in any run of the migration until
//! resumed, including runs started later), `stop_requested_at` and `stop_generation` (the last
//! stop request: it stops the runs that started at an earlier generation, never a later run),
//! `rate_limit`, `processes` and `batch_size` (overrides of the configured settings, NULL for
//! the configured one), `changed_by` (who made the last change: user@host, process id, and
//! through what), `changed_at`, and `generation` (one more at each change; a writer updates the
//! generation it read, so concurrent changes land one after the other).
//!
//! Keys are stored as JSON (`42`, `"abc"`, `["eu", 7]`) in checkpoints and the audit, and as
//! the CSV line `-f` reads (`42`, `abc`, `eu,7`) in `migration_failures.record_key`, so that
//! failed keys can be fed back.
//!
//! Tables are created on the first write, so that a dry run creates nothing. Tables of the
//! layout before migrations were named (an integer `id` column) are renamed with a `_v0` suffix,
//! and their failures copied into the new layout under `customer-migration`.

use sqlx::{PgConnection, SqliteConnection};

use crate::connection::Database;
use crate::database::{DbError, columns, context, execute, execute_owned, table_exists};
use crate::distributed::fence;
use crate::migration::key::Key;

pub(crate) const CREATE_CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS migration_checkpoints (
    migration TEXT NOT NULL,
    scope TEXT NOT NULL,
    low_water TEXT,
    done_above TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (migration, scope))";
pub(crate) const CREATE_FAILURES: &str = "CREATE TABLE IF NOT EXISTS migration_failures (
    migration TEXT NOT NULL,
    record_key TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at TEXT NOT NULL,
    resolved_at TEXT,
    PRIMARY KEY (migration, record_key))";
pub(crate) const CREATE_AUDIT: &str = "CREATE TABLE IF NOT EXISTS migration_audit (
    migration TEXT NOT NULL,
    migrated_at TEXT NOT NULL,
    record_keys TEXT NOT NULL)";
pub(crate) const CREATE_RUNS: &str = "CREATE TABLE IF NOT EXISTS migration_runs (
    migration TEXT NOT NULL,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    settings TEXT NOT NULL,
    started_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ended_at TEXT,
    ending TEXT,
    migrated BIGINT,
    previously_migrated BIGINT,
    gone BIGINT,
    failed BIGINT,
    abort_reason TEXT,
    PRIMARY KEY (migration, run_id))";

/// The migration the tables of the first layout belonged to.
const FIRST_LAYOUT_MIGRATION: &str = "customer-migration";

/// Creates the bookkeeping tables that are missing, moving tables of the first layout aside.
///
/// Several processes may start at once, and a process may be killed between two steps, so
/// every step is idempotent: a table another process created meanwhile is taken as created,
/// and failures of the first layout are copied whenever some are missing.
pub(crate) async fn create_tables(backend: &Database) -> Result<(), DbError> {
    upgrade_first_layout(backend).await?;
    // Only what is missing: `CREATE TABLE IF NOT EXISTS` needs the right to create in the
    // schema even when the table exists, which a role with only the rights to its tables lacks.
    for (table, create) in [
        ("migration_checkpoints", CREATE_CHECKPOINTS),
        ("migration_failures", CREATE_FAILURES),
        ("migration_audit", CREATE_AUDIT),
        ("migration_runs", CREATE_RUNS),
        ("migration_controls", super::controls::CREATE_CONTROLS),
    ] {
        create_missing(backend, table, create).await?;
    }
    copy_first_layout_failures(backend).await
}

/// Creates `table` with `create` unless it exists, or exists by the time creating it failed.
async fn create_missing(
    backend: &Database,
    table: &'static str,
    create: &'static str,
) -> Result<(), DbError> {
    if table_exists(backend, table).await? {
        return Ok(());
    }
    match execute(backend, create, "creating a bookkeeping table").await {
        Err(_) if table_exists(backend, table).await? => Ok(()),
        other => other,
    }
}

/// Renames `migration_checkpoints` and `migration_failures` of the first layout (integer ids,
/// one migration) to `*_v0`. The old checkpoint is not carried over: the next run scans again,
/// and its guard finds the migrated rows. The failures are copied by
/// [`copy_first_layout_failures`].
async fn upgrade_first_layout(backend: &Database) -> Result<(), DbError> {
    for (table, old_column, rename) in [
        (
            "migration_checkpoints",
            "range_key",
            "ALTER TABLE migration_checkpoints RENAME TO migration_checkpoints_v0",
        ),
        (
            "migration_failures",
            "id",
            "ALTER TABLE migration_failures RENAME TO migration_failures_v0",
        ),
    ] {
        if !columns(backend, table)
            .await?
            .iter()
            .any(|c| c == old_column)
        {
            continue;
        }
        let moved = execute(
            backend,
            rename,
            "moving a bookkeeping table of the first layout aside",
        )
        .await;
        // Another process may have moved it meanwhile.
        if moved.is_err()
            && columns(backend, table)
                .await?
                .iter()
                .any(|c| c == old_column)
        {
            return moved;
        }
    }
    Ok(())
}

/// Copies the failures of `migration_failures_v0` that the new table lacks, under
/// `customer-migration`: a kill between the rename and the copy loses none.
async fn copy_first_layout_failures(backend: &Database) -> Result<(), DbError> {
    let old = columns(backend, "migration_failures_v0").await?;
    if old.is_empty() {
        return Ok(());
    }
    let resolved = if old.iter().any(|c| c == "resolved_at") {
        "v.resolved_at"
    } else {
        "NULL"
    };
    let copy = format!(
        "INSERT INTO migration_failures
           (migration, record_key, error, attempts, failed_at, resolved_at)
         SELECT '{FIRST_LAYOUT_MIGRATION}', CAST(v.id AS TEXT), v.error, v.attempts,
           v.failed_at, {resolved}
         FROM migration_failures_v0 v
         WHERE NOT EXISTS (SELECT 1 FROM migration_failures f
           WHERE f.migration = '{FIRST_LAYOUT_MIGRATION}' AND f.record_key = CAST(v.id AS TEXT))"
    );
    match execute_owned(backend, copy, "copying the failures of the first layout").await {
        // Two processes copying at once: the other one's rows are the same rows.
        Err(e) if e.kind() == crate::database::ErrorKind::Rejected => Ok(()),
        other => other,
    }
}

/// What a batch writes besides its rows, in its own transaction: the audit row listing the keys
/// it migrated, and the resolution of failures that earlier runs recorded for records it
/// settled (migrated, found migrated, or gone). Because both commit with the rows, the audit
/// and the failures agree with the data whatever interrupts the run.
///
/// Prepare one per run with [`BatchJournal::prepare`] before the first batch that writes (never
/// on a dry run).
#[derive(Debug, Clone)]
pub struct BatchJournal {
    /// The migration the rows belong to.
    migration: String,
    /// Whether the migration had open failures when the run began: only then is there
    /// anything to resolve (failures this run records are not tried again in it).
    resolve: bool,
    /// Where to look for the lease this process holds on its range in distributed mode
    /// (see [`fence`](crate::distributed::fence)); `None` on SQLite.
    fence: Option<String>,
}

impl BatchJournal {
    /// Creates the bookkeeping tables when missing and looks for open failures of `migration`.
    pub async fn prepare(backend: &Database, migration: &str) -> Result<BatchJournal, DbError> {
        create_tables(backend).await?;
        let open = open_failures(backend, migration).await?;
        Ok(BatchJournal {
            migration: migration.to_owned(),
            resolve: open > 0,
            fence: fence::scope(backend, migration),
        })
    }

    /// Whether a batch's settled keys are needed (see `write_*`): when earlier failures of the
    /// migration were open as the run began, or, in distributed mode, always, since other
    /// processes record failures while this one runs. Callers skip collecting them otherwise:
    /// a batch's keys, cloned, on every batch.
    pub fn resolves_failures(&self) -> bool {
        self.resolve || self.fence.as_deref().and_then(fence::held).is_some()
    }

    /// Writes the batch's bookkeeping on SQLite, inside the batch's transaction.
    pub async fn write_sqlite(
        &self,
        conn: &mut SqliteConnection,
        now: &str,
        migrated: &[Key],
        settled: &[Key],
    ) -> Result<(), DbError> {
        if !migrated.is_empty() {
            sqlx::query(
                "INSERT INTO migration_audit (migration, migrated_at, record_keys)
                 VALUES (?, ?, ?)",
            )
            .bind(&self.migration)
            .bind(now)
            .bind(keys_json(migrated))
            .execute(&mut *conn)
            .await
            .map_err(context("writing migration_audit"))?;
        }
        if self.resolves_failures() && !settled.is_empty() {
            sqlx::query(
                "UPDATE migration_failures SET resolved_at = ?
                  WHERE migration = ? AND resolved_at IS NULL
                    AND record_key IN (SELECT value FROM json_each(?))",
            )
            .bind(now)
            .bind(&self.migration)
            .bind(key_lines_json(settled))
            .execute(&mut *conn)
            .await
            .map_err(context("marking failures resolved"))?;
        }
        Ok(())
    }

    /// Writes the batch's bookkeeping on PostgreSQL, inside the batch's transaction. In
    /// distributed mode it first checks that this process still holds the lease on the range
    /// (a fatal error when another process took it over), and holds a share lock on the range
    /// until the transaction ends, so that no takeover happens in between.
    pub async fn write_postgres(
        &self,
        conn: &mut PgConnection,
        now: &str,
        migrated: &[Key],
        settled: &[Key],
    ) -> Result<(), DbError> {
        if let Some(lease) = self.fence.as_deref().and_then(fence::held) {
            fence::check(conn, &self.migration, lease).await?;
        }
        if !migrated.is_empty() {
            sqlx::query(
                "INSERT INTO migration_audit (migration, migrated_at, record_keys)
                 VALUES ($1, $2, $3)",
            )
            .bind(&self.migration)
            .bind(now)
            .bind(keys_json(migrated))
            .execute(&mut *conn)
            .await
            .map_err(context("writing migration_audit"))?;
        }
        if self.resolves_failures() && !settled.is_empty() {
            let lines: Vec<String> = settled.iter().map(Key::to_string).collect();
            sqlx::query(
                "UPDATE migration_failures SET resolved_at = $1
                  WHERE migration = $2 AND resolved_at IS NULL AND record_key = ANY($3)",
            )
            .bind(now)
            .bind(&self.migration)
            .bind(lines)
            .execute(&mut *conn)
            .await
            .map_err(context("marking failures resolved"))?;
        }
        Ok(())
    }
}

/// `keys` as one JSON array of keys.
fn keys_json(keys: &[Key]) -> String {
    serde_json::to_string(keys).expect("keys serialize")
}

/// `keys` as a JSON array of their CSV lines, as `migration_failures.record_key` holds them.
fn key_lines_json(keys: &[Key]) -> String {
    let lines: Vec<String> = keys.iter().map(Key::to_string).collect();
    serde_json::to_string(&lines).expect("strings serialize")
}

/// Failures of `migration` that no run has resolved (0 when there is no table).
pub(crate) async fn open_failures(backend: &Database, migration: &str) -> Result<u64, DbError> {
    if !table_exists(backend, "migration_failures").await? {
        return Ok(0);
    }
    let count: i64 = match backend {
        Database::Sqlite(pool) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM migration_failures
                  WHERE migration = ? AND resolved_at IS NULL",
            )
            .bind(migration)
            .fetch_one(pool)
            .await
        }
        Database::Postgres(pool) => {
            sqlx::query_scalar(
                "SELECT count(*) FROM migration_failures
                  WHERE migration = $1 AND resolved_at IS NULL",
            )
            .bind(migration)
            .fetch_one(pool)
            .await
        }
    }
    .map_err(context("counting open failures in migration_failures"))?;
    Ok(count.max(0) as u64)
}
