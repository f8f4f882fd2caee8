//! A migration on a live database: the application keeps writing while the run goes on, and
//! none of its writes is lost.

use std::collections::{BTreeMap, BTreeSet};

use migrate_core::{Backend, Ending, EventBoard, RunOptions, SEEDED_MIGRATED_AT};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::harness::{Row, TestDb, migrated, on_both_backends, open, run_declared, run_engine};

on_both_backends!(
    application_writes_during_a_run_are_never_lost,
    application_writes_during_a_declared_run_are_never_lost,
);

/// Rows seeded before the run.
const SEEDED: i64 = 4000;
/// Most application updates and inserts; the application stops earlier when the run ends.
const MAX_UPDATES: usize = 3000;
const MAX_INSERTS: i64 = 300;

/// What the application did while the run went on.
#[derive(Debug, Default)]
struct AppWrites {
    /// The last email and full name written to each updated row.
    updated: BTreeMap<i64, (String, String)>,
    /// Rows inserted, and whether each was known to be committed before the scanner could
    /// have read past it.
    inserted: BTreeMap<i64, bool>,
}

/// The application: updates random well-formed rows (an email already normalised and unique,
/// a new name, the split name too on rows already migrated, as an application writing both
/// shapes does) and inserts new legacy rows past the end of the table, until `stop`.
async fn application(
    backend: Backend,
    well_formed: Vec<i64>,
    scan_lead: i64,
    stop: CancellationToken,
) -> AppWrites {
    const UPDATE: &str = "UPDATE customers SET email = ?, full_name = ?,
        first_name = CASE WHEN schema_version = 2 THEN ? ELSE first_name END,
        last_name = CASE WHEN schema_version = 2 THEN ? ELSE last_name END
        WHERE id = ?";
    const INSERT: &str = "INSERT INTO customers (id, full_name, email, schema_version)
        VALUES (?, ?, ?, 1)";
    const UPDATE_PG: &str = "UPDATE customers SET email = $1, full_name = $2,
        first_name = CASE WHEN schema_version = 2 THEN $3 ELSE first_name END,
        last_name = CASE WHEN schema_version = 2 THEN $4 ELSE last_name END
        WHERE id = $5";
    const INSERT_PG: &str = "INSERT INTO customers (id, full_name, email, schema_version)
        VALUES ($1, $2, $3, 1)";
    // Legacy rows of the seeded range not migrated yet (malformed ones never are).
    const PENDING: &str = "SELECT count(*) FROM customers WHERE id <= ? AND schema_version = 1";
    const PENDING_PG: &str = "SELECT count(*) FROM customers WHERE id <= $1 AND schema_version = 1";

    let mut rng = SmallRng::seed_from_u64(6);
    let mut writes = AppWrites::default();
    let mut pace = tokio::time::interval(std::time::Duration::from_millis(2));
    let mut step = 0usize;
    while !stop.is_cancelled() && writes.updated.len() < MAX_UPDATES {
        pace.tick().await;
        step += 1;
        if step.is_multiple_of(5) && (writes.inserted.len() as i64) < MAX_INSERTS {
            let id = SEEDED + 1 + writes.inserted.len() as i64;
            let full_name = format!("Inserted{id}, Row");
            let email = format!(" Row.Inserted{id}@Example.COM ");
            macro_rules! insert {
                ($pool:expr, $sql:expr, $pending:expr) => {{
                    sqlx::query($sql)
                        .bind(id)
                        .bind(&full_name)
                        .bind(&email)
                        .execute($pool)
                        .await
                        .expect("the application inserts");
                    sqlx::query_scalar::<_, i64>($pending)
                        .bind(SEEDED)
                        .fetch_one($pool)
                        .await
                        .expect("the application counts")
                }};
            }
            let pending = match &backend {
                Backend::Sqlite(pool) => insert!(pool, INSERT, PENDING),
                Backend::Postgres(pool) => insert!(pool, INSERT_PG, PENDING_PG),
                other => panic!("{other:?}"),
            };
            // Rows still to migrate below the new one outnumber all the engine may hold (a
            // page, the channel, every job's batch; `scan_lead` adds the malformed rows, which
            // stay legacy): the scanner has not read past it yet.
            writes.inserted.insert(id, pending > scan_lead);
            continue;
        }
        let id = well_formed[rng.random_range(0..well_formed.len())];
        let email = format!("app-{step}@marker.example");
        let (first, last) = ("App".to_owned(), format!("Writer{step}"));
        let full_name = format!("{last}, {first}");
        macro_rules! update {
            ($pool:expr, $sql:expr) => {
                sqlx::query($sql)
                    .bind(&email)
                    .bind(&full_name)
                    .bind(&first)
                    .bind(&last)
                    .bind(id)
                    .execute($pool)
                    .await
                    .expect("the application updates")
                    .rows_affected()
            };
        }
        let updated = match &backend {
            Backend::Sqlite(pool) => update!(pool, UPDATE),
            Backend::Postgres(pool) => update!(pool, UPDATE_PG),
            other => panic!("{other:?}"),
        };
        assert_eq!(updated, 1, "customer {id} exists");
        writes.updated.insert(id, (email, full_name));
    }
    backend.close().await;
    writes
}

async fn application_writes_during_a_run_are_never_lost(db: &TestDb) {
    live_run(db, None).await;
}

