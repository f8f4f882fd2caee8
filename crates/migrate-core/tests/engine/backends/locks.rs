//! Lock and statement timeouts against real databases: another session holds a row lock, a
//! statement runs too long, another connection holds SQLite's write lock. A contended record is
//! never recorded as a failure: it is migrated once free, or left for the next run.

use std::time::Duration;

use migrate_core::{Config, Ending, RunOptions};
use sqlx::{PgPool, Postgres, SqlitePool, Transaction};

use super::harness::{Pool, TestDb, run_declared};

/// A run that meets locks quickly and gives up on them quickly: a 200 ms lock timeout, two
/// attempts with short backoffs, batches of 100.
fn impatient(db: &TestDb) -> Config {
    let mut config = db.config();
    config.customer_migration.lock_timeout_millis = 200;
    config.customer_migration.retry_attempts = 2;
    config.customer_migration.retry_initial_delay_millis = 10;
    config.customer_migration.retry_max_delay_millis = 50;
    config.customer_migration.processes = 4;
    config.customer_migrator.batch_size = Some(100);
    config
}

/// A legacy row with a well-formed name, halfway through the table.
async fn a_legacy_row(db: &TestDb) -> i64 {
    db.scalar(
        "SELECT id FROM customers WHERE schema_version = 1 AND full_name LIKE '%, %' \
         ORDER BY id LIMIT 1 OFFSET 300",
    )
    .await
}

/// Another session's transaction holding row `id` locked (`FOR UPDATE`), as an application's
/// long transaction would.
async fn lock_row(pool: &PgPool, id: i64) -> Transaction<'static, Postgres> {
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM customers WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    holder
}

fn postgres(db: &TestDb) -> &PgPool {
    match &db.pool {
        Pool::Postgres(pool) => pool,
        Pool::Sqlite(_) => panic!("a PostgreSQL test"),
    }
}

async fn checkpoints(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) FROM migration_checkpoints")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_locked_through_every_retry_is_left_for_the_next_run_on_postgres() {
    let Some(db) = TestDb::postgres("lockdefer").await else {
        return;
    };
    db.seed(2000).await;
    let locked = a_legacy_row(&db).await;
    let holder = lock_row(postgres(&db), locked).await;
    let config = impatient(&db);
    let first = db.run(&config, RunOptions::default()).await;
    assert_eq!(first.ending, Ending::Completed, "{first:?}");
    assert_eq!(first.deferred, 1, "{first:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, first.failed + 1, "every other row was migrated");
    assert!(
        !db.failures().await.contains_key(&locked),
        "a locked row is no failure"
    );
    assert_eq!(db.failures().await.len() as u64, first.failed);
    assert_eq!(checkpoints(&db).await, 1, "the checkpoint stays behind it");
    holder.rollback().await.unwrap();

    let second = db.run(&config, RunOptions::default()).await;
    assert_eq!(second.ending, Ending::Completed, "{second:?}");
    assert_eq!(
        (second.migrated, second.deferred, second.failed),
        (1, 0, 0),
        "only the row left behind: {second:?}"
    );
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(schema_version AS BIGINT) FROM customers WHERE id = {locked}"
        ))
        .await,
        2
    );
    assert_eq!(checkpoints(&db).await, 0);
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_lock_released_during_the_retries_is_waited_out_on_postgres() {
    let Some(db) = TestDb::postgres("lockrelease").await else {
        return;
    };
    db.seed(2000).await;
    let locked = a_legacy_row(&db).await;
    let holder = lock_row(postgres(&db), locked).await;
    let mut config = impatient(&db);
    // Retries that outlast the lock by far: the lock goes half a second in.
    config.customer_migration.retry_attempts = 20;
    config.customer_migration.retry_initial_delay_millis = 100;
    config.customer_migration.retry_max_delay_millis = 200;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        holder.rollback().await.unwrap();
    });
    let summary = db.run(&config, RunOptions::default()).await;
    release.await.unwrap();
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.deferred, 0, "{summary:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, summary.failed, "the row was migrated once free");
    assert!(!db.failures().await.contains_key(&locked));
    db.finish().await;
}

