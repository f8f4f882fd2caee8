//! The progress-store component: what runs leave behind, keyed by migration name.
//!
//! The overseer saves the checkpoint of an unfinished scan here and records the failures of
//! records here; an embedding service can use it with migrations of its own. One
//! implementation per kind of store, chosen once when the system is built:
//! [`DatabaseStore`] keeps the bookkeeping tables in the migrated database (SQLite or
//! PostgreSQL, one code path where the SQL is the same); [`FileStore`] keeps files, for the
//! simulated backend.

pub(crate) mod bookkeeping;
pub(crate) mod controls;
pub(crate) mod paging_state;
pub(crate) mod report;
pub(crate) mod runs;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use self::bookkeeping::create_tables;
use crate::components::component::{BoxError, Lifecycle};
use crate::connection::{Connection, Database};
use crate::database::{context, sql_for};
use crate::engine::checkpoint::{Checkpoint, CheckpointKey};
use crate::engine::migrator::{AppendFile, FailureRecord};
use crate::engine::summary::Summary;
use crate::store::controls::{ControlChange, StoredControls};
use crate::store::runs::{ReportQuery, RunId, RunRecord, StoreReport};

/// `$body` with `$pool` bound to `$store`'s pool, whichever the database: the SQLite and the
/// PostgreSQL arm differ only in the pool's type. On SQLite the writer lock is held, the lock
/// the migration's batches take too, so that writers take turns instead of meeting in SQLite's
/// sleeping busy handler.
macro_rules! writing {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.database {
            Database::Sqlite($pool) => {
                let _writer = $store.connection.writer().lock().await;
                $body
            }
            Database::Postgres($pool) => $body,
        }
    };
}

/// Where the progress of migrations is kept.
#[async_trait]
pub trait ProgressStore: shaku::Interface + Lifecycle {
    /// The saved progress of an unfinished scan, if any.
    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError>;

    /// Saves progress atomically: after a crash either the old or the new checkpoint is read.
    async fn save_checkpoint(
        &self,
        key: &CheckpointKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), BoxError>;

    /// Forgets the progress: the next scan starts over.
    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError>;

    /// Records failed records of `migration` durably; a record failing again adds its attempts
    /// and keeps the latest error. A failure to record aborts the run: a failure must never be
    /// lost.
    async fn record_failures(
        &self,
        migration: &str,
        failures: &[FailureRecord],
    ) -> Result<(), BoxError>;

    /// Failures of `migration` that no later run has resolved, when the store can tell.
    async fn open_failures(&self, migration: &str) -> Result<Option<u64>, BoxError>;

    /// Where failures are recorded, for the summary.
    fn failures_location(&self) -> String;

    /// Records that a run starts (never called on a dry run). A store that keeps no runs
    /// returns the id and keeps nothing, which is what this default does.
    async fn begin_run(&self, run: &RunRecord) -> Result<RunId, BoxError> {
        Ok(run.id.clone())
    }

    /// Refreshes the heartbeat of a running run, every
    /// [`HEARTBEAT_PERIOD`](crate::HEARTBEAT_PERIOD): a run whose heartbeat stops without an
    /// ending was killed.
    async fn heartbeat(&self, _run: &RunId) -> Result<(), BoxError> {
        Ok(())
    }

    /// Records how a run ended, with its counts.
    async fn end_run(&self, _run: &RunId, _summary: &Summary) -> Result<(), BoxError> {
        Ok(())
    }

    /// What the store holds of its migrations, for `db-migrate status`.
    async fn report(&self, _query: &ReportQuery) -> Result<StoreReport, BoxError> {
        Err("this progress store keeps nothing that can be reported".into())
    }

    /// The keys (as CSV lines) of the open failures of `migration`, oldest first; `None` when
    /// the store does not know which failures are open.
    async fn open_failure_keys(&self, _migration: &str) -> Result<Option<Vec<String>>, BoxError> {
        Ok(None)
    }

