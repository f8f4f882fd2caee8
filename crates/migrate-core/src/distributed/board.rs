//! The board of a process in distributed mode: its own jobs, as in any run, with the range
//! they work on, and one line for the whole migration.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;

use crate::components::component::{BoxError, Lifecycle};
use crate::engine::board::StatusBoard;
use crate::engine::events::{Event, JobId};
use crate::engine::overseer::{NOTICE_JOB, SUMMARY_JOB};
use crate::engine::summary::thousands;

use super::ranges::Overview;

/// The line for the whole migration (`u32::MAX - 1` is the control line of `db-migrate`).
pub const WHOLE_JOB: JobId = JobId(u32::MAX - 2);

/// What the range runs report through the board that the distributed layer needs.
#[derive(Debug, Default)]
pub struct RangeProgress {
    /// Records handled by the current range's run.
    handled: AtomicU64,
    /// `Range 7 (100, 200): ` or empty: in front of the run's summary line.
    label: Mutex<String>,
    /// Lines the range runs finished: kept on the board until the last range ends, since the
    /// next range's run reuses them.
    finished: Mutex<std::collections::BTreeSet<JobId>>,
}

impl RangeProgress {
    /// Records handled by the current range's run so far.
    pub fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    /// A new range's run begins.
    pub fn begin(&self, label: String) {
        self.handled.store(0, Ordering::Relaxed);
        *self.label.lock().expect("label lock") = label;
    }
}

/// Hands the events of the range runs on to `inner`, keeping their progress, labelling their
/// summary line with the range, and holding back each range's end-of-run summary: the
/// distributed run publishes one summary for all its ranges.
pub struct RangeBoard {
    inner: Box<dyn StatusBoard>,
    progress: Arc<RangeProgress>,
}

impl RangeBoard {
    /// The end of the distributed run: finishes the lines the range runs left open and
    /// publishes `summary`, the run's own.
    pub fn finish(board: &dyn StatusBoard, progress: &RangeProgress, summary: crate::Summary) {
        let held = std::mem::take(&mut *progress.finished.lock().expect("finished lock"));
        for job in held {
            board.publish(Event::JobFinished { job });
        }
        board.publish(Event::JobText {
            job: SUMMARY_JOB,
            text: summary.to_string(),
        });
        board.publish(Event::Summary(summary));
    }
}

impl std::fmt::Debug for RangeBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangeBoard")
            .field("progress", &self.progress)
            .finish()
    }
}

impl RangeBoard {
    /// `inner` wrapped, and the progress it keeps.
    pub fn wrap(inner: Box<dyn StatusBoard>) -> (RangeBoard, Arc<RangeProgress>) {
        let progress = Arc::new(RangeProgress::default());
        (
            RangeBoard {
                inner,
                progress: Arc::clone(&progress),
            },
            progress,
        )
    }
}

#[async_trait]
impl Lifecycle for RangeBoard {
    async fn start(&self) -> Result<(), BoxError> {
        self.inner.start().await
    }

    async fn stop(&self) -> Result<(), BoxError> {
        self.inner.stop().await
    }
}

impl StatusBoard for RangeBoard {
    fn publish(&self, event: Event) {
        let event = match event {
            // A range's summary, which follows the end of its summary line (held back, so the
            // set is not empty): the whole run's comes at the end (see `RangeBoard::finish`).
            Event::Summary(_) if !self.progress.finished.lock().expect("lock").is_empty() => {
                return;
            }
            Event::JobFinished { job } if job != NOTICE_JOB && job != WHOLE_JOB => {
                self.progress
                    .finished
                    .lock()
                    .expect("finished lock")
                    .insert(job);
                return;
            }
            Event::JobProgress { job, done, .. } if job == SUMMARY_JOB => {
                self.progress.handled.store(done, Ordering::Relaxed);
                event
            }
            Event::JobText { job, text } if job == SUMMARY_JOB => {
                let label = self.progress.label.lock().expect("label lock").clone();
                Event::JobText {
                    job,
                    text: format!("{label}{text}"),
                }
            }
            other => other,
        };
        self.inner.publish(event);
    }
}

/// The whole migration's line: `Whole migration: 12/40 ranges done, 3 leased, 25 pending;
/// 4 processes; 12,345 records/s`.
pub fn whole_text(overview: &Overview, rate: Option<f64>) -> String {
    let rate = match rate {
        Some(rate) => format!("; {} records/s", thousands(rate.round().max(0.0) as u64)),
        None => String::new(),
    };
    format!(
        "Whole migration: {}/{} ranges done, {} leased, {} pending; {} process{} working{rate}",
        overview.done,
        overview.total(),
        overview.leased,
        overview.pending,
        overview.processes,
        if overview.processes == 1 { "" } else { "es" },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_line_counts_ranges_and_processes() {
        let overview = Overview {
            done: 12,
            leased: 3,
            pending: 25,
            processes: 3,
            rows_done: 0,
        };
        assert_eq!(
            whole_text(&overview, Some(12345.4)),
            "Whole migration: 12/40 ranges done, 3 leased, 25 pending; 3 processes working; \
             12,345 records/s"
        );
        let one = Overview {
            processes: 1,
            ..overview
        };
        assert!(whole_text(&one, None).ends_with("; 1 process working"));
    }
}
