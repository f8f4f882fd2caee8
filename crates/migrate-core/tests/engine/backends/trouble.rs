//! What a run does when rows vanish under it, when failures cannot be recorded, and when the
//! database refuses every write.

use std::time::{Duration, Instant};

use migrate_core::{Ending, Event, Key, Lifecycle, RunOptions, StatusBoard};
use tokio_util::sync::CancellationToken;

use super::harness::{TestDb, audited_ids, on_both_backends, run_engine};

on_both_backends!(
    a_full_scan_after_an_interrupted_file_run_migrates_every_row,
    a_record_deleted_before_its_turn_is_gone_not_a_failure,
    a_run_whose_failures_cannot_be_recorded_counts_every_committed_record,
    a_database_that_refuses_every_write_aborts_the_run_at_once,
);

/// A board that asks the run to stop as soon as a job starts its first batch.
struct StopAtFirstBatch(CancellationToken);

impl Lifecycle for StopAtFirstBatch {}

impl StatusBoard for StopAtFirstBatch {
    fn publish(&self, event: Event) {
        if let Event::JobText { text, .. } = &event
            && text.starts_with("Migrating")
        {
            self.0.cancel();
        }
    }
}

async fn a_full_scan_after_an_interrupted_file_run_migrates_every_row(db: &TestDb) {
    db.seed(3000).await;
    let mut config = db.config();
    config.customer_migration.processes = 1;
    config.customer_migrator.batch_size = Some(1);
    let shutdown = CancellationToken::new();
    let file_run = RunOptions {
        input: Some((2000..2100).map(Key::int).collect()),
        ..RunOptions::default()
    };
    let board = Box::new(StopAtFirstBatch(shutdown.clone()));
    let summary = run_engine(&config, file_run, shutdown, board).await;
    assert_eq!(summary.ending, Ending::Interrupted, "{summary:?}");

    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    let legacy = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    assert_eq!(legacy, summary.failed, "every well-formed row was migrated");
    assert!(summary.migrated > 2000, "{summary:?}");
}

async fn a_record_deleted_before_its_turn_is_gone_not_a_failure(db: &TestDb) {
    db.seed(300).await;
    // As an application deleting rows while the run goes: the ids were read, the rows are not
    // there when their batch comes.
    let ids: Vec<i64> = (1..=300).collect();
    db.execute("DELETE FROM customers WHERE id % 7 = 0")
        .await
        .unwrap();
    let deleted = ids.iter().filter(|id| *id % 7 == 0).count() as u64;
    let mut config = db.config();
    config.customer_migration.max_failures = 1;
    let summary = db
        .run(
            &config,
            RunOptions {
                input: Some(ids.into_iter().map(Key::int).collect()),
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.gone, deleted, "{summary:?}");
    let versions = db.versions().await;
    assert_eq!(
        summary.migrated + summary.previously_migrated + summary.failed,
        versions.values().sum::<i64>() as u64
    );
    assert!(
        summary.to_string().contains(&format!("{deleted} gone")),
        "{summary}"
    );
    let failures = if summary.failed > 0 {
        db.failures().await.len() as u64
    } else {
        0
    };
    assert_eq!(failures, summary.failed, "only malformed rows fail");
}

async fn a_run_whose_failures_cannot_be_recorded_counts_every_committed_record(db: &TestDb) {
    db.seed(3000).await;
    let seeded = db.versions().await.get(&2).copied().unwrap_or(0);
    // The failures table exists but refuses every row, as a full disk or a lost grant would.
    db.execute(
        "CREATE TABLE migration_failures (migration TEXT NOT NULL, record_key TEXT NOT NULL,
           error TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at TEXT NOT NULL,
           resolved_at TEXT, PRIMARY KEY (migration, record_key))",
    )
    .await
    .unwrap();
    if db.is_sqlite() {
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON migration_failures
             BEGIN SELECT RAISE(ABORT, 'no space left for failures'); END",
        )
        .await
        .unwrap();
    } else {
        db.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'no space left for failures'; END $$",
        )
        .await
        .unwrap();
        db.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON migration_failures
             FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        .await
        .unwrap();
    }
    let mut config = db.config();
    config.customer_migrator.batch_size = Some(50);
    config.customer_migration.processes = 8;
    let summary = db.run(&config, RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Aborted, "{summary:?}");
    let reason = summary.abort_reason.as_deref().unwrap();
    assert!(reason.contains("while recording failures"), "{reason}");
    let migrated = db.versions().await.get(&2).copied().unwrap_or(0) - seeded;
    assert_eq!(summary.migrated, migrated as u64, "{summary:?}");
    assert_eq!(audited_ids(&db.audit_log()).len() as u64, summary.migrated);
    assert_eq!(summary.failed, 0, "no failure could be recorded");
}

async fn a_database_that_refuses_every_write_aborts_the_run_at_once(db: &TestDb) {
    db.seed(3000).await;
    let mut config = db.config();
    let role = format!("reader_{}", std::process::id());
    if db.is_sqlite() {
        config.connection.url = format!("{}?mode=ro", db.url);
    } else {
        // A role that may read the table and nothing more.
        db.execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .unwrap();
        db.execute(&format!("CREATE ROLE {role} LOGIN"))
            .await
            .unwrap();
        db.execute(&format!("GRANT SELECT ON customers TO {role}"))
            .await
            .unwrap();
        let (scheme, rest) = db.url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        config.connection.url = format!("{scheme}://{role}@{host}");
    }
    let started = Instant::now();
    let summary = db.run(&config, RunOptions::default()).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}: a refused write is not retried record by record",
        started.elapsed()
    );
    assert_eq!(summary.ending, Ending::Aborted, "{summary:?}");
    let reason = summary.abort_reason.as_deref().unwrap();
    assert!(
        reason.contains("readonly") || reason.contains("permission denied"),
        "{reason}"
    );
    assert_eq!((summary.migrated, summary.failed), (0, 0), "{summary:?}");
    if !db.is_sqlite() {
        // Roles belong to the server, not to the test's database.
        db.execute(&format!("REVOKE SELECT ON customers FROM {role}"))
            .await
            .unwrap();
        db.execute(&format!("DROP ROLE {role}")).await.unwrap();
    }
}

