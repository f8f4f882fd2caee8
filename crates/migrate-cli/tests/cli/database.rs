//! `db-migrate` against real databases: killed and restarted runs end as an uninterrupted one,
//! the JSON summary matches the tables, and a password never shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Output;

use sqlx::{PgPool, SqlitePool};

use crate::util::{Scratch, kill_after, random_below, stderr, stdout};

use crate::postgres_server::postgres_server;
/// When the demo rows were migrated, in the seeded data.
const SEEDED_MIGRATED_AT: &str = "2024-01-01T00:00:00Z";
/// Customers in the seeded test databases.
const CUSTOMERS: u64 = 20_000;

/// One customer row as compared between runs; `migrated_at` only when it is the seeded one.
type Row = (
    i64,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
);

const DUMP: &str = "SELECT id, full_name, email, CAST(schema_version AS BIGINT), first_name, \
                    last_name, migrated_at FROM customers ORDER BY id";
const VERSIONS: &str =
    "SELECT CAST(schema_version AS BIGINT), count(*) FROM customers GROUP BY 1 ORDER BY 1";
const FAILURE_IDS: &str = "SELECT CAST(record_key AS BIGINT) FROM migration_failures ORDER BY 1";

/// What the tables hold after a run.
#[derive(Debug, PartialEq, Eq)]
struct Tables {
    /// Every customer, `migrated_at` blanked when the run under test set it.
    customers: Vec<Row>,
    /// `SELECT schema_version, count(*) ... GROUP BY 1`.
    versions: BTreeMap<i64, i64>,
    /// The ids in `migration_failures`.
    failure_ids: Vec<i64>,
}

async fn read_tables(url: &str) -> Tables {
    macro_rules! read {
        ($pool:expr) => {{
            let pool = $pool;
            let customers: Vec<Row> = sqlx::query_as(DUMP).fetch_all(&pool).await.unwrap();
            let versions: Vec<(i64, i64)> =
                sqlx::query_as(VERSIONS).fetch_all(&pool).await.unwrap();
            let failure_ids: Vec<i64> = sqlx::query_scalar(FAILURE_IDS)
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            (customers, versions, failure_ids)
        }};
    }
    let (customers, versions, failure_ids) = if url.starts_with("sqlite:") {
        read!(SqlitePool::connect(url).await.unwrap())
    } else {
        read!(PgPool::connect(url).await.unwrap())
    };
    let customers = customers
        .into_iter()
        .map(|mut row| {
            if row.6.as_deref() != Some(SEEDED_MIGRATED_AT) {
                row.6 = row.6.map(|_| "set by this run".to_owned());
            }
            row
        })
        .collect();
    Tables {
        customers,
        versions: versions.into_iter().collect(),
        failure_ids,
    }
}

/// The ids listed in the `migration_audit` table of the SQLite database at `url`.
async fn audit_table_ids(url: &str) -> Vec<i64> {
    let pool = SqlitePool::connect(url).await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar("SELECT record_keys FROM migration_audit")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter()
        .flat_map(|ids| serde_json::from_str::<Vec<i64>>(ids).unwrap())
        .collect()
}

/// The JSON summary a run printed.
fn json_summary(output: &Output) -> serde_json::Value {
    let out = stdout(output);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{}", stderr(output)))
}

/// The ids of an audit log, one per line.
fn audited_ids(log: &Path) -> Vec<i64> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let rest = line
                .split(" customer ")
                .nth(1)
                .unwrap_or_else(|| panic!("{line:?}"));
            rest.split(' ').next().unwrap().parse().unwrap()
        })
        .collect()
}

fn seed(scratch: &Scratch, url: &str) {
    let customers = CUSTOMERS.to_string();
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        &customers,
        "--force",
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
}

