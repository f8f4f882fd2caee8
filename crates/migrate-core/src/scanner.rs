//! The customer-scanner component: pages through the ids to migrate and feeds the jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::board::StatusBoard;
use crate::checkpoint::{Checkpoint, CheckpointKey, KeyRange, Tracker};
use crate::component::{BoxError, Lifecycle};
use crate::config::ScannerConfig;
use crate::connection::{Backend, Connection};
use crate::events::{Event, JobId, JobStatus};
use crate::simulated::SimulatedIds;
use crate::summary::thousands;
use crate::{db, paging_state};

/// One id on its way to a job, with its place in scan order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Work {
    pub(crate) seq: u64,
    pub(crate) id: i64,
}

/// One scan, as the overseer hands it to the scanner: where to resume, which range, and where
/// the ids go.
#[derive(Debug)]
pub struct Scan {
    /// The scanner's line on the status board.
    pub job: JobId,
    /// The key range to scan.
    pub range: KeyRange,
    /// Ids given by the user (`--file`), ascending and without duplicates, instead of the
    /// backend's own.
    pub input: Option<Arc<[i64]>>,
    /// Registers ids in scan order for the checkpoint.
    pub(crate) tracker: Arc<Tracker>,
    /// The bounded channel to the jobs.
    pub(crate) sender: mpsc::Sender<Work>,
    /// Cancelled when the run stops taking work.
    pub(crate) halt: CancellationToken,
    /// Ids handed to the jobs so far.
    pub(crate) sent: Arc<AtomicU64>,
    /// Ids to scan in all, once known (`u64::MAX` until then), for the run's progress.
    pub(crate) total: Arc<AtomicU64>,
}

/// The scan stopped because the run is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the run is stopping")]
pub struct Halted;

