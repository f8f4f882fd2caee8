//! Migrations declared in TOML files (`migrations/`), run through `SqlMigration` directly:
//! the customer split leaves the same table as the built-in migration; the orders example,
//! keyed by (text, integer), pages in the database's order and classifies each record.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use migrate_core::{Backend, Key, KeyValue, Migration, Outcome, RunOptions, SqlMigration};
use sqlx::PgPool;

use super::harness::{Pool, TestDb, on_both_backends, open, postgres_server, with_database};

on_both_backends!(
    the_customer_split_file_leaves_the_table_the_built_in_migration_leaves,
    orders_page_in_the_databases_order_and_batches_classify_each_record,
    check_names_what_is_missing_or_wrong,
    uuid_keys_page_and_migrate,
    a_batch_changes_its_own_rows_whatever_changed_around_it_since_its_page,
    pages_are_sorted_again_unless_the_database_orders_text_by_its_bytes,
);

/// A file of the repository's `migrations/` directory.
fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(name)
}

/// The migration `file` on the database `url`.
async fn migration(url: &str, file: &str) -> (SqlMigration, Backend) {
    let backend = open(url, false).await;
    let migration = SqlMigration::from_file(example(file), &backend).expect("the example reads");
    (migration, backend)
}

/// Every key of the table, page by page, in the order the pages give them.
async fn all_keys(migration: &SqlMigration, page: usize) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    loop {
        let next = migration
            .page(keys.last(), None, page)
            .await
            .expect("a page");
        if next.is_empty() {
            return keys;
        }
        assert!(next.len() <= page);
        keys.extend(next);
    }
}

/// Migrates `keys` in batches of `size`: the outcomes, in order.
async fn migrate_all(migration: &SqlMigration, keys: &[Key], size: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for batch in keys.chunks(size) {
        let done = migration.migrate(batch, false).await.expect("a batch");
        assert_eq!(done.len(), batch.len());
        outcomes.extend(done);
    }
    outcomes
}

/// Another empty database of the same kind as `db`.
async fn twin(db: &TestDb) -> TestDb {
    if db.is_sqlite() {
        TestDb::sqlite().await
    } else {
        TestDb::postgres("twin").await.expect("a PostgreSQL server")
    }
}

/// Names that test the split: whitespace of every kind, commas, empty parts.
const NAMES: [&str; 9] = [
    "  de la Cruz ,  Juana Inés ",
    "King, Jr., Martin",
    "Yamada,\u{3000}Taro",
    "\u{A0}Lovelace\t,\u{2003}Ada\n",
    "Liskov,\u{3000}",
    "Hopper Grace",
    "",
    " , Ada",
    "\u{200B},\u{FEFF}",
];

