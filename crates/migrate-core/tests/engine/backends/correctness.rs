//! A run leaves every row as the migration defines it, counts what the tables say, records
//! each malformed row once and touches nothing on a dry run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use migrate_core::{
    Ending, Event, EventBoard, Key, Migrator, Outcome, RunOptions, SEEDED_MIGRATED_AT, SUMMARY_JOB,
    Summary, build_migration_system, demo_customer,
};
use tokio_util::sync::CancellationToken;

use super::harness::{Row, TestDb, audited_ids, migrated, on_both_backends, run_engine};

on_both_backends!(
    migrates_every_well_formed_row_and_records_each_malformed_one,
    a_malformed_row_fails_alone_in_its_batch,
    a_dry_run_writes_nothing,
    an_interrupted_run_resumes_without_redoing_a_row,
);

/// Whether the database has `table`.
async fn table_exists(db: &TestDb, table: &str) -> bool {
    let sql = if db.config().connection.url.starts_with("sqlite") {
        format!("SELECT count(*) FROM sqlite_master WHERE name = '{table}'")
    } else {
        format!("SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'")
    };
    db.scalar(&sql).await > 0
}

/// Checkpoints saved and not cleared (the table exists only once one was saved).
async fn checkpoints_left(db: &TestDb) -> i64 {
    if table_exists(db, "migration_checkpoints").await {
        db.scalar("SELECT count(*) FROM migration_checkpoints")
            .await
    } else {
        0
    }
}

/// Names no run can split, planted on legacy rows.
const MALFORMED: [&str; 5] = ["Hopper Grace", "", " , Ada", "Lovelace, ", "   "];
/// Unusual but well-formed names.
const UNUSUAL: [(&str, &str, &str); 3] = [
    ("  de la Cruz ,  Juana Inés ", "Juana Inés", "de la Cruz"),
    ("King, Jr., Martin", "Jr., Martin", "King"),
    ("O'Neil,Shaquille", "Shaquille", "O'Neil"),
];

/// The first `n` legacy ids at or above `from`.
fn legacy_ids(from: i64, n: usize) -> Vec<i64> {
    (from..)
        .filter(|&id| demo_customer(id).schema_version == 1)
        .filter(|&id| migrate_core::split_full_name(&demo_customer(id).full_name).is_ok())
        .take(n)
        .collect()
}

/// Seeds `n` customers and plants the malformed and unusual names above on legacy rows.
async fn seed_with_planted_names(db: &TestDb, n: u64) {
    db.seed(n).await;
    let ids = legacy_ids(n as i64 / 3, MALFORMED.len() + UNUSUAL.len());
    for (id, name) in ids.iter().zip(MALFORMED) {
        db.set_full_name(&[*id], name).await;
    }
    for (id, (name, _, _)) in ids[MALFORMED.len()..].iter().zip(UNUSUAL) {
        db.set_full_name(&[*id], name).await;
    }
}

/// What the table should hold after a complete run over `before`, checked row by row, and the
/// summary and bookkeeping tables checked against the table.
async fn check_complete_run(db: &TestDb, before: &BTreeMap<i64, Row>, summary: &Summary) {
    let after = db.dump().await;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "no row added or lost"
    );
    let (mut previously, mut migrated_now, mut malformed) = (0u64, 0u64, BTreeSet::new());
    let mut migrated_ids = BTreeSet::new();
    for (id, old) in before {
        let new = &after[id];
        if old.schema_version == 2 {
            previously += 1;
            assert_eq!(new, old, "an already migrated row is left as it was");
            continue;
        }
        match migrated(old) {
            None => {
                malformed.insert(*id);
                assert_eq!(new, old, "a malformed row is left untouched");
            }
            Some((first, last, email)) => {
                migrated_now += 1;
                migrated_ids.insert(*id);
                assert_eq!(new.schema_version, 2, "{new:?}");
                assert_eq!(new.first_name.as_deref(), Some(first.as_str()), "{new:?}");
                assert_eq!(new.last_name.as_deref(), Some(last.as_str()), "{new:?}");
                assert_eq!(new.email, email, "{new:?}");
                assert_eq!(new.full_name, old.full_name);
                let at = new.migrated_at.as_deref().expect("migrated_at is set");
                assert_ne!(at, SEEDED_MIGRATED_AT);
                chrono::DateTime::parse_from_rfc3339(at).expect("migrated_at is RFC 3339");
            }
        }
    }
    assert!(
        previously > 0 && migrated_now > 0,
        "the data has both kinds"
    );
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.migrated, migrated_now, "{summary:?}");
    // The audit table lists each migrated row once, and nothing else.
    let audited = db.audit_table_ids().await;
    assert_eq!(
        audited.len() as u64,
        migrated_now,
        "one audit entry per migrated row"
    );
    assert_eq!(audited.into_iter().collect::<BTreeSet<_>>(), migrated_ids);
    assert_eq!(summary.previously_migrated, previously, "{summary:?}");
    assert_eq!(summary.failed, malformed.len() as u64, "{summary:?}");

    let versions = db.versions().await;
    assert_eq!(
        versions.get(&2).copied().unwrap_or(0) as u64,
        previously + migrated_now
    );
    assert_eq!(
        versions.get(&1).copied().unwrap_or(0) as u64,
        summary.failed
    );
    let failures = db.failures().await;
    assert_eq!(failures.len() as u64, summary.failed);
    assert_eq!(failures.keys().copied().collect::<BTreeSet<_>>(), malformed);
    for failure in failures.values() {
        assert!(failure.error.contains("malformed full_name"), "{failure:?}");
    }
    assert_eq!(
        checkpoints_left(db).await,
        0,
        "a completed run leaves no checkpoint"
    );
}

