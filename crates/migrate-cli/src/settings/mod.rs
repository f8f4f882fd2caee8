//! Layered configuration with figment.
//!
//! Layers, lowest precedence first; a later layer wins key by key:
//!
//! 1. the built-in defaults (`Config::default()`, equal to the shipped `conf/<section>.toml`);
//! 2. `conf/<section>.toml`, one file per section;
//! 3. `conf/<section>-<env>.toml` for the environment chosen with `-e/--env`;
//! 4. `conf/<section>-local.toml`, a machine's own overrides (ignored by git);
//! 5. each `--config FILE`, in the order given (each must exist);
//! 6. `DB_MIGRATE_<SECTION>__<KEY>` environment variables;
//! 7. `KEY=VALUE` arguments (`customer-migration/processes=5` or
//!    `customer-migration.processes=5`).
//!
//! The conf directory is `--conf-dir DIR` (which must exist), else `./conf` when it exists, else
//! none: the built-in defaults alone are a working configuration.
//!
//! Every layer lands in figment's default profile, so the order above alone decides; a layer in
//! the global profile would beat every file whatever its place. Figment tags each value with its
//! layer, which is how errors and `--show-config` name the file, variable or command line a value
//! came from.

mod check;
mod env;
mod keys;
mod overrides;
mod problem;
mod provenance;
mod show;
mod suggest;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Toml};
use figment::value::Value;
use migrate_core::{Config, mask_url};
use serde::Deserialize;

pub use problem::Problem;
pub use provenance::Origin;

use crate::cli::{ConfigArgs, Environment};
use provenance::Layer;

/// The component sections, one `conf/<section>.toml` each, in the order they are shown.
pub const SECTIONS: [&str; 5] = [
    "status-board",
    "connection",
    "customer-scanner",
    "customer-migrator",
    "customer-migration",
];

/// The conf directory used when `--conf-dir` is not given, if it exists.
const DEFAULT_CONF_DIR: &str = "conf";

/// A configuration that cannot be used; nothing has run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Some layer holds a bad key or value, or cannot be read; every problem found is listed.
    #[error("invalid configuration{}", list(.0))]
    Invalid(Vec<Problem>),
}

fn list(problems: &[Problem]) -> String {
    // A problem may span lines (a TOML syntax error quotes the line); its continuation lines
    // are indented under it.
    let indented = |problem: &Problem| problem.to_string().replace('\n', "\n    ");
    match problems {
        [one] => format!(": {}", indented(one)),
        many => {
            let mut text = format!(" ({} problems):", many.len());
            for problem in many {
                text.push_str("\n  ");
                text.push_str(&indented(problem));
            }
            text
        }
    }
}

/// The merged configuration and where each value came from.
#[derive(Debug)]
pub struct Settings {
    config: Config,
    figment: Figment,
    environment: Environment,
    conf_dir: Option<PathBuf>,
}

impl Settings {
    /// The typed configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The layer that set `section.key`: [`Origin::Default`] when no file, variable or argument
    /// did.
    pub fn origin(&self, section: &str, key: &str) -> Origin {
        Origin::find(&self.figment, section, key)
    }

    /// The merged configuration as TOML, each value followed by its origin
    /// (`processes = 5  # from command line`), credentials masked.
    pub fn render(&self) -> String {
        let conf_dir = match &self.conf_dir {
            Some(dir) => dir.display().to_string(),
            None => "none (built-in defaults)".to_owned(),
        };
        let header = format!(
            "db-migrate configuration for environment {}, conf directory {conf_dir}",
            self.environment.name()
        );
        show::render(&self.config, &self.figment, &header)
    }
}

/// Merges every layer, from the process environment and `./conf`, and checks the result.
pub fn load(args: &ConfigArgs) -> Result<Settings, ConfigError> {
    load_from(args, Path::new(DEFAULT_CONF_DIR), &env::process_vars())
}

