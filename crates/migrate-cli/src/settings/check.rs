//! Checking the merged configuration: every section and key known, every value of its key's
//! type, every value in range. Each problem names the layer that set the value; all are
//! collected before the program stops.

use figment::Figment;
use figment::error::Kind;
use figment::value::{Dict, Value};
use migrate_core::{Config, mask_url};
use serde::Deserialize;

use super::keys;
use super::problem::{Problem, show};
use super::provenance::{self, Origin};
use super::suggest;

/// Checks every entry of the merged layers. Returns the entries that passed, as sections of
/// keys, so that ranges can still be checked when some entries are wrong.
pub(crate) fn entries(figment: &Figment, problems: &mut Vec<Problem>) -> Value {
    let merged = match figment.find_value("") {
        Ok(Value::Dict(_, dict)) => dict,
        Ok(_) => Dict::new(),
        Err(error) => {
            problems.extend(from_figment(error));
            Dict::new()
        }
    };
    let mut passed = Dict::new();
    for (section, value) in merged {
        let origin_of = |value: &Value, key: &str| {
            figment
                .get_metadata(value.tag())
                .map_or(Origin::Default, |metadata| {
                    Origin::of(metadata, &[section.as_str(), key])
                })
        };
        let Some(known) = keys::section_keys(&section) else {
            unknown_section(&section, &value, &origin_of, problems);
            continue;
        };
        let Value::Dict(_, table) = value else {
            problems.push(Problem::at(
                origin_of(&value, ""),
                &section,
                Some(show(&value)),
                format!("{section} is a section: expected a table of keys"),
            ));
            continue;
        };
        for (key, value) in table {
            let origin = origin_of(&value, &key);
            if !known.contains(&key.as_str()) {
                problems.push(unknown_key(origin, &section, &key, &value));
                continue;
            }
            match of_its_type(&section, &key, &value) {
                Ok(()) => provenance::insert(&mut passed, &section, &key, value),
                Err(reason) => problems.push(Problem::at(
                    origin,
                    format!("{section}.{key}"),
                    Some(show(&value)),
                    reason,
                )),
            }
        }
    }
    Value::from(passed)
}

/// The range problems of `config`, each with the layer that set the value.
pub(crate) fn ranges(config: &Config, figment: &Figment) -> Vec<Problem> {
    let Err(invalid) = config.validate() else {
        return Vec::new();
    };
    invalid
        .into_iter()
        .map(|invalid| {
            let (section, key) = invalid.key.split_once('.').unwrap_or(("", invalid.key));
            // Text values are quoted as everywhere else (`validate` gives them bare, masked).
            let value = match figment.find_value(invalid.key) {
                Ok(Value::String(..)) => format!("{:?}", invalid.value),
                _ => invalid.value,
            };
            Problem::at(
                Origin::find(figment, section, key),
                invalid.key,
                Some(value),
                invalid.reason,
            )
        })
        .collect()
}

/// Problems from a figment error chain, for what the checks above do not foresee.
pub(crate) fn from_figment(error: figment::Error) -> Vec<Problem> {
    error
        .into_iter()
        .map(|error| {
            let path: Vec<&str> = error.path.iter().map(String::as_str).collect();
            let origin = error
                .metadata
                .as_ref()
                .map_or(Origin::Default, |metadata| Origin::of(metadata, &path));
            let reason = describe(&error.kind);
            if path.is_empty() {
                Problem::new(origin, reason)
            } else {
                Problem::at(origin, path.join("."), None, reason)
            }
        })
        .collect()
}

/// Whether `value` deserializes as `section.key`, or why not: the config of that one entry,
/// every other field defaulted, is read with serde as the whole would be.
fn of_its_type(section: &str, key: &str, value: &Value) -> Result<(), String> {
    let mut single = Dict::new();
    provenance::insert(&mut single, section, key, value.clone());
    Config::deserialize(&Value::from(single))
        .map(drop)
        .map_err(|error| describe(&error.kind))
}