async fn migrates_every_well_formed_row_and_records_each_malformed_one(db: &TestDb) {
    seed_with_planted_names(db, 3000).await;
    let before = db.dump().await;
    for (name, first, last) in UNUSUAL {
        let row = before.values().find(|r| r.full_name == name).unwrap();
        let (split_first, split_last, _) = migrated(row).unwrap();
        assert_eq!((split_first.as_str(), split_last.as_str()), (first, last));
    }
    let config = db.config();
    let summary = db.run(&config, RunOptions::default()).await;
    check_complete_run(db, &before, &summary).await;
    let first_failures = db.failures().await;
    for failure in first_failures.values() {
        assert_eq!(
            failure.attempts, 1,
            "a malformed row is not retried: {failure:?}"
        );
    }
    let audited = audited_ids(&db.audit_log());
    assert_eq!(audited.len() as u64, summary.migrated);
    assert_eq!(audited.iter().collect::<BTreeSet<_>>().len(), audited.len());

    // A second run finds everything done; the malformed rows fail again, recorded once each.
    let after_first = db.dump().await;
    let again = db.run(&config, RunOptions::default()).await;
    assert_eq!(again.migrated, 0, "{again:?}");
    assert_eq!(
        again.previously_migrated,
        summary.migrated + summary.previously_migrated
    );
    assert_eq!(again.failed, summary.failed);
    assert_eq!(db.dump().await, after_first, "a second run changes nothing");
    let failures = db.failures().await;
    assert_eq!(
        failures.keys().collect::<Vec<_>>(),
        first_failures.keys().collect::<Vec<_>>()
    );
    for failure in failures.values() {
        assert_eq!(
            failure.attempts, 2,
            "attempts add up across runs: {failure:?}"
        );
    }
    assert_eq!(
        audited_ids(&db.audit_log()).len(),
        audited.len(),
        "nothing audited twice"
    );
}

async fn a_malformed_row_fails_alone_in_its_batch(db: &TestDb) {
    db.seed(200).await;
    let mut config = db.config();
    config.customer_migrator.batch_size = Some(50);
    let batch: Vec<i64> = (1..=50).collect();
    let legacy: Vec<i64> = batch
        .iter()
        .copied()
        .filter(|&id| demo_customer(id).schema_version == 1)
        .collect();
    let broken = [legacy[3], legacy[10]];
    db.set_full_name(&broken[..1], "Hopper Grace").await;
    db.set_full_name(&broken[1..], "").await;
    let before = db.dump().await;

    // The migrator itself: one outcome per record, the failure on the malformed ones only.
    let system = build_migration_system(&config, Some((Box::new(EventBoard::discard()), "test")))
        .await
        .unwrap();
    system.start().await.unwrap();
    let migrator: Arc<dyn Migrator> = system.resolve::<dyn Migrator>();
    let keys: Vec<Key> = batch.iter().map(|&id| Key::int(id)).collect();
    let outcomes = migrator.migrate(&keys, false).await.unwrap();
    system.stop().await.unwrap();
    for (id, outcome) in batch.iter().zip(&outcomes) {
        let expected = if broken.contains(id) {
            match outcome {
                Outcome::Failed(failure) => {
                    assert!(
                        !failure.retryable,
                        "a malformed name is permanent: {failure:?}"
                    );
                    assert!(
                        failure.message.contains("malformed full_name"),
                        "{failure:?}"
                    );
                    continue;
                }
                other => panic!("customer {id}: {other:?}"),
            }
        } else if before[id].schema_version == 2 {
            Outcome::PreviouslyMigrated
        } else {
            Outcome::Migrated
        };
        assert_eq!(outcome, &expected, "customer {id}");
    }
    let after = db.dump().await;
    for id in &batch {
        let expected_version = if broken.contains(id) { 1 } else { 2 };
        assert_eq!(after[id].schema_version, expected_version, "customer {id}");
    }

    // Through the engine: the rest of the table, and the two failures recorded.
    let summary = db.run(&config, RunOptions::default()).await;
    assert_eq!(summary.failed, 2, "{summary:?}");
    let failures = db.failures().await;
    assert_eq!(
        failures.keys().copied().collect::<Vec<_>>(),
        broken.to_vec()
    );
    let after_run = db.dump().await;
    for id in broken {
        assert_eq!(
            after_run[&id], before[&id],
            "the malformed row is untouched"
        );
    }
    assert_eq!(db.versions().await.get(&1), Some(&2));
}

