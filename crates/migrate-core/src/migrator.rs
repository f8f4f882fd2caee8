//! The customer-migrator component: migrates records, keeps the audit log, records failures.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::component::{BoxError, Lifecycle};
use crate::config::MigratorConfig;
use crate::connection::{Backend, Connection};
use crate::{db, simulated};

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Migrated now (on a dry run: needs migrating).
    Migrated,
    /// Already migrated before this run.
    PreviouslyMigrated,
    /// The record no longer exists (deleted since it was scanned): nothing to migrate.
    Gone,
    /// Could not be migrated.
    Failed(RecordFailure),
}

/// A check before the run found that it cannot work (a missing table or column, an audit log
/// that cannot be created): nothing ran. Components return it from `start`; the command line
/// reports it as a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PreflightError(String);

impl PreflightError {
    /// A check that failed, said as what is wrong and what to do.
    pub fn new(message: impl Into<String>) -> PreflightError {
        PreflightError(message.into())
    }
}

/// Why a whole batch failed: what the engine should do next depends on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Nothing took effect, and another attempt may succeed: a lost connection, a deadlock, a
    /// lock or statement timeout. The engine retries each record alone, with backoff. Any
    /// other error converts to this one, so `?` keeps the engine's safe default.
    #[error("{0}")]
    Transient(BoxError),
    /// Nothing took effect, and the same records would fail the same way: the database refused
    /// a value of one of them. The engine tries each record alone once, to find which.
    #[error("{0}")]
    Rejected(BoxError),
    /// The run cannot go on: a missing table or column, a type mismatch, a missing permission,
    /// a read-only database, an audit trail that cannot be written. The engine stops the run at
    /// once. `committed` holds one outcome per record when the batch took effect before the
    /// error (a commit followed by a failed audit write), so that it is counted.
    #[error("{error}")]
    Fatal {
        /// What went wrong.
        error: BoxError,
        /// The batch's outcomes, when it was committed.
        committed: Option<Vec<Outcome>>,
    },
}

impl From<BoxError> for BatchError {
    fn from(error: BoxError) -> BatchError {
        BatchError::Transient(error)
    }
}

/// Why a record could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// What went wrong, for a person.
    pub message: String,
    /// Whether another attempt may succeed (a lost connection, a concurrent write) as opposed
    /// to a record that can never be migrated as it is (a malformed name).
    pub retryable: bool,
}

