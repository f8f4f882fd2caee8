//! The flow of a running migration: whether batches may start (paused, throttled), how fast
//! (the rate limit), how large (fixed or adaptive) and by how many jobs. The jobs read it
//! before every batch; the run's [`RunControl`] and its [`HealthCheck`] change it while the
//! run goes on, and every change is an [`Event::Flow`] and a line on the board.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::MigrationConfig;
use crate::engine::batch_size::BatchSizer;
use crate::engine::board::StatusBoard;
use crate::engine::checkpoint::Tracker;
use crate::engine::control::{Controls, RunControl};
use crate::engine::events::{Event, JobId, JobStatus};
use crate::engine::health::HealthCheck;
use crate::engine::metrics::RunMetrics;
use crate::engine::retry::RateLimit;
use crate::engine::summary::thousands;
use crate::engine::trace;

/// The board line that says how the run is steered: paused, throttled, settings changed.
pub const FLOW_JOB: JobId = JobId(u32::MAX - 1);

/// How long a health check may take before it counts as failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The run's flow after a change, as [`Event::Flow`] carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FlowState {
    /// Who paused the run, while it is paused.
    pub paused_by: Option<String>,
    /// Why batches are held off, while the database's health says so.
    pub throttled: Option<String>,
    /// Records per second, 0 for no limit.
    pub rate_limit: u64,
    /// Migration jobs wanted.
    pub processes: usize,
    /// The batch size now.
    pub batch_size: usize,
    /// Whether the batch size adapts to the batches' time.
    pub adaptive: bool,
    /// What changed, in words (`Rate limit 500/s (set by the board)`).
    pub note: String,
}

/// Why no batch may start now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Gate {
    paused_by: Option<String>,
    throttled: Option<String>,
}

impl Gate {
    fn reason(&self) -> Option<String> {
        match (&self.paused_by, &self.throttled) {
            (Some(by), _) => Some(format!("Paused (by {by})")),
            (None, Some(why)) => Some(format!("Throttled ({why})")),
            (None, None) => None,
        }
    }
}

/// Time spent held, per kind.
#[derive(Debug, Default)]
struct Held {
    paused_since: Option<Instant>,
    paused: Duration,
    throttled_since: Option<Instant>,
    throttled: Duration,
}

/// How the batches are sized.
#[derive(Debug)]
struct Sizing {
    /// The adaptive sizer, unless the size is fixed.
    sizer: Option<BatchSizer>,
    /// The sizer as configured, for when a fixed size from control is lifted.
    configured: Option<BatchSizer>,
    /// The size as configured, when fixed.
    configured_size: usize,
}

/// What shapes the window bound of the tracker (see `Overseer::run`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    /// `customer-migration.max-pending`.
    pub(crate) max_pending: usize,
    /// The channel and a page: what the scanner holds beyond the jobs.
    pub(crate) scanner: usize,
}

/// The flow of one run, shared by its jobs.
pub(crate) struct Flow {
    gate: watch::Sender<Gate>,
    pub(crate) rate: RateLimit,
    configured_rate: u64,
    sizing: Mutex<Sizing>,
    /// Whether `sizing` has a sizer, read without its lock by every finished batch.
    adaptive: AtomicBool,
    batch_size: AtomicUsize,
    /// Microseconds the latest batch took.
    last_batch_micros: AtomicU64,
    configured_processes: usize,
    processes: AtomicUsize,
    /// Jobs started and not retired. A job that ends because the work is done (or the run
    /// halted) still counts: it is not to be replaced.
    live: AtomicUsize,
    held: Mutex<Held>,
    tracker: Arc<Tracker>,
    bound: Bound,
    board: Arc<dyn StatusBoard>,
    /// Whether the flow has a line on the board.
    shown: AtomicBool,
    /// The run's metrics: batch size, rate limit and throttling as they change.
    metrics: RunMetrics,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("gate", &*self.gate.borrow())
            .field("batch_size", &self.batch_size())
            .field("processes", &self.processes)
            .finish_non_exhaustive()
    }
}

