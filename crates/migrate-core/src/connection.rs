//! The connection component: which backend the run talks to, and its pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, PgPool, SqlitePool};

use crate::component::{BoxError, Lifecycle};
use crate::config::ConnectionConfig;

/// A failure to open the backend named by `connection.url`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The URL names no backend this build knows.
    #[error("connection.url {url}: unknown scheme (expected simulated:, sqlite: or postgres:)")]
    UnknownScheme {
        /// The URL, credentials masked.
        url: String,
    },
    /// The SQLite database file does not exist (and was not to be created).
    #[error(
        "connection.url {url}: there is no database file {path} (create one with `db-migrate seed`, \
         or run `db-migrate demo`)"
    )]
    MissingDatabase {
        /// The URL.
        url: String,
        /// The file it names.
        path: String,
    },
    /// The database could not be opened.
    #[error("while connecting to {url}: {source}")]
    Open {
        /// The URL, credentials masked.
        url: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

/// Where the records live.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backend {
    /// No database: the seed's sleeps, for demos and for measuring the engine alone.
    Simulated {
        /// How many customers it pretends to hold.
        customers: u64,
    },
    /// An SQLite database file, in WAL mode.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

impl Backend {
    /// Opens the backend named by `config.url`. For SQLite, `create` makes the file when it is
    /// missing (the `seed` command); a migration run wants an existing database.
    pub async fn open(config: &ConnectionConfig, create: bool) -> Result<Backend, ConnectionError> {
        Self::open_with(
            config,
            if create {
                Access::Create
            } else {
                Access::ReadWrite
            },
        )
        .await
    }

    /// Opens the backend named by `config.url` for reading only, as a dry run needs: an SQLite
    /// file is opened read-only and keeps its journal mode (the file stays byte for byte the
    /// same); a PostgreSQL session makes its transactions read-only.
    pub async fn open_read_only(config: &ConnectionConfig) -> Result<Backend, ConnectionError> {
        Self::open_with(config, Access::ReadOnly).await
    }

    async fn open_with(
        config: &ConnectionConfig,
        access: Access,
    ) -> Result<Backend, ConnectionError> {
        let create = access == Access::Create;
        let url = config.url.as_str();
        let masked = mask_url(url);
        let open_error = |source| ConnectionError::Open {
            url: masked.clone(),
            source,
        };
        if url.starts_with("simulated:") {
            Ok(Backend::Simulated {
                customers: config.simulated_customers,
            })
        } else if url.starts_with("sqlite:") {
            if !create
                && let Some(path) = sqlite_file(url)
                && !std::path::Path::new(path).exists()
            {
                return Err(ConnectionError::MissingDatabase {
                    url: masked,
                    path: path.to_owned(),
                });
            }
            let options = SqliteConnectOptions::from_str(url)
                .map_err(open_error)?
                .create_if_missing(create);
            // Setting the journal mode writes to the file: not on a dry run.
            let options = if access == Access::ReadOnly {
                options.read_only(true)
            } else {
                options.journal_mode(SqliteJournalMode::Wal)
            };
            let options = options
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_millis(config.busy_timeout_millis))
                // Up to 64 MiB of page cache per connection (SQLite's default is 2 MiB): a batch
                // reads and writes the pages the scanner just read.
                .pragma("cache_size", "-65536")
                // Copy the write-ahead log back into the database (with an fsync) every 20,000
                // pages instead of every 1,000: a migration commits often, and each copy costs.
                .pragma("wal_autocheckpoint", "20000");
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .connect_with(options)
                .await
                .map_err(open_error)?;
            Ok(Backend::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut options = PgConnectOptions::from_str(url).map_err(open_error)?;
            if access == Access::ReadOnly {
                options = options.options([("default_transaction_read_only", "on")]);
            }
            // One connection first: the pool retries a refused connection until its acquire
            // timeout, and a wrong URL should fail at once, with the server's own reason.
            PgConnection::connect_with(&options)
                .await
                .map_err(open_error)?
                .close()
                .await
                .map_err(open_error)?;
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(open_error)?;
            Ok(Backend::Postgres(pool))
        } else {
            Err(ConnectionError::UnknownScheme { url: masked })
        }
    }

    /// A short name: `simulated`, `sqlite`, `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Simulated { .. } => "simulated",
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        match self {
            Backend::Simulated { .. } => {}
            Backend::Sqlite(pool) => pool.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }
}

/// How a backend is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Read and write; an SQLite file is created when missing.
    Create,
    /// Read and write an existing database.
    ReadWrite,
    /// Read only (a dry run).
    ReadOnly,
}

/// The file an `sqlite:` URL names, unless it is an in-memory database.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`, so that a password is never
/// printed (status, logs, `--show-config`, errors). Also masks `password=` query parameters.
pub fn mask_url(url: &str) -> String {
    let mut masked = url.to_owned();
    if let Some(scheme_end) = masked.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = masked[rest_start..]
            .find(['/', '?'])
            .map_or(masked.len(), |i| rest_start + i);
        if let Some(at) = masked[rest_start..authority_end].rfind('@') {
            let userinfo = &masked[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let start = rest_start + colon + 1;
                masked.replace_range(start..rest_start + at, "***");
            }
        }
    }
    if let Some(query) = masked.find('?') {
        let (head, tail) = masked.split_at(query + 1);
        let params: Vec<String> = tail
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        masked = format!("{head}{}", params.join("&"));
    }
    masked
}

/// The connection component: the backend every other component talks to.
pub trait Connection: shaku::Interface + Lifecycle {
    /// The backend, with its pool.
    fn backend(&self) -> &Backend;

    /// The URL with credentials masked, for messages.
    fn display_url(&self) -> &str;
}
crate::named_interface!(Connection, "connection");

/// The connection component. The pool is opened before the shaku module is built (shaku builds
/// synchronously) and handed in as a parameter; `stop` closes it.
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = Connection)]
pub struct DatabaseConnection {
    /// The opened backend.
    backend: Backend,
    /// `connection.url`, masked.
    display_url: String,
}

impl std::fmt::Debug for DatabaseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConnection")
            .field("url", &self.display_url)
            .finish()
    }
}

impl DatabaseConnection {
    /// Shaku parameters for an opened backend.
    pub fn parameters(backend: Backend, url: &str) -> DatabaseConnectionParameters {
        DatabaseConnectionParameters {
            backend,
            display_url: mask_url(url),
        }
    }
}

#[async_trait]
impl Lifecycle for DatabaseConnection {
    async fn stop(&self) -> Result<(), BoxError> {
        self.backend.close().await;
        Ok(())
    }
}

impl Connection for DatabaseConnection {
    fn backend(&self) -> &Backend {
        &self.backend
    }

    fn display_url(&self) -> &str {
        &self.display_url
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://app:s3cr:et@db.example:5432/prod?sslmode=require"),
            "postgres://app:***@db.example:5432/prod?sslmode=require"
        );
        assert_eq!(
            mask_url("postgres://localhost/db?user=a&password=hunter2"),
            "postgres://localhost/db?user=a&password=***"
        );
        assert_eq!(mask_url("postgres://app@host/db"), "postgres://app@host/db");
        assert_eq!(mask_url("sqlite://demo.db"), "sqlite://demo.db");
        assert_eq!(mask_url("simulated:"), "simulated:");
    }
}
