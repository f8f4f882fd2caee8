//! `db-migrate seed` and the demo database of `db-migrate demo`.
//!
//! Refilling a table (`seed --force`, `demo --fresh`) deletes its rows and drops the migration's
//! bookkeeping tables with them. On a developer's machine (the `localhost` environment) and on
//! the demo's own database that is what the flag asks for; elsewhere it must be confirmed with
//! `--confirm-wipe`, and what went is always said on stderr.

use migrate_core::{Backend, Config, SeedReport, mask_url, seed_customers, thousands};

use crate::cli::Environment;
use crate::exit::{CliError, SUCCESS};

/// Where `db-migrate demo` keeps its database when `connection.url` is left simulated.
pub const DEMO_URL: &str = "sqlite://state/demo.db";

/// What the command line allows a seed to wipe.
#[derive(Debug, Clone, Copy)]
pub struct Wipe {
    /// `--force` (seed) or `--fresh` (demo): refill an existing table.
    refill: bool,
    /// `--confirm-wipe` was given.
    confirmed: bool,
    /// The environment chosen with `-e`.
    environment: Environment,
    /// The flag that asks for the refill, for messages.
    flag: &'static str,
}

impl Wipe {
    /// The refill flag, its confirmation and the environment, as given.
    pub fn asked(refill: bool, confirmed: bool, environment: Environment) -> Wipe {
        Wipe {
            refill,
            confirmed,
            environment,
            flag: "--force",
        }
    }

    fn for_demo(self) -> Wipe {
        Wipe {
            flag: "--fresh",
            ..self
        }
    }

    /// Refuses a refill of `url` that needs a confirmation it did not get: outside `localhost`,
    /// on any database but the demo's own.
    fn check(self, url: &str) -> Result<(), CliError> {
        let exempt = self.environment == Environment::Localhost || url == DEMO_URL;
        if !self.refill || self.confirmed || exempt {
            return Ok(());
        }
        Err(CliError::Usage(format!(
            "refusing to refill the customers table at {} in the {} environment without \
             --confirm-wipe: {} deletes its rows and drops the bookkeeping tables \
             migration_checkpoints and migration_failures",
            mask_url(url),
            self.environment.name(),
            self.flag,
        )))
    }
}

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

/// Says on stderr what a refill deleted and dropped, if anything.
fn report_wiped(report: &SeedReport) {
    let mut parts = Vec::new();
    if report.deleted > 0 {
        parts.push(format!(
            "Deleted the {} rows of customers",
            thousands(report.deleted)
        ));
    }
    if !report.dropped.is_empty() {
        let verb = if parts.is_empty() {
            "Dropped"
        } else {
            "dropped"
        };
        let tables: Vec<String> = report.dropped.iter().map(ToString::to_string).collect();
        parts.push(format!("{verb} {}", tables.join(" and ")));
    }
    if !parts.is_empty() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("{}", parts.join("; "));
        }
    }
}

/// Creates (or with `--force` refills) the demo table.
pub async fn run(config: &Config, customers: u64, wipe: Wipe) -> Result<u8, CliError> {
    wipe.check(&config.connection.url)?;
    let backend = open(config).await?;
    let report = seed_customers(&backend, customers, wipe.refill)
        .await
        .map_err(|e| match e {
            // Nothing was written: the user asks for --force.
            migrate_core::SeedError::NotEmpty { .. }
            | migrate_core::SeedError::Bookkeeping { .. }
            | migrate_core::SeedError::Simulated => CliError::Usage(e.to_string()),
            other => CliError::fatal(&other),
        });
    backend.close().await;
    let report = report?;
    report_wiped(&report);
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "Seeded {} customers in {} ({} already migrated, {} malformed) and {} orders",
            thousands(report.customers),
            mask_url(&config.connection.url),
            thousands(report.migrated),
            thousands(report.malformed),
            thousands(report.orders),
        );
    }
    Ok(SUCCESS)
}

/// Seeds the demo database when it has no `customers` rows yet, or refills it with `--fresh`.
pub async fn ensure_demo_database(
    config: &Config,
    customers: u64,
    wipe: Wipe,
) -> Result<(), CliError> {
    let wipe = wipe.for_demo();
    wipe.check(&config.connection.url)?;
    let backend = open(config).await?;
    let result = match seed_customers(&backend, customers, wipe.refill).await {
        Ok(report) => {
            report_wiped(&report);
            #[allow(clippy::print_stderr)]
            {
                eprintln!(
                    "Filled the demo database {} with {} customers",
                    mask_url(&config.connection.url),
                    thousands(report.customers)
                );
            }
            Ok(())
        }
        Err(migrate_core::SeedError::NotEmpty { .. }) => Ok(()),
        Err(migrate_core::SeedError::Bookkeeping { tables }) => {
            let tables: Vec<String> = tables.iter().map(ToString::to_string).collect();
            Err(CliError::Usage(format!(
                "the database holds the bookkeeping of an earlier migration ({}): use --fresh \
                 to drop it with the refill",
                tables.join(" and ")
            )))
        }
        Err(e) => Err(CliError::fatal(&e)),
    };
    backend.close().await;
    result
}
