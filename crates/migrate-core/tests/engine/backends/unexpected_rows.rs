//! Rows the migration does not expect: a `schema_version` other than 1 (legacy) or 2
//! (migrated), a NULL `full_name`, one that is not valid UTF-8. Each fails on its own, for good;
//! the rest of its batch is migrated.

use std::sync::Arc;

use migrate_core::{
    Ending, EventBoard, Key, Migrator, Outcome, RunOptions, build_migration_system,
};

use super::harness::{Pool, TestDb, on_both_backends};

on_both_backends!(unexpected_rows_fail_alone_in_their_batch);

/// A customers table whose columns, unlike the demo table's, may hold NULL.
const CREATE: &str = "CREATE TABLE customers (
    id BIGINT PRIMARY KEY,
    full_name TEXT,
    email TEXT NOT NULL,
    schema_version INTEGER,
    first_name TEXT,
    last_name TEXT,
    migrated_at TEXT)";

/// `(id, full_name, schema_version)` as SQL expressions, and what becomes of the row: `Ok` for
/// an outcome, `Err` for a permanent failure whose message contains the text.
const ROWS: [(i64, &str, &str, Result<Outcome, &str>); 7] = [
    (1, "'Lovelace, Ada'", "1", Ok(Outcome::Migrated)),
    (
        2,
        "'Hopper, Grace'",
        "NULL",
        Err("unexpected schema_version NULL"),
    ),
    (3, "'Turing, Alan'", "0", Err("unexpected schema_version 0")),
    (
        4,
        "'Knuth, Donald'",
        "3",
        Err("unexpected schema_version 3"),
    ),
    (5, "'Liskov, Barbara'", "2", Ok(Outcome::PreviouslyMigrated)),
    (6, "NULL", "1", Err("malformed full_name: NULL")),
    (8, "'Ritchie, Dennis'", "1", Ok(Outcome::Migrated)),
];
/// On SQLite only: a name that is not UTF-8, `Lovelace\xff, Ada` (PostgreSQL text is always
/// valid UTF-8), and a name stored as a BLOB, read as the text of its bytes.
const SQLITE_ONLY: [(i64, &str, &str, Result<Outcome, &str>); 2] = [
    (
        7,
        "CAST(x'4c6f76656c616365ff2c20416461' AS TEXT)",
        "1",
        Err("malformed full_name: not valid UTF-8"),
    ),
    (
        9,
        "CAST('Hamilton, Margaret' AS BLOB)",
        "1",
        Ok(Outcome::Migrated),
    ),
];

/// `(id, schema_version, first_name)` of every row.
async fn versions_and_first_names(db: &TestDb) -> Vec<(i64, Option<i64>, Option<String>)> {
    const SQL: &str = "SELECT id, CAST(schema_version AS BIGINT), first_name FROM customers \
                       ORDER BY id";
    match &db.pool {
        Pool::Sqlite(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
        Pool::Postgres(pool) => sqlx::query_as(SQL).fetch_all(pool).await,
    }
    .expect("reading customers")
}

async fn unexpected_rows_fail_alone_in_their_batch(db: &TestDb) {
    db.execute(CREATE).await.unwrap();
    let mut rows = ROWS.to_vec();
    if db.is_sqlite() {
        rows.extend(SQLITE_ONLY);
        rows.sort_by_key(|row| row.0);
    }
    for (id, full_name, version, _) in &rows {
        let (first, last) = if *version == "2" {
            ("'Barbara'", "'Liskov'")
        } else {
            ("NULL", "NULL")
        };
        db.execute(&format!(
            "INSERT INTO customers (id, full_name, email, schema_version, first_name, last_name)
             VALUES ({id}, {full_name}, ' C{id}@Example.com ', {version}, {first}, {last})"
        ))
        .await
        .unwrap();
    }
    let ids: Vec<i64> = rows.iter().map(|row| row.0).collect();
    let before = versions_and_first_names(db).await;

    // One batch: one outcome per record, not an error for the whole batch.
    let config = db.config();
    let system = build_migration_system(&config, Some((Box::new(EventBoard::discard()), "test")))
        .await
        .unwrap();
    system.start().await.unwrap();
    let migrator: Arc<dyn Migrator> = system.resolve::<dyn Migrator>();
    let keys: Vec<Key> = ids.iter().map(|&id| Key::int(id)).collect();
    let outcomes = migrator.migrate(&keys, false).await;
    system.stop().await.unwrap();
    let outcomes = outcomes.expect("the batch succeeds");
    for ((id, _, _, expected), outcome) in rows.iter().zip(&outcomes) {
        match (expected, outcome) {
            (Ok(expected), outcome) => assert_eq!(outcome, expected, "customer {id}"),
            (Err(message), Outcome::Failed(failure)) => {
                assert!(!failure.retryable, "customer {id}: {failure:?}");
                assert!(
                    failure.message.contains(message),
                    "customer {id}: {failure:?}"
                );
            }
            (Err(_), other) => panic!("customer {id}: {other:?}"),
        }
    }
    let after = versions_and_first_names(db).await;
    for ((before, after), (_, full_name, _, expected)) in before.iter().zip(&after).zip(&rows) {
        if *expected == Ok(Outcome::Migrated) {
            assert_eq!(after.1, Some(2), "{after:?}");
            let first = full_name.split([',', '\'']).nth(2).unwrap().trim();
            assert_eq!(after.2.as_deref(), Some(first), "{full_name}");
        } else {
            assert_eq!(before, after, "left as it was");
        }
    }

    // Through the engine: each failure recorded once, with its reason.
    let summary = db.run(&config, RunOptions::default()).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    let done = rows.iter().filter(|row| row.3.is_ok()).count();
    assert_eq!(summary.previously_migrated, done as u64, "{summary:?}");
    let failures = db.failures().await;
    let failed: Vec<(i64, &str)> = rows
        .iter()
        .filter_map(|(id, _, _, expected)| expected.as_ref().err().map(|message| (*id, *message)))
        .collect();
    assert_eq!(summary.failed, failed.len() as u64, "{summary:?}");
    assert_eq!(failures.len(), failed.len(), "{failures:?}");
    for (id, message) in failed {
        let failure = &failures[&id];
        assert!(failure.error.contains(message), "{failure:?}");
        assert_eq!(failure.attempts, 1, "a permanent failure: {failure:?}");
    }
    assert_eq!(
        versions_and_first_names(db).await,
        after,
        "nothing else changed"
    );
}