/// [`load`] with the default conf directory and the environment variables given.
fn load_from(
    args: &ConfigArgs,
    default_conf_dir: &Path,
    vars: &[(OsString, OsString)],
) -> Result<Settings, ConfigError> {
    let mut problems = Vec::new();
    let conf_dir = conf_dir(args, default_conf_dir, &mut problems);

    let defaults = Value::serialize(Config::default())
        .ok()
        .and_then(Value::into_dict)
        .unwrap_or_default();
    let mut figment = Figment::from(Layer::defaults(defaults));
    if let Some(dir) = &conf_dir {
        for path in conf_files(dir, args.env) {
            if path.is_file() {
                figment = merge_file(figment, path, &mut problems);
            }
        }
    }
    for path in &args.files {
        if path.exists() {
            figment = merge_file(figment, path.clone(), &mut problems);
        } else {
            problems.push(Problem::new(
                Origin::File(path.clone()),
                "file not found (named with --config)",
            ));
        }
    }
    figment = figment.merge(env::layer(vars, &mut problems));
    figment = figment.merge(overrides::layer(&args.overrides, &mut problems));

    let passed = check::entries(&figment, &mut problems);
    if !problems.is_empty() {
        // Ranges are still checked, on the entries that passed, so that one run lists all.
        if let Ok(config) = Config::deserialize(&passed) {
            problems.extend(check::ranges(&config, &figment));
        }
        return Err(ConfigError::Invalid(problems));
    }
    let config: Config = figment
        .extract()
        .map_err(|error| ConfigError::Invalid(check::from_figment(error)))?;
    let problems = check::ranges(&config, &figment);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Settings {
        config,
        figment,
        environment: args.env,
        conf_dir,
    })
}

/// `--conf-dir DIR` if it exists, else `./conf` if it exists, else none.
fn conf_dir(args: &ConfigArgs, default: &Path, problems: &mut Vec<Problem>) -> Option<PathBuf> {
    match &args.conf_dir {
        Some(dir) if dir.is_dir() => Some(dir.clone()),
        Some(dir) => {
            problems.push(Problem::new(
                Origin::CommandLine,
                format!("--conf-dir {}: directory not found", dir.display()),
            ));
            None
        }
        None => default.is_dir().then(|| default.to_owned()),
    }
}

/// The conf files that may exist, lowest precedence first: every section's defaults, then its
/// environment's file, then its local file.
fn conf_files(dir: &Path, environment: Environment) -> Vec<PathBuf> {
    let suffixes = [
        "".to_owned(),
        format!("-{}", environment.name()),
        "-local".to_owned(),
    ];
    suffixes
        .iter()
        .flat_map(|suffix| {
            SECTIONS
                .iter()
                .map(move |section| dir.join(format!("{section}{suffix}.toml")))
        })
        .collect()
}

/// Merges a TOML file that exists, or records why it cannot be read. Each file is read once on
/// its own first, so that a broken file is reported with its path and the others still count.
///
/// A syntax error is told by line and column, without the line itself: the file may be
/// `connection-local.toml`, where the docs put passwords.
fn merge_file(figment: Figment, path: PathBuf, problems: &mut Vec<Problem>) -> Figment {
    use figment::Provider as _;
    let unreadable = |reason: String| Problem::new(Origin::File(path.clone()), reason);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            problems.push(unreadable(format!("cannot be read: {error}")));
            return figment;
        }
    };
    if let Err(error) = toml::from_str::<toml::Table>(&text) {
        problems.push(unreadable(format!(
            "cannot be read as TOML: {}",
            syntax_error(&text, &error)
        )));
        return figment;
    }
    let file = Toml::file_exact(&path);
    match file.data() {
        Ok(_) => figment.merge(file),
        Err(error) => {
            // Figment's own parser refused what ours read: its first line names the place,
            // the lines after it quote the file.
            let kind = error.kind.to_string();
            let place = kind.lines().next().unwrap_or_default();
            problems.push(unreadable(format!(
                "cannot be read as TOML: {}",
                mask_url(place)
            )));
            figment
        }
    }
}

/// `line 2, column 7: invalid basic string`, for a syntax error in `text`.
fn syntax_error(text: &str, error: &toml::de::Error) -> String {
    let message = mask_url(error.message().trim());
    let Some(span) = error.span() else {
        return message;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

#[cfg(test)]
mod tests;
