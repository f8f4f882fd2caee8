//! `--show-config`: the merged configuration as TOML, each value with its origin.

use std::fmt::Write as _;

use figment::Figment;
use migrate_core::{Config, mask_url};

use super::keys;
use super::provenance::Origin;

/// The configuration as TOML, sections in the order of `conf/`, and after each value the layer
/// it came from: `processes = 5  # from command line`. Credentials in any URL are masked.
/// `header` opens the text as a comment.
pub(crate) fn render(config: &Config, figment: &Figment, header: &str) -> String {
    let table = match toml::Value::try_from(config) {
        Ok(toml::Value::Table(table)) => table,
        // Only a path that is not UTF-8 fails to serialize; such a key is shown as unset.
        _ => toml::Table::new(),
    };
    let mut text = String::new();
    for line in header.lines() {
        let _ = writeln!(text, "# {line}");
    }
    for (section, keys) in keys::KEYS {
        let values = table.get(section).and_then(toml::Value::as_table);
        let rows: Vec<(String, Option<Origin>)> = keys
            .iter()
            .map(|key| match values.and_then(|values| values.get(*key)) {
                Some(value) => {
                    // Every text is masked, not only `connection.url`: a URL pasted into a path
                    // key is a valid path, and would be printed whole.
                    let value = match value {
                        toml::Value::String(text) => toml::Value::String(mask_url(text)),
                        _ => value.clone(),
                    };
                    let origin = Origin::find(figment, section, key);
                    (format!("{key} = {value}"), Some(origin))
                }
                None => (
                    match *key {
                        "metrics-addr" => format!("# {key} is unset: no metrics are served"),
                        _ => format!("# {key} is unset: the backend's default applies"),
                    },
                    None,
                ),
            })
            .collect();
        let width = rows
            .iter()
            .filter(|(_, origin)| origin.is_some())
            .map(|(row, _)| row.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(text, "\n[{section}]");
        for (row, origin) in rows {
            match origin {
                Some(origin) => {
                    let _ = writeln!(text, "{row:<width$}  # from {origin}");
                }
                None => {
                    let _ = writeln!(text, "{row}");
                }
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use figment::value::Dict;

    use super::*;
    use crate::settings::provenance::{self, Layer};

    #[test]
    fn every_key_is_shown_with_its_origin_and_the_password_masked() {
        let mut config = Config::default();
        config.connection.url = "postgres://app:secret@db/customers".into();
        config.customer_migration.processes = 5;
        let mut dict = Dict::new();
        provenance::insert(&mut dict, "customer-migration", "processes", 5.into());
        provenance::insert(
            &mut dict,
            "connection",
            "url",
            "postgres://app:secret@db/customers".into(),
        );
        let defaults = figment::value::Value::serialize(Config::default())
            .unwrap()
            .into_dict()
            .unwrap();
        let figment = Figment::from(Layer::defaults(defaults)).merge(Layer::command_line(dict));
        let text = render(&config, &figment, "merged");
        assert!(
            text.starts_with("# merged\n\n[status-board]\nmode = \"auto\""),
            "{text}"
        );
        assert!(!text.contains("secret"), "{text}");
        let line = |start: &str| {
            text.lines()
                .find(|line| line.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start} in {text}"))
                .to_owned()
        };
        assert_eq!(
            line("url"),
            "url = \"postgres://app:***@db/customers\"  # from command line"
        );
        assert!(line("processes = 5 ").ends_with("# from command line"));
        assert!(line("max-failures = 1000 ").ends_with("# from default"));
        assert!(line("sleep-scale = 1.0 ").ends_with("# from default"));
        assert_eq!(
            line("# batch-size"),
            "# batch-size is unset: the backend's default applies"
        );
        for (_, keys) in keys::KEYS {
            for key in keys {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{key} = "))
                        || l.starts_with(&format!("# {key} "))),
                    "{key} missing from {text}"
                );
            }
        }
        // The text is TOML: it reads back as the configuration shown.
        let mut back: Config = toml::from_str(&text).unwrap();
        back.connection.url = config.connection.url.clone();
        assert_eq!(back, config);
    }
}