impl RecordFailure {
    /// A failure that another attempt may fix.
    pub fn transient(message: impl Into<String>) -> RecordFailure {
        RecordFailure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that no retry will fix.
    pub fn permanent(message: impl Into<String>) -> RecordFailure {
        RecordFailure {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A failed record as it is recorded: nothing is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The record's id.
    pub id: i64,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was given up.
    pub at: DateTime<Utc>,
}

/// The migrator component.
#[async_trait]
pub trait CustomerMigrator: shaku::Interface + Lifecycle {
    /// Migrates (or, on a dry run, only checks) the records `ids`, returning one outcome per id
    /// in the same order. A failure of one record is an `Outcome::Failed` for that record only.
    /// An `Err` says the whole batch failed, and how (see [`BatchError`]): a transient or
    /// rejected batch took no effect, as when a transaction rolls back, and the engine tries
    /// each record alone; a fatal error stops the run. A panic counts as transient.
    async fn migrate(&self, ids: &[i64], dry_run: bool) -> Result<Vec<Outcome>, BatchError>;

    /// Records failed records durably. A failure to record aborts the run: a failure must never
    /// be lost.
    async fn record_failures(&self, failures: &[FailureRecord]) -> Result<(), BoxError>;

    /// Checks, before a run starts, what this run needs (on a dry run, a run that writes
    /// nothing): a [`PreflightError`] for what a person must fix. Called by the overseer
    /// before any record is read.
    async fn check(&self, dry_run: bool) -> Result<(), BoxError> {
        let _ = dry_run;
        Ok(())
    }

    /// How many recorded failures no later run has resolved (by migrating the record), when
    /// the store can tell; `None` otherwise.
    async fn open_failures(&self) -> Result<Option<u64>, BoxError> {
        Ok(None)
    }

    /// Where failures are recorded, for the summary (`migration_failures table`, a file path).
    fn failures_location(&self) -> String;

    /// How many ids a job hands to `migrate` at once.
    fn batch_size(&self) -> usize;
}
crate::named_interface!(CustomerMigrator, "customer-migrator");

/// The migrator for the built-in backends: the seed's sleeps on the simulated backend, the real
/// customer migration on SQLite and PostgreSQL.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = CustomerMigrator)]
pub struct BackendMigrator {
    #[shaku(inject)]
    connection: Arc<dyn Connection>,
    /// `[customer-migrator]`
    #[shaku(default)]
    config: MigratorConfig,
    /// The audit log, opened on first write so that a dry run creates no file.
    #[shaku(default)]
    audit: AppendFile,
    /// Failures of the simulated backend (databases use the `migration_failures` table).
    #[shaku(default)]
    failures: AppendFile,
    /// Set once `migration_failures` is known to exist (created on the first failure).
    #[shaku(default)]
    failures_table: tokio::sync::OnceCell<()>,
    /// What each batch writes besides the rows, prepared before the first batch writes: the
    /// audit table, and whether `migration_failures` existed then (each batch then marks the
    /// failures of the records it migrates resolved; failures recorded by this run are not
    /// tried again in it, so a table created meanwhile has nothing to resolve).
    #[shaku(default)]
    bookkeeping: tokio::sync::OnceCell<db::Bookkeeping>,
    /// SQLite has one writer at a time. Jobs that wait for it here wait on an async lock and
    /// go the moment it is free; without it they would wait in SQLite's busy handler, which
    /// sleeps for growing intervals (1, 2, 5, 10... ms) and leaves the database idle.
    #[shaku(default)]
    sqlite_writer: tokio::sync::Mutex<()>,
    /// Longest wait for a row lock on PostgreSQL (`lock_timeout` of each batch): the run's
    /// grace period, so that a batch blocked by another session never holds up a stop for
    /// longer than the grace period allows. A batch that times out is retried.
    #[shaku(default)]
    lock_timeout: Duration,
}

impl std::fmt::Debug for BackendMigrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendMigrator")
            .field("config", &self.config)
            .finish()
    }
}

impl BackendMigrator {
    /// Shaku parameters for this configuration; `lock_timeout` bounds each batch's wait for
    /// a row lock on PostgreSQL (the run's grace period).
    pub fn parameters(config: MigratorConfig, lock_timeout: Duration) -> BackendMigratorParameters {
        BackendMigratorParameters {
            config,
            audit: AppendFile::default(),
            failures: AppendFile::default(),
            failures_table: tokio::sync::OnceCell::new(),
            bookkeeping: tokio::sync::OnceCell::new(),
            sqlite_writer: tokio::sync::Mutex::new(()),
            lock_timeout,
        }
    }

    /// The failures file of the simulated backend: the log file's name with `.failures.jsonl`.
    pub fn failures_file(log_file: &Path) -> PathBuf {
        let mut name = log_file
            .file_stem()
            .map(|s| s.to_os_string())
            .unwrap_or_default();
        name.push(".failures.jsonl");
        log_file.with_file_name(name)
    }

