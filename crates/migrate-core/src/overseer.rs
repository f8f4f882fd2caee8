//! The migration-overseer component: runs the scanner and the jobs, counts, checkpoints, stops.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::board::StatusBoard;
use crate::checkpoint::{CheckpointKey, KeyRange, Tracker};
use crate::component::{BoxError, Lifecycle};
use crate::config::MigrationConfig;
use crate::events::{Event, JobId, JobStatus};
use crate::migrator::{CustomerMigrator, FailureRecord, Outcome, RecordFailure};
use crate::retry::{RateLimit, backoff};
use crate::scanner::{CustomerScanner, Scan, ScanReport, Work};
use crate::summary::{Ending, Summary, thousands};

/// The scanner's line on the board.
pub const SCANNER_JOB: JobId = JobId(0);
/// The summary line on the board.
pub const SUMMARY_JOB: JobId = JobId(1);
/// The first migration job's line; job `n` (from 0) is `JobId(FIRST_PROCESS_JOB.0 + n)`.
pub const FIRST_PROCESS_JOB: JobId = JobId(2);

/// How often the summary line is refreshed.
const PROGRESS_PERIOD: Duration = Duration::from_millis(100);

/// What a run should do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Check and count only; write nothing (no migration, no checkpoint, no failure record).
    pub dry_run: bool,
    /// Forget any saved progress and start over.
    pub reset: bool,
    /// Ids to migrate instead of scanning the backend, ascending, without duplicates.
    pub input: Option<Arc<[i64]>>,
    /// The key range to scan.
    pub range: KeyRange,
    /// The migration's name: keys its checkpoint.
    pub migration: String,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            reset: false,
            input: None,
            range: KeyRange::ALL,
            migration: "customer-migration".to_owned(),
        }
    }
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The saved progress could not be read or reset.
    #[error("while reading the checkpoint of {migration} ({range}): {source}")]
    Checkpoint {
        /// The migration.
        migration: String,
        /// Its key range.
        range: KeyRange,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

/// The overseer component: one call to [`run`](MigrationOverseer::run) is one migration run.
#[async_trait]
pub trait MigrationOverseer: shaku::Interface + Lifecycle {
    /// Runs the migration until every scanned record is handled, `shutdown` is cancelled, or the
    /// run aborts. Returns the summary in every one of these cases (see [`Summary::ending`]);
    /// `Err` only when the run could not start.
    async fn run(
        &self,
        options: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError>;
}
crate::named_interface!(MigrationOverseer, "migration-overseer");

/// The overseer: starts `processes` jobs that take ids from the scanner's bounded channel.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = MigrationOverseer)]
pub struct Overseer {
    #[shaku(inject)]
    scanner: Arc<dyn CustomerScanner>,
    #[shaku(inject)]
    board: Arc<dyn StatusBoard>,
    #[shaku(inject)]
    migrator: Arc<dyn CustomerMigrator>,
    /// `[customer-migration]`
    #[shaku(default)]
    config: MigrationConfig,
}

impl std::fmt::Debug for Overseer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overseer")
            .field("config", &self.config)
            .finish()
    }
}

impl Lifecycle for Overseer {}

/// Record counts, shared by the jobs.
#[derive(Debug, Default)]
struct Counts {
    migrated: AtomicU64,
    previously_migrated: AtomicU64,
    failed: AtomicU64,
}

impl Counts {
    fn handled(&self) -> u64 {
        self.migrated.load(Ordering::Relaxed)
            + self.previously_migrated.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
    }
}

/// What every job of one run shares.
struct Shared {
    migrator: Arc<dyn CustomerMigrator>,
    board: Arc<dyn StatusBoard>,
    config: MigrationConfig,
    dry_run: bool,
    batch_size: usize,
    /// The scanner's channel; jobs take turns receiving from it.
    ids: tokio::sync::Mutex<mpsc::Receiver<Work>>,
    tracker: Arc<Tracker>,
    counts: Counts,
    rate: Option<RateLimit>,
    /// Cancelled to stop taking work: on shutdown (a child of its token) or on abort.
    halt: CancellationToken,
    /// `halt` as a plain flag for the jobs' hot loop: `CancellationToken::is_cancelled` takes a
    /// lock, and the jobs ask after every batch. Set by a watcher task (see `run`).
    halted: AtomicBool,
    /// Why the run aborted, once it has.
    abort: Mutex<Option<String>>,
}

