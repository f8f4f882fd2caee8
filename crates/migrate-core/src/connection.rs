//! The connection component: which backend the run talks to, and its pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, PgPool, SqlitePool};

use crate::components::component::{BoxError, Lifecycle};
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

/// An SQL database: the migrated database, where the progress tables live too. What the SQL
/// parts of the library (the progress store, the SQL migrations) are built with, once the
/// backend is known not to be the simulated one.
#[derive(Debug, Clone)]
pub enum Database {
    /// An SQLite database file.
    Sqlite(SqlitePool),
    /// A PostgreSQL server.
    Postgres(PgPool),
}

impl Backend {
    /// The SQL database, unless the backend is simulated.
    pub fn database(&self) -> Option<Database> {
        match self {
            Backend::Simulated { .. } => None,
            Backend::Sqlite(pool) => Some(Database::Sqlite(pool.clone())),
            Backend::Postgres(pool) => Some(Database::Postgres(pool.clone())),
        }
    }

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
            source: unnested(source),
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
                .pragma("wal_autocheckpoint", "20000")
                // Temporary files in memory: an update of many rows inside a transaction keeps
                // a statement journal of the pages it changes, which would otherwise spill to a
                // file on disk past 64 KiB.
                .pragma("temp_store", "memory")
                // Read the database's first 256 MiB through a memory map rather than a read
                // call and a copy per page: the pages a batch reads were just read by the
                // scanner. Address space only; SQLite falls back to reads where it cannot map.
                .pragma("mmap_size", "268435456");
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

/// The innermost of configuration errors wrapped in one another. sqlx wraps some of its own (an
/// unknown `sslmode` reads "error with configuration: error with configuration: unknown value"),
/// and the context is said once.
fn unnested(error: sqlx::Error) -> sqlx::Error {
    match error {
        sqlx::Error::Configuration(inner)
            if matches!(
                inner.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Configuration(_))
            ) =>
        {
            match inner.downcast::<sqlx::Error>() {
                Ok(inner) => unnested(*inner),
                Err(inner) => sqlx::Error::Configuration(inner),
            }
        }
        other => other,
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
/// printed (status, logs, `--show-config`, errors). Also masks the value of every query
/// parameter whose name contains `password` (`?password=`, `&sslpassword=`, `pass%77ord=`).
///
/// A password typed raw may hold any of `/ ? # : @`, so the user-info is not ended at the first
/// `/` or `?`: it runs from the first `:` after `://` to the last `@` (a host cannot hold an
/// `@`). When the path or query holds an `@` too, more than the password is masked, never less.
/// The same holds for a text with several URLs (an array, a malformed argument): every password
/// lies between the first such `:` and the last `@`.
pub fn mask_url(text: &str) -> String {
    mask_password_parameters(&mask_userinfo(text))
}

/// The text with everything between the first `:` after `://` and the last `@` masked.
fn mask_userinfo(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = text.find("://") else {
        return text.into();
    };
    let rest = scheme_end + "://".len();
    let Some(at) = text.rfind('@').filter(|&at| at >= rest) else {
        return text.into();
    };
    // No `:` before the `@`: a user name alone, nothing secret.
    let Some(colon) = text[rest..at].find(':') else {
        return text.into();
    };
    format!("{}***{}", &text[..rest + colon + 1], &text[at..]).into()
}

/// The text with the value of every `NAME=VALUE` whose name contains `password` masked up to the
/// next `&` (or the end: a raw `#` or `?` may belong to the password).
fn mask_password_parameters(text: &str) -> String {
    // What may come before a parameter's name: a URL's `?` and `&`, and the separators of a text
    // holding several values.
    let separator = |c: char| "?&;,/ \t\n[]{}()\"'".contains(c);
    let mut masked = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let (head, tail) = rest.split_at(eq + 1);
        masked.push_str(head);
        let name_start = head[..eq].rfind(separator).map_or(0, |i| i + 1);
        if is_password_name(&head[name_start..eq]) {
            masked.push_str("***");
            rest = tail.find('&').map_or("", |end| &tail[end..]);
        } else {
            rest = tail;
        }
    }
    masked.push_str(rest);
    masked
}

/// Whether a parameter name, percent-decoded, names a password (any case).
fn is_password_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded)
        .to_ascii_lowercase()
        .contains("password")
}

