//! The migration run: build and start the system, run the overseer, stop, report.

use std::sync::Arc;

use migrate_core::{
    BuildError, Config, ConnectionError, RunOptions, StatusBoard, Summary, build_migration_system,
};
use tokio_util::sync::CancellationToken;

use crate::board::{self, Output};
use crate::cli::{OutputArgs, RunArgs};
use crate::exit::{self, CliError};
use crate::ids_file;

/// Runs one migration with `config`; returns the exit code for its summary.
pub async fn run(config: &Config, args: &RunArgs, output: &OutputArgs) -> Result<u8, CliError> {
    let input = match &args.file {
        Some(path) => Some(Arc::<[i64]>::from(ids_file::read(path)?)),
        None => None,
    };
    let options = RunOptions {
        dry_run: args.dry_run,
        reset: args.reset,
        input,
        ..RunOptions::default()
    };
    let board_output = board::resolve(config.status_board.mode, output.log_format);
    let (terminal_board, board_task) = board::start(&config.status_board, board_output);
    let board: Box<dyn StatusBoard> = Box::new(terminal_board);
    let result = run_system(config, options, board).await;
    board_task.finish().await;
    let summary = result?;
    report(&summary, board_output, output.json);
    Ok(exit::for_summary(&summary))
}

async fn run_system(
    config: &Config,
    options: RunOptions,
    board: Box<dyn StatusBoard>,
) -> Result<Summary, CliError> {
    let system = build_migration_system(config, Some((board, board::IMPLEMENTATION)))
        .await
        .map_err(|e| match e {
            // Nothing ran: the configuration names a database that is not there.
            BuildError::Connection(missing @ ConnectionError::MissingDatabase { .. }) => {
                CliError::Usage(missing.to_string())
            }
            other => CliError::fatal(&other),
        })?;
    system.start().await.map_err(|e| CliError::fatal(&e))?;
    let shutdown = CancellationToken::new();
    let signals = crate::signals::listen(
        shutdown.clone(),
        system.resolve::<dyn StatusBoard>(),
        config.customer_migration.grace_period(),
    )
    .map_err(|e| CliError::Fatal(format!("while registering signal handlers: {e}")))?;
    let result = migrate_core::overseer(&system).run(options, shutdown).await;
    signals.abort();
    let stopped = system.stop().await;
    let summary = result.map_err(|e| CliError::fatal(&e))?;
    stopped.map_err(|e| CliError::fatal(&e))?;
    Ok(summary)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn report(summary: &Summary, output: Output, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("a summary serializes")
        );
    }
    if output == Output::Off {
        eprintln!("{summary}");
    }
    if let Some(place) = &summary.failures_recorded_in {
        eprintln!("Failures were recorded in {place}");
    }
}
