//! Distributed mode end to end: four processes on one PostgreSQL migration, two of them
//! killed with SIGKILL at random points and restarted, end as one process's run; SQLite
//! refuses distributed mode.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::util::{PgDatabase, Scratch, random_below, stderr};

const CUSTOMERS: &str = "20000";

/// What the tables hold after a run: every customer (migration time blanked), the failed
/// keys, and the keys of the audit, in audit order.
async fn read(
    url: &str,
) -> (
    Vec<(i64, String, i32, Option<String>, Option<String>)>,
    Vec<String>,
    Vec<i64>,
) {
    let pool = PgPool::connect(url).await.unwrap();
    let customers = sqlx::query_as(
        "SELECT id, full_name, schema_version, first_name, last_name FROM customers ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let failures = sqlx::query_scalar(
        "SELECT record_key FROM migration_failures ORDER BY CAST(record_key AS BIGINT)",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let batches: Vec<String> = sqlx::query_scalar("SELECT record_keys FROM migration_audit")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    let audit = batches
        .iter()
        .flat_map(|keys| serde_json::from_str::<Vec<i64>>(keys).unwrap())
        .collect();
    (customers, failures, audit)
}

fn seed(scratch: &Scratch, url: &str) {
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        CUSTOMERS,
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
}

fn args(url: &str, log: &str, distributed: bool) -> Vec<String> {
    let mut args = vec![
        format!("connection.url={url}"),
        "status-board.mode=off".to_owned(),
        format!("customer-migrator.log-file={log}"),
        "customer-migrator.batch-size=100".to_owned(),
    ];
    if distributed {
        args.extend(
            ["--distributed", "--range-rows", "1500", "--lease-secs", "1"].map(String::from),
        );
    }
    args
}

fn spawn(scratch: &Scratch, args: &[String]) -> Child {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    scratch
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("db-migrate starts")
}

fn lines(scratch: &Scratch, log: &str) -> usize {
    std::fs::read(scratch.path().join(log))
        .map(|bytes| bytes.iter().filter(|&&b| b == b'\n').count())
        .unwrap_or(0)
}

/// Waits until `log` holds `at` lines (or the process ended), then kills it with SIGKILL;
/// whether it was still running.
fn kill_at(scratch: &Scratch, child: &mut Child, log: &str, at: usize) -> bool {
    let started = Instant::now();
    while lines(scratch, log) < at && child.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    child.wait().unwrap().signal() == Some(9)
}

fn finish(child: Child) {
    let output = child.wait_with_output().unwrap();
    assert!(
        matches!(output.status.code(), Some(0 | 1)),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_two_killed_and_restarted_end_as_one_process() {
    let (Some(reference), Some(shared)) = (
        PgDatabase::new("dist_reference").await,
        PgDatabase::new("dist_shared").await,
    ) else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &reference.url);
    seed(&scratch, &shared.url);
    let single = scratch.run(
        &args(&reference.url, "reference.log", false)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(single.status.code(), Some(1), "{}", stderr(&single));
    let (expected, expected_failures, expected_audit) = read(&reference.url).await;
    assert!(expected_audit.len() > 10_000);
    assert!(!expected_failures.is_empty());

    let mut children: Vec<Child> = (0..4)
        .map(|i| spawn(&scratch, &args(&shared.url, &format!("p{i}.log"), true)))
        .collect();
    // Processes 0 and 1 are killed at random points, then restarted.
    let share = expected_audit.len() / 4;
    let mut killed = 0;
    for (i, child) in children.iter_mut().enumerate().take(2) {
        let log = format!("p{i}.log");
        if kill_at(
            &scratch,
            child,
            &log,
            1 + random_below(share as u64 * 2 / 3) as usize,
        ) {
            killed += 1;
        }
    }
    for (i, child) in children.iter_mut().enumerate().take(2) {
        *child = spawn(
            &scratch,
            &args(&shared.url, &format!("p{i}-again.log"), true),
        );
    }
    for child in children {
        finish(child);
    }
    assert!(killed >= 1, "a process was killed while it worked");

    let (customers, failures, audit) = read(&shared.url).await;
    assert_eq!(
        customers, expected,
        "the table equals a single process's run"
    );
    assert_eq!(failures, expected_failures, "every failure recorded once");
    let unique: BTreeSet<i64> = audit.iter().copied().collect();
    assert_eq!(unique.len(), audit.len(), "no key migrated twice");
    assert_eq!(
        unique,
        expected_audit.iter().copied().collect::<BTreeSet<_>>(),
        "every key migrated"
    );
    let pool = PgPool::connect(&shared.url).await.unwrap();
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_ranges WHERE state <> 'done'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(open, 0, "no range left pending");
    let ranges: i64 = sqlx::query_scalar("SELECT count(*) FROM migration_ranges")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ranges >= 10, "{ranges} ranges");
    pool.close().await;
    let status = scratch.run(&[
        "status",
        "customer-migration",
        &format!("connection.url={}", shared.url),
    ]);
    let text = crate::util::stdout(&status);
    assert!(
        text.contains(&format!(
            "Key ranges of customer-migration: {ranges}/{ranges} done, 0 leased, 0 pending"
        )),
        "{text}"
    );
    reference.drop_it().await;
    shared.drop_it().await;
}

#[test]
fn sqlite_and_the_simulated_backend_refuse_distributed_mode() {
    let scratch = Scratch::new();
    for (url, flag) in [
        ("sqlite://customers.db", "--distributed"),
        ("simulated:", "--shard=1/4"),
    ] {
        let output = scratch.run(&[flag, &format!("connection.url={url}")]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains(&format!(
                "{} needs a PostgreSQL database",
                flag.split('=').next().unwrap()
            )),
            "{message}"
        );
    }
    let output = scratch.run(&["--shard", "4/4", "connection.url=postgres://localhost/x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("shards count from 0 to N-1"),
        "{}",
        stderr(&output)
    );
}

/// Waits until `check` holds, for at most `secs` seconds.
async fn until(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < Duration::from_secs(secs),
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn control(scratch: &Scratch, url: &str, command: &str) -> String {
    let output = scratch.run(&["control", command, &format!("connection.url={url}")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    crate::util::stdout(&output)
}

/// `db-migrate control pause` from a third process stops both processes of a distributed run
/// from committing batches; `resume` lets both finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_pause_and_resume_reach_every_distributed_process() {
    let Some(db) = PgDatabase::new("dist_pause").await else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &db.url);
    let pool = PgPool::connect(&db.url).await.unwrap();
    let logs = ["p0.log", "p1.log"];
    let children: Vec<Child> = logs
        .iter()
        .map(|log| {
            let mut args = args(&db.url, log, true);
            // Slow enough to be caught in the middle: about 10 s for the 20,000 customers.
            args.push("customer-migration.rate-limit=1000".to_owned());
            spawn(&scratch, &args)
        })
        .collect();
    until(60, "both processes commit batches", async || {
        logs.iter().all(|log| lines(&scratch, log) > 0)
    })
    .await;
    let paused = control(&scratch, &db.url, "pause");
    assert!(paused.contains("customer-migration: paused"), "{paused}");
    // Within a second no process takes a new batch; one under way may still commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let migrated = async || -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM customers WHERE schema_version = 2")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let at_pause = (migrated().await, logs.map(|log| lines(&scratch, log)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        (migrated().await, logs.map(|log| lines(&scratch, log))),
        at_pause,
        "no process commits a batch while paused"
    );
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(at_pause.0 < total / 2, "paused early: {at_pause:?}");
    // Paused processes keep renewing their leases: 3.5 s of pause, over three lease
    // periods, took no range over.
    let taken_over: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_ranges WHERE generation > 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(taken_over, 0, "no takeover during the pause");
    for child in &children {
        assert!(
            std::process::Command::new("kill")
                .args(["-0", &child.id().to_string()])
                .status()
                .unwrap()
                .success(),
            "both processes still run, paused"
        );
    }
    let resumed = control(&scratch, &db.url, "resume");
    assert!(resumed.contains("resumed"), "{resumed}");
    for child in children {
        finish(child);
    }
    for log in logs {
        assert!(lines(&scratch, log) > at_pause.1[0].min(at_pause.1[1]));
    }
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_ranges WHERE state <> 'done'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(open, 0, "every range done after the resume");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM customers c WHERE schema_version = 1
            AND NOT EXISTS (SELECT 1 FROM migration_failures f
                             WHERE f.record_key = CAST(c.id AS TEXT))",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "every customer migrated or failed");
    pool.close().await;
    db.drop_it().await;
}

/// Another session holds a row of one range locked: the range is not marked done while its
/// record is deferred (the other ranges are), and once the lock is gone the run (or, after a
/// process gave the range up with exit 4, the next run) migrates it; every key is migrated
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_row_keeps_its_range_open_until_it_is_migrated() {
    let (Some(reference), Some(db)) = (
        PgDatabase::new("dist_lock_reference").await,
        PgDatabase::new("dist_lock").await,
    ) else {
        return;
    };
    let scratch = Scratch::new();
    seed(&scratch, &reference.url);
    seed(&scratch, &db.url);
    let single = scratch.run(
        &args(&reference.url, "reference.log", false)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(single.status.code(), Some(1), "{}", stderr(&single));
    let (expected, _, expected_audit) = read(&reference.url).await;

    let pool = PgPool::connect(&db.url).await.unwrap();
    let locked: i64 = sqlx::query_scalar(
        "SELECT id FROM customers WHERE schema_version = 1 AND full_name LIKE '%, %' \
         ORDER BY id LIMIT 1 OFFSET 5000",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM customers WHERE id = $1 FOR UPDATE")
        .bind(locked)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    let logs = ["p0.log", "p1.log"];
    let children: Vec<Child> = logs
        .iter()
        .map(|log| {
            let mut args = args(&db.url, log, true);
            args.extend(
                [
                    "customer-migration.lock-timeout-millis=200",
                    "customer-migration.retry-attempts=2",
                    "customer-migration.retry-initial-delay-millis=10",
                ]
                .map(String::from),
            );
            spawn(&scratch, &args)
        })
        .collect();
    let range_of_locked = async || -> (i64, String) {
        sqlx::query_as(
            "SELECT range_id, state FROM migration_ranges
              WHERE (lower_key IS NULL OR CAST(lower_key AS BIGINT) < $1)
                AND (upper_key IS NULL OR CAST(upper_key AS BIGINT) > $1)",
        )
        .bind(locked)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let planned = async || -> bool {
        // The tables exist before the plan is written (the split runs outside a transaction).
        let ranges: i64 = sqlx::query_scalar("SELECT count(*) FROM migration_ranges")
            .fetch_one(&pool)
            .await
            .unwrap();
        ranges > 0
    };
    let others_done = async || -> bool {
        if !planned().await {
            return false;
        }
        let (id, _) = range_of_locked().await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM migration_ranges WHERE state <> 'done' AND range_id <> $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await
        .unwrap();
        open == 0
    };
    until(120, "every other range done", async || {
        tables_exist(&pool).await && others_done().await
    })
    .await;
    // Held for several lease periods: taken over and deferred again, never marked done.
    for _ in 0..6 {
        let (_, state) = range_of_locked().await;
        assert_ne!(state, "done", "a range with a locked record is not done");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let still: i32 = sqlx::query_scalar("SELECT schema_version FROM customers WHERE id = $1")
        .bind(locked)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(still, 1, "the locked row is not migrated yet");
    let (id, _) = range_of_locked().await;
    let generation: i64 =
        sqlx::query_scalar("SELECT generation FROM migration_ranges WHERE range_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(
        generation >= 2,
        "the range was claimed again after its lease ran out (generation {generation})"
    );
    holder.rollback().await.unwrap();
    // A process that left the range locked three times gives it back and ends with exit 4
    // ("run again"); one that was still at it when the lock went finishes it.
    let mut gave_up = false;
    for child in children {
        let output = child.wait_with_output().unwrap();
        match output.status.code() {
            Some(0 | 1) => {}
            Some(4) => gave_up = true,
            _ => panic!("{:?}: {}", output.status, stderr(&output)),
        }
    }
    if range_of_locked().await.1 != "done" {
        assert!(gave_up, "a range left open is one a process gave up on");
        finish(spawn(&scratch, &args(&db.url, "p2.log", true)));
    }
    assert_eq!(range_of_locked().await.1, "done");
    let (customers, failures, audit) = read(&db.url).await;
    assert!(
        !failures.contains(&locked.to_string()),
        "a locked row is no failure"
    );
    assert_eq!(
        customers, expected,
        "the table equals a single process's run"
    );
    let unique: BTreeSet<i64> = audit.iter().copied().collect();
    assert_eq!(unique.len(), audit.len(), "no key migrated twice");
    assert!(unique.contains(&locked), "the locked row was migrated");
    assert_eq!(
        unique,
        expected_audit.iter().copied().collect::<BTreeSet<_>>(),
        "every key migrated"
    );
    pool.close().await;
    reference.drop_it().await;
    db.drop_it().await;
}

async fn tables_exist(pool: &PgPool) -> bool {
    sqlx::query_scalar("SELECT to_regclass('migration_ranges') IS NOT NULL")
        .fetch_one(pool)
        .await
        .unwrap()
}
