//! A migration's controls as the progress store keeps them, so that `db-migrate control` on any
//! machine can pause, resume, stop or retune every running process of a migration, and a pause
//! outlives the processes: a paused run that is killed and restarted starts paused.
//!
//! One row (or file entry) per migration, changed whole, each change adding one to its
//! generation. A run remembers the generation it started at: a stop request made at a later
//! generation stops it, one made before it started never does (the stop was for the runs of
//! then). Deciding by generation rather than by time keeps two machines' clocks out of it.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::components::component::BoxError;
use crate::connection::Database;
use crate::database::{DbError, context, sql_for, table_exists};
use crate::engine::control::{Controls, Setting};

/// The controls of one migration, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct StoredControls {
    /// No new batch starts while set, in every run of the migration, until resumed.
    pub paused: bool,
    /// When a stop was last asked for; `None` if never.
    pub stop_requested_at: Option<DateTime<Utc>>,
    /// The generation that asked for the last stop: it stops the runs that started at an
    /// earlier generation.
    pub stop_generation: Option<u64>,
    /// Records per second, replacing the configured `rate-limit` (0: no limit).
    pub rate_limit: Option<u64>,
    /// Migration jobs at once, replacing the configured `processes`.
    pub processes: Option<usize>,
    /// Records per batch, replacing the configured `batch-size`.
    pub batch_size: Option<usize>,
    /// Who made the last change and how (`paused by db-migrate control, alice@host-2 pid 4242`).
    pub changed_by: Option<String>,
    /// When the last change was made.
    pub changed_at: Option<DateTime<Utc>>,
    /// Changes made so far: 0 for a migration never controlled.
    pub generation: u64,
}

/// One change to a migration's controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlChange {
    /// Pause every run, and the runs started later, until resumed.
    Pause,
    /// Resume.
    Resume,
    /// Stop the runs going on now, gracefully.
    Stop,
    /// Change a setting for the runs going on and those started later.
    Set(Setting),
}

impl ControlChange {
    /// What the change does, for people: `paused`, `rate-limit=500`.
    pub fn describe(self) -> String {
        match self {
            ControlChange::Pause => "paused".to_owned(),
            ControlChange::Resume => "resumed".to_owned(),
            ControlChange::Stop => "stop asked".to_owned(),
            ControlChange::Set(setting) => setting.to_text(),
        }
    }
}

impl StoredControls {
    /// These controls after `change`, made `by` someone at `now`, one generation later.
    pub fn changed(&self, change: ControlChange, by: &str, now: DateTime<Utc>) -> StoredControls {
        let mut next = self.clone();
        next.generation = self.generation + 1;
        match change {
            ControlChange::Pause => next.paused = true,
            ControlChange::Resume => next.paused = false,
            ControlChange::Stop => {
                next.stop_requested_at = Some(now);
                next.stop_generation = Some(next.generation);
            }
            ControlChange::Set(Setting::RateLimit(n)) => next.rate_limit = Some(n),
            ControlChange::Set(Setting::Processes(n)) => next.processes = Some(n.max(1)),
            ControlChange::Set(Setting::BatchSize(n)) => next.batch_size = Some(n.max(1)),
        }
        next.changed_by = Some(by.to_owned());
        next.changed_at = Some(now);
        next
    }

    /// Whether a stop was asked for after a run that started at generation `started_at`.
    pub fn stops_run_started_at(&self, started_at: u64) -> bool {
        self.stop_generation.is_some_and(|g| g > started_at)
    }

    /// `controls` as these say, for a run that started at generation `started_at`: a stop is
    /// only ever added (a run told to stop stays told), the rest replaced.
    pub fn apply_to(&self, controls: &mut Controls, started_at: u64) {
        controls.paused = self.paused;
        controls.stop |= self.stops_run_started_at(started_at);
        controls.rate_limit = self.rate_limit;
        controls.processes = self.processes;
        controls.batch_size = self.batch_size;
    }
}

/// The table, one row per migration (see the `bookkeeping` module).
pub(crate) const CREATE_CONTROLS: &str = "CREATE TABLE IF NOT EXISTS migration_controls (
    migration TEXT NOT NULL PRIMARY KEY,
    paused BOOLEAN NOT NULL,
    stop_requested_at TEXT,
    stop_generation BIGINT,
    rate_limit BIGINT,
    processes BIGINT,
    batch_size BIGINT,
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    generation BIGINT NOT NULL)";

