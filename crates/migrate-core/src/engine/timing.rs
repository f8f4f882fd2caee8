//! What a batch's time is made of: its own work, and the time it waited for a shared resource
//! before its transaction began (SQLite's single writer, a pool connection, another process's
//! lock on the database).
//!
//! The adaptive batch size aims at a batch *duration* because a batch holds its rows' locks
//! for that long; time spent queueing before `BEGIN` holds nothing, and counting it would make
//! the batches smaller the more jobs share a writer or a pool (with 20 jobs taking turns on
//! SQLite's writer, twenty times smaller). Migrations report such waits with [`report_wait`];
//! the jobs subtract them from what they measure.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

tokio::task_local! {
    /// The waits reported during the batch the current job runs.
    static WAITED: Cell<Duration>;
}

/// Reports that the batch being migrated waited `wait` for a shared resource before its
/// transaction began (for the writer lock, a connection, `BEGIN IMMEDIATE`). Called from a
/// [`Migration`](crate::Migration)'s `migrate`; outside a batch run by the engine it does
/// nothing.
pub fn report_wait(wait: Duration) {
    let _ = WAITED.try_with(|waited| waited.set(waited.get() + wait));
}

/// Runs `batch`, with the waits it reported.
pub(crate) async fn measure<F: Future>(batch: F) -> (F::Output, Duration) {
    WAITED
        .scope(Cell::new(Duration::ZERO), async {
            let output = batch.await;
            (output, WAITED.with(Cell::get))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_reported_in_a_batch_add_up_and_are_ignored_outside_one() {
        report_wait(Duration::from_secs(5));
        let ((), waited) = measure(async {
            report_wait(Duration::from_millis(30));
            tokio::task::yield_now().await;
            report_wait(Duration::from_millis(12));
        })
        .await;
        assert_eq!(waited, Duration::from_millis(42));
    }
}