/// A serde complaint in a user's words. What it quotes of the value is masked: a connection URL
/// given to the wrong key is still a password.
fn describe(kind: &Kind) -> String {
    match kind {
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            let found = mask_url(&found.to_string());
            format!("expected {}, found {found}", in_words(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            let mut text = format!(
                "expected one of {}, found {:?}",
                expected.join(", "),
                mask_url(found)
            );
            if let Some(near) = suggest::nearest(found, expected.iter().copied()) {
                text.push_str(&format!("; did you mean {near:?}?"));
            }
            text
        }
        other => mask_url(&other.to_string()),
    }
}

/// serde's name of an expected type as words.
fn in_words(expected: &str) -> String {
    match expected {
        "u8" => "an integer from 0 to 255".to_owned(),
        "u16" => "an integer from 0 to 65535".to_owned(),
        "u32" => "an integer from 0 to 4294967295".to_owned(),
        "u64" | "usize" => "an integer, 0 or more".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "path string" => "a path".to_owned(),
        other => other.to_owned(),
    }
}

/// A key that is not in its section, with the key it most likely meant: the same key in another
/// section, a near key in this section, or a near key anywhere.
fn unknown_key(origin: Origin, section: &str, key: &str, value: &Value) -> Problem {
    let known = keys::section_keys(section).unwrap_or_default();
    let elsewhere = keys::sections_with(key);
    let suggestion = if let Some(other) = elsewhere.first() {
        Some(origin.spell(other, key))
    } else if let Some(near) = suggest::nearest(key, known.iter().copied()) {
        Some(origin.spell(section, near))
    } else {
        suggest::nearest(key, keys::all_keys().map(|(_, k)| k)).map(|near| {
            let other = keys::sections_with(near)[0];
            origin.spell(other, near)
        })
    };
    let mut reason = format!("unknown key {key:?} in section {section}");
    match suggestion {
        Some(suggestion) => reason.push_str(&format!("; did you mean {suggestion}?")),
        None => reason.push_str(&format!("; its keys are {}", known.join(", "))),
    }
    Problem::at(
        origin,
        format!("{section}.{key}"),
        Some(show(value)),
        reason,
    )
}

/// Every entry of a section that does not exist (or a top-level key that has no section).
fn unknown_section(
    section: &str,
    value: &Value,
    origin_of: &dyn Fn(&Value, &str) -> Origin,
    problems: &mut Vec<Problem>,
) {
    let sections = keys::KEYS.iter().map(|(name, _)| *name);
    let near = suggest::nearest(section, sections);
    let Value::Dict(_, table) = value else {
        // `processes = 5` at the top of a file: a key outside any section.
        let origin = origin_of(value, "");
        let mut reason = format!("{section:?} is outside any section");
        match keys::sections_with(section).first() {
            Some(owner) => {
                reason.push_str(&format!("; did you mean {}?", origin.spell(owner, section)));
            }
            None => reason.push_str(&format!("; the sections are {}", section_list())),
        }
        problems.push(Problem::at(origin, section, Some(show(value)), reason));
        return;
    };
    for (key, value) in table {
        let origin = origin_of(value, key);
        let mut reason = format!("unknown section {section:?}");
        match near {
            Some(near) if keys::section_keys(near).is_some_and(|k| k.contains(&key.as_str())) => {
                reason.push_str(&format!("; did you mean {}?", origin.spell(near, key)));
            }
            Some(near) => reason.push_str(&format!("; did you mean {near}?")),
            None => reason.push_str(&format!("; the sections are {}", section_list())),
        }
        problems.push(Problem::at(
            origin,
            format!("{section}.{key}"),
            Some(show(value)),
            reason,
        ));
    }
}

fn section_list() -> String {
    let names: Vec<&str> = keys::KEYS.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use figment::Figment;

    use super::*;
    use crate::settings::provenance::Layer;

    fn problems_of(entries_: &[(&str, &str, Value)]) -> Vec<String> {
        let mut dict = Dict::new();
        for (section, key, value) in entries_ {
            provenance::insert(&mut dict, section, key, value.clone());
        }
        let figment = Figment::from(Layer::command_line(dict));
        let mut problems = Vec::new();
        entries(&figment, &mut problems);
        problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_good_entry_passes() {
        assert!(problems_of(&[("customer-migration", "processes", 5.into())]).is_empty());
        assert!(problems_of(&[("customer-migrator", "sleep-scale", 0.into())]).is_empty());
        assert!(problems_of(&[("customer-migrator", "batch-size", 50.into())]).is_empty());
        assert!(problems_of(&[("status-board", "mode", "minimal".into())]).is_empty());
    }

    #[test]
    fn a_wrong_type_names_key_value_and_origin() {
        assert_eq!(
            problems_of(&[("customer-migration", "processes", "abc".into())]),
            [
                "command line: customer-migration.processes = \"abc\": expected an integer, \
              0 or more, found string \"abc\""
            ]
        );
        assert_eq!(
            problems_of(&[("connection", "max-connections", (-1).into())]),
            [
                "command line: connection.max-connections = -1: expected an integer from 0 to \
              4294967295, found signed int `-1`"
            ]
        );
        assert_eq!(
            problems_of(&[("customer-migrator", "sleep-scale", true.into())]),
            [
                "command line: customer-migrator.sleep-scale = true: expected a number, \
              found bool true"
            ]
        );
    }

    #[test]
    fn an_unknown_variant_suggests_the_nearest() {
        assert_eq!(
            problems_of(&[("status-board", "mode", "minimall".into())]),
            [
                "command line: status-board.mode = \"minimall\": expected one of auto, console, \
              minimal, off, found \"minimall\"; did you mean \"minimal\"?"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_sections_suggest_the_nearest() {
        assert_eq!(
            problems_of(&[
                ("customer-migration", "proceses", 5.into()),
                ("customer-migration", "fetch-size", 5.into()),
                ("customer-migrashun", "processes", 1.into()),
                ("customer-migrashun", "colour", 1.into()),
                ("connection", "colour", 1.into()),
            ]),
            [
                "command line: connection.colour = 1: unknown key \"colour\" in section \
                 connection; its keys are url, max-connections, busy-timeout-millis, \
                 simulated-customers",
                "command line: customer-migrashun.colour = 1: unknown section \
                 \"customer-migrashun\"; did you mean customer-migration?",
                "command line: customer-migrashun.processes = 1: unknown section \
                 \"customer-migrashun\"; did you mean customer-migration.processes?",
                "command line: customer-migration.fetch-size = 5: unknown key \"fetch-size\" \
                 in section customer-migration; did you mean customer-scanner.fetch-size?",
                "command line: customer-migration.proceses = 5: unknown key \"proceses\" in \
                 section customer-migration; did you mean customer-migration.processes?",
            ]
        );
    }

    #[test]
    fn bad_entries_are_left_out_and_good_ones_kept() {
        let mut dict = Dict::new();
        provenance::insert(&mut dict, "customer-migration", "processes", "x".into());
        provenance::insert(&mut dict, "customer-migration", "rate-limit", 9.into());
        provenance::insert(&mut dict, "connection", "nothing", 9.into());
        let figment = Figment::from(Layer::command_line(dict));
        let mut problems = Vec::new();
        let passed = entries(&figment, &mut problems);
        assert_eq!(problems.len(), 2);
        let config = Config::deserialize(&passed).unwrap();
        assert_eq!(config.customer_migration.rate_limit, 9);
        assert_eq!(config.customer_migration.processes, 20);
    }

    #[test]
    fn range_problems_name_the_layer_that_set_the_value() {
        let mut dict = Dict::new();
        provenance::insert(&mut dict, "customer-migration", "processes", 0.into());
        provenance::insert(&mut dict, "connection", "url", "mysql://u:pw@h/db".into());
        let figment = Figment::from(Layer::defaults(Dict::new())).merge(Layer::command_line(dict));
        let mut config = Config::default();
        config.customer_migration.processes = 0;
        config.customer_scanner.fetch_size = 0;
        config.connection.url = "mysql://u:pw@h/db".into();
        let texts: Vec<String> = ranges(&config, &figment)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            texts,
            [
                "command line: customer-migration.processes = 0: must be between 1 and 10000",
                "default: customer-scanner.fetch-size = 0: must be between 1 and 1000000",
                "command line: connection.url = \"mysql://u:***@h/db\": must start with \
                 simulated:, sqlite: or postgres:",
            ]
        );
    }
}
