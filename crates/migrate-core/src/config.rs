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
    /// `HOST:PORT` where the CLI serves Prometheus metrics (`/metrics`) while a run lasts;
    /// unset: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
    /// After the run, how long `/metrics` stays up waiting for a last scrape, in milliseconds.
    pub metrics_linger_millis: u64,
}

impl Default for StatusBoardConfig {
    fn default() -> Self {
        StatusBoardConfig {
            mode: BoardMode::Auto,
            update_millis: 100,
            dim_after_millis: 1000,
            metrics_addr: None,
            metrics_linger_millis: 0,
        }
    }
}

/// `[connection]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ConnectionConfig {
    /// `simulated:`, `sqlite://PATH` or `postgres://USER:PASSWORD@HOST/DB`.
    pub url: String,
    /// Most connections in the database pool: how many batches write at once. Four by default,
    /// which keeps a small server's cores for its other work; a server with cores to spare
    /// takes more (see `docs/configuration.md`).
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
            max_connections: 4,
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
    /// The time a batch should take, in milliseconds: the batch size adapts to it between
    /// `batch-size-min` and `batch-size-max` (see `engine/batch_size.rs`). 0 turns adaptation
    /// off; so does a `batch-size` given explicitly.
    pub batch_target_millis: u64,
    /// The least an adaptive batch holds.
    pub batch_size_min: usize,
    /// The most an adaptive batch holds.
    pub batch_size_max: usize,
    /// SQL returning one number, asked every `throttle-interval-millis`: above 0, no batch
    /// starts until it is 0 again. Unset: none.
    pub throttle_query: Option<String>,
    /// How often the database's health is checked, in milliseconds.
    pub throttle_interval_millis: u64,
    /// PostgreSQL: no batch starts while a replica's `replay_lag` (`pg_stat_replication`) is
    /// over this many milliseconds. 0: not checked.
    pub max_replication_lag_millis: u64,
    /// PostgreSQL: how long a batch's transaction waits for a lock another session holds
    /// (`SET LOCAL lock_timeout`), in milliseconds, at most `grace-period-millis` (see
    /// [`BatchTimeouts`](crate::BatchTimeouts)). A batch that times out is retried, split, and
    /// its locked records left for the next run: never recorded as failures. SQLite waits
    /// for another process's write lock for `connection.busy-timeout-millis` instead.
    pub lock_timeout_millis: u64,
    /// PostgreSQL: how long one statement of a batch may run (`SET LOCAL statement_timeout`),
    /// in milliseconds; treated as a lock timeout when it fires. 0: the database's own setting.
    pub statement_timeout_millis: u64,
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
            batch_target_millis: 20,
            batch_size_min: 10,
            batch_size_max: 10_000,
            throttle_query: None,
            throttle_interval_millis: 1000,
            max_replication_lag_millis: 0,
            lock_timeout_millis: 1000,
            statement_timeout_millis: 30_000,
        }
    }
}

impl MigrationConfig {
    /// `grace-period-millis` as a duration.
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.grace_period_millis)
    }
}

/// The greatest value of every `*-millis` key: 2147483647 ms, about 24.8 days. It is the busy
/// timeout's own limit (SQLite takes it as an `i32` of milliseconds, and sqlx panics in its
/// worker past it), and far inside what the timers accept everywhere (tokio's timer wheel spans
/// about two years; an `Instant` plus a `Duration` past its clock's range panics). One bound for
/// every duration keeps the rule simple to state.
const MAX_MILLIS: u64 = i32::MAX as u64;

/// The most `sleep-scale` multiplies the simulated sleeps by: a record then takes up to about
/// five minutes. A larger factor is no demo, and the sleeps overflow a `Duration` past ~7e19.
const MAX_SLEEP_SCALE: f64 = 1000.0;

/// The most records per second `rate-limit` may ask for: the limiter spaces records by
/// `1 s / rate` in whole nanoseconds, so a larger rate would round to no spacing at all.
const MAX_RATE_LIMIT: u64 = 1_000_000_000;

/// The most records an adaptive batch may hold (`batch-size-min`, `batch-size-max`).
const MAX_BATCH_SIZE: usize = 1_000_000;

