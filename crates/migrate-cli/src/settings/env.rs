//! `DB_MIGRATE_<SECTION>__<KEY>` environment variables.
//!
//! `__` separates the section from the key and `_` inside either stands for `-`:
//! `DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES=7` sets `customer-migration.processes`. Values are
//! typed as on the command line (`7` is an integer, `true` a boolean). Figment's own `Env`
//! provider would name a bad key without its prefix; this layer remembers each variable so that
//! errors and `--show-config` name the variable the user actually set.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;

use figment::Metadata;
use figment::value::{Dict, Value};

use super::keys;
use super::problem::Problem;
use super::provenance::{self, ENVIRONMENT, Layer, Origin};
use super::suggest;

/// The prefix of every configuration variable.
pub(crate) const PREFIX: &str = "DB_MIGRATE_";

/// The variable that sets `section.key`.
pub(crate) fn variable_name(section: &str, key: &str) -> String {
    let upper = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    format!("{PREFIX}{}__{}", upper(section), upper(key))
}

/// The process environment, as text. A variable with our prefix whose name or value is not
/// UTF-8 is kept (lossily) so that it is reported rather than ignored.
pub(crate) fn process_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value): (OsString, OsString)| {
            let name = name.to_string_lossy().into_owned();
            has_prefix(&name).then(|| (name, value.to_string_lossy().into_owned()))
        })
        .collect()
}

fn has_prefix(name: &str) -> bool {
    name.get(..PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX))
}

/// The layer of every `DB_MIGRATE_*` variable in `vars`; malformed names go to `problems`.
/// Variables set to the empty string are ignored, as if unset.
pub(crate) fn layer(vars: &[(String, String)], problems: &mut Vec<Problem>) -> Layer {
    let mut dict = Dict::new();
    let mut names = BTreeMap::new();
    let mut vars: Vec<&(String, String)> = vars.iter().filter(|(n, _)| has_prefix(n)).collect();
    // The environment has no order; sorting makes a clash between two spellings of one key
    // (`..._PROCESSES` and `..._processes`) resolve the same way every time.
    vars.sort();
    for (name, value) in vars {
        if value.is_empty() {
            continue;
        }
        match split(name) {
            Some((section, key)) => {
                names.insert(format!("{section}.{key}"), name.clone());
                let value: Value = value.parse().unwrap_or_else(|never| match never {});
                provenance::insert(&mut dict, &section, &key, value);
            }
            None => problems.push(malformed(name)),
        }
    }
    let names = Arc::new(names);
    let metadata = Metadata::named(ENVIRONMENT).interpolater(move |_, path: &[&str]| {
        names
            .get(&path.join("."))
            .cloned()
            .unwrap_or_else(|| match path {
                [section, key] => variable_name(section, key),
                _ => format!("{PREFIX}{}", path.join("__").to_ascii_uppercase()),
            })
    });
    Layer::environment(metadata, dict)
}

/// `DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES` as `("customer-migration", "processes")`.
fn split(name: &str) -> Option<(String, String)> {
    let rest = &name[PREFIX.len()..];
    let (section, key) = rest.split_once("__")?;
    let segment = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let valid =
        |s: &str| !s.is_empty() && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__");
    (valid(section) && valid(key)).then(|| (segment(section), segment(key)))
}

/// A variable with our prefix that is not `DB_MIGRATE_<SECTION>__<KEY>`, with the variable it
/// was most likely meant to be.
fn malformed(name: &str) -> Problem {
    let rest = name[PREFIX.len()..].to_ascii_uppercase();
    let variables: Vec<(String, String)> = keys::all_keys()
        .map(|(section, key)| {
            let variable = variable_name(section, key);
            // Compared without the separators, so `CUSTOMER_MIGRATION_PROCESSES` (one
            // underscore) still finds its variable; a bare key finds its section's variable.
            let flat = variable[PREFIX.len()..].replace("__", "_");
            (flat, variable)
        })
        .collect();
    let bare_key = keys::all_keys()
        .filter(|(_, key)| key.to_ascii_uppercase().replace('-', "_") == rest)
        .map(|(section, key)| variable_name(section, key))
        .next();
    let flat = rest.replace("__", "_");
    let suggestion = bare_key.or_else(|| {
        suggest::nearest(&flat, variables.iter().map(|(flat, _)| flat.as_str())).and_then(|found| {
            variables
                .iter()
                .find(|(flat, _)| flat == found)
                .map(|(_, variable)| variable.clone())
        })
    });
    let mut reason = format!("not of the form {PREFIX}<SECTION>__<KEY>");
    if let Some(variable) = suggestion {
        reason.push_str(&format!("; did you mean {variable}?"));
    }
    Problem::new(Origin::Env(name.to_owned()), reason)
}