/// PostgreSQL only: bookkeeping tables made once (by a first run, as a DBA would), then runs
/// by a role that may only read and write rows, not create tables, as is common in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_with_only_row_rights_runs_once_the_tables_exist_on_postgres() {
    let Some(db) = TestDb::postgres("rowrights").await else {
        return;
    };
    db.seed(3000).await;
    let mut config = db.config();
    config.customer_migration.checkpoint_interval_millis = 1;
    config.customer_migrator.batch_size = Some(10);
    let first = db.run(&config, RunOptions::default()).await;
    assert_eq!(first.ending, Ending::Completed, "{first:?}");
    let role = format!("writer_{}", std::process::id());
    db.execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await
        .unwrap();
    db.execute(&format!("CREATE ROLE {role} LOGIN"))
        .await
        .unwrap();
    let tables = [
        "customers",
        "migration_failures",
        "migration_checkpoints",
        "migration_audit",
        "migration_runs",
    ];
    for table in tables {
        db.execute(&format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {role}"
        ))
        .await
        .unwrap();
    }
    let (scheme, rest) = db.url.split_once("://").unwrap();
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    config.connection.url = format!("{scheme}://{role}@{host}");
    let summary = db.run(&config, RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(
        summary.failed, first.failed,
        "the malformed rows fail again, recorded"
    );
    for table in tables {
        db.execute(&format!("REVOKE ALL ON {table} FROM {role}"))
            .await
            .unwrap();
    }
    db.execute(&format!("DROP ROLE {role}")).await.unwrap();
    db.finish().await;
}

/// PostgreSQL only: a `serial` (32-bit) `id` is read as 64 bits, not refused as a type mismatch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_32_bit_id_is_migrated_on_postgres() {
    let Some(db) = TestDb::postgres("int4id").await else {
        return;
    };
    db.seed(2000).await;
    db.execute("ALTER TABLE customers ALTER COLUMN id TYPE integer")
        .await
        .unwrap();
    let legacy_before = db.versions().await.get(&1).copied().unwrap_or(0) as u64;
    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(
        summary.migrated + summary.failed,
        legacy_before,
        "{summary:?}"
    );
    db.finish().await;
}

on_both_backends!(bookkeeping_tables_of_the_first_layout_are_moved_aside_and_failures_kept);

/// A database whose bookkeeping tables an earlier version made (integer ids, one migration):
/// they are moved aside, the failures copied under `customer-migration`, and the run goes on.
async fn bookkeeping_tables_of_the_first_layout_are_moved_aside_and_failures_kept(db: &TestDb) {
    db.seed(500).await;
    for sql in [
        "CREATE TABLE migration_checkpoints (migration TEXT NOT NULL, range_key TEXT NOT NULL,
           low_water BIGINT, done_above TEXT NOT NULL, updated_at TEXT NOT NULL,
           PRIMARY KEY (migration, range_key))",
        "INSERT INTO migration_checkpoints VALUES ('customer-migration', 'all', 400, '[]', 'x')",
        "CREATE TABLE migration_failures (id BIGINT PRIMARY KEY, error TEXT NOT NULL,
           attempts INTEGER NOT NULL, failed_at TEXT NOT NULL, resolved_at TEXT)",
        "INSERT INTO migration_failures VALUES (7, 'malformed full_name', 3, 'then', NULL)",
    ] {
        db.execute(sql).await.unwrap();
    }
    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    // The old checkpoint (low-water 400) was not used: every row was looked at.
    assert_eq!(summary.scanned, 500, "{summary:?}");
    let kept = db
        .scalar(
            "SELECT count(*) FROM migration_failures
              WHERE migration = 'customer-migration' AND record_key = '7'",
        )
        .await;
    assert_eq!(kept, 1, "the failure of the first layout is kept");
    assert_eq!(
        db.scalar("SELECT count(*) FROM migration_failures_v0")
            .await,
        1
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM migration_checkpoints_v0")
            .await,
        1
    );
}

on_both_backends!(failures_moved_aside_but_not_copied_are_copied_by_the_next_run);

/// A kill between moving the first layout's failures aside and copying them: the next run
/// copies them.
async fn failures_moved_aside_but_not_copied_are_copied_by_the_next_run(db: &TestDb) {
    db.seed(300).await;
    for sql in [
        "CREATE TABLE migration_failures_v0 (id BIGINT PRIMARY KEY, error TEXT NOT NULL,
           attempts INTEGER NOT NULL, failed_at TEXT NOT NULL)",
        "INSERT INTO migration_failures_v0 VALUES (7, 'malformed full_name', 3, 'then')",
        "INSERT INTO migration_failures_v0 VALUES (8, 'malformed full_name', 1, 'then')",
    ] {
        db.execute(sql).await.unwrap();
    }
    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    let copied = db
        .scalar(
            "SELECT count(*) FROM migration_failures
              WHERE migration = 'customer-migration' AND record_key IN ('7', '8')",
        )
        .await;
    assert_eq!(copied, 2);
    // Once: a second run copies nothing more.
    db.run(&db.config(), RunOptions::default()).await;
    assert_eq!(
        db.scalar("SELECT count(*) FROM migration_failures WHERE record_key IN ('7', '8')")
            .await,
        2
    );
}
