//! A process's part of a distributed migration: claim a range, run the ordinary engine over
//! it, mark it done, claim the next, until every range is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::connection::Database;
use crate::engine::board::StatusBoard;
use crate::engine::events::{Event, JobStatus};
use crate::engine::overseer::{MigrationOverseer, RunError, RunOptions};
use crate::engine::summary::{Ending, Summary};
use crate::migration::Migration;

use super::board::{RangeBoard, RangeProgress, WHOLE_JOB, whole_text};
use super::ranges::{self, Claim};
use super::{Mode, Settings, fence, split};

/// How often the whole migration's line is refreshed.
const WHOLE_PERIOD: Duration = Duration::from_secs(1);

/// What one process needs to take part in a distributed migration.
pub struct Worker {
    /// The migrated database, where the ranges live.
    pub pool: PgPool,
    /// The migration: its paging splits the key space.
    pub migration: Arc<dyn Migration>,
    /// Runs one range at a time.
    pub overseer: Arc<dyn MigrationOverseer>,
    /// The system's board (a [`RangeBoard`]).
    pub board: Arc<dyn StatusBoard>,
    /// What the range runs report.
    pub progress: Arc<RangeProgress>,
    /// Leases and range sizes.
    pub settings: Settings,
    /// Leases or a static shard.
    pub mode: Mode,
    /// Who this process is, in `migration_ranges.holder`: `host:pid:token`.
    pub holder: String,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("settings", &self.settings)
            .field("mode", &self.mode)
            .field("holder", &self.holder)
            .finish()
    }
}

/// How the run of one range ended for the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeEnd {
    /// Marked done.
    Done,
    /// Another process took it over; go on with another.
    Lost,
    /// Completed but for records left locked (deferred): held back for a while (leased) or
    /// given back (shard), to be run again from its checkpoint; go on with another.
    Deferred,
    /// Stopped on request: given back, and the process stops.
    Interrupted,
    /// Aborted: given back, and the process stops.
    Aborted,
}

/// How many times one process runs a range that it leaves with locked records before it gives
/// the range back and ends (exit 4): a lock held for good must not keep it busy forever.
const MAX_DEFERRALS: u32 = 3;

impl Worker {
    fn name(&self) -> &str {
        self.migration.name()
    }

    fn database(&self) -> Database {
        Database::Postgres(self.pool.clone())
    }

    /// Takes part in the migration until every range is done (or, for a shard, every range of
    /// the shard), `shutdown` is cancelled, or a range's run aborts. Returns the counts of
    /// every range this process ran, as one summary, which it also publishes to the board.
    pub async fn run(
        &self,
        base: RunOptions,
        shutdown: CancellationToken,
    ) -> Result<Summary, RunError> {
        let started = Instant::now();
        let planned = ranges::ensure_plan(&self.pool, self.name(), &self.holder, || {
            split::split(self.migration.as_ref(), self.settings.range_rows)
        })
        .await
        .map_err(|e| {
            RunError::Check(format!("while splitting {} into ranges: {e}", self.name()).into())
        })?;
        tracing::info!(migration = self.name(), ranges = planned, "planned");
        let whole = self.show_whole(&shutdown);
        let mut total: Option<Summary> = None;
        let ending = match self.mode {
            Mode::Leased => self.leased(&base, &shutdown, &mut total).await,
            Mode::Shard { index, count } => {
                self.shard(index, count, &base, &shutdown, &mut total).await
            }
        };
        whole.cancel();
        let mut summary = total.unwrap_or_else(|| Summary::empty(self.migration.noun().clone()));
        summary.elapsed = started.elapsed();
        match ending {
            Ok(RangeEnd::Interrupted) => summary.ending = Ending::Interrupted,
            Ok(RangeEnd::Aborted) => summary.ending = Ending::Aborted,
            Ok(end) => {
                if summary.ending != Ending::Aborted {
                    summary.ending = Ending::Completed;
                }
                // Leased, the loop ends `Done` when every range is done: the records deferred
                // on the way were migrated since, by this process or another.
                if matches!(self.mode, Mode::Leased) && matches!(end, RangeEnd::Done) {
                    summary.deferred = 0;
                }
            }
            Err(error) => {
                summary.ending = Ending::Aborted;
                summary.abort_reason = Some(error);
            }
        }
        if let Ok(Some(overview)) = ranges::overview(&self.pool, self.name()).await {
            self.board.publish(Event::JobText {
                job: WHOLE_JOB,
                text: whole_text(&overview, None),
            });
        }
        RangeBoard::finish(self.board.as_ref(), &self.progress, summary.clone());
        Ok(summary)
    }