impl Flow {
    /// The flow as configured: `batch_size` is the migrator's, adapted when `adaptive` and
    /// `batch-target-millis` is not 0.
    pub(crate) fn new(
        config: &MigrationConfig,
        batch_size: usize,
        adaptive: bool,
        tracker: Arc<Tracker>,
        bound: Bound,
        board: Arc<dyn StatusBoard>,
        metrics: RunMetrics,
    ) -> Flow {
        let sizer = (adaptive && config.batch_target_millis > 0).then(|| {
            BatchSizer::new(
                Duration::from_millis(config.batch_target_millis),
                config.batch_size_min,
                config.batch_size_max,
                batch_size,
            )
        });
        let processes = config.processes.max(1);
        let start = match &sizer {
            // Within the cap from the first batch on.
            Some(sizer) => sizer
                .current()
                .min(adaptive_cap(bound.max_pending, processes)),
            None => batch_size,
        };
        let flow = Flow {
            gate: watch::Sender::new(Gate::default()),
            rate: RateLimit::new(config.rate_limit),
            configured_rate: config.rate_limit,
            adaptive: AtomicBool::new(sizer.is_some()),
            sizing: Mutex::new(Sizing {
                configured: sizer.clone(),
                sizer,
                configured_size: batch_size.max(1),
            }),
            batch_size: AtomicUsize::new(start.max(1)),
            last_batch_micros: AtomicU64::new(0),
            configured_processes: processes,
            processes: AtomicUsize::new(processes),
            live: AtomicUsize::new(0),
            held: Mutex::new(Held::default()),
            tracker,
            bound,
            board,
            shown: AtomicBool::new(false),
            metrics,
        };
        flow.metrics.set_batch_size(start.max(1));
        flow.update_bound();
        flow
    }

