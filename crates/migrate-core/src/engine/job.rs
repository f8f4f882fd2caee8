//! One migration job, and what the jobs of a run share: the channel, the tracker, the counts,
//! retries with backoff, and the halt.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::components::component::BoxError;
use crate::config::MigrationConfig;
use crate::engine::board::StatusBoard;
use crate::engine::checkpoint::Tracker;
use crate::engine::contention::Settled;
use crate::engine::events::{Event, JobId, JobStatus};
use crate::engine::flow::Flow;
use crate::engine::metrics::RunMetrics;
use crate::engine::migrator::{BatchError, FailureRecord, Migrator, Outcome, RecordFailure};
use crate::engine::retry::backoff;
use crate::engine::scanner::Work;
use crate::engine::summary::thousands;
use crate::engine::timing;
use crate::engine::trace;
use crate::migration::key::Key;
use crate::store::ProgressStore;

/// Record counts, shared by the jobs.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) migrated: AtomicU64,
    pub(crate) previously_migrated: AtomicU64,
    pub(crate) gone: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// Left for the next run: still contended after their retries (see `contention`).
    pub(crate) deferred: AtomicU64,
}

impl Counts {
    pub(crate) fn handled(&self) -> u64 {
        self.migrated.load(Ordering::Relaxed)
            + self.previously_migrated.load(Ordering::Relaxed)
            + self.gone.load(Ordering::Relaxed)
            + self.failed.load(Ordering::Relaxed)
            + self.deferred.load(Ordering::Relaxed)
    }
}

/// What every job of one run shares.
pub(crate) struct Shared {
    pub(crate) migrator: Arc<dyn Migrator>,
    /// Where failures are recorded.
    pub(crate) store: Arc<dyn ProgressStore>,
    pub(crate) board: Arc<dyn StatusBoard>,
    pub(crate) config: MigrationConfig,
    pub(crate) dry_run: bool,
    /// Failures counted against `max-failures` before this run (see `RunOptions`).
    pub(crate) failures_before: u64,
    /// Whether batches may start, how many, how large and how fast.
    pub(crate) flow: Arc<Flow>,
    /// The scanner's channel.
    pub(crate) ids: flume::Receiver<Work>,
    /// Held by the job filling a batch of more than one id, so that jobs fill their batches in
    /// turn, each with consecutive ids.
    pub(crate) filling: tokio::sync::Mutex<()>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) counts: Counts,
    /// Cancelled to stop taking work: on shutdown (a child of its token) or on abort.
    pub(crate) halt: CancellationToken,
    /// `halt` once seen cancelled (see [`Shared::is_halted`]).
    pub(crate) halted: AtomicBool,
    /// Why the run aborted, once it has.
    pub(crate) abort: Mutex<Option<String>>,
    /// The run's metrics, labelled with the migration's name.
    pub(crate) metrics: RunMetrics,
}

impl Shared {
    /// Whether the run halted. Asked after every batch; read from the token itself rather
    /// than left to a watcher task, which a job whose batches never wait would keep from
    /// running. The token takes a lock, so once cancelled the answer is kept in a flag.
    pub(crate) fn is_halted(&self) -> bool {
        if self.halted.load(Ordering::Relaxed) {
            return true;
        }
        let halted = self.halt.is_cancelled();
        if halted {
            self.halted.store(true, Ordering::Relaxed);
        }
        halted
    }

    pub(crate) fn abort(&self, reason: String) {
        let mut abort = self.abort.lock().expect("abort lock");
        if abort.is_none() {
            trace::aborting(&reason);
            *abort = Some(reason);
        }
        self.halt.cancel();
    }

    pub(crate) fn abort_reason(&self) -> Option<String> {
        self.abort.lock().expect("abort lock").clone()
    }