/// A statement timeout shorter than the lock timeout: the batch waiting on the row is
/// cancelled (57014) rather than timed out on the lock, and treated the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_timeout_is_contention_too_on_postgres() {
    let Some(db) = TestDb::postgres("stmttimeout").await else {
        return;
    };
    db.seed(2000).await;
    let locked = a_legacy_row(&db).await;
    let holder = lock_row(postgres(&db), locked).await;
    let mut config = impatient(&db);
    config.customer_migration.lock_timeout_millis = 5000;
    config.customer_migration.statement_timeout_millis = 200;
    let summary = db.run(&config, RunOptions::default()).await;
    holder.rollback().await.unwrap();
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.deferred, 1, "{summary:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, summary.failed + 1);
    assert!(!db.failures().await.contains_key(&locked));
    db.finish().await;
}

/// A declared migration whose expression is slow for one row (`pg_sleep`): its batches run
/// into the statement timeout, set with the `BEGIN`; the other rows are migrated, that one
/// left for the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_expression_for_one_row_is_left_for_the_next_run_on_postgres() {
    let Some(db) = TestDb::postgres("slowexpr").await else {
        return;
    };
    db.seed(2000).await;
    let slow = a_legacy_row(&db).await;
    let declared = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../migrations/customer-split.toml"),
    )
    .unwrap();
    let email = r#"email = "lower(btrim(email, {ws}))""#;
    assert!(declared.contains(email));
    let declared = declared.replace(
        email,
        &format!(
            r#"email = "lower(btrim(email, {{ws}})) || CASE WHEN id = {slow} THEN pg_sleep(2)::text ELSE '' END""#
        ),
    );
    let file = db.dir.path().join("slow-split.toml");
    std::fs::write(&file, declared).unwrap();
    let mut config = impatient(&db);
    config.customer_migration.statement_timeout_millis = 300;
    let summary = run_declared(&config, file.to_str().unwrap(), RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.deferred, 1, "{summary:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, summary.failed + 1, "{summary:?}");
    assert_eq!(
        db.scalar(&format!(
            "SELECT CAST(schema_version AS BIGINT) FROM customers WHERE id = {slow}"
        ))
        .await,
        1
    );
    db.finish().await;
}

/// Another connection holds SQLite's write lock (`BEGIN IMMEDIATE`) for a second: batches
/// meet a busy database past the busy timeout, wait and retry; nothing is recorded as failed
/// but the malformed rows, and every other row is migrated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_connection_holding_the_write_lock_is_waited_out_on_sqlite() {
    let db = TestDb::sqlite().await;
    db.seed(2000).await;
    let mut config = impatient(&db);
    config.connection.busy_timeout_millis = 100;
    config.customer_migration.retry_attempts = 20;
    config.customer_migration.retry_initial_delay_millis = 100;
    config.customer_migration.retry_max_delay_millis = 200;
    // No checkpoint is saved while the lock is held: the store's writes wait too.
    config.customer_migration.checkpoint_interval_millis = 60_000;
    let other = SqlitePool::connect(&db.url).await.unwrap();
    let mut holder = other.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        sqlx::query("ROLLBACK").execute(&mut *holder).await.unwrap();
        drop(holder);
        other.close().await;
    });
    let summary = db.run(&config, RunOptions::default()).await;
    release.await.unwrap();
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.deferred, 0, "{summary:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, summary.failed, "{summary:?}");
    assert_eq!(db.failures().await.len() as u64, summary.failed);
    assert!(
        db.failures()
            .await
            .values()
            .all(|f| !f.error.contains("locked")),
        "no failure from the lock"
    );
    db.finish().await;
}