    /// The size of the next batch.
    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size.load(Ordering::Relaxed)
    }

    /// The most a batch holds now. Adaptive sizes are followed as they change (see
    /// [`batch_done`](Flow::batch_done)) rather than bounded by `batch-size-max`, which would
    /// let the tracker's window, and the checkpoint with it, grow to `2 × processes ×
    /// batch-size-max` keys behind a slow record (400,000 by default, not `max-pending`).
    fn largest_batch(&self) -> usize {
        self.batch_size()
    }

    /// Whether the batch size adapts.
    pub(crate) fn adaptive(&self) -> bool {
        self.adaptive.load(Ordering::Relaxed)
    }

    /// Takes in a batch of `records` that took `elapsed`: the next size, when adaptive.
    pub(crate) fn batch_done(&self, records: usize, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.last_batch_micros.store(micros, Ordering::Relaxed);
        if !self.adaptive() {
            return;
        }
        let mut sizing = self.sizing.lock().expect("sizing lock");
        if let Some(sizer) = &mut sizing.sizer {
            let next = sizer.record(records, elapsed).min(self.adaptive_cap());
            if self.batch_size.swap(next, Ordering::Relaxed) != next {
                drop(sizing);
                self.metrics.set_batch_size(next);
                self.update_bound();
            }
        }
    }

    /// The largest adaptive size for the processes wanted now (see [`adaptive_cap`]).
    fn adaptive_cap(&self) -> usize {
        adaptive_cap(
            self.bound.max_pending,
            self.processes.load(Ordering::Relaxed),
        )
    }

    /// `batch 1,000 (adaptive), last 0.42 s` for the summary line.
    pub(crate) fn batch_text(&self) -> String {
        let micros = self.last_batch_micros.load(Ordering::Relaxed);
        let kind = if self.adaptive() { " (adaptive)" } else { "" };
        let size = thousands(self.batch_size() as u64);
        if micros == 0 {
            format!("batch {size}{kind}")
        } else {
            format!("batch {size}{kind}, last {:.2} s", micros as f64 / 1e6)
        }
    }

    /// Whether batches may start now.
    pub(crate) fn is_open(&self) -> bool {
        let gate = self.gate.borrow();
        gate.paused_by.is_none() && gate.throttled.is_none()
    }

    /// Why batches are held now, for a job's line.
    pub(crate) fn hold_reason(&self) -> Option<String> {
        self.gate.borrow().reason()
    }

    /// Waits until batches may start; `false` when the run halts first.
    pub(crate) async fn wait_open(&self, halt: &CancellationToken) -> bool {
        let mut gate = self.gate.subscribe();
        tokio::select! {
            biased;
            () = halt.cancelled() => false,
            open = gate.wait_for(|g| g.paused_by.is_none() && g.throttled.is_none()) => open.is_ok(),
        }
    }

    /// Seconds spent paused and throttled so far.
    pub(crate) fn held_seconds(&self) -> (f64, f64) {
        let held = self.held.lock().expect("held lock");
        let now = Instant::now();
        let total = |sum: Duration, since: Option<Instant>| {
            (sum + since.map_or(Duration::ZERO, |s| now - s)).as_secs_f64()
        };
        (
            total(held.paused, held.paused_since),
            total(held.throttled, held.throttled_since),
        )
    }

    /// Pauses (`Some(by)`) or resumes the batches.
    fn set_paused(&self, by: Option<String>) {
        let mut held = self.held.lock().expect("held lock");
        let now = Instant::now();
        match (&by, held.paused_since) {
            (Some(_), None) => held.paused_since = Some(now),
            (None, Some(since)) => {
                held.paused += now - since;
                held.paused_since = None;
            }
            _ => {}
        }
        self.gate.send_modify(|g| g.paused_by = by);
    }

    /// Holds the batches off for `why`, or lets them go on; `true` when that changed.
    fn set_throttled(&self, why: Option<String>) -> bool {
        let mut held = self.held.lock().expect("held lock");
        let now = Instant::now();
        match (&why, held.throttled_since) {
            (Some(reason), None) => {
                held.throttled_since = Some(now);
                self.metrics.set_throttled(true);
                trace::throttled(reason);
            }
            (None, Some(since)) => {
                held.throttled += now - since;
                held.throttled_since = None;
                self.metrics.set_throttled(false);
                self.metrics.add_throttled_time(now - since);
                trace::unthrottled(now - since);
            }
            _ => {}
        }
        drop(held);
        self.gate.send_if_modified(|g| {
            let changed = g.throttled != why;
            g.throttled = why;
            changed
        })
    }

    /// Sets the batch size: `Some(n)` fixed, `None` as configured.
    fn set_batch_size(&self, size: Option<usize>) {
        let mut sizing = self.sizing.lock().expect("sizing lock");
        let next = match size {
            Some(n) => {
                sizing.sizer = None;
                self.adaptive.store(false, Ordering::Relaxed);
                n.max(1)
            }
            None => {
                sizing.sizer = sizing.configured.clone();
                self.adaptive
                    .store(sizing.sizer.is_some(), Ordering::Relaxed);
                sizing
                    .sizer
                    .as_ref()
                    .map_or(sizing.configured_size, BatchSizer::current)
            }
        };
        self.batch_size.store(next, Ordering::Relaxed);
        self.metrics.set_batch_size(next);
        drop(sizing);
        self.update_bound();
    }

    /// Sets the number of jobs wanted.
    fn set_processes(&self, processes: usize) {
        self.processes.store(processes.max(1), Ordering::Relaxed);
        self.update_bound();
    }

    /// Keeps the tracker's window at least twice what the jobs can hold, plus the scanner's
    /// share, as the batch size and the number of jobs change (see `Overseer::run`).
    fn update_bound(&self) {
        let floor = (2 * self.processes.load(Ordering::Relaxed))
            .saturating_mul(self.largest_batch())
            .saturating_add(self.bound.scanner);
        self.tracker.set_limit(self.bound.max_pending.max(floor));
    }

    /// How many more jobs are wanted now.
    pub(crate) fn jobs_wanted(&self) -> usize {
        self.processes
            .load(Ordering::Relaxed)
            .saturating_sub(self.live.load(Ordering::Relaxed))
    }

    /// Counts a job that is about to start.
    pub(crate) fn job_started(&self) {
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the calling job should retire, there being more jobs than wanted; counts it as
    /// gone when so.
    pub(crate) fn should_retire(&self) -> bool {
        let wanted = self.processes.load(Ordering::Relaxed);
        self.live
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |live| {
                (live > wanted).then(|| live - 1)
            })
            .is_ok()
    }

    /// The state to publish, with `note` as what changed.
    fn state(&self, note: String) -> FlowState {
        let gate = self.gate.borrow().clone();
        FlowState {
            paused_by: gate.paused_by,
            throttled: gate.throttled,
            rate_limit: self.rate.per_second(),
            processes: self.processes.load(Ordering::Relaxed),
            batch_size: self.batch_size(),
            adaptive: self.adaptive(),
            note,
        }
    }

    /// Publishes the flow after a change described by `note`, and its line on the board.
    fn publish(&self, note: String) {
        let board = &*self.board;
        let state = self.state(note.clone());
        // A change of a setting says what changed; a change of the throttle says why.
        let line = match (note.is_empty(), self.gate.borrow().reason()) {
            (true, Some(hold)) => hold,
            _ => note,
        };
        self.shown.store(true, Ordering::Relaxed);
        board.publish(Event::JobAdded {
            job: FLOW_JOB,
            prefix: String::new(),
        });
        board.publish(Event::JobText {
            job: FLOW_JOB,
            text: line,
        });
        board.publish(Event::JobStatus {
            job: FLOW_JOB,
            status: if state.paused_by.is_some() || state.throttled.is_some() {
                JobStatus::Warning
            } else {
                JobStatus::Normal
            },
        });
        board.publish(Event::Flow(state));
    }

    /// Finishes the flow line at the end of the run, when there is one.
    pub(crate) fn finish(&self) {
        if self.shown.load(Ordering::Relaxed) {
            self.board.publish(Event::JobFinished { job: FLOW_JOB });
        }
    }

    /// Applies `now`, the controls after a change from `before`; a stop cancels `halt`.
    fn apply(&self, before: &Controls, now: &Controls, halt: &CancellationToken) {
        let by = now.by.clone().unwrap_or_else(|| "control".to_owned());
        let mut notes = Vec::new();
        if now.paused != before.paused {
            self.set_paused(now.paused.then(|| by.clone()));
            notes.push(if now.paused {
                format!("Paused by {by}")
            } else {
                format!("Resumed by {by}")
            });
        }
        if now.rate_limit != before.rate_limit {
            let rate = now.rate_limit.unwrap_or(self.configured_rate);
            self.rate.set(rate);
            self.metrics.set_rate_limit(rate);
            notes.push(match rate {
                0 => format!("No rate limit (set by {by})"),
                n => format!("Rate limit {}/s (set by {by})", thousands(n)),
            });
        }
        if now.processes != before.processes {
            let processes = now.processes.unwrap_or(self.configured_processes);
            self.set_processes(processes);
            notes.push(format!("{processes} processes (set by {by})"));
        }
        if now.batch_size != before.batch_size {
            self.set_batch_size(now.batch_size);
            notes.push(match now.batch_size {
                Some(n) => format!("Batch size {} (set by {by})", thousands(n as u64)),
                None => format!("Batch size as configured (set by {by})"),
            });
        }
        if now.stop && !before.stop {
            notes.push(format!("Stopping (asked by {by})"));
            halt.cancel();
        }
        if !notes.is_empty() {
            let notes = notes.join("; ");
            trace::control_command(&notes, &by);
            self.publish(notes);
        }
    }
}

