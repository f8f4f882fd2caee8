//! The seed's customer migration, as one [`Migration`] among others: split `full_name`
//! ("Last, First") into `first_name` and `last_name`, tidy the email, move `schema_version`
//! from 1 to 2. On SQLite and PostgreSQL it is real SQL (see the `db` module); on the simulated
//! backend it sleeps where the database work would be, as the seed did.

pub(crate) mod seed;
pub(crate) mod simulated;
pub(crate) mod sql;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::components::component::BoxError;
use crate::config::MigratorConfig;
use crate::connection::Database;
use crate::engine::migrator::{BatchError, Outcome, RecordFailure};
use crate::migration::key::{Key, KeyColumn, KeyKind};
use crate::migration::timeouts::BatchTimeouts;
use crate::migration::{Migration, Noun};
use crate::store::bookkeeping::BatchJournal;

/// The customer migration's name: keys its checkpoint, failures and audit.
pub const CUSTOMER_MIGRATION: &str = "customer-migration";

fn customer_noun() -> Noun {
    Noun::new("customer", "customers")
}

fn id_column() -> Vec<KeyColumn> {
    vec![KeyColumn::new("id", KeyKind::Integer)]
}

/// The integer ids of a batch of customer keys.
fn ids(keys: &[Key]) -> Result<Vec<i64>, BatchError> {
    keys.iter()
        .map(|key| {
            key.as_int().ok_or_else(|| BatchError::Fatal {
                error: format!("customer key {key} is not an integer id").into(),
                committed: None,
            })
        })
        .collect()
}

/// The customer migration on an SQLite or PostgreSQL database.
#[derive(Debug)]
pub struct CustomerMigration {
    /// The database.
    backend: Database,
    /// SQLite has one writer at a time; jobs (and the store) take turns on this lock instead
    /// of in SQLite's sleeping busy handler. Shared with the connection component.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Longest wait for a row lock and longest statement of each batch on PostgreSQL: a batch
    /// that times out is retried, split, and its locked records left for the next run.
    timeouts: BatchTimeouts,
    /// The audit row and resolution each batch writes in its transaction, prepared before the
    /// first batch that writes.
    journal: tokio::sync::OnceCell<BatchJournal>,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

impl CustomerMigration {
    /// The customer migration on `backend` (SQLite or PostgreSQL), taking turns for SQLite's
    /// writer on `writer`, each PostgreSQL batch bound by `timeouts`.
    pub fn new(
        backend: Database,
        writer: Arc<tokio::sync::Mutex<()>>,
        timeouts: BatchTimeouts,
    ) -> CustomerMigration {
        CustomerMigration {
            backend,
            writer,
            timeouts,
            journal: tokio::sync::OnceCell::new(),
            noun: customer_noun(),
            keys: id_column(),
        }
    }
}

#[async_trait]
impl Migration for CustomerMigration {
    fn name(&self) -> &str {
        CUSTOMER_MIGRATION
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    /// `customers` has every column the migration uses.
    async fn check(&self) -> Result<(), BoxError> {
        sql::prepare(&self.backend).await
    }

    async fn page(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        let ids = sql::page(
            &self.backend,
            after.and_then(Key::as_int),
            end.and_then(Key::as_int),
            limit,
        )
        .await?;
        Ok(ids.into_iter().map(Key::int).collect())
    }

    async fn remaining(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
    ) -> Result<Option<u64>, BoxError> {
        let count = sql::remaining(
            &self.backend,
            after.and_then(Key::as_int),
            end.and_then(Key::as_int),
        )
        .await?;
        Ok(Some(count))
    }

    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let ids = ids(keys)?;
        let journal = if dry_run {
            None
        } else {
            Some(
                self.journal
                    .get_or_try_init(|| BatchJournal::prepare(&self.backend, CUSTOMER_MIGRATION))
                    .await?,
            )
        };
        let writer = (!dry_run).then_some(&*self.writer);
        Ok(sql::migrate(
            &self.backend,
            &ids,
            dry_run,
            writer,
            &self.timeouts,
            journal,
        )
        .await?)
    }
}

/// The seed's simulated customers: made-up ids, sleeps of 10-59 ms to check and 50-249 ms to
/// migrate (times `sleep-scale`), about 30% already migrated, `failure-rate` of them failing.
#[derive(Debug)]
pub struct SimulatedCustomers {
    /// How many customers there are.
    customers: u64,
    /// `[customer-migrator]`: `sleep-scale` and `failure-rate`.
    config: MigratorConfig,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

impl SimulatedCustomers {
    /// `customers` simulated customers, timed and failing as `config` says.
    pub fn new(customers: u64, config: MigratorConfig) -> SimulatedCustomers {
        SimulatedCustomers {
            customers,
            config,
            noun: customer_noun(),
            keys: id_column(),
        }
    }
}

async fn pause(duration: Duration) {
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
}

#[async_trait]
impl Migration for SimulatedCustomers {
    fn name(&self) -> &str {
        CUSTOMER_MIGRATION
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    async fn page(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        let end = end.and_then(Key::as_int);
        let mut ids = simulated::page(self.customers, after.and_then(Key::as_int), limit);
        ids.retain(|&id| end.is_none_or(|e| id < e));
        Ok(ids.into_iter().map(Key::int).collect())
    }

    async fn remaining(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
    ) -> Result<Option<u64>, BoxError> {
        let all = simulated::remaining(self.customers, after.and_then(Key::as_int));
        let beyond = end
            .and_then(Key::as_int)
            .map_or(0, |e| simulated::remaining(self.customers, Some(e - 1)));
        Ok(Some(all - beyond))
    }

    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let scale = self.config.sleep_scale;
        let mut outcomes = Vec::with_capacity(keys.len());
        for id in ids(keys)? {
            pause(simulated::check_time(id, scale)).await;
            if simulated::previously_migrated(id) {
                outcomes.push(Outcome::PreviouslyMigrated);
                continue;
            }
            if dry_run {
                outcomes.push(Outcome::Migrated);
                continue;
            }
            pause(simulated::migrate_time(id, scale)).await;
            if simulated::fails(id, self.config.failure_rate) {
                outcomes.push(Outcome::Failed(RecordFailure::transient(format!(
                    "simulated failure migrating customer {id}"
                ))));
                continue;
            }
            outcomes.push(Outcome::Migrated);
        }
        Ok(outcomes)
    }

    fn default_batch_size(&self) -> usize {
        1
    }

    /// The seed migrated one customer at a time, and the simulation keeps to it.
    fn adaptive_batch_size(&self) -> bool {
        false
    }
}