/// A value that is well-formed but out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} = {value}: {reason}")]
pub struct InvalidValue {
    /// The dotted key (`customer-migration.processes`).
    pub key: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The problems found so far by [`Config::validate`].
#[derive(Default)]
struct Checks(Vec<InvalidValue>);

impl Checks {
    fn check(&mut self, ok: bool, key: &'static str, value: String, reason: impl Into<String>) {
        if !ok {
            self.0.push(InvalidValue {
                key,
                value,
                reason: reason.into(),
            });
        }
    }

    /// An integer between `min` and `max`, both included.
    fn integer<T>(&mut self, key: &'static str, value: T, min: T, max: T)
    where
        T: PartialOrd + std::fmt::Display,
    {
        let reason = format!("must be between {min} and {max}");
        self.check(min <= value && value <= max, key, value.to_string(), reason);
    }

    /// A duration in milliseconds, from `min` to [`MAX_MILLIS`].
    fn millis(&mut self, key: &'static str, value: u64, min: u64) {
        let reason = format!("must be between {min} and {MAX_MILLIS} (about 24 days)");
        self.check(
            (min..=MAX_MILLIS).contains(&value),
            key,
            value.to_string(),
            reason,
        );
    }

    /// A finite number between `min` and `max` (NaN fails every comparison, so it fails here).
    fn number(&mut self, key: &'static str, value: f64, min: f64, max: f64) {
        let reason = format!("must be between {min:?} and {max:?}");
        self.check(
            value.is_finite() && min <= value && value <= max,
            key,
            value.to_string(),
            reason,
        );
    }
}

impl Config {
    /// Checks every range; returns all problems, not only the first.
    ///
    /// Each numeric key's range is what its consumer accepts, so that a value that passes here
    /// cannot make the run panic later (a busy timeout past SQLite's `i32`, a sleep past a
    /// `Duration`, a pool of no connection). `max-failures` alone takes any value: it is only
    /// compared.
    pub fn validate(&self) -> Result<(), Vec<InvalidValue>> {
        let mut checks = Checks::default();
        let m = &self.customer_migration;
        checks.integer("customer-migration.processes", m.processes, 1, 10_000);
        checks.integer(
            "customer-migration.retry-attempts",
            m.retry_attempts,
            1,
            100,
        );
        checks.millis(
            "customer-migration.retry-initial-delay-millis",
            m.retry_initial_delay_millis,
            0,
        );
        // Past the range, the range error alone is enough.
        checks.check(
            m.retry_initial_delay_millis > MAX_MILLIS
                || m.retry_initial_delay_millis <= m.retry_max_delay_millis,
            "customer-migration.retry-initial-delay-millis",
            m.retry_initial_delay_millis.to_string(),
            "must not exceed retry-max-delay-millis",
        );
        checks.integer(
            "customer-migration.max-pending",
            m.max_pending,
            1,
            100_000_000,
        );
        checks.millis(
            "customer-migration.retry-max-delay-millis",
            m.retry_max_delay_millis,
            0,
        );
        checks.millis(
            "customer-migration.grace-period-millis",
            m.grace_period_millis,
            0,
        );
        checks.integer(
            "customer-migration.rate-limit",
            m.rate_limit,
            0,
            MAX_RATE_LIMIT,
        );
        checks.millis(
            "customer-migration.checkpoint-interval-millis",
            m.checkpoint_interval_millis,
            1,
        );
        checks.millis(
            "customer-migration.event-interval-millis",
            m.event_interval_millis,
            0,
        );
        checks.millis(
            "customer-migration.batch-linger-millis",
            m.batch_linger_millis,
            0,
        );
        checks.millis(
            "customer-migration.batch-target-millis",
            m.batch_target_millis,
            0,
        );
        checks.integer(
            "customer-migration.batch-size-min",
            m.batch_size_min,
            1,
            MAX_BATCH_SIZE,
        );
        checks.integer(
            "customer-migration.batch-size-max",
            m.batch_size_max,
            1,
            MAX_BATCH_SIZE,
        );
        checks.check(
            !(1..=MAX_BATCH_SIZE).contains(&m.batch_size_min)
                || !(1..=MAX_BATCH_SIZE).contains(&m.batch_size_max)
                || m.batch_size_min <= m.batch_size_max,
            "customer-migration.batch-size-min",
            m.batch_size_min.to_string(),
            "must not exceed batch-size-max",
        );
        checks.millis(
            "customer-migration.throttle-interval-millis",
            m.throttle_interval_millis,
            1,
        );
        checks.millis(
            "customer-migration.max-replication-lag-millis",
            m.max_replication_lag_millis,
            0,
        );
        // PostgreSQL takes no lock timeout of 0 as "none": at least a millisecond.
        checks.millis(
            "customer-migration.lock-timeout-millis",
            m.lock_timeout_millis,
            1,
        );
        checks.millis(
            "customer-migration.statement-timeout-millis",
            m.statement_timeout_millis,
            0,
        );
        if let Some(query) = &m.throttle_query {
            checks.check(
                !query.trim().is_empty(),
                "customer-migration.throttle-query",
                String::new(),
                "must not be empty (leave it out for no throttle query)",
            );
        }
        let s = &self.customer_scanner;
        checks.integer("customer-scanner.fetch-size", s.fetch_size, 1, 1_000_000);
        checks.integer("customer-scanner.block-size", s.block_size, 1, 1_000_000);
        checks.check(
            !s.paging_state_path.as_os_str().is_empty(),
            "customer-scanner.paging-state-path",
            String::new(),
            "must not be empty",
        );
        let g = &self.customer_migrator;
        if let Some(batch) = g.batch_size {
            checks.integer("customer-migrator.batch-size", batch, 1, 10_000);
        }
        checks.number(
            "customer-migrator.sleep-scale",
            g.sleep_scale,
            0.0,
            MAX_SLEEP_SCALE,
        );
        checks.number("customer-migrator.failure-rate", g.failure_rate, 0.0, 1.0);
        checks.check(
            !g.log_file.as_os_str().is_empty(),
            "customer-migrator.log-file",
            String::new(),
            "must not be empty",
        );
        let c = &self.connection;
        // sqlx's pools need at least one connection.
        checks.integer("connection.max-connections", c.max_connections, 1, 1000);
        checks.millis("connection.busy-timeout-millis", c.busy_timeout_millis, 0);
        // Simulated ids grow by up to 100 from 10,000 and must fit an i64.
        checks.integer(
            "connection.simulated-customers",
            c.simulated_customers,
            0,
            crate::customer::simulated::MAX_CUSTOMERS,
        );
        checks.check(
            ["simulated:", "sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|scheme| c.url.starts_with(scheme)),
            "connection.url",
            crate::connection::mask_url(&c.url),
            "must start with simulated:, sqlite: or postgres:",
        );
        let b = &self.status_board;
        checks.millis("status-board.update-millis", b.update_millis, 1);
        checks.millis("status-board.dim-after-millis", b.dim_after_millis, 0);
        checks.millis(
            "status-board.metrics-linger-millis",
            b.metrics_linger_millis,
            0,
        );
        if let Some(addr) = &b.metrics_addr {
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            let ok = matches!(port, Some((host, Ok(_))) if !host.is_empty());
            checks.check(
                ok,
                "status-board.metrics-addr",
                addr.clone(),
                "must be HOST:PORT",
            );
        }
        if checks.0.is_empty() {
            Ok(())
        } else {
            Err(checks.0)
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

    /// An integer key: how to set it, and the least and greatest value it accepts.
    struct IntegerKey {
        key: &'static str,
        set: fn(&mut Config, u64),
        min: u64,
        max: u64,
    }

    /// A number key, as [`IntegerKey`].
    struct NumberKey {
        key: &'static str,
        set: fn(&mut Config, f64),
        min: f64,
        max: f64,
    }

    /// Every integer key with the range its consumer accepts.
    fn integer_keys() -> Vec<IntegerKey> {
        let millis = 2_147_483_647;
        let key = |key, set, min, max| IntegerKey { key, set, min, max };
        vec![
            key(
                "status-board.update-millis",
                |c, v| c.status_board.update_millis = v,
                1,
                millis,
            ),
            key(
                "status-board.dim-after-millis",
                |c, v| c.status_board.dim_after_millis = v,
                0,
                millis,
            ),
            key(
                "status-board.metrics-linger-millis",
                |c, v| c.status_board.metrics_linger_millis = v,
                0,
                millis,
            ),
            key(
                "connection.max-connections",
                |c, v| c.connection.max_connections = u32::try_from(v).unwrap(),
                1,
                1000,
            ),
            key(
                "connection.busy-timeout-millis",
                |c, v| c.connection.busy_timeout_millis = v,
                0,
                millis,
            ),
            key(
                "connection.simulated-customers",
                |c, v| c.connection.simulated_customers = v,
                0,
                92_233_720_368_547_658,
            ),
            key(
                "customer-scanner.fetch-size",
                |c, v| c.customer_scanner.fetch_size = usize::try_from(v).unwrap(),
                1,
                1_000_000,
            ),
            key(
                "customer-scanner.block-size",
                |c, v| c.customer_scanner.block_size = usize::try_from(v).unwrap(),
                1,
                1_000_000,
            ),
            key(
                "customer-migrator.batch-size",
                |c, v| c.customer_migrator.batch_size = Some(usize::try_from(v).unwrap()),
                1,
                10_000,
            ),
            key(
                "customer-migration.processes",
                |c, v| c.customer_migration.processes = usize::try_from(v).unwrap(),
                1,
                10_000,
            ),
            key(
                "customer-migration.max-failures",
                |c, v| c.customer_migration.max_failures = v,
                0,
                u64::MAX,
            ),
            key(
                "customer-migration.retry-attempts",
                |c, v| c.customer_migration.retry_attempts = u32::try_from(v).unwrap(),
                1,
                100,
            ),
            key(
                "customer-migration.retry-initial-delay-millis",
                // The initial delay may not exceed the longest: that one is at its greatest.
                |c, v| {
                    c.customer_migration.retry_max_delay_millis = 2_147_483_647;
                    c.customer_migration.retry_initial_delay_millis = v;
                },
                0,
                millis,
            ),
            key(
                "customer-migration.retry-max-delay-millis",
                // The initial delay may not exceed the longest: it is at its least.
                |c, v| {
                    c.customer_migration.retry_initial_delay_millis = 0;
                    c.customer_migration.retry_max_delay_millis = v;
                },
                0,
                millis,
            ),
            key(
                "customer-migration.grace-period-millis",
                |c, v| c.customer_migration.grace_period_millis = v,
                0,
                millis,
            ),
            key(
                "customer-migration.max-pending",
                |c, v| c.customer_migration.max_pending = usize::try_from(v).unwrap(),
                1,
                100_000_000,
            ),
            key(
                "customer-migration.rate-limit",
                |c, v| c.customer_migration.rate_limit = v,
                0,
                1_000_000_000,
            ),
            key(
                "customer-migration.checkpoint-interval-millis",
                |c, v| c.customer_migration.checkpoint_interval_millis = v,
                1,
                millis,
            ),
            key(
                "customer-migration.event-interval-millis",
                |c, v| c.customer_migration.event_interval_millis = v,
                0,
                millis,
            ),
            key(
                "customer-migration.batch-linger-millis",
                |c, v| c.customer_migration.batch_linger_millis = v,
                0,
                millis,
            ),
            key(
                "customer-migration.batch-target-millis",
                |c, v| c.customer_migration.batch_target_millis = v,
                0,
                millis,
            ),
            key(
                "customer-migration.batch-size-min",
                // The least may not exceed the most: that one is at its greatest.
                |c, v| {
                    c.customer_migration.batch_size_max = 1_000_000;
                    c.customer_migration.batch_size_min = usize::try_from(v).unwrap();
                },
                1,
                1_000_000,
            ),
            key(
                "customer-migration.batch-size-max",
                |c, v| {
                    c.customer_migration.batch_size_min = 1;
                    c.customer_migration.batch_size_max = usize::try_from(v).unwrap();
                },
                1,
                1_000_000,
            ),
            key(
                "customer-migration.throttle-interval-millis",
                |c, v| c.customer_migration.throttle_interval_millis = v,
                1,
                millis,
            ),
            key(
                "customer-migration.max-replication-lag-millis",
                |c, v| c.customer_migration.max_replication_lag_millis = v,
                0,
                millis,
            ),
            key(
                "customer-migration.lock-timeout-millis",
                |c, v| c.customer_migration.lock_timeout_millis = v,
                1,
                millis,
            ),
            key(
                "customer-migration.statement-timeout-millis",
                |c, v| c.customer_migration.statement_timeout_millis = v,
                0,
                millis,
            ),
        ]
    }

    /// Every floating-point key with the range its consumer accepts.
    fn number_keys() -> Vec<NumberKey> {
        vec![
            NumberKey {
                key: "customer-migrator.sleep-scale",
                set: |c, v| c.customer_migrator.sleep_scale = v,
                min: 0.0,
                max: 1000.0,
            },
            NumberKey {
                key: "customer-migrator.failure-rate",
                set: |c, v| c.customer_migrator.failure_rate = v,
                min: 0.0,
                max: 1.0,
            },
        ]
    }

    /// The one problem of `config`, which must have exactly one.
    fn only_problem(config: &Config) -> InvalidValue {
        let mut problems = config.validate().expect_err("a value out of range");
        assert_eq!(problems.len(), 1, "{problems:?}");
        problems.remove(0)
    }

    #[test]
    fn every_numeric_key_has_its_range_checked() {
        let mut config = Config::default();
        config.customer_migrator.batch_size = Some(1);
        let toml::Value::Table(sections) = toml::Value::try_from(&config).unwrap() else {
            panic!("a config serializes to a table");
        };
        let mut numeric: Vec<String> = Vec::new();
        for (section, table) in sections {
            for (key, value) in table.as_table().unwrap() {
                if value.is_integer() || value.is_float() {
                    numeric.push(format!("{section}.{key}"));
                }
            }
        }
        let mut checked: Vec<String> = integer_keys()
            .iter()
            .map(|k| k.key.to_owned())
            .chain(number_keys().iter().map(|k| k.key.to_owned()))
            .collect();
        numeric.sort();
        checked.sort();
        assert_eq!(checked, numeric, "every numeric key is listed below");
    }

    #[test]
    fn each_integer_key_accepts_its_range_and_rejects_one_past_either_end() {
        for IntegerKey { key, set, min, max } in integer_keys() {
            for accepted in [min, max] {
                let mut config = Config::default();
                set(&mut config, accepted);
                assert_eq!(config.validate(), Ok(()), "{key} = {accepted}");
            }
            let outside = [min.checked_sub(1), max.checked_add(1)];
            for value in outside.into_iter().flatten() {
                let mut config = Config::default();
                set(&mut config, value);
                let problem = only_problem(&config);
                assert_eq!(problem.key, key);
                assert_eq!(problem.value, value.to_string());
                assert!(problem.reason.starts_with("must "), "{problem}");
            }
        }
    }

    #[test]
    fn each_number_key_accepts_its_range_and_rejects_what_lies_outside() {
        for NumberKey { key, set, min, max } in number_keys() {
            for accepted in [min, max] {
                let mut config = Config::default();
                set(&mut config, accepted);
                assert_eq!(config.validate(), Ok(()), "{key} = {accepted}");
            }
            for value in [
                min - 0.001,
                max + 0.001,
                max * 1e300,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ] {
                let mut config = Config::default();
                set(&mut config, value);
                let problem = only_problem(&config);
                assert_eq!(problem.key, key);
                assert_eq!(problem.value, value.to_string());
            }
        }
    }

    #[test]
    fn a_busy_timeout_past_what_sqlite_takes_is_named_with_the_range() {
        let mut config = Config::default();
        config.connection.busy_timeout_millis = 2_147_483_648;
        assert_eq!(
            only_problem(&config).to_string(),
            "connection.busy-timeout-millis = 2147483648: must be between 0 and 2147483647 \
             (about 24 days)"
        );
    }

    #[test]
    fn the_initial_retry_delay_may_not_exceed_the_longest() {
        let mut config = Config::default();
        config.customer_migration.retry_initial_delay_millis = 5001;
        assert_eq!(
            only_problem(&config).to_string(),
            "customer-migration.retry-initial-delay-millis = 5001: must not exceed \
             retry-max-delay-millis"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = toml::from_str::<Config>("[customer-migration]\nproceses = 5\n");
        assert!(error.is_err());
    }
}
