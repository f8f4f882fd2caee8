//! The customer migration on a real database against its physical limit, in one process.
//!
//! Seeds the demo `customers` table (1 million rows by default) once, then alternates rounds on
//! fresh copies of it: the engine with the default settings (`Config::default()` pointed at the
//! database, board discarded), and the same transformation as ONE set-based `UPDATE customers SET
//! ... WHERE schema_version = 1 AND <well-formed>`, the fastest the database can do the work.
//! Prints each round, the medians in rows of the table per second, and their ratio.
//!
//! `cargo bench -p migrate-core --bench sqlite` runs SQLite; `-- --postgres` runs PostgreSQL at
//! `DB_MIGRATE_TEST_POSTGRES_URL` instead (start one with `.ci/postgres.sh`). Other options:
//! `--rows N`, `--rounds R`, and engine settings `--processes P`, `--batch-size B`,
//! `--fetch-size F`, `--block-size K`, `--max-connections C`.

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::{Duration, Instant};

use migrate_core::{
    Backend, Config, ConnectionConfig, EventBoard, RunOptions, StatusBoard, build_migration_system,
    overseer, seed_customers,
};
use sqlx::AssertSqlSafe;
use tokio_util::sync::CancellationToken;

/// The migration as one statement: the same expressions as the engine's per-batch statement,
/// trimming the characters of [`whitespace`] (bound as `?1`/`$1`).
const SET_BASED_SQLITE: &str = "UPDATE customers SET
    last_name = trim(substr(full_name, 1, instr(full_name, ',') - 1), ?1),
    first_name = trim(substr(full_name, instr(full_name, ',') + 1), ?1),
    email = lower(trim(email, ?1)),
    schema_version = 2,
    migrated_at = '2026-01-01T00:00:00Z'
  WHERE schema_version = 1
    AND instr(CAST(full_name AS BLOB), x'00') = 0
    AND instr(full_name, ',') > 0
    AND trim(substr(full_name, 1, instr(full_name, ',') - 1), ?1) <> ''
    AND trim(substr(full_name, instr(full_name, ',') + 1), ?1) <> ''";
const SET_BASED_POSTGRES: &str = "UPDATE customers SET
    last_name = btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $1),
    first_name = btrim(substr(full_name, strpos(full_name, ',') + 1), $1),
    email = lower(btrim(email, $1)),
    schema_version = 2,
    migrated_at = '2026-01-01T00:00:00Z'
  WHERE schema_version = 1
    AND strpos(full_name, ',') > 0
    AND btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $1) <> ''
    AND btrim(substr(full_name, strpos(full_name, ',') + 1), $1) <> ''";

/// Every character Rust calls whitespace: the set the migration trims.
fn whitespace() -> String {
    (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| c.is_whitespace())
        .collect()
}

#[derive(Debug, Clone)]
struct Options {
    rows: u64,
    rounds: usize,
    postgres: bool,
    processes: Option<usize>,
    batch_size: Option<usize>,
    fetch_size: Option<usize>,
    block_size: Option<usize>,
    max_connections: Option<u32>,
}

fn options() -> Options {
    let mut options = Options {
        rows: 1_000_000,
        rounds: 3,
        postgres: false,
        processes: None,
        batch_size: None,
        fetch_size: None,
        block_size: None,
        max_connections: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--rows" => options.rows = value(),
            "--rounds" => options.rounds = value() as usize,
            "--postgres" => options.postgres = true,
            "--processes" => options.processes = Some(value() as usize),
            "--batch-size" => options.batch_size = Some(value() as usize),
            "--fetch-size" => options.fetch_size = Some(value() as usize),
            "--block-size" => options.block_size = Some(value() as usize),
            "--max-connections" => options.max_connections = Some(value() as u32),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    options
}

/// Where the copies live: SQLite files, or PostgreSQL databases made from a template.
enum Target {
    Sqlite { dir: tempfile::TempDir },
    Postgres { server: String },
}

impl Target {
    fn seed_url(&self) -> String {
        match self {
            Target::Sqlite { dir } => format!("sqlite://{}", dir.path().join("seed.db").display()),
            Target::Postgres { server } => with_database(server, "dbm_bench_seed"),
        }
    }

    /// A fresh copy of the seeded table; returns its URL.
    async fn copy(&self, name: &str) -> String {
        match self {
            Target::Sqlite { dir } => {
                let to = dir.path().join(format!("{name}.db"));
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
                }
                std::fs::copy(dir.path().join("seed.db"), &to).expect("copying the seed");
                format!("sqlite://{}", to.display())
            }
            Target::Postgres { server } => {
                admin(
                    server,
                    &[
                        format!("DROP DATABASE IF EXISTS dbm_bench_{name} WITH (FORCE)"),
                        format!("CREATE DATABASE dbm_bench_{name} TEMPLATE dbm_bench_seed"),
                    ],
                )
                .await;
                with_database(server, &format!("dbm_bench_{name}"))
            }
        }
    }
}

fn with_database(server: &str, database: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').expect("a database in the URL");
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..host_end])
}

