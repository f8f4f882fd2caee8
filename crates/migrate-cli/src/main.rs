//! `db-migrate`: parse the command line, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use migrate_cli::{Cli, exit};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return ExitCode::from(exit::report_arguments(&error)),
    };
    match migrate_cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            exit::report(&error);
            ExitCode::from(error.exit_code())
        }
    }
}
