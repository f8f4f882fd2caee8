//! A service embedding the engine with a migration of its own.
//!
//! The service keeps its customers somewhere the built-in backends know nothing about (here, an
//! in-memory map standing for it), so it writes the migration itself: a [`Migration`] lists the
//! keys in order and migrates batches of them. The scanner, jobs, overseer, progress store and
//! status board are the library's. It builds the system, starts it, runs one migration while it
//! watches the event stream, and stops it.
//!
//! `cargo run --example embed`

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use migrate_core::{
    Backend, BatchError, BoxError, Config, Event, EventBoard, Key, KeyColumn, KeyKind, Migration,
    Noun, Outcome, RecordFailure, RunOptions, StatusBoard, builder_for, overseer,
};
use tokio_util::sync::CancellationToken;

/// The service's own store: customer id to e-mail address.
#[derive(Debug)]
struct EmailStore {
    emails: Mutex<BTreeMap<i64, String>>,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

#[async_trait]
impl Migration for EmailStore {
    fn name(&self) -> &str {
        "email-cleanup"
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    /// The ids after `after`, in the map's order (the store's own key order).
    async fn page(
        &self,
        after: Option<&Key>,
        _before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        let emails = self.emails.lock().expect("store lock");
        let start = after
            .and_then(Key::as_int)
            .map_or(i64::MIN, |a| a.saturating_add(1));
        Ok(emails
            .range(start..)
            .take(limit)
            .map(|(id, _)| Key::int(*id))
            .collect())
    }

    /// Lower-cases and trims each address; an address without `@` cannot be migrated. The whole
    /// batch is applied under one lock, so it takes effect all at once or not at all.
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let mut emails = self.emails.lock().expect("store lock");
        let mut outcomes = Vec::with_capacity(keys.len());
        for key in keys {
            let Some(email) = key.as_int().and_then(|id| emails.get_mut(&id)) else {
                outcomes.push(Outcome::Failed(RecordFailure::permanent(
                    "no such customer",
                )));
                continue;
            };
            let normal = email.trim().to_lowercase();
            outcomes.push(if !normal.contains('@') {
                Outcome::Failed(RecordFailure::permanent(format!(
                    "not an address: {email:?}"
                )))
            } else if normal == *email {
                Outcome::PreviouslyMigrated
            } else {
                if !dry_run {
                    *email = normal;
                }
                Outcome::Migrated
            });
        }
        Ok(outcomes)
    }

    fn default_batch_size(&self) -> usize {
        50
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let state = tempfile::tempdir()?;
    let mut config = Config::default();
    config.customer_migration.processes = 4;
    // Progress and failures go to files, as with the simulated backend.
    config.customer_scanner.paging_state_path = state.path().join("paging-state.json");
    config.customer_migrator.log_file = state.path().join("migration.log");

    // The service's data: customers with addresses to clean up.
    let (board, mut events) = EventBoard::channel();
    let store = EmailStore {
        emails: Mutex::new(BTreeMap::new()),
        noun: Noun::new("customer", "customers"),
        keys: vec![KeyColumn::new("id", KeyKind::Integer)],
    };
    {
        let mut emails = store.emails.lock().expect("store lock");
        for (n, id) in (1..=5_000i64).map(|n| n * 7).enumerate() {
            let email = match n % 100 {
                0..=29 => format!("customer{id}@example.com"),
                99 => format!("customer {id} at example dot com"),
                _ => format!("  Customer{id}@Example.COM "),
            };
            emails.insert(id, email);
        }
    }

    let board: Box<dyn StatusBoard> = Box::new(board);
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let system = builder_for(
        &config,
        Backend::Simulated { customers: 0 },
        writer,
        Arc::new(store),
    )
    .with_override::<dyn StatusBoard>(board, "EventBoard")
    .build()?;
    println!("{}", system.graph().to_dot());

    system.start().await?;
    let watcher = tokio::spawn(async move {
        let mut finished_jobs = 0;
        while let Some(event) = events.recv().await {
            match event {
                Event::JobFinished { .. } => finished_jobs += 1,
                Event::Summary(summary) => {
                    println!("{finished_jobs} board lines finished; summary event: {summary}");
                    break;
                }
                _ => {}
            }
        }
    });
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await?;
    system.stop().await?;
    watcher.await?;

    println!("{summary}");
    if let Some(place) = &summary.failures_recorded_in {
        println!("{} failures recorded in {place}", summary.failed);
    }
    assert_eq!(
        summary.migrated + summary.previously_migrated + summary.failed,
        5_000
    );
    Ok(())
}