    /// Claims ranges until none is left.
    async fn leased(
        &self,
        base: &RunOptions,
        shutdown: &CancellationToken,
        total: &mut Option<Summary>,
    ) -> Result<RangeEnd, String> {
        let columns = self.migration.key_columns().to_vec();
        // How often this process left each range with locked records.
        let mut deferrals: std::collections::HashMap<i64, u32> = std::collections::HashMap::new();
        loop {
            if shutdown.is_cancelled() {
                return Ok(RangeEnd::Interrupted);
            }
            let claimed = ranges::claim(
                &self.pool,
                self.name(),
                &self.holder,
                self.settings.lease,
                &columns,
            )
            .await
            .map_err(|e| e.to_string())?;
            let Some(claim) = claimed else {
                let overview = ranges::overview(&self.pool, self.name())
                    .await
                    .map_err(|e| e.to_string())?
                    .unwrap_or_default();
                if overview.pending == 0 && overview.leased == 0 {
                    return Ok(RangeEnd::Done);
                }
                // Others hold the rest: wait, to take over any whose holder dies.
                tokio::select! {
                    () = tokio::time::sleep(self.settings.idle_poll) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            };
            let id = claim.range.id;
            let tries = deferrals.entry(id).or_insert(0);
            if *tries >= MAX_DEFERRALS {
                // The range keeps records that stay locked: leave it pending for a later run
                // (or another process) and end, reporting what is left (exit 4), rather than
                // coming back to it forever.
                ranges::give_back(&self.pool, self.name(), &claim, claim.rows_before)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(RangeEnd::Deferred);
            }
            match self.run_range(claim, base, shutdown, total).await? {
                RangeEnd::Deferred => *deferrals.entry(id).or_insert(0) += 1,
                RangeEnd::Done | RangeEnd::Lost => {}
                stop => return Ok(stop),
            }
        }
    }

    /// Runs the ranges of shard `index` of `count`, each without a lease.
    async fn shard(
        &self,
        index: u32,
        count: u32,
        base: &RunOptions,
        shutdown: &CancellationToken,
        total: &mut Option<Summary>,
    ) -> Result<RangeEnd, String> {
        let columns = self.migration.key_columns().to_vec();
        let ids = ranges::range_ids(&self.pool, self.name())
            .await
            .map_err(|e| e.to_string())?;
        for id in ids
            .into_iter()
            .filter(|id| (id - 1).rem_euclid(i64::from(count)) == i64::from(index))
        {
            if shutdown.is_cancelled() {
                return Ok(RangeEnd::Interrupted);
            }
            let taken = ranges::take(&self.pool, self.name(), id, &self.holder, &columns)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(claim) = taken {
                match self.run_range(claim, base, shutdown, total).await? {
                    RangeEnd::Done | RangeEnd::Lost | RangeEnd::Deferred => {}
                    stop => return Ok(stop),
                }
            }
        }
        Ok(RangeEnd::Done)
    }

    /// One range: fenced, kept alive by heartbeats, run by the overseer from its checkpoint.
    async fn run_range(
        &self,
        claim: Claim,
        base: &RunOptions,
        shutdown: &CancellationToken,
        total: &mut Option<Summary>,
    ) -> Result<RangeEnd, String> {
        let range = &claim.range;
        let scope = match &range.keys {
            Some(keys) => format!("{} boundary keys", keys.len()),
            None => range.bounds.to_string(),
        };
        tracing::info!(range = range.id, generation = claim.generation, %scope, "claimed");
        self.progress.begin(format!("Range {} {scope}: ", range.id));
        fence::hold(&self.database(), self.name(), claim.lease());
        let token = shutdown.child_token();
        let lost = Arc::new(AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeats(
            self.pool.clone(),
            self.name().to_owned(),
            claim.clone(),
            self.settings.clone(),
            Arc::clone(&self.progress),
            token.clone(),
            Arc::clone(&lost),
        ));
        let options = RunOptions {
            dry_run: false,
            reset: false,
            input: range.keys.clone().map(Arc::from),
            range: if range.keys.is_some() {
                crate::KeyRange::ALL
            } else {
                range.bounds.clone()
            },
            control: base.control.clone(),
            // `max-failures` is the process's, across its ranges.
            failures_before: total.as_ref().map_or(0, |t| t.failed),
        };
        let result = self.overseer.run(options, token).await;
        heartbeat.abort();
        let summary = match result {
            Ok(summary) => summary,
            Err(error) => {
                fence::release(&self.database(), self.name());
                let _ = ranges::give_back(&self.pool, self.name(), &claim, claim.rows_before).await;
                return Err(error.to_string());
            }
        };
        let handled =
            summary.migrated + summary.previously_migrated + summary.gone + summary.failed;
        let rows = claim.rows_before + handled as i64;
        let end = self.settle(&claim, &summary, rows, &lost, shutdown).await;
        fence::release(&self.database(), self.name());
        tracing::info!(range = range.id, end = ?end, "range ended");
        add(total, summary, matches!(end, Ok(RangeEnd::Lost)));
        end
    }

    /// Marks the range done, or gives it back, as its run ended.
    async fn settle(
        &self,
        claim: &Claim,
        summary: &Summary,
        rows: i64,
        lost: &AtomicBool,
        shutdown: &CancellationToken,
    ) -> Result<RangeEnd, String> {
        let pool = &self.pool;
        if summary.ending == Ending::Completed && summary.deferred > 0 {
            // Records a lock kept from the range: not done. Leased, the range stays this
            // process's for one more lease period, then any process takes it over from its
            // checkpoint (by then the lock may be gone), while this one goes on with others.
            let kept = match self.mode {
                Mode::Leased => {
                    ranges::renew(pool, self.name(), claim, self.settings.lease, rows).await
                }
                Mode::Shard { .. } => ranges::give_back(pool, self.name(), claim, rows)
                    .await
                    .map(|()| true),
            };
            return Ok(match kept.map_err(|e| e.to_string())? {
                true => RangeEnd::Deferred,
                false => RangeEnd::Lost,
            });
        }
        if summary.ending == Ending::Completed {
            let done = ranges::finish(pool, self.name(), claim, rows)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(if done { RangeEnd::Done } else { RangeEnd::Lost });
        }
        // A run the fence stopped ends aborted: whether the lease is still ours tells.
        let held = !lost.load(Ordering::Relaxed)
            && ranges::renew(pool, self.name(), claim, self.settings.lease, rows)
                .await
                .unwrap_or(false);
        if !held {
            return Ok(RangeEnd::Lost);
        }
        ranges::give_back(pool, self.name(), claim, rows)
            .await
            .map_err(|e| e.to_string())?;
        // Interrupted: by a signal (`shutdown`) or a stop through `db-migrate control`.
        let _ = shutdown;
        Ok(match summary.ending {
            Ending::Aborted => RangeEnd::Aborted,
            _ => RangeEnd::Interrupted,
        })
    }

    /// Keeps the whole migration's line fresh until the returned token is cancelled.
    fn show_whole(&self, shutdown: &CancellationToken) -> CancellationToken {
        let stop = shutdown.child_token();
        let (pool, name, board) = (
            self.pool.clone(),
            self.name().to_owned(),
            Arc::clone(&self.board),
        );
        board.publish(Event::JobAdded {
            job: WHOLE_JOB,
            prefix: String::new(),
        });
        let until = stop.clone();
        tokio::spawn(async move {
            let mut last: Option<(Instant, u64)> = None;
            let mut ticker = tokio::time::interval(WHOLE_PERIOD);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = until.cancelled() => break,
                }
                let Ok(Some(overview)) = ranges::overview(&pool, &name).await else {
                    continue;
                };
                let now = Instant::now();
                let rate = last.map(|(at, rows)| {
                    overview.rows_done.saturating_sub(rows) as f64
                        / now.duration_since(at).as_secs_f64().max(0.001)
                });
                last = Some((now, overview.rows_done));
                board.publish(Event::JobText {
                    job: WHOLE_JOB,
                    text: whole_text(&overview, rate),
                });
                board.publish(Event::JobStatus {
                    job: WHOLE_JOB,
                    status: JobStatus::Normal,
                });
            }
        });
        stop
    }
}

