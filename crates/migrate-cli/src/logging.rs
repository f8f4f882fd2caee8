//! The log: `migrate-core`'s `tracing` spans and events, written by `tracing-subscriber` as text
//! or JSON lines (`--log-format`), where the board is not.
//!
//! There is a log only when one is asked for: `--log FILE`, `--log-level LEVEL` or `RUST_LOG`.
//! It goes to FILE when given; otherwise to stderr, unless the live console board draws there,
//! in which case it goes to `db-migrate.log` beside the audit log (`customer-migrator.log-file`),
//! so that no line is ever drawn over the board.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{Layer, Registry};

use crate::board::Output;
use crate::cli::{LogFormat, LogLevel, OutputArgs};
use crate::exit::CliError;

/// The log file's name when the board keeps the log off stderr and no `--log` names one.
pub const DEFAULT_LOG_FILE: &str = "db-migrate.log";

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Appended to this file.
    File(PathBuf),
    /// stderr (no live board draws there).
    Stderr,
}

/// The log's filter: `--log-level` for db-migrate's own messages (other crates, sqlx's
/// statements among them, at `warn`), else `RUST_LOG` as given, else `info` for ours when only
/// `--log FILE` asked for a log. `None`: no log was asked for.
fn filter(args: &OutputArgs) -> Result<Option<EnvFilter>, CliError> {
    let ours = |level: &str| format!("warn,migrate_core={level},migrate_cli={level}");
    if let Some(level) = args.log_level {
        return Ok(Some(EnvFilter::new(ours(level.as_str()))));
    }
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map(Some)
            .map_err(|e| CliError::Usage(format!("RUST_LOG={directives}: {e}"))),
        _ => Ok(args
            .log_file
            .is_some()
            .then(|| EnvFilter::new(ours("info")))),
    }
}

/// Where the log goes for this board `output`; `audit_log` is `customer-migrator.log-file`.
pub fn destination(output: Output, args: &OutputArgs, audit_log: &Path) -> Destination {
    match (&args.log_file, output) {
        (Some(file), _) => Destination::File(file.clone()),
        (None, Output::Console) => Destination::File(
            audit_log
                .parent()
                .unwrap_or(Path::new(""))
                .join(DEFAULT_LOG_FILE),
        ),
        (None, _) => Destination::Stderr,
    }
}

/// Installs the log for a run whose board draws as `output`, when one was asked for. A level,
/// `RUST_LOG` or file that cannot be used is a usage error: nothing has run yet.
pub fn init(output: Output, args: &OutputArgs, audit_log: &Path) -> Result<(), CliError> {
    let Some(filter) = filter(args)? else {
        return Ok(());
    };
    let layer = match destination(output, args, audit_log) {
        Destination::File(path) => {
            let file = open(&path, args.log_file.is_some())?;
            format_layer(args.log_format, Arc::new(file), false)
        }
        Destination::Stderr => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            format_layer(args.log_format, std::io::stderr, color)
        }
    };
    let subscriber = Registry::default().with(layer.with_filter(filter));
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|e| CliError::Fatal(format!("while installing the log: {e}")))
}

/// The text or JSON formatter writing to `writer`.
fn format_layer<W>(
    format: LogFormat,
    writer: W,
    color: bool,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(writer);
    match format {
        LogFormat::Text => layer.with_ansi(color).boxed(),
        LogFormat::Json => layer
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    }
}

/// Opens the log file for appending, creating it (and, for the default file, its directory).
/// `named` says whether `--log` named it, for the error.
fn open(path: &Path, named: bool) -> Result<File, CliError> {
    let by = if named { "--log" } else { "the log file" };
    if !named && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::Usage(format!(
                "{by} {}: cannot create its directory: {e}",
                path.display()
            ))
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| CliError::Usage(format!("{by} {}: cannot be opened: {e}", path.display())))
}

impl LogLevel {
    /// The level's name, as `tracing` spells it.
    fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn output_args(args: &[&str]) -> OutputArgs {
        Cli::parse_from(std::iter::once("db-migrate").chain(args.iter().copied())).output
    }

    #[test]
    fn the_log_never_goes_where_the_console_board_draws() {
        let audit = Path::new("state/migration.log");
        assert_eq!(
            destination(Output::Console, &output_args(&[]), audit),
            Destination::File(PathBuf::from("state/db-migrate.log"))
        );
        assert_eq!(
            destination(Output::Minimal, &output_args(&[]), audit),
            Destination::Stderr
        );
        assert_eq!(
            destination(Output::Off, &output_args(&[]), audit),
            Destination::Stderr
        );
        assert_eq!(
            destination(Output::Console, &output_args(&["--log", "x.log"]), audit),
            Destination::File(PathBuf::from("x.log"))
        );
    }
}