/// A row of `migration_controls` as read.
type Row = (
    bool,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    String,
    String,
    i64,
);

/// The controls of `migration` in the database; the defaults (generation 0) when it has none.
pub(crate) async fn read(backend: &Database, migration: &str) -> Result<StoredControls, DbError> {
    if !table_exists(backend, "migration_controls").await? {
        return Ok(StoredControls::default());
    }
    let sql = sql_for(
        backend,
        "SELECT paused, stop_requested_at, stop_generation, rate_limit, processes, batch_size,
                changed_by, changed_at, generation
           FROM migration_controls WHERE migration = ?",
    );
    let row: Option<Row> = match backend {
        Database::Sqlite(pool) => {
            sqlx::query_as(sql)
                .bind(migration)
                .fetch_optional(pool)
                .await
        }
        Database::Postgres(pool) => {
            sqlx::query_as(sql)
                .bind(migration)
                .fetch_optional(pool)
                .await
        }
    }
    .map_err(context("reading migration_controls"))?;
    Ok(row.map(from_row).unwrap_or_default())
}

fn from_row(row: Row) -> StoredControls {
    let (paused, stop_at, stop_generation, rate, processes, batch, by, at, generation) = row;
    let time = |text: &str| DateTime::parse_from_rfc3339(text).ok().map(|t| t.to_utc());
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    StoredControls {
        paused,
        stop_requested_at: stop_at.as_deref().and_then(time),
        stop_generation: stop_generation.map(count),
        rate_limit: rate.map(count),
        processes: processes.map(|n| count(n) as usize),
        batch_size: batch.map(|n| count(n) as usize),
        changed_by: Some(by),
        changed_at: time(&at),
        generation: count(generation),
    }
}

/// The SQL that writes `next` over the row at generation `next.generation - 1`: an insert when
/// there was none (generation 0), an update of that generation otherwise. Affecting no row
/// means someone else changed the controls meanwhile.
pub(crate) fn write_sql(backend: &Database, next: &StoredControls) -> sqlx::SqlStr {
    if next.generation == 1 {
        sql_for(
            backend,
            "INSERT INTO migration_controls (paused, stop_requested_at, stop_generation,
               rate_limit, processes, batch_size, changed_by, changed_at, generation, migration)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (migration) DO NOTHING",
        )
    } else {
        sql_for(
            backend,
            "UPDATE migration_controls SET paused = ?, stop_requested_at = ?,
               stop_generation = ?, rate_limit = ?, processes = ?, batch_size = ?,
               changed_by = ?, changed_at = ?, generation = ?
             WHERE migration = ? AND generation = ?",
        )
    }
}

/// The values [`write_sql`] binds, in its order (the previous generation last, for the update).
pub(crate) struct Binds {
    pub(crate) paused: bool,
    pub(crate) stop_requested_at: Option<String>,
    pub(crate) numbers: [Option<i64>; 4],
    pub(crate) changed_by: String,
    pub(crate) changed_at: String,
    pub(crate) generation: i64,
    pub(crate) previous: i64,
}

impl Binds {
    pub(crate) fn of(next: &StoredControls) -> Binds {
        let number = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        Binds {
            paused: next.paused,
            stop_requested_at: next.stop_requested_at.map(|t| t.to_rfc3339()),
            numbers: [
                next.stop_generation.map(number),
                next.rate_limit.map(number),
                next.processes.map(|n| number(n as u64)),
                next.batch_size.map(|n| number(n as u64)),
            ],
            changed_by: next.changed_by.clone().unwrap_or_default(),
            changed_at: next.changed_at.unwrap_or_else(Utc::now).to_rfc3339(),
            generation: number(next.generation),
            previous: number(next.generation.saturating_sub(1)),
        }
    }
}

/// How many times a change is tried when other writers keep changing the controls first.
pub(crate) const CHANGE_ATTEMPTS: usize = 20;

/// The error when every attempt met another writer.
pub(crate) fn contended(migration: &str) -> BoxError {
    format!(
        "the controls of {migration} kept changing under this change ({CHANGE_ATTEMPTS} \
         attempts): try again"
    )
    .into()
}

