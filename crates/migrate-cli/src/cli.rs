//! The command line, as clap types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Runs a large data migration safely and visibly: a scanner feeds ids to migration jobs
/// through a bounded channel, progress is checkpointed, failures are recorded, and a live board
/// shows every job.
#[derive(Debug, Parser)]
#[command(name = "db-migrate", version, max_term_width = 100)]
pub struct Cli {
    /// What to do; without a command, run the migration.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Where the configuration comes from.
    #[command(flatten)]
    pub config: ConfigArgs,

    /// How the migration runs.
    #[command(flatten)]
    pub run: RunArgs,

    /// Output choices.
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create (or with --force refill) the demo `customers` table at connection.url.
    Seed {
        /// How many customers to create (0 to 1000000000).
        // Negative numbers reach the range check instead of reading as a flag `-5`.
        #[arg(long, default_value_t = 100_000, value_parser = customer_count,
              allow_negative_numbers = true)]
        customers: u64,
        /// Delete the rows of an existing table and refill it; also drops the bookkeeping
        /// tables (migration_checkpoints, migration_failures), which describe the old rows.
        #[arg(long)]
        force: bool,
        /// Confirm --force outside the localhost environment (the demo database needs none).
        #[arg(long, requires = "force")]
        confirm_wipe: bool,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Create the embedded SQLite demo database if it is missing, then migrate it with the
    /// live board.
    Demo {
        /// How many customers the demo database gets when it is created (0 to 1000000000).
        // Negative numbers reach the range check instead of reading as a flag `-5`.
        #[arg(long, default_value_t = 100_000, value_parser = customer_count,
              allow_negative_numbers = true)]
        customers: u64,
        /// Refill the demo database first, to watch the whole migration again.
        #[arg(long)]
        fresh: bool,
        /// Confirm --fresh on a database other than the demo's own, outside the localhost
        /// environment.
        #[arg(long, requires = "fresh")]
        confirm_wipe: bool,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// List the migrations recorded in the database: progress, last run, open failures.
    ///
    /// With NAME, that migration in detail: the last 5 runs, the first 10 open failures.
    Status {
        /// Only this migration.
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Migrate only the records whose failures are open (flags and exit codes as a run).
    ///
    /// Their keys are the run's input; the failures of those that now succeed are marked
    /// resolved, and those that fail again keep their row with the attempts added.
    RetryFailures {
        /// The migration whose failures to retry [default: the one the configuration runs,
        /// customer-migration unless --migration names a file].
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Pause, resume, stop or retune every run of a migration, from any shell or machine.
    ///
    /// Writes to the progress store in the database (the `migration_controls` table); every
    /// running process of the migration picks it up within a second. A pause lasts until
    /// `resume`, across restarts; a stop ends the runs going on, not later ones.
    Control {
        /// What to do.
        #[command(subcommand)]
        action: ControlAction,
    },
}

/// `db-migrate control` actions; each takes the migration's NAME [default: the one the
/// configuration runs] and configuration overrides, as `status` does.
#[derive(Debug, Clone, Subcommand)]
pub enum ControlAction {
    /// No new batch starts until resumed, in the runs going on and in later runs.
    Pause {
        /// The migration [default: the one the configuration runs].
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Resume a paused migration.
    Resume {
        /// The migration [default: the one the configuration runs].
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Stop the runs going on gracefully, as Ctrl-C does (later runs are not stopped).
    Stop {
        /// The migration [default: the one the configuration runs].
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Change a setting while the migration runs: rate-limit=N (0: none), processes=N,
    /// batch-size=N.
    Set {
        /// The setting, as KEY=VALUE.
        #[arg(value_name = "SETTING")]
        setting: String,
        /// The migration [default: the one the configuration runs].
        name: Option<String>,
        /// Configuration overrides, as for the migration.
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

impl ControlAction {
    /// The migration's name and the configuration overrides; a NAME with `=` is an override.
    pub fn name_and_overrides(&self) -> (Option<String>, Vec<String>) {
        let (ControlAction::Pause { name, overrides }
        | ControlAction::Resume { name, overrides }
        | ControlAction::Stop { name, overrides }
        | ControlAction::Set {
            name, overrides, ..
        }) = self;
        match name {
            Some(name) if name.contains('=') => {
                let mut all = vec![name.clone()];
                all.extend(overrides.iter().cloned());
                (None, all)
            }
            _ => (name.clone(), overrides.clone()),
        }
    }
}

impl Command {
    /// `status` and `retry-failures` take a NAME before their `KEY=VALUE` overrides; a first
    /// positional with `=` is an override (no migration name has one), not the NAME.
    pub fn with_overrides_apart(self) -> Command {
        match self {
            Command::Status {
                name: Some(name),
                mut overrides,
            } if name.contains('=') => {
                overrides.insert(0, name);
                Command::Status {
                    name: None,
                    overrides,
                }
            }
            Command::RetryFailures {
                name: Some(name),
                mut overrides,
            } if name.contains('=') => {
                overrides.insert(0, name);
                Command::RetryFailures {
                    name: None,
                    overrides,
                }
            }
            other => other,
        }
    }
}

/// The most customers `seed` and `demo` create. The table is filled in one transaction; a
/// billion rows is already hours of work and tens of gigabytes.
const MAX_CUSTOMERS: u64 = 1_000_000_000;

/// `--customers N`, from 0 to [`MAX_CUSTOMERS`].
fn customer_count(text: &str) -> Result<u64, String> {
    let range = format!("a whole number between 0 and {MAX_CUSTOMERS}");
    match text.parse::<i128>() {
        Ok(n) if (0..=i128::from(MAX_CUSTOMERS)).contains(&n) => Ok(n as u64),
        Ok(_) => Err(format!("must be {range}")),
        Err(_) => Err(format!("expected {range}")),
    }
}

/// Where the configuration comes from, lowest precedence first: `conf/` defaults, the
/// environment's files, `*-local.toml`, `--config` files, `DB_MIGRATE_*` variables, `KEY=VALUE`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Which environment's files to merge over the defaults.
    #[arg(short, long, global = true, value_enum, default_value_t = Environment::Localhost)]
    pub env: Environment,

    /// Directory holding the TOML files [default: ./conf when it exists, else built-in defaults]
    #[arg(long, global = true, value_name = "DIR")]
    pub conf_dir: Option<PathBuf>,

    /// Another TOML file to merge (repeatable; each must exist).
    #[arg(long = "config", global = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Configuration overrides: `customer-migration/processes=5` or
    /// `customer-migration.processes=5`.
    #[arg(value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,

    /// Print the merged configuration with the source of each value, and exit.
    #[arg(long, global = true)]
    pub show_config: bool,
}

/// The environments with their own configuration files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// A developer's machine.
    Localhost,
    /// The staging database.
    Staging,
    /// The production database.
    Production,
}

impl Environment {
    /// The name used in file names (`customer-migration-staging.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Environment::Localhost => "localhost",
            Environment::Staging => "staging",
            Environment::Production => "production",
        }
    }
}

/// How the migration runs.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Check and count only; write nothing.
    #[arg(short = 'D', long, global = true)]
    pub dry_run: bool,

    /// Forget saved progress and start over.
    #[arg(short, long, global = true)]
    pub reset: bool,

    /// Migrate the keys in FILE instead of scanning: one per line, as the failures show them
    /// (`42`; `eu,7` for a key of several columns), blank lines and `#` comments skipped.
    #[arg(short, long, global = true, value_name = "FILE")]
    pub file: Option<PathBuf>,

    /// Run the migration declared in FILE (TOML: table, key, pending, set, valid; see
    /// `migrations/`) instead of the built-in customer migration.
    #[arg(short = 'm', long, global = true, value_name = "FILE")]
    pub migration: Option<PathBuf>,

    /// Distributed mode: many processes on one migration (`docs/scale-out.md`).
    #[command(flatten)]
    pub distributed: crate::distributed::DistributedArgs,
}

/// Output choices.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the component graph (Graphviz DOT on stdout, or an image written with `dot`) and
    /// exit without touching a database.
    #[arg(long, global = true, value_enum, value_name = "FORMAT", num_args = 0..=1,
          require_equals = true, default_missing_value = "dot")]
    pub visualize: Option<VisualFormat>,

    /// Print the final summary as one JSON object on stdout.
    #[arg(long, global = true)]
    pub json: bool,

    /// `json`: every run event as a JSON line on stderr, instead of the status board, and the
    /// log (when there is one) as JSON lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Write the log (the engine's spans and events) to FILE [default: stderr, or db-migrate.log
    /// beside the audit log while the live board draws on stderr].
    #[arg(long = "log", global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Log db-migrate's own messages from this level up [default: RUST_LOG when set, else no
    /// log unless --log is given, then info].
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts [default:
    /// status-board.metrics-addr, unset: none].
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// `--log-level` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Aborts.
    Error,
    /// Records that failed, and the above.
    Warn,
    /// The run's start and end, retries, and the above.
    Info,
    /// Every batch, and the above.
    Debug,
    /// Everything.
    Trace,
}

/// `--visualize` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VisualFormat {
    /// Graphviz DOT on stdout.
    Dot,
    /// An SVG image, drawn by `dot`.
    Svg,
    /// A PNG image, drawn by `dot`.
    Png,
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// The status board; the log as text lines.
    Text,
    /// Run events as JSON lines on stderr; the log as JSON lines.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_counts_are_whole_numbers_in_range() {
        assert_eq!(customer_count("0"), Ok(0));
        assert_eq!(customer_count("1000000000"), Ok(MAX_CUSTOMERS));
        let range = "a whole number between 0 and 1000000000";
        assert_eq!(customer_count("-5"), Err(format!("must be {range}")));
        assert_eq!(
            customer_count("1000000001"),
            Err(format!("must be {range}"))
        );
        assert_eq!(customer_count("5.5"), Err(format!("expected {range}")));
    }
}