async fn the_customer_split_file_leaves_the_table_the_built_in_migration_leaves(db: &TestDb) {
    let file_db = twin(db).await;
    for copy in [db, &file_db] {
        copy.seed(2500).await;
        // Legacy ids, the same in both copies: the seed is deterministic.
        let legacy: Vec<i64> = (1..)
            .filter(|&id| migrate_core::demo_customer(id).schema_version == 1)
            .take(NAMES.len() + 1)
            .collect();
        for (id, name) in legacy.iter().zip(NAMES) {
            copy.set_text(*id, "full_name", name).await.unwrap();
        }
        if copy.is_sqlite() {
            copy.set_text(legacy[NAMES.len()], "full_name", "Nul\0Byte, Test")
                .await
                .unwrap();
        }
    }
    let summary = db.run(&db.config(), RunOptions::default()).await;
    assert!(summary.migrated > 1000, "{summary:?}");

    let (migration, backend) = migration(&file_db.url, "customer-split.toml").await;
    migration.check().await.expect("the file's SQL prepares");
    assert_eq!(migration.noun().many, "customers");
    let keys = all_keys(&migration, 700).await;
    assert_eq!(keys.len(), 2500);
    assert_eq!(keys, (1..=2500).map(Key::int).collect::<Vec<_>>());
    let outcomes = migrate_all(&migration, &keys, 400).await;
    let migrated = outcomes.iter().filter(|o| **o == Outcome::Migrated).count() as u64;
    let failed = outcomes
        .iter()
        .filter(|o| matches!(o, Outcome::Failed(f) if !f.retryable))
        .count() as u64;
    assert_eq!((migrated, failed), (summary.migrated, summary.failed));

    let (built_in, declared) = (db.dump().await, file_db.dump().await);
    assert_eq!(built_in.len(), declared.len());
    for (id, row) in &built_in {
        let mut other = declared[id].clone();
        assert_eq!(
            row.migrated_at.is_some(),
            other.migrated_at.is_some(),
            "customer {id}: {row:?} / {other:?}"
        );
        other.migrated_at.clone_from(&row.migrated_at);
        assert_eq!(row, &other, "customer {id}");
    }
    let mut audited: Vec<Key> = audit(&file_db, "customer-split").await.concat();
    let mut expected: Vec<Key> = keys
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Outcome::Migrated)
        .map(|(k, _)| k.clone())
        .collect();
    audited.sort_by_key(|k| k.as_int());
    expected.sort_by_key(|k| k.as_int());
    assert_eq!(
        audited, expected,
        "the audit lists exactly the migrated customers"
    );
    // A second pass finds nothing to do.
    let again = migrate_all(&migration, &keys, 1000).await;
    assert!(!again.contains(&Outcome::Migrated));
    backend.close().await;
    file_db.finish().await;
}

/// The keys of each `migration_audit` row of `migration`.
async fn audit(db: &TestDb, migration: &str) -> Vec<Vec<Key>> {
    let sql = format!("SELECT record_keys FROM migration_audit WHERE migration = '{migration}'");
    let sql = sqlx::AssertSqlSafe(sql);
    let rows: Vec<String> = match &db.pool {
        Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        Pool::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
    }
    .unwrap();
    rows.iter()
        .map(|json| serde_json::from_str(json).expect("a JSON array of keys"))
        .collect()
}

/// Whether the database has `table`.
async fn table_exists(db: &TestDb, table: &str) -> bool {
    let sql = if db.is_sqlite() {
        format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'")
    } else {
        format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")
    };
    db.scalar(&sql).await > 0
}

/// Regions whose byte order differs from a linguistic collation's (`a` < `B` there).
const REGIONS: [&str; 6] = ["amer", "Bravo", "emea", "Zulu", "apac", "delta"];
/// Statuses as legacy rows have them (the first on normalized rows only); `lost` is none of
/// the valid ones.
const STATUSES: [&str; 5] = ["paid", " paid ", "SHIPPED", "cancelled", "lost"];
const CURRENCIES: [&str; 4] = [" usd", "EUR", "eur ", "eu"];

/// Creates the orders example's table and fills it with `n` orders: every fifth already
/// normalized, some with a status or currency that cannot be normalized.
async fn seed_orders(pool: &Pool, n: i64) {
    seed_orders_with_region(pool, n, "TEXT").await;
}

/// [`seed_orders`] with `region` of the type `region` (a collation, say).
async fn seed_orders_with_region(pool: &Pool, n: i64, region: &str) {
    let create = format!(
        "CREATE TABLE orders (region {region} NOT NULL, order_no BIGINT NOT NULL, status TEXT, \
         currency TEXT, normalized_at TEXT, PRIMARY KEY (region, order_no))"
    );
    execute(pool, &create).await;
    for i in 0..n {
        let region = REGIONS[(i % 6) as usize];
        let order_no = (i * 7919) % 1000;
        let (status, currency, at) = if i % 5 == 0 {
            (
                STATUSES[0].to_owned(),
                "USD".to_owned(),
                "'2024-01-01T00:00:00Z'",
            )
        } else {
            (
                STATUSES[(i % 5) as usize].to_owned(),
                CURRENCIES[(i % 4) as usize].to_owned(),
                "NULL",
            )
        };
        execute(
            pool,
            &format!(
                "INSERT INTO orders VALUES ('{region}', {order_no}, '{status}', '{currency}', {at})"
            ),
        )
        .await;
    }
}

