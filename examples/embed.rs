//! A service embedding the engine with a migrator of its own.
//!
//! The service keeps its customers somewhere the built-in backends know nothing about (here, an
//! in-memory map standing for it), so it supplies the `customer-migrator` component itself and
//! puts it in place through shaku's module builder; the scanner, overseer and status board are
//! the library's. It builds the system, starts it, runs one migration while it watches the event
//! stream, and stops it.
//!
//! `cargo run --example embed`

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use migrate_core::{
    Backend, BatchError, BoxError, Config, CustomerMigrator, Event, EventBoard, FailureRecord,
    Lifecycle, Outcome, RecordFailure, RunOptions, StatusBoard, migration_builder, overseer,
};
use tokio_util::sync::CancellationToken;

/// The service's own store: customer id to e-mail address, and the failures it keeps.
struct EmailStore {
    emails: Mutex<BTreeMap<i64, String>>,
    failures: Mutex<Vec<FailureRecord>>,
}

impl Lifecycle for EmailStore {}

#[async_trait]
impl CustomerMigrator for EmailStore {
    /// Lower-cases and trims each address; an address without `@` cannot be migrated. The whole
    /// batch is applied under one lock, so it takes effect all at once or not at all.
    async fn migrate(&self, ids: &[i64], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        let mut emails = self.emails.lock().expect("store lock");
        let mut outcomes = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(email) = emails.get_mut(id) else {
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

    async fn record_failures(&self, failures: &[FailureRecord]) -> Result<(), BoxError> {
        self.failures
            .lock()
            .expect("failures lock")
            .extend_from_slice(failures);
        Ok(())
    }

    fn failures_location(&self) -> String {
        "the service's failure list".to_owned()
    }

    fn batch_size(&self) -> usize {
        50
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let state = tempfile::tempdir()?;
    let mut config = Config::default();
    config.connection.simulated_customers = 5_000; // the ids to scan
    config.customer_migration.processes = 4;
    config.customer_scanner.paging_state_path = state.path().join("paging-state.json");

    // The service's data: the simulated backend's ids, with addresses to clean up.
    let (board, mut events) = EventBoard::channel();
    let store = EmailStore {
        emails: Mutex::new(BTreeMap::new()),
        failures: Mutex::new(Vec::new()),
    };
    {
        let source = migrate_core::SimulatedIds { customers: 5_000 };
        let ids = migrate_core::PageSource::page(&source, None, None, 5_000).await?;
        let mut emails = store.emails.lock().expect("store lock");
        for (n, id) in ids.into_iter().enumerate() {
            let email = match n % 100 {
                0..=29 => format!("customer{id}@example.com"),
                99 => format!("customer {id} at example dot com"),
                _ => format!("  Customer{id}@Example.COM "),
            };
            emails.insert(id, email);
        }
    }

    let board: Box<dyn StatusBoard> = Box::new(board);
    let migrator: Box<dyn CustomerMigrator> = Box::new(store);
    let system = migration_builder(&config, Backend::Simulated { customers: 5_000 })
        .with_override::<dyn StatusBoard>(board, "EventBoard")
        .with_override::<dyn CustomerMigrator>(migrator, "EmailStore")
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
