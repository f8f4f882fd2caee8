//! Exit codes, and the error that ends the program before or outside a run.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | the run completed and no record failed |
//! | 1 | the run completed and some records failed (each one recorded), or failures recorded by an earlier run are still open |
//! | 2 | usage or configuration error: nothing ran |
//! | 3 | the run was aborted: failure limit exceeded, or a fatal error |
//! | 4 | the run completed, but left records locked by other sessions for the next run: run it again |
//! | 130 | interrupted (Ctrl-C, SIGTERM); progress was saved |

use migrate_core::{Ending, Summary};

/// Completed, no failure.
pub const SUCCESS: u8 = 0;
/// Completed with recorded failures.
pub const FAILURES: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// Aborted.
pub const ABORTED: u8 = 3;
/// Completed, with records left for the next run because other sessions held them.
pub const DEFERRED: u8 = 4;
/// Interrupted.
pub const INTERRUPTED: u8 = 130;

/// The exit code for a run's summary. Records left for the next run come before failures:
/// the next thing to do is to run again, and that run reports the failures that stand.
pub fn for_summary(summary: &Summary) -> u8 {
    match summary.ending {
        Ending::Completed if summary.deferred > 0 => DEFERRED,
        Ending::Completed if summary.failed == 0 && summary.earlier_open_failures() == 0 => SUCCESS,
        Ending::Completed => FAILURES,
        Ending::Interrupted => INTERRUPTED,
        Ending::Aborted => ABORTED,
    }
}

/// Why `db-migrate` stopped without a run summary.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The configuration is wrong; nothing ran.
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
    /// The command line asks for something that cannot be done; nothing ran.
    #[error("{0}")]
    Usage(String),
    /// The system could not be built or started, or failed outside the run.
    #[error("{0}")]
    Fatal(String),
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Config(_) | CliError::Usage(_) => USAGE,
            CliError::Fatal(_) => ABORTED,
        }
    }

    /// A fatal error from anything displayable, with its cause chain.
    pub fn fatal(error: &(dyn std::error::Error + 'static)) -> CliError {
        CliError::Fatal(chain(error))
    }
}

/// `error: cause: cause's cause`, skipping causes already spelled in the message.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Prints clap's complaint about the command line (or the help or version asked for) and
/// returns the exit code clap chose. A complaint quotes the argument it refuses, which may be a
/// connection URL: it is printed with any password masked.
pub fn report_arguments(error: &clap::Error) -> u8 {
    let code = u8::try_from(error.exit_code()).unwrap_or(USAGE);
    let text = error.render().to_string();
    let masked = migrate_core::mask_url(&text);
    // Help and version go to stdout and quote nothing the user typed.
    if masked == text || !error.use_stderr() {
        // Nothing to hide: clap prints it, in colour on a terminal.
        let _ = error.print();
    } else {
        #[allow(clippy::print_stderr)]
        {
            eprint!("{masked}");
        }
    }
    code
}

/// Prints the error on stderr, as `db-migrate: error: ...`.
pub fn report(error: &CliError) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("db-migrate: error: {}", chain(error));
    }
}
