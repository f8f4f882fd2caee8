//! The run as a stream of typed events, consumed alike by the terminal board, a JSON-lines log
//! and an embedding service.

use serde::{Deserialize, Serialize};

use crate::engine::flow::FlowState;
use crate::engine::summary::Summary;

/// Identifies one line of the status board: a job for as long as it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u32);

/// How a job is doing, shown by colour on the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobStatus {
    /// Working, nothing to report.
    #[default]
    Normal,
    /// Finished well (green).
    Success,
    /// Something a person should look at, the run goes on (yellow).
    Warning,
    /// Failed (red).
    Error,
}

/// One thing that happened during a run.
///
/// Job text is coalesced at the source: a job publishes its current text at most once per
/// `customer-migration.event-interval-millis` (and always when its status changes), so a
/// consumer sees every job's latest state without paying for a million lines a second.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Event {
    /// A new job, with the prefix of its line (`Process # 1: `).
    JobAdded {
        /// The new job.
        job: JobId,
        /// Text shown before the job's own text.
        prefix: String,
    },
    /// A job's text changed.
    JobText {
        /// The job.
        job: JobId,
        /// Its new text (`Migrating customer 81631`).
        text: String,
    },
    /// A job's status changed.
    JobStatus {
        /// The job.
        job: JobId,
        /// Its new status.
        status: JobStatus,
    },
    /// A job's progress; `total` is known for the scanner (rows to scan) and the summary line.
    JobProgress {
        /// The job.
        job: JobId,
        /// Units done.
        done: u64,
        /// Units in all, when known.
        total: Option<u64>,
    },
    /// A job finished: its line joins the finished lines at the top.
    JobFinished {
        /// The job.
        job: JobId,
    },
    /// The run's flow changed: paused or resumed, throttled or not, a setting changed while
    /// it runs (see [`RunControl`](crate::RunControl)).
    Flow(FlowState),
    /// The run is over.
    Summary(Summary),
}
