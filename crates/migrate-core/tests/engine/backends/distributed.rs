//! Distributed mode on a real PostgreSQL: the split is made once however many processes
//! start together, an expired lease is taken over, and a holder whose lease was taken over
//! cannot commit a batch (the fence).

use std::sync::Arc;
use std::time::Duration;

use migrate_core::distributed::{fence, ranges, split};
use migrate_core::{BatchError, CustomerMigration, Database, Key, Migration};

use super::harness::{Pool, TestDb};

const NAME: &str = "customer-migration";

/// A PostgreSQL test database with `n` customers, its pool and the customer migration on it.
async fn setup(test: &str, n: u64) -> Option<(TestDb, sqlx::PgPool, Arc<CustomerMigration>)> {
    let db = TestDb::postgres(test).await?;
    db.seed(n).await;
    let Pool::Postgres(pool) = &db.pool else {
        unreachable!()
    };
    let pool = pool.clone();
    let migration = Arc::new(CustomerMigration::new(
        Database::Postgres(pool.clone()),
        Arc::new(tokio::sync::Mutex::new(())),
        migrate_core::BatchTimeouts::default().with_lock(Duration::from_secs(5)),
    ));
    Some((db, pool, migration))
}

async fn plan(pool: &sqlx::PgPool, migration: &CustomerMigration, rows: u64) -> u64 {
    ranges::ensure_plan(pool, NAME, "test", || split::split(migration, rows))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_processes_starting_together_split_once() {
    let Some((db, pool, _)) = setup("dist_split_once", 5_000).await else {
        return;
    };
    // Each process with its own connections, as separate processes have.
    let planners = (0..8).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move {
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            let migration = CustomerMigration::new(
                Database::Postgres(pool.clone()),
                Arc::new(tokio::sync::Mutex::new(())),
                migrate_core::BatchTimeouts::default().with_lock(Duration::from_secs(5)),
            );
            let ranges = plan(&pool, &migration, 1_000).await;
            pool.close().await;
            ranges
        })
    });
    let counts: Vec<u64> = futures::future::join_all(planners)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(counts, vec![5; 8], "every process sees the one plan");
    assert_eq!(db.scalar("SELECT count(*) FROM migration_ranges").await, 5);
    assert_eq!(
        db.scalar("SELECT count(*) FROM migration_range_plans")
            .await,
        1
    );
    // The ranges cover the keys without gap or overlap: their bounds chain.
    let rows = ranges::list(&pool, NAME).await.unwrap();
    let scopes: Vec<&str> = rows.iter().map(|r| r.scope.as_str()).collect();
    assert_eq!(
        scopes,
        [
            "(-inf, 1001)",
            "(1000, 2001)",
            "(2000, 3001)",
            "(3000, 4001)",
            "(4000, +inf)"
        ]
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_its_holder_can_no_longer_renew_or_finish() {
    let Some((db, pool, migration)) = setup("dist_takeover", 2_000).await else {
        return;
    };
    plan(&pool, &migration, 1_000).await;
    let columns = migration.key_columns().to_vec();
    let short = Duration::from_millis(300);
    let a = ranges::claim(&pool, NAME, "a", short, &columns)
        .await
        .unwrap()
        .unwrap();
    let b = ranges::claim(&pool, NAME, "b", Duration::from_secs(60), &columns)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(a.range.id, b.range.id, "a live lease is not claimed twice");
    assert!(
        ranges::claim(&pool, NAME, "c", short, &columns)
            .await
            .unwrap()
            .is_none(),
        "both ranges are held"
    );
    // A heartbeat in time keeps the lease.
    assert!(ranges::renew(&pool, NAME, &a, short, 10).await.unwrap());
    tokio::time::sleep(short * 2).await;
    let c = ranges::claim(&pool, NAME, "c", Duration::from_secs(60), &columns)
        .await
        .unwrap()
        .expect("the expired range is taken over");
    assert_eq!(c.range, a.range);
    assert_eq!(c.generation, a.generation + 1);
    assert_eq!(c.rows_before, 10, "progress carries over");
    assert!(!ranges::renew(&pool, NAME, &a, short, 20).await.unwrap());
    assert!(!ranges::finish(&pool, NAME, &a, 20).await.unwrap());
    assert!(ranges::finish(&pool, NAME, &c, 1_000).await.unwrap());
    let overview = ranges::overview(&pool, NAME).await.unwrap().unwrap();
    assert_eq!(
        (overview.done, overview.leased, overview.pending),
        (1, 1, 0)
    );
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_holder_cannot_commit_after_its_range_was_taken_over() {
    let Some((db, pool, migration)) = setup("dist_fence", 1_000).await else {
        return;
    };
    plan(&pool, &migration, 1_000).await;
    let columns = migration.key_columns().to_vec();
    let database = Database::Postgres(pool.clone());
    let short = Duration::from_millis(200);
    let stalled = ranges::claim(&pool, NAME, "stalled", short, &columns)
        .await
        .unwrap()
        .unwrap();
    fence::hold(&database, NAME, stalled.lease());
    let pending = "SELECT count(*) FROM customers WHERE schema_version = 1 AND id <= 50";
    let before = db.scalar(pending).await;
    assert!(before > 0);
    // While the lease holds, a batch commits.
    let first: Vec<Key> = (1..=10).map(Key::int).collect();
    migration.migrate(&first, false).await.unwrap();
    let after_first = db.scalar(pending).await;
    assert!(after_first < before, "the holder's batch committed");
    // The holder stalls past its lease; another process takes the range over.
    tokio::time::sleep(short * 2).await;
    let taker = ranges::claim(&pool, NAME, "taker", Duration::from_secs(60), &columns)
        .await
        .unwrap()
        .expect("taken over");
    assert_eq!(taker.range.id, stalled.range.id);
    // The stalled holder wakes up: its next batch must not commit.
    let next: Vec<Key> = (11..=50).map(Key::int).collect();
    let error = migration.migrate(&next, false).await.unwrap_err();
    match &error {
        BatchError::Fatal { committed, .. } => assert!(committed.is_none()),
        other => panic!("not fatal: {other}"),
    }
    assert!(error.to_string().contains("taken over"), "{error}");
    assert_eq!(db.scalar(pending).await, after_first, "nothing committed");
    // The new holder's batch commits.
    fence::hold(&database, NAME, taker.lease());
    migration.migrate(&next, false).await.unwrap();
    assert!(db.scalar(pending).await < after_first);
    fence::release(&database, NAME);
    db.finish().await;
}