async fn admin(server: &str, statements: &[String]) {
    let pool = sqlx::PgPool::connect(server).await.expect("the server");
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
}

async fn open(url: &str, create: bool) -> Backend {
    let config = ConnectionConfig {
        url: url.to_owned(),
        ..ConnectionConfig::default()
    };
    Backend::open(&config, create).await.expect("opening")
}

/// The engine with the default settings (and the overrides given). Returns seconds.
async fn engine(url: &str, dir: &Path, options: &Options, rows: u64) -> Duration {
    let mut config = Config::default();
    config.connection.url = url.to_owned();
    config.customer_migrator.log_file = dir.join("migration.log");
    let _ = std::fs::remove_file(&config.customer_migrator.log_file);
    if let Some(v) = options.processes {
        config.customer_migration.processes = v;
    }
    if let Some(v) = options.batch_size {
        config.customer_migrator.batch_size = Some(v);
    }
    if let Some(v) = options.fetch_size {
        config.customer_scanner.fetch_size = v;
    }
    if let Some(v) = options.block_size {
        config.customer_scanner.block_size = v;
    }
    if let Some(v) = options.max_connections {
        config.connection.max_connections = v;
    }
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let system = build_migration_system(&config, Some((board, "EventBoard")))
        .await
        .expect("building");
    system.start().await.expect("starting");
    let started = Instant::now();
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await
        .expect("running");
    let elapsed = started.elapsed();
    system.stop().await.expect("stopping");
    assert_eq!(
        summary.migrated + summary.previously_migrated + summary.failed,
        rows,
        "{summary:?}"
    );
    elapsed
}

/// The physical limit: one set-based UPDATE. Returns seconds and rows updated.
async fn set_based(url: &str) -> (Duration, u64) {
    let backend = open(url, false).await;
    let whitespace = whitespace();
    let started = Instant::now();
    let updated = match &backend {
        Backend::Sqlite(pool) => sqlx::query(SET_BASED_SQLITE)
            .bind(&whitespace)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Backend::Postgres(pool) => sqlx::query(SET_BASED_POSTGRES)
            .bind(&whitespace)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        _ => unreachable!("a database"),
    }
    .expect("the set-based update");
    let elapsed = started.elapsed();
    backend.close().await;
    (elapsed, updated)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let target = if options.postgres {
        let server = std::env::var("DB_MIGRATE_TEST_POSTGRES_URL")
            .expect("--postgres needs DB_MIGRATE_TEST_POSTGRES_URL (see .ci/postgres.sh)");
        admin(
            &server,
            &[
                "DROP DATABASE IF EXISTS dbm_bench_seed WITH (FORCE)".to_owned(),
                "CREATE DATABASE dbm_bench_seed".to_owned(),
            ],
        )
        .await;
        Target::Postgres { server }
    } else {
        Target::Sqlite {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    };
    let kind = if options.postgres {
        "postgres"
    } else {
        "sqlite"
    };
    let started = Instant::now();
    let seed = open(&target.seed_url(), true).await;
    let report = seed_customers(&seed, options.rows, true)
        .await
        .expect("seeding");
    if let Backend::Postgres(pool) = &seed {
        sqlx::query("VACUUM ANALYZE customers")
            .execute(pool)
            .await
            .expect("vacuum");
    }
    seed.close().await;
    println!(
        "{kind}: seeded {} customers ({} migrated, {} malformed) in {:.1} s; settings {options:?}",
        report.customers,
        report.migrated,
        report.malformed,
        started.elapsed().as_secs_f64()
    );

    let rows = options.rows as f64;
    let (mut engine_rates, mut set_rates) = (Vec::new(), Vec::new());
    for round in 1..=options.rounds {
        let url = target.copy("engine").await;
        let took = engine(&url, dir.path(), &options, options.rows).await;
        engine_rates.push(rows / took.as_secs_f64());
        let url = target.copy("set").await;
        let (set_took, updated) = set_based(&url).await;
        set_rates.push(rows / set_took.as_secs_f64());
        println!(
            "round {round}: engine {:.2} s ({:.0} rows/s), one UPDATE {:.2} s ({:.0} rows/s, \
             {updated} rows updated)",
            took.as_secs_f64(),
            rows / took.as_secs_f64(),
            set_took.as_secs_f64(),
            rows / set_took.as_secs_f64(),
        );
    }
    let (engine_rate, set_rate) = (median(&mut engine_rates), median(&mut set_rates));
    println!(
        "{kind}, {} rows: engine {engine_rate:.0} rows/s, one UPDATE {set_rate:.0} rows/s, \
         ratio {:.2} (medians of {} rounds)",
        options.rows,
        engine_rate / set_rate,
        options.rounds
    );
    if let Target::Postgres { server } = &target {
        admin(
            server,
            &[
                "DROP DATABASE IF EXISTS dbm_bench_engine WITH (FORCE)".to_owned(),
                "DROP DATABASE IF EXISTS dbm_bench_set WITH (FORCE)".to_owned(),
                "DROP DATABASE IF EXISTS dbm_bench_seed WITH (FORCE)".to_owned(),
            ],
        )
        .await;
    }
}