/// The controls file beside a runs file: `x.runs.jsonl` gives `x.controls.json`.
pub(crate) fn file_beside(runs_file: &Path) -> std::path::PathBuf {
    let name = runs_file
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".runs.jsonl").unwrap_or(&name);
    runs_file.with_file_name(format!("{stem}.controls.json"))
}

/// Every migration's controls in the file (none when it does not exist).
fn read_file_all(path: &Path) -> Result<BTreeMap<String, StoredControls>, BoxError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("the controls file {} is damaged: {e}", path.display()).into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(format!("while reading the controls file {}: {e}", path.display()).into()),
    }
}

/// The controls of `migration` in the file.
pub(crate) fn read_file(path: &Path, migration: &str) -> Result<StoredControls, BoxError> {
    Ok(read_file_all(path)?.remove(migration).unwrap_or_default())
}

/// Applies `change` to the controls of `migration` in the file, replaced atomically (a reader
/// sees the old or the new file, never half of one). The simulated backend's processes do not
/// lock the file: two changes at the same instant may lose one.
pub(crate) fn change_file(
    path: &Path,
    migration: &str,
    change: ControlChange,
    by: &str,
) -> Result<StoredControls, BoxError> {
    let mut all = read_file_all(path)?;
    let next = all
        .get(migration)
        .cloned()
        .unwrap_or_default()
        .changed(change, by, Utc::now());
    all.insert(migration.to_owned(), next.clone());
    let failed =
        |e: std::io::Error| -> BoxError { format!("while writing {}: {e}", path.display()).into() };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    let temporary = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(&all)?;
    std::fs::write(&temporary, bytes).map_err(failed)?;
    std::fs::File::open(&temporary)
        .and_then(|f| f.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_applies_to_runs_started_before_it_and_a_pause_to_every_run() {
        let now = Utc::now();
        let start = StoredControls::default();
        let run_before = start.generation;
        let paused = start.changed(ControlChange::Pause, "alice", now);
        let stopped = paused.changed(ControlChange::Stop, "bob", now);
        assert_eq!(stopped.generation, 2);
        assert_eq!(stopped.changed_by.as_deref(), Some("bob"));
        assert!(stopped.stops_run_started_at(run_before));
        // A run started once the stop was there is not stopped by it.
        assert!(!stopped.stops_run_started_at(stopped.generation));
        let mut later = Controls::default();
        stopped.apply_to(&mut later, stopped.generation);
        assert!(later.paused && !later.stop);
        let mut earlier = Controls::default();
        stopped.apply_to(&mut earlier, run_before);
        assert!(earlier.paused && earlier.stop);
        // Resuming does not take a stop back.
        stopped
            .changed(ControlChange::Resume, "carol", now)
            .apply_to(&mut earlier, run_before);
        assert!(!earlier.paused && earlier.stop);
    }

    #[test]
    fn settings_replace_the_configured_ones() {
        let now = Utc::now();
        let set = StoredControls::default()
            .changed(ControlChange::Set(Setting::RateLimit(500)), "a", now)
            .changed(ControlChange::Set(Setting::Processes(3)), "a", now)
            .changed(ControlChange::Set(Setting::BatchSize(50)), "a", now);
        let mut controls = Controls::default();
        set.apply_to(&mut controls, 0);
        assert_eq!(
            (controls.rate_limit, controls.processes, controls.batch_size),
            (Some(500), Some(3), Some(50))
        );
        assert_eq!(
            ControlChange::Set(Setting::RateLimit(5)).describe(),
            "rate-limit=5"
        );
    }

    #[test]
    fn the_file_keeps_each_migration_apart_and_survives_a_reread() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_beside(&dir.path().join("m.runs.jsonl"));
        assert!(path.ends_with("m.controls.json"));
        assert_eq!(read_file(&path, "a").unwrap(), StoredControls::default());
        change_file(&path, "a", ControlChange::Pause, "x").unwrap();
        change_file(&path, "b", ControlChange::Set(Setting::RateLimit(9)), "y").unwrap();
        let a = read_file(&path, "a").unwrap();
        assert!(a.paused && a.generation == 1 && a.rate_limit.is_none());
        let b = read_file(&path, "b").unwrap();
        assert!(!b.paused && b.rate_limit == Some(9));
        std::fs::write(&path, "{").unwrap();
        let damaged = read_file(&path, "a").unwrap_err().to_string();
        assert!(damaged.contains("damaged"), "{damaged}");
    }
}