    /// One call to the migrator, with a panic turned into a transient error.
    pub(crate) async fn try_migrate(&self, ids: &[Key]) -> Result<Vec<Outcome>, BatchError> {
        match AssertUnwindSafe(self.migrator.migrate(ids, self.dry_run))
            .catch_unwind()
            .await
        {
            Ok(Ok(outcomes)) if outcomes.len() == ids.len() => Ok(outcomes),
            Ok(Ok(outcomes)) => Err(BatchError::Transient(
                format!(
                    "the migrator returned {} outcomes for {} records",
                    outcomes.len(),
                    ids.len()
                )
                .into(),
            )),
            Ok(Err(error)) => Err(error),
            Err(panic) => Err(BatchError::Transient(
                format!("the migrator panicked: {}", panic_message(&*panic)).into(),
            )),
        }
    }

    /// Migrates `ids` as one batch; records that fail in a way that may pass are retried alone
    /// with backoff, and a contended batch is retried and split (see `contention`). Fills
    /// `results` with one entry per id, in the order of `ids`. `results` is a buffer the job
    /// reuses: this runs once per batch.
    async fn migrate_batch(&self, ids: &[Key], results: &mut Vec<Settled>) {
        results.clear();
        match self.try_migrate(ids).await {
            Err(BatchError::Contended(error)) => {
                self.migrate_contended(ids, error.to_string(), results)
                    .await;
            }
            tried => self.settle(ids, tried, results).await,
        }
    }

    /// Settles `ids` after their first try as a batch (`tried`): what it says, with the
    /// records that failed in a way that may pass retried alone, and each record of a batch
    /// that failed as a whole tried alone. Pushes one entry per id onto `results`.
    pub(crate) async fn settle(
        &self,
        ids: &[Key],
        tried: Result<Vec<Outcome>, BatchError>,
        results: &mut Vec<Settled>,
    ) {
        let outcomes = match tried {
            Ok(outcomes) => outcomes,
            Err(BatchError::Fatal { error, committed }) => {
                self.abort(error.to_string());
                match committed {
                    // What the batch committed counts; a record that could have passed on
                    // another try is left for the next run rather than recorded as failed.
                    Some(outcomes) => {
                        results.extend(outcomes.into_iter().map(|outcome| match outcome {
                            Outcome::Failed(f) if f.retryable => Settled::Unsettled,
                            outcome => Settled::Done(outcome, 1),
                        }))
                    }
                    None => results.extend(ids.iter().map(|_| Settled::Unsettled)),
                }
                return;
            }
            // A batch that failed as a whole: find the culprit by trying each record alone.
            Err(error) => {
                let attempts_made = u32::from(ids.len() == 1);
                let last = match error {
                    BatchError::Rejected(e) if ids.len() == 1 => {
                        let failure = RecordFailure::permanent(e.to_string());
                        results.push(Settled::Done(Outcome::Failed(failure), 1));
                        return;
                    }
                    BatchError::Rejected(e) => Failure::Rejected(e.to_string()),
                    BatchError::Contended(e) => Failure::Contended(e.to_string()),
                    other => Failure::Transient(RecordFailure::transient(other.to_string())),
                };
                for id in ids {
                    let result = self.migrate_alone(id, attempts_made, last.clone()).await;
                    results.push(result);
                }
                return;
            }
        };
        for (id, outcome) in ids.iter().zip(outcomes) {
            results.push(match outcome {
                Outcome::Failed(failure) if failure.retryable => {
                    self.migrate_alone(id, 1, Failure::Transient(failure)).await
                }
                other => Settled::Done(other, 1),
            });
        }
    }