/// Deletes the order of `key` (`(region, order_no)`).
async fn delete_order(pool: &Pool, key: &Key) {
    let (region, number) = (&key.values()[0], &key.values()[1]);
    execute(
        pool,
        &format!("DELETE FROM orders WHERE region = '{region}' AND order_no = {number}"),
    )
    .await;
}

async fn execute(pool: &Pool, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match pool {
        Pool::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Pool::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{e}"));
}

/// Pages of a composite key whose text the database orders by its bytes are read as the index
/// gives them and checked here; under any other collation the database sorts them. Either
/// way they are in the database's order.
async fn pages_are_sorted_again_unless_the_database_orders_text_by_its_bytes(db: &TestDb) {
    let (bytes, other) = match db.pool {
        Pool::Sqlite(_) => ("TEXT", "TEXT COLLATE NOCASE"),
        // Byte order by another name: only `C` and `POSIX` are taken at their word.
        Pool::Postgres(_) => ("TEXT COLLATE \"C\"", "TEXT COLLATE \"ucs_basic\""),
    };
    for (region, checked) in [(bytes, true), (other, false)] {
        execute(&db.pool, "DROP TABLE IF EXISTS orders").await;
        seed_orders_with_region(&db.pool, 90, region).await;
        let (migration, backend) = migration(&db.url, "orders-normalize.toml").await;
        assert!(!migration.checks_page_order(), "unknown before the check");
        migration.check().await.expect("the file's SQL prepares");
        assert_eq!(migration.checks_page_order(), checked, "{region}");
        let keys = all_keys(&migration, 7).await;
        assert_eq!(keys, keys_in_database_order(&db.pool).await, "{region}");
        assert_eq!(keys.len(), 90);
        backend.close().await;
    }
}

/// `(region, order_no)` of every order, as the database sorts them.
async fn keys_in_database_order(pool: &Pool) -> Vec<Key> {
    let sql = "SELECT region, order_no FROM orders ORDER BY region, order_no";
    // Not kept prepared: a test may create the table again with another collation.
    let rows: Vec<(String, i64)> = match pool {
        Pool::Sqlite(pool) => sqlx::query_as(sql).persistent(false).fetch_all(pool).await,
        Pool::Postgres(pool) => sqlx::query_as(sql).persistent(false).fetch_all(pool).await,
    }
    .unwrap();
    rows.into_iter().map(|(r, n)| order(&r, n)).collect()
}

fn order(region: &str, order_no: i64) -> Key {
    Key::new([KeyValue::Text(region.into()), KeyValue::Int(order_no)])
}

/// `(status, currency, normalized)` of every order.
async fn orders(pool: &Pool) -> HashMap<Key, (String, String, bool)> {
    let sql = "SELECT region, order_no, status, currency, normalized_at IS NOT NULL FROM orders";
    let rows: Vec<(String, i64, String, String, bool)> = match pool {
        Pool::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        Pool::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .unwrap();
    rows.into_iter()
        .map(|(r, n, s, c, done)| (order(&r, n), (s, c, done)))
        .collect()
}

async fn orders_page_in_the_databases_order_and_batches_classify_each_record(db: &TestDb) {
    seed_orders(&db.pool, 240).await;
    let (migration, backend) = migration(&db.url, "orders-normalize.toml").await;
    migration.check().await.expect("the file's SQL prepares");
    assert_eq!(migration.default_batch_size(), 500);

    let expected = keys_in_database_order(&db.pool).await;
    let keys = all_keys(&migration, 7).await;
    assert_eq!(keys, expected, "pages in the database's order");
    assert_eq!(migration.remaining(None, None).await.unwrap(), Some(240));
    assert_eq!(
        migration
            .remaining(Some(&keys[9]), Some(&keys[30]))
            .await
            .unwrap(),
        Some(20)
    );
    let bounded = migration
        .page(Some(&keys[9]), Some(&keys[30]), 100)
        .await
        .unwrap();
    assert_eq!(bounded, keys[10..30]);

    let before = orders(&db.pool).await;
    let pick = |wanted: fn(&(String, String, bool)) -> bool| {
        keys.iter()
            .find(|k| wanted(&before[*k]))
            .cloned()
            .expect("a row of that kind")
    };
    let pending = pick(|(s, c, done)| !done && s == "SHIPPED" && c == "EUR");
    let normalized = pick(|(_, _, done)| *done);
    let invalid = pick(|(s, _, done)| !done && s == "lost");
    let missing = order("nowhere", 1);
    let batch = [pending.clone(), normalized, invalid.clone(), missing];

    // Another writer holds SQLite's write lock: a dry run does not wait for it.
    let mut writer = match &db.pool {
        Pool::Sqlite(pool) => {
            let mut conn = pool.acquire().await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *conn)
                .await
                .unwrap();
            Some(conn)
        }
        Pool::Postgres(_) => None,
    };
    let dry = tokio::time::timeout(Duration::from_secs(3), migration.migrate(&batch, true))
        .await
        .expect("a dry run takes no write lock")
        .unwrap();
    if let Some(conn) = writer.as_mut() {
        sqlx::query("ROLLBACK").execute(&mut **conn).await.unwrap();
    }
    drop(writer);
    assert_eq!(dry[0], Outcome::Migrated, "needs migrating");
    assert_eq!(orders(&db.pool).await, before, "a dry run writes nothing");
    assert!(
        !table_exists(db, "migration_audit").await,
        "nor creates bookkeeping"
    );

    // Failures an earlier run recorded: the batch resolves the one it settles.
    execute(
        &db.pool,
        "CREATE TABLE migration_failures (migration TEXT NOT NULL, record_key TEXT NOT NULL, \
         error TEXT NOT NULL, attempts INTEGER NOT NULL, failed_at TEXT NOT NULL, \
         resolved_at TEXT, PRIMARY KEY (migration, record_key))",
    )
    .await;
    for key in [&pending, &invalid] {
        execute(
            &db.pool,
            &format!(
                "INSERT INTO migration_failures VALUES ('orders-normalize', '{key}', 'earlier', \
                 1, '2024-01-01T00:00:00Z', NULL)"
            ),
        )
        .await;
    }

    let outcomes = migration.migrate(&batch, false).await.unwrap();
    assert_eq!(outcomes[0], Outcome::Migrated);
    assert_eq!(outcomes[1], Outcome::PreviouslyMigrated);
    assert!(
        matches!(&outcomes[2], Outcome::Failed(f) if !f.retryable && f.message == "unknown status or currency"),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(outcomes[3], Outcome::Gone);
    assert_eq!(outcomes[1..], dry[1..], "a dry run classifies the same way");
    let after = orders(&db.pool).await;
    assert_eq!(after[&pending], ("shipped".into(), "EUR".into(), true));
    let open = db
        .scalar("SELECT count(*) FROM migration_failures WHERE resolved_at IS NULL")
        .await;
    assert_eq!(
        open, 1,
        "the invalid order's failure stands, the migrated one's is resolved"
    );
    assert_eq!(
        audit(db, "orders-normalize").await,
        [vec![pending.clone()]],
        "the audit lists what the batch migrated"
    );
    assert_eq!(
        migration.migrate(&batch[..1], false).await.unwrap(),
        [Outcome::PreviouslyMigrated]
    );

    // Rows that all exist and were all pending: on SQLite the update alone settles them, and
    // the one it left is a failure, not a migrated or an earlier record.
    let others: Vec<Key> = keys
        .iter()
        .filter(|k| {
            let (status, currency, done) = &before[*k];
            !done
                && ![&pending, &invalid].contains(k)
                && ["paid", "shipped", "cancelled"].contains(&status.trim().to_lowercase().as_str())
                && currency.trim().len() == 3
        })
        .take(3)
        .cloned()
        .collect();
    let second_invalid = keys
        .iter()
        .find(|k| !before[*k].2 && *k != &invalid && before[*k].0 == "lost")
        .cloned()
        .expect("a second invalid order");
    let mixed = [
        others[0].clone(),
        second_invalid.clone(),
        others[1].clone(),
        others[2].clone(),
    ];
    let outcomes = migration.migrate(&mixed, false).await.unwrap();
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Migrated => "migrated",
            Outcome::Failed(f) if !f.retryable => "failed",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["migrated", "failed", "migrated", "migrated"]);
    let audited: HashSet<Key> = audit(db, "orders-normalize")
        .await
        .pop()
        .expect("a second audit row")
        .into_iter()
        .collect();
    assert_eq!(
        audited,
        HashSet::from([others[0].clone(), others[1].clone(), others[2].clone()]),
        "the audit lists only what was migrated"
    );

    let all = migrate_all(&migration, &keys, 50).await;
    assert!(
        !all.iter()
            .any(|o| matches!(o, Outcome::Failed(f) if f.retryable))
    );
    for (key, (status, currency, done)) in orders(&db.pool).await {
        let valid = ["new", "paid", "shipped", "cancelled"]
            .contains(&status.trim().to_lowercase().as_str())
            && currency.trim().len() == 3;
        assert_eq!(done, valid, "{key}: {status:?} {currency:?}");
        if done {
            assert_eq!(status, status.trim().to_lowercase(), "{key}");
            assert_eq!(currency, currency.trim().to_uppercase(), "{key}");
        }
    }
    backend.close().await;
}

/// What a batch should say of `key`, from the row as it was: `previously migrated`,
/// `failed` (not valid) or `migrated`.
fn expected_outcome(row: &(String, String, bool)) -> &'static str {
    let (status, currency, done) = row;
    let valid = ["new", "paid", "shipped", "cancelled"]
        .contains(&status.trim().to_lowercase().as_str())
        && currency.trim().len() == 3;
    match (done, valid) {
        (true, _) => "previously migrated",
        (false, false) => "failed",
        (false, true) => "migrated",
    }
}