impl Shared {
    fn abort(&self, reason: String) {
        let mut abort = self.abort.lock().expect("abort lock");
        if abort.is_none() {
            *abort = Some(reason);
        }
        self.halt.cancel();
    }

    fn abort_reason(&self) -> Option<String> {
        self.abort.lock().expect("abort lock").clone()
    }

    /// One call to the migrator, with a panic turned into an error.
    async fn try_migrate(&self, ids: &[i64]) -> Result<Vec<Outcome>, String> {
        match AssertUnwindSafe(self.migrator.migrate(ids, self.dry_run))
            .catch_unwind()
            .await
        {
            Ok(Ok(outcomes)) if outcomes.len() == ids.len() => Ok(outcomes),
            Ok(Ok(outcomes)) => Err(format!(
                "the migrator returned {} outcomes for {} records",
                outcomes.len(),
                ids.len()
            )),
            Ok(Err(error)) => Err(error.to_string()),
            Err(panic) => Err(format!("the migrator panicked: {}", panic_message(&*panic))),
        }
    }

    /// Migrates `ids` as one batch; records that fail in a way that may pass are retried alone
    /// with backoff. Fills `results` with each record's final outcome and its number of
    /// attempts (a buffer the job reuses: this runs once per batch).
    async fn migrate_batch(&self, ids: &[i64], results: &mut Vec<(Outcome, u32)>) {
        results.clear();
        match self.try_migrate(ids).await {
            Ok(outcomes) => {
                for (&id, outcome) in ids.iter().zip(outcomes) {
                    results.push(match outcome {
                        Outcome::Failed(failure) if failure.retryable => {
                            self.migrate_alone(id, 1, failure).await
                        }
                        other => (other, 1),
                    });
                }
            }
            // A batch that failed as a whole: find the culprit by trying each record alone.
            Err(message) => {
                let attempts_made = u32::from(ids.len() == 1);
                for &id in ids {
                    results.push(
                        self.migrate_alone(
                            id,
                            attempts_made,
                            RecordFailure::transient(message.clone()),
                        )
                        .await,
                    );
                }
            }
        }
    }

    /// Retries one record until it succeeds, fails for good, or runs out of attempts.
    async fn migrate_alone(
        &self,
        id: i64,
        mut attempts: u32,
        mut last: RecordFailure,
    ) -> (Outcome, u32) {
        let initial = Duration::from_millis(self.config.retry_initial_delay_millis);
        let max = Duration::from_millis(self.config.retry_max_delay_millis);
        while attempts < self.config.retry_attempts {
            if attempts > 0 {
                tokio::time::sleep(backoff(attempts, initial, max)).await;
            }
            attempts += 1;
            match self.try_migrate(&[id]).await {
                Ok(mut outcomes) => match outcomes.pop().expect("one outcome") {
                    Outcome::Failed(failure) if failure.retryable => last = failure,
                    outcome => return (outcome, attempts),
                },
                Err(message) => last = RecordFailure::transient(message),
            }
        }
        (Outcome::Failed(last), attempts.max(1))
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_owned()
    }
}

/// Takes up to a batch of ids for one job: what the channel holds, then, if that is less than
/// a batch, what arrives within `batch-linger-millis`. The job keeps the receiver meanwhile, so
/// jobs fill their batches in turn instead of all sharing what is there. Returns 0 when the
/// channel is closed and drained.
async fn take_batch(shared: &Shared, work: &mut Vec<Work>) -> usize {
    let batch = shared.batch_size;
    let mut ids = shared.ids.lock().await;
    let mut taken = ids.recv_many(work, batch).await;
    if taken == 0 || taken >= batch {
        return taken;
    }
    let deadline = Instant::now() + Duration::from_millis(shared.config.batch_linger_millis);
    while taken < batch {
        match tokio::time::timeout_at(deadline, ids.recv_many(work, batch - taken)).await {
            Ok(0) | Err(_) => break,
            Ok(more) => taken += more,
        }
    }
    taken
}

