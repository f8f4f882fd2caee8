//! `db-migrate status [NAME]`: what the progress store holds of each migration (progress, the
//! last runs, open failures), as a table for people or a JSON array for scripts.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use migrate_core::{
    MigrationReport, ProgressStore, ReportQuery, RunRow, RunState, StoreReport, host_name,
    thousands,
};

use crate::exit::{self, CliError};

/// Runs, per migration, in the overview and with NAME.
const OVERVIEW_RUNS: usize = 1;
const DETAIL_RUNS: usize = 5;
/// Open failures listed, per migration, in the overview and with NAME.
const OVERVIEW_FAILURES: usize = 3;
const DETAIL_FAILURES: usize = 10;

/// Prints the status of the migrations (only `name` when given); exits 0 whenever the store
/// could be read, even empty.
pub async fn run(
    config: &migrate_core::Config,
    args: &crate::cli::RunArgs,
    name: Option<&str>,
    json: bool,
) -> Result<u8, CliError> {
    let system = crate::retry_failures::open(config, args).await?;
    let store = system.resolve::<dyn ProgressStore>();
    let query = ReportQuery {
        migration: name.map(str::to_owned),
        runs: if name.is_some() {
            DETAIL_RUNS
        } else {
            OVERVIEW_RUNS
        },
        failures: if name.is_some() {
            DETAIL_FAILURES
        } else {
            OVERVIEW_FAILURES
        },
    };
    let report = store.report(&query).await;
    let ranges = match (
        &report,
        system.resolve::<dyn migrate_core::Connection>().backend(),
    ) {
        (Ok(report), migrate_core::Backend::Postgres(pool)) => {
            let names: Vec<String> = report
                .migrations
                .iter()
                .map(|m| m.migration.clone())
                .collect();
            crate::status_ranges::read(pool, &names).await
        }
        _ => Vec::new(),
    };
    crate::retry_failures::close(&system).await;
    let report = report.map_err(|e| CliError::Fatal(format!("while reading the status: {e}")))?;
    let simulated = config.connection.url.starts_with("simulated:");
    let now = Utc::now();
    let text = if json {
        let text = to_json(&report, now, process_alive);
        crate::status_ranges::add_json(text, &ranges)
    } else {
        let mut text = render(&report, name, simulated, now, process_alive);
        crate::status_ranges::render(&mut text, &ranges, name.is_some());
        text
    };
    #[allow(clippy::print_stdout)]
    {
        print!("{text}");
    }
    Ok(exit::SUCCESS)
}

/// Whether process `pid` still runs on `host`, when this process can tell: on the same
/// machine with a `/proc` file system. A zombie (killed, not yet reaped) is not running.
pub(crate) fn process_alive(host: &str, pid: u32) -> Option<bool> {
    let proc = std::path::Path::new("/proc");
    if host != host_name() || !proc.join("self").exists() {
        return None;
    }
    let stat = std::fs::read_to_string(proc.join(pid.to_string()).join("stat")).ok();
    Some(stat.is_some_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold any text.
        let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
        !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
    }))
}

/// Where a run stands.
fn state(run: &RunRow, now: DateTime<Utc>, alive: fn(&str, u32) -> Option<bool>) -> RunState {
    let alive = if run.ending.is_none() {
        alive(&run.host, run.pid)
    } else {
        None
    };
    run.state(now, alive)
}

/// The report as a JSON array, one object per migration: the report's fields, with each run's
/// `state` and `last_run` and `checkpoint_pending` added.
fn to_json(
    report: &StoreReport,
    now: DateTime<Utc>,
    alive: fn(&str, u32) -> Option<bool>,
) -> String {
    let migrations: Vec<serde_json::Value> = report
        .migrations
        .iter()
        .map(|m| {
            let mut value = serde_json::to_value(m).expect("a report serializes");
            let runs: Vec<serde_json::Value> = m
                .last_runs
                .iter()
                .map(|run| {
                    let mut v = serde_json::to_value(run).expect("a run serializes");
                    v["state"] = state_name(state(run, now, alive)).into();
                    v
                })
                .collect();
            value["last_run"] = runs.first().cloned().unwrap_or(serde_json::Value::Null);
            value["last_runs"] = runs.into();
            value["checkpoint_pending"] = (!m.checkpoints.is_empty()).into();
            value
        })
        .collect();
    let mut text = serde_json::to_string(&migrations).expect("JSON values serialize");
    text.push('\n');
    text
}

