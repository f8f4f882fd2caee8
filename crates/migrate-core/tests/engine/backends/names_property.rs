//! Arbitrary names through the real database, compared with `split_full_name`: a row the
//! database migrated holds exactly the Rust split, a row the Rust check rejects stays legacy
//! and is recorded as failed, and no split part begins or ends with whitespace.

use std::collections::BTreeMap;

use migrate_core::{Ending, RunOptions, split_full_name};
use proptest::prelude::*;
use proptest::strategy::Union;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::harness::{Pool, Row, TestDb, on_both_backends};

on_both_backends!(arbitrary_names_split_in_the_database_as_in_rust);

/// Most customers per case; each case refills the table and runs the engine once.
const CUSTOMERS: usize = 150;
/// Cases per backend.
const CASES: u32 = 16;
/// Most ids per batch: several batches, taken by several jobs, per run. A batch's names are
/// migrated by one statement, which trims only spaces when no name of the batch needs more: small
/// batches give names alone a statement of their own.
const MAX_BATCH: usize = 30;
/// A failing case is shrunk with one engine run per step: bound the search.
const MAX_SHRINK_ITERS: u32 = 300;

/// Every whitespace character by Rust's definition (Unicode White_Space), independent of the
/// list the migration keeps.
fn whitespace() -> Vec<char> {
    (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| c.is_whitespace())
        .collect()
}

/// One character of a name, biased toward what splits and trims: commas, every whitespace
/// character, NUL (where the database can hold one), multibyte characters and characters that
/// look like spaces but are not whitespace (zero-width space, BOM, Mongolian vowel separator).
fn name_char(nul: bool) -> impl Strategy<Value = char> {
    let letters: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
    let multibyte = vec![
        'é', 'ß', 'Ж', '日', '本', '🙂', '\u{301}', '\u{200B}', '\u{FEFF}', '\u{180E}',
    ];
    let mut choices = vec![
        (3, Just(',').boxed()),
        (4, prop::sample::select(whitespace()).boxed()),
        (5, prop::sample::select(letters).boxed()),
        (2, prop::sample::select(multibyte).boxed()),
        (
            1,
            any::<char>()
                .prop_filter("NUL only where it can be stored", move |c| {
                    nul || *c != '\0'
                })
                .boxed(),
        ),
    ];
    if nul {
        choices.push((1, Just('\0').boxed()));
    }
    Union::new_weighted(choices)
}

/// A mixed-case email between runs of whitespace.
fn email() -> impl Strategy<Value = String> {
    let spaces = || prop::collection::vec(prop::sample::select(whitespace()), 0..3);
    let address = prop::sample::select(vec!["Ada@Example.COM", "x.Y@z.org", "MAIL@HOST"]);
    (spaces(), address, spaces()).prop_map(|(before, address, after)| {
        before
            .into_iter()
            .chain(address.chars())
            .chain(after)
            .collect()
    })
}

/// One case: the batch size, and `(full_name, email)` of each customer, ids from 1 (a failing
/// case shrinks to the fewest customers that still fail).
fn case(nul: bool) -> impl Strategy<Value = (usize, Vec<(String, String)>)> {
    let name = prop::collection::vec(name_char(nul), 0..12).prop_map(String::from_iter);
    (
        1..=MAX_BATCH,
        prop::collection::vec((name, email()), 1..=CUSTOMERS),
    )
}

/// Replaces every customer with legacy rows of `customers`, and forgets recorded failures.
async fn refill(db: &TestDb, customers: &[(String, String)]) {
    db.execute("DELETE FROM customers").await.unwrap();
    if has_failures_table(db).await {
        db.execute("DELETE FROM migration_failures").await.unwrap();
    }
    macro_rules! insert {
        ($pool:expr, $db:ty) => {{
            let mut insert = QueryBuilder::<$db>::new(
                "INSERT INTO customers (id, full_name, email, schema_version) ",
            );
            insert.push_values((1i64..).zip(customers), |mut row, (id, (name, email))| {
                row.push_bind(id)
                    .push_bind(name.clone())
                    .push_bind(email.clone())
                    .push_bind(1i32);
            });
            insert.build().execute($pool).await.map(drop)
        }};
    }
    match &db.pool {
        Pool::Sqlite(pool) => insert!(pool, Sqlite),
        Pool::Postgres(pool) => insert!(pool, Postgres),
    }
    .expect("inserting the customers");
}

async fn has_failures_table(db: &TestDb) -> bool {
    let sql = if db.is_sqlite() {
        "SELECT count(*) FROM sqlite_master WHERE name = 'migration_failures'"
    } else {
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'migration_failures'"
    };
    db.scalar(sql).await > 0
}

/// One case: the customers migrated by the engine, each row compared with `split_full_name`.
async fn check(
    db: &TestDb,
    batch: usize,
    customers: &[(String, String)],
) -> Result<(), TestCaseError> {
    refill(db, customers).await;
    let mut config = db.config();
    config.customer_migrator.batch_size = Some(batch);
    let summary = db.run(&config, RunOptions::default()).await;
    prop_assert_eq!(summary.ending, Ending::Completed, "{:?}", summary);
    let rows = db.dump().await;
    let failures = if has_failures_table(db).await {
        db.failures().await
    } else {
        BTreeMap::new()
    };
    let mut failed = 0;
    for (id, (name, email)) in (1i64..).zip(customers) {
        let row = &rows[&id];
        match split_full_name(name) {
            Ok((first, last)) => {
                for part in [first, last] {
                    prop_assert!(
                        !part.is_empty() && part.trim() == part && !part.contains('\0'),
                        "{:?} split into {:?}",
                        name,
                        part
                    );
                }
                prop_assert_eq!(row.schema_version, 2, "{:?}: {:?}", name, row);
                prop_assert_eq!(row.first_name.as_deref(), Some(first), "{:?}", name);
                prop_assert_eq!(row.last_name.as_deref(), Some(last), "{:?}", name);
                prop_assert_eq!(&row.email, &email.trim().to_lowercase(), "{:?}", email);
                prop_assert!(!failures.contains_key(&id), "{:?}", failures.get(&id));
            }
            Err(reason) => {
                failed += 1;
                let legacy = Row {
                    id,
                    full_name: name.clone(),
                    email: email.clone(),
                    schema_version: 1,
                    first_name: None,
                    last_name: None,
                    migrated_at: None,
                };
                prop_assert_eq!(row, &legacy, "a rejected name is left as it was");
                let recorded = failures.get(&id).map(|f| f.error.as_str());
                prop_assert!(
                    recorded.is_some_and(|error| error.contains(reason)),
                    "{:?} rejected ({}), recorded as {:?}",
                    name,
                    reason,
                    recorded
                );
            }
        }
    }
    prop_assert_eq!(summary.failed, failed, "{:?}", summary);
    prop_assert_eq!(
        summary.migrated,
        customers.len() as u64 - failed,
        "{:?}",
        summary
    );
    Ok(())
}

async fn arbitrary_names_split_in_the_database_as_in_rust(db: &TestDb) {
    db.seed(0).await;
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        max_shrink_iters: MAX_SHRINK_ITERS,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = case(db.is_sqlite());
    // The runner calls the case synchronously: block this worker thread on each case.
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&strategy, |(batch, customers)| {
            handle.block_on(check(db, batch, &customers))
        })
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}
