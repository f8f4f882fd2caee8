//! `db-migrate status` and `retry-failures` on SQLite and PostgreSQL: an interrupted run, a
//! completed run with failures, a run killed with SIGKILL, then the failures repaired and
//! retried.

use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::{PgPool, SqlitePool};

use crate::util::PgDatabase;
use crate::util::{Scratch, stderr, stdout};

/// How long a child process may take before the test gives up on it.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// The test's own connection to the database the binary works on.
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub(crate) async fn scalar(&self, sql: &'static str) -> i64 {
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }

    async fn execute(&self, sql: &'static str) {
        match self {
            Db::Sqlite(pool) => drop(sqlx::query(sql).execute(pool).await.unwrap()),
            Db::Postgres(pool) => drop(sqlx::query(sql).execute(pool).await.unwrap()),
        }
    }

    pub(crate) async fn close(self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

fn run(scratch: &Scratch, url: &str, args: &[&str]) -> Output {
    let url = format!("connection.url={url}");
    let mut all = args.to_vec();
    all.extend([url.as_str(), "status-board.mode=off"]);
    scratch.run(&all)
}

fn json(output: &Output) -> Value {
    let out = stdout(output);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{}", stderr(output)))
}

/// `status --json` for the customer migration's one entry.
fn status(scratch: &Scratch, url: &str) -> Value {
    let output = run(scratch, url, &["status", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let all = json(&output);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all[0]["migration"], "customer-migration");
    all[0].clone()
}

/// Starts a slow run (a rate limit) and waits until its row is in `migration_runs`.
pub(crate) async fn start_slow(scratch: &Scratch, url: &str, db: &Db, extra: &[&str]) -> Child {
    let before = runs_started(db).await;
    let url = format!("connection.url={url}");
    let mut args = vec![
        url.as_str(),
        "status-board.mode=off",
        "customer-migration.rate-limit=300",
        "customer-migration.processes=2",
        "customer-migrator.batch-size=20",
    ];
    args.extend_from_slice(extra);
    let mut child = scratch
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while runs_started(db).await == before {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(
            started.elapsed() < PROCESS_DEADLINE,
            "the run did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Some batches commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child
}

pub(crate) async fn runs_started(db: &Db) -> i64 {
    let exists = match db {
        Db::Sqlite(_) => {
            db.scalar("SELECT count(*) FROM sqlite_master WHERE name = 'migration_runs'")
                .await
        }
        Db::Postgres(_) => {
            db.scalar(
                "SELECT CAST(count(*) AS BIGINT) FROM pg_tables WHERE tablename = 'migration_runs'",
            )
            .await
        }
    };
    if exists == 0 {
        return 0;
    }
    db.scalar("SELECT CAST(count(*) AS BIGINT) FROM migration_runs")
        .await
}

pub(crate) fn wait(mut child: Child) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            panic!("the run did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole story on one database.
async fn story(scratch: &Scratch, url: &str, db: Db) {
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        "3000",
        "--force",
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));

    // Nothing has run: no bookkeeping, and status says so.
    let output = run(scratch, url, &["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("No migration has left anything here yet"),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        json(&run(scratch, url, &["status", "--json"])),
        serde_json::json!([])
    );
    // A dry run writes no run row and creates no table.
    let output = run(scratch, url, &["-D"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(runs_started(&db).await, 0);

    // An interrupted run.
    let child = start_slow(scratch, url, &db, &[]).await;
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(wait(child).code(), Some(130));
    let s = status(scratch, url);
    assert_eq!(s["runs"], 1, "{s}");
    assert_eq!(s["last_run"]["state"], "interrupted", "{s}");
    assert_eq!(s["last_run"]["settings"]["rate_limit"], 300, "{s}");
    assert_eq!(s["checkpoint_pending"], true, "{s}");
    let interrupted_migrated = s["last_run"]["counts"]["migrated"].as_u64().unwrap();
    assert!(interrupted_migrated > 0, "{s}");

    // The rest, with the seeded malformed names failing.
    let output = run(scratch, url, &["--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = json(&output);
    let failed = summary["failed"].as_u64().unwrap();
    assert!(failed > 0);
    let s = status(scratch, url);
    assert_eq!(s["runs"], 2, "{s}");
    assert_eq!(s["last_run"]["state"], "completed", "{s}");
    assert_eq!(s["last_run"]["counts"]["failed"], failed, "{s}");
    assert_eq!(
        s["last_run"]["counts"]["migrated"], summary["migrated"],
        "{s}"
    );
    assert_eq!(s["open_failures"], failed, "{s}");
    assert_eq!(s["checkpoint_pending"], false, "{s}");
    assert_eq!(
        s["migrated"].as_u64().unwrap(),
        interrupted_migrated + summary["migrated"].as_u64().unwrap(),
        "the audit holds what both runs migrated: {s}"
    );
    let output = run(scratch, url, &["status"]);
    let table = stdout(&output);
    assert!(
        table.contains("MIGRATION") && table.contains("completed"),
        "{table}"
    );
    let output = run(scratch, url, &["status", "customer-migration"]);
    let detail = stdout(&output);
    assert!(detail.contains("Runs: 2 recorded, the last 2:"), "{detail}");
    assert!(
        detail.contains("interrupted") && detail.contains("malformed full_name"),
        "{detail}"
    );

    // A run killed with SIGKILL ends without a word.
    let mut child = start_slow(scratch, url, &db, &["-r"]).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let s = status(scratch, url);
    assert_eq!(s["runs"], 3, "{s}");
    assert_eq!(s["last_run"]["state"], "vanished", "{s}");
    assert_eq!(s["last_run"]["ending"], Value::Null, "{s}");
    let table = stdout(&run(scratch, url, &["status"]));
    assert!(table.contains("ended without a word (killed?)"), "{table}");

    // Someone repairs the names; retry-failures migrates them and resolves their failures.
    db.execute(
        "UPDATE customers SET full_name = 'Repaired, Name'
          WHERE CAST(id AS TEXT) IN (SELECT record_key FROM migration_failures
                                      WHERE resolved_at IS NULL)",
    )
    .await;
    let output = run(scratch, url, &["retry-failures", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let retried = json(&output);
    assert_eq!(retried["migrated"], failed, "{retried}");
    assert_eq!(retried["open_failures"], 0, "{retried}");
    let s = status(scratch, url);
    assert_eq!(s["open_failures"], 0, "{s}");
    assert_eq!(s["failures"], serde_json::json!([]), "{s}");
    assert_eq!(s["last_run"]["settings"]["input"]["keys"], failed, "{s}");
    let kept = db
        .scalar(
            "SELECT CAST(count(*) AS BIGINT) FROM migration_failures WHERE resolved_at IS NOT NULL",
        )
        .await;
    assert_eq!(kept as u64, failed, "resolved, not deleted");
    let output = run(scratch, url, &["retry-failures"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("nothing to retry"),
        "{}",
        stderr(&output)
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_retry_failures_on_sqlite() {
    let scratch = Scratch::new();
    let test_url = format!("sqlite://{}", scratch.path().join("status.db").display());
    // The test connects only once the seed created the file.
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        "10",
        "connection.url=sqlite://status.db",
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let pool = SqlitePool::connect(&test_url).await.unwrap();
    story(&scratch, "sqlite://status.db", Db::Sqlite(pool)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_retry_failures_on_postgres() {
    let Some(database) = PgDatabase::new("status").await else {
        return;
    };
    let scratch = Scratch::new();
    let pool = PgPool::connect(&database.url).await.unwrap();
    story(&scratch, &database.url, Db::Postgres(pool)).await;
    database.drop_it().await;
}

#[test]
fn status_on_the_simulated_backend_says_progress_lives_in_files() {
    let scratch = Scratch::new();
    let output = scratch.run(&["status"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("progress lives in files"),
        "{}",
        stdout(&output)
    );
    let ran = scratch.run(&[
        "connection.simulated-customers=200",
        "customer-migrator.sleep-scale=0",
        "status-board.mode=off",
    ]);
    assert!(
        ran.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&ran)
    );
    let output = scratch.run(&["status", "--json"]);
    let all = json(&output);
    assert_eq!(all[0]["last_run"]["state"], "completed", "{all}");
    assert_eq!(all[0]["runs"], 1, "{all}");
    let output = scratch.run(&["retry-failures"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
}