fn outcome_kind(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Migrated => "migrated",
        Outcome::PreviouslyMigrated => "previously migrated",
        Outcome::Failed(f) if !f.retryable => "failed",
        Outcome::Gone => "gone",
        Outcome::Failed(_) => "transient failure",
    }
}

/// A batch of a page is every row of the table from its first key to its last, and SQLite
/// updates such a batch as a range of the table. Whatever happened in that range since the
/// page was read (a row added or deleted), and whatever the batch's keys (a list with holes,
/// out of order), a batch changes its own rows and no other, and says what became of each.
async fn a_batch_changes_its_own_rows_whatever_changed_around_it_since_its_page(db: &TestDb) {
    seed_orders(&db.pool, 240).await;
    let (migration, backend) = migration(&db.url, "orders-normalize.toml").await;
    let keys = all_keys(&migration, 50).await;
    let before = orders(&db.pool).await;
    let kinds = |outcomes: &[Outcome]| outcomes.iter().map(outcome_kind).collect::<Vec<_>>();
    let expected = |batch: &[Key]| {
        batch
            .iter()
            .map(|k| expected_outcome(&before[k]))
            .collect::<Vec<_>>()
    };
    let untouched = |after: &HashMap<Key, (String, String, bool)>, key: &Key| {
        assert_eq!(after[key], before[key], "{key} is not the batch's");
    };

    // A span, as a page gives it: every kind of row.
    let span = &keys[10..40];
    let outcomes = migration.migrate(span, false).await.unwrap();
    assert_eq!(kinds(&outcomes), expected(span));
    for kind in ["migrated", "failed", "previously migrated"] {
        assert!(
            expected(span).contains(&kind),
            "the span holds a {kind} row"
        );
    }
    let after = orders(&db.pool).await;
    untouched(&after, &keys[9]);
    untouched(&after, &keys[40]);
    let audited: HashSet<Key> = audit(db, "orders-normalize")
        .await
        .concat()
        .into_iter()
        .collect();
    let migrated: HashSet<Key> = span
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| **o == Outcome::Migrated)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(audited, migrated, "the audit lists what the span migrated");

    // Keys with a hole: the row in the hole is not the batch's, pending as it is.
    let hole = keys[50..70]
        .iter()
        .position(|k| expected_outcome(&before[k]) == "migrated")
        .map(|i| 50 + i)
        .expect("a pending row");
    let holed: Vec<Key> = keys[hole - 5..hole + 5]
        .iter()
        .filter(|k| **k != keys[hole])
        .cloned()
        .collect();
    let outcomes = migration.migrate(&holed, false).await.unwrap();
    assert_eq!(kinds(&outcomes), expected(&holed));
    untouched(&orders(&db.pool).await, &keys[hole]);

    // The same keys in another order: each outcome still belongs to its key.
    let reversed: Vec<Key> = keys[80..95].iter().rev().cloned().collect();
    let outcomes = migration.migrate(&reversed, false).await.unwrap();
    assert_eq!(kinds(&outcomes), expected(&reversed));

    // A row added inside a span since its page was read, pending and valid: not the batch's.
    let number = |key: &Key| match key.values() {
        [_, KeyValue::Int(n)] => *n,
        other => panic!("{other:?} is not an order's key"),
    };
    let gap = (100..keys.len() - 1)
        .find(|&i| {
            keys[i].values()[0] == keys[i + 1].values()[0]
                && number(&keys[i + 1]) - number(&keys[i]) >= 2
        })
        .expect("two keys of one region with a gap between their numbers");
    let region = keys[gap].values()[0].to_string();
    let added = order(&region, number(&keys[gap]) + 1);
    execute(
        &db.pool,
        &format!(
            "INSERT INTO orders VALUES ('{region}', {}, 'paid', 'EUR', NULL)",
            number(&added)
        ),
    )
    .await;
    let paged = &keys[gap - 6..gap + 6];
    let outcomes = migration.migrate(paged, false).await.unwrap();
    assert_eq!(kinds(&outcomes), expected(paged));
    let after = orders(&db.pool).await;
    assert_eq!(
        after[&added],
        ("paid".into(), "EUR".into(), false),
        "the added row waits for a batch of its own"
    );

    // A row of the span deleted since its page was read: gone; the others as they were.
    let paged = &keys[gap + 10..gap + 30];
    let deleted = &paged[7];
    delete_order(&db.pool, deleted).await;
    let outcomes = migration.migrate(paged, false).await.unwrap();
    let mut wanted = expected(paged);
    wanted[7] = "gone";
    assert_eq!(kinds(&outcomes), wanted);

    // One row deleted and another added: as many rows as the batch has keys, not its own.
    let later = (gap + 40..keys.len() - 1)
        .find(|&i| {
            keys[i].values()[0] == keys[i + 1].values()[0]
                && number(&keys[i + 1]) - number(&keys[i]) >= 2
        })
        .expect("a second gap");
    let region = keys[later].values()[0].to_string();
    let stranger = order(&region, number(&keys[later]) + 1);
    let paged = &keys[later - 6..later + 6];
    let deleted = &paged[2];
    delete_order(&db.pool, deleted).await;
    execute(
        &db.pool,
        &format!(
            "INSERT INTO orders VALUES ('{region}', {}, 'paid', 'EUR', NULL)",
            number(&stranger)
        ),
    )
    .await;
    let outcomes = migration.migrate(paged, false).await.unwrap();
    let mut wanted = expected(paged);
    wanted[2] = "gone";
    assert_eq!(kinds(&outcomes), wanted);
    let after = orders(&db.pool).await;
    assert_eq!(
        after[&stranger],
        ("paid".into(), "EUR".into(), false),
        "the row that took the deleted one's place is not the batch's"
    );
    let audited: HashSet<Key> = audit(db, "orders-normalize")
        .await
        .concat()
        .into_iter()
        .collect();
    assert!(!audited.contains(&stranger) && !audited.contains(&added));
    backend.close().await;
}

