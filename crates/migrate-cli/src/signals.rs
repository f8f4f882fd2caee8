//! Ctrl-C and SIGTERM: the first stops the run gracefully, the second exits at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use migrate_core::{Event, JobId, JobStatus, StatusBoard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit::INTERRUPTED;

/// The signals that stop a run. Registered once, before the run starts, so that a signal
/// arriving at any moment (even two in quick succession) is seen.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> std::io::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => {}
                _ = self.terminate.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The board line that says a stop was asked for: below the engine's run-level lines
/// (`NOTICE_JOB`, `FLOW_JOB`, the distributed migration's line) and the control line
/// (`control_link::CONTROL_JOB`).
const STOPPING_JOB: JobId = JobId(u32::MAX - 4);

/// Listens for signals: the first cancels `shutdown` (the run stops taking work, finishes what
/// it holds, saves progress) and says so on the board; the second restores the terminal and
/// exits with 130 at once. Once `run_over` is set (the run ended, the components are closing),
/// the first signal exits at once: there is no run left to stop. Once registered, SIGINT no
/// longer kills the process by itself: this task is what exits.
pub fn listen(
    shutdown: CancellationToken,
    board: Arc<dyn StatusBoard>,
    grace_period: Duration,
    run_over: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let mut signals = Signals::register()?;
    Ok(tokio::spawn(async move {
        signals.next().await;
        if run_over.load(Ordering::SeqCst) {
            exit_at_once("interrupted while closing");
        }
        stop_gracefully(&shutdown, board.as_ref(), grace_period);
        signals.next().await;
        exit_at_once("interrupted twice");
    }))
}

/// Cancels `shutdown` (the run stops taking work, finishes what it holds, saves progress) and
/// says so on the board: what Ctrl-C, `q` on the board and `db-migrate control stop` do.
pub(crate) fn stop_gracefully(
    shutdown: &CancellationToken,
    board: &dyn StatusBoard,
    grace_period: Duration,
) {
    if shutdown.is_cancelled() {
        return;
    }
    shutdown.cancel();
    board.publish(Event::JobAdded {
        job: STOPPING_JOB,
        prefix: String::new(),
    });
    board.publish(Event::JobStatus {
        job: STOPPING_JOB,
        status: JobStatus::Warning,
    });
    board.publish(Event::JobText {
        job: STOPPING_JOB,
        text: format!(
            "Stopping: jobs finish what they hold (at most {} s), then progress is saved; \
             Ctrl-C again to exit at once",
            grace_period.as_secs()
        ),
    });
}

/// Restores the terminal and exits with 130, saying `why`.
fn exit_at_once(why: &str) -> ! {
    crate::board::restore_terminal();
    #[allow(clippy::exit, clippy::print_stderr)]
    {
        eprintln!(
            "db-migrate: {why}, exiting at once (progress up to the last checkpoint is kept)"
        );
        std::process::exit(i32::from(INTERRUPTED));
    }
}