    /// Tries one record alone until it succeeds, fails for good, or runs out of attempts: then
    /// it fails, or, when the last attempt was contended, is deferred. Unsettled when the run
    /// halted first (the record is left for the next run).
    async fn migrate_alone(&self, id: &Key, mut attempts: u32, last: Failure) -> Settled {
        let initial = Duration::from_millis(self.config.retry_initial_delay_millis);
        let max = Duration::from_millis(self.config.retry_max_delay_millis);
        // A stop or an abort settles nothing more: what is left goes to the next run.
        if self.halt.is_cancelled() {
            return Settled::Unsettled;
        }
        let mut contended = matches!(last, Failure::Contended(_));
        let mut last = match last {
            // A rejected batch: one try alone tells whether this record is the one.
            Failure::Rejected(message) => match self.try_migrate(std::slice::from_ref(id)).await {
                Ok(mut outcomes) => match outcomes.pop().expect("one outcome") {
                    Outcome::Failed(failure) if failure.retryable => {
                        attempts = 1;
                        failure
                    }
                    outcome => return Settled::Done(outcome, 1),
                },
                Err(BatchError::Rejected(error)) => {
                    let failure = RecordFailure::permanent(error.to_string());
                    return Settled::Done(Outcome::Failed(failure), 1);
                }
                Err(BatchError::Fatal { error, committed }) => {
                    return self.fatal_alone(error, committed);
                }
                Err(other) => {
                    attempts = 1;
                    contended = matches!(other, BatchError::Contended(_));
                    RecordFailure::transient(format!("{other} (after: {message})"))
                }
            },
            Failure::Transient(failure) => failure,
            Failure::Contended(message) => RecordFailure::transient(message),
        };
        while attempts < self.config.retry_attempts {
            if attempts > 0 {
                // A stop or an abort does not wait for a long backoff to pass.
                tokio::select! {
                    biased;
                    () = self.halt.cancelled() => return Settled::Unsettled,
                    () = tokio::time::sleep(backoff(attempts, initial, max)) => {}
                }
                trace::retrying(id, attempts + 1, &last.message);
            } else if self.halt.is_cancelled() {
                return Settled::Unsettled;
            }
            attempts += 1;
            contended = false;
            match self.try_migrate(std::slice::from_ref(id)).await {
                Ok(mut outcomes) => match outcomes.pop().expect("one outcome") {
                    Outcome::Failed(failure) if failure.retryable => last = failure,
                    outcome => return Settled::Done(outcome, attempts),
                },
                Err(BatchError::Rejected(error)) => {
                    let failure = RecordFailure::permanent(error.to_string());
                    return Settled::Done(Outcome::Failed(failure), attempts);
                }
                Err(BatchError::Fatal { error, committed }) => {
                    return self.fatal_alone(error, committed);
                }
                Err(error) => {
                    contended = matches!(error, BatchError::Contended(_));
                    last = RecordFailure::transient(error.to_string());
                }
            }
        }
        match contended {
            true => Settled::Deferred(attempts.max(1), last.message),
            false => Settled::Done(Outcome::Failed(last), attempts.max(1)),
        }
    }

    /// A fatal error while trying one record alone: the run aborts; the record counts when its
    /// migration was committed before the error.
    fn fatal_alone(&self, error: BoxError, committed: Option<Vec<Outcome>>) -> Settled {
        self.abort(error.to_string());
        match committed.and_then(|mut outcomes| outcomes.pop()) {
            Some(Outcome::Failed(f)) if f.retryable => Settled::Unsettled,
            Some(outcome) => Settled::Done(outcome, 1),
            None => Settled::Unsettled,
        }
    }
}

/// The failure that sends a record to be tried alone.
#[derive(Debug, Clone)]
enum Failure {
    /// It, or its batch, failed in a way that may pass: retry with backoff.
    Transient(RecordFailure),
    /// Its batch was refused by the database (this message): try it once alone.
    Rejected(String),
    /// Its batch met a lock or statement timeout (this message): retry with backoff, and
    /// defer it if the last attempt is contended too.
    Contended(String),
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-text panic".to_owned()
    }
}