/// Renews the lease every heartbeat period; when the lease is lost, cancels the range's run.
/// A heartbeat that fails (the database away a moment) is not fatal: the next may pass, and
/// should the lease run out meanwhile, the fence stops the batches.
async fn heartbeats(
    pool: PgPool,
    migration: String,
    claim: Claim,
    settings: Settings,
    progress: Arc<RangeProgress>,
    run: CancellationToken,
    lost: Arc<AtomicBool>,
) {
    let mut ticker = tokio::time::interval(settings.heartbeat);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let rows = claim.rows_before + progress.handled() as i64;
        if let Ok(false) = ranges::renew(&pool, &migration, &claim, settings.lease, rows).await {
            tracing::warn!(
                range = claim.range.id,
                "lease lost; stopping the range's run"
            );
            lost.store(true, Ordering::Relaxed);
            run.cancel();
            return;
        }
    }
}

/// Adds a range's counts to the process's total. The total's ending is the worst so far,
/// except that a range lost to a takeover does not make the run aborted.
fn add(total: &mut Option<Summary>, summary: Summary, lost: bool) {
    match total {
        None => {
            let mut first = summary;
            if lost {
                first.ending = Ending::Completed;
                first.abort_reason = None;
            }
            *total = Some(first);
        }
        Some(t) => {
            t.migrated += summary.migrated;
            t.previously_migrated += summary.previously_migrated;
            t.gone += summary.gone;
            t.deferred += summary.deferred;
            t.failed += summary.failed;
            t.scanned += summary.scanned;
            t.paused_seconds += summary.paused_seconds;
            t.throttled_seconds += summary.throttled_seconds;
            t.open_failures = summary.open_failures.or(t.open_failures);
            t.failures_recorded_in = summary
                .failures_recorded_in
                .or(t.failures_recorded_in.take());
            t.batch_size = summary.batch_size.or(t.batch_size);
            if !lost && summary.ending == Ending::Aborted {
                t.ending = Ending::Aborted;
                t.abort_reason = summary.abort_reason;
            }
        }
    }
}
