//! The migration system: the seed's five components, wired by shaku.

use std::sync::Arc;

use crate::board::StatusBoard;
use crate::config::Config;
use crate::connection::{Backend, ConnectionError, DatabaseConnection};
use crate::graph::GraphError;
use crate::migrator::BackendMigrator;
use crate::overseer::{MigrationOverseer, Overseer};
use crate::scanner::PagingScanner;
use crate::system::{System, SystemBuilder};

#[allow(missing_docs)]
mod declared {
    use crate::board::EventBoard;
    use crate::connection::DatabaseConnection;
    use crate::migrator::BackendMigrator;
    use crate::overseer::Overseer;
    use crate::scanner::PagingScanner;

    crate::system_module! {
        pub MigrationModule {
            components = [EventBoard, DatabaseConnection, PagingScanner, BackendMigrator, Overseer]
        }
    }
}

/// The seed's system: status-board, connection, customer-scanner, customer-migrator and
/// migration-overseer, in that declaration order. Replace any of them through
/// [`SystemBuilder::with_override`].
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

/// A builder for the migration system with every component's parameters set from `config` and
/// `backend` (open it first with [`Backend::open`]: shaku builds synchronously). Add overrides,
/// then `build()`.
pub fn migration_builder(config: &Config, backend: Backend) -> SystemBuilder<MigrationModule> {
    SystemBuilder::<MigrationModule>::new()
        .with_parameters::<DatabaseConnection>(DatabaseConnection::parameters(
            backend,
            &config.connection.url,
        ))
        .with_parameters::<PagingScanner>(crate::scanner::PagingScannerParameters {
            config: config.customer_scanner.clone(),
            checkpoints_table: tokio::sync::OnceCell::new(),
        })
        .with_parameters::<BackendMigrator>(BackendMigrator::parameters(
            config.customer_migrator.clone(),
            config.customer_migration.grace_period(),
        ))
        .with_parameters::<Overseer>(Overseer::parameters(config.customer_migration.clone()))
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
