//! The migration run: build and start the system, run the overseer, stop, report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use migrate_core::{
    Backend, BatchTimeouts, Config, ConnectionError, Ending, Key, MigrationModule, Migrator,
    PreflightError, RunOptions, SqlMigration, StatusBoard, Summary, System, builder_for,
    migration_builder,
};
use tokio_util::sync::CancellationToken;

use crate::board::{self, Output};
use crate::cli::{OutputArgs, RunArgs};
use crate::control_link::LiveControl;
use crate::distributed::Distributed;
use crate::exit::{self, CliError};
use crate::ids_file;

/// How long the components get to stop after the run (the jobs' grace period is over by then):
/// closing files and the pool takes milliseconds unless a database call is still waiting.
const STOP_TIME: Duration = Duration::from_secs(2);

/// Runs one migration with `config`; returns the exit code for its summary.
pub async fn run(config: &Config, args: &RunArgs, output: &OutputArgs) -> Result<u8, CliError> {
    run_keys(config, args, output, None).await
}

/// Runs one migration with `config` over `keys` when given (instead of `-f` or a scan);
/// returns the exit code for its summary.
pub async fn run_keys(
    config: &Config,
    args: &RunArgs,
    output: &OutputArgs,
    keys: Option<Arc<[Key]>>,
) -> Result<u8, CliError> {
    let mut distributed = Distributed::from_args(config, args)?;
    if distributed.is_some() && keys.is_some() {
        return Err(CliError::Usage(
            "retry-failures runs in one process: drop --distributed and --shard".to_owned(),
        ));
    }
    let board_output = board::resolve(config.status_board.mode, output.log_format);
    // Both before anything runs: a log or an address that cannot be used is a usage error.
    crate::logging::init(board_output, output, &config.customer_migrator.log_file)?;
    let metrics = metrics_server(config, output)?;
    let live = LiveControl::new();
    let board_control = live.for_board(config.customer_migration.rate_limit);
    let (terminal_board, board_task) =
        board::start(&config.status_board, board_output, Some(board_control));
    let mut board: Box<dyn StatusBoard> = Box::new(terminal_board);
    if let Some(distributed) = &mut distributed {
        board = distributed.wrap_board(board);
    }
    let result = run_system(config, args, board, keys, live, distributed.as_ref()).await;
    if let Some(metrics) = &metrics {
        metrics.run_over();
    }
    board_task.finish().await;
    let (summary, stop_warning) = result?;
    report(&summary, board_output, output.json, stop_warning.as_deref());
    if let Some(metrics) = metrics {
        let linger = Duration::from_millis(config.status_board.metrics_linger_millis);
        metrics.finish(linger).await;
    }
    Ok(exit::for_summary(&summary))
}

/// The `/metrics` server, when `--metrics-addr` or `status-board.metrics-addr` asks for one.
fn metrics_server(
    config: &Config,
    output: &OutputArgs,
) -> Result<Option<crate::metrics_server::MetricsServer>, CliError> {
    let addr = match (&output.metrics_addr, &config.status_board.metrics_addr) {
        (Some(addr), _) => (addr, "--metrics-addr"),
        (None, Some(addr)) => (addr, "status-board.metrics-addr"),
        (None, None) => return Ok(None),
    };
    crate::metrics_server::start(addr.0, addr.1).map(Some)
}

