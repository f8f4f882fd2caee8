//! A test database of either kind, the engine run against it, and views of its tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use migrate_core::{
    Backend, Config, ConnectionConfig, EventBoard, RunOptions, StatusBoard, Summary,
    build_migration_system, seed_customers,
};
use sqlx::{PgPool, SqlitePool};
use tokio_util::sync::CancellationToken;

#[path = "../../common/postgres_server.rs"]
mod postgres_server;
pub use postgres_server::{POSTGRES_URL_VAR, postgres_server};

/// Runs `$body` (an async fn taking a [`TestDb`]) once against SQLite and once against
/// PostgreSQL, as two tests `sqlite` and `postgres` in a module named after the body.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::super::harness::TestDb::sqlite().await;
                super::$name(&db).await;
                db.finish().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::super::harness::TestDb::postgres(stringify!($name)).await
                else {
                    return;
                };
                super::$name(&db).await;
                db.finish().await;
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{database}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A pool of either kind, for the test's own statements.
#[derive(Debug, Clone)]
pub enum Pool {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// One customer row, as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub full_name: String,
    pub email: String,
    pub schema_version: i64,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub migrated_at: Option<String>,
}

/// One row of `migration_failures`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Failure {
    pub id: i64,
    pub error: String,
    pub attempts: i64,
}

static NEXT_DATABASE: AtomicU32 = AtomicU32::new(0);

/// A database for one test: an SQLite file in a temporary directory, or a fresh PostgreSQL
/// database created for this test and dropped by [`TestDb::finish`].
#[derive(Debug)]
pub struct TestDb {
    /// The URL the engine is given.
    pub url: String,
    /// The test's own connections.
    pub pool: Pool,
    /// Holds the SQLite file and the audit log.
    pub dir: tempfile::TempDir,
    /// For PostgreSQL: the server's URL and the database to drop at the end.
    created: Option<(String, String)>,
}

impl TestDb {
    /// A new, empty SQLite database file.
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("customers.db").display());
        let backend = open(&url, true).await;
        backend.close().await;
        TestDb::connect(url, dir, None).await
    }

    /// A new, empty PostgreSQL database named after `test`, or `None` when no server is
    /// configured (see [`postgres_server`]).
    pub async fn postgres(test: &str) -> Option<TestDb> {
        let server = postgres_server()?;
        let name = format!(
            "dbm_{}_{}_{}",
            test.chars().take(30).collect::<String>(),
            std::process::id(),
            NEXT_DATABASE.fetch_add(1, Ordering::Relaxed)
        );
        let admin = PgPool::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await
            .unwrap();
        let create = format!("CREATE DATABASE {name}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = with_database(&server, &name);
        let dir = tempfile::tempdir().expect("temporary directory");
        Some(TestDb::connect(url, dir, Some((server, name))).await)
    }

    async fn connect(
        url: String,
        dir: tempfile::TempDir,
        created: Option<(String, String)>,
    ) -> TestDb {
        let pool = match open(&url, false).await {
            Backend::Sqlite(pool) => Pool::Sqlite(pool),
            Backend::Postgres(pool) => Pool::Postgres(pool),
            other => panic!("not a database: {other:?}"),
        };
        TestDb {
            url,
            pool,
            dir,
            created,
        }
    }

    /// Closes the connections and drops a PostgreSQL test database.
    pub async fn finish(self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
        if let Some((server, name)) = &self.created {
            let admin = PgPool::connect(server).await.unwrap();
            let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            sqlx::query(sqlx::AssertSqlSafe(drop))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
        }
    }

    /// Creates and fills `customers` with `n` demo customers.
    pub async fn seed(&self, n: u64) {
        let backend = open(&self.url, false).await;
        seed_customers(&backend, n, true).await.expect("seeding");
        backend.close().await;
    }

    /// The audit log of runs made with [`TestDb::config`].
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("migration.log")
    }

    /// The default configuration, pointed at this database, the audit log in the test's
    /// directory.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.connection.url = self.url.clone();
        config.customer_migrator.log_file = self.audit_log();
        config.customer_scanner.paging_state_path = self.dir.path().join("paging-state.json");
        config
    }

    /// Runs one migration to its end with `config`.
    pub async fn run(&self, config: &Config, options: RunOptions) -> Summary {
        run_engine(
            config,
            options,
            CancellationToken::new(),
            Box::new(EventBoard::discard()),
        )
        .await
    }

    /// A single integer.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Pool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether this is the SQLite database.
    pub fn is_sqlite(&self) -> bool {
        matches!(self.pool, Pool::Sqlite(_))
    }

    /// Runs the test's own statement `sql`; the database's error, if it refuses it.
    pub async fn execute(&self, sql: &str) -> Result<(), sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
    }

    /// Sets `column` of customer `id` to `value`, bound as a parameter so that any text (a NUL
    /// byte, a tab) reaches the database as it is; the database's error, if it refuses it.
    pub async fn set_text(&self, id: i64, column: &str, value: &str) -> Result<(), sqlx::Error> {
        let sql = match &self.pool {
            Pool::Sqlite(_) => format!("UPDATE customers SET {column} = ? WHERE id = ?"),
            Pool::Postgres(_) => format!("UPDATE customers SET {column} = $1 WHERE id = $2"),
        };
        let sql = sqlx::AssertSqlSafe(sql);
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::query(sql)
                .bind(value)
                .bind(id)
                .execute(pool)
                .await
                .map(drop),
            Pool::Postgres(pool) => sqlx::query(sql)
                .bind(value)
                .bind(id)
                .execute(pool)
                .await
                .map(drop),
        }
    }

    /// Sets the full name of the customers `ids`.
    pub async fn set_full_name(&self, ids: &[i64], full_name: &str) {
        for id in ids {
            let sql = sqlx::AssertSqlSafe(format!(
                "UPDATE customers SET full_name = '{}' WHERE id = {id}",
                full_name.replace('\'', "''")
            ));
            match &self.pool {
                Pool::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
                Pool::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            }
            .unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// The whole `customers` table by id.
    pub async fn dump(&self) -> BTreeMap<i64, Row> {
        const SQL: &str = "SELECT id, full_name, email, CAST(schema_version AS BIGINT) AS \
                           schema_version, first_name, last_name, migrated_at FROM customers \
                           ORDER BY id";
        let rows: Vec<Row> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        }
        .expect("dumping customers");
        rows.into_iter().map(|r| (r.id, r)).collect()
    }

    /// `SELECT schema_version, count(*) FROM customers GROUP BY 1`.
    pub async fn versions(&self) -> BTreeMap<i64, i64> {
        const SQL: &str =
            "SELECT CAST(schema_version AS BIGINT), count(*) FROM customers GROUP BY 1";
        let rows: Vec<(i64, i64)> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        }
        .expect("counting versions");
        rows.into_iter().collect()
    }

    /// The ids listed in `migration_audit`, in the order of its rows (empty when there is no
    /// such table yet).
    pub async fn audit_table_ids(&self) -> Vec<i64> {
        const SQL: &str = "SELECT record_keys FROM migration_audit";
        let rows: Result<Vec<String>, sqlx::Error> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_scalar(SQL).fetch_all(pool).await,
        };
        rows.unwrap_or_default()
            .iter()
            .flat_map(|ids| serde_json::from_str::<Vec<i64>>(ids).expect("a JSON array of ids"))
            .collect()
    }

    /// `migration_failures` by id.
    pub async fn failures(&self) -> BTreeMap<i64, Failure> {
        const SQL: &str = "SELECT CAST(record_key AS BIGINT) AS id, error, \
                           CAST(attempts AS BIGINT) AS attempts FROM migration_failures \
                           ORDER BY 1";
        let rows: Vec<Failure> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        }
        .expect("reading migration_failures");
        rows.into_iter().map(|f| (f.id, f)).collect()
    }
}

