//! `db-migrate control pause|resume|stop|set KEY=VALUE [NAME]`: steers every run of a
//! migration from any shell or machine, through the progress store in the migrated database.
//!
//! The change is written to the migration's controls (`migration_controls`; a file for the
//! simulated backend), saying who made it (user@host and process id). Each running process of
//! the migration reads its controls at least twice a second and applies the change to its
//! run; a process started later reads them when it starts, so a pause outlives the processes.

use chrono::{DateTime, Utc};
use migrate_core::{
    Config, ControlChange, Migrator, ProgressStore, ReportQuery, RunRow, RunState, Setting,
    StoredControls,
};

use crate::cli::{ControlAction, RunArgs};
use crate::exit::{self, CliError};

/// The latest runs looked at for live ones: more processes of one migration at once than this
/// would be unusual, and a live run is among the latest anyway.
const RUNS_LOOKED_AT: usize = 50;

/// Applies `action` to the controls of the migration it names (or the one `config` runs),
/// prints what it did and which runs are live; exit 2 for a setting that is not one.
pub async fn run(config: &Config, args: &RunArgs, action: &ControlAction) -> Result<u8, CliError> {
    let change = change_of(action)?;
    let (name, _) = action.name_and_overrides();
    if args.dry_run {
        return Err(CliError::Usage(
            "control writes the migration's controls: --dry-run does not apply".into(),
        ));
    }
    let board = Box::new(migrate_core::EventBoard::discard());
    let system = crate::migrate::build(config, args, board).await?;
    let migrator = system.resolve::<dyn Migrator>();
    let name = name.unwrap_or_else(|| migrator.migration_name().to_owned());
    let store = system.resolve::<dyn ProgressStore>();
    // Live runs are looked for first: a stop may end them before a later look.
    let runs = live_runs(store.as_ref(), &name).await;
    let changed = store.change_controls(&name, change, &who()).await;
    crate::retry_failures::close(&system).await;
    let changed = changed
        .map_err(|e| CliError::Fatal(format!("while changing the controls of {name}: {e}")))?;
    #[allow(clippy::print_stdout)]
    {
        print!("{}", message(&name, change, &changed, &runs));
    }
    Ok(exit::SUCCESS)
}

/// The change `action` asks for; a setting that is not one is a usage error naming it.
fn change_of(action: &ControlAction) -> Result<ControlChange, CliError> {
    Ok(match action {
        ControlAction::Pause { .. } => ControlChange::Pause,
        ControlAction::Resume { .. } => ControlChange::Resume,
        ControlAction::Stop { .. } => ControlChange::Stop,
        ControlAction::Set { setting, .. } => ControlChange::Set(
            Setting::parse(setting)
                .map_err(|why| CliError::Usage(format!("control set {setting}: {why}")))?,
        ),
    })
}

/// Who makes the change, as the controls record it: `db-migrate control, alice@host-2 pid 4242`.
pub(crate) fn who() -> String {
    format!("db-migrate control, {}", crate::control_link::who())
}

/// Where the store keeps its bookkeeping and the runs of `name` that are live now, or why
/// that cannot be told.
async fn live_runs(store: &dyn ProgressStore, name: &str) -> Result<(String, Vec<RunRow>), String> {
    let query = ReportQuery {
        migration: Some(name.to_owned()),
        runs: RUNS_LOOKED_AT,
        failures: 0,
    };
    let report = store.report(&query).await.map_err(|e| e.to_string())?;
    let now = Utc::now();
    let live = report
        .migrations
        .into_iter()
        .flat_map(|m| m.last_runs)
        .filter(|run| is_live(run, now))
        .collect();
    Ok((report.location, live))
}

fn is_live(run: &RunRow, now: DateTime<Utc>) -> bool {
    let alive = if run.ending.is_none() {
        crate::status::process_alive(&run.host, run.pid)
    } else {
        None
    };
    run.state(now, alive) == RunState::Running
}

/// What was done, and who will see it.
fn message(
    name: &str,
    change: ControlChange,
    controls: &StoredControls,
    runs: &Result<(String, Vec<RunRow>), String>,
) -> String {
    let location = match runs {
        Ok((location, _)) => format!(", in {location}"),
        Err(_) => String::new(),
    };
    let mut out = format!(
        "{name}: {} (controls generation {}{location}).\n",
        change.describe(),
        controls.generation
    );
    match runs.as_ref().map(|(_, runs)| runs) {
        Err(why) => out.push_str(&format!(
            "Whether runs of {name} are live is unknown: {why}\n"
        )),
        Ok(runs) if runs.is_empty() => {
            out.push_str(&format!("No run of {name} is live. "));
            out.push_str(match change {
                ControlChange::Stop => "The stop applies to no run: later runs are not stopped.\n",
                ControlChange::Pause => "The next run starts paused until resumed.\n",
                _ => "The next run starts with it.\n",
            });
        }
        Ok(runs) => {
            let (runs_are, count) = match runs.len() {
                1 => ("run of", "is"),
                _ => ("runs of", "are"),
            };
            out.push_str(&format!(
                "{} {runs_are} {name} {count} live, picking it up within a second:\n",
                runs.len()
            ));
            for run in runs {
                out.push_str(&format!(
                    "  {} on {} pid {} (heartbeat {})\n",
                    run.run,
                    run.host,
                    run.pid,
                    run.updated_at.as_deref().unwrap_or("none kept")
                ));
            }
        }
    }
    if controls.paused && change != ControlChange::Pause {
        out.push_str(&format!(
            "{name} is paused: `db-migrate control resume` lets it go on.\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_setting_is_a_usage_error_naming_it() {
        let action = ControlAction::Set {
            setting: "speed=fast".into(),
            name: None,
            overrides: vec![],
        };
        let error = change_of(&action).unwrap_err();
        assert_eq!(error.exit_code(), exit::USAGE);
        assert!(error.to_string().contains("`speed`"), "{error}");
        let ok = ControlAction::Set {
            setting: "rate-limit=10".into(),
            name: None,
            overrides: vec![],
        };
        assert_eq!(
            change_of(&ok).unwrap(),
            ControlChange::Set(Setting::RateLimit(10))
        );
    }

    #[test]
    fn who_names_the_user_host_and_process() {
        let who = who();
        assert!(
            who.contains(&format!("pid {}", std::process::id())),
            "{who}"
        );
        assert!(
            who.contains(&format!("@{}", migrate_core::host_name())),
            "{who}"
        );
    }
}
