//! `db-migrate seed` and the demo database of `db-migrate demo`.

use migrate_core::{Backend, Config, seed_customers, thousands};

use crate::exit::{CliError, SUCCESS};

/// Where `db-migrate demo` keeps its database when `connection.url` is left simulated.
pub const DEMO_URL: &str = "sqlite://state/demo.db";

/// The configuration of a demo run: the embedded SQLite database unless `connection.url` names
/// a database already.
pub fn demo_config(config: &Config) -> Config {
    let mut config = config.clone();
    if config.connection.url.starts_with("simulated:") {
        config.connection.url = DEMO_URL.to_owned();
    }
    config
}

async fn open(config: &Config) -> Result<Backend, CliError> {
    if let Some(path) = config.connection.url.strip_prefix("sqlite://") {
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::Fatal(format!("while creating {}: {e}", dir.display())))?;
        }
    }
    Backend::open(&config.connection, true)
        .await
        .map_err(|e| CliError::fatal(&e))
}

/// Creates (or with `force` refills) the demo table.
pub async fn run(config: &Config, customers: u64, force: bool) -> Result<u8, CliError> {
    let backend = open(config).await?;
    let report = seed_customers(&backend, customers, force)
        .await
        .map_err(|e| match e {
            // Nothing was written: the user asks for --force.
            migrate_core::SeedError::NotEmpty { .. } | migrate_core::SeedError::Simulated => {
                CliError::Usage(e.to_string())
            }
            other => CliError::fatal(&other),
        });
    backend.close().await;
    let report = report?;
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "Seeded {} customers in {} ({} already migrated, {} malformed)",
            thousands(report.customers),
            migrate_core::mask_url(&config.connection.url),
            thousands(report.migrated),
            thousands(report.malformed),
        );
    }
    Ok(SUCCESS)
}

/// Seeds the demo database when it has no `customers` rows yet, or refills it when `fresh`.
pub async fn ensure_demo_database(
    config: &Config,
    customers: u64,
    fresh: bool,
) -> Result<(), CliError> {
    let backend = open(config).await?;
    let result = match seed_customers(&backend, customers, fresh).await {
        Ok(report) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "Filled the demo database {} with {} customers",
                    migrate_core::mask_url(&config.connection.url),
                    thousands(report.customers)
                );
            }
            Ok(())
        }
        Err(migrate_core::SeedError::NotEmpty { .. }) => Ok(()),
        Err(e) => Err(CliError::fatal(&e)),
    };
    backend.close().await;
    result
}