/// One migration job: takes ids until the channel is drained or the run halts.
async fn run_job(shared: Arc<Shared>, job: JobId, prefix: String) {
    let board = &*shared.board;
    board.publish(Event::JobAdded { job, prefix });
    let event_interval = Duration::from_millis(shared.config.event_interval_millis);
    let mut last_text: Option<Instant> = None;
    let mut work = Vec::with_capacity(shared.batch_size);
    let mut ids = Vec::with_capacity(shared.batch_size);
    let mut results = Vec::with_capacity(shared.batch_size);
    let mut failures = Vec::new();
    let mut had_failure = false;
    let mut handled = 0u64;
    loop {
        work.clear();
        if shared.halted.load(Ordering::Relaxed) {
            break;
        }
        // No select on the halt here: when the run halts, the scanner returns and drops its
        // sender, which wakes a job waiting for ids. What a job takes after the halt is not
        // started, so not marked done: the next run migrates it.
        let taken = take_batch(&shared, &mut work).await;
        if taken == 0 || shared.halted.load(Ordering::Relaxed) {
            break;
        }
        if let Some(rate) = &shared.rate {
            tokio::select! {
                biased;
                () = shared.halt.cancelled() => break,
                () = rate.acquire(taken) => {}
            }
        }
        ids.clear();
        ids.extend(work.iter().map(|w| w.id));
        let now = Instant::now();
        if last_text.is_none_or(|t| now.duration_since(t) >= event_interval) {
            last_text = Some(now);
            let text = match ids.as_slice() {
                [one] => format!("Migrating customer {one}"),
                [first, .., last] => format!("Migrating customers {first} to {last}"),
                [] => unreachable!("recv_many took at least one"),
            };
            board.publish(Event::JobText { job, text });
        }
        shared.migrate_batch(&ids, &mut results).await;
        let (mut migrated, mut previously) = (0, 0);
        failures.clear();
        for (&id, (outcome, attempts)) in ids.iter().zip(results.drain(..)) {
            match outcome {
                Outcome::Migrated => migrated += 1,
                Outcome::PreviouslyMigrated => previously += 1,
                Outcome::Failed(failure) => failures.push(FailureRecord {
                    id,
                    error: failure.message,
                    attempts,
                    at: chrono::Utc::now(),
                }),
            }
        }
        if !failures.is_empty()
            && !shared.dry_run
            && let Err(error) = shared.migrator.record_failures(&failures).await
        {
            // Unrecorded failures are not marked done: the next run tries them again.
            shared.abort(format!("while recording failures: {error}"));
            break;
        }
        let counts = &shared.counts;
        counts.migrated.fetch_add(migrated, Ordering::Relaxed);
        counts
            .previously_migrated
            .fetch_add(previously, Ordering::Relaxed);
        if !failures.is_empty() {
            let failed = failures.len() as u64;
            let total_failed = counts.failed.fetch_add(failed, Ordering::Relaxed) + failed;
            if !had_failure {
                had_failure = true;
                board.publish(Event::JobStatus {
                    job,
                    status: JobStatus::Warning,
                });
            }
            let limit = shared.config.max_failures;
            if limit > 0 && total_failed > limit {
                shared.abort(format!(
                    "more than {} records failed (customer-migration.max-failures)",
                    thousands(limit)
                ));
            }
        }
        handled += taken as u64;
        shared.tracker.complete(work.iter().map(|w| w.seq));
    }
    board.publish(Event::JobText {
        job,
        text: format!("Done, after {} customers", thousands(handled)),
    });
    board.publish(Event::JobStatus {
        job,
        status: if had_failure {
            JobStatus::Warning
        } else {
            JobStatus::Success
        },
    });
    board.publish(Event::JobFinished { job });
}

impl Overseer {
    /// Shaku parameters for this configuration.
    pub fn parameters(config: MigrationConfig) -> OverseerParameters {
        OverseerParameters { config }
    }

