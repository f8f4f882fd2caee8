//! The migration-overseer component: runs the scanner and the jobs, counts, checkpoints, stops.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::components::component::{BoxError, Lifecycle};
use crate::config::MigrationConfig;
use crate::engine::board::StatusBoard;
use crate::engine::checkpoint::{CheckpointKey, KeyRange, Tracker};
use crate::engine::control::RunControl;
use crate::engine::events::{Event, JobId, JobStatus};
use crate::engine::flow::{self, Bound, Flow};
use crate::engine::health::HealthCheck;
use crate::engine::job::{Counts, Shared, panic_message, run_job};
use crate::engine::metrics::RunMetrics;
use crate::engine::migrator::Migrator;
use crate::engine::scanner::{Scan, ScanReport, Scanner};
use crate::engine::summary::{Ending, Summary, thousands};
use crate::engine::trace;
use crate::migration::key::Key;
use crate::store::ProgressStore;
use crate::store::runs::{HEARTBEAT_PERIOD, RunId, RunRecord};

/// The scanner's line on the board.
pub const SCANNER_JOB: JobId = JobId(0);
/// The summary line on the board.
pub const SUMMARY_JOB: JobId = JobId(1);
/// The first migration job's line; job `n` (from 0) is `JobId(FIRST_PROCESS_JOB.0 + n)`.
pub const FIRST_PROCESS_JOB: JobId = JobId(2);

/// A line for notices about the run itself (one that could not be recorded).
pub const NOTICE_JOB: JobId = JobId(u32::MAX);

/// How often the summary line is refreshed.
const PROGRESS_PERIOD: Duration = Duration::from_millis(100);

/// What a run should do.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Check and count only; write nothing (no migration, no checkpoint, no failure record).
    pub dry_run: bool,
    /// Forget any saved progress and start over.
    pub reset: bool,
    /// Keys to migrate instead of scanning, in their order, without duplicates.
    pub input: Option<Arc<[Key]>>,
    /// The key range to scan.
    pub range: KeyRange,
    /// Live control: pause, resume, stop, and settings changed while the run goes on.
    pub control: RunControl,
    /// Failures already counted against `max-failures` before this run: a distributed worker's
    /// earlier ranges, each of which is a run, so that the limit is the process's, not each
    /// range's.
    pub failures_before: u64,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            dry_run: false,
            reset: false,
            input: None,
            range: KeyRange::ALL,
            control: RunControl::default(),
            failures_before: 0,
        }
    }
}

/// A run that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A check before the run found that it cannot work (see
    /// [`Migrator::check`]); nothing ran.
    #[error("{0}")]
    Check(#[source] BoxError),
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
    scanner: Arc<dyn Scanner>,
    #[shaku(inject)]
    board: Arc<dyn StatusBoard>,
    #[shaku(inject)]
    migrator: Arc<dyn Migrator>,
    #[shaku(inject)]
    store: Arc<dyn ProgressStore>,
    /// `[customer-migration]`
    #[shaku(default)]
    config: MigrationConfig,
    /// Asked between batches when throttling is configured (see [`HealthCheck`]).
    #[shaku(default)]
    health: Option<Arc<dyn HealthCheck>>,
}

impl std::fmt::Debug for Overseer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overseer")
            .field("config", &self.config)
            .field("health", &self.health)
            .finish()
    }
}

impl Lifecycle for Overseer {}

impl Overseer {
    /// Shaku parameters for this configuration.
    pub fn parameters(config: MigrationConfig) -> OverseerParameters {
        OverseerParameters {
            config,
            health: None,
        }
    }

    /// Shaku parameters for this configuration, with the database's health checked between
    /// batches by `health`.
    pub fn parameters_with_health(
        config: MigrationConfig,
        health: Option<Arc<dyn HealthCheck>>,
    ) -> OverseerParameters {
        OverseerParameters { config, health }
    }

    /// The settings that shape a run, as its row in the progress store keeps them.
    fn run_settings(&self, options: &RunOptions, batch_size: usize) -> serde_json::Value {
        serde_json::json!({
            "processes": self.config.processes.max(1),
            "batch_size": batch_size,
            "rate_limit": self.config.rate_limit,
            "max_failures": self.config.max_failures,
            "dry_run": options.dry_run,
            "reset": options.reset,
            "range": options.range.to_string(),
            "input": options.input.as_deref().map(|keys| serde_json::json!({
                "keys": keys.len(),
                "digest": CheckpointKey::input_digest(keys),
            })),
        })
    }

