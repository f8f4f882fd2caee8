//! Positional `KEY=VALUE` overrides: `customer-migration/processes=5` (the seed's form) or
//! `customer-migration.processes=5`.
//!
//! Values are typed from their text as figment reads environment variables: `5` is an integer,
//! `0.5` a float, `true` a boolean, `[1, 2]` an array, and anything else (or anything quoted:
//! `'"5"'`) a string. Whether the type fits the key is checked later, with the other layers.

use figment::value::{Dict, Value};
use migrate_core::mask_url;

use super::keys;
use super::problem::Problem;
use super::provenance::{self, Layer, Origin};
use super::suggest;

/// The layer of every well-formed override, later arguments winning; malformed ones go to
/// `problems`.
pub(crate) fn layer(arguments: &[String], problems: &mut Vec<Problem>) -> Layer {
    let mut dict = Dict::new();
    for argument in arguments {
        match parse(argument) {
            Ok((section, key, value)) => provenance::insert(&mut dict, section, key, value),
            Err(reason) => problems.push(Problem::new(Origin::CommandLine, reason)),
        }
    }
    Layer::command_line(dict)
}

/// `section/key=value` or `section.key=value` as its parts, or why it is not one. The
/// argument and its value are masked in the reason: a malformed argument may still hold a
/// connection URL with its password.
fn parse(argument: &str) -> Result<(&str, &str, Value), String> {
    let shown = mask_url(argument);
    let Some((path, text)) = argument.split_once('=') else {
        return Err(format!(
            "{shown:?} is not KEY=VALUE (for example customer-migration.processes=5)"
        ));
    };
    let path = path.trim();
    let parts: Vec<&str> = path.split(['/', '.']).collect();
    let value: Value = text.parse().unwrap_or_else(|never| match never {});
    match parts.as_slice() {
        [section, key] if !section.is_empty() && !key.is_empty() => Ok((section, key, value)),
        [name] => Err(no_section(&shown, name, &mask_url(text))),
        _ => Err(format!(
            "{shown:?}: the key must be SECTION.KEY or SECTION/KEY \
             (for example customer-migration.processes=5)"
        )),
    }
}

/// Why `name=text` needs a section, with what it most likely meant: the key of that name, a
/// section of that name, a near key, a near section, in that order. `argument` and `text` come
/// masked.
fn no_section(argument: &str, name: &str, text: &str) -> String {
    let sections = || keys::KEYS.iter().map(|(section, _)| *section);
    let is_key = !keys::sections_with(name).is_empty();
    let is_section = keys::section_keys(name).is_some();
    let key = if is_key {
        Some(name)
    } else if is_section {
        None
    } else {
        suggest::nearest(name, keys::all_keys().map(|(_, key)| key))
    };
    if let Some(key) = key {
        let fixes: Vec<String> = keys::sections_with(key)
            .iter()
            .map(|section| format!("{section}.{key}={text}"))
            .collect();
        return format!(
            "{argument:?}: the key {name:?} has no section; did you mean {}?",
            fixes.join(" or ")
        );
    }
    let section = if is_section {
        Some(name)
    } else {
        suggest::nearest(name, sections())
    };
    match section {
        Some(section) => {
            format!("{argument:?}: {section} is a section, not a key: write {section}.KEY={text}")
        }
        None => format!("{argument:?}: the key {name:?} has no section (write SECTION.KEY={text})"),
    }
}

#[cfg(test)]
mod tests {
    use figment::Figment;

    use super::*;

    fn arguments(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn both_forms_set_the_key() {
        let (section, key, value) = parse("customer-migration/processes=5").unwrap();
        assert_eq!((section, key), ("customer-migration", "processes"));
        assert_eq!(value, Value::from(5u8));
        let (section, key, _) = parse("customer-migration.processes=5").unwrap();
        assert_eq!((section, key), ("customer-migration", "processes"));
    }

    #[test]
    fn values_are_typed_from_their_text() {
        let typed = |text: &str| parse(&format!("a.b={text}")).unwrap().2;
        assert_eq!(typed("5").to_u128(), Some(5));
        assert_eq!(typed("-5").to_i128(), Some(-5));
        assert_eq!(typed("true").to_bool(), Some(true));
        assert_eq!(typed("0.5").to_f64(), Some(0.5));
        assert_eq!(typed("abc").as_str(), Some("abc"));
        assert_eq!(typed("\"5\"").as_str(), Some("5"));
        assert_eq!(typed("sqlite://a.db").as_str(), Some("sqlite://a.db"));
        assert_eq!(typed("").as_str(), Some(""));
        // Only the first `=` separates: the rest belongs to the value.
        assert_eq!(
            typed("postgres://h/db?sslmode=require").as_str(),
            Some("postgres://h/db?sslmode=require")
        );
    }

    #[test]
    fn later_arguments_win() {
        let mut problems = Vec::new();
        let layer = layer(
            &arguments(&[
                "customer-migration.processes=5",
                "customer-migration/processes=6",
                "customer-migration.rate-limit=9",
            ]),
            &mut problems,
        );
        assert!(problems.is_empty());
        let figment = Figment::from(layer);
        assert_eq!(
            figment
                .extract_inner::<u32>("customer-migration.processes")
                .unwrap(),
            6
        );
        assert_eq!(
            figment
                .extract_inner::<u32>("customer-migration.rate-limit")
                .unwrap(),
            9
        );
    }

    #[test]
    fn malformed_arguments_are_each_reported() {
        let mut problems = Vec::new();
        layer(
            &arguments(&[
                "processes5",
                "processes=5",
                "a.b.c=1",
                ".processes=1",
                "connection=1",
                "proceses=2",
                "colour=red",
                "customer-migration.processes=1",
            ]),
            &mut problems,
        );
        let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            texts,
            [
                "command line: \"processes5\" is not KEY=VALUE \
                 (for example customer-migration.processes=5)",
                "command line: \"processes=5\": the key \"processes\" has no section; \
                 did you mean customer-migration.processes=5?",
                "command line: \"a.b.c=1\": the key must be SECTION.KEY or SECTION/KEY \
                 (for example customer-migration.processes=5)",
                "command line: \".processes=1\": the key must be SECTION.KEY or \
                 SECTION/KEY (for example customer-migration.processes=5)",
                "command line: \"connection=1\": connection is a section, not a key: \
                 write connection.KEY=1",
                "command line: \"proceses=2\": the key \"proceses\" has no section; \
                 did you mean customer-migration.processes=2?",
                "command line: \"colour=red\": the key \"colour\" has no section \
                 (write SECTION.KEY=red)",
            ]
        );
    }
}
