//! `db-migrate` when another session holds rows the run needs: the rows that are free are
//! migrated, the locked ones left for the next run with their own exit code, and the next run
//! migrates them.

use sqlx::PgPool;

use crate::util::{PgDatabase, Scratch, stderr, stdout};

/// Another session holds one legacy row locked through every retry: the run migrates the
/// rest, records no failure for it, says so, exits 4; once the lock is gone the next run
/// migrates it and exits as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_through_every_retry_is_left_for_the_next_run_with_exit_4_on_postgres() {
    let Some(db) = PgDatabase::new("deferred").await else {
        return;
    };
    let scratch = Scratch::new();
    let url = format!("connection.url={}", db.url);
    let seeded = scratch.run(&["seed", "--customers", "2000", "--force", &url]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    let pool = PgPool::connect(&db.url).await.unwrap();
    let locked: i64 = sqlx::query_scalar(
        "SELECT id FROM customers WHERE schema_version = 1 AND full_name LIKE '%, %' \
         ORDER BY id LIMIT 1 OFFSET 300",
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
    let args = [
        url.as_str(),
        "status-board.mode=off",
        "customer-migration.lock-timeout-millis=200",
        "customer-migration.retry-attempts=2",
        "customer-migration.retry-initial-delay-millis=10",
        "customer-migrator.batch-size=100",
        "--json",
    ];
    let first = scratch.run(&args);
    holder.rollback().await.unwrap();
    assert_eq!(first.status.code(), Some(4), "{}", stderr(&first));
    let summary: serde_json::Value = serde_json::from_str(stdout(&first).trim()).unwrap();
    assert_eq!(summary["deferred"], 1, "{summary}");
    assert_eq!(summary["ending"], "completed");
    let text = stderr(&first);
    assert!(
        text.contains("1 customer left for the next run (locked by another session)"),
        "{text}"
    );
    assert!(text.contains("run again to migrate them"), "{text}");
    let failed_for_it: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_failures WHERE record_key = $1")
            .bind(locked.to_string())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(failed_for_it, 0, "a locked row is no failure");

    let second = scratch.run(&args);
    let summary: serde_json::Value = serde_json::from_str(stdout(&second).trim()).unwrap();
    assert_eq!(summary["deferred"], 0, "{summary}");
    assert_eq!(summary["migrated"], 1, "{summary}");
    // The malformed rows the first run recorded are still open: exit 1, not 4.
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    pool.close().await;
    db.drop_it().await;
}
