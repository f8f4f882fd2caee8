//! `db-migrate` when things go wrong around the run: an audit log that cannot be written, a
//! table without a column, a read-only database, a row locked by another session, open
//! failures of an earlier run, a dry run on a file that must not change.

use std::os::unix::process::ExitStatusExt;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use sqlx::{PgPool, SqlitePool};

use crate::util::{PgDatabase, Scratch, stderr, stdout};

/// Customers in the seeded databases.
const CUSTOMERS: &str = "5000";
/// How long a child process may take before the test gives up on it.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);

/// Seeds `url` with the demo customers.
fn seed(scratch: &Scratch, url: &str) {
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        CUSTOMERS,
        "--force",
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
}

/// `db-migrate` on `url` without the board, with `extra` arguments.
fn migrate(scratch: &Scratch, url: &str, extra: &[&str]) -> Output {
    let url = format!("connection.url={url}");
    let mut args = vec![url.as_str(), "status-board.mode=off"];
    args.extend_from_slice(extra);
    scratch.run(&args)
}

/// The JSON summary a run printed.
fn json_summary(output: &Output) -> serde_json::Value {
    let out = stdout(output);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}{}", stderr(output)))
}

/// The scratch directory's `name.db` as the binary (`relative`) and the test (`absolute`) see it.
fn sqlite_urls(scratch: &Scratch, name: &str) -> (String, String) {
    (
        format!("sqlite://{name}.db"),
        format!(
            "sqlite://{}",
            scratch.path().join(format!("{name}.db")).display()
        ),
    )
}