async fn check_names_what_is_missing_or_wrong(db: &TestDb) {
    let backend = open(&db.url, false).await;
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str| {
        let path = dir.path().join("orders.toml");
        std::fs::write(&path, text).unwrap();
        let migration = SqlMigration::from_file(&path, &backend).unwrap();
        async move { migration.check().await.unwrap_err().to_string() }
    };
    let base = std::fs::read_to_string(example("orders-normalize.toml")).unwrap();
    let no_table = check(&base).await;
    assert!(no_table.contains("there is no table orders"), "{no_table}");
    assert!(no_table.contains("orders.toml"), "{no_table}");

    seed_orders(&db.pool, 3).await;
    let message = check(&base.replace("\"order_no\"", "\"order_number\"")).await;
    assert!(
        message.contains("table orders has no column order_number"),
        "{message}"
    );
    let message = check(&base.replace("upper(trim(currency))", "upper(trim(curency))")).await;
    assert!(message.contains("in `set.currency`: "), "{message}");
    assert!(message.contains("curency"), "{message}");
    let message = check(&base.replace("normalized_at IS NULL", "normalised_at IS NULL")).await;
    assert!(message.contains("in `pending`: "), "{message}");
    let message = check(&base.replace("lower(trim(status)) IN", "lowr(trim(status)) IN")).await;
    assert!(message.contains("in `valid`: "), "{message}");

    // A key column whose comparisons with the declared type's values do not follow its order.
    if !db.is_sqlite() {
        execute(
            &db.pool,
            "CREATE TABLE coded (code CHAR(4) NOT NULL PRIMARY KEY, name VARCHAR(20) NOT NULL \
             UNIQUE, n NUMERIC NOT NULL UNIQUE, done BOOLEAN)",
        )
        .await;
        let file = |column: &str, kind: &str| {
            format!(
                "table = \"coded\"\nkey = {{ column = \"{column}\", type = \"{kind}\" }}\n\
                 pending = \"done IS NOT TRUE\"\n[set]\ndone = \"true\"\n"
            )
        };
        let message = check(&file("code", "text")).await;
        assert!(
            message.contains("orders.toml: key column code is of type character"),
            "{message}"
        );
        assert!(message.contains("text, character varying"), "{message}");
        let message = check(&file("n", "integer")).await;
        assert!(
            message.contains("key column n is of type numeric"),
            "{message}"
        );
        let path = dir.path().join("orders.toml");
        std::fs::write(&path, file("name", "text")).unwrap();
        let varchar = SqlMigration::from_file(&path, &backend).unwrap();
        varchar.check().await.expect("a varchar key is text");
    }
    backend.close().await;
}