    /// Records the start of a run in the store (not on a dry run, which writes nothing). A
    /// store that cannot record it (a role without rights on `migration_runs`, a read-only
    /// database) does not stop the run, which goes on unrecorded: the board says so on a line
    /// of its own ([`NOTICE_JOB`]), and the batches meet any real trouble themselves.
    async fn begin_run(&self, options: &RunOptions, batch_size: usize) -> Option<RunId> {
        if options.dry_run {
            return None;
        }
        let name = self.migrator.migration_name();
        let record = RunRecord::new(name, self.run_settings(options, batch_size));
        match self.store.begin_run(&record).await {
            Ok(id) => Some(id),
            Err(error) => {
                self.notice(format!(
                    "This run is not recorded among the runs of {name}: {error}"
                ));
                None
            }
        }
    }

    /// Shows `text` as a warning on the notice line.
    fn notice(&self, text: String) {
        let board = &*self.board;
        board.publish(Event::JobAdded {
            job: NOTICE_JOB,
            prefix: String::new(),
        });
        board.publish(Event::JobText {
            job: NOTICE_JOB,
            text,
        });
        board.publish(Event::JobStatus {
            job: NOTICE_JOB,
            status: JobStatus::Warning,
        });
        board.publish(Event::JobFinished { job: NOTICE_JOB });
    }

    /// The summary line while the run goes on (the board adds the rate).
    fn progress_text(shared: &Shared) -> String {
        let counts = &shared.counts;
        let migrated = counts.migrated.load(Ordering::Relaxed);
        let gone = match counts.gone.load(Ordering::Relaxed) {
            0 => String::new(),
            gone => format!("{} gone, ", thousands(gone)),
        };
        let deferred = match counts.deferred.load(Ordering::Relaxed) {
            0 => String::new(),
            deferred => format!(", {} locked, left for the next run", thousands(deferred)),
        };
        format!(
            "{} {} {} ({} previously migrated, {gone}{} failures{deferred}); {}",
            if shared.dry_run {
                "Migration needed for"
            } else {
                "Migrated"
            },
            thousands(migrated),
            shared.migrator.noun().count(migrated),
            thousands(counts.previously_migrated.load(Ordering::Relaxed)),
            thousands(counts.failed.load(Ordering::Relaxed)),
            shared.flow.batch_text(),
        )
    }

    /// `throttle-interval-millis` as a duration.
    fn throttle_interval(&self) -> Duration {
        Duration::from_millis(self.config.throttle_interval_millis.max(1))
    }
}

/// Starts the jobs the flow wants more of (all of them at the start; more when `processes` is
/// raised while the run goes on), each on a new line of the board.
fn spawn_jobs(shared: &Arc<Shared>, jobs: &mut JoinSet<()>, spawned: &mut usize, width: usize) {
    for _ in 0..shared.flow.jobs_wanted() {
        let job = JobId(FIRST_PROCESS_JOB.0 + *spawned as u32);
        *spawned += 1;
        let prefix = format!("Process #{:>width$}: ", *spawned);
        shared.flow.job_started();
        jobs.spawn(run_job(Arc::clone(shared), job, prefix).in_current_span());
    }
}