/// Opens `url` as the engine does.
pub async fn open(url: &str, create: bool) -> Backend {
    let config = ConnectionConfig {
        url: url.to_owned(),
        ..ConnectionConfig::default()
    };
    Backend::open(&config, create)
        .await
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

/// Builds the system with `board`, starts it, runs one migration and stops it.
pub async fn run_engine(
    config: &Config,
    options: RunOptions,
    shutdown: CancellationToken,
    board: Box<dyn StatusBoard>,
) -> Summary {
    let system = build_migration_system(config, Some((board, "test board")))
        .await
        .expect("building the system");
    system.start().await.expect("starting the system");
    let summary = migrate_core::overseer(&system)
        .run(options, shutdown)
        .await
        .expect("running");
    system.stop().await.expect("stopping the system");
    summary
}

/// Runs the migration declared in `file` of the repository's `migrations/` once, with
/// `config`, as `db-migrate --migration` does.
pub async fn run_declared(config: &Config, file: &str, options: RunOptions) -> Summary {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(file);
    let backend = open(&config.connection.url, false).await;
    let writer = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    let migration = migrate_core::SqlMigration::from_file(&path, &backend)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_timeouts(migrate_core::BatchTimeouts::from_config(
            &config.customer_migration,
        ))
        .sharing_writer(std::sync::Arc::clone(&writer));
    let system = migrate_core::builder_for(config, backend, writer, std::sync::Arc::new(migration))
        .with_override::<dyn StatusBoard>(Box::new(EventBoard::discard()), "test board")
        .build()
        .expect("building the system");
    system.start().await.expect("starting the system");
    let summary = migrate_core::overseer(&system)
        .run(options, CancellationToken::new())
        .await
        .expect("running");
    system.stop().await.expect("stopping the system");
    summary
}

/// What a legacy row becomes when migrated: `None` when its name is malformed.
pub fn migrated(row: &Row) -> Option<(String, String, String)> {
    let (first, last) = migrate_core::split_full_name(&row.full_name).ok()?;
    Some((
        first.to_owned(),
        last.to_owned(),
        row.email.trim().to_lowercase(),
    ))
}

/// The ids named in each line of an audit log, in order.
pub fn audited_ids(log: &Path) -> Vec<i64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .map(|line| {
            let rest = line.split(" customer ").nth(1).expect("an audit line");
            rest.split(' ').next().unwrap().parse().expect("an id")
        })
        .collect()
}