/// Builds, starts, runs and stops the system. Returns the summary (with a failed stop folded
/// into it: a stop that fails may have lost audit lines) and a warning when the stop had to be
/// cut short.
async fn run_system(
    config: &Config,
    args: &RunArgs,
    board: Box<dyn StatusBoard>,
    keys: Option<Arc<[Key]>>,
    live: LiveControl,
    distributed: Option<&Distributed>,
) -> Result<(Summary, Option<String>), CliError> {
    let system = build(config, args, board).await?;
    // Keys are read as the migration's key columns say, before anything starts.
    let input = match (keys, &args.file) {
        (Some(keys), _) => Some(keys),
        (None, Some(path)) => {
            let migrator = system.resolve::<dyn Migrator>();
            Some(Arc::<[Key]>::from(ids_file::read(
                path,
                migrator.key_columns(),
            )?))
        }
        (None, None) => None,
    };
    let options = RunOptions {
        dry_run: args.dry_run,
        reset: args.reset,
        input,
        control: live.control(),
        ..RunOptions::default()
    };
    system.start().await.map_err(|e| usage_or_fatal(&e))?;
    let shutdown = CancellationToken::new();
    let grace_period = config.customer_migration.grace_period();
    // Not aborted when the run ends: a second Ctrl-C or SIGTERM must exit at once at any
    // moment until the process exits, the stop below included.
    let run_over = Arc::new(AtomicBool::new(false));
    let _signals = crate::signals::listen(
        shutdown.clone(),
        system.resolve::<dyn StatusBoard>(),
        grace_period,
        Arc::clone(&run_over),
    )
    .map_err(|e| CliError::Fatal(format!("while registering signal handlers: {e}")))?;
    let link = {
        let (shutdown, board) = (shutdown.clone(), system.resolve::<dyn StatusBoard>());
        let stop = move || crate::signals::stop_gracefully(&shutdown, board.as_ref(), grace_period);
        live.link(&system, args.dry_run, stop).await
    };
    let result = match distributed {
        Some(distributed) => {
            distributed
                .run(&system, config, args, options, shutdown)
                .await
        }
        None => migrate_core::overseer(&system).run(options, shutdown).await,
    };
    link.finish().await;
    run_over.store(true, Ordering::SeqCst);
    let stop_time = STOP_TIME;
    let (stopped, stop_warning) = match tokio::time::timeout(stop_time, system.stop()).await {
        Ok(stopped) => (stopped, None),
        // The progress is saved by now: what still runs is a database call of a job stopped
        // after the grace period, which the database rolls back when the process exits.
        Err(_) => (
            Ok(()),
            Some(format!(
                "the components had not stopped {} s after the run (a database call still \
                 waiting); exiting without them",
                stop_time.as_secs()
            )),
        ),
    };
    let mut summary = result.map_err(|e| usage_or_fatal(&e))?;
    if let Err(error) = stopped {
        summary.ending = Ending::Aborted;
        // The lifecycle's error already says "while stopping COMPONENT".
        let reason = exit::chain(&error);
        summary.abort_reason = Some(match summary.abort_reason.take() {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        });
    }
    Ok((summary, stop_warning))
}

/// Opens the database (read-only for a dry run) and builds the system with the terminal board,
/// around the migration declared in `migration` when given, the customer migration otherwise.
pub(crate) async fn build(
    config: &Config,
    args: &RunArgs,
    board: Box<dyn StatusBoard>,
) -> Result<System<MigrationModule>, CliError> {
    let backend = if args.dry_run {
        Backend::open_read_only(&config.connection).await
    } else {
        Backend::open(&config.connection, false).await
    }
    .map_err(|e| match e {
        // Nothing ran: the configuration names a database that is not there.
        missing @ ConnectionError::MissingDatabase { .. } => CliError::Usage(missing.to_string()),
        other => CliError::fatal(&other),
    })?;
    let builder = match &args.migration {
        None => migration_builder(config, backend),
        Some(file) => {
            // A file that cannot be used is a usage error naming the file and the key: nothing
            // has run.
            let writer = Arc::new(tokio::sync::Mutex::new(()));
            let migration = SqlMigration::from_file(file, &backend)
                .map_err(|e| CliError::Usage(format!("--migration {}", exit::chain(&e))))?
                .with_timeouts(BatchTimeouts::from_config(&config.customer_migration))
                .sharing_writer(Arc::clone(&writer));
            builder_for(config, backend, writer, Arc::new(migration))
        }
    };
    builder
        .with_override::<dyn StatusBoard>(board, board::IMPLEMENTATION)
        .build()
        .map_err(|e| CliError::fatal(&e))
}

/// A failed start or run is a usage error when a check before the run refused the
/// configuration or the database (nothing ran), fatal otherwise. A refusal names what it
/// refused (the file, the table, the setting): it is said alone, without the component that
/// checked.
fn usage_or_fatal(error: &(dyn std::error::Error + 'static)) -> CliError {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<PreflightError>().is_some() {
            return CliError::Usage(exit::chain(e));
        }
        cause = e.source();
    }
    CliError::fatal(error)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
fn report(summary: &Summary, output: Output, json: bool, stop_warning: Option<&str>) {
    if json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("a summary serializes")
        );
    }
    if output == Output::Off {
        eprintln!("{summary}");
    } else if summary.ending == Ending::Aborted
        && let Some(reason) = &summary.abort_reason
        && reason.contains("while stopping")
    {
        // The board showed the summary before the stop failed.
        eprintln!("db-migrate: error: {reason}");
    }
    if let Some(warning) = stop_warning {
        eprintln!("db-migrate: warning: {warning}");
    }
    if let Some(place) = &summary.failures_recorded_in {
        eprintln!("Failures were recorded in {place}");
    }
    if summary.deferred > 0 {
        eprintln!(
            "Other sessions held {} {} through every retry: run again to migrate them",
            migrate_core::thousands(summary.deferred),
            summary.noun.count(summary.deferred)
        );
    }
}
