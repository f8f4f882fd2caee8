//! `db-migrate retry-failures [NAME]`: a run over the keys of the open failures of a migration.
//!
//! The keys are read from the progress store before the run and fed to it as its input, as
//! `-f` would. The batch journal marks the failures of the records that now succeed resolved
//! (in each batch's transaction); a record that fails again keeps its row, with its attempts
//! added. Flags, output and exit codes are those of a run.

use std::sync::Arc;

use migrate_core::{
    Config, EventBoard, Key, MigrationModule, Migrator, ProgressStore, StatusBoard, System,
};

use crate::cli::{OutputArgs, RunArgs};
use crate::exit::{self, CliError};

/// Retries the open failures of migration `name`; returns the run's exit code (0 when there
/// is nothing to retry).
pub async fn run(
    config: &Config,
    name: Option<&str>,
    args: &RunArgs,
    output: &OutputArgs,
) -> Result<u8, CliError> {
    if args.file.is_some() {
        return Err(CliError::Usage(
            "retry-failures reads its keys from the open failures: --file does not apply".into(),
        ));
    }
    let (name, keys) = open_failure_keys(config, args, name).await?;
    if keys.is_empty() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("No open failures of {name}: nothing to retry.");
        }
        if output.json {
            #[allow(clippy::print_stdout)]
            {
                println!("null");
            }
        }
        return Ok(exit::SUCCESS);
    }
    crate::migrate::run_keys(config, args, output, Some(keys)).await
}

/// The name of the migration (`name`, or the one the configuration runs) and the keys of its
/// open failures, read through the progress store of a system built on a read-only
/// connection, as the migration's key columns say.
async fn open_failure_keys(
    config: &Config,
    args: &RunArgs,
    name: Option<&str>,
) -> Result<(String, Arc<[Key]>), CliError> {
    let system = open(config, args).await?;
    let migrator = system.resolve::<dyn Migrator>();
    let name = name.unwrap_or(migrator.migration_name()).to_owned();
    let name = name.as_str();
    if migrator.migration_name() != name {
        return Err(CliError::Usage(format!(
            "retry-failures {name}: this configuration runs the migration {}",
            migrator.migration_name()
        )));
    }
    let store = system.resolve::<dyn ProgressStore>();
    let lines = store
        .open_failure_keys(name)
        .await
        .map_err(|e| CliError::Fatal(format!("while reading the open failures of {name}: {e}")))?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "retry-failures needs a store that knows which failures are open; {} keeps no \
                 resolution (give the keys to a run with -f)",
                store.failures_location()
            ))
        })?;
    let keys = lines
        .iter()
        .map(|line| {
            Key::parse(line, migrator.key_columns()).map_err(|why| {
                CliError::Fatal(format!(
                    "migration_failures of {name}: the key {line:?} does not fit the \
                     migration's key columns: {why}"
                ))
            })
        })
        .collect::<Result<Vec<Key>, CliError>>()?;
    close(&system).await;
    Ok((name.to_owned(), keys.into()))
}

/// Closes the system's pool: the run opens its own.
pub(crate) async fn close(system: &System<MigrationModule>) {
    system
        .resolve::<dyn migrate_core::Connection>()
        .backend()
        .close()
        .await;
}

/// The migration system (the one `args` name with `--migration`, the customer migration
/// otherwise) on a read-only connection, to read the store.
pub(crate) async fn open(
    config: &Config,
    args: &RunArgs,
) -> Result<System<MigrationModule>, CliError> {
    let read_only = RunArgs {
        dry_run: true,
        ..args.clone()
    };
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    crate::migrate::build(config, &read_only, board).await
}
