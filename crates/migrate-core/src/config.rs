//! Typed configuration, one struct per component section.
//!
//! Keys are kebab-case as in the `conf/` files (`customer-migration.processes`). Every struct
//! rejects unknown keys and has defaults equal to the shipped `conf/` files, so the engine runs
//! with no configuration file at all. Where the values come from (files, environment, command
//! line) is the binary's concern; [`Config::validate`] checks ranges and names the bad key.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration: one section per component.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct Config {
    /// `[status-board]`
    pub status_board: StatusBoardConfig,
    /// `[connection]`
    pub connection: ConnectionConfig,
    /// `[customer-scanner]`
    pub customer_scanner: ScannerConfig,
    /// `[customer-migrator]`
    pub customer_migrator: MigratorConfig,
    /// `[customer-migration]`, the overseer's section (named as in the seed).
    pub customer_migration: MigrationConfig,
}

/// How the status board draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BoardMode {
    /// `console` on a terminal, `minimal` otherwise.
    #[default]
    Auto,
    /// The live board: a line per job, rewritten in place.
    Console,
    /// A plain line whenever a job's text changes (rate-limited).
    Minimal,
    /// Nothing but the final summary.
    Off,
}

/// `[status-board]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct StatusBoardConfig {
    /// `auto`, `console`, `minimal` or `off`.
    pub mode: BoardMode,
    /// Least time between two redraws, in milliseconds.
    pub update_millis: u64,
    /// A changed line stays bold this long, then turns normal, in milliseconds.
    pub dim_after_millis: u64,
}

impl Default for StatusBoardConfig {
    fn default() -> Self {
        StatusBoardConfig {
            mode: BoardMode::Auto,
            update_millis: 100,
            dim_after_millis: 1000,
        }
    }
}

/// `[connection]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// `simulated:`, `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`.
    pub url: String,
    /// Most connections in the database pool.
    pub max_connections: u32,
    /// How long a statement waits for a locked SQLite database, in milliseconds.
    pub busy_timeout_millis: u64,
    /// How many customers the simulated backend pretends to hold.
    pub simulated_customers: u64,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            url: "simulated:".to_owned(),
            max_connections: 8,
            busy_timeout_millis: 5000,
            simulated_customers: 1000,
        }
    }
}

/// `[customer-scanner]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// Ids read per page (`LIMIT`). The scanner holds at most one page.
    pub fetch_size: usize,
    /// Capacity of the channel between the scanner and the jobs. With `fetch-size`, bounds how
    /// far the scanner runs ahead: memory stays flat whatever the row count.
    pub block_size: usize,
    /// Where the simulated backend keeps its checkpoint (databases keep it in a table).
    pub paging_state_path: PathBuf,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            fetch_size: 1000,
            block_size: 100,
            paging_state_path: PathBuf::from("state/paging-state.json"),
        }
    }
}

/// `[customer-migrator]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MigratorConfig {
    /// The audit log: a line per migrated customer. Failures go to a `.failures.jsonl` file
    /// beside it (simulated backend) or to the `migration_failures` table (databases).
    pub log_file: PathBuf,
    /// Ids a job migrates in one go (one transaction on a database). Unset: 1 for the simulated
    /// backend, 1000 for databases (see `docs/benchmarks.md`).
    pub batch_size: Option<usize>,
    /// Simulated backend: multiplies its sleeps (1.0 as the seed, 0 to measure the engine alone).
    pub sleep_scale: f64,
    /// Simulated backend: the share of records whose migration fails (0.0 to 1.0).
    pub failure_rate: f64,
}

impl Default for MigratorConfig {
    fn default() -> Self {
        MigratorConfig {
            log_file: PathBuf::from("state/migration.log"),
            batch_size: None,
            sleep_scale: 1.0,
            failure_rate: 0.0,
        }
    }
}

/// `[customer-migration]`: the overseer and its jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct MigrationConfig {
    /// Migration jobs running at once.
    pub processes: usize,
    /// The run aborts when more records than this have failed. 0: no limit.
    pub max_failures: u64,
    /// Attempts for a record whose failure may pass (a lost connection, a write conflict).
    pub retry_attempts: u32,
    /// Backoff before the second attempt, in milliseconds; doubles each time, with jitter.
    pub retry_initial_delay_millis: u64,
    /// Longest backoff between two attempts, in milliseconds.
    pub retry_max_delay_millis: u64,
    /// After Ctrl-C, how long jobs may take to finish the records they hold, in milliseconds.
    pub grace_period_millis: u64,
    /// Most records per second for the whole run. 0: no limit.
    pub rate_limit: u64,
    /// How often progress is saved, in milliseconds.
    pub checkpoint_interval_millis: u64,
    /// Least time between two text events of one job, in milliseconds.
    pub event_interval_millis: u64,
    /// How long a job holding part of a batch waits for the rest before it migrates what it
    /// has, in milliseconds. Lets jobs fill their batches when many share one channel.
    pub batch_linger_millis: u64,
    /// Most records the scanner may be ahead of the checkpoint's low-water mark. While one
    /// record is slow (a long retry, a row locked by the application), the records finished
    /// after it are kept in memory and in each checkpoint: this bounds both, and the scanner
    /// waits at the bound. Twice what the jobs hold (`processes` times the batch size) plus
    /// the channel and a page is always allowed.
    pub max_pending: usize,
}