    /// The seed's sleeps stand in for the database work (the audit log is real).
    async fn migrate_simulated(&self, ids: &[i64], dry_run: bool) -> Vec<Outcome> {
        let scale = self.config.sleep_scale;
        let mut outcomes = Vec::with_capacity(ids.len());
        for &id in ids {
            pause(simulated::check_time(id, scale)).await;
            if simulated::previously_migrated(id) {
                outcomes.push(Outcome::PreviouslyMigrated);
                continue;
            }
            if dry_run {
                outcomes.push(Outcome::Migrated);
                continue;
            }
            pause(simulated::migrate_time(id, scale)).await;
            if simulated::fails(id, self.config.failure_rate) {
                outcomes.push(Outcome::Failed(RecordFailure::transient(format!(
                    "simulated failure migrating customer {id}"
                ))));
                continue;
            }
            outcomes.push(Outcome::Migrated);
        }
        outcomes
    }
}

async fn pause(duration: std::time::Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

/// Audit lines, as in the seed: date, time, id, milliseconds. The clock is read once per
/// batch: the records of a batch are committed together.
fn audit_lines(migrated: impl IntoIterator<Item = (i64, u128)>) -> String {
    use std::fmt::Write as _;
    let now = chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();
    let mut out = String::new();
    for (id, millis) in migrated {
        let _ = writeln!(out, "{now} customer {id} migrated in {millis} ms");
    }
    out
}

#[async_trait]
impl Lifecycle for BackendMigrator {
    /// On a database, checks that `customers` has the columns the migration uses.
    async fn start(&self) -> Result<(), BoxError> {
        db::prepare(self.connection.backend()).await
    }

    async fn stop(&self) -> Result<(), BoxError> {
        self.audit.close()?;
        self.failures.close()?;
        Ok(())
    }
}

/// Whether `path` can be an append-only log, without creating anything (a dry run creates no
/// file): it is not a directory, and its nearest existing ancestor is a directory that is not
/// read-only. A disk that fills up later is found by the write itself.
fn check_log_file(path: &Path) -> Result<(), PreflightError> {
    let refuse = |why: String| {
        PreflightError::new(format!(
            "customer-migrator.log-file {}: {why}",
            path.display()
        ))
    };
    if path.is_dir() {
        return Err(refuse("is a directory".to_owned()));
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        match fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(refuse(format!(
                    "cannot be created: {} is not a directory",
                    dir.display()
                )));
            }
            Ok(meta) if meta.permissions().readonly() => {
                return Err(refuse(format!(
                    "cannot be created: {} is read-only",
                    dir.display()
                )));
            }
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ancestor = dir.parent(),
            Err(e) => return Err(refuse(format!("cannot be created: {}: {e}", dir.display()))),
        }
    }
    Ok(())
}

/// A failed audit write after the batch committed: the run must stop (an audit trail with
/// holes is worse than none), and what the batch did must still be counted.
fn audit_failed(path: &Path, error: std::io::Error, outcomes: Vec<Outcome>) -> BatchError {
    let unaudited = outcomes.iter().filter(|o| **o == Outcome::Migrated).count();
    BatchError::Fatal {
        error: format!(
            "while writing the audit log {}: {error} ({unaudited} records of the last batch were \
             migrated and committed without an audit line)",
            path.display()
        )
        .into(),
        committed: Some(outcomes),
    }
}