fn migrate_args(url: &str, log: &str) -> Vec<String> {
    vec![
        format!("connection.url={url}"),
        "status-board.mode=off".to_owned(),
        format!("customer-migrator.log-file={log}"),
        // Smaller batches than the default: more commits, so more places for a kill to land
        // between and inside them, and a run long enough to be caught in the middle.
        "customer-migrator.batch-size=100".to_owned(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_killed_at_random_points_end_as_an_uninterrupted_run() {
    let scratch = Scratch::new();
    let reference_url = "sqlite://reference.db";
    seed(&scratch, reference_url);
    let args = migrate_args(reference_url, "reference.log");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let reference_run = scratch.run(&args);
    assert_eq!(
        reference_run.status.code(),
        Some(1),
        "failures recorded: {}",
        stderr(&reference_run)
    );
    let reference = read_tables(&format!(
        "sqlite://{}",
        scratch.path().join("reference.db").display()
    ))
    .await;
    let migrated_by_reference = audited_ids(&scratch.path().join("reference.log")).len();
    assert!(migrated_by_reference > 10_000);
    assert!(!reference.failure_ids.is_empty());

    for round in 0..3 {
        let db = format!("killed{round}.db");
        let url = format!("sqlite://{db}");
        let log = format!("killed{round}.log");
        seed(&scratch, &url);
        // One or two kills at random points, then a run to the end.
        let mut floor = 0;
        for _ in 0..=(round % 2) {
            // A batch writes many audit lines at once: the first kill may land late.
            let room = (migrated_by_reference * 4 / 5).saturating_sub(floor);
            if room == 0 {
                break;
            }
            let at = floor + 1 + random_below(room as u64) as usize;
            assert!(
                kill_after(&scratch, &migrate_args(&url, &log), &log, at),
                "killed in the middle of the run"
            );
            floor = audited_ids(&scratch.path().join(&log)).len();
            assert!(
                floor < migrated_by_reference,
                "round {round}: killed before the end"
            );
        }
        let args = migrate_args(&url, &log);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let finished = scratch.run(&args);
        assert_eq!(
            finished.status.code(),
            Some(1),
            "round {round}: {}",
            stderr(&finished)
        );

        let tables = read_tables(&format!("sqlite://{}", scratch.path().join(&db).display())).await;
        assert_eq!(tables.failure_ids, reference.failure_ids, "round {round}");
        assert_eq!(tables.versions, reference.versions, "round {round}");
        assert!(
            tables.customers == reference.customers,
            "round {round}: the tables differ"
        );
        // The audit table is written in each batch's transaction: whatever the kills
        // interrupted, it lists exactly the rows the runs migrated, each once.
        let audit_table =
            audit_table_ids(&format!("sqlite://{}", scratch.path().join(&db).display())).await;
        let migrated_by_runs: BTreeSet<i64> = tables
            .customers
            .iter()
            .filter(|row| row.6.as_deref() == Some("set by this run"))
            .map(|row| row.0)
            .collect();
        assert_eq!(
            audit_table.len(),
            migrated_by_runs.len(),
            "round {round}: one audit entry per migrated row"
        );
        assert_eq!(
            audit_table.into_iter().collect::<BTreeSet<_>>(),
            migrated_by_runs,
            "round {round}: the audit table and the rows disagree"
        );
        let audited = audited_ids(&scratch.path().join(&log));
        let distinct: BTreeSet<_> = audited.iter().collect();
        assert_eq!(
            distinct.len(),
            audited.len(),
            "round {round}: an id audited twice"
        );
        // A kill between a commit and its audit line may lose lines, never add one.
        assert!(audited.len() <= migrated_by_reference, "round {round}");
    }
}

/// Seeds `url`, migrates it with `--json`, and checks the summary against the tables.
async fn json_summary_matches_the_tables(scratch: &Scratch, url: &str, read_url: &str) {
    seed(scratch, url);
    let args = migrate_args(url, "json.log");
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.push("--json");
    let output = scratch.run(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = json_summary(&output);
    let tables = read_tables(read_url).await;
    let count = |key: &str| {
        summary[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {summary}")) as i64
    };
    assert_eq!(summary["ending"], "completed", "{summary}");
    assert_eq!(
        tables.versions.get(&2).copied().unwrap_or(0),
        count("migrated") + count("previously_migrated"),
        "{summary} {:?}",
        tables.versions
    );
    assert_eq!(
        tables.versions.get(&1).copied().unwrap_or(0),
        count("failed"),
        "{summary}"
    );
    assert_eq!(
        tables.failure_ids.len() as i64,
        count("failed"),
        "{summary}"
    );
    assert_eq!(count("scanned"), CUSTOMERS as i64);
    let migrated_now = tables
        .customers
        .iter()
        .filter(|row| row.6.as_deref() == Some("set by this run"))
        .count() as i64;
    assert_eq!(migrated_now, count("migrated"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_summary_matches_the_tables_on_sqlite() {
    let scratch = Scratch::new();
    let read_url = format!("sqlite://{}", scratch.path().join("x.db").display());
    json_summary_matches_the_tables(&scratch, "sqlite://x.db", &read_url).await;
}

/// A database of its own on the test server, dropped by [`TestDatabase::drop_now`].
struct TestDatabase {
    admin: PgPool,
    name: String,
    /// The server's URL with this database in place of the server's.
    url: String,
}

impl TestDatabase {
    async fn create(server: &str, prefix: &str) -> TestDatabase {
        let name = format!("{prefix}_{}", std::process::id());
        let admin = PgPool::connect(server).await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .unwrap();
        }
        let (base, query) = server
            .split_once('?')
            .map_or((server, None), |(b, q)| (b, Some(q)));
        let url = format!(
            "{}/{name}{}",
            &base[..base.rfind('/').unwrap()],
            query.map(|q| format!("?{q}")).unwrap_or_default()
        );
        TestDatabase { admin, name, url }
    }

    async fn drop_now(self) {
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&self.admin)
            .await
            .unwrap();
        self.admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_summary_matches_the_tables_on_postgres() {
    let Some(server) = postgres_server() else {
        return;
    };
    let database = TestDatabase::create(&server, "dbm_cli_json").await;
    let scratch = Scratch::new();
    json_summary_matches_the_tables(&scratch, &database.url, &database.url).await;
    database.drop_now().await;
}

/// Words of the password and of a `password` parameter: none may show in any output.
const SECRET_WORDS: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_the_server_accepts_is_masked_in_every_message_of_seed_and_run() {
    let Some(server) = postgres_server() else {
        return;
    };
    let database = TestDatabase::create(&server, "dbm_cli_mask").await;
    // The test server trusts loopback connections (.ci/postgres.sh), so any password passes:
    // the runs succeed and print the URL in their success messages. The user-info password
    // holds a raw `@` and `:`, as the driver accepts them; the parameter's name is
    // percent-encoded, as the driver decodes it.
    let (scheme, rest) = database.url.split_once("://").unwrap();
    let (user, host) = rest.split_once('@').unwrap();
    let user = user.split(':').next().unwrap();
    let separator = if host.contains('?') { '&' } else { '?' };
    let url = format!(
        "{scheme}://{user}:alpha@bravo:charlie@{host}{separator}pass%77ord=delta%2Fecho%3Ffoxtrot"
    );
    let setting = format!("connection.url={url}");
    let scratch = Scratch::new();
    for args in [
        vec!["seed", "--customers", "5000", &setting],
        vec![&setting, "status-board.mode=minimal", "--json"],
        vec![&setting, "--show-config"],
    ] {
        let output = scratch.run(&args);
        let said = format!("{}{}", stdout(&output), stderr(&output));
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "db-migrate {args:?}:\n{said}"
        );
        for word in SECRET_WORDS {
            assert!(
                !said.contains(word),
                "db-migrate {args:?} printed {word:?} of the password:\n{said}"
            );
        }
        assert!(
            said.contains(&format!("{user}:***@")) && said.contains("pass%77ord=***"),
            "db-migrate {args:?}:\n{said}"
        );
    }
    database.drop_now().await;
}

#[test]
fn a_password_in_the_url_is_never_printed() {
    let scratch = Scratch::new();
    let url = "connection.url=postgres://user:secret@127.0.0.1:1/x";
    for args in [
        vec![url, "status-board.mode=off"],
        vec![url, "status-board.mode=minimal", "--json"],
        vec![url, "--show-config"],
        vec!["seed", "--customers", "10", url],
        vec!["demo", url, "status-board.mode=off"],
    ] {
        let output = scratch.run(&args);
        let said = format!("{}{}", stdout(&output), stderr(&output));
        assert!(
            !said.contains("secret"),
            "db-migrate {args:?} printed the password:\n{said}"
        );
        assert!(
            said.contains("user:***@127.0.0.1:1/x"),
            "db-migrate {args:?}:\n{said}"
        );
        if args != [url, "--show-config"] {
            assert_eq!(output.status.code(), Some(3), "db-migrate {args:?}: {said}");
        }
    }
}

#[test]
fn the_demo_creates_its_database_migrates_it_exits_0_and_fresh_starts_over() {
    let scratch = Scratch::new();
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "demo",
            "--customers",
            "5000",
            "status-board.mode=off",
            "--json",
        ];
        args.extend_from_slice(extra);
        scratch.run(&args)
    };
    let first = demo(&[]);
    // The planted malformed customers fail, and a demo that completes still exits 0.
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let summary = json_summary(&first);
    assert!(summary["failed"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["migrated"].as_u64().unwrap() > 3000, "{summary}");
    let text = stderr(&first);
    assert!(text.contains("Filled the demo database sqlite://state/demo.db with 5,000 customers"));
    assert!(text.contains(
        "Failures were recorded in the migration_failures table of sqlite://state/demo.db"
    ));
    assert!(scratch.path().join("state/demo.db").exists());

    let again = demo(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(json_summary(&again)["migrated"], 0, "already migrated");

    let fresh = demo(&["--fresh"]);
    assert_eq!(fresh.status.code(), Some(0), "{}", stderr(&fresh));
    assert_eq!(json_summary(&fresh)["migrated"], summary["migrated"]);
}

#[test]
fn a_missing_database_file_or_a_second_seed_is_a_usage_error_that_says_what_to_do() {
    let scratch = Scratch::new();
    let output = scratch.run(&[
        "connection.url=sqlite://missing.db",
        "status-board.mode=off",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("there is no database file missing.db (create one with `db-migrate seed`"),
        "{}",
        stderr(&output)
    );
    assert!(
        !scratch.path().join("missing.db").exists(),
        "nothing created"
    );

    let seed = [
        "seed",
        "--customers",
        "20",
        "connection.url=sqlite://twice.db",
    ];
    assert_eq!(scratch.run(&seed).status.code(), Some(0));
    let again = scratch.run(&seed);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("already holds 20 rows: use --force to refill it"));
}