    /// The controls of `migration` (see [`StoredControls`]): the defaults, generation 0, when
    /// nobody ever changed them or the store keeps none, which is what this default does.
    async fn load_controls(&self, _migration: &str) -> Result<StoredControls, BoxError> {
        Ok(StoredControls::default())
    }

    /// Applies `change` to the controls of `migration`, saying `by` whom, and returns them
    /// as changed (one generation later). Changes from several processes at once each land
    /// whole, one after the other.
    async fn change_controls(
        &self,
        _migration: &str,
        _change: ControlChange,
        _by: &str,
    ) -> Result<StoredControls, BoxError> {
        Err("this progress store keeps no controls".into())
    }
}
crate::named_interface!(ProgressStore, "progress-store");

/// The bookkeeping tables of the migrated database (see the `bookkeeping` module for their
/// columns), created on the first write so that a dry run creates nothing.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = ProgressStore)]
pub struct DatabaseStore {
    /// For the writer lock and the URL in messages.
    #[shaku(inject)]
    connection: Arc<dyn Connection>,
    /// The database the tables are in: the connection's, known to be an SQL one when the
    /// system chose this store.
    database: Database,
    /// Set once the tables are known to exist (created on the first write).
    #[shaku(default)]
    tables: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for DatabaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseStore")
            .field("url", &self.connection.display_url())
            .finish()
    }
}

impl Lifecycle for DatabaseStore {}

impl DatabaseStore {
    async fn tables(&self) -> Result<(), BoxError> {
        self.tables
            .get_or_try_init(|| create_tables(&self.database))
            .await?;
        Ok(())
    }

    async fn has_checkpoints(&self) -> Result<bool, BoxError> {
        let found = crate::database::columns(&self.database, "migration_checkpoints").await?;
        // A table of the first layout (see `bookkeeping`) holds nothing this version reads.
        Ok(found.iter().any(|c| c == "scope"))
    }
}

