//! Components for tests that look like the real ones: a migrator that records every call and
//! can be told to be slow, fail or panic, and a system built around it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use migrate_core::{
    Backend, BatchError, BoxError, Checkpoint, CheckpointKey, Config, FailureRecord, FileStore,
    Key, KeyColumn, KeyKind, Lifecycle, MigrationModule, Migrator, Noun, Outcome, ProgressStore,
    RecordFailure, RecordingBoard, StatusBoard, System, migration_builder,
};
use tokio_util::sync::CancellationToken;

/// What a [`ScriptedMigrator`] does with one id.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Fails with a retryable error this many times, then migrates.
    FlakyTimes(u32),
    /// Always fails, retryable.
    AlwaysTransient,
    /// Fails for good.
    Permanent,
    /// Panics.
    Panic,
    /// Already migrated.
    Previously,
    /// Never returns (a hung database call).
    Hang,
    /// Held by another session: every batch holding it fails as contended (a lock timeout).
    Locked,
    /// Held by another session for this many batches holding it, then free.
    LockedTimes(u32),
}

/// Shared record of what the migrator saw, kept by the test after the migrator moved into the
/// module.
#[derive(Debug, Default)]
pub struct Journal {
    /// Successful migrations per id.
    pub migrated: Mutex<HashMap<i64, u32>>,
    /// Calls per id (every attempt).
    pub attempts: Mutex<HashMap<i64, u32>>,
    /// Ids handed to `migrate` so far, in order.
    pub received: Mutex<Vec<i64>>,
    /// Recorded failures.
    pub failures: Mutex<Vec<FailureRecord>>,
    /// Batches as handed in.
    pub batches: Mutex<Vec<Vec<i64>>>,
    /// Whether any call was a dry run.
    pub dry_runs: Mutex<u32>,
    /// Batches that held the id while it was locked, per id.
    pub contended: Mutex<HashMap<i64, u32>>,
}

impl Journal {
    pub fn migrated_ids(&self) -> HashMap<i64, u32> {
        self.migrated.lock().unwrap().clone()
    }

    pub fn received_count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn failures(&self) -> Vec<FailureRecord> {
        self.failures.lock().unwrap().clone()
    }
}

/// A migrator that follows a script per id, sleeps `pace` per record (use the paused clock),
/// and can cancel a token once it has migrated `stop_after` records in this run.
pub struct ScriptedMigrator {
    pub journal: Arc<Journal>,
    pub script: HashMap<i64, Behaviour>,
    pub pace: Duration,
    pub batch_size: usize,
    pub stop: Option<(usize, CancellationToken)>,
    pub migrated_this_run: Mutex<usize>,
    /// Failures cannot be recorded (the store refuses them).
    pub fail_recording: bool,
    /// Whether the batch size adapts (`Migrator::adaptive_batch_size`).
    pub adaptive: bool,
    /// Once this many ids were received, each record takes this long instead of `pace`.
    pub slow_down: Option<(usize, Duration)>,
    /// Each batch first waits this long, as for a writer lock, and reports it
    /// (`migrate_core::report_wait`).
    pub queue: Duration,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

impl ScriptedMigrator {
    pub fn new(journal: Arc<Journal>) -> ScriptedMigrator {
        ScriptedMigrator {
            journal,
            script: HashMap::new(),
            pace: Duration::ZERO,
            batch_size: 1,
            stop: None,
            migrated_this_run: Mutex::new(0),
            fail_recording: false,
            adaptive: false,
            slow_down: None,
            queue: Duration::ZERO,
            noun: Noun::new("customer", "customers"),
            keys: vec![KeyColumn::new("id", KeyKind::Integer)],
        }
    }
}

impl Lifecycle for ScriptedMigrator {}

impl ScriptedMigrator {
    /// The lock timeout a batch of `ids` meets, as a database would fail the whole
    /// transaction, when one of them is locked now.
    fn contention(&self, ids: &[i64]) -> Option<BatchError> {
        let mut contended = self.journal.contended.lock().unwrap();
        let locked = ids.iter().find(|id| {
            let times = contended.get(id).copied().unwrap_or(0);
            match self.script.get(id) {
                Some(Behaviour::Locked) => true,
                Some(Behaviour::LockedTimes(n)) => times < *n,
                _ => false,
            }
        })?;
        *contended.entry(*locked).or_default() += 1;
        Some(BatchError::Contended(
            format!("canceling statement due to lock timeout on customer {locked}").into(),
        ))
    }
}

#[async_trait]
impl Migrator for ScriptedMigrator {
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let ids: Vec<i64> = keys.iter().map(|k| k.as_int().expect("an id")).collect();
        let ids = ids.as_slice();
        self.journal.batches.lock().unwrap().push(ids.to_vec());
        let pace = match self.slow_down {
            Some((after, slow)) if self.journal.received_count() >= after => slow,
            _ => self.pace,
        };
        self.journal.received.lock().unwrap().extend_from_slice(ids);
        if !self.queue.is_zero() {
            tokio::time::sleep(self.queue).await;
            migrate_core::report_wait(self.queue);
        }
        if let Some(error) = self.contention(ids) {
            return Err(error);
        }
        if dry_run {
            *self.journal.dry_runs.lock().unwrap() += 1;
        }
        let mut outcomes = Vec::new();
        for &id in ids {
            if !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let attempt = {
                let mut attempts = self.journal.attempts.lock().unwrap();
                let n = attempts.entry(id).or_default();
                *n += 1;
                *n
            };
            let outcome = match self.script.get(&id) {
                Some(Behaviour::FlakyTimes(n)) if attempt <= *n => {
                    Outcome::Failed(RecordFailure::transient(format!("flaky {id}")))
                }
                Some(Behaviour::AlwaysTransient) => {
                    Outcome::Failed(RecordFailure::transient(format!("unreachable {id}")))
                }
                Some(Behaviour::Permanent) => {
                    Outcome::Failed(RecordFailure::permanent(format!("malformed {id}")))
                }
                Some(Behaviour::Panic) => panic!("scripted panic on customer {id}"),
                Some(Behaviour::Hang) => std::future::pending().await,
                Some(Behaviour::Previously) => Outcome::PreviouslyMigrated,
                _ => Outcome::Migrated,
            };
            if outcome == Outcome::Migrated && !dry_run {
                let mut count = self.migrated_this_run.lock().unwrap();
                *count += 1;
                if let Some((limit, token)) = &self.stop
                    && *count >= *limit
                {
                    token.cancel();
                }
            }
            outcomes.push(outcome);
        }
        // Like a database transaction: nothing of the batch counts until all of it returned.
        if !dry_run {
            let mut migrated = self.journal.migrated.lock().unwrap();
            for (id, outcome) in ids.iter().zip(&outcomes) {
                if *outcome == Outcome::Migrated {
                    *migrated.entry(*id).or_default() += 1;
                }
            }
        }
        Ok(outcomes)
    }

