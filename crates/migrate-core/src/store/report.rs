//! The read side of the progress stores: what `db-migrate status` shows, read from the
//! bookkeeping tables of a database or from the simulated backend's files, and the keys of
//! open failures that `db-migrate retry-failures` feeds back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::components::component::BoxError;
use crate::connection::Database;
use crate::database::{DbError, columns, context, sql_for};
use crate::engine::checkpoint::Checkpoint;
use crate::engine::migrator::FailureRecord;
use crate::engine::summary::{Ending, Summary};
use crate::migration::key::Key;
use crate::store::runs::{
    CheckpointRow, FailureRow, MigrationReport, ReportQuery, RunCounts, RunRecord, RunRow,
    StoreReport,
};

/// The bookkeeping tables, in the order their migrations are looked up.
const TABLES: [&str; 4] = [
    "migration_checkpoints",
    "migration_failures",
    "migration_audit",
    "migration_runs",
];

/// `ending` as `migration_runs.ending` holds it.
pub(crate) fn ending_name(ending: Ending) -> &'static str {
    match ending {
        Ending::Completed => "completed",
        Ending::Interrupted => "interrupted",
        Ending::Aborted => "aborted",
    }
}

fn parse_ending(text: &str) -> Option<Ending> {
    match text {
        "completed" => Some(Ending::Completed),
        "interrupted" => Some(Ending::Interrupted),
        "aborted" => Some(Ending::Aborted),
        _ => None,
    }
}

/// Runs a query of rows `$row` on either database, binding `$bind`s in order.
macro_rules! fetch_all {
    ($backend:expr, $row:ty, $sql:expr, $doing:expr $(, $bind:expr)* $(,)?) => {{
        let sql = sql_for($backend, $sql);
        match $backend {
            Database::Sqlite(pool) => {
                sqlx::query_as::<_, $row>(sql)$(.bind($bind))*.fetch_all(pool).await
            }
            Database::Postgres(pool) => {
                sqlx::query_as::<_, $row>(sql)$(.bind($bind))*.fetch_all(pool).await
            }
        }
        .map_err(context($doing))
    }};
}

/// A count as the tables hold it (never negative).
fn count(n: i64) -> u64 {
    n.max(0) as u64
}

/// The bookkeeping tables of `backend` (those of the current layout, with a `migration`
/// column), read for `query`.
pub(crate) async fn database(
    backend: &Database,
    url: &str,
    query: &ReportQuery,
) -> Result<StoreReport, DbError> {
    let mut present = BTreeSet::new();
    for table in TABLES {
        if columns(backend, table)
            .await?
            .iter()
            .any(|c| c == "migration")
        {
            present.insert(table);
        }
    }
    let mut names = BTreeSet::new();
    for table in &present {
        let sql = match *table {
            "migration_checkpoints" => "SELECT DISTINCT migration FROM migration_checkpoints",
            "migration_failures" => "SELECT DISTINCT migration FROM migration_failures",
            "migration_audit" => "SELECT DISTINCT migration FROM migration_audit",
            _ => "SELECT DISTINCT migration FROM migration_runs",
        };
        let found: Vec<(String,)> = fetch_all!(backend, (String,), sql, "listing migrations")?;
        names.extend(found.into_iter().map(|(name,)| name));
    }
    if let Some(only) = &query.migration {
        names.retain(|name| name == only);
    }
    let mut migrations = Vec::new();
    for name in names {
        migrations.push(migration(backend, &present, &name, query).await?);
    }
    Ok(StoreReport {
        location: format!("the bookkeeping tables of {url}"),
        found: !present.is_empty(),
        migrations,
    })
}