/// The largest adaptive size: what keeps the jobs' batches, twice over, within `max_pending`
/// keys, so that adapting never widens the tracker's window (and the checkpoint) beyond the
/// bound a user set. A size given explicitly is not capped.
fn adaptive_cap(max_pending: usize, processes: usize) -> usize {
    (max_pending / (2 * processes.max(1))).max(1)
}

/// Obeys `control` until the run ends: applies its controls as they are now (a run restarted
/// while paused starts paused), then every change. Applied before this returns, the first
/// state holds before any job starts.
pub(crate) fn obey(
    flow: &Arc<Flow>,
    control: &RunControl,
    halt: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut watcher = control.watch();
    let mut before = Controls::default();
    let now = watcher.borrow_and_update().clone();
    flow.apply(&before, &now, halt);
    before = now;
    let (flow, halt) = (Arc::clone(flow), halt.clone());
    tokio::spawn(async move {
        while watcher.changed().await.is_ok() {
            let now = watcher.borrow_and_update().clone();
            flow.apply(&before, &now, &halt);
            before = now;
        }
    })
}

/// Asks `check` now, then every `interval` until the run ends, holding the batches off while
/// it gives a reason. The first answer holds before this returns, so that no batch starts on
/// an unhealthy database.
pub(crate) async fn watch_health(
    flow: &Arc<Flow>,
    check: Arc<dyn HealthCheck>,
    interval: Duration,
    halt: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    ask_health(flow, &*check).await;
    let (flow, halt) = (Arc::clone(flow), halt.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                biased;
                () = halt.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            ask_health(&flow, &*check).await;
        }
    })
}

/// One health check, its answer applied and published when it changed.
async fn ask_health(flow: &Flow, check: &dyn HealthCheck) {
    // A check that fails is a reason to hold off: a database that cannot answer a small query
    // is in no state for a batch, and a query that is wrong is seen on the board at once.
    let why = match tokio::time::timeout(HEALTH_TIMEOUT, check.check()).await {
        Ok(Ok(why)) => why,
        Ok(Err(error)) => Some(format!("the health check failed: {error}")),
        Err(_) => Some(format!(
            "the health check did not answer within {} seconds",
            HEALTH_TIMEOUT.as_secs()
        )),
    };
    let note = match &why {
        Some(_) => String::new(),
        None => "Throttling lifted".to_owned(),
    };
    if flow.set_throttled(why) {
        flow.publish(note);
    }
}