    fn migration_name(&self) -> &str {
        "customer-migration"
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn adaptive_batch_size(&self) -> bool {
        self.adaptive
    }
}

/// A store that keeps checkpoints in files, as the simulated backend's, and records failures in
/// the journal (or refuses to, as a full disk would).
pub struct JournalStore {
    files: FileStore,
    journal: Arc<Journal>,
    fail_recording: bool,
}

impl Lifecycle for JournalStore {}

#[async_trait]
impl ProgressStore for JournalStore {
    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError> {
        self.files.load_checkpoint(key).await
    }

    async fn save_checkpoint(&self, key: &CheckpointKey, c: &Checkpoint) -> Result<(), BoxError> {
        self.files.save_checkpoint(key, c).await
    }

    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError> {
        self.files.clear_checkpoint(key).await
    }

    async fn record_failures(&self, _: &str, failures: &[FailureRecord]) -> Result<(), BoxError> {
        if self.fail_recording {
            return Err("the failures table is gone".into());
        }
        self.journal
            .failures
            .lock()
            .unwrap()
            .extend_from_slice(failures);
        Ok(())
    }

    async fn open_failures(&self, _: &str) -> Result<Option<u64>, BoxError> {
        Ok(None)
    }

    fn failures_location(&self) -> String {
        "the test journal".to_owned()
    }
}

/// A configuration on the simulated backend with `customers` records and its files in `dir`.
pub fn config(dir: &std::path::Path, customers: u64) -> Config {
    let mut config = Config::default();
    config.connection.simulated_customers = customers;
    config.customer_migrator.sleep_scale = 0.0;
    config.customer_migrator.log_file = dir.join("migration.log");
    config.customer_scanner.paging_state_path = dir.join("paging-state.json");
    config.customer_migration.retry_initial_delay_millis = 100;
    config.customer_migration.retry_max_delay_millis = 1000;
    config
}

/// The real system on the simulated backend, with `migrator` in place and a recording board.
pub fn system(
    config: &Config,
    migrator: ScriptedMigrator,
) -> (System<MigrationModule>, Arc<RecordingBoard>) {
    let board = Arc::new(RecordingBoard::default());
    let store = JournalStore {
        files: FileStore::new(
            config.customer_scanner.paging_state_path.clone(),
            config
                .customer_migrator
                .log_file
                .with_extension("failures.jsonl"),
        ),
        journal: Arc::clone(&migrator.journal),
        fail_recording: migrator.fail_recording,
    };
    let system = migration_builder(
        config,
        Backend::Simulated {
            customers: config.connection.simulated_customers,
        },
    )
    .with_override::<dyn Migrator>(Box::new(migrator), "ScriptedMigrator")
    .with_override::<dyn ProgressStore>(Box::new(store), "JournalStore")
    .with_override::<dyn StatusBoard>(Box::new(SharedBoard(Arc::clone(&board))), "RecordingBoard")
    .build()
    .expect("the system wires");
    (system, board)
}

/// A board component that forwards to a board the test keeps.
pub struct SharedBoard(pub Arc<RecordingBoard>);

impl Lifecycle for SharedBoard {}

impl StatusBoard for SharedBoard {
    fn publish(&self, event: migrate_core::Event) {
        self.0.publish(event);
    }
}