/// What the tables in `present` hold of migration `name`.
async fn migration(
    backend: &Database,
    present: &BTreeSet<&str>,
    name: &str,
    query: &ReportQuery,
) -> Result<MigrationReport, DbError> {
    let mut report = MigrationReport {
        migration: name.to_owned(),
        migrated: Some(0),
        checkpoints: Vec::new(),
        runs: 0,
        last_runs: Vec::new(),
        open_failures: Some(0),
        failures: Vec::new(),
    };
    if present.contains("migration_audit") {
        let sql = match backend {
            Database::Postgres(_) => {
                "SELECT CAST(COALESCE(SUM(json_array_length(CAST(record_keys AS json))), 0) AS BIGINT)
                   FROM migration_audit WHERE migration = ?"
            }
            _ => {
                "SELECT CAST(COALESCE(SUM(json_array_length(record_keys)), 0) AS BIGINT)
                   FROM migration_audit WHERE migration = ?"
            }
        };
        let rows: Vec<(i64,)> = fetch_all!(backend, (i64,), sql, "counting migration_audit", name)?;
        report.migrated = Some(rows.first().map_or(0, |(n,)| count(*n)));
    }
    if present.contains("migration_checkpoints") {
        let rows: Vec<(String, Option<String>, String, String)> = fetch_all!(
            backend,
            (String, Option<String>, String, String),
            "SELECT scope, low_water, done_above, updated_at FROM migration_checkpoints
              WHERE migration = ? ORDER BY scope",
            "reading migration_checkpoints",
            name
        )?;
        for (scope, low_water, done_above, updated_at) in rows {
            let low_water = low_water.map(|json| match serde_json::from_str::<Key>(&json) {
                Ok(key) => key.to_string(),
                Err(_) => json,
            });
            let done_above = serde_json::from_str::<Vec<Key>>(&done_above).map_or(0, |k| k.len());
            report.checkpoints.push(CheckpointRow {
                scope,
                low_water,
                done_above: done_above as u64,
                updated_at: Some(updated_at),
            });
        }
    }
    if present.contains("migration_runs") {
        let rows: Vec<(i64,)> = fetch_all!(
            backend,
            (i64,),
            "SELECT CAST(count(*) AS BIGINT) FROM migration_runs WHERE migration = ?",
            "counting migration_runs",
            name
        )?;
        report.runs = rows.first().map_or(0, |(n,)| count(*n));
        report.last_runs = runs(backend, name, query.runs).await?;
    }
    if present.contains("migration_failures") {
        let rows: Vec<(i64,)> = fetch_all!(
            backend,
            (i64,),
            "SELECT CAST(count(*) AS BIGINT) FROM migration_failures
              WHERE migration = ? AND resolved_at IS NULL",
            "counting migration_failures",
            name
        )?;
        report.open_failures = Some(rows.first().map_or(0, |(n,)| count(*n)));
        let rows: Vec<(String, String, i64, String)> = fetch_all!(
            backend,
            (String, String, i64, String),
            "SELECT record_key, error, CAST(attempts AS BIGINT), failed_at FROM migration_failures
              WHERE migration = ? AND resolved_at IS NULL ORDER BY failed_at, record_key LIMIT ?",
            "reading migration_failures",
            name,
            query.failures as i64
        )?;
        report.failures = rows
            .into_iter()
            .map(|(key, error, attempts, failed_at)| FailureRow {
                key,
                error,
                attempts: count(attempts),
                failed_at,
            })
            .collect();
    }
    Ok(report)
}

/// A row of `migration_runs` as read.
type RunTuple = (
    String,
    String,
    i64,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// The latest `limit` runs of `name`, newest first.
async fn runs(backend: &Database, name: &str, limit: usize) -> Result<Vec<RunRow>, DbError> {
    let rows: Vec<RunTuple> = fetch_all!(
        backend,
        RunTuple,
        "SELECT run_id, host, CAST(pid AS BIGINT), settings, started_at, updated_at, ended_at,
                ending, CAST(migrated AS BIGINT), CAST(previously_migrated AS BIGINT),
                CAST(gone AS BIGINT), CAST(failed AS BIGINT), abort_reason
           FROM migration_runs WHERE migration = ?
          ORDER BY started_at DESC, run_id DESC LIMIT ?",
        "reading migration_runs",
        name,
        limit as i64
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(
                run,
                host,
                pid,
                settings,
                started_at,
                updated_at,
                ended_at,
                ending,
                m,
                p,
                g,
                f,
                why,
            )| {
                let counts = match (m, p, g, f) {
                    (Some(m), Some(p), Some(g), Some(f)) => Some(RunCounts {
                        migrated: count(m),
                        previously_migrated: count(p),
                        gone: count(g),
                        failed: count(f),
                    }),
                    _ => None,
                };
                RunRow {
                    run,
                    host,
                    pid: u32::try_from(pid).unwrap_or(0),
                    settings: serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null),
                    started_at,
                    updated_at: Some(updated_at),
                    ended_at,
                    ending: ending.as_deref().and_then(parse_ending),
                    counts,
                    abort_reason: why,
                }
            },
        )
        .collect())
}

/// The keys of the open failures of `migration`, oldest first (none when there is no table).
pub(crate) async fn open_failure_keys(
    backend: &Database,
    migration: &str,
) -> Result<Vec<String>, DbError> {
    if !columns(backend, "migration_failures")
        .await?
        .iter()
        .any(|c| c == "migration")
    {
        return Ok(Vec::new());
    }
    let rows: Vec<(String,)> = fetch_all!(
        backend,
        (String,),
        "SELECT record_key FROM migration_failures
          WHERE migration = ? AND resolved_at IS NULL ORDER BY failed_at, record_key",
        "reading migration_failures",
        migration
    )?;
    Ok(rows.into_iter().map(|(key,)| key).collect())
}

/// One line of the runs file of the [`FileStore`](crate::FileStore).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RunLine {
    /// A run started.
    Begin(RunRecord),
    /// A run ended.
    End {
        /// Which run.
        id: crate::store::runs::RunId,
        /// When (RFC 3339).
        ended_at: String,
        /// How.
        ending: Ending,
        /// Its counts.
        counts: RunCounts,
        /// Why it was aborted, when it was.
        abort_reason: Option<String>,
    },
}