    /// The summary line while the run goes on (the board adds the rate).
    fn progress_text(shared: &Shared) -> String {
        let counts = &shared.counts;
        let migrated = counts.migrated.load(Ordering::Relaxed);
        format!(
            "{} {} customers ({} previously migrated, {} failures)",
            if shared.dry_run {
                "Migration needed for"
            } else {
                "Migrated"
            },
            thousands(migrated),
            thousands(counts.previously_migrated.load(Ordering::Relaxed)),
            thousands(counts.failed.load(Ordering::Relaxed)),
        )
    }
}

#[async_trait]
impl MigrationOverseer for Overseer {
    async fn run(
        &self,
        options: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError> {
        let started = Instant::now();
        let key = CheckpointKey {
            migration: options.migration.clone(),
            range: options.range,
        };
        let checkpoint_error = |source| RunError::Checkpoint {
            migration: key.migration.clone(),
            range: key.range,
            source,
        };
        if options.reset && !options.dry_run {
            self.scanner
                .clear_checkpoint(&key)
                .await
                .map_err(checkpoint_error)?;
        }
        let checkpoint = if options.reset {
            None
        } else {
            self.scanner
                .load_checkpoint(&key)
                .await
                .map_err(checkpoint_error)?
        };
        let tracker = Arc::new(Tracker::new(checkpoint));
        let (sender, receiver) = mpsc::channel(self.scanner.block_size().max(1));
        let shared = Arc::new(Shared {
            migrator: Arc::clone(&self.migrator),
            board: Arc::clone(&self.board),
            config: self.config.clone(),
            dry_run: options.dry_run,
            batch_size: self.migrator.batch_size().max(1),
            ids: tokio::sync::Mutex::new(receiver),
            tracker: Arc::clone(&tracker),
            counts: Counts::default(),
            rate: RateLimit::new(self.config.rate_limit),
            halt: shutdown.child_token(),
            halted: AtomicBool::new(false),
            abort: Mutex::new(None),
        });

        let watcher = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                shared.halt.cancelled().await;
                shared.halted.store(true, Ordering::Relaxed);
            })
        };
        let board = &*self.board;
        board.publish(Event::JobAdded {
            job: SCANNER_JOB,
            prefix: String::new(),
        });
        board.publish(Event::JobAdded {
            job: SUMMARY_JOB,
            prefix: String::new(),
        });
        // The summary line has its text from the first frame on, not from the first tick.
        board.publish(Event::JobText {
            job: SUMMARY_JOB,
            text: Self::progress_text(&shared),
        });
        let sent = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(u64::MAX));
        let scan = Scan {
            job: SCANNER_JOB,
            range: options.range,
            input: options.input.clone(),
            tracker: Arc::clone(&tracker),
            sender,
            halt: shared.halt.clone(),
            sent: Arc::clone(&sent),
            total: Arc::clone(&total),
        };
        let scanner = Arc::clone(&self.scanner);
        let scan_task = tokio::spawn(async move { scanner.scan(scan).await });

        let processes = self.config.processes.max(1);
        let width = processes.to_string().len();
        let mut jobs = JoinSet::new();
        for n in 0..processes {
            let job = JobId(FIRST_PROCESS_JOB.0 + n as u32);
            let prefix = format!("Process #{:>width$}: ", n + 1);
            jobs.spawn(run_job(Arc::clone(&shared), job, prefix));
        }

        let mut ticker = tokio::time::interval(PROGRESS_PERIOD);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let checkpoint_every = Duration::from_millis(self.config.checkpoint_interval_millis);
        let mut last_save = Instant::now();
        let mut grace_deadline: Option<Instant> = None;
        let far_future = Instant::now() + Duration::from_secs(86_400 * 365);
        loop {
            tokio::select! {
                joined = jobs.join_next() => match joined {
                    None => break,
                    Some(Err(error)) if error.is_panic() => {
                        shared.abort(format!("a migration job panicked: {}", panic_message(&*error.into_panic())));
                    }
                    Some(_) => {}
                },
                _ = ticker.tick() => {
                    board.publish(Event::JobText {
                        job: SUMMARY_JOB,
                        text: Self::progress_text(&shared),
                    });
                    board.publish(Event::JobProgress {
                        job: SUMMARY_JOB,
                        done: shared.counts.handled(),
                        total: Some(total.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX),
                    });
                    if !options.dry_run && last_save.elapsed() >= checkpoint_every {
                        last_save = Instant::now();
                        let (checkpoint, changed) = tracker.snapshot();
                        if changed
                            && let Err(error) = self.scanner.save_checkpoint(&key, &checkpoint).await
                        {
                            shared.abort(format!("while saving the checkpoint: {error}"));
                        }
                    }
                },
                () = shared.halt.cancelled(), if grace_deadline.is_none() => {
                    grace_deadline = Some(Instant::now() + self.config.grace_period());
                    // Closing the channel stops the scanner's send at once; jobs stop taking
                    // on the halted flag. A job may hold the receiver a while (its linger, or
                    // until the scanner's current page arrives), so the loop does not wait.
                    let closing = Arc::clone(&shared);
                    tokio::spawn(async move { closing.ids.lock().await.close() });
                },
                () = tokio::time::sleep_until(grace_deadline.unwrap_or(far_future)), if grace_deadline.is_some() => {
                    // Jobs past the grace period are stopped; what they held is not marked done
                    // and is migrated by the next run.
                    jobs.abort_all();
                    grace_deadline = Some(far_future);
                },
            }
        }

        watcher.abort();
        // A scanner stuck in a query when the run halted gets the grace period, then is stopped.
        let scan_result = if shared.halted.load(Ordering::Relaxed) {
            let abort = scan_task.abort_handle();
            match tokio::time::timeout(self.config.grace_period(), scan_task).await {
                Ok(result) => result,
                Err(_) => {
                    abort.abort();
                    Ok(Ok(ScanReport {
                        scanned: 0,
                        complete: false,
                    }))
                }
            }
        } else {
            scan_task.await
        };
        let scan_report = match scan_result {
            Ok(Ok(report)) => report,
            Ok(Err(error)) => {
                shared.abort(format!("while scanning: {error}"));
                ScanReport {
                    scanned: 0,
                    complete: false,
                }
            }
            Err(error) => {
                shared.abort(format!("the scanner stopped: {error}"));
                ScanReport {
                    scanned: 0,
                    complete: false,
                }
            }
        };
        let all_done = scan_report.complete && tracker.in_flight() == 0;
        let abort_reason = shared.abort_reason();
        let ending = match (&abort_reason, all_done) {
            (Some(_), _) => Ending::Aborted,
            (None, true) => Ending::Completed,
            (None, false) => Ending::Interrupted,
        };
        let mut abort_reason = abort_reason;
        if !options.dry_run {
            let saved = if ending == Ending::Completed {
                self.scanner.clear_checkpoint(&key).await
            } else {
                self.scanner
                    .save_checkpoint(&key, &tracker.snapshot().0)
                    .await
            };
            if let Err(error) = saved {
                abort_reason.get_or_insert(format!("while saving the checkpoint: {error}"));
            }
        }
        let ending = if abort_reason.is_some() {
            Ending::Aborted
        } else {
            ending
        };
        let counts = &shared.counts;
        let failed = counts.failed.load(Ordering::Relaxed);
        let summary = Summary {
            migrated: counts.migrated.load(Ordering::Relaxed),
            previously_migrated: counts.previously_migrated.load(Ordering::Relaxed),
            failed,
            scanned: sent.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            dry_run: options.dry_run,
            ending,
            abort_reason,
            failures_recorded_in: (failed > 0 && !options.dry_run)
                .then(|| self.migrator.failures_location()),
        };
        board.publish(Event::JobText {
            job: SUMMARY_JOB,
            text: summary.to_string(),
        });
        board.publish(Event::JobStatus {
            job: SUMMARY_JOB,
            status: match (summary.ending, summary.failed) {
                (Ending::Aborted, _) => JobStatus::Error,
                (Ending::Interrupted, _) | (_, 1..) => JobStatus::Warning,
                _ => JobStatus::Success,
            },
        });
        board.publish(Event::JobFinished { job: SUMMARY_JOB });
        board.publish(Event::Summary(summary.clone()));
        Ok(summary)
    }
}
