//! The limits a migration's transaction sets on itself, so that a batch never waits long on an
//! application's locks, nor outlives a stop.

use std::time::Duration;

use crate::config::MigrationConfig;

/// How long one batch's transaction may wait for a lock and run one statement on PostgreSQL
/// (`customer-migration.lock-timeout-millis` and `statement-timeout-millis`).
///
/// A batch waiting for a row lock holds the locks it already took, so the application's
/// writes to the rest of the batch wait behind it: the wait is kept short and the batch tried
/// again rather than queued behind a long transaction. A timeout is no failure of a record:
/// the engine retries the batch, splits it so that the rows that are free get migrated, and
/// leaves the rows still locked for the next run (see `docs/running.md`).
///
/// On SQLite these do not apply: a batch waits for another process's write lock for
/// `connection.busy-timeout-millis`, and then meets the same retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchTimeouts {
    /// The longest wait for a lock (`lock_timeout`), at least a millisecond.
    pub lock: Duration,
    /// The longest a statement may run (`statement_timeout`); `None` keeps the database's own
    /// setting.
    pub statement: Option<Duration>,
}

impl Default for BatchTimeouts {
    /// The defaults of `[customer-migration]`.
    fn default() -> BatchTimeouts {
        BatchTimeouts::from_config(&MigrationConfig::default())
    }
}

impl BatchTimeouts {
    /// The timeouts `config` asks for. The lock timeout is at most the grace period: a stop
    /// waits that long for the batches under way, and a batch the stop gave up on keeps
    /// waiting in the server, holding its row locks, until its lock timeout fires.
    pub fn from_config(config: &MigrationConfig) -> BatchTimeouts {
        let lock = config.lock_timeout_millis.min(config.grace_period_millis);
        BatchTimeouts {
            lock: Duration::from_millis(lock.max(1)),
            statement: (config.statement_timeout_millis > 0)
                .then(|| Duration::from_millis(config.statement_timeout_millis)),
        }
    }

    /// These timeouts with the lock timeout `lock` (at least a millisecond).
    pub fn with_lock(self, lock: Duration) -> BatchTimeouts {
        BatchTimeouts {
            lock: lock.max(Duration::from_millis(1)),
            ..self
        }
    }

    /// `lock_timeout` as PostgreSQL takes it (`1000ms`).
    pub(crate) fn lock_setting(&self) -> String {
        format!("{}ms", self.lock.as_millis().max(1))
    }

    /// `statement_timeout` as PostgreSQL takes it, when one is set.
    pub(crate) fn statement_setting(&self) -> Option<String> {
        self.statement
            .map(|timeout| format!("{}ms", timeout.as_millis().max(1)))
    }

    /// `SET LOCAL` statements for a transaction's start on PostgreSQL: `; SET LOCAL ...`,
    /// to follow a `BEGIN` in the same round trip.
    pub(crate) fn set_local(&self) -> String {
        let mut sql = format!("; SET LOCAL lock_timeout = '{}'", self.lock_setting());
        if let Some(statement) = self.statement_setting() {
            sql.push_str(&format!("; SET LOCAL statement_timeout = '{statement}'"));
        }
        sql
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_timeout_is_at_most_the_grace_period_and_a_zero_statement_timeout_is_none() {
        let mut config = MigrationConfig {
            lock_timeout_millis: 2000,
            statement_timeout_millis: 0,
            grace_period_millis: 500,
            ..MigrationConfig::default()
        };
        let timeouts = BatchTimeouts::from_config(&config);
        assert_eq!(timeouts.lock, Duration::from_millis(500));
        assert_eq!(timeouts.statement, None);
        assert_eq!(timeouts.set_local(), "; SET LOCAL lock_timeout = '500ms'");
        config.grace_period_millis = 0;
        config.statement_timeout_millis = 30_000;
        let timeouts = BatchTimeouts::from_config(&config);
        assert_eq!(timeouts.lock, Duration::from_millis(1));
        assert_eq!(
            timeouts.set_local(),
            "; SET LOCAL lock_timeout = '1ms'; SET LOCAL statement_timeout = '30000ms'"
        );
    }

    #[test]
    fn the_defaults_are_a_second_for_locks_and_half_a_minute_for_statements() {
        let timeouts = BatchTimeouts::default();
        assert_eq!(timeouts.lock, Duration::from_secs(1));
        assert_eq!(timeouts.statement, Some(Duration::from_secs(30)));
    }
}