impl Overseer {
    /// The run, inside the span that [`MigrationOverseer::run`] gives it.
    async fn run_in_span(
        &self,
        options: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError> {
        let started = Instant::now();
        let key = CheckpointKey::new(
            self.migrator.migration_name(),
            options.range.clone(),
            options.input.as_deref(),
        );
        if options.input.is_some() && options.range != KeyRange::ALL {
            // Given keys are migrated in their own order: a range of the database's order
            // cannot bound them.
            return Err(RunError::Check(
                "a run over given keys takes no key range: give one or the other".into(),
            ));
        }
        self.migrator
            .check(options.dry_run)
            .await
            .map_err(RunError::Check)?;
        let checkpoint_error = |source| RunError::Checkpoint {
            migration: key.migration.clone(),
            range: key.range.clone(),
            source,
        };
        if options.reset && !options.dry_run {
            self.store
                .clear_checkpoint(&key)
                .await
                .map_err(checkpoint_error)?;
        }
        let checkpoint = if options.reset {
            None
        } else {
            self.store
                .load_checkpoint(&key)
                .await
                .map_err(checkpoint_error)?
        };
        let block_size = self.scanner.block_size().max(1);
        let batch_size = self.migrator.batch_size().max(1);
        let run = self.begin_run(&options, batch_size).await;
        // The window's bound: what the jobs and the channel hold, twice, and a page; below
        // that the jobs would wait for the scanner even with no slow record. The flow keeps it
        // so as the batch size and the number of jobs change.
        let tracker = Arc::new(Tracker::bounded(checkpoint, self.config.max_pending));
        let metrics = RunMetrics::new(
            self.migrator.migration_name(),
            batch_size,
            self.config.rate_limit,
        );
        let flow = Arc::new(Flow::new(
            &self.config,
            batch_size,
            self.migrator.adaptive_batch_size(),
            Arc::clone(&tracker),
            Bound {
                max_pending: self.config.max_pending,
                scanner: block_size.saturating_add(self.scanner.fetch_size()),
            },
            Arc::clone(&self.board),
            metrics.clone(),
        ));
        let (sender, receiver) = flume::bounded(block_size);
        let shared = Arc::new(Shared {
            migrator: Arc::clone(&self.migrator),
            store: Arc::clone(&self.store),
            board: Arc::clone(&self.board),
            config: self.config.clone(),
            dry_run: options.dry_run,
            failures_before: options.failures_before,
            flow: Arc::clone(&flow),
            ids: receiver,
            filling: tokio::sync::Mutex::new(()),
            tracker: Arc::clone(&tracker),
            counts: Counts::default(),
            metrics,
            halt: shutdown.child_token(),
            halted: AtomicBool::new(false),
            abort: Mutex::new(None),
        });

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
            range: options.range.clone(),
            input: options.input.clone(),
            tracker: Arc::clone(&tracker),
            sender,
            halt: shared.halt.clone(),
            sent: Arc::clone(&sent),
            total: Arc::clone(&total),
        };
        let scanner = Arc::clone(&self.scanner);
        let scan_task = tokio::spawn(async move { scanner.scan(scan).await }.in_current_span());

        let obeying = flow::obey(&flow, &options.control, &shared.halt);
        let health = match &self.health {
            Some(check) => Some(
                flow::watch_health(
                    &flow,
                    Arc::clone(check),
                    self.throttle_interval(),
                    &shared.halt,
                )
                .await,
            ),
            None => None,
        };
        let width = self.config.processes.max(1).to_string().len();
        let mut spawned = 0;
        let mut jobs = JoinSet::new();
        spawn_jobs(&shared, &mut jobs, &mut spawned, width);
        let mut ticker = tokio::time::interval(PROGRESS_PERIOD);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let checkpoint_every = Duration::from_millis(self.config.checkpoint_interval_millis);
        let mut last_save = Instant::now();
        let mut last_heartbeat = Instant::now();
        let mut grace_deadline: Option<Instant> = None;
        // When the grace period that began with the halt ends: the jobs and the scanner share
        // it, so that a stop takes the grace period once, not once per part.
        let mut halted_until: Option<Instant> = None;
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
                    if !shared.is_halted() {
                        spawn_jobs(&shared, &mut jobs, &mut spawned, width);
                    }
                    board.publish(Event::JobText {
                        job: SUMMARY_JOB,
                        text: Self::progress_text(&shared),
                    });
                    board.publish(Event::JobProgress {
                        job: SUMMARY_JOB,
                        done: shared.counts.handled(),
                        total: Some(total.load(Ordering::Relaxed)).filter(|&t| t != u64::MAX),
                    });
                    // A missed heartbeat is not worth stopping for: the next one may pass, and a
                    // database that is really gone stops the batches.
                    if let Some(run) = &run
                        && last_heartbeat.elapsed() >= HEARTBEAT_PERIOD
                    {
                        last_heartbeat = Instant::now();
                        let _ = self.store.heartbeat(run).await;
                    }
                    if !options.dry_run && last_save.elapsed() >= checkpoint_every {
                        last_save = Instant::now();
                        let (checkpoint, changed) = tracker.snapshot();
                        if changed
                            && let Err(error) = self.store.save_checkpoint(&key, &checkpoint).await
                        {
                            shared.abort(format!("while saving the checkpoint: {error}"));
                        }
                    }
                },
                () = shared.halt.cancelled(), if grace_deadline.is_none() => {
                    grace_deadline = Some(Instant::now() + self.config.grace_period());
                    halted_until = grace_deadline;
                    // The scanner and the jobs waiting on the channel watch the halt; jobs
                    // stop taking on the halted flag.
                },
                () = tokio::time::sleep_until(grace_deadline.unwrap_or(far_future)), if grace_deadline.is_some() => {
                    // Jobs past the grace period are stopped; what they held is not marked done
                    // and is migrated by the next run.
                    jobs.abort_all();
                    grace_deadline = Some(far_future);
                },
            }
        }

        obeying.abort();
        if let Some(health) = health {
            health.abort();
        }
        flow.finish();
        // A scanner stuck in a query when the run halted gets what is left of the grace
        // period, then is stopped.
        let scan_result = if shared.is_halted() || halted_until.is_some() {
            let abort = scan_task.abort_handle();
            let until = halted_until.unwrap_or_else(|| Instant::now() + self.config.grace_period());
            match tokio::time::timeout_at(until, scan_task).await {
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
        // Records deferred to the next run do not keep a run from completing; nor does a scan
        // that stopped because they held the window full: the next run resumes before them.
        // (`scan_gave_up`, not `stuck()` asked again: the window's limit follows the batch size and
        // the number of jobs, and may have grown since the scanner stopped.)
        let all_done = (scan_report.complete || tracker.scan_gave_up()) && tracker.in_flight() == 0;
        let abort_reason = shared.abort_reason();
        let ending = match (&abort_reason, all_done) {
            (Some(_), _) => Ending::Aborted,
            (None, true) => Ending::Completed,
            (None, false) => Ending::Interrupted,
        };
        let mut abort_reason = abort_reason;
        if !options.dry_run {
            let saved = if ending == Ending::Completed && tracker.deferred() == 0 {
                self.store.clear_checkpoint(&key).await
            } else {
                self.store
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
        // Failures an earlier run recorded and no run resolved: the migration is not finished
        // while they stand, even when this run had none. An error here hides nothing that the
        // run did, so it does not change the ending.
        let open_failures = if options.dry_run {
            None
        } else {
            self.store
                .open_failures(self.migrator.migration_name())
                .await
                .ok()
                .flatten()
        };
        let summary = Summary {
            noun: self.migrator.noun().clone(),
            migrated: counts.migrated.load(Ordering::Relaxed),
            previously_migrated: counts.previously_migrated.load(Ordering::Relaxed),
            gone: counts.gone.load(Ordering::Relaxed),
            failed,
            deferred: counts.deferred.load(Ordering::Relaxed),
            open_failures,
            scanned: sent.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
            dry_run: options.dry_run,
            ending,
            abort_reason,
            batch_size: Some(flow.batch_size()),
            paused_seconds: flow.held_seconds().0,
            throttled_seconds: flow.held_seconds().1,
            failures_recorded_in: ((failed > 0 || open_failures.is_some_and(|n| n > 0))
                && !options.dry_run)
                .then(|| self.store.failures_location()),
        };
        // Like its start, the end of a run that cannot be recorded does not change how the
        // run ended; `status` then shows it as ended without a word.
        if let Some(run) = &run
            && let Err(error) = self.store.end_run(run, &summary).await
        {
            self.notice(format!("The end of this run is not recorded: {error}"));
        }
        board.publish(Event::JobText {
            job: SUMMARY_JOB,
            text: summary.to_string(),
        });
        board.publish(Event::JobStatus {
            job: SUMMARY_JOB,
            status: match (summary.ending, summary.failed + summary.deferred) {
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

#[async_trait]
impl MigrationOverseer for Overseer {
    async fn run(
        &self,
        options: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError> {
        let name = self.migrator.migration_name();
        let span = trace::run_span(name, options.dry_run, &options.range);
        span.in_scope(trace::run_started);
        let result = self
            .run_in_span(options, shutdown)
            .instrument(span.clone())
            .await;
        if let Ok(summary) = &result {
            span.in_scope(|| trace::run_ended(summary));
        }
        result
    }
}
