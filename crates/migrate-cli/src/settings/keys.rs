//! The known sections and keys, in the order of the `conf/` files and of `--show-config`.
//!
//! serde knows the fields of each struct but does not list them; this table does, so that a typo
//! can be matched against every key and the merged configuration printed in a stable order. A test
//! keeps it equal to the fields of [`migrate_core::Config`].

/// Every section with its keys, in the order of the structs in `migrate_core::config`.
pub(crate) const KEYS: [(&str, &[&str]); 5] = [
    (
        "status-board",
        &[
            "mode",
            "update-millis",
            "dim-after-millis",
            "metrics-addr",
            "metrics-linger-millis",
        ],
    ),
    (
        "connection",
        &[
            "url",
            "max-connections",
            "busy-timeout-millis",
            "simulated-customers",
        ],
    ),
    (
        "customer-scanner",
        &["fetch-size", "block-size", "paging-state-path"],
    ),
    (
        "customer-migrator",
        &["log-file", "batch-size", "sleep-scale", "failure-rate"],
    ),
    (
        "customer-migration",
        &[
            "processes",
            "max-failures",
            "retry-attempts",
            "retry-initial-delay-millis",
            "retry-max-delay-millis",
            "grace-period-millis",
            "rate-limit",
            "checkpoint-interval-millis",
            "event-interval-millis",
            "batch-linger-millis",
            "max-pending",
            "batch-target-millis",
            "batch-size-min",
            "batch-size-max",
            "throttle-query",
            "throttle-interval-millis",
            "max-replication-lag-millis",
            "lock-timeout-millis",
            "statement-timeout-millis",
        ],
    ),
];

/// The keys of `section`, if it is one.
pub(crate) fn section_keys(section: &str) -> Option<&'static [&'static str]> {
    KEYS.iter()
        .find(|(name, _)| *name == section)
        .map(|(_, keys)| *keys)
}

/// Every `(section, key)` pair.
pub(crate) fn all_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYS.iter()
        .flat_map(|(section, keys)| keys.iter().map(move |key| (*section, *key)))
}

/// The sections that have a key named `key`.
pub(crate) fn sections_with(key: &str) -> Vec<&'static str> {
    all_keys()
        .filter(|(_, k)| *k == key)
        .map(|(section, _)| section)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use migrate_core::Config;

    use super::*;

    #[test]
    fn the_table_lists_every_field_of_config() {
        let mut config = Config::default();
        // The optional fields; set so that they serialize.
        config.customer_migrator.batch_size = Some(1);
        config.customer_migration.throttle_query = Some("SELECT 0".into());
        config.status_board.metrics_addr = Some("127.0.0.1:9187".to_owned());
        let toml::Value::Table(sections) = toml::Value::try_from(&config).unwrap() else {
            panic!("a config serializes to a table");
        };
        let serialized: BTreeSet<(String, String)> = sections
            .iter()
            .flat_map(|(section, table)| {
                let table = table.as_table().expect("each section is a table");
                table.keys().map(|key| (section.clone(), key.clone()))
            })
            .collect();
        let listed: BTreeSet<(String, String)> = all_keys()
            .map(|(section, key)| (section.to_owned(), key.to_owned()))
            .collect();
        assert_eq!(listed, serialized);
    }

    #[test]
    fn sections_match_the_public_list() {
        let names: Vec<&str> = KEYS.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, crate::settings::SECTIONS);
    }

    #[test]
    fn lookups() {
        assert_eq!(section_keys("customer-scanner").unwrap().len(), 3);
        assert!(section_keys("customer").is_none());
        assert_eq!(sections_with("processes"), ["customer-migration"]);
        assert!(sections_with("nothing").is_empty());
    }
}
