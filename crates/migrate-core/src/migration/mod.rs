//! A migration: what the engine runs, without knowing which table, key or change it is.
//!
//! The engine (scanner, jobs, tracker, store) asks a [`Migration`] for pages of keys in the
//! database's key order and hands batches of those keys back to be migrated, one outcome per
//! key. Which table, which columns, which SQL: that is the migration's own business. The
//! customer migration of the seed is one implementation; a declarative TOML migration is
//! another; an embedding service writes its own.

pub(crate) mod declarative;
pub(crate) mod key;
pub(crate) mod timeouts;

use std::fmt;

use async_trait::async_trait;

use crate::components::component::BoxError;
use crate::engine::migrator::{BatchError, Outcome};
use crate::migration::key::{Key, KeyColumn};

/// What a record is called in messages: `customer` and `customers`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Noun {
    /// One record (`customer`).
    pub one: String,
    /// Several (`customers`).
    pub many: String,
}

impl Default for Noun {
    /// `record` and `records`.
    fn default() -> Noun {
        Noun::new("record", "records")
    }
}

impl Noun {
    /// A noun and its plural.
    pub fn new(one: impl Into<String>, many: impl Into<String>) -> Noun {
        Noun {
            one: one.into(),
            many: many.into(),
        }
    }

    /// `one` for 1, `many` otherwise.
    pub fn count(&self, n: u64) -> &str {
        if n == 1 { &self.one } else { &self.many }
    }
}

/// One migration of many records, each identified by a [`Key`].
///
/// Implementations must keep two promises the engine relies on for resuming without gaps:
/// `page` returns keys in the order the database itself sorts them (never re-sorted in Rust:
/// text collates as the database says), and `migrate` is safe to call again for a key already
/// migrated (a guard in its write, such as `schema_version = 1`, makes a second call report
/// [`Outcome::PreviouslyMigrated`]).
#[async_trait]
pub trait Migration: Send + Sync + fmt::Debug {
    /// The migration's name: keys its checkpoint, failures, audit and runs in the progress
    /// store, so that several migrations share one database.
    fn name(&self) -> &str;

    /// What a record is called in messages.
    fn noun(&self) -> &Noun;

    /// The key columns, in the order that sorts the records.
    fn key_columns(&self) -> &[KeyColumn];

    /// Checks, before anything runs, that the migration can work (its table and columns
    /// exist); returns a [`PreflightError`](crate::PreflightError) for what a person must fix.
    async fn check(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Up to `limit` keys after `after` (exclusive) and before `end` (exclusive), each `None`
    /// for unbounded, in the database's key order.
    async fn page(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError>;

    /// How many keys lie after `after` and before `end`, when that is cheap to know (for the
    /// progress bar); `None` otherwise.
    async fn remaining(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
    ) -> Result<Option<u64>, BoxError> {
        let _ = (after, end);
        Ok(None)
    }

    /// Migrates (or, on a dry run, only checks) the records `keys`, returning one outcome per
    /// key in the same order. A failure of one record is an `Outcome::Failed` for that record
    /// only; an `Err` says the whole batch failed, and how (see [`BatchError`]).
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError>;

    /// How many keys a job hands to [`migrate`](Migration::migrate) at once, unless the
    /// configuration says otherwise.
    fn default_batch_size(&self) -> usize {
        1000
    }

    /// Whether the batch size may adapt to the batches' time
    /// (`customer-migration.batch-target-millis`), starting from
    /// [`default_batch_size`](Migration::default_batch_size). Yes by default; a migration
    /// whose batch size was given explicitly (`batch-size` in its TOML file) says no.
    fn adaptive_batch_size(&self) -> bool {
        true
    }
}
