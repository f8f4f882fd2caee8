//! The `db-migrate` command: clap arguments, layered configuration with figment, the crossterm
//! status board and Graphviz output, around the `migrate-core` engine.
//!
//! The binary's `main` only parses the command line, calls [`run`] and maps the result to an
//! exit code (see [`exit`]).

pub mod board;
mod cli;
mod control;
mod control_link;
mod distributed;
pub mod exit;
mod ids_file;
pub mod logging;
mod metrics_server;
mod migrate;
mod retry_failures;
mod seed;
pub mod settings;
mod signals;
mod status;
mod status_ranges;
mod visualize;

pub use cli::{
    Cli, Command, ConfigArgs, ControlAction, Environment, LogFormat, LogLevel, OutputArgs, RunArgs,
    VisualFormat,
};
pub use exit::CliError;

/// Runs the command line: visualize, show the configuration, seed, or migrate. Returns the exit
/// code of a run that happened (see [`exit`]); `Err` when nothing could run.
pub fn run(mut cli: Cli) -> Result<u8, CliError> {
    cli.command = cli.command.map(Command::with_overrides_apart);
    if let Some(format) = cli.output.visualize {
        // As in the seed, the graph is drawn before configuration is read or a database opened.
        return visualize::run(format);
    }
    let mut config_args = cli.config.clone();
    match &cli.command {
        Some(
            Command::Seed { overrides, .. }
            | Command::Demo { overrides, .. }
            | Command::Status { overrides, .. }
            | Command::RetryFailures { overrides, .. },
        ) => {
            config_args.overrides.extend(overrides.iter().cloned());
        }
        Some(Command::Control { action }) => {
            config_args.overrides.extend(action.name_and_overrides().1);
        }
        None => {}
    }
    let settings = settings::load(&config_args)?;
    if cli.config.show_config {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", settings.render());
        }
        return Ok(exit::SUCCESS);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Fatal(format!("while starting the runtime: {e}")))?;
    runtime.block_on(async {
        match cli.command {
            None => migrate::run(settings.config(), &cli.run, &cli.output).await,
            Some(Command::Seed {
                customers,
                force,
                confirm_wipe,
                ..
            }) => {
                let wipe = seed::Wipe::asked(force, confirm_wipe, cli.config.env);
                seed::run(settings.config(), customers, wipe).await
            }
            Some(Command::Demo {
                customers,
                fresh,
                confirm_wipe,
                ..
            }) => {
                let config = seed::demo_config(settings.config());
                let wipe = seed::Wipe::asked(fresh, confirm_wipe, cli.config.env);
                seed::ensure_demo_database(&config, customers, wipe).await?;
                let code = migrate::run(&config, &cli.run, &cli.output).await?;
                // The demo's malformed customers are planted to show the failure path: a demo
                // that completes has done what it should.
                Ok(if code == exit::FAILURES {
                    exit::SUCCESS
                } else {
                    code
                })
            }
            Some(Command::Status { name, .. }) => {
                status::run(
                    settings.config(),
                    &cli.run,
                    name.as_deref(),
                    cli.output.json,
                )
                .await
            }
            Some(Command::RetryFailures { name, .. }) => {
                retry_failures::run(settings.config(), name.as_deref(), &cli.run, &cli.output).await
            }
            Some(Command::Control { action }) => {
                control::run(settings.config(), &cli.run, &action).await
            }
        }
    })
}