#[async_trait]
impl ProgressStore for DatabaseStore {
    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError> {
        if !self.has_checkpoints().await? {
            return Ok(None);
        }
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "SELECT low_water, done_above FROM migration_checkpoints
              WHERE migration = ? AND scope = ?",
        );
        let row: Option<(Option<String>, String)> = match backend {
            Database::Sqlite(pool) => {
                sqlx::query_as(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .fetch_optional(pool)
                    .await
            }
            Database::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .fetch_optional(pool)
                    .await
            }
        }
        .map_err(context("reading migration_checkpoints"))?;
        let Some((low_water, done_above)) = row else {
            return Ok(None);
        };
        // A damaged checkpoint must not read as "nothing done": say so instead.
        let damaged = |e: serde_json::Error| -> BoxError {
            format!(
                "migration_checkpoints of {} ({}) is damaged: {e} (--reset starts over)",
                key.migration,
                key.scope()
            )
            .into()
        };
        Ok(Some(Checkpoint {
            low_water: low_water
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(damaged)?,
            done_above: serde_json::from_str(&done_above).map_err(damaged)?,
        }))
    }

    async fn save_checkpoint(
        &self,
        key: &CheckpointKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), BoxError> {
        self.tables().await?;
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "INSERT INTO migration_checkpoints (migration, scope, low_water, done_above, updated_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (migration, scope) DO UPDATE SET
               low_water = excluded.low_water, done_above = excluded.done_above,
               updated_at = excluded.updated_at",
        );
        let low_water = checkpoint
            .low_water
            .as_ref()
            .map(|k| serde_json::to_string(k).expect("keys serialize"));
        let done_above = serde_json::to_string(&checkpoint.done_above).expect("keys serialize");
        let now = chrono::Utc::now().to_rfc3339();
        writing!(self, pool => {
            sqlx::query(sql)
                .bind(&key.migration)
                .bind(key.scope())
                .bind(&low_water)
                .bind(&done_above)
                .bind(&now)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(context("writing migration_checkpoints"))?;
        Ok(())
    }

    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError> {
        if !self.has_checkpoints().await? {
            return Ok(());
        }
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "DELETE FROM migration_checkpoints WHERE migration = ? AND scope = ?",
        );
        writing!(self, pool => {
            sqlx::query(sql)
                .bind(&key.migration)
                .bind(key.scope())
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(context("deleting from migration_checkpoints"))?;
        Ok(())
    }

    async fn record_failures(
        &self,
        migration: &str,
        failures: &[FailureRecord],
    ) -> Result<(), BoxError> {
        self.tables().await?;
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "INSERT INTO migration_failures
               (migration, record_key, error, attempts, failed_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (migration, record_key) DO UPDATE SET error = excluded.error,
               attempts = migration_failures.attempts + excluded.attempts,
               failed_at = excluded.failed_at, resolved_at = NULL",
        );
        writing!(self, pool => {
            let mut tx = pool.begin().await.map_err(context("recording failures"))?;
            for f in failures {
                sqlx::query(sql.clone())
                    .bind(migration)
                    .bind(f.key.to_string())
                    .bind(&f.error)
                    .bind(f.attempts as i32)
                    .bind(f.at.to_rfc3339())
                    .execute(&mut *tx)
                    .await
                    .map_err(context("recording failures"))?;
            }
            tx.commit().await.map_err(context("recording failures"))
        })?;
        Ok(())
    }

    async fn open_failures(&self, migration: &str) -> Result<Option<u64>, BoxError> {
        Ok(Some(
            bookkeeping::open_failures(&self.database, migration).await?,
        ))
    }

    fn failures_location(&self) -> String {
        format!(
            "the migration_failures table of {}",
            self.connection.display_url()
        )
    }

    async fn begin_run(&self, run: &RunRecord) -> Result<RunId, BoxError> {
        self.tables().await?;
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "INSERT INTO migration_runs
               (migration, run_id, host, pid, settings, started_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        );
        let started = run.started_at.to_rfc3339();
        writing!(self, pool => {
            sqlx::query(sql)
                .bind(&run.id.migration)
                .bind(&run.id.run)
                .bind(&run.host)
                .bind(i64::from(run.pid))
                .bind(run.settings.to_string())
                .bind(&started)
                .bind(&started)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(context("writing migration_runs"))?;
        Ok(run.id.clone())
    }

    async fn heartbeat(&self, run: &RunId) -> Result<(), BoxError> {
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "UPDATE migration_runs SET updated_at = ? WHERE migration = ? AND run_id = ?",
        );
        let now = chrono::Utc::now().to_rfc3339();
        writing!(self, pool => {
            sqlx::query(sql)
                .bind(&now)
                .bind(&run.migration)
                .bind(&run.run)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(context("updating migration_runs"))?;
        Ok(())
    }

    async fn end_run(&self, run: &RunId, summary: &Summary) -> Result<(), BoxError> {
        let backend = &self.database;
        let sql = sql_for(
            backend,
            "UPDATE migration_runs SET updated_at = ?, ended_at = ?, ending = ?, migrated = ?,
               previously_migrated = ?, gone = ?, failed = ?, abort_reason = ?
             WHERE migration = ? AND run_id = ?",
        );
        let now = chrono::Utc::now().to_rfc3339();
        let ending = crate::store::report::ending_name(summary.ending);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        writing!(self, pool => {
            sqlx::query(sql)
                .bind(&now)
                .bind(&now)
                .bind(ending)
                .bind(count(summary.migrated))
                .bind(count(summary.previously_migrated))
                .bind(count(summary.gone))
                .bind(count(summary.failed))
                .bind(&summary.abort_reason)
                .bind(&run.migration)
                .bind(&run.run)
                .execute(pool)
                .await
                .map(drop)
        })
        .map_err(context("updating migration_runs"))?;
        Ok(())
    }

    async fn report(&self, query: &ReportQuery) -> Result<StoreReport, BoxError> {
        Ok(report::database(&self.database, self.connection.display_url(), query).await?)
    }

    async fn open_failure_keys(&self, migration: &str) -> Result<Option<Vec<String>>, BoxError> {
        Ok(Some(
            report::open_failure_keys(&self.database, migration).await?,
        ))
    }

    async fn load_controls(&self, migration: &str) -> Result<StoredControls, BoxError> {
        Ok(controls::read(&self.database, migration).await?)
    }

    async fn change_controls(
        &self,
        migration: &str,
        change: ControlChange,
        by: &str,
    ) -> Result<StoredControls, BoxError> {
        self.tables().await?;
        for _ in 0..controls::CHANGE_ATTEMPTS {
            let current = controls::read(&self.database, migration).await?;
            let next = current.changed(change, by, chrono::Utc::now());
            if self.write_controls(migration, &next).await? {
                return Ok(next);
            }
        }
        Err(controls::contended(migration))
    }
}

impl DatabaseStore {
    /// Writes `next` over the generation before it; `false` when another writer changed the
    /// controls first.
    async fn write_controls(
        &self,
        migration: &str,
        next: &StoredControls,
    ) -> Result<bool, BoxError> {
        let sql = controls::write_sql(&self.database, next);
        let b = controls::Binds::of(next);
        let update = next.generation > 1;
        let affected = writing!(self, pool => {
            let mut query = sqlx::query(sql)
                .bind(b.paused)
                .bind(&b.stop_requested_at);
            for number in b.numbers {
                query = query.bind(number);
            }
            query = query
                .bind(&b.changed_by)
                .bind(&b.changed_at)
                .bind(b.generation)
                .bind(migration);
            if update {
                query = query.bind(b.previous);
            }
            query.execute(pool).await.map(|done| done.rows_affected())
        })
        .map_err(crate::database::context("writing migration_controls"))?;
        Ok(affected == 1)
    }
}

/// Files, for the simulated backend: checkpoints in one JSON file replaced atomically, failures
/// appended as JSON lines, runs as JSON lines beside the failures (`*.runs.jsonl`: a line
/// when a run begins, a line when it ends; no heartbeat, so a run without an end line is taken
/// as running while its process lives), and the controls of every migration in one JSON file
/// beside them (`*.controls.json`), replaced atomically.
#[derive(Debug)]
pub struct FileStore {
    /// The checkpoints (`customer-scanner.paging-state-path`).
    paging_state: PathBuf,
    /// The failures, a JSON object per line.
    failures_file: PathBuf,
    /// The failures file, opened on first write.
    failures: AppendFile,
    /// The runs, a JSON object per line (see [`FileStore::runs_file_beside`]).
    runs_file: PathBuf,
    /// The runs file, opened on first write.
    runs: AppendFile,
    /// The controls of every migration, one JSON file replaced whole (`*.controls.json`
    /// beside the runs file).
    controls_file: PathBuf,
}

impl FileStore {
    /// The failures file beside an audit log: the log's name with `.failures.jsonl`.
    pub fn failures_file_beside(log_file: &std::path::Path) -> PathBuf {
        let mut name = log_file
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        name.push(".failures.jsonl");
        log_file.with_file_name(name)
    }

    /// The runs file beside a failures file: `x.failures.jsonl` gives `x.runs.jsonl`.
    pub fn runs_file_beside(failures_file: &std::path::Path) -> PathBuf {
        let name = failures_file
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = name.strip_suffix(".failures.jsonl").unwrap_or(&name);
        failures_file.with_file_name(format!("{stem}.runs.jsonl"))
    }

    /// A store keeping checkpoints in `paging_state`, failures in `failures_file` and runs
    /// beside it.
    pub fn new(paging_state: PathBuf, failures_file: PathBuf) -> FileStore {
        let runs_file = Self::runs_file_beside(&failures_file);
        FileStore {
            paging_state,
            controls_file: controls::file_beside(&runs_file),
            runs_file,
            failures_file,
            failures: AppendFile::default(),
            runs: AppendFile::default(),
        }
    }

    /// Appends a line to the runs file, durably.
    fn append_run_line(&self, line: &report::RunLine) -> Result<(), BoxError> {
        let mut bytes = serde_json::to_vec(line)?;
        bytes.push(b'\n');
        self.runs.append(&self.runs_file, &bytes)?;
        self.runs.sync()?;
        Ok(())
    }
}

#[async_trait]
impl Lifecycle for FileStore {
    async fn stop(&self) -> Result<(), BoxError> {
        let failures = self.failures.close();
        self.runs.close()?;
        Ok(failures?)
    }
}

#[async_trait]
impl ProgressStore for FileStore {
    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError> {
        let (path, key) = (self.paging_state.clone(), key.clone());
        blocking(move || paging_state::load(&path, &key)).await
    }

    async fn save_checkpoint(
        &self,
        key: &CheckpointKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), BoxError> {
        let (path, key, checkpoint) = (self.paging_state.clone(), key.clone(), checkpoint.clone());
        blocking(move || paging_state::save(&path, &key, Some(&checkpoint))).await
    }

    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError> {
        let (path, key) = (self.paging_state.clone(), key.clone());
        blocking(move || paging_state::save(&path, &key, None)).await
    }

    async fn record_failures(
        &self,
        migration: &str,
        failures: &[FailureRecord],
    ) -> Result<(), BoxError> {
        /// One line of the failures file: the failure, and the migration it belongs to.
        #[derive(serde::Serialize)]
        struct Line<'a> {
            migration: &'a str,
            #[serde(flatten)]
            failure: &'a FailureRecord,
        }
        let mut lines = Vec::new();
        for failure in failures {
            serde_json::to_writer(&mut lines, &Line { migration, failure })?;
            lines.push(b'\n');
        }
        self.failures.append(&self.failures_file, &lines)?;
        self.failures.sync()?;
        Ok(())
    }

    /// The failures file keeps no resolution: it cannot tell.
    async fn open_failures(&self, _: &str) -> Result<Option<u64>, BoxError> {
        Ok(None)
    }

    fn failures_location(&self) -> String {
        self.failures_file.display().to_string()
    }

    async fn begin_run(&self, run: &RunRecord) -> Result<RunId, BoxError> {
        self.append_run_line(&report::RunLine::Begin(run.clone()))?;
        Ok(run.id.clone())
    }

    async fn end_run(&self, run: &RunId, summary: &Summary) -> Result<(), BoxError> {
        self.append_run_line(&report::RunLine::end(run, summary))
    }

    async fn report(&self, query: &ReportQuery) -> Result<StoreReport, BoxError> {
        let (paging, failures, runs, query) = (
            self.paging_state.clone(),
            self.failures_file.clone(),
            self.runs_file.clone(),
            query.clone(),
        );
        blocking(move || report::files(&paging, &failures, &runs, &query)).await
    }

    async fn load_controls(&self, migration: &str) -> Result<StoredControls, BoxError> {
        let (path, migration) = (self.controls_file.clone(), migration.to_owned());
        blocking(move || controls::read_file(&path, &migration)).await
    }

    async fn change_controls(
        &self,
        migration: &str,
        change: ControlChange,
        by: &str,
    ) -> Result<StoredControls, BoxError> {
        let (path, migration, by) = (
            self.controls_file.clone(),
            migration.to_owned(),
            by.to_owned(),
        );
        blocking(move || controls::change_file(&path, &migration, change, &by)).await
    }
}

/// Runs file work (a read, an fsync) off the async workers, which the jobs need.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| -> BoxError { format!("the paging state task failed: {e}").into() })?
}
