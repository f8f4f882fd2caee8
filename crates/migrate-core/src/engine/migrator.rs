//! The migrator component: hands batches of keys to the migration and keeps the audit log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::components::component::{BoxError, Lifecycle};
use crate::config::MigratorConfig;
use crate::migration::key::{Key, KeyColumn};
use crate::migration::{Migration, Noun};

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
    /// Nothing took effect, and another attempt may succeed: a lost connection, a deadlock. The
    /// engine retries each record alone, with backoff. Any other error converts to this one,
    /// so `?` keeps the engine's safe default.
    #[error("{0}")]
    Transient(BoxError),
    /// Nothing took effect because another session held what the batch needed, or a statement
    /// ran too long: a lock or statement timeout, a busy SQLite database
    /// ([`BatchTimeouts`](crate::BatchTimeouts)). The engine retries the batch as a whole
    /// with backoff, then splits it in halves, down to single records, so that the records
    /// that are free get migrated. A record still contended after
    /// `customer-migration.retry-attempts` is not a failure: it is left for the next run (the
    /// checkpoint stays behind it) and counted as deferred ([`Summary::deferred`]).
    ///
    /// [`Summary::deferred`]: crate::Summary::deferred
    #[error("{0}")]
    Contended(BoxError),
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
    /// The record's key.
    pub key: Key,
    /// The last error.
    pub error: String,
    /// How many attempts were made.
    pub attempts: u32,
    /// When it was given up.
    pub at: DateTime<Utc>,
}

/// The migrator component.
#[async_trait]
pub trait Migrator: shaku::Interface + Lifecycle {
    /// Migrates (or, on a dry run, only checks) the records `keys`, returning one outcome per
    /// key in the same order. A failure of one record is an `Outcome::Failed` for that record
    /// only. An `Err` says the whole batch failed, and how (see [`BatchError`]): a transient or
    /// rejected batch took no effect, as when a transaction rolls back, and the engine tries
    /// each record alone; a fatal error stops the run. A panic counts as transient.
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError>;

    /// Checks, before a run starts, what this run needs (on a dry run, a run that writes
    /// nothing): a [`PreflightError`] for what a person must fix. Called by the overseer
    /// before any record is read.
    async fn check(&self, dry_run: bool) -> Result<(), BoxError> {
        let _ = dry_run;
        Ok(())
    }

    /// The migration's name: keys its progress in the store.
    fn migration_name(&self) -> &str;

    /// The key columns, for reading keys given by a person (`--file`).
    fn key_columns(&self) -> &[KeyColumn];

    /// What a record is called in messages.
    fn noun(&self) -> &Noun;

    /// How many keys a job hands to `migrate` at once (the first batch's size when it adapts).
    fn batch_size(&self) -> usize;

    /// Whether the batch size may adapt to the batches' time (see
    /// `customer-migration.batch-target-millis`): not when a batch size was given explicitly.
    /// No by default: a migrator opts in.
    fn adaptive_batch_size(&self) -> bool {
        false
    }
}

/// The migrator: batches go to the [`Migration`], and each committed batch's records get a line
/// in the audit log file (`customer-migrator.log-file`), a readable export of the database's
/// own audit.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = Migrator)]
pub struct BatchMigrator {
    /// `[customer-migrator]`
    #[shaku(default)]
    config: MigratorConfig,
    /// What is migrated; shared with the scanner.
    migration: Arc<dyn Migration>,
    /// The audit log, opened on first write so that a dry run creates no file.
    #[shaku(default)]
    audit: AppendFile,
}

impl std::fmt::Debug for BatchMigrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchMigrator")
            .field("config", &self.config)
            .field("migration", &self.migration.name())
            .finish()
    }
}

impl BatchMigrator {
    /// Shaku parameters: the configuration and the migration to run.
    pub fn parameters(
        config: MigratorConfig,
        migration: Arc<dyn Migration>,
    ) -> BatchMigratorParameters {
        BatchMigratorParameters {
            config,
            migration,
            audit: AppendFile::default(),
        }
    }
}

/// Audit lines, as in the seed: date, time, record, key, milliseconds. The clock is read once
/// per batch: the records of a batch are committed together.
fn audit_lines<'a>(
    noun: &str,
    migrated: impl IntoIterator<Item = &'a Key>,
    millis: u128,
) -> String {
    use std::fmt::Write as _;
    let now = chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string();
    let mut out = String::new();
    for key in migrated {
        let _ = writeln!(out, "{now} {noun} {key} migrated in {millis} ms");
    }
    out
}

#[async_trait]
impl Lifecycle for BatchMigrator {
    /// Checks that the migration can work (its table and columns).
    async fn start(&self) -> Result<(), BoxError> {
        self.migration.check().await
    }

    async fn stop(&self) -> Result<(), BoxError> {
        self.audit.close()?;
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
             migrated and committed without a line in it)",
            path.display()
        )
        .into(),
        committed: Some(outcomes),
    }
}

#[async_trait]
impl Migrator for BatchMigrator {
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let started = Instant::now();
        let outcomes = self.migration.migrate(keys, dry_run).await?;
        let millis = started.elapsed().as_millis();
        if !dry_run && outcomes.len() == keys.len() {
            let log = audit_lines(
                &self.migration.noun().one,
                keys.iter()
                    .zip(&outcomes)
                    .filter(|(_, outcome)| **outcome == Outcome::Migrated)
                    .map(|(key, _)| key),
                millis,
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

    fn migration_name(&self) -> &str {
        self.migration.name()
    }

    fn key_columns(&self) -> &[KeyColumn] {
        self.migration.key_columns()
    }

    fn noun(&self) -> &Noun {
        self.migration.noun()
    }

    fn batch_size(&self) -> usize {
        self.config
            .batch_size
            .unwrap_or_else(|| self.migration.default_batch_size())
    }

    /// Adaptive unless `customer-migrator.batch-size` is set or the migration has a fixed one.
    fn adaptive_batch_size(&self) -> bool {
        self.config.batch_size.is_none() && self.migration.adaptive_batch_size()
    }
}

/// A file opened for appending on first use; each append is one `write` of whole lines, so
/// concurrent jobs never interleave within a line.
#[derive(Debug, Default)]
pub struct AppendFile {
    file: Mutex<Option<File>>,
}

impl AppendFile {
    pub(crate) fn append(&self, path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
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

    pub(crate) fn sync(&self) -> Result<(), std::io::Error> {
        match &*self.file.lock().expect("append file lock") {
            Some(file) => syncable(file.sync_data()),
            None => Ok(()),
        }
    }

    pub(crate) fn close(&self) -> Result<(), std::io::Error> {
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