/// Takes up to a batch of ids for one job into `work`: what the channel holds, then, if that
/// is less than a batch, what arrives within `batch-linger-millis`. A job filling a batch of
/// more than one id holds the `filling` turn meanwhile, so jobs fill their batches in turn,
/// each with ids in scan order, instead of all sharing what is there; a batch of one needs no
/// turn. Returns how many it took: 0 when the channel is closed and drained, or the run halted
/// while the job waited (what it held is not started: the next run migrates it).
async fn take_batch(shared: &Shared, work: &mut Vec<Work>) -> usize {
    // The channel does not take part in tokio's cooperative scheduling: without this, a job
    // whose batches never wait would keep its worker thread from the other tasks for as long
    // as the channel holds ids.
    tokio::task::consume_budget().await;
    let batch = shared.flow.batch_size();
    let ids = &shared.ids;
    let _turn = match batch {
        1 => None,
        _ => Some(shared.filling.lock().await),
    };
    work.clear();
    let mut linger_until = None;
    loop {
        work.extend(ids.try_iter().take(batch - work.len()));
        if work.len() >= batch {
            return work.len();
        }
        // Nothing yet: wait for an id as long as it takes. Part of a batch: wait for the rest
        // until the linger ends. Only a wait looks at the halt (which takes a lock).
        let until = match work.is_empty() {
            true => None,
            false => Some(*linger_until.get_or_insert_with(|| {
                Instant::now() + Duration::from_millis(shared.config.batch_linger_millis)
            })),
        };
        let next = tokio::select! {
            biased;
            next = receive(ids, until) => next,
            () = shared.halt.cancelled() => return 0,
        };
        match next {
            Some(item) => work.push(item),
            None => return work.len(),
        }
    }
}

/// The next id, waiting at most `until`: `None` when the channel is closed and drained, or
/// the time is up.
async fn receive(ids: &flume::Receiver<Work>, until: Option<Instant>) -> Option<Work> {
    match until {
        None => ids.recv_async().await.ok(),
        Some(until) => tokio::time::timeout_at(until, ids.recv_async())
            .await
            .ok()?
            .ok(),
    }
}

/// Waits while the run is paused or throttled, saying why on the job's line; `false` when the
/// run halts meanwhile.
async fn hold(shared: &Shared, job: JobId) -> bool {
    if let Some(reason) = shared.flow.hold_reason() {
        shared.board.publish(Event::JobText { job, text: reason });
    }
    shared.flow.wait_open(&shared.halt).await
}

