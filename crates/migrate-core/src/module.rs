//! The migration system: the seed's components, wired by shaku, around any [`Migration`].

use std::sync::Arc;

use crate::components::graph::GraphError;
use crate::components::system::{System, SystemBuilder};
use crate::config::Config;
use crate::connection::{Backend, ConnectionError, Database, DatabaseConnection};
use crate::customer::{CustomerMigration, SimulatedCustomers};
use crate::engine::board::StatusBoard;
use crate::engine::health::HealthCheck;
use crate::engine::migrator::{BatchMigrator, Migrator};
use crate::engine::overseer::{MigrationOverseer, Overseer};
use crate::engine::scanner::{PagingScanner, Scanner};
use crate::health::DatabaseHealth;
use crate::migration::Migration;
use crate::migration::timeouts::BatchTimeouts;
use crate::store::{DatabaseStore, FileStore, ProgressStore};

// The seed named the scanner and the migrator after its customers; the graph keeps its names.
crate::named_interface!(Scanner, "customer-scanner");
crate::named_interface!(Migrator, "customer-migrator");

#[allow(missing_docs)]
mod declared {
    use crate::connection::DatabaseConnection;
    use crate::engine::board::EventBoard;
    use crate::engine::migrator::BatchMigrator;
    use crate::engine::overseer::Overseer;
    use crate::engine::scanner::PagingScanner;
    use crate::store::DatabaseStore;

    crate::system_module! {
        pub MigrationModule {
            components = [
                EventBoard,
                DatabaseConnection,
                DatabaseStore,
                PagingScanner,
                BatchMigrator,
                Overseer,
            ]
        }
    }
}

/// The seed's system: status-board, connection, progress-store, customer-scanner,
/// customer-migrator and migration-overseer, in that declaration order. Replace any of them
/// through [`SystemBuilder::with_override`].
pub use declared::MigrationModule;

/// A failure to build the migration system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The backend could not be opened.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// The components do not form a valid graph.
    #[error("while wiring the components: {0}")]
    Graph(#[from] GraphError),
}

/// A builder for the system running the seed's customer migration on `backend` (the real one
/// on a database, the seed's sleeps on the simulated backend), with every component's
/// parameters set from `config`. Open the backend first with [`Backend::open`] (shaku builds
/// synchronously), add overrides, then `build()`.
pub fn migration_builder(config: &Config, backend: Backend) -> SystemBuilder<MigrationModule> {
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let migration: Arc<dyn Migration> = match &backend {
        Backend::Simulated { customers } => Arc::new(SimulatedCustomers::new(
            *customers,
            config.customer_migrator.clone(),
        )),
        Backend::Sqlite(pool) => Arc::new(CustomerMigration::new(
            Database::Sqlite(pool.clone()),
            Arc::clone(&writer),
            BatchTimeouts::from_config(&config.customer_migration),
        )),
        Backend::Postgres(pool) => Arc::new(CustomerMigration::new(
            Database::Postgres(pool.clone()),
            Arc::clone(&writer),
            BatchTimeouts::from_config(&config.customer_migration),
        )),
    };
    builder_for(config, backend, writer, migration)
}

/// A builder for the system running `migration` (a declarative one, an embedder's own) on
/// `backend`, where its progress is kept. A migration that writes to an SQLite database
/// should take turns with the store on `writer` (see
/// [`Connection::writer`](crate::Connection::writer)).
pub fn builder_for(
    config: &Config,
    backend: Backend,
    writer: Arc<tokio::sync::Mutex<()>>,
    migration: Arc<dyn Migration>,
) -> SystemBuilder<MigrationModule> {
    let database = backend.database();
    let builder = SystemBuilder::<MigrationModule>::new()
        .with_parameters::<DatabaseConnection>(DatabaseConnection::parameters(
            backend,
            &config.connection.url,
            writer,
        ))
        .with_parameters::<PagingScanner>(PagingScanner::parameters(
            config.customer_scanner.clone(),
            Arc::clone(&migration),
        ))
        .with_parameters::<BatchMigrator>(BatchMigrator::parameters(
            config.customer_migrator.clone(),
            migration,
        ))
        .with_parameters::<Overseer>(Overseer::parameters_with_health(
            config.customer_migration.clone(),
            health_check(config, database.as_ref()),
        ));
    // The store that fits the backend, chosen once: tables in a database, files otherwise.
    match database {
        Some(database) => {
            builder.with_parameters::<DatabaseStore>(crate::store::DatabaseStoreParameters {
                database,
                tables: tokio::sync::OnceCell::new(),
            })
        }
        None => {
            let store: Box<dyn ProgressStore> = Box::new(FileStore::new(
                config.customer_scanner.paging_state_path.clone(),
                FileStore::failures_file_beside(&config.customer_migrator.log_file),
            ));
            builder.with_implementation::<dyn ProgressStore>(store, "FileStore")
        }
    }
}

/// The throttle checks `config` asks for, over `database`; none on the simulated backend,
/// which has no database to ask.
fn health_check(config: &Config, database: Option<&Database>) -> Option<Arc<dyn HealthCheck>> {
    let health = DatabaseHealth::from_config(&config.customer_migration, database?)?;
    Some(Arc::new(health))
}

/// Opens the backend named by `config` and builds the migration system, with `board` in place of
/// the core's [`EventBoard`](crate::EventBoard) when given.
pub async fn build_migration_system(
    config: &Config,
    board: Option<(Box<dyn StatusBoard>, &str)>,
) -> Result<System<MigrationModule>, BuildError> {
    let backend = Backend::open(&config.connection, false).await?;
    let mut builder = migration_builder(config, backend);
    if let Some((board, name)) = board {
        builder = builder.with_override::<dyn StatusBoard>(board, name);
    }
    Ok(builder.build()?)
}

/// The overseer of a built system.
pub fn overseer(system: &System<MigrationModule>) -> Arc<dyn MigrationOverseer> {
    system.resolve::<dyn MigrationOverseer>()
}
