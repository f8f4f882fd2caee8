//! `db-migrate control` on SQLite and PostgreSQL: settings checked before anything is written,
//! the change recorded with who made it, live runs named, a stop reaching a running process
//! through the database and never a later run, and a pause that outlives a killed process.

use std::process::Output;
use std::time::Duration;

use sqlx::{PgPool, SqlitePool};

use crate::status::{Db, runs_started, start_slow, wait};
use crate::util::{PgDatabase, Scratch, stderr, stdout};

fn control(scratch: &Scratch, url: &str, args: &[&str]) -> Output {
    let mut all = vec!["control"];
    all.extend_from_slice(args);
    let url = format!("connection.url={url}");
    all.push(&url);
    scratch.run(&all)
}

fn seed(scratch: &Scratch, url: &str, customers: &str) {
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        customers,
        "--force",
        &format!("connection.url={url}"),
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
}

/// Batches committed so far, from the audit.
async fn batches(db: &Db) -> i64 {
    db.scalar("SELECT CAST(count(*) AS BIGINT) FROM migration_audit")
        .await
}

async fn commands_stop_and_record(scratch: &Scratch, url: &str, db: Db) {
    seed(scratch, url, "3000");
    for (setting, named) in [
        ("speed=3", "`speed`"),
        ("processes=0", "`processes`"),
        ("rate-limit", "`rate-limit`"),
    ] {
        let output = control(scratch, url, &["set", setting]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{setting}: {}",
            stderr(&output)
        );
        assert!(stderr(&output).contains(named), "{}", stderr(&output));
    }
    // Nothing was written for them.
    assert_eq!(runs_started(&db).await, 0);

    let output = control(scratch, url, &["pause"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("customer-migration: paused (controls generation 1"),
        "{text}"
    );
    assert!(
        text.contains("No run of customer-migration is live"),
        "{text}"
    );
    assert_eq!(
        db.scalar(
            "SELECT CAST(count(*) AS BIGINT) FROM migration_controls
              WHERE migration = 'customer-migration' AND paused
                AND changed_by LIKE 'db-migrate control, %@% pid %' AND generation = 1"
        )
        .await,
        1
    );
    let output = control(scratch, url, &["set", "rate-limit=250", "other-migration"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("other-migration: rate-limit=250"));
    assert_eq!(
        db.scalar("SELECT rate_limit FROM migration_controls WHERE migration = 'other-migration'")
            .await,
        250
    );
    let output = control(scratch, url, &["resume"]);
    assert!(
        stdout(&output).contains("resumed (controls generation 2"),
        "{}",
        stdout(&output)
    );

    // A stop from another process reaches the running one through the database.
    let child = start_slow(scratch, url, &db, &[]).await;
    let output = control(scratch, url, &["stop"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("1 run of customer-migration is live"),
        "{text}{}",
        stderr(&output)
    );
    assert!(text.contains(&format!("pid {}", child.id())), "{text}");
    // Interrupted (130), not completed (1): the stop came through.
    assert_eq!(wait(child).code(), Some(130));

    // The stop was for that run: the next one goes to its end.
    let output = scratch.run(&[
        &format!("connection.url={url}"),
        "status-board.mode=off",
        "customer-migration.rate-limit=0",
    ]);
    assert!(
        output.status.code().is_some_and(|c| c <= 1),
        "{}",
        stderr(&output)
    );
    db.close().await;
}

async fn pause_outlives_a_killed_run(scratch: &Scratch, url: &str, db: Db) {
    seed(scratch, url, "3000");
    let first = start_slow(scratch, url, &db, &[]).await;
    assert!(batches(&db).await > 0);
    let output = control(scratch, url, &["pause"]);
    assert!(
        stdout(&output).contains("1 run of customer-migration is live"),
        "{}",
        stdout(&output)
    );
    // Within a second the run takes no new batch; one under way may still commit.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let paused_at = batches(&db).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        batches(&db).await,
        paused_at,
        "a paused run migrates nothing"
    );
    let mut first = first;
    first.kill().unwrap();
    let _ = first.wait();

    // Restarted, it starts paused: nothing more is migrated.
    let second = start_slow(scratch, url, &db, &[]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        batches(&db).await,
        paused_at,
        "the restarted run stays paused"
    );
    let output = control(scratch, url, &["resume"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    // Resumed from another process, it completes (the seed's malformed names fail: exit 1).
    assert_eq!(wait(second).code(), Some(1));
    assert!(batches(&db).await > paused_at);
    assert_eq!(
        db.scalar("SELECT CAST(count(*) AS BIGINT) FROM customers WHERE first_name IS NULL")
            .await,
        db.scalar(
            "SELECT CAST(count(*) AS BIGINT) FROM migration_failures WHERE resolved_at IS NULL"
        )
        .await,
        "every record is migrated or failed"
    );
    db.close().await;
}

async fn on_sqlite(name: &str) -> (Scratch, String, Db) {
    let scratch = Scratch::new();
    let url = format!("sqlite://{name}.db");
    seed(&scratch, &url, "10");
    let test_url = format!(
        "sqlite://{}",
        scratch.path().join(format!("{name}.db")).display()
    );
    let pool = SqlitePool::connect(&test_url).await.unwrap();
    (scratch, url, Db::Sqlite(pool))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_on_sqlite() {
    let (scratch, url, db) = on_sqlite("control").await;
    commands_stop_and_record(&scratch, &url, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_commands_on_postgres() {
    let Some(database) = PgDatabase::new("control").await else {
        return;
    };
    let scratch = Scratch::new();
    let pool = PgPool::connect(&database.url).await.unwrap();
    commands_stop_and_record(&scratch, &database.url, Db::Postgres(pool)).await;
    database.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_killed_run_on_sqlite() {
    let (scratch, url, db) = on_sqlite("paused").await;
    pause_outlives_a_killed_run(&scratch, &url, db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_outlives_a_killed_run_on_postgres() {
    let Some(database) = PgDatabase::new("paused").await else {
        return;
    };
    let scratch = Scratch::new();
    let pool = PgPool::connect(&database.url).await.unwrap();
    pause_outlives_a_killed_run(&scratch, &database.url, Db::Postgres(pool)).await;
    database.drop_it().await;
}
