//! The run's `tracing` spans and events, for whatever subscriber the process installs (the
//! CLI's log, or an embedding service's own). All of them have the target `migrate_core`.
//!
//! - span `run` (INFO): `migration`, `dry_run`, `range`; the jobs and the scanner run inside it;
//! - span `batch` (DEBUG): `migration`, `first` and `last` key, `size`;
//! - events: the start of the run (INFO), a retry (INFO), a record's failure (WARN), an abort (ERROR), the end of the run
//!   (INFO), and throttling and control commands ([`throttled`], [`unthrottled`],
//!   [`control_command`], for the parts of the engine that throttle or obey controls).
//!
//! Nothing is formatted unless a subscriber wants the span or the event.

use std::time::Duration;

use tracing::Span;

use crate::engine::checkpoint::KeyRange;
use crate::engine::summary::Summary;
use crate::migration::key::Key;

/// The span of one run.
pub(crate) fn run_span(migration: &str, dry_run: bool, range: &KeyRange) -> Span {
    tracing::info_span!("run", migration, dry_run, range = %range)
}

/// The span of one batch of `keys` (in the order the job took them).
pub(crate) fn batch_span(migration: &str, keys: &[Key]) -> Span {
    let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
        return Span::none();
    };
    let span =
        tracing::debug_span!("batch", migration, first = %first, last = %last, size = keys.len());
    // A span no subscriber wants is still entered and left at every poll of the batch, to
    // mirror it to the `log` crate; `none` is not.
    if span.is_disabled() {
        Span::none()
    } else {
        span
    }
}

/// A record is tried again (`attempt` is the attempt about to start) after `error`.
pub(crate) fn retrying(key: &Key, attempt: u32, error: &str) {
    tracing::info!(key = %key, attempt, error, "retrying a record");
}

/// A contended batch of `keys` is tried again as a whole (`attempt` is the attempt about to
/// start) after `error`, a lock or statement timeout.
pub(crate) fn retrying_batch(keys: &[Key], attempt: u32, error: &str) {
    if let (Some(first), Some(last)) = (keys.first(), keys.last()) {
        tracing::info!(first = %first, last = %last, size = keys.len(), attempt, error, "retrying a contended batch");
    }
}

/// A batch of `keys` still contended after its tries is split in halves, so that the records
/// no other session holds get migrated.
pub(crate) fn splitting(keys: &[Key], error: &str) {
    if let (Some(first), Some(last)) = (keys.first(), keys.last()) {
        tracing::info!(first = %first, last = %last, size = keys.len(), error, "splitting a contended batch");
    }
}

/// A record was still contended after `attempts`: it is left for the next run, not recorded as
/// a failure. `batch` is the span of its batch.
pub(crate) fn record_deferred(batch: &Span, key: &Key, attempts: u32, error: &str) {
    batch.in_scope(
        || tracing::warn!(key = %key, attempts, error, "a record was left for the next run"),
    );
}

/// A record failed for good after `attempts`; it is recorded and the run goes on.
/// `batch` is the span of its batch.
pub(crate) fn record_failed(batch: &Span, key: &Key, attempts: u32, error: &str) {
    // In the batch's span when there is one, in the run's otherwise (a disabled span enters
    // nothing).
    batch.in_scope(|| tracing::warn!(key = %key, attempts, error, "a record failed"));
}

/// The run aborts (failure limit, fatal error).
pub(crate) fn aborting(reason: &str) {
    tracing::error!(reason, "the run aborts");
}

/// The run starts (inside its span, which says which run).
pub(crate) fn run_started() {
    tracing::info!("the run starts");
}

/// The run ended, with its counts.
pub(crate) fn run_ended(summary: &Summary) {
    tracing::info!(
        ending = ?summary.ending,
        migrated = summary.migrated,
        previously_migrated = summary.previously_migrated,
        gone = summary.gone,
        failed = summary.failed,
        deferred = summary.deferred,
        scanned = summary.scanned,
        elapsed_ms = summary.elapsed.as_millis() as u64,
        abort_reason = summary.abort_reason.as_deref(),
        "the run ended"
    );
}

/// The run is throttled from now on (no batch starts), because of `reason` (`throttle query
/// returned 3`, `replication lag 12 s`).
pub(crate) fn throttled(reason: &str) {
    tracing::warn!(reason, "throttled");
}

/// The run goes on after being throttled for `time`.
pub(crate) fn unthrottled(time: Duration) {
    tracing::info!(
        throttled_ms = time.as_millis() as u64,
        "no longer throttled"
    );
}

/// A control command was obeyed (`pause`, `rate-limit=500`), given `by` someone (`the board`,
/// `db-migrate control on host-2`).
pub(crate) fn control_command(command: &str, by: &str) {
    tracing::info!(command, by, "control command");
}