async fn a_dry_run_writes_nothing(db: &TestDb) {
    seed_with_planted_names(db, 1500).await;
    let before = db.dump().await;
    let summary = db
        .run(
            &db.config(),
            RunOptions {
                dry_run: true,
                ..RunOptions::default()
            },
        )
        .await;
    assert_eq!(
        db.dump().await,
        before,
        "a dry run leaves the table as it was"
    );
    let needing = before
        .values()
        .filter(|r| r.schema_version == 1 && migrated(r).is_some())
        .count() as u64;
    assert!(summary.dry_run);
    assert_eq!(summary.migrated, needing, "{summary:?}");
    let malformed = before
        .values()
        .filter(|r| r.schema_version == 1 && migrated(r).is_none())
        .count() as u64;
    assert!(malformed >= MALFORMED.len() as u64);
    assert_eq!(summary.failed, malformed, "{summary:?}");
    assert!(
        summary.to_string().starts_with("Migration needed for "),
        "{summary}"
    );
    // Not even the bookkeeping tables: they are created on the first write.
    let bookkeeping = if db.config().connection.url.starts_with("sqlite") {
        "SELECT count(*) FROM sqlite_master WHERE name IN ('migration_failures', 'migration_checkpoints')"
    } else {
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_name IN ('migration_failures', 'migration_checkpoints')"
    };
    assert_eq!(
        db.scalar(bookkeeping).await,
        0,
        "a dry run creates no table"
    );
    assert!(!db.audit_log().exists(), "a dry run writes no audit log");
}

async fn an_interrupted_run_resumes_without_redoing_a_row(db: &TestDb) {
    seed_with_planted_names(db, 3000).await;
    let before = db.dump().await;
    let mut config = db.config();
    // Slow enough to be stopped in the middle: 3,000 records at 3,000 a second.
    config.customer_migration.rate_limit = 3000;
    config.customer_migration.processes = 4;
    config.customer_migrator.batch_size = Some(20);
    let (board, mut events) = EventBoard::channel();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn({
        let (config, shutdown) = (config.clone(), shutdown.clone());
        async move { run_engine(&config, RunOptions::default(), shutdown, Box::new(board)).await }
    });
    while let Some(event) = events.recv().await {
        if let Event::JobProgress { job, done, .. } = event
            && job == SUMMARY_JOB
            && done >= 600
        {
            shutdown.cancel();
            break;
        }
    }
    let first = run.await.unwrap();
    assert_eq!(first.ending, Ending::Interrupted, "{first:?}");
    let handled = first.migrated + first.previously_migrated + first.failed;
    assert!((600..3000).contains(&handled), "{first:?}");
    assert_eq!(checkpoints_left(db).await, 1);

    config.customer_migration.rate_limit = 0;
    let second = db.run(&config, RunOptions::default()).await;
    assert_eq!(second.ending, Ending::Completed, "{second:?}");
    let total = Summary {
        migrated: first.migrated + second.migrated,
        failed: second.failed + first.failed,
        previously_migrated: first.previously_migrated + second.previously_migrated,
        ..second.clone()
    };
    assert!(
        second.scanned < 3000,
        "the second run resumes after what the first finished: {second:?}"
    );
    // Each record handled by exactly one of the two runs.
    let audited = audited_ids(&db.audit_log());
    assert_eq!(audited.len() as u64, total.migrated);
    assert_eq!(
        audited.iter().collect::<BTreeSet<_>>().len(),
        audited.len(),
        "no id twice"
    );
    check_complete_run(db, &before, &total).await;
}