/// A run's state as JSON says it: `running`, `completed`, `interrupted`, `aborted`,
/// `vanished`.
fn state_name(state: RunState) -> &'static str {
    match state {
        RunState::Running => "running",
        RunState::Ended(migrate_core::Ending::Completed) => "completed",
        RunState::Ended(migrate_core::Ending::Interrupted) => "interrupted",
        RunState::Ended(migrate_core::Ending::Aborted) => "aborted",
        RunState::Vanished => "vanished",
    }
}

/// An RFC 3339 time as `2026-05-01 12:00:03 UTC`, or as stored when it does not parse.
fn when(text: &str) -> String {
    DateTime::parse_from_rfc3339(text).map_or_else(
        |_| text.to_owned(),
        |t| t.to_utc().format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// The report for people.
fn render(
    report: &StoreReport,
    name: Option<&str>,
    simulated: bool,
    now: DateTime<Utc>,
    alive: fn(&str, u32) -> Option<bool>,
) -> String {
    let mut out = String::new();
    if simulated {
        let _ = writeln!(
            out,
            "The simulated backend has no database: its progress lives in files."
        );
    }
    if !report.found {
        let _ = writeln!(
            out,
            "No migration has left anything here yet: no bookkeeping in {}.",
            report.location
        );
        return out;
    }
    let _ = writeln!(out, "Migrations in {}", report.location);
    match name {
        Some(name) => match report.migrations.first() {
            Some(m) => detail(&mut out, m, now, alive),
            None => {
                let _ = writeln!(out, "\nNothing is recorded of a migration named {name}.");
            }
        },
        None if report.migrations.is_empty() => {
            let _ = writeln!(out, "\nNo migration is recorded.");
        }
        None => overview(&mut out, &report.migrations, now, alive),
    }
    out
}

/// The counts of a run that ended: `10 migrated, 2 previously migrated, 0 gone, 3 failed`.
fn counts(run: &RunRow) -> String {
    run.counts.map_or_else(String::new, |c| {
        format!(
            "{} migrated, {} previously migrated, {} gone, {} failed",
            thousands(c.migrated),
            thousands(c.previously_migrated),
            thousands(c.gone),
            thousands(c.failed)
        )
    })
}

fn checkpoint_text(m: &MigrationReport) -> String {
    match m.checkpoints.as_slice() {
        [] => "none".to_owned(),
        [only] => format!(
            "pending at {}",
            only.low_water.as_deref().unwrap_or("the start")
        ),
        many => format!("{} pending", many.len()),
    }
}

fn open_failures_text(m: &MigrationReport) -> String {
    match m.open_failures {
        None if m.failures.is_empty() => "unknown".to_owned(),
        None => format!("{}+ recorded (no resolution kept)", m.failures.len()),
        Some(0) => "0".to_owned(),
        Some(n) => {
            let keys: Vec<&str> = m.failures.iter().map(|f| f.key.as_str()).collect();
            let more = if (n as usize) > keys.len() {
                ", ..."
            } else {
                ""
            };
            format!("{} ({}{more})", thousands(n), keys.join(", "))
        }
    }
}

/// One line per migration.
fn overview(
    out: &mut String,
    migrations: &[MigrationReport],
    now: DateTime<Utc>,
    alive: fn(&str, u32) -> Option<bool>,
) {
    let header = [
        "MIGRATION",
        "MIGRATED",
        "CHECKPOINT",
        "LAST RUN",
        "ENDING",
        "COUNTS",
        "OPEN FAILURES",
    ];
    let rows: Vec<[String; 7]> = migrations
        .iter()
        .map(|m| {
            let last = m.last_runs.first();
            [
                m.migration.clone(),
                m.migrated.map_or("-".to_owned(), thousands),
                checkpoint_text(m),
                last.map_or("-".to_owned(), |r| when(&r.started_at)),
                last.map_or("-".to_owned(), |r| state(r, now, alive).to_string()),
                last.map_or(String::new(), counts),
                open_failures_text(m),
            ]
        })
        .collect();
    out.push('\n');
    table(out, &header, &rows, "");
}

/// A table with columns as wide as their widest cell.
fn table<const N: usize>(out: &mut String, header: &[&str; N], rows: &[[String; N]], indent: &str) {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut text = indent.to_owned();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// One migration in detail.
fn detail(
    out: &mut String,
    m: &MigrationReport,
    now: DateTime<Utc>,
    alive: fn(&str, u32) -> Option<bool>,
) {
    let _ = writeln!(out, "\n{}", m.migration);
    if let Some(migrated) = m.migrated {
        let _ = writeln!(
            out,
            "  Migrated so far: {} records (from the audit)",
            thousands(migrated)
        );
    }
    if m.checkpoints.is_empty() {
        let _ = writeln!(out, "  Checkpoint: none pending (no unfinished scan)");
    }
    for c in &m.checkpoints {
        let _ = writeln!(
            out,
            "  Checkpoint pending for {}: low water {}, {} done above it{}",
            c.scope,
            c.low_water.as_deref().unwrap_or("(none yet)"),
            thousands(c.done_above),
            c.updated_at
                .as_deref()
                .map_or(String::new(), |at| format!(" (saved {})", when(at)))
        );
    }
    let _ = writeln!(
        out,
        "  Runs: {} recorded{}",
        thousands(m.runs),
        if m.last_runs.is_empty() {
            String::new()
        } else {
            format!(", the last {}:", m.last_runs.len())
        }
    );
    if !m.last_runs.is_empty() {
        let header = [
            "STARTED",
            "ENDED",
            "HOW IT ENDED",
            "COUNTS",
            "HOST",
            "PID",
            "RUN",
        ];
        let rows: Vec<[String; 7]> = m
            .last_runs
            .iter()
            .map(|r| {
                let mut ending = state(r, now, alive).to_string();
                if let Some(why) = &r.abort_reason {
                    let _ = write!(ending, ": {why}");
                }
                [
                    when(&r.started_at),
                    r.ended_at.as_deref().map_or("-".to_owned(), when),
                    ending,
                    counts(r),
                    r.host.clone(),
                    r.pid.to_string(),
                    r.run.clone(),
                ]
            })
            .collect();
        table(out, &header, &rows, "    ");
    }
    match m.open_failures {
        Some(n) => {
            let _ = writeln!(
                out,
                "  Open failures: {}{}",
                thousands(n),
                if m.failures.is_empty() {
                    String::new()
                } else {
                    format!(", the first {}:", m.failures.len())
                }
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  Failures recorded (the file keeps no resolution), the first {}:",
                m.failures.len()
            );
        }
    }
    if !m.failures.is_empty() {
        let header = ["KEY", "ATTEMPTS", "FAILED AT", "ERROR"];
        let rows: Vec<[String; 4]> = m
            .failures
            .iter()
            .map(|f| {
                [
                    f.key.clone(),
                    f.attempts.to_string(),
                    when(&f.failed_at),
                    f.error.clone(),
                ]
            })
            .collect();
        table(out, &header, &rows, "    ");
    }
}

#[cfg(test)]
mod tests {
    use migrate_core::{CheckpointRow, Ending, FailureRow, RunCounts};

    use super::*;

    fn dead(_: &str, _: u32) -> Option<bool> {
        Some(false)
    }

    fn report() -> StoreReport {
        let run = |ending: Option<Ending>| RunRow {
            run: "20260501T120000.000Z-42-beef".into(),
            host: "box".into(),
            pid: 42,
            settings: serde_json::json!({"processes": 2}),
            started_at: "2026-05-01T12:00:00+00:00".into(),
            updated_at: Some("2026-05-01T12:00:05+00:00".into()),
            ended_at: ending.map(|_| "2026-05-01T12:00:05+00:00".into()),
            ending,
            counts: ending.map(|_| RunCounts {
                migrated: 1200,
                previously_migrated: 3,
                gone: 0,
                failed: 4,
            }),
            abort_reason: None,
        };
        StoreReport {
            location: "the bookkeeping tables of sqlite://x.db".into(),
            found: true,
            migrations: vec![
                MigrationReport {
                    migration: "customer-migration".into(),
                    migrated: Some(1200),
                    checkpoints: vec![],
                    runs: 2,
                    last_runs: vec![run(Some(Ending::Completed)), run(None)],
                    open_failures: Some(4),
                    failures: vec![
                        FailureRow {
                            key: "17".into(),
                            error: "full_name has no comma".into(),
                            attempts: 1,
                            failed_at: "2026-05-01T12:00:01+00:00".into(),
                        };
                        3
                    ],
                },
                MigrationReport {
                    migration: "killed".into(),
                    migrated: Some(0),
                    checkpoints: vec![CheckpointRow {
                        scope: "all".into(),
                        low_water: Some("99".into()),
                        done_above: 2,
                        updated_at: None,
                    }],
                    runs: 1,
                    last_runs: vec![run(None)],
                    open_failures: Some(0),
                    failures: vec![],
                },
            ],
        }
    }

    #[test]
    fn the_overview_is_a_table_of_one_line_per_migration() {
        let now = Utc::now();
        let text = render(&report(), None, false, now, dead);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Migrations in the bookkeeping tables of sqlite://x.db"
        );
        assert!(
            lines[2].starts_with("MIGRATION           MIGRATED  CHECKPOINT"),
            "{text}"
        );
        assert!(lines[3].contains("1,200"), "{text}");
        assert!(lines[3].contains("completed"), "{text}");
        assert!(
            lines[3].contains("1,200 migrated, 3 previously migrated, 0 gone, 4 failed"),
            "{text}"
        );
        assert!(lines[3].ends_with("4 (17, 17, 17, ...)"), "{text}");
        assert!(lines[4].contains("pending at 99"), "{text}");
        assert!(
            lines[4].contains("ended without a word (killed?)"),
            "{text}"
        );
    }

    #[test]
    fn json_adds_each_runs_state_and_the_last_run() {
        let value: serde_json::Value =
            serde_json::from_str(&to_json(&report(), Utc::now(), dead)).unwrap();
        assert_eq!(value[0]["last_run"]["state"], "completed");
        assert_eq!(value[0]["last_runs"][1]["state"], "vanished");
        assert_eq!(value[0]["open_failures"], 4);
        assert_eq!(value[1]["checkpoint_pending"], true);
        assert_eq!(value[1]["last_run"]["state"], "vanished");
    }

    #[test]
    fn detail_lists_runs_and_failures_with_their_errors() {
        let mut one = report();
        one.migrations.truncate(1);
        let text = render(&one, Some("customer-migration"), false, Utc::now(), dead);
        assert!(text.contains("Runs: 2 recorded, the last 2:"), "{text}");
        assert!(text.contains("Open failures: 4, the first 3:"), "{text}");
        assert!(text.contains("full_name has no comma"), "{text}");
        assert!(text.contains("Checkpoint: none pending"), "{text}");
    }

    #[test]
    fn an_empty_store_says_so() {
        let empty = StoreReport {
            location: "the bookkeeping tables of sqlite://x.db".into(),
            found: false,
            migrations: vec![],
        };
        let text = render(&empty, None, false, Utc::now(), dead);
        assert!(
            text.contains("No migration has left anything here yet"),
            "{text}"
        );
        assert_eq!(to_json(&empty, Utc::now(), dead), "[]\n");
    }
}
