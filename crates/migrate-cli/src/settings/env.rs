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

/// The process environment's variables with our prefix, as the OS gives them.
pub(crate) fn process_vars() -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(name, _)| has_prefix(name.as_encoded_bytes()))
        .collect()
}

fn has_prefix(name: &[u8]) -> bool {
    name.get(..PREFIX.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(PREFIX.as_bytes()))
}

/// The variables with our prefix as text. A name or value that is not UTF-8 is a problem
/// naming the variable: converted lossily it would be another path or URL than the one set.
fn as_text(vars: &[(OsString, OsString)], problems: &mut Vec<Problem>) -> Vec<(String, String)> {
    let mut text = Vec::with_capacity(vars.len());
    for (name, value) in vars {
        if !has_prefix(name.as_encoded_bytes()) {
            continue;
        }
        let Some(name_text) = name.to_str() else {
            let shown = name.to_string_lossy().into_owned();
            problems.push(Problem::new(
                Origin::Env(shown),
                "the name is not valid UTF-8",
            ));
            continue;
        };
        match value.to_str() {
            Some(value) => text.push((name_text.to_owned(), value.to_owned())),
            None => problems.push(Problem::new(
                Origin::Env(name_text.to_owned()),
                "the value is not valid UTF-8",
            )),
        }
    }
    text
}

/// Variables of the test suite and the benchmarks, which share the prefix and are not
/// configuration (`DB_MIGRATE_TEST_POSTGRES_URL`).
const TEST_PREFIX: &str = "DB_MIGRATE_TEST_";

/// The layer of every `DB_MIGRATE_*` variable in `vars` but `DB_MIGRATE_TEST_*`; malformed names, and names or values
/// that are not UTF-8, go to `problems`. Variables set to the empty string are ignored, as if
/// unset.
pub(crate) fn layer(vars: &[(OsString, OsString)], problems: &mut Vec<Problem>) -> Layer {
    let mut dict = Dict::new();
    let mut names = BTreeMap::new();
    let vars = as_text(vars, problems);
    let mut vars: Vec<&(String, String)> = vars.iter().collect();
    // The environment has no order; sorting makes a clash between two spellings of one key
    // (`..._PROCESSES` and `..._processes`) resolve the same way every time.
    vars.sort();
    for (name, value) in vars {
        // Empty: as if unset. `DB_MIGRATE_TEST_*`: the test suite's and the benchmarks' own
        // (the PostgreSQL server they use), exported in the same shell as the runs.
        if value.is_empty() || name.starts_with(TEST_PREFIX) {
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

    #[test]
    fn the_test_suites_variables_are_not_configuration() {
        let mut problems = Vec::new();
        let layer = layer(
            &vars(&[
                (
                    "DB_MIGRATE_TEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1/t",
                ),
                ("DB_MIGRATE_BOGUS", "1"),
            ]),
            &mut problems,
        );
        let origins: Vec<String> = problems.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(problems.len(), 1, "{origins:?}");
        assert!(origins[0].contains("DB_MIGRATE_BOGUS"), "{origins:?}");
        let figment = Figment::from(layer);
        assert!(figment.find_value("test.postgres-url").is_err());
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(n, v)| (OsString::from(n), OsString::from(v)))
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
    fn a_name_or_value_that_is_not_utf8_is_reported_not_converted() {
        use std::os::unix::ffi::OsStringExt;

        let mut problems = Vec::new();
        let figment = Figment::from(layer(
            &[
                (
                    OsString::from("DB_MIGRATE_CONNECTION__URL"),
                    OsString::from_vec(b"sqlite://caf\xe9.db".to_vec()),
                ),
                (
                    OsString::from_vec(b"DB_MIGRATE_X\xff__Y".to_vec()),
                    OsString::from("1"),
                ),
                (
                    OsString::from_vec(b"OTHER_\xff".to_vec()),
                    OsString::from("1"),
                ),
            ],
            &mut problems,
        ));
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "DB_MIGRATE_CONNECTION__URL: the value is not valid UTF-8",
                "DB_MIGRATE_X\u{fffd}__Y: the name is not valid UTF-8",
            ]
        );
        assert!(!figment.contains("connection.url"));
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