impl Scan {
    /// Ids above this one are still to scan (the checkpoint's low-water mark, or the range's
    /// start).
    pub fn resume_after(&self) -> Option<i64> {
        let from_range = self.range.start.map(|s| s.saturating_sub(1));
        match (self.tracker.resume_after(), from_range) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands `id` to the jobs, waiting while the channel is full (backpressure). Ids must come
    /// in ascending order. Ids a previous run finished are skipped. Returns `Err(Halted)` when
    /// the run is stopping: the scanner should return.
    pub async fn send(&self, id: i64) -> Result<(), Halted> {
        self.send_page(&[id]).await
    }

    /// [`send`](Scan::send) for a whole page of ascending ids, registering them with one lock.
    pub async fn send_page(&self, ids: &[i64]) -> Result<(), Halted> {
        if self.halt.is_cancelled() {
            return Err(Halted);
        }
        // Backpressure from the checkpoint: while a slow record holds the low-water mark back,
        // the scanner may not run ahead further than the tracker's window.
        tokio::select! {
            biased;
            () = self.tracker.room() => {}
            () = self.halt.cancelled() => return Err(Halted),
        }
        let mut work = Vec::with_capacity(ids.len());
        self.tracker
            .offer_page(ids, |seq, id| work.push(Work { seq, id }));
        for item in work {
            // Waits while the channel is full. When the run halts, the overseer closes the
            // channel, which ends this wait: no need to watch the halt for every id.
            self.sender.send(item).await.map_err(|_| Halted)?;
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether the run is stopping.
    pub fn is_halted(&self) -> bool {
        self.halt.is_cancelled()
    }
}

/// What a scan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    /// Ids read (including those a previous run had finished).
    pub scanned: u64,
    /// Whether the scan reached the end of its range (false when the run stopped it).
    pub complete: bool,
}

/// Reads ids in pages, in ascending order.
#[async_trait]
pub trait PageSource: Send + Sync {
    /// Up to `limit` ids above `after` and below `end`, ascending.
    async fn page(
        &self,
        after: Option<i64>,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Vec<i64>, BoxError>;

    /// How many ids lie above `after` and below `end`, when that is cheap to know.
    async fn remaining(
        &self,
        after: Option<i64>,
        end: Option<i64>,
    ) -> Result<Option<u64>, BoxError>;
}

/// The scanner component.
#[async_trait]
pub trait CustomerScanner: shaku::Interface + Lifecycle {
    /// Reads the ids of `scan.range` (or `scan.input`) after `scan.resume_after()` and sends
    /// each with [`Scan::send`]. Returns when done or when the run stops.
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError>;

    /// How many ids the channel to the jobs holds (`customer-scanner.block-size`).
    fn block_size(&self) -> usize;

    /// How many ids the scanner reads at once (`customer-scanner.fetch-size`): the scanner may
    /// run up to a page past the checkpoint window's bound.
    fn fetch_size(&self) -> usize {
        1
    }

    /// The saved progress of an unfinished run, if any.
    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError>;

    /// Saves progress atomically: after a crash either the old or the new checkpoint is read.
    async fn save_checkpoint(
        &self,
        key: &CheckpointKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), BoxError>;

    /// Forgets the progress: the next run starts over.
    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError>;
}
crate::named_interface!(CustomerScanner, "customer-scanner");

/// Pages through `source` (or `scan.input`), feeding the jobs and reporting on the board:
/// `Scanned 500 customer rows`, then `Completed table scan, after 1,031 customer rows`.
/// The loop every [`CustomerScanner`] can use; it holds at most one page.
pub async fn scan_pages(
    source: &dyn PageSource,
    board: &dyn StatusBoard,
    fetch_size: usize,
    scan: &Scan,
) -> Result<ScanReport, BoxError> {
    let job = scan.job;
    let end = scan.range.end;
    let mut after = scan.resume_after();
    let total = match &scan.input {
        Some(ids) => Some(
            ids.iter()
                .filter(|&&id| after.is_none_or(|a| id > a))
                .count() as u64,
        ),
        None => source.remaining(after, end).await?,
    };
    if let Some(total) = total {
        scan.total.store(total, Ordering::Relaxed);
    }
    board.publish(Event::JobText {
        job,
        text: "Scanning customer rows".to_owned(),
    });
    let mut scanned = 0u64;
    loop {
        let page = match &scan.input {
            Some(ids) => input_page(ids, after, end, fetch_size),
            None => source.page(after, end, fetch_size).await?,
        };
        let Some(&last) = page.last() else { break };
        scanned += page.len() as u64;
        after = Some(last);
        board.publish(Event::JobText {
            job,
            text: format!("Scanned {} customer rows", thousands(scanned)),
        });
        board.publish(Event::JobProgress {
            job,
            done: scanned,
            total: total.map(|t| t.max(scanned)),
        });
        if scan.send_page(&page).await.is_err() {
            board.publish(Event::JobText {
                job,
                text: format!("Scan stopped, after {} customer rows", thousands(scanned)),
            });
            board.publish(Event::JobStatus {
                job,
                status: JobStatus::Warning,
            });
            board.publish(Event::JobFinished { job });
            return Ok(ScanReport {
                scanned,
                complete: false,
            });
        }
    }
    board.publish(Event::JobText {
        job,
        text: format!(
            "Completed table scan, after {} customer rows",
            thousands(scanned)
        ),
    });
    board.publish(Event::JobStatus {
        job,
        status: JobStatus::Success,
    });
    board.publish(Event::JobFinished { job });
    Ok(ScanReport {
        scanned,
        complete: true,
    })
}

fn input_page(ids: &[i64], after: Option<i64>, end: Option<i64>, limit: usize) -> Vec<i64> {
    let start = after.map_or(0, |a| ids.partition_point(|&id| id <= a));
    ids[start..]
        .iter()
        .take_while(|&&id| end.is_none_or(|e| id < e))
        .take(limit)
        .copied()
        .collect()
}

/// The scanner for the built-in backends: keyset pagination over `customers.id` on a database,
/// made-up ids on the simulated backend. Checkpoints go to the `migration_checkpoints` table of
/// the database, or to `paging-state-path` for the simulated backend.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = CustomerScanner)]
pub struct PagingScanner {
    #[shaku(inject)]
    board: Arc<dyn StatusBoard>,
    #[shaku(inject)]
    connection: Arc<dyn Connection>,
    /// `[customer-scanner]`
    #[shaku(default)]
    config: ScannerConfig,
    /// Set once `migration_checkpoints` is known to exist (created on the first save).
    #[shaku(default)]
    checkpoints_table: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for PagingScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagingScanner")
            .field("config", &self.config)
            .finish()
    }
}

#[async_trait]
impl PageSource for PagingScanner {
    async fn page(
        &self,
        after: Option<i64>,
        end: Option<i64>,
        limit: usize,
    ) -> Result<Vec<i64>, BoxError> {
        match self.connection.backend() {
            Backend::Simulated { customers } => {
                SimulatedIds {
                    customers: *customers,
                }
                .page(after, end, limit)
                .await
            }
            backend => Ok(db::page(backend, after, end, limit).await?),
        }
    }

    async fn remaining(
        &self,
        after: Option<i64>,
        end: Option<i64>,
    ) -> Result<Option<u64>, BoxError> {
        match self.connection.backend() {
            Backend::Simulated { customers } => {
                SimulatedIds {
                    customers: *customers,
                }
                .remaining(after, end)
                .await
            }
            backend => Ok(Some(db::remaining(backend, after, end).await?)),
        }
    }
}

#[async_trait]
impl Lifecycle for PagingScanner {
    /// On a database: checks that `customers` exists.
    async fn start(&self) -> Result<(), BoxError> {
        Ok(db::prepare(self.connection.backend()).await?)
    }
}

#[async_trait]
impl CustomerScanner for PagingScanner {
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError> {
        scan_pages(self, &*self.board, self.config.fetch_size, &scan).await
    }

    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn fetch_size(&self) -> usize {
        self.config.fetch_size
    }

    async fn load_checkpoint(&self, key: &CheckpointKey) -> Result<Option<Checkpoint>, BoxError> {
        match self.connection.backend() {
            Backend::Simulated { .. } => {
                let (path, key) = (self.config.paging_state_path.clone(), key.clone());
                blocking(move || paging_state::load(&path, &key)).await
            }
            backend => Ok(db::load_checkpoint(backend, key).await?),
        }
    }

    async fn save_checkpoint(
        &self,
        key: &CheckpointKey,
        checkpoint: &Checkpoint,
    ) -> Result<(), BoxError> {
        match self.connection.backend() {
            Backend::Simulated { .. } => {
                let (path, key) = (self.config.paging_state_path.clone(), key.clone());
                let checkpoint = checkpoint.clone();
                blocking(move || paging_state::save(&path, &key, Some(&checkpoint))).await
            }
            backend => {
                self.checkpoints_table
                    .get_or_try_init(|| db::create_checkpoints(backend))
                    .await?;
                Ok(db::save_checkpoint(backend, key, checkpoint).await?)
            }
        }
    }

    async fn clear_checkpoint(&self, key: &CheckpointKey) -> Result<(), BoxError> {
        match self.connection.backend() {
            Backend::Simulated { .. } => {
                let (path, key) = (self.config.paging_state_path.clone(), key.clone());
                blocking(move || paging_state::save(&path, &key, None)).await
            }
            backend => Ok(db::clear_checkpoint(backend, key).await?),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_pages_resume_and_respect_the_range_end() {
        let ids = [1, 5, 9, 12, 20];
        assert_eq!(input_page(&ids, None, None, 2), [1, 5]);
        assert_eq!(input_page(&ids, Some(5), None, 10), [9, 12, 20]);
        assert_eq!(input_page(&ids, Some(6), Some(20), 10), [9, 12]);
        assert!(input_page(&ids, Some(20), None, 10).is_empty());
    }
}
