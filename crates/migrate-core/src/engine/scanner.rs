//! The scanner component: pages through the keys to migrate and feeds the jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::components::component::{BoxError, Lifecycle};
use crate::config::ScannerConfig;
use crate::engine::board::StatusBoard;
use crate::engine::checkpoint::{KeyRange, Tracker};
use crate::engine::events::{Event, JobId, JobStatus};
use crate::engine::summary::thousands;
use crate::migration::Migration;
use crate::migration::key::Key;

/// One key on its way to a job, with its place in scan order.
#[derive(Debug, Clone)]
pub(crate) struct Work {
    pub(crate) seq: u64,
    pub(crate) key: Key,
}

/// One scan, as the overseer hands it to the scanner: where to resume, which range, and where
/// the ids go.
#[derive(Debug)]
pub struct Scan {
    /// The scanner's line on the status board.
    pub job: JobId,
    /// The key range to scan.
    pub range: KeyRange,
    /// Keys given by the user (`--file`), in the file's order and without duplicates, instead
    /// of the migration's own pages.
    pub input: Option<Arc<[Key]>>,
    /// Registers ids in scan order for the checkpoint.
    pub(crate) tracker: Arc<Tracker>,
    /// The bounded channel to the jobs.
    pub(crate) sender: flume::Sender<Work>,
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
    /// Keys after this one are still to scan: the checkpoint's low-water mark, or the range's
    /// start.
    pub fn resume_after(&self) -> Option<Key> {
        self.tracker
            .resume_after()
            .or_else(|| self.range.after.clone())
    }

    /// Hands `key` to the jobs, waiting while the channel is full (backpressure). Keys must
    /// come in scan order. Keys a previous run finished are skipped. Returns `Err(Halted)`
    /// when the run is stopping, or can go no further (its window is full behind records
    /// left for the next run): the scanner should return.
    pub async fn send(&self, key: Key) -> Result<(), Halted> {
        self.send_page(vec![key]).await
    }

    /// [`send`](Scan::send) for a whole page of keys in scan order, registering them with one
    /// lock.
    pub async fn send_page(&self, keys: Vec<Key>) -> Result<(), Halted> {
        if self.halt.is_cancelled() {
            return Err(Halted);
        }
        // Backpressure from the checkpoint: while a slow record holds the low-water mark back,
        // the scanner may not run ahead further than the tracker's window. Behind a record
        // left for the next run the window never shrinks: the scan ends here, and the next
        // run resumes before that record.
        tokio::select! {
            biased;
            room = self.tracker.room() => if !room {
                return Err(Halted);
            },
            () = self.halt.cancelled() => return Err(Halted),
        }
        let mut work = Vec::with_capacity(keys.len());
        self.tracker
            .offer_page(keys, |seq, key| work.push(Work { seq, key }));
        for item in work {
            // Only a full channel waits, and only then watches the halt (which takes a lock).
            match self.sender.try_send(item) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(item)) => tokio::select! {
                    biased;
                    sent = self.sender.send_async(item) => sent.map_err(|_| Halted)?,
                    () = self.halt.cancelled() => return Err(Halted),
                },
                Err(flume::TrySendError::Disconnected(_)) => return Err(Halted),
            }
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

/// The scanner component.
#[async_trait]
pub trait Scanner: shaku::Interface + Lifecycle {
    /// Reads the keys of `scan.range` (or `scan.input`) after `scan.resume_after()` and sends
    /// each with [`Scan::send`]. Returns when done or when the run stops.
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError>;

    /// How many keys the channel to the jobs holds (`customer-scanner.block-size`).
    fn block_size(&self) -> usize;

    /// How many keys the scanner reads at once (`customer-scanner.fetch-size`): the scanner
    /// may run up to a page past the checkpoint window's bound.
    fn fetch_size(&self) -> usize {
        1
    }
}

/// Pages through `migration` (or `scan.input`), feeding the jobs and reporting on the board:
/// `Scanned 500 customer rows`, then `Completed table scan, after 1,031 customer rows`.
/// The loop every [`Scanner`] can use; it holds at most one page.
pub async fn scan_pages(
    migration: &dyn Migration,
    board: &dyn StatusBoard,
    fetch_size: usize,
    scan: &Scan,
) -> Result<ScanReport, BoxError> {
    let job = scan.job;
    let rows = format!("{} rows", migration.noun().one);
    let before = scan.range.before.clone();
    let mut after = scan.resume_after();
    // Where a run over given keys resumes: after the low-water key, found by equality (the
    // file's order is the scan order).
    let mut input_at = match (&scan.input, &after) {
        (Some(keys), Some(key)) => keys.iter().position(|k| k == key).map_or(0, |i| i + 1),
        _ => 0,
    };
    let total = match &scan.input {
        Some(keys) => Some((keys.len() - input_at.min(keys.len())) as u64),
        None => migration.remaining(after.as_ref(), before.as_ref()).await?,
    };
    if let Some(total) = total {
        scan.total.store(total, Ordering::Relaxed);
    }
    board.publish(Event::JobText {
        job,
        text: format!("Scanning {rows}"),
    });
    let mut scanned = 0u64;
    loop {
        let page: Vec<Key> = match &scan.input {
            Some(keys) => {
                let page: Vec<Key> = keys
                    .iter()
                    .skip(input_at)
                    .take(fetch_size)
                    .cloned()
                    .collect();
                input_at += page.len();
                page
            }
            None => {
                migration
                    .page(after.as_ref(), before.as_ref(), fetch_size)
                    .await?
            }
        };
        let Some(last) = page.last().cloned() else {
            break;
        };
        scanned += page.len() as u64;
        after = Some(last);
        board.publish(Event::JobText {
            job,
            text: format!("Scanned {} {rows}", thousands(scanned)),
        });
        board.publish(Event::JobProgress {
            job,
            done: scanned,
            total: total.map(|t| t.max(scanned)),
        });
        if scan.send_page(page).await.is_err() {
            board.publish(Event::JobText {
                job,
                text: format!("Scan stopped, after {} {rows}", thousands(scanned)),
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
        text: format!("Completed table scan, after {} {rows}", thousands(scanned)),
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

/// The scanner: keyset pages of the migration, `fetch-size` keys at a time.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = Scanner)]
pub struct PagingScanner {
    #[shaku(inject)]
    board: Arc<dyn StatusBoard>,
    /// `[customer-scanner]`
    #[shaku(default)]
    config: ScannerConfig,
    /// What is migrated; shared with the migrator.
    migration: Arc<dyn Migration>,
}

impl std::fmt::Debug for PagingScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagingScanner")
            .field("config", &self.config)
            .field("migration", &self.migration.name())
            .finish()
    }
}

impl PagingScanner {
    /// Shaku parameters: the configuration and the migration to page through.
    pub fn parameters(
        config: ScannerConfig,
        migration: Arc<dyn Migration>,
    ) -> PagingScannerParameters {
        PagingScannerParameters { config, migration }
    }
}

impl Lifecycle for PagingScanner {}

#[async_trait]
impl Scanner for PagingScanner {
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError> {
        scan_pages(
            &*self.migration,
            &*self.board,
            self.config.fetch_size,
            &scan,
        )
        .await
    }

    fn block_size(&self) -> usize {
        self.config.block_size
    }

    fn fetch_size(&self) -> usize {
        self.config.fetch_size
    }
}
