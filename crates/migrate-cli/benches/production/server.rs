//! The benchmark's databases on the PostgreSQL server, and the `db-migrate` runs on them.

use std::path::Path;
use std::process::{Command, Stdio};

use sqlx::AssertSqlSafe;

/// The seeded database every measure copies.
pub const SEED: &str = "db_migrate_bench_load_seed";
/// The copy a measure runs on.
pub const COPY: &str = "db_migrate_bench_load";

/// The release `db-migrate` that `cargo bench` built with this benchmark.
const DB_MIGRATE: &str = env!("CARGO_BIN_EXE_db-migrate");

/// `db-migrate`, with none of the `DB_MIGRATE_*` variables of this shell: it reads them as
/// configuration (and refuses `DB_MIGRATE_TEST_POSTGRES_URL`), and every run here is to use
/// the built-in defaults and the overrides given.
fn db_migrate(dir: &Path) -> Command {
    let mut command = Command::new(DB_MIGRATE);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DB_MIGRATE_") {
            command.env_remove(name);
        }
    }
    command.current_dir(dir).stdin(Stdio::null());
    command
}

/// The PostgreSQL server of `DB_MIGRATE_TEST_POSTGRES_URL`, reached through its database.
#[derive(Debug)]
pub struct Server {
    url: String,
    runtime: tokio::runtime::Runtime,
}

/// What `db-migrate --json` said about a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Rows of the table handled: migrated, previously migrated, failed.
    pub scanned: u64,
    /// Rows migrated by this run.
    pub migrated: u64,
    /// The run's time in seconds, as it measured it.
    pub seconds: f64,
    /// The batch size at the end.
    pub batch_size: Option<u64>,
    /// `completed`, `interrupted` or `aborted`.
    pub ending: String,
}

impl RunSummary {
    /// Rows of the table per second.
    pub fn rows_per_second(&self) -> f64 {
        self.scanned as f64 / self.seconds.max(1e-9)
    }
}

impl Server {
    /// The server at `url` (any database on it).
    pub fn new(url: String) -> Server {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Server { url, runtime }
    }

    /// The URL of `database` on this server.
    pub fn url_of(&self, database: &str) -> String {
        let (base, query) = self
            .url
            .split_once('?')
            .map_or((self.url.as_str(), None), |(b, q)| (b, Some(q)));
        let host_end = base.rfind('/').expect("a database in the URL");
        let query = query.map(|q| format!("?{q}")).unwrap_or_default();
        format!("{}/{database}{query}", &base[..host_end])
    }

    /// Runs `statements` in order on `database` (`None`: the URL's own).
    pub fn execute(&self, database: Option<&str>, statements: &[String]) {
        let url = database.map_or_else(|| self.url.clone(), |d| self.url_of(d));
        self.runtime.block_on(async {
            let pool = sqlx::PgPool::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
            for sql in statements {
                sqlx::query(AssertSqlSafe(sql.clone()))
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
            }
            pool.close().await;
        });
    }

    /// Drops `database` if it is there.
    pub fn drop_database(&self, database: &str) {
        self.execute(
            None,
            &[format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)")],
        );
    }

    /// Makes [`SEED`] anew and seeds `rows` customers into it with `db-migrate seed`, then
    /// vacuums and analyzes it as a table in service would be.
    pub fn seed(&self, rows: u64, dir: &Path) {
        self.drop_database(SEED);
        self.execute(None, &[format!("CREATE DATABASE {SEED}")]);
        let output = db_migrate(dir)
            .arg("seed")
            .arg(format!("--customers={rows}"))
            .arg(format!("connection.url={}", self.url_of(SEED)))
            .output()
            .expect("running db-migrate seed");
        assert!(
            output.status.success(),
            "db-migrate seed failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        self.execute(Some(SEED), &["VACUUM ANALYZE customers".to_owned()]);
    }

    /// Makes [`COPY`] anew from [`SEED`].
    pub fn copy(&self) -> String {
        self.drop_database(COPY);
        self.execute(None, &[format!("CREATE DATABASE {COPY} TEMPLATE {SEED}")]);
        self.url_of(COPY)
    }
}

/// Migrates the customers at `url` with `db-migrate --json` and the configuration overrides
/// `overrides`, from `dir` (no `conf/` there: the built-in defaults).
pub fn migrate(url: &str, overrides: &[String], dir: &Path) -> RunSummary {
    let output = db_migrate(dir)
        .arg("--json")
        .arg(format!("connection.url={url}"))
        .args(overrides)
        .output()
        .expect("running db-migrate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "db-migrate printed no summary ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let json: serde_json::Value = serde_json::from_str(line).expect("the --json summary");
    let number = |key: &str| {
        json[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    RunSummary {
        scanned: number("scanned"),
        migrated: number("migrated"),
        seconds: number("elapsed") as f64 / 1000.0,
        batch_size: json["batch_size"].as_u64(),
        ending: json["ending"].as_str().unwrap_or("?").to_owned(),
    }
}