impl Default for MigrationConfig {
    fn default() -> Self {
        MigrationConfig {
            processes: 20,
            max_failures: 1000,
            retry_attempts: 3,
            retry_initial_delay_millis: 100,
            retry_max_delay_millis: 5000,
            grace_period_millis: 10_000,
            rate_limit: 0,
            checkpoint_interval_millis: 1000,
            event_interval_millis: 50,
            batch_linger_millis: 20,
            max_pending: 100_000,
        }
    }
}

impl MigrationConfig {
    /// `grace-period-millis` as a duration.
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_millis)
    }
}

/// A value that is well-formed but out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct InvalidValue {
    /// The dotted key (`customer-migration.processes`).
    pub key: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Config {
    /// Checks every range; returns all problems, not only the first.
    pub fn validate(&self) -> Result<(), Vec<InvalidValue>> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &'static str, value: String, reason: &'static str| {
            if !ok {
                problems.push(InvalidValue { key, value, reason });
            }
        };
        let m = &self.customer_migration;
        check(
            (1..=10_000).contains(&m.processes),
            "customer-migration.processes",
            m.processes.to_string(),
            "must be between 1 and 10000",
        );
        check(
            (1..=100).contains(&m.retry_attempts),
            "customer-migration.retry-attempts",
            m.retry_attempts.to_string(),
            "must be between 1 and 100",
        );
        check(
            m.retry_initial_delay_millis <= m.retry_max_delay_millis,
            "customer-migration.retry-initial-delay-millis",
            m.retry_initial_delay_millis.to_string(),
            "must not exceed retry-max-delay-millis",
        );
        check(
            (1..=100_000_000).contains(&m.max_pending),
            "customer-migration.max-pending",
            m.max_pending.to_string(),
            "must be between 1 and 100000000",
        );
        check(
            m.checkpoint_interval_millis > 0,
            "customer-migration.checkpoint-interval-millis",
            m.checkpoint_interval_millis.to_string(),
            "must be at least 1",
        );
        let s = &self.customer_scanner;
        check(
            (1..=1_000_000).contains(&s.fetch_size),
            "customer-scanner.fetch-size",
            s.fetch_size.to_string(),
            "must be between 1 and 1000000",
        );
        check(
            (1..=1_000_000).contains(&s.block_size),
            "customer-scanner.block-size",
            s.block_size.to_string(),
            "must be between 1 and 1000000",
        );
        check(
            !s.paging_state_path.as_os_str().is_empty(),
            "customer-scanner.paging-state-path",
            String::new(),
            "must not be empty",
        );
        let g = &self.customer_migrator;
        if let Some(batch) = g.batch_size {
            check(
                (1..=10_000).contains(&batch),
                "customer-migrator.batch-size",
                batch.to_string(),
                "must be between 1 and 10000",
            );
        }
        check(
            g.sleep_scale.is_finite() && g.sleep_scale >= 0.0,
            "customer-migrator.sleep-scale",
            g.sleep_scale.to_string(),
            "must be 0 or more",
        );
        check(
            (0.0..=1.0).contains(&g.failure_rate),
            "customer-migrator.failure-rate",
            g.failure_rate.to_string(),
            "must be between 0.0 and 1.0",
        );
        check(
            !g.log_file.as_os_str().is_empty(),
            "customer-migrator.log-file",
            String::new(),
            "must not be empty",
        );
        let c = &self.connection;
        check(
            (1..=1000).contains(&c.max_connections),
            "connection.max-connections",
            c.max_connections.to_string(),
            "must be between 1 and 1000",
        );
        check(
            ["simulated:", "sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|scheme| c.url.starts_with(scheme)),
            "connection.url",
            crate::connection::mask_url(&c.url),
            "must start with simulated:, sqlite: or postgres:",
        );
        let b = &self.status_board;
        check(
            b.update_millis > 0,
            "status-board.update-millis",
            b.update_millis.to_string(),
            "must be at least 1",
        );
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn zero_processes_is_rejected_with_its_key() {
        let mut config = Config::default();
        config.customer_migration.processes = 0;
        let problems = config.validate().unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(
            problems[0].to_string(),
            "customer-migration.processes = 0: must be between 1 and 10000"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let mut config = Config::default();
        config.customer_scanner.fetch_size = 0;
        config.customer_migrator.failure_rate = 2.0;
        config.connection.url = "mysql://u:secret@h/db".into();
        let keys: Vec<_> = config
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "customer-scanner.fetch-size",
                "customer-migrator.failure-rate",
                "connection.url"
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = toml::from_str::<Config>("[customer-migration]\nproceses = 5\n");
        assert!(error.is_err());
    }
}
