//! Ctrl-C and SIGTERM: the first stops the run gracefully, the second exits at once.

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exit::INTERRUPTED;

async fn next_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Listens for signals: the first cancels `shutdown` (the run stops taking work, finishes what
/// it holds, saves progress); the second restores the terminal and exits with 130 at once.
/// Registering the handlers means the default action (dying on SIGINT) no longer happens.
pub fn listen(shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        next_signal().await;
        shutdown.cancel();
        next_signal().await;
        crate::board::restore_terminal();
        #[allow(clippy::exit, clippy::print_stderr)]
        {
            eprintln!("db-migrate: interrupted twice, exiting at once (progress up to the last checkpoint is kept)");
            std::process::exit(i32::from(INTERRUPTED));
        }
    })
}