/// One migration job: takes ids until the channel is drained, the run halts, or the run wants
/// fewer jobs (it retires after its batch).
pub(crate) async fn run_job(shared: Arc<Shared>, job: JobId, prefix: String) {
    let board = &*shared.board;
    board.publish(Event::JobAdded { job, prefix });
    let event_interval = Duration::from_millis(shared.config.event_interval_millis);
    let mut last_text: Option<Instant> = None;
    let capacity = shared.flow.batch_size();
    let mut work = Vec::with_capacity(capacity);
    let mut ids = Vec::with_capacity(capacity);
    let mut results = Vec::with_capacity(capacity);
    let mut failures = Vec::new();
    let mut failed_seqs = Vec::new();
    let mut deferred_seqs = Vec::new();
    let mut done = Vec::with_capacity(capacity);
    let mut had_failure = false;
    let mut handled = 0u64;
    let mut retired = false;
    loop {
        if shared.is_halted() {
            break;
        }
        if shared.flow.should_retire() {
            retired = true;
            break;
        }
        if !shared.flow.is_open() {
            if !hold(&shared, job).await {
                break;
            }
            last_text = None;
            continue;
        }
        // A job waiting for ids stops waiting on a halt (see `take_batch`). What a job takes
        // after the halt is not started, so not marked done: the next run migrates it.
        let taken = take_batch(&shared, &mut work).await;
        if taken == 0 || shared.is_halted() {
            break;
        }
        // Paused or throttled while the batch filled: it does not start until that ends.
        if !shared.flow.is_open() {
            if !hold(&shared, job).await {
                break;
            }
            last_text = None;
        }
        // Only a limited rate waits: waiting on the halt registers with it, under its lock.
        if shared.flow.rate.per_second() > 0 {
            tokio::select! {
                biased;
                () = shared.halt.cancelled() => break,
                () = shared.flow.rate.acquire(taken) => {}
            }
        }
        ids.clear();
        ids.extend(work.iter().map(|w| w.key.clone()));
        let now = Instant::now();
        if last_text.is_none_or(|t| now.duration_since(t) >= event_interval) {
            last_text = Some(now);
            let noun = shared.migrator.noun();
            let text = match ids.as_slice() {
                [one] => format!("Migrating {} {one}", noun.one),
                [first, .., last] => format!("Migrating {} {first} to {last}", noun.many),
                [] => unreachable!("take_batch took at least one"),
            };
            board.publish(Event::JobText { job, text });
        }
        let span = trace::batch_span(shared.migrator.migration_name(), &ids);
        let batch_started = now;
        shared.metrics.batch_started();
        let batch = shared.migrate_batch(&ids, &mut results);
        let ((), waited) = timing::measure(batch.instrument(span.clone())).await;
        let took = batch_started.elapsed();
        shared.metrics.batch_finished(took);
        // Sized on the batch's own time: queueing for the writer or a connection holds no lock.
        shared
            .flow
            .batch_done(ids.len(), took.saturating_sub(waited));
        let (mut migrated, mut previously, mut gone, mut retries) = (0, 0, 0, 0);
        done.clear();
        failures.clear();
        failed_seqs.clear();
        deferred_seqs.clear();
        for ((key, item), result) in ids.iter().zip(&work).zip(results.drain(..)) {
            let (outcome, attempts) = match result {
                Settled::Done(outcome, attempts) => (outcome, attempts),
                Settled::Deferred(attempts, error) => {
                    retries += u64::from(attempts.saturating_sub(1));
                    trace::record_deferred(&span, key, attempts, &error);
                    deferred_seqs.push(item.seq);
                    continue;
                }
                // Not settled (the run halted first): not done, the next run migrates it.
                Settled::Unsettled => continue,
            };
            retries += u64::from(attempts.saturating_sub(1));
            match outcome {
                Outcome::Migrated => migrated += 1,
                Outcome::PreviouslyMigrated => previously += 1,
                Outcome::Gone => gone += 1,
                Outcome::Failed(failure) => {
                    trace::record_failed(&span, key, attempts, &failure.message);
                    failures.push(FailureRecord {
                        key: key.clone(),
                        error: failure.message,
                        attempts,
                        at: chrono::Utc::now(),
                    });
                    failed_seqs.push(item.seq);
                    continue;
                }
            }
            done.push(item.seq);
        }
        // What the batch committed counts, whatever happens to its failures next.
        let counts = &shared.counts;
        counts.migrated.fetch_add(migrated, Ordering::Relaxed);
        counts
            .previously_migrated
            .fetch_add(previously, Ordering::Relaxed);
        counts.gone.fetch_add(gone, Ordering::Relaxed);
        shared.metrics.records(migrated, previously, gone);
        shared.metrics.retries(retries);
        if !deferred_seqs.is_empty() {
            let deferred = deferred_seqs.len() as u64;
            counts.deferred.fetch_add(deferred, Ordering::Relaxed);
            shared.metrics.deferred(deferred);
            shared.tracker.defer(deferred_seqs.iter().copied());
        }
        if !failures.is_empty() {
            if !shared.dry_run
                && let Err(error) = shared
                    .store
                    .record_failures(shared.migrator.migration_name(), &failures)
                    .await
            {
                // Unrecorded failures are neither counted nor marked done: the next run tries
                // them again.
                shared.abort(format!("while recording failures: {error}"));
            } else {
                done.extend_from_slice(&failed_seqs);
                let failed = failures.len() as u64;
                shared.metrics.failed(failed);
                let total_failed = counts.failed.fetch_add(failed, Ordering::Relaxed) + failed;
                if !had_failure {
                    had_failure = true;
                    board.publish(Event::JobStatus {
                        job,
                        status: JobStatus::Warning,
                    });
                }
                let limit = shared.config.max_failures;
                if limit > 0 && shared.failures_before + total_failed > limit {
                    shared.abort(format!(
                        "more than {} records failed (customer-migration.max-failures)",
                        thousands(limit)
                    ));
                }
            }
        }
        handled += done.len() as u64;
        shared.tracker.complete(done.iter().copied());
    }
    board.publish(Event::JobText {
        job,
        text: format!(
            "{}, after {} {}",
            if retired { "Retired" } else { "Done" },
            thousands(handled),
            shared.migrator.noun().count(handled)
        ),
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
