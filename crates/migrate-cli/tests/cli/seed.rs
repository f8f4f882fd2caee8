//! `seed --force` and `demo --fresh`: what they wipe, and when they ask first.

use sqlx::SqlitePool;

use crate::util::{Scratch, stderr};

/// Row counts of the demo table and of the bookkeeping tables (`None`: the table is missing).
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    customers: i64,
    checkpoints: Option<i64>,
    failures: Option<i64>,
}

async fn counts(scratch: &Scratch, db: &str) -> Counts {
    let url = format!("sqlite://{}", scratch.path().join(db).display());
    let pool = SqlitePool::connect(&url).await.unwrap();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let sql = sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}"));
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .ok()
        }
    };
    let counts = Counts {
        customers: count("customers").await.unwrap(),
        checkpoints: count("migration_checkpoints").await,
        failures: count("migration_failures").await,
    };
    pool.close().await;
    counts
}

/// Seeds `db` with 3000 customers and migrates it until the failure limit aborts the run, so
/// that both bookkeeping tables hold rows (a completed run leaves no checkpoint).
async fn seeded_and_migrated(scratch: &Scratch, db: &str) -> Counts {
    let url = format!("connection.url=sqlite://{db}");
    let seeded = scratch.run(&["seed", "--customers", "3000", &url]);
    assert_eq!(seeded.status.code(), Some(0), "{}", stderr(&seeded));
    let migrated = scratch.run(&[
        &url,
        "status-board.mode=off",
        "customer-migration.max-failures=1",
        "customer-migrator.batch-size=10",
    ]);
    assert_eq!(migrated.status.code(), Some(3), "{}", stderr(&migrated));
    let counts = counts(scratch, db).await;
    assert!(counts.failures.is_some_and(|n| n > 0), "{counts:?}");
    assert!(counts.checkpoints.is_some_and(|n| n > 0), "{counts:?}");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_localhost_seed_force_asks_for_confirmation_and_then_says_what_it_dropped() {
    let scratch = Scratch::new();
    let before = seeded_and_migrated(&scratch, "shared.db").await;
    let url = "connection.url=sqlite://shared.db";
    for environment in ["staging", "production"] {
        let output = scratch.run(&[
            "-e",
            environment,
            "seed",
            "--force",
            "--customers",
            "10",
            url,
        ]);
        assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains(&format!("in the {environment} environment"))
                && message.contains("--confirm-wipe"),
            "{message}"
        );
        assert_eq!(
            counts(&scratch, "shared.db").await,
            before,
            "nothing changed"
        );
    }

    let output = scratch.run(&[
        "-e",
        "production",
        "seed",
        "--force",
        "--confirm-wipe",
        "--customers",
        "10",
        url,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("Deleted the 3,000 rows of customers"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "dropped migration_checkpoints ({} row",
            before.checkpoints.unwrap()
        )) && message.contains(&format!(
            "migration_failures ({} rows)",
            before.failures.unwrap()
        )),
        "{message}"
    );
    assert_eq!(
        counts(&scratch, "shared.db").await,
        Counts {
            customers: 10,
            checkpoints: None,
            failures: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_localhost_seed_force_refills_and_says_what_it_dropped() {
    let scratch = Scratch::new();
    let before = seeded_and_migrated(&scratch, "local.db").await;
    let output = scratch.run(&[
        "seed",
        "--force",
        "--customers",
        "10",
        "connection.url=sqlite://local.db",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("Deleted the 3,000 rows of customers")
            && message.contains(&format!(
                "migration_failures ({} rows)",
                before.failures.unwrap()
            )),
        "{message}"
    );
    assert_eq!(counts(&scratch, "local.db").await.failures, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_without_force_keeps_the_bookkeeping_of_an_emptied_table() {
    let scratch = Scratch::new();
    seeded_and_migrated(&scratch, "emptied.db").await;
    let pool = SqlitePool::connect(&format!(
        "sqlite://{}",
        scratch.path().join("emptied.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("DELETE FROM customers")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let before = counts(&scratch, "emptied.db").await;
    let output = scratch.run(&[
        "seed",
        "--customers",
        "10",
        "connection.url=sqlite://emptied.db",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("migration_failures") && message.contains("--force"),
        "{message}"
    );
    assert_eq!(
        counts(&scratch, "emptied.db").await,
        before,
        "nothing dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_fresh_refills_the_demo_database_in_any_environment_and_asks_for_another() {
    let scratch = Scratch::new();
    let demo = |extra: &[&str]| {
        let mut args = vec![
            "-e",
            "production",
            "demo",
            "--customers",
            "500",
            "status-board.mode=off",
        ];
        args.extend_from_slice(extra);
        scratch.run(&args)
    };
    for extra in [&[][..], &["--fresh"]] {
        let output = demo(extra);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("Filled the demo database sqlite://state/demo.db"),
            "{}",
            stderr(&output)
        );
    }

    let before = seeded_and_migrated(&scratch, "other.db").await;
    let other = ["connection.url=sqlite://other.db", "--fresh"];
    let output = demo(&other);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--confirm-wipe"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        counts(&scratch, "other.db").await,
        before,
        "nothing changed"
    );
    let output = demo(&[other[0], other[1], "--confirm-wipe"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(counts(&scratch, "other.db").await.customers, 500);
}