/// The same with the customer migration declared in `migrations/customer-split.toml`.
async fn application_writes_during_a_declared_run_are_never_lost(db: &TestDb) {
    live_run(db, Some("customer-split.toml")).await;
}

/// A run of the built-in customer migration, or of the migration `declared` in the
/// repository's `migrations/`, while the application writes.
async fn live_run(db: &TestDb, declared: Option<&str>) {
    db.seed(SEEDED as u64).await;
    let before = db.dump().await;
    let malformed: BTreeSet<i64> = before
        .values()
        .filter(|r| r.schema_version == 1 && migrated(r).is_none())
        .map(|r| r.id)
        .collect();
    let well_formed: Vec<i64> = before
        .keys()
        .copied()
        .filter(|id| !malformed.contains(id))
        .collect();

    let mut config = db.config();
    config.customer_migration.processes = 4;
    config.customer_migrator.batch_size = Some(20);
    config.customer_scanner.fetch_size = 100;
    config.customer_scanner.block_size = 50;
    // About two seconds for the whole table, so that the application has time to write.
    config.customer_migration.rate_limit = 2000;
    let scan_lead = (100 + 50 + 4 * 20) as i64 + malformed.len() as i64;

    let stop = CancellationToken::new();
    let app = tokio::spawn(application(
        open(&db.url, false).await,
        well_formed,
        scan_lead,
        stop.clone(),
    ));
    let summary = match declared {
        None => {
            run_engine(
                &config,
                RunOptions::default(),
                CancellationToken::new(),
                Box::new(EventBoard::discard()),
            )
            .await
        }
        Some(file) => run_declared(&config, file, RunOptions::default()).await,
    };
    stop.cancel();
    let writes = app.await.unwrap();
    let after = db.dump().await;

    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert!(
        writes.updated.len() >= 100,
        "the application wrote during the run: {writes:?}"
    );
    let ahead = writes.inserted.values().filter(|&&ahead| ahead).count();
    assert!(
        ahead >= 20,
        "rows were inserted ahead of the scan: {writes:?}"
    );

    // Not one application write lost: each marker and name is there as written.
    for (id, (email, full_name)) in &writes.updated {
        let row = &after[id];
        assert_eq!(&row.email, email, "{row:?}");
        assert_eq!(&row.full_name, full_name, "{row:?}");
    }
    // Every seeded row: migrated from its latest values, or left alone when malformed.
    for (id, old) in &before {
        let row = &after[id];
        if malformed.contains(id) {
            assert_eq!(row, old, "a malformed row is untouched");
            continue;
        }
        check_migrated(row, writes.updated.get(id).map(|(e, _)| e.as_str()), old);
    }
    // Inserted rows: migrated when the scanner could not have passed them yet; otherwise
    // migrated or still legacy, never half-done.
    for (&id, &ahead) in &writes.inserted {
        let row = &after[&id];
        if row.schema_version == 1 && !ahead {
            assert!(
                row.first_name.is_none() && row.migrated_at.is_none(),
                "{row:?}"
            );
            continue;
        }
        assert_eq!(row.schema_version, 2, "inserted ahead of the scan: {row:?}");
        let (first, last, email) = migrated(&Row {
            email: format!(" Row.Inserted{id}@Example.COM "),
            ..row.clone()
        })
        .unwrap();
        assert_eq!(
            (
                row.first_name.as_deref(),
                row.last_name.as_deref(),
                row.email.as_str()
            ),
            (Some(first.as_str()), Some(last.as_str()), email.as_str())
        );
    }

    // Conflicts were retried, not counted: the only failures are the malformed rows.
    assert_eq!(summary.failed, malformed.len() as u64, "{summary:?}");
    let failures = db.failures().await;
    assert_eq!(failures.keys().copied().collect::<BTreeSet<_>>(), malformed);
    let migrated_now = after
        .values()
        .filter(|r| r.schema_version == 2 && r.migrated_at.as_deref() != Some(SEEDED_MIGRATED_AT))
        .count() as u64;
    assert_eq!(summary.migrated, migrated_now, "{summary:?}");
    let previously = before.values().filter(|r| r.schema_version == 2).count() as u64;
    assert_eq!(summary.previously_migrated, previously, "{summary:?}");
}

/// `row` is migrated: split name from its current full name, email normalised (or the
/// application's marker), and a row migrated before the run keeps its `migrated_at`.
fn check_migrated(row: &Row, marker: Option<&str>, old: &Row) {
    assert_eq!(row.schema_version, 2, "{row:?}");
    let (first, last) = migrate_core::split_full_name(&row.full_name).unwrap();
    assert_eq!(row.first_name.as_deref(), Some(first), "{row:?}");
    assert_eq!(row.last_name.as_deref(), Some(last), "{row:?}");
    let email = marker.map_or_else(|| old.email.trim_matches(' ').to_lowercase(), str::to_owned);
    assert_eq!(row.email, email, "{row:?}");
    if old.schema_version == 2 {
        assert_eq!(row.migrated_at, old.migrated_at, "{row:?}");
    } else {
        assert_ne!(
            row.migrated_at.as_deref(),
            Some(SEEDED_MIGRATED_AT),
            "{row:?}"
        );
        assert!(row.migrated_at.is_some(), "{row:?}");
    }
}