#[async_trait]
impl CustomerMigrator for BackendMigrator {
    async fn migrate(&self, ids: &[i64], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let outcomes;
        let millis;
        match self.connection.backend() {
            Backend::Simulated { .. } => {
                let started = Instant::now();
                outcomes = self.migrate_simulated(ids, dry_run).await;
                millis = started.elapsed().as_millis();
            }
            backend => {
                let writer = (!dry_run).then_some(&self.sqlite_writer);
                let bookkeeping = if dry_run {
                    None
                } else {
                    Some(
                        *self
                            .bookkeeping
                            .get_or_try_init(|| db::prepare_bookkeeping(backend))
                            .await?,
                    )
                };
                let started = Instant::now();
                outcomes = db::migrate(
                    backend,
                    ids,
                    dry_run,
                    writer,
                    self.lock_timeout,
                    bookkeeping,
                )
                .await?;
                millis = started.elapsed().as_millis();
            }
        }
        if !dry_run {
            let log = audit_lines(
                ids.iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| **outcome == Outcome::Migrated)
                    .map(|(id, _)| (*id, millis)),
            );
            if !log.is_empty()
                && let Err(error) = self.audit.append(&self.config.log_file, log.as_bytes())
            {
                return Err(audit_failed(&self.config.log_file, error, outcomes));
            }
        }
        Ok(outcomes)
    }

    /// The audit log must be creatable, unless on a dry run, which writes none.
    async fn check(&self, dry_run: bool) -> Result<(), BoxError> {
        if !dry_run {
            check_log_file(&self.config.log_file)?;
        }
        Ok(())
    }

    async fn open_failures(&self) -> Result<Option<u64>, BoxError> {
        match self.connection.backend() {
            // The failures file keeps no resolution: it cannot tell.
            Backend::Simulated { .. } => Ok(None),
            backend => Ok(Some(db::open_failures(backend).await?)),
        }
    }

    async fn record_failures(&self, failures: &[FailureRecord]) -> Result<(), BoxError> {
        match self.connection.backend() {
            Backend::Simulated { .. } => {
                let mut lines = Vec::new();
                for failure in failures {
                    serde_json::to_writer(&mut lines, failure)?;
                    lines.push(b'\n');
                }
                self.failures
                    .append(&Self::failures_file(&self.config.log_file), &lines)?;
                self.failures.sync()?;
                Ok(())
            }
            backend => {
                let _writer = match backend {
                    Backend::Sqlite(_) => Some(self.sqlite_writer.lock().await),
                    _ => None,
                };
                self.failures_table
                    .get_or_try_init(|| db::create_failures(backend))
                    .await?;
                Ok(db::record_failures(backend, failures).await?)
            }
        }
    }

    fn failures_location(&self) -> String {
        match self.connection.backend() {
            Backend::Simulated { .. } => Self::failures_file(&self.config.log_file)
                .display()
                .to_string(),
            _ => format!(
                "the migration_failures table of {}",
                self.connection.display_url()
            ),
        }
    }

    fn batch_size(&self) -> usize {
        self.config
            .batch_size
            .unwrap_or(match self.connection.backend() {
                Backend::Simulated { .. } => 1,
                _ => 1000,
            })
    }
}

/// A file opened for appending on first use; each append is one `write` of whole lines, so
/// concurrent jobs never interleave within a line.
#[derive(Debug, Default)]
pub struct AppendFile {
    file: Mutex<Option<File>>,
}

impl AppendFile {
    fn append(&self, path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
        let mut guard = self.file.lock().expect("append file lock");
        if guard.is_none() {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                fs::create_dir_all(dir)?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("while opening {}: {e}", path.display()))
                })?;
            // A write cut short (a full disk, a kill) may have left half a line: end it, so that
            // this run's lines start on lines of their own.
            if ends_mid_line(&mut file)? {
                file.write_all(b"\n")?;
            }
            *guard = Some(file);
        }
        guard.as_mut().expect("opened above").write_all(bytes)
    }

    fn sync(&self) -> Result<(), std::io::Error> {
        match &*self.file.lock().expect("append file lock") {
            Some(file) => syncable(file.sync_data()),
            None => Ok(()),
        }
    }

    fn close(&self) -> Result<(), std::io::Error> {
        match self.file.lock().expect("append file lock").take() {
            Some(file) => syncable(file.sync_all()),
            None => Ok(()),
        }
    }
}

/// Whether a regular file's last byte is not a newline (false for an empty file, a pipe or a
/// device, whose end cannot be read back).
fn ends_mid_line(file: &mut File) -> Result<bool, std::io::Error> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

/// A log on a pipe or a device (`/dev/stdout`, a FIFO) cannot be synced, and has nothing to
/// sync: the kernel says EINVAL. That is not a failure; any other error is.
fn syncable(result: Result<(), std::io::Error>) -> Result<(), std::io::Error> {
    match result {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}
