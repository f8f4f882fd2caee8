//! One thing wrong with the configuration, said with its origin, key and value.

use std::fmt;

use figment::value::Value;
use migrate_core::mask_url;

use super::provenance::Origin;

/// One thing wrong with the configuration.
///
/// Prints as `ORIGIN: KEY = VALUE: REASON`, for example
/// `command line: customer-migration.processes = "abc": expected an integer, found string "abc"`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Problem {
    /// Where the bad entry came from.
    pub origin: Origin,
    /// The dotted key (`customer-migration.processes`), when the problem has one.
    pub key: Option<String>,
    /// The value as given, credentials masked, when the problem has one.
    pub value: Option<String>,
    /// What is wrong, with a suggestion when one is known.
    pub reason: String,
}

impl Problem {
    /// A problem with no key: a missing file, a malformed argument or variable name.
    pub(crate) fn new(origin: Origin, reason: impl Into<String>) -> Problem {
        Problem {
            origin,
            key: None,
            value: None,
            reason: reason.into(),
        }
    }

    /// A problem with the value of `key`.
    pub(crate) fn at(
        origin: Origin,
        key: impl Into<String>,
        value: Option<String>,
        reason: impl Into<String>,
    ) -> Problem {
        Problem {
            origin,
            key: Some(key.into()),
            value,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.origin)?;
        match (&self.key, &self.value) {
            (Some(key), Some(value)) => write!(f, "{key} = {value}: ")?,
            (Some(key), None) => write!(f, "{key}: ")?,
            (None, _) => {}
        }
        f.write_str(&self.reason)
    }
}

/// A figment value as TOML would write it (`5`, `"abc"`, `true`), with any password in a URL
/// masked, also inside an array or a table: a value shown in an error may be a misplaced
/// connection URL.
pub(crate) fn show(value: &Value) -> String {
    match masked(value) {
        Value::String(_, text) => format!("{text:?}"),
        Value::Empty(..) => "(none)".to_owned(),
        other => toml::Value::try_from(&other)
            .map(|v| v.to_string())
            // Not TOML (a value figment alone knows): its debug form, masked as a whole.
            .unwrap_or_else(|_| mask_url(&format!("{other:?}"))),
    }
}

/// `value` with every string in it masked.
fn masked(value: &Value) -> Value {
    match value {
        Value::String(tag, text) => Value::String(*tag, mask_url(text)),
        Value::Array(tag, items) => Value::Array(*tag, items.iter().map(masked).collect()),
        Value::Dict(tag, dict) => Value::Dict(
            *tag,
            dict.iter()
                .map(|(key, value)| (key.clone(), masked(value)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn problems_say_origin_key_value_and_reason() {
        let problem = Problem::at(
            Origin::CommandLine,
            "customer-migration.processes",
            Some("\"abc\"".into()),
            "expected an integer",
        );
        assert_eq!(
            problem.to_string(),
            "command line: customer-migration.processes = \"abc\": expected an integer"
        );
        let problem = Problem::new(Origin::File(PathBuf::from("extra.toml")), "file not found");
        assert_eq!(problem.to_string(), "extra.toml: file not found");
    }

    #[test]
    fn values_show_as_toml_with_passwords_masked() {
        assert_eq!(show(&Value::from(5)), "5");
        assert_eq!(show(&Value::from(0.5)), "0.5");
        assert_eq!(show(&Value::from(true)), "true");
        assert_eq!(show(&Value::from("abc")), "\"abc\"");
        assert_eq!(
            show(&Value::from("postgres://u:secret@h/db")),
            "\"postgres://u:***@h/db\""
        );
        assert_eq!(show(&Value::from(vec![1, 2])), "[1, 2]");
        let urls = Value::from(vec!["postgres://u:a/b@h/db", "postgres://v:c?d@h/db"]);
        assert_eq!(
            show(&urls),
            "[\"postgres://u:***@h/db\", \"postgres://v:***@h/db\"]"
        );
        let mut dict = figment::value::Dict::new();
        dict.insert("url".into(), Value::from("postgres://u:a#b@h/db"));
        assert_eq!(
            show(&Value::from(dict)),
            "{ url = \"postgres://u:***@h/db\" }"
        );
    }
}
