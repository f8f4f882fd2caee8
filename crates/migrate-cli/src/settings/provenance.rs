//! Where a value came from: the built-in defaults, a file, an environment variable or the
//! command line.
//!
//! Every layer is a figment provider with its own [`Metadata`]; figment tags each value with the
//! metadata of the layer that set it, so [`Figment::find_metadata`] answers "who set this key"
//! after merging. [`Origin`] turns that metadata back into words a user recognises.

use std::fmt;
use std::path::PathBuf;

use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};

/// The name of the built-in defaults layer.
const DEFAULT: &str = "default";
/// The name of the environment layer; its interpolater gives the variable of a key.
pub(crate) const ENVIRONMENT: &str = "environment variable";
/// The name of the `KEY=VALUE` layer.
const COMMAND_LINE: &str = "command line";

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The built-in defaults (`Config::default()`).
    Default,
    /// A TOML file: a `conf/` file or a `--config` file.
    File(PathBuf),
    /// An environment variable, by its real name (`DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES`).
    Env(String),
    /// A `KEY=VALUE` argument or another command-line option.
    CommandLine,
}

impl Origin {
    /// The origin of the value at `section.key` according to the metadata of its layer.
    pub(crate) fn of(metadata: &Metadata, path: &[&str]) -> Origin {
        if let Some(Source::File(path)) = &metadata.source {
            return Origin::File(path.clone());
        }
        match metadata.name.as_ref() {
            ENVIRONMENT => Origin::Env(metadata.interpolate(&Profile::Default, path)),
            COMMAND_LINE => Origin::CommandLine,
            _ => Origin::Default,
        }
    }

    /// The origin of the merged value of `section.key`: the last layer that set it, or the
    /// defaults when none did (an optional key left unset).
    pub(crate) fn find(figment: &Figment, section: &str, key: &str) -> Origin {
        figment
            .find_metadata(&format!("{section}.{key}"))
            .map_or(Origin::Default, |metadata| {
                Origin::of(metadata, &[section, key])
            })
    }

    /// How a user of this origin writes `section.key`: the variable name for the environment,
    /// the dotted key everywhere else.
    pub(crate) fn spell(&self, section: &str, key: &str) -> String {
        match self {
            Origin::Env(_) => super::env::variable_name(section, key),
            _ => format!("{section}.{key}"),
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str(DEFAULT),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => f.write_str(name),
            Origin::CommandLine => f.write_str(COMMAND_LINE),
        }
    }
}

/// A layer built in memory, in the default profile like the TOML files, so that the order of
/// merging alone decides which value wins. (`Serialized::global` would land in the global
/// profile, which beats every file whatever the order.)
#[derive(Debug)]
pub(crate) struct Layer {
    metadata: Metadata,
    dict: Dict,
}

impl Layer {
    /// The built-in defaults.
    pub(crate) fn defaults(dict: Dict) -> Layer {
        Layer {
            metadata: Metadata::named(DEFAULT),
            dict,
        }
    }

    /// `KEY=VALUE` arguments.
    pub(crate) fn command_line(dict: Dict) -> Layer {
        Layer {
            metadata: Metadata::named(COMMAND_LINE),
            dict,
        }
    }

    /// Environment variables; `metadata` names the variable of each key.
    pub(crate) fn environment(metadata: Metadata, dict: Dict) -> Layer {
        Layer { metadata, dict }
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// Sets `section.key` in a dictionary of sections.
pub(crate) fn insert(dict: &mut Dict, section: &str, key: &str, value: figment::value::Value) {
    let entry = dict
        .entry(section.to_owned())
        .or_insert_with(|| Dict::new().into());
    if let figment::value::Value::Dict(_, table) = entry {
        table.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use figment::providers::{Format, Toml};

    use super::*;

    fn one(section: &str, key: &str, value: i64) -> Dict {
        let mut dict = Dict::new();
        insert(&mut dict, section, key, value.into());
        dict
    }

    #[test]
    fn each_layer_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "[connection]\nmax-connections = 3\n").unwrap();
        let figment = Figment::from(Layer::defaults(one("connection", "url", 1)))
            .merge(Toml::file_exact(&file))
            .merge(Layer::command_line(one("status-board", "mode", 2)));
        assert_eq!(Origin::find(&figment, "connection", "url"), Origin::Default);
        assert_eq!(
            Origin::find(&figment, "connection", "max-connections"),
            Origin::File(file)
        );
        assert_eq!(
            Origin::find(&figment, "status-board", "mode"),
            Origin::CommandLine
        );
        assert_eq!(Origin::find(&figment, "status-board", "x"), Origin::Default);
    }

    #[test]
    fn later_layers_win_whatever_their_kind() {
        let figment = Figment::from(Layer::command_line(one("a", "b", 1)))
            .merge(Layer::defaults(one("a", "b", 2)));
        assert_eq!(figment.extract_inner::<i64>("a.b").unwrap(), 2);
        assert_eq!(Origin::find(&figment, "a", "b"), Origin::Default);
    }

    #[test]
    fn origins_print_as_users_write_them() {
        assert_eq!(Origin::Default.to_string(), "default");
        assert_eq!(Origin::CommandLine.to_string(), "command line");
        assert_eq!(
            Origin::File(PathBuf::from("conf/connection.toml")).to_string(),
            "conf/connection.toml"
        );
        let env = Origin::Env("DB_MIGRATE_CONNECTION__URL".into());
        assert_eq!(env.to_string(), "DB_MIGRATE_CONNECTION__URL");
        assert_eq!(
            env.spell("customer-migration", "processes"),
            "DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES"
        );
        assert_eq!(
            Origin::CommandLine.spell("customer-migration", "processes"),
            "customer-migration.processes"
        );
    }
}