async fn sqlite_scalar(url: &str, sql: &'static str) -> i64 {
    let pool = SqlitePool::connect(url).await.unwrap();
    let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_that_cannot_be_written_stops_the_run_and_counts_what_was_committed() {
    let scratch = Scratch::new();
    let (url, test_url) = sqlite_urls(&scratch, "audit");
    seed(&scratch, &url);
    let seeded = sqlite_scalar(
        &test_url,
        "SELECT count(*) FROM customers WHERE schema_version = 2",
    )
    .await;
    let started = Instant::now();
    let output = migrate(
        &scratch,
        &url,
        &["customer-migrator.log-file=/dev/full", "--json"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run did not stop at once"
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json_summary(&output);
    assert_eq!(summary["ending"], "aborted", "{summary}");
    let reason = summary["abort_reason"].as_str().unwrap();
    assert!(reason.contains("audit log /dev/full"), "{reason}");
    let migrated = sqlite_scalar(
        &test_url,
        "SELECT count(*) FROM customers WHERE schema_version = 2",
    )
    .await;
    assert_eq!(
        summary["migrated"].as_i64().unwrap(),
        migrated - seeded,
        "the summary counts every committed record: {summary}"
    );
    assert!(stderr(&output).contains("aborted"), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_file_whose_directory_cannot_be_created_is_a_usage_error() {
    let scratch = Scratch::new();
    let (url, test_url) = sqlite_urls(&scratch, "logdir");
    seed(&scratch, &url);
    std::fs::write(scratch.path().join("blocker"), "a file, not a directory").unwrap();
    let output = migrate(
        &scratch,
        &url,
        &["customer-migrator.log-file=blocker/migration.log"],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("customer-migrator.log-file") && err.contains("not a directory"),
        "{err}"
    );
    let legacy = sqlite_scalar(
        &test_url,
        "SELECT count(*) FROM customers WHERE schema_version = 1",
    )
    .await;
    let total = sqlite_scalar(&test_url, "SELECT count(*) FROM customers").await;
    assert!(legacy > total / 2, "nothing was migrated");
    // A dry run writes no log: it does not need one (exit 1: the seeded malformed names).
    let output = migrate(
        &scratch,
        &url,
        &["customer-migrator.log-file=blocker/migration.log", "-D"],
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_without_a_column_the_migration_needs_is_a_usage_error_at_once() {
    let scratch = Scratch::new();
    let (url, test_url) = sqlite_urls(&scratch, "nocolumn");
    std::fs::File::create(scratch.path().join("nocolumn.db")).unwrap();
    let pool = SqlitePool::connect(&test_url).await.unwrap();
    sqlx::query(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, full_name TEXT, email TEXT,
           first_name TEXT, last_name TEXT, migrated_at TEXT)",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO customers (id, full_name, email) SELECT i, 'Last, First', 'a@b.c' FROM n",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let started = Instant::now();
    let output = migrate(&scratch, &url, &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("customers") && err.contains("schema_version"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_aborts_at_once() {
    let scratch = Scratch::new();
    let (url, _) = sqlite_urls(&scratch, "ro");
    seed(&scratch, &url);
    let started = Instant::now();
    let output = migrate(&scratch, &format!("{url}?mode=ro"), &["--json"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a read-only database is not retried record by record"
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let summary = json_summary(&output);
    let reason = summary["abort_reason"].as_str().unwrap();
    assert!(
        reason.contains("readonly") || reason.contains("read-only"),
        "{reason}"
    );
    assert_eq!(
        summary["failed"], 0,
        "nothing is recorded as a record's failure"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrated_at_column_of_another_type_is_a_usage_error_on_postgres() {
    let Some(db) = PgDatabase::new("timestamptz").await else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &db.url);
    let pool = PgPool::connect(&db.url).await.unwrap();
    sqlx::query(
        "ALTER TABLE customers ALTER COLUMN migrated_at TYPE timestamptz \
         USING migrated_at::timestamptz",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let started = Instant::now();
    let output = migrate(&scratch, &db.url, &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(
        err.contains("customers.migrated_at") && err.contains("timestamp"),
        "{err}"
    );
    db.drop_it().await;
}

/// Sends SIGINT to `child`, as a user pressing Ctrl-C, and waits for it to exit: its status
/// and how long it took.
fn interrupt(child: &mut std::process::Child) -> (std::process::ExitStatus, Duration) {
    let interrupted = Instant::now();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, interrupted.elapsed());
        }
        if interrupted.elapsed() > PROCESS_DEADLINE {
            let _ = child.kill();
            panic!("the run did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Another session holds a row lock the run needs: a Ctrl-C still ends the process within the
/// grace period and a bounded stop, not when the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_by_another_session_does_not_hold_up_a_stop_on_postgres() {
    let Some(db) = PgDatabase::new("rowlock").await else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &db.url);
    let pool = PgPool::connect(&db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    // Every legacy row of the first thousand: each job's first batch waits on the lock.
    sqlx::query("SELECT id FROM customers WHERE id <= 1000 AND schema_version = 1 FOR UPDATE")
        .fetch_all(&mut *holder)
        .await
        .unwrap();
    let url = format!("connection.url={}", db.url);
    let mut child = scratch
        .command(&[
            &url,
            "status-board.mode=off",
            "customer-migration.grace-period-millis=1000",
            "customer-migration.processes=2",
            "customer-migrator.batch-size=100",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = interrupt(&mut child);
    // The lock is still held: the process ended without waiting for it.
    sqlx::query("SELECT 1").execute(&mut *holder).await.unwrap();
    holder.rollback().await.unwrap();
    pool.close().await;
    assert_eq!(status.code(), Some(130), "{status:?} {:?}", status.signal());
    assert!(took < Duration::from_secs(8), "the stop took {took:?}");
    db.drop_it().await;
}

/// Another session locks the whole table before the run: the scanner's first query waits. A
/// Ctrl-C ends the process within one grace period and the bounded close, not one per part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_locked_by_another_session_does_not_hold_up_a_stop_on_postgres() {
    let Some(db) = PgDatabase::new("tablelock").await else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &db.url);
    let pool = PgPool::connect(&db.url).await.unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let url = format!("connection.url={}", db.url);
    let mut child = scratch
        .command(&[
            &url,
            "status-board.mode=off",
            "customer-migration.grace-period-millis=3000",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (status, took) = interrupt(&mut child);
    holder.rollback().await.unwrap();
    pool.close().await;
    assert_eq!(status.code(), Some(130), "{status:?}");
    // The grace period (3 s), then at most 2 s to close: not 3 s for the jobs, 3 s more for
    // the scanner and 3 s more to close.
    assert!(took < Duration::from_millis(6500), "the stop took {took:?}");
    db.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_the_database_file_byte_for_byte_the_same() {
    let scratch = Scratch::new();
    let (url, test_url) = sqlite_urls(&scratch, "dry");
    seed(&scratch, &url);
    let pool = SqlitePool::connect(&test_url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode = DELETE")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "delete");
    pool.close().await;
    let file = scratch.path().join("dry.db");
    let before = std::fs::read(&file).unwrap();
    let output = migrate(&scratch, &url, &["-D"]);
    // The seeded malformed names would fail: exit 1.
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("Migration needed for"),
        "{}",
        stderr(&output)
    );
    assert!(
        std::fs::read(&file).unwrap() == before,
        "the dry run changed the file"
    );
    assert!(!scratch.path().join("dry.db-wal").exists());
}

/// Failures recorded by an earlier run keep the exit code at 1 until a run resolves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_failures_of_an_earlier_run_keep_exit_1_until_resolved() {
    let scratch = Scratch::new();
    let (url, test_url) = sqlite_urls(&scratch, "open");
    seed(&scratch, &url);
    let pool = SqlitePool::connect(&test_url).await.unwrap();
    let malformed: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM customers WHERE schema_version = 1 AND instr(full_name, ',') = 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let wellformed: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM customers WHERE schema_version = 1 AND full_name LIKE '_%, _%' LIMIT 5",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(!malformed.is_empty() && wellformed.len() == 5);
    let write_ids = |name: &str, ids: &[i64]| {
        let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
        std::fs::write(scratch.path().join(name), text).unwrap();
    };
    write_ids("malformed.txt", &malformed);
    write_ids("wellformed.txt", &wellformed);

    let output = migrate(&scratch, &url, &["-f", "malformed.txt"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // A later run with no failure of its own still has the earlier ones open.
    let output = migrate(&scratch, &url, &["-f", "wellformed.txt", "--json"]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let summary = json_summary(&output);
    assert_eq!(summary["failed"], 0);
    assert_eq!(
        summary["open_failures"],
        malformed.len() as u64,
        "{summary}"
    );
    assert!(
        stderr(&output).contains("still open"),
        "{}",
        stderr(&output)
    );

    // Someone repairs the names: the next run migrates them and resolves their failures.
    sqlx::query(
        "UPDATE customers SET full_name = 'Repaired, Name' WHERE instr(full_name, ',') = 0",
    )
    .execute(&pool)
    .await
    .unwrap();
    let output = migrate(&scratch, &url, &["-f", "malformed.txt", "--json"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json_summary(&output)["open_failures"], 0);
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_failures WHERE resolved_at IS NULL")
            .fetch_one(&pool)
            .await
            .unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM migration_failures")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        (open, kept),
        (0, malformed.len() as i64),
        "resolved, not deleted"
    );
    pool.close().await;
}