impl RunLine {
    /// The end line of `summary`'s run.
    pub(crate) fn end(id: &crate::store::runs::RunId, summary: &Summary) -> RunLine {
        RunLine::End {
            id: id.clone(),
            ended_at: chrono::Utc::now().to_rfc3339(),
            ending: summary.ending,
            counts: RunCounts {
                migrated: summary.migrated,
                previously_migrated: summary.previously_migrated,
                gone: summary.gone,
                failed: summary.failed,
            },
            abort_reason: summary.abort_reason.clone(),
        }
    }
}

/// One line of the failures file.
#[derive(serde::Deserialize)]
struct FailureLine {
    migration: String,
    #[serde(flatten)]
    failure: FailureRecord,
}

/// Reads a JSON-lines file; a missing file is empty, and a line cut by a kill is skipped.
fn json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, BoxError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("while reading {}: {e}", path.display()).into()),
    }
}

/// What the simulated backend's files hold: checkpoints in the paging state, failures (all of
/// them: the file keeps no resolution) and runs (no heartbeat: a run without an end line is
/// running while its process lives).
pub(crate) fn files(
    paging_state: &Path,
    failures_file: &Path,
    runs_file: &Path,
    query: &ReportQuery,
) -> Result<StoreReport, BoxError> {
    let found = [paging_state, failures_file, runs_file]
        .iter()
        .any(|p| p.exists());
    let mut by_name: BTreeMap<String, MigrationReport> = BTreeMap::new();
    let entry = |map: &mut BTreeMap<String, MigrationReport>, name: &str| {
        map.entry(name.to_owned())
            .or_insert_with(|| MigrationReport {
                migration: name.to_owned(),
                migrated: None,
                checkpoints: Vec::new(),
                runs: 0,
                last_runs: Vec::new(),
                open_failures: None,
                failures: Vec::new(),
            })
            .migration
            .clone()
    };
    let checkpoints: BTreeMap<String, Checkpoint> = crate::store::paging_state::all(paging_state)?;
    for (name_scope, checkpoint) in checkpoints {
        let (name, scope) = name_scope
            .split_once('/')
            .unwrap_or((name_scope.as_str(), ""));
        let name = entry(&mut by_name, name);
        by_name
            .get_mut(&name)
            .expect("entered")
            .checkpoints
            .push(CheckpointRow {
                scope: scope.to_owned(),
                low_water: checkpoint.low_water.map(|k| k.to_string()),
                done_above: checkpoint.done_above.len() as u64,
                updated_at: None,
            });
    }
    for line in json_lines::<FailureLine>(failures_file)? {
        let name = entry(&mut by_name, &line.migration);
        let report = by_name.get_mut(&name).expect("entered");
        if report.failures.len() < query.failures {
            report.failures.push(FailureRow {
                key: line.failure.key.to_string(),
                error: line.failure.error,
                attempts: u64::from(line.failure.attempts),
                failed_at: line.failure.at.to_rfc3339(),
            });
        }
    }
    let mut rows: BTreeMap<(String, String), RunRow> = BTreeMap::new();
    for line in json_lines::<RunLine>(runs_file)? {
        match line {
            RunLine::Begin(run) => {
                entry(&mut by_name, &run.id.migration);
                rows.insert(
                    (run.id.migration.clone(), run.id.run.clone()),
                    RunRow {
                        run: run.id.run,
                        host: run.host,
                        pid: run.pid,
                        settings: run.settings,
                        started_at: run.started_at.to_rfc3339(),
                        updated_at: None,
                        ended_at: None,
                        ending: None,
                        counts: None,
                        abort_reason: None,
                    },
                );
            }
            RunLine::End {
                id,
                ended_at,
                ending,
                counts,
                abort_reason,
            } => {
                if let Some(row) = rows.get_mut(&(id.migration, id.run)) {
                    row.ended_at = Some(ended_at);
                    row.ending = Some(ending);
                    row.counts = Some(counts);
                    row.abort_reason = abort_reason;
                }
            }
        }
    }
    for ((name, _), row) in rows {
        let report = by_name.get_mut(&name).expect("entered");
        report.runs += 1;
        report.last_runs.push(row);
    }
    let mut migrations: Vec<MigrationReport> = by_name
        .into_values()
        .filter(|m| {
            query
                .migration
                .as_ref()
                .is_none_or(|only| *only == m.migration)
        })
        .collect();
    for report in &mut migrations {
        report
            .last_runs
            .sort_by(|a, b| b.started_at.cmp(&a.started_at).then(b.run.cmp(&a.run)));
        report.last_runs.truncate(query.runs);
    }
    Ok(StoreReport {
        location: format!(
            "files: {} (checkpoints), {} (failures), {} (runs)",
            paging_state.display(),
            failures_file.display(),
            runs_file.display()
        ),
        found,
        migrations,
    })
}
