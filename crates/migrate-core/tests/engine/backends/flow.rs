//! Throttling on the database's health and live control, against a real database.

use std::time::Duration;

use migrate_core::{Ending, EventBoard, RunControl, RunOptions};
use tokio_util::sync::CancellationToken;

use super::harness::{TestDb, audited_ids, on_both_backends, run_engine};

on_both_backends!(no_batch_commits_while_the_throttle_query_says_so);

/// A throttle query against a table the test flips: nothing is migrated while it is 1, the
/// run completes after it is 0, and the summary counts the seconds in between.
async fn no_batch_commits_while_the_throttle_query_says_so(db: &TestDb) {
    db.seed(300).await;
    db.execute("CREATE TABLE throttle_flag (hold INTEGER NOT NULL)")
        .await
        .unwrap();
    db.execute("INSERT INTO throttle_flag (hold) VALUES (1)")
        .await
        .unwrap();
    let pending = "SELECT COUNT(*) FROM customers WHERE schema_version = 1";
    let before = db.scalar(pending).await;
    let mut config = db.config();
    config.customer_migration.processes = 2;
    config.customer_migrator.batch_size = Some(20);
    config.customer_migration.throttle_query = Some("SELECT hold FROM throttle_flag".into());
    config.customer_migration.throttle_interval_millis = 100;
    let run = run_engine(
        &config,
        RunOptions::default(),
        CancellationToken::new(),
        Box::new(EventBoard::discard()),
    );
    let flip = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let during = db.scalar(pending).await;
        let audited = audited_ids(&db.audit_log()).len();
        db.execute("UPDATE throttle_flag SET hold = 0")
            .await
            .unwrap();
        (during, audited)
    };
    let (summary, (during, audited)) = tokio::join!(run, flip);
    assert_eq!(during, before, "no batch committed while throttled");
    assert_eq!(audited, 0);
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert!(summary.migrated > 0 && summary.migrated as i64 <= before);
    assert_eq!(
        db.scalar(pending).await,
        before - summary.migrated as i64 - summary.failed as i64
    );
    assert!(
        (1.4..3.0).contains(&summary.throttled_seconds),
        "throttled for {} s",
        summary.throttled_seconds
    );
    assert!(
        summary.to_string().contains("second throttled")
            || summary.to_string().contains("seconds throttled"),
        "{summary}"
    );
}

/// A run on a real SQLite file paused from another task: nothing commits while paused, and the
/// run completes once resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_sqlite_pauses_and_resumes() {
    let db = TestDb::sqlite().await;
    db.seed(400).await;
    let pending = "SELECT COUNT(*) FROM customers WHERE schema_version = 1";
    let before = db.scalar(pending).await;
    let mut config = db.config();
    config.customer_migration.processes = 2;
    config.customer_migrator.batch_size = Some(10);
    config.customer_migration.rate_limit = 200;
    let control = RunControl::default();
    let options = RunOptions {
        control: control.clone(),
        ..RunOptions::default()
    };
    let run = run_engine(
        &config,
        options,
        CancellationToken::new(),
        Box::new(EventBoard::discard()),
    );
    let steer = async {
        while db.scalar(pending).await > before - 50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        control.pause("the test");
        // Batches under way finish (at 200/s, a batch of 10 starts every 50 ms).
        tokio::time::sleep(Duration::from_millis(300)).await;
        let held = db.scalar(pending).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let later = db.scalar(pending).await;
        control.resume("the test");
        (held, later)
    };
    let (summary, (held, later)) = tokio::join!(run, steer);
    assert_eq!(held, later, "nothing committed while paused");
    assert!(held > 0, "paused before the end");
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(
        db.scalar(pending).await,
        before - summary.migrated as i64 - summary.failed as i64
    );
    assert!(summary.paused_seconds >= 1.2, "{}", summary.paused_seconds);
    let audited = audited_ids(&db.audit_log());
    assert_eq!(audited.len() as u64, summary.migrated, "each once");
    db.finish().await;
}

/// `pg_stat_replication` hides `replay_lag` from roles outside `pg_read_all_stats`, which
/// would read as no lag at all: the check refuses to answer for such a role (the run holds off
/// and the board says why) and answers for one that may read it.
#[tokio::test]
async fn the_replication_lag_check_says_when_the_role_cannot_read_the_lag() {
    use migrate_core::HealthCheck;
    let Some(db) = TestDb::postgres("laggrants").await else {
        return;
    };
    let mut config = db.config();
    config.customer_migration.max_replication_lag_millis = 1000;
    let privileged = super::harness::open(&db.url, false).await;
    let health = migrate_core::DatabaseHealth::from_config(
        &config.customer_migration,
        &privileged.database().unwrap(),
    )
    .expect("a check");
    assert_eq!(
        health.check().await.unwrap(),
        None,
        "no replica: no lag, and the superuser may read it"
    );
    privileged.close().await;

    let role = format!("nostats_{}", std::process::id());
    db.execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
    db.execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let plain = super::harness::open(&format!("{scheme}://{role}@{host}"), false).await;
    let health = migrate_core::DatabaseHealth::from_config(
        &config.customer_migration,
        &plain.database().unwrap(),
    )
    .expect("a check");
    let refused = health
        .check()
        .await
        .expect_err("a role that cannot read the lag");
    assert!(
        refused.to_string().contains("pg_read_all_stats"),
        "{refused}"
    );
    plain.close().await;
    db.execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
    db.finish().await;
}
