//! Runs as the progress store keeps them (one row per run, like Spring Batch's job
//! repository), and what a store reports about its migrations for `db-migrate status`.
//!
//! A run's row is written when it starts (never on a dry run), its heartbeat refreshed while it
//! goes on, and its ending and counts written when it ends. A run killed with SIGKILL never
//! writes its ending: once its heartbeat is older than [`STALE_AFTER`], or its process is gone
//! from the machine that reads the row, it [ended without a word](RunState::Vanished).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::engine::summary::Ending;

/// How often a running run refreshes its heartbeat (`migration_runs.updated_at`).
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(10);

/// A run without an ending whose heartbeat is older than this is no longer running: six
/// missed heartbeats, so that a busy database delaying one write does not look like a death.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// Names one run of one migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunId {
    /// The migration.
    pub migration: String,
    /// The run within it: its start time, process id and a random suffix
    /// (`20260501T120000.123Z-4242-9f3a`).
    pub run: String,
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} run {}", self.migration, self.run)
    }
}

/// What a run records when it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run's id.
    pub id: RunId,
    /// The machine it runs on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// The settings that shape it: processes, batch size, rate limit, dry run, reset, input
    /// digest or range (a small JSON object).
    pub settings: serde_json::Value,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl RunRecord {
    /// A run of `migration` starting now in this process, with `settings`.
    pub fn new(migration: &str, settings: serde_json::Value) -> RunRecord {
        let started_at = Utc::now();
        let pid = std::process::id();
        let suffix: u16 = rand::random();
        RunRecord {
            id: RunId {
                migration: migration.to_owned(),
                run: format!(
                    "{}-{pid}-{suffix:04x}",
                    started_at.format("%Y%m%dT%H%M%S%.3fZ")
                ),
            },
            host: host_name(),
            pid,
            settings,
            started_at,
        }
    }
}

/// This machine's name, as runs record it: the kernel's host name where it can be read, else
/// `$HOSTNAME`, else `unknown`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One run as a store read it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// The run's id within its migration.
    pub run: String,
    /// The machine it ran on.
    pub host: String,
    /// Its process id there.
    pub pid: u32,
    /// Its settings (see [`RunRecord::settings`]).
    pub settings: serde_json::Value,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// Its last heartbeat (RFC 3339); `None` when the store keeps none.
    pub updated_at: Option<String>,
    /// When it ended; `None` while running, or when it ended without a word.
    pub ended_at: Option<String>,
    /// How it ended; `None` while running, or when it ended without a word.
    pub ending: Option<Ending>,
    /// Its counts, once it ended.
    pub counts: Option<RunCounts>,
    /// Why it was aborted, when it was.
    pub abort_reason: Option<String>,
}

/// The counts of an ended run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunCounts {
    /// Records it migrated.
    pub migrated: u64,
    /// Records it found already migrated.
    pub previously_migrated: u64,
    /// Records gone when their turn came.
    pub gone: u64,
    /// Records that failed.
    pub failed: u64,
}

/// Where a run stands, as a reader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// No ending yet, and alive as far as the reader can tell.
    Running,
    /// It ended and said how.
    Ended(Ending),
    /// No ending, and no longer running: killed (SIGKILL, a crash, a lost machine).
    Vanished,
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Running => "running",
            RunState::Ended(Ending::Completed) => "completed",
            RunState::Ended(Ending::Interrupted) => "interrupted",
            RunState::Ended(Ending::Aborted) => "aborted",
            RunState::Vanished => "ended without a word (killed?)",
        })
    }
}

impl RunRow {
    /// Where the run stands at `now`. `process_alive` says whether its process still exists
    /// when the reader can tell (same machine), `None` otherwise. A run without an ending has
    /// vanished when its process is gone or its heartbeat is older than [`STALE_AFTER`].
    pub fn state(&self, now: DateTime<Utc>, process_alive: Option<bool>) -> RunState {
        if let Some(ending) = self.ending {
            return RunState::Ended(ending);
        }
        if process_alive == Some(false) {
            return RunState::Vanished;
        }
        let heard = self
            .updated_at
            .as_deref()
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok());
        match heard {
            Some(heard)
                if now
                    .signed_duration_since(heard)
                    .to_std()
                    .is_ok_and(|since| since > STALE_AFTER) =>
            {
                RunState::Vanished
            }
            _ => RunState::Running,
        }
    }
}

