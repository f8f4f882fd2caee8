//! `db-migrate --migration FILE`: migrations declared in TOML, run on the demo database with
//! failures, a dry run, an interrupted run and its resume, on SQLite and PostgreSQL.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{PgPool, SqlitePool};

use crate::util::{PgDatabase, Scratch, stderr, stdout};

/// A file of the repository's `migrations/`.
fn shipped(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(name)
        .display()
        .to_string()
}

fn seed(scratch: &Scratch, url: &str) {
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        "6000",
        "--force",
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    assert!(
        stderr(&seeded).contains("600 orders"),
        "{}",
        stderr(&seeded)
    );
}

fn args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        format!("connection.url={url}"),
        "status-board.mode=off".to_owned(),
        "--migration".to_owned(),
        shipped("orders-normalize.toml"),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn run(scratch: &Scratch, url: &str, extra: &[&str]) -> Output {
    let args = args(url, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    scratch.run(&args)
}

fn json(output: &Output) -> serde_json::Value {
    let out = stdout(output);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{}", stderr(output)))
}

/// What the orders table and the bookkeeping say.
#[derive(Debug, PartialEq, Eq)]
struct Orders {
    /// Orders normalized by the runs under test (not by the seed).
    normalized_by_runs: BTreeSet<(String, i64)>,
    /// Orders still pending.
    pending: i64,
    /// Keys in `migration_audit` for this migration, each as often as listed.
    audited: Vec<(String, i64)>,
    /// Open failures of this migration.
    open_failures: i64,
}

async fn orders_state(url: &str) -> Orders {
    const NORMALIZED: &str = "SELECT region, order_no FROM orders
        WHERE normalized_at IS NOT NULL AND normalized_at <> '2024-01-01T00:00:00Z'";
    const PENDING: &str = "SELECT count(*) FROM orders WHERE normalized_at IS NULL";
    const AUDIT: &str =
        "SELECT record_keys FROM migration_audit WHERE migration = 'orders-normalize'";
    const OPEN: &str = "SELECT count(*) FROM migration_failures
        WHERE migration = 'orders-normalize' AND resolved_at IS NULL";
    macro_rules! read {
        ($pool:expr) => {{
            let pool = $pool;
            let normalized: Vec<(String, i64)> =
                sqlx::query_as(NORMALIZED).fetch_all(&pool).await.unwrap();
            let pending: i64 = sqlx::query_scalar(PENDING).fetch_one(&pool).await.unwrap();
            let audit: Vec<String> = sqlx::query_scalar(AUDIT)
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
            let open: i64 = sqlx::query_scalar(OPEN)
                .fetch_one(&pool)
                .await
                .unwrap_or_default();
            pool.close().await;
            (normalized, pending, audit, open)
        }};
    }
    let (normalized, pending, audit, open_failures) = if url.starts_with("sqlite:") {
        read!(SqlitePool::connect(url).await.unwrap())
    } else {
        read!(PgPool::connect(url).await.unwrap())
    };
    let audited = audit
        .iter()
        .flat_map(|keys| serde_json::from_str::<Vec<(String, i64)>>(keys).unwrap())
        .collect();
    Orders {
        normalized_by_runs: normalized.into_iter().collect(),
        pending,
        audited,
        open_failures,
    }
}

/// The orders migration from its file: a dry run changes nothing, a run interrupted by Ctrl-C
/// resumes without doing a record twice, failures are recorded with the file's message, and
/// the audit lists exactly what the runs normalized.
async fn orders_migrate_from_their_file(scratch: &Scratch, url: &str, read_url: &str) {
    seed(scratch, url);
    let before = orders_state(read_url).await;
    assert!(before.pending > 100, "{before:?}");

    let dry = run(scratch, url, &["-D", "--json"]);
    assert_eq!(dry.status.code(), Some(1), "{}", stderr(&dry));
    let dry = json(&dry);
    assert!(dry["migrated"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["failed"].as_u64().unwrap() > 0, "{dry}");
    assert_eq!(
        orders_state(read_url).await,
        before,
        "a dry run writes nothing"
    );

    // Slowly, so that Ctrl-C lands in the middle.
    let args = args(
        url,
        &[
            "customer-migration.rate-limit=200",
            "customer-migrator.batch-size=5",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = scratch
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the run did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let midway = orders_state(read_url).await;
    assert!(
        !midway.normalized_by_runs.is_empty() && midway.pending > 0,
        "interrupted in the middle: {} normalized, {} pending",
        midway.normalized_by_runs.len(),
        midway.pending
    );

    let finished = run(scratch, url, &["--json"]);
    assert_eq!(finished.status.code(), Some(1), "{}", stderr(&finished));
    let summary = json(&finished);
    assert_eq!(summary["ending"], "completed", "{summary}");
    assert!(
        stderr(&finished).contains("orders"),
        "the summary speaks of orders: {}",
        stderr(&finished)
    );
    let after = orders_state(read_url).await;
    // Left: the orders that cannot be normalized, failed in either run, each recorded once.
    assert_eq!(
        after.pending as u64,
        summary["open_failures"].as_u64().unwrap(),
        "{summary}"
    );
    assert!(summary["failed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(after.open_failures, after.pending);
    let audited: BTreeSet<(String, i64)> = after.audited.iter().cloned().collect();
    assert_eq!(audited.len(), after.audited.len(), "an order audited twice");
    assert_eq!(
        audited, after.normalized_by_runs,
        "the audit lists what was normalized"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_migrate_from_their_file_on_sqlite() {
    let scratch = Scratch::new();
    let read_url = format!("sqlite://{}", scratch.path().join("orders.db").display());
    orders_migrate_from_their_file(&scratch, "sqlite://orders.db", &read_url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_migrate_from_their_file_on_postgres() {
    let Some(db) = PgDatabase::new("orders").await else {
        return;
    };
    let scratch = Scratch::new();
    orders_migrate_from_their_file(&scratch, &db.url, &db.url).await;
    db.drop_it().await;
}

#[test]
fn a_bad_migration_file_is_a_usage_error_naming_the_file_and_the_key() {
    let scratch = Scratch::new();
    seed(&scratch, "sqlite://bad.db");
    std::fs::write(
        scratch.path().join("bad.toml"),
        "table = \"orders\"\nkey = [{ column = \"region\", type = \"text\" }]\n\
         pending = \"normalized_at IS NULL\"\nsett = { status = \"'x'\" }\n",
    )
    .unwrap();
    let output = scratch.run(&[
        "connection.url=sqlite://bad.db",
        "status-board.mode=off",
        "--migration",
        "bad.toml",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("bad.toml") && err.contains("sett"), "{err}");

    // A column the table does not have: named before anything runs.
    std::fs::write(
        scratch.path().join("nocolumn.toml"),
        "table = \"orders\"\nkey = [{ column = \"region\", type = \"text\" }, \
         { column = \"order_no\", type = \"integer\" }]\n\
         pending = \"normalized_at IS NULL\"\n[set]\nstatuz = \"'x'\"\n",
    )
    .unwrap();
    let output = scratch.run(&[
        "connection.url=sqlite://bad.db",
        "status-board.mode=off",
        "--migration",
        "nocolumn.toml",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    // The file's own words, not the name of the component that read it.
    assert!(
        err.contains("db-migrate: error: nocolumn.toml: table orders has no column statuz"),
        "{err}"
    );
    assert!(!err.contains("customer-migrator"), "{err}");
}

/// The customer split from its file leaves `customers` exactly as the built-in migration does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_customer_split_file_and_the_built_in_migration_leave_the_same_table() {
    let scratch = Scratch::new();
    seed(&scratch, "sqlite://rust.db");
    seed(&scratch, "sqlite://toml.db");
    let builtin = scratch.run(&["connection.url=sqlite://rust.db", "status-board.mode=off"]);
    assert_eq!(builtin.status.code(), Some(1), "{}", stderr(&builtin));
    let file = shipped("customer-split.toml");
    let declared = scratch.run(&[
        "connection.url=sqlite://toml.db",
        "status-board.mode=off",
        "--migration",
        &file,
    ]);
    assert_eq!(declared.status.code(), Some(1), "{}", stderr(&declared));
    const DUMP: &str = "SELECT id, full_name, email, schema_version, first_name, last_name,
        migrated_at IS NOT NULL FROM customers ORDER BY id";
    type Row = (
        i64,
        String,
        String,
        i64,
        Option<String>,
        Option<String>,
        bool,
    );
    let mut tables = Vec::new();
    for db in ["rust.db", "toml.db"] {
        let url = format!("sqlite://{}", scratch.path().join(db).display());
        let pool = SqlitePool::connect(&url).await.unwrap();
        let rows: Vec<Row> = sqlx::query_as(DUMP).fetch_all(&pool).await.unwrap();
        pool.close().await;
        tables.push(rows);
    }
    assert_eq!(tables[0].len(), 6000);
    assert!(tables[0] == tables[1], "the two tables differ");
}

/// Bookkeeping of one migration: open failures, audited keys and checkpoints left.
async fn bookkeeping(url: &str, migration: &str) -> (i64, usize, i64) {
    let failures = format!(
        "SELECT count(*) FROM migration_failures WHERE migration = '{migration}' \
         AND resolved_at IS NULL"
    );
    let audit = format!("SELECT record_keys FROM migration_audit WHERE migration = '{migration}'");
    let checkpoints =
        format!("SELECT count(*) FROM migration_checkpoints WHERE migration = '{migration}'");
    macro_rules! read {
        ($pool:expr) => {{
            let pool = $pool;
            let failures: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(failures))
                .fetch_one(&pool)
                .await
                .unwrap();
            let audit: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(audit))
                .fetch_all(&pool)
                .await
                .unwrap();
            let checkpoints: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(checkpoints))
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            pool.close().await;
            let audited: usize = audit
                .iter()
                .map(|keys| {
                    serde_json::from_str::<Vec<serde_json::Value>>(keys)
                        .unwrap()
                        .len()
                })
                .sum();
            (failures, audited, checkpoints)
        }};
    }
    if url.starts_with("sqlite:") {
        read!(SqlitePool::connect(url).await.unwrap())
    } else {
        read!(PgPool::connect(url).await.unwrap())
    }
}

/// The customer migration and the orders migration in one database: an interrupted orders run
/// keeps its checkpoint while the customers complete; each has its own failures and audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_one_after_the_other_keep_to_their_own_bookkeeping_on_sqlite() {
    let scratch = Scratch::new();
    let read_url = format!("sqlite://{}", scratch.path().join("two.db").display());
    seed(&scratch, "sqlite://two.db");
    // The orders run is stopped in the middle by a failure limit.
    let orders = run(
        &scratch,
        "sqlite://two.db",
        &[
            "customer-migration.max-failures=5",
            "customer-migrator.batch-size=5",
        ],
    );
    assert_eq!(orders.status.code(), Some(3), "{}", stderr(&orders));
    let (_, _, orders_checkpoints) = bookkeeping(&read_url, "orders-normalize").await;
    assert_eq!(
        orders_checkpoints, 1,
        "the aborted orders run kept its checkpoint"
    );
    // The customers complete, and clear their own checkpoint only.
    let customers = scratch.run(&[
        "connection.url=sqlite://two.db",
        "status-board.mode=off",
        "--json",
    ]);
    assert_eq!(customers.status.code(), Some(1), "{}", stderr(&customers));
    let summary = json(&customers);
    let (failures, audited, checkpoints) = bookkeeping(&read_url, "customer-migration").await;
    assert_eq!(failures as u64, summary["failed"].as_u64().unwrap());
    assert_eq!(audited as u64, summary["migrated"].as_u64().unwrap());
    assert_eq!(checkpoints, 0);
    assert_eq!(bookkeeping(&read_url, "orders-normalize").await.2, 1);
    // The orders resume from their checkpoint and finish.
    let resumed = run(&scratch, "sqlite://two.db", &["--json"]);
    assert_eq!(resumed.status.code(), Some(1), "{}", stderr(&resumed));
    let after = orders_state(&read_url).await;
    let (failures, audited, checkpoints) = bookkeeping(&read_url, "orders-normalize").await;
    assert_eq!(
        failures, after.pending,
        "each order left is one open failure"
    );
    assert_eq!(audited, after.normalized_by_runs.len());
    assert_eq!(checkpoints, 0);
    // The customers' bookkeeping did not change.
    let (c_failures, c_audited, _) = bookkeeping(&read_url, "customer-migration").await;
    assert_eq!(c_failures as u64, summary["failed"].as_u64().unwrap());
    assert_eq!(c_audited as u64, summary["migrated"].as_u64().unwrap());
}

/// On PostgreSQL both run at once, in two processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_at_once_keep_to_their_own_bookkeeping_on_postgres() {
    let Some(db) = PgDatabase::new("two").await else {
        return;
    };
    let url = db.url.clone();
    let scratch = Scratch::new();
    seed(&scratch, &url);
    let orders_args = args(&url, &["--json", "customer-migrator.batch-size=10"]);
    let orders_args: Vec<&str> = orders_args.iter().map(String::as_str).collect();
    let customer_url = format!("connection.url={url}");
    let customers_args = [customer_url.as_str(), "status-board.mode=off", "--json"];
    let orders_child = scratch
        .command(&orders_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let customers_child = scratch
        .command(&customers_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let orders = orders_child.wait_with_output().unwrap();
    let customers = customers_child.wait_with_output().unwrap();
    assert_eq!(orders.status.code(), Some(1), "{}", stderr(&orders));
    assert_eq!(customers.status.code(), Some(1), "{}", stderr(&customers));
    for (migration, output) in [
        ("orders-normalize", &orders),
        ("customer-migration", &customers),
    ] {
        let summary = json(output);
        let (failures, audited, checkpoints) = bookkeeping(&url, migration).await;
        assert_eq!(
            failures as u64,
            summary["failed"].as_u64().unwrap(),
            "{migration}"
        );
        assert_eq!(
            audited as u64,
            summary["migrated"].as_u64().unwrap(),
            "{migration}"
        );
        assert_eq!(checkpoints, 0, "{migration}");
    }
    db.drop_it().await;
}