/// The connection component: the backend every other component talks to.
pub trait Connection: shaku::Interface + Lifecycle {
    /// The backend, with its pool.
    fn backend(&self) -> &Backend;

    /// The URL with credentials masked, for messages.
    fn display_url(&self) -> &str;

    /// The lock writers to this database take turns on: SQLite has one writer at a time, and
    /// writers waiting here go the moment it is free, instead of sleeping in SQLite's busy
    /// handler (1, 2, 5, 10... ms) while the database idles. Unused on other backends.
    fn writer(&self) -> &Arc<tokio::sync::Mutex<()>>;
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
    /// See [`Connection::writer`]; shared with the migration, which writes too.
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for DatabaseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConnection")
            .field("url", &self.display_url)
            .finish()
    }
}

impl DatabaseConnection {
    /// Shaku parameters for an opened backend, whose writers take turns on `writer`.
    pub fn parameters(
        backend: Backend,
        url: &str,
        writer: Arc<tokio::sync::Mutex<()>>,
    ) -> DatabaseConnectionParameters {
        DatabaseConnectionParameters {
            backend,
            display_url: mask_url(url),
            writer,
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

    fn writer(&self) -> &Arc<tokio::sync::Mutex<()>> {
        &self.writer
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

    /// A password made of words joined by the characters that end a URL's parts; a masked text
    /// holds none of its words.
    const WORDS: [&str; 8] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
    ];

    fn assert_hidden(masked: &str, url: &str) {
        for word in WORDS {
            assert!(
                !masked.contains(word),
                "{word:?} of the password shows in {masked:?} (from {url:?})"
            );
        }
    }

    #[test]
    fn a_password_with_the_characters_that_end_url_parts_is_masked_whole() {
        assert_eq!(
            mask_url("postgres://u:pa/ss?w@rd@host/db"),
            "postgres://u:***@host/db"
        );
        assert_eq!(
            mask_url("postgres://u:p#ss@h:5432/db?sslmode=require"),
            "postgres://u:***@h:5432/db?sslmode=require"
        );
        let separators = ["/", "?", "@", ":", "#", "%40", "%2F", "//", "://", "=", " "];
        for (i, separator) in separators.iter().enumerate() {
            let other = separators[(i + 3) % separators.len()];
            let password = format!(
                "alpha{separator}bravo{other}charlie{separator}delta@echo:foxtrot/golf?hotel"
            );
            for url in [
                format!("postgres://app:{password}@dbhost:5432/customers?sslmode=require"),
                format!("postgresql://app:{password}@dbhost/customers"),
                format!("postgres://app:{password}@dbhost"),
                format!("postgres://:{password}@dbhost/customers"),
            ] {
                let masked = mask_url(&url);
                assert_hidden(&masked, &url);
                assert!(masked.contains("dbhost"), "{masked}");
            }
        }
    }

    #[test]
    fn password_query_parameters_are_masked_whatever_their_spelling() {
        for (url, masked) in [
            (
                "postgres://h/db?password=alpha/bravo?charlie@delta:echo#foxtrot&sslmode=require",
                "postgres://h/db?password=***&sslmode=require",
            ),
            (
                "postgres://h/db?sslmode=require&PassWord=alpha",
                "postgres://h/db?sslmode=require&PassWord=***",
            ),
            (
                "postgres://h/db?pass%77ord=alpha",
                "postgres://h/db?pass%77ord=***",
            ),
            (
                "postgres://h/db?sslpassword=alpha",
                "postgres://h/db?sslpassword=***",
            ),
            (
                "postgres://u:alpha@h/db?password=bravo",
                "postgres://u:***@h/db?password=***",
            ),
        ] {
            assert_eq!(mask_url(url), masked);
        }
    }

    #[test]
    fn several_urls_in_one_text_are_all_masked() {
        let text = "[postgres://u:alpha/bravo@h1/db, postgres://v:charlie?delta@h2/db]";
        assert_hidden(&mask_url(text), text);
        let text = "url=postgres://u:alpha@h/db?x=1 postgres://h/db?password=bravo";
        assert_hidden(&mask_url(text), text);
    }
}
