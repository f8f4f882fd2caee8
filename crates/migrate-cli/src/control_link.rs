//! The link between a run and its migration's controls in the progress store: the run starts
//! with the stored controls (a run restarted while paused starts paused), a poller reads them
//! at least twice a second and applies every change to the run's [`RunControl`], changes made
//! on this run's board are written back for the other processes, and a stop, from wherever it
//! comes, stops the run as Ctrl-C does.

use std::sync::Arc;
use std::time::Duration;

use migrate_core::{
    ControlChange, Controls, Event, JobId, JobStatus, MigrationModule, Migrator, ProgressStore,
    RunControl, StatusBoard, StoredControls, System, host_name,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::board::BoardControl;

/// How often the stored controls are read: a change made anywhere reaches the run within this,
/// plus a store round trip.
pub(crate) const POLL_PERIOD: Duration = Duration::from_millis(400);

/// How long the board changes made just before the run ended may take to be written.
const LAST_WRITES: Duration = Duration::from_secs(1);

/// The board line that says the controls cannot be read or written.
const CONTROL_JOB: JobId = JobId(u32::MAX - 3);

/// A run's controls before the run starts: the handle the board's keys and the engine share,
/// and the board's changes waiting to be written to the store.
#[derive(Debug)]
pub(crate) struct LiveControl {
    control: RunControl,
    sender: mpsc::UnboundedSender<ControlChange>,
    changes: mpsc::UnboundedReceiver<ControlChange>,
}

impl LiveControl {
    pub(crate) fn new() -> LiveControl {
        let (sender, changes) = mpsc::unbounded_channel();
        LiveControl {
            control: RunControl::default(),
            sender,
            changes,
        }
    }

    /// The board's hold on the controls, with the configured `rate-limit`.
    pub(crate) fn for_board(&self, configured_rate: u64) -> BoardControl {
        BoardControl::new(self.control.clone(), self.sender.clone(), configured_rate)
    }

    /// The handle the run obeys.
    pub(crate) fn control(&self) -> RunControl {
        self.control.clone()
    }

    /// Loads the stored controls into the run and starts the poller, which writes the board's
    /// changes back unless `read_only` (a dry run), and stops the run through `shutdown` with
    /// `stop` once told to. Call before the run starts; [`Link::finish`] when it is over.
    pub(crate) async fn link(
        self,
        system: &System<MigrationModule>,
        read_only: bool,
        stop: impl Fn() + Send + 'static,
    ) -> Link {
        let store = system.resolve::<dyn ProgressStore>();
        let board = system.resolve::<dyn StatusBoard>();
        let migration = system.resolve::<dyn Migrator>().migration_name().to_owned();
        let mut poller = Poller {
            store,
            board,
            migration,
            control: self.control,
            changes: self.changes,
            read_only,
            started_at: None,
            seen: 0,
            failing: false,
        };
        poller.load().await;
        let done = CancellationToken::new();
        let task = tokio::spawn(poller.run(done.clone(), stop));
        Link { done, task }
    }
}

/// The running poller; [`Link::finish`] stops it.
#[derive(Debug)]
pub(crate) struct Link {
    done: CancellationToken,
    task: JoinHandle<()>,
}

impl Link {
    /// Stops the poller, after it wrote the board changes already made.
    pub(crate) async fn finish(self) {
        self.done.cancel();
        let _ = self.task.await;
    }
}

/// The poller's state.
struct Poller {
    store: Arc<dyn ProgressStore>,
    /// Where a failing store is reported.
    board: Arc<dyn StatusBoard>,
    migration: String,
    control: RunControl,
    /// Changes made on the board, to write to the store.
    changes: mpsc::UnboundedReceiver<ControlChange>,
    /// A dry run: its connection cannot write.
    read_only: bool,
    /// The generation the run started at: only a later stop stops it. Unknown until the
    /// controls were read once; the first read that works then sets it, so that a stop made
    /// before the run (last week) never stops it, even when the read before the run failed.
    started_at: Option<u64>,
    /// The last generation applied.
    seen: u64,
    /// The store is failing (said once on the board until it works again).
    failing: bool,
}

impl Poller {
    /// Applies the stored controls before the run starts.
    async fn load(&mut self) {
        if let Some(stored) = self.read().await {
            self.apply(&stored);
        }
    }

    async fn run(mut self, done: CancellationToken, stop: impl Fn()) {
        let mut watch = self.control.watch();
        let mut tick = tokio::time::interval(POLL_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        if watch.borrow_and_update().stop {
            stop();
        }
        loop {
            tokio::select! {
                biased;
                () = done.cancelled() => break,
                Some(change) = self.changes.recv() => self.write(change).await,
                Ok(()) = watch.changed() => {
                    if watch.borrow_and_update().stop {
                        stop();
                    }
                }
                _ = tick.tick() => {
                    // A read waiting for a connection must not hold up the end of the run.
                    let stored = tokio::select! {
                        stored = self.read() => stored,
                        () = done.cancelled() => break,
                    };
                    // A board change made while reading is newer than what was read.
                    if let Some(stored) = stored
                        && self.changes.is_empty()
                    {
                        self.apply(&stored);
                    }
                }
            }
        }
        let _ = tokio::time::timeout(LAST_WRITES, async {
            while let Ok(change) = self.changes.try_recv() {
                self.write(change).await;
            }
        })
        .await;
    }

    async fn read(&mut self) -> Option<StoredControls> {
        let read = self.store.load_controls(&self.migration).await;
        self.report(read.as_ref().err().map(|e| format!("reading them: {e}")));
        read.ok()
    }

    /// Applies `stored` when it is newer than what was applied.
    fn apply(&mut self, stored: &StoredControls) {
        let started_at = *self.started_at.get_or_insert(stored.generation);
        if stored.generation <= self.seen {
            return;
        }
        self.seen = stored.generation;
        let before = self.control.get();
        let mut after = before.clone();
        stored.apply_to(&mut after, started_at);
        let by = format!(
            "{} by {}",
            difference(&before, &after),
            stored.changed_by.as_deref().unwrap_or("the progress store")
        );
        self.control.update(by, |c| stored.apply_to(c, started_at));
    }

    /// Writes a change made on the board, for the other processes.
    async fn write(&mut self, change: ControlChange) {
        if self.read_only {
            return;
        }
        let by = format!("the board, {}", who());
        let written = self
            .store
            .change_controls(&self.migration, change, &by)
            .await;
        match written {
            // This process has it already: what it wrote need not be applied again.
            Ok(stored) if stored.generation == self.seen + 1 => self.seen = stored.generation,
            Ok(_) => {}
            Err(e) => self.report(Some(format!("writing them: {e}"))),
        }
    }

    /// Says on the board that the store fails (once), or that it works again.
    fn report(&mut self, failure: Option<String>) {
        match failure {
            Some(why) if !self.failing => {
                self.failing = true;
                self.board.publish(Event::JobAdded {
                    job: CONTROL_JOB,
                    prefix: String::new(),
                });
                self.board.publish(Event::JobStatus {
                    job: CONTROL_JOB,
                    status: JobStatus::Warning,
                });
                self.board.publish(Event::JobText {
                    job: CONTROL_JOB,
                    text: format!(
                        "Controls of {} in the progress store: failed {why}",
                        self.migration
                    ),
                });
            }
            None if self.failing => {
                self.failing = false;
                self.board.publish(Event::JobText {
                    job: CONTROL_JOB,
                    text: format!("Controls of {}: readable again", self.migration),
                });
                self.board.publish(Event::JobStatus {
                    job: CONTROL_JOB,
                    status: JobStatus::Normal,
                });
            }
            _ => {}
        }
    }
}

/// This process, as the controls record who changed them: `alice@host-2 pid 4242`.
pub(crate) fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{user}@{} pid {}", host_name(), std::process::id())
}

/// What changed from `before` to `after`, for people: `paused, rate-limit=500`.
fn difference(before: &Controls, after: &Controls) -> String {
    let mut changes = Vec::new();
    if before.paused != after.paused {
        changes.push(if after.paused { "paused" } else { "resumed" }.to_owned());
    }
    if before.stop != after.stop {
        changes.push("stop".to_owned());
    }
    let setting = |name: &str, b: Option<usize>, a: Option<usize>| {
        (b != a).then(|| match a {
            Some(n) => format!("{name}={n}"),
            None => format!("{name} as configured"),
        })
    };
    changes.extend(setting(
        "rate-limit",
        before.rate_limit.map(|n| n as usize),
        after.rate_limit.map(|n| n as usize),
    ));
    changes.extend(setting("processes", before.processes, after.processes));
    changes.extend(setting("batch-size", before.batch_size, after.batch_size));
    if changes.is_empty() {
        "nothing changed".to_owned()
    } else {
        changes.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_names_each_change() {
        let before = Controls::default();
        let after = Controls {
            paused: true,
            rate_limit: Some(500),
            ..Controls::default()
        };
        assert_eq!(difference(&before, &after), "paused, rate-limit=500");
        assert_eq!(
            difference(&after, &before),
            "resumed, rate-limit as configured"
        );
        assert_eq!(difference(&before, &before), "nothing changed");
    }
}