async fn uuid_keys_page_and_migrate(db: &TestDb) {
    let uid = if db.is_sqlite() { "TEXT" } else { "UUID" };
    execute(
        &db.pool,
        &format!(
            "CREATE TABLE devices (tenant TEXT NOT NULL, uid {uid} NOT NULL, seen INTEGER, \
             PRIMARY KEY (tenant, uid))"
        ),
    )
    .await;
    let uids: Vec<String> = (0..40u32)
        .map(|i| {
            format!(
                "{:08x}-0000-4000-8000-{:012x}",
                i.wrapping_mul(2_654_435_761),
                i
            )
        })
        .collect();
    for (i, uid) in uids.iter().enumerate() {
        let tenant = ["acme", "globex"][i % 2];
        let seen = if i % 3 == 0 { "1" } else { "NULL" };
        execute(
            &db.pool,
            &format!("INSERT INTO devices VALUES ('{tenant}', '{uid}', {seen})"),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices-seen.toml");
    std::fs::write(
        &path,
        "table = \"devices\"\n\
         key = [{ column = \"tenant\", type = \"text\" }, { column = \"uid\", type = \"uuid\" }]\n\
         pending = \"seen IS NULL\"\n[set]\nseen = \"0\"\n",
    )
    .unwrap();
    let backend = open(&db.url, false).await;
    let migration = SqlMigration::from_file(&path, &backend).unwrap();
    assert_eq!(migration.name(), "devices-seen");
    migration.check().await.expect("the statements prepare");
    let keys = all_keys(&migration, 6).await;
    assert_eq!(keys.len(), 40);
    let mut expected: Vec<(String, String)> = uids
        .iter()
        .enumerate()
        .map(|(i, uid)| (["acme", "globex"][i % 2].to_owned(), uid.clone()))
        .collect();
    // Canonical lowercase hex sorts alike as text and as UUID bytes.
    expected.sort();
    let expected: Vec<Key> = expected
        .into_iter()
        .map(|(t, u)| Key::new([KeyValue::Text(t.into()), KeyValue::Text(u.into())]))
        .collect();
    assert_eq!(keys, expected);
    let bounded = migration
        .page(Some(&keys[3]), Some(&keys[8]), 10)
        .await
        .unwrap();
    assert_eq!(bounded, keys[4..8]);
    let outcomes = migrate_all(&migration, &keys, 9).await;
    let migrated = outcomes.iter().filter(|o| **o == Outcome::Migrated).count();
    let previously = outcomes
        .iter()
        .filter(|o| **o == Outcome::PreviouslyMigrated)
        .count();
    assert_eq!((migrated, previously), (26, 14));
    assert_eq!(
        db.scalar("SELECT count(*) FROM devices WHERE seen IS NULL")
            .await,
        0
    );
    backend.close().await;
}

/// On PostgreSQL with a linguistic collation (`a` < `B`), pages follow the database, not the
/// bytes: the resume point never depends on Rust's order of strings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr, reason = "a skipped test says why")]
async fn postgres_pages_follow_a_linguistic_collation() {
    let Some(server) = postgres_server() else {
        return;
    };
    let admin = PgPool::connect(&server).await.unwrap();
    let name = format!("dbm_collation_{}", std::process::id());
    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    sqlx::query(sqlx::AssertSqlSafe(drop.clone()))
        .execute(&admin)
        .await
        .unwrap();
    let mut created = None;
    for (locale, options) in [
        (
            "en_US.UTF-8",
            "LC_COLLATE 'en_US.UTF-8' LC_CTYPE 'en_US.UTF-8'",
        ),
        (
            "ICU en-US",
            "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
        ),
    ] {
        let create = format!("CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' {options}");
        match sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
        {
            Ok(_) => {
                created = Some(locale);
                break;
            }
            Err(e) => eprintln!("cannot create a database with {locale}: {e}"),
        }
    }
    let Some(locale) = created else {
        eprintln!("skipped: the server has neither an en_US.UTF-8 locale nor ICU");
        return;
    };
    let url = with_database(&server, &name);
    let pool = Pool::Postgres(PgPool::connect(&url).await.unwrap());
    seed_orders(&pool, 60).await;
    let (migration, backend) = migration(&url, "orders-normalize.toml").await;
    migration.check().await.expect("the file's SQL prepares");
    // ICU's database keeps `C` as its C library locale: its text is still not in byte order.
    assert!(!migration.checks_page_order(), "{locale}");
    let keys = all_keys(&migration, 5).await;
    assert_eq!(keys, keys_in_database_order(&pool).await, "{locale}");
    let regions: Vec<String> = keys.iter().map(|k| k.values()[0].to_string()).collect();
    let mut bytewise = regions.clone();
    bytewise.sort();
    assert_ne!(regions, bytewise, "{locale} does not sort as bytes do");
    assert!(
        regions.iter().position(|r| r == "apac") < regions.iter().position(|r| r == "Bravo"),
        "{locale}: {regions:?}"
    );
    let outcomes = migrate_all(&migration, &keys, 25).await;
    assert!(outcomes.contains(&Outcome::Migrated));
    backend.close().await;
    if let Pool::Postgres(pool) = pool {
        pool.close().await;
    }
    sqlx::query(sqlx::AssertSqlSafe(drop))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
}