/// An open failure as a store read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRow {
    /// The record's key, as the CSV line `-f` reads.
    pub key: String,
    /// The last error.
    pub error: String,
    /// Attempts made, over every run that tried it.
    pub attempts: u64,
    /// When it last failed (RFC 3339).
    pub failed_at: String,
}

/// An unfinished scan's checkpoint as a store read it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRow {
    /// What it covers: `all`, a key range, or `ids:<digest> all` for a run over given keys.
    pub scope: String,
    /// The low-water key as a CSV line: every key up to it is done. `None` when none is.
    pub low_water: Option<String>,
    /// How many keys above the low-water mark are done.
    pub done_above: u64,
    /// When it was saved (RFC 3339); `None` when the store keeps no time.
    pub updated_at: Option<String>,
}

/// What a store knows of one migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// The migration's name.
    pub migration: String,
    /// Records migrated so far, from the audit; `None` when the store keeps no audit.
    pub migrated: Option<u64>,
    /// Checkpoints of unfinished scans: a rerun resumes from them.
    pub checkpoints: Vec<CheckpointRow>,
    /// How many runs are recorded.
    pub runs: u64,
    /// The latest runs, newest first (at most [`ReportQuery::runs`]).
    pub last_runs: Vec<RunRow>,
    /// Failures no run has resolved; `None` when the store cannot tell.
    pub open_failures: Option<u64>,
    /// The first open failures, oldest first (at most [`ReportQuery::failures`]).
    pub failures: Vec<FailureRow>,
}

/// What to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Only this migration; every migration when `None`.
    pub migration: Option<String>,
    /// How many of the latest runs to list per migration.
    pub runs: usize,
    /// How many open failures to list per migration.
    pub failures: usize,
}

/// What a store holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreReport {
    /// Where the store keeps it (tables of a database, files).
    pub location: String,
    /// Whether any bookkeeping exists there at all (tables, files).
    pub found: bool,
    /// The migrations, by name.
    pub migrations: Vec<MigrationReport>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ending: Option<Ending>, updated_at: &str) -> RunRow {
        RunRow {
            run: "r".into(),
            host: "h".into(),
            pid: 1,
            settings: serde_json::Value::Null,
            started_at: "2026-05-01T12:00:00+00:00".into(),
            updated_at: Some(updated_at.into()),
            ended_at: None,
            ending,
            counts: None,
            abort_reason: None,
        }
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn an_ended_run_says_how_it_ended_whatever_its_heartbeat() {
        let r = row(Some(Ending::Interrupted), "2026-05-01T12:00:00+00:00");
        let now = at("2026-05-02T12:00:00+00:00");
        assert_eq!(
            r.state(now, Some(false)),
            RunState::Ended(Ending::Interrupted)
        );
        assert_eq!(r.state(now, None).to_string(), "interrupted");
    }

    #[test]
    fn a_run_without_an_ending_vanished_when_its_heartbeat_is_stale_or_its_process_gone() {
        let r = row(None, "2026-05-01T12:00:00+00:00");
        assert_eq!(
            r.state(at("2026-05-01T12:00:59+00:00"), None),
            RunState::Running
        );
        assert_eq!(
            r.state(at("2026-05-01T12:00:59+00:00"), Some(true)),
            RunState::Running
        );
        assert_eq!(
            r.state(at("2026-05-01T12:00:59+00:00"), Some(false)),
            RunState::Vanished
        );
        assert_eq!(
            r.state(at("2026-05-01T12:01:01+00:00"), Some(true)),
            RunState::Vanished
        );
        assert_eq!(
            RunState::Vanished.to_string(),
            "ended without a word (killed?)"
        );
    }

    #[test]
    fn run_ids_name_their_migration_and_process() {
        let run = RunRecord::new("m", serde_json::json!({}));
        assert_eq!(run.id.migration, "m");
        assert!(
            run.id.run.contains(&format!("-{}-", std::process::id())),
            "{}",
            run.id.run
        );
        assert!(!run.host.is_empty());
    }
}
