//! The engine of `db-migrate`: a large data migration (a backfill) run safely and visibly.
//!
//! The layers, in the order data flows:
//!
//! - a [`Migration`] knows a table: its [`Key`]s in the database's order, and what to do with a
//!   batch of them ([`CustomerMigration`] is the seed's; write your own);
//! - the [`Scanner`] pages through the migration's keys and feeds a bounded channel;
//! - jobs take batches from it and hand them to the [`Migrator`], retrying what may pass; a flow
//!   gate holds them while the run is paused ([`RunControl`]) or the database is unhealthy
//!   ([`HealthCheck`]), and sizes their batches to a target duration;
//! - the [`Overseer`] counts what happened, saves progress in the [`ProgressStore`] so that a
//!   rerun resumes without gaps, records every failure there, and reports every step as an
//!   [`Event`] to the [`StatusBoard`], a metric (the `metrics` facade, see [`run_metrics`]) and
//!   a `tracing` span or event.
//!
//! These are shaku components declared in [`MigrationModule`]; [`System`] adds what shaku
//! lacks: a lifecycle (start in dependency order, stop in reverse) and a dependency graph
//! derived from the components' own `#[shaku(inject)]` fields, printable as Graphviz DOT.
//!
//! What is migrated is a [`Migration`]: written in Rust, or declared in a TOML file and run by
//! [`SqlMigration`] (a table, its key columns, the guard, the `SET` assignments).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use migrate_core::{Config, EventBoard, StatusBoard, RunOptions, build_migration_system};
//! use tokio_util::sync::CancellationToken;
//!
//! let mut config = Config::default(); // the simulated backend
//! config.customer_migrator.sleep_scale = 0.0;
//! config.connection.simulated_customers = 500;
//! let dir = tempfile::tempdir().unwrap();
//! config.customer_migrator.log_file = dir.path().join("migration.log");
//! config.customer_scanner.paging_state_path = dir.path().join("paging-state.json");
//!
//! let (board, mut events) = EventBoard::channel();
//! let board: Box<dyn StatusBoard> = Box::new(board);
//! let system = build_migration_system(&config, Some((board, "EventBoard"))).await.unwrap();
//! system.start().await.unwrap();
//! let summary = migrate_core::overseer(&system)
//!     .run(RunOptions::default(), CancellationToken::new())
//!     .await
//!     .unwrap();
//! system.stop().await.unwrap();
//! assert_eq!(summary.migrated + summary.previously_migrated, 500);
//! assert!(events.try_recv().is_ok());
//! # }
//! ```
#![deny(missing_docs)]

extern crate self as migrate_core;

mod components;
mod config;
mod connection;
mod customer;
mod database;
pub mod distributed;
mod engine;
mod health;
mod migration;
mod module;
mod store;

pub use components::component::{
    BoxError, ComponentDescriptor, ComponentInfo, Lifecycle, NamedInterface,
};
pub use components::graph::{ComponentGraph, GraphError};
pub use components::lifecycle::LifecycleError;
pub use components::system::{System, SystemBuilder, SystemModule};
pub use config::{
    BoardMode, Config, ConnectionConfig, InvalidValue, MigrationConfig, MigratorConfig,
    ScannerConfig, StatusBoardConfig,
};
pub use connection::{
    Backend, Connection, ConnectionError, Database, DatabaseConnection, mask_url,
};
pub use customer::seed::{
    DemoCustomer, DemoOrder, SEEDED_MIGRATED_AT, SeedError, SeedReport, demo_customer, demo_order,
    seed_customers,
};
pub use customer::sql::split_full_name;
pub use customer::{CUSTOMER_MIGRATION, CustomerMigration, SimulatedCustomers};
pub use database::DbError;
pub use engine::board::{EventBoard, RecordingBoard, StatusBoard};
pub use engine::checkpoint::{Checkpoint, CheckpointKey, KeyRange, Offer, Tracker};
pub use engine::control::{Controls, RunControl, Setting};
pub use engine::events::{Event, JobId, JobStatus};
pub use engine::flow::{FLOW_JOB, FlowState};
pub use engine::health::HealthCheck;
/// The names, labels and descriptions of the run's metrics (recorded through the `metrics`
/// facade).
pub use engine::metrics as run_metrics;
pub use engine::migrator::{
    BatchError, BatchMigrator, FailureRecord, Migrator, Outcome, PreflightError, RecordFailure,
};
pub use engine::overseer::{
    FIRST_PROCESS_JOB, MigrationOverseer, NOTICE_JOB, Overseer, RunError, RunOptions, SCANNER_JOB,
    SUMMARY_JOB,
};
pub use engine::retry::backoff;
pub use engine::scanner::{Halted, PagingScanner, Scan, ScanReport, Scanner, scan_pages};
pub use engine::summary::{Ending, Summary, spell_duration, thousands};
pub use engine::timing::report_wait;
pub use health::DatabaseHealth;
pub use migrate_derive::Dependencies;
pub use migration::declarative::{MigrationSpec, SpecError, SqlMigration};
pub use migration::key::{Key, KeyColumn, KeyKind, KeyValue};
pub use migration::timeouts::BatchTimeouts;
pub use migration::{Migration, Noun};
pub use module::{
    BuildError, MigrationModule, build_migration_system, builder_for, migration_builder, overseer,
};
pub use store::bookkeeping::BatchJournal;
pub use store::controls::{ControlChange, StoredControls};
pub use store::runs::{
    CheckpointRow, FailureRow, HEARTBEAT_PERIOD, MigrationReport, ReportQuery, RunCounts, RunId,
    RunRecord, RunRow, RunState, STALE_AFTER, StoreReport, host_name,
};
pub use store::{DatabaseStore, FileStore, ProgressStore};

/// shaku, re-exported so that embedders name the same version.
pub use shaku;
/// sqlx, re-exported so that embedders name the same version (`Backend` holds its pools, and
/// `BatchJournal` writes on its connections).
pub use sqlx;
