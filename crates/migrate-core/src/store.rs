//! The progress-store component: what runs leave behind, keyed by migration name.
//!
//! The overseer saves the checkpoint of an unfinished scan here and records the failures of
//! records here; an embedding service can use it with migrations of its own. One
//! implementation per kind of store, chosen once when the system is built:
//! [`DatabaseStore`] keeps the bookkeeping tables in the migrated database (SQLite or
//! PostgreSQL, one code path where the SQL is the same); [`FileStore`] keeps files, for the
//! simulated backend.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::bookkeeping::{self, create_tables};
use crate::checkpoint::{Checkpoint, CheckpointKey};
use crate::component::{BoxError, Lifecycle};
use crate::connection::{Backend, Connection};
use crate::db::{context, sql_for};
use crate::migrator::{AppendFile, FailureRecord};
use crate::paging_state;

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
}
crate::named_interface!(ProgressStore, "progress-store");

/// The bookkeeping tables of the migrated database (see the `bookkeeping` module for their
/// columns), created on the first write so that a dry run creates nothing.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = ProgressStore)]
pub struct DatabaseStore {
    #[shaku(inject)]
    connection: Arc<dyn Connection>,
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
            .get_or_try_init(|| create_tables(self.connection.backend()))
            .await?;
        Ok(())
    }

    async fn has_checkpoints(&self) -> Result<bool, BoxError> {
        let found = crate::db::columns(self.connection.backend(), "migration_checkpoints").await?;
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
        let backend = self.connection.backend();
        let sql = sql_for(
            backend,
            "SELECT low_water, done_above FROM migration_checkpoints
              WHERE migration = ? AND scope = ?",
        );
        let row: Option<(Option<String>, String)> = match backend {
            Backend::Sqlite(pool) => {
                sqlx::query_as(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .fetch_optional(pool)
                    .await
            }
            Backend::Postgres(pool) => {
                sqlx::query_as(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .fetch_optional(pool)
                    .await
            }
            Backend::Simulated { .. } => Ok(None),
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
        let backend = self.connection.backend();
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
        macro_rules! run {
            ($pool:expr) => {
                sqlx::query(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .bind(&low_water)
                    .bind(&done_above)
                    .bind(&now)
                    .execute($pool)
                    .await
                    .map(drop)
            };
        }
        match backend {
            Backend::Sqlite(pool) => {
                let _writer = self.connection.writer().lock().await;
                run!(pool)
            }
            Backend::Postgres(pool) => run!(pool),
            Backend::Simulated { .. } => Ok(()),
        }
        .map_err(context("writing migration_checkpoints"))?;
        Ok(())
    }

    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError> {
        if !self.has_checkpoints().await? {
            return Ok(());
        }
        let backend = self.connection.backend();
        let sql = sql_for(
            backend,
            "DELETE FROM migration_checkpoints WHERE migration = ? AND scope = ?",
        );
        match backend {
            Backend::Sqlite(pool) => {
                let _writer = self.connection.writer().lock().await;
                sqlx::query(sql)
                    .bind(&key.migration)
                    .bind(key.scope())
                    .execute(pool)
                    .await
                    .map(drop)
            }
            Backend::Postgres(pool) => sqlx::query(sql)
                .bind(&key.migration)
                .bind(key.scope())
                .execute(pool)
                .await
                .map(drop),
            Backend::Simulated { .. } => Ok(()),
        }
        .map_err(context("deleting from migration_checkpoints"))?;
        Ok(())
    }

    async fn record_failures(
        &self,
        migration: &str,
        failures: &[FailureRecord],
    ) -> Result<(), BoxError> {
        self.tables().await?;
        let backend = self.connection.backend();
        let sql = sql_for(
            backend,
            "INSERT INTO migration_failures
               (migration, record_key, error, attempts, failed_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (migration, record_key) DO UPDATE SET error = excluded.error,
               attempts = migration_failures.attempts + excluded.attempts,
               failed_at = excluded.failed_at, resolved_at = NULL",
        );
        macro_rules! run {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.map_err(context("recording failures"))?;
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
            }};
        }
        match backend {
            Backend::Sqlite(pool) => {
                let _writer = self.connection.writer().lock().await;
                run!(pool)?
            }
            Backend::Postgres(pool) => run!(pool)?,
            Backend::Simulated { .. } => {}
        }
        Ok(())
    }

    async fn open_failures(&self, migration: &str) -> Result<Option<u64>, BoxError> {
        Ok(Some(
            bookkeeping::open_failures(self.connection.backend(), migration).await?,
        ))
    }

    fn failures_location(&self) -> String {
        format!(
            "the migration_failures table of {}",
            self.connection.display_url()
        )
    }
}

/// Files, for the simulated backend: checkpoints in one JSON file replaced atomically, failures
/// appended as JSON lines.
#[derive(Debug)]
pub struct FileStore {
    /// The checkpoints (`customer-scanner.paging-state-path`).
    paging_state: PathBuf,
    /// The failures, a JSON object per line.
    failures_file: PathBuf,
    /// The failures file, opened on first write.
    failures: AppendFile,
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

    /// A store keeping checkpoints in `paging_state` and failures in `failures_file`.
    pub fn new(paging_state: PathBuf, failures_file: PathBuf) -> FileStore {
        FileStore {
            paging_state,
            failures_file,
            failures: AppendFile::default(),
        }
    }
}

#[async_trait]
impl Lifecycle for FileStore {
    async fn stop(&self) -> Result<(), BoxError> {
        Ok(self.failures.close()?)
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
}

/// Runs file work (a read, an fsync) off the async workers, which the jobs need.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| -> BoxError { format!("the paging state task failed: {e}").into() })?
}