#[cfg(test)]
mod tests {
    use figment::Figment;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn variable_names_follow_the_keys() {
        assert_eq!(
            variable_name("customer-migration", "retry-max-delay-millis"),
            "DB_MIGRATE_CUSTOMER_MIGRATION__RETRY_MAX_DELAY_MILLIS"
        );
        assert_eq!(
            split("DB_MIGRATE_CUSTOMER_MIGRATION__RETRY_MAX_DELAY_MILLIS"),
            Some(("customer-migration".into(), "retry-max-delay-millis".into()))
        );
        assert_eq!(split("DB_MIGRATE_PROCESSES"), None);
        assert_eq!(split("DB_MIGRATE___PROCESSES"), None);
        assert_eq!(split("DB_MIGRATE_A__B__C"), None);
    }

    #[test]
    fn values_are_typed_and_named_by_their_variable() {
        let mut problems = Vec::new();
        let layer = layer(
            &vars(&[
                ("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES", "7"),
                ("DB_MIGRATE_CONNECTION__URL", "sqlite://a.db"),
                ("DB_MIGRATE_CUSTOMER_MIGRATOR__SLEEP_SCALE", "0.5"),
                ("DB_MIGRATE_CUSTOMER_SCANNER__FETCH_SIZE", ""),
                ("PATH", "/bin"),
            ]),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let figment = Figment::from(layer);
        assert_eq!(
            figment
                .extract_inner::<u64>("customer-migration.processes")
                .unwrap(),
            7
        );
        assert_eq!(
            figment
                .extract_inner::<f64>("customer-migrator.sleep-scale")
                .unwrap(),
            0.5
        );
        assert_eq!(
            figment.extract_inner::<String>("connection.url").unwrap(),
            "sqlite://a.db"
        );
        assert!(!figment.contains("customer-scanner.fetch-size"));
        assert_eq!(
            Origin::find(&figment, "customer-migration", "processes"),
            Origin::Env("DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES".into())
        );
    }

    #[test]
    fn a_lowercase_variable_is_named_as_written() {
        let mut problems = Vec::new();
        let figment = Figment::from(layer(
            &vars(&[("db_migrate_connection__max_connections", "4")]),
            &mut problems,
        ));
        assert_eq!(
            Origin::find(&figment, "connection", "max-connections"),
            Origin::Env("db_migrate_connection__max_connections".into())
        );
    }

    #[test]
    fn malformed_names_are_reported_with_a_suggestion() {
        let mut problems = Vec::new();
        layer(
            &vars(&[
                ("DB_MIGRATE_CUSTOMER_MIGRATION_PROCESSES", "7"),
                ("DB_MIGRATE_PROCESSES", "7"),
                ("DB_MIGRATE_ZZZ", "1"),
            ]),
            &mut problems,
        );
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "DB_MIGRATE_CUSTOMER_MIGRATION_PROCESSES: not of the form \
                 DB_MIGRATE_<SECTION>__<KEY>; did you mean \
                 DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES?",
                "DB_MIGRATE_PROCESSES: not of the form DB_MIGRATE_<SECTION>__<KEY>; \
                 did you mean DB_MIGRATE_CUSTOMER_MIGRATION__PROCESSES?",
                "DB_MIGRATE_ZZZ: not of the form DB_MIGRATE_<SECTION>__<KEY>",
            ]
        );
    }
}
