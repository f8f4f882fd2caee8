//! Batches that meet another session's locks: retried as a whole, split in halves down to the
//! locked records, which are left for the next run, never recorded as failures. Time runs on
//! tokio's paused clock.

use std::collections::HashMap;
use std::sync::Arc;

use migrate_core::{Ending, Event, Key, RunOptions, Summary, overseer};
use tokio_util::sync::CancellationToken;

use crate::support::{Behaviour, Journal, ScriptedMigrator, config, system};

/// One job, batches of 16, three attempts.
fn one_job(dir: &std::path::Path) -> migrate_core::Config {
    let mut config = config(dir, 1000);
    config.customer_migration.processes = 1;
    config.customer_migration.retry_attempts = 3;
    config
}

/// Runs over the given ids 1 to 16 as one batch, with `script`.
async fn run_sixteen(
    config: &migrate_core::Config,
    script: HashMap<i64, Behaviour>,
) -> (Summary, Arc<Journal>, Vec<Event>) {
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 16;
    migrator.script = script;
    let (system, board) = system(config, migrator);
    system.start().await.unwrap();
    let options = RunOptions {
        input: Some((1..=16).map(Key::int).collect()),
        ..Default::default()
    };
    let summary = overseer(&system)
        .run(options, CancellationToken::new())
        .await
        .unwrap();
    system.stop().await.unwrap();
    (summary, journal, board.events())
}

fn range(ids: std::ops::RangeInclusive<i64>) -> Vec<i64> {
    ids.collect()
}

#[tokio::test(start_paused = true)]
async fn a_locked_record_is_split_out_of_its_batch_and_left_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_job(dir.path());
    let (summary, journal, events) =
        run_sixteen(&config, HashMap::from([(11, Behaviour::Locked)])).await;
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(
        (summary.migrated, summary.failed, summary.deferred),
        (15, 0, 1)
    );
    assert!(
        journal.failures().is_empty(),
        "a locked record is no failure"
    );
    let mut migrated: Vec<i64> = journal.migrated_ids().into_keys().collect();
    migrated.sort_unstable();
    assert_eq!(migrated, [range(1..=10), range(12..=16)].concat());
    // The whole batch three times, then halves, each tried once, down to the locked record,
    // which gets its three attempts alone; the free halves are migrated on their first try.
    let batches = journal.batches.lock().unwrap().clone();
    assert_eq!(
        batches,
        [
            range(1..=16),
            range(1..=16),
            range(1..=16),
            range(1..=8),
            range(9..=16),
            range(9..=12),
            range(9..=10),
            range(11..=12),
            vec![11],
            vec![11],
            vec![11],
            vec![12],
            range(13..=16),
        ]
    );
    assert!(
        summary
            .to_string()
            .ends_with("; 1 customer left for the next run (locked by another session)"),
        "{summary}"
    );
    assert!(matches!(events.last(), Some(Event::Summary(s)) if s.deferred == 1));
    // The checkpoint stays behind the locked record.
    assert!(dir.path().join("paging-state.json").exists());

    // The lock is gone: the next run migrates the record it left, and only that one.
    let (second, journal, _) = run_sixteen(&config, HashMap::new()).await;
    assert_eq!(second.ending, Ending::Completed, "{second:?}");
    assert_eq!((second.migrated, second.deferred, second.failed), (1, 0, 0));
    assert_eq!(journal.migrated_ids(), HashMap::from([(11, 1)]));
    assert!(!dir.path().join("paging-state.json").exists());
}

#[tokio::test(start_paused = true)]
async fn a_lock_released_during_the_retries_defers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_job(dir.path());
    let (summary, journal, _) =
        run_sixteen(&config, HashMap::from([(5, Behaviour::LockedTimes(2))])).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(
        (summary.migrated, summary.failed, summary.deferred),
        (16, 0, 0)
    );
    // Retried as a whole: no split.
    assert_eq!(journal.batches.lock().unwrap().len(), 3);
    assert!(!dir.path().join("paging-state.json").exists());
}

#[tokio::test(start_paused = true)]
async fn a_lock_released_while_the_batch_is_split_migrates_the_record_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_job(dir.path());
    // Three whole tries, then 9-16, 9-12 and 11-12 are contended; 11 alone passes.
    let (summary, journal, _) =
        run_sixteen(&config, HashMap::from([(11, Behaviour::LockedTimes(6))])).await;
    assert_eq!(
        (summary.migrated, summary.failed, summary.deferred),
        (16, 0, 0)
    );
    let batches = journal.batches.lock().unwrap().clone();
    assert_eq!(batches.iter().filter(|b| **b == [11]).count(), 1);
}

#[tokio::test(start_paused = true)]
async fn locked_records_and_failures_are_counted_apart() {
    let dir = tempfile::tempdir().unwrap();
    let config = one_job(dir.path());
    let script = HashMap::from([
        (2, Behaviour::Locked),
        (3, Behaviour::Permanent),
        (15, Behaviour::Locked),
    ]);
    let (summary, journal, _) = run_sixteen(&config, script).await;
    assert_eq!(
        (summary.migrated, summary.failed, summary.deferred),
        (13, 1, 2)
    );
    let failures = journal.failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].key, Key::int(3));
    assert_eq!(summary.ending, Ending::Completed);
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_split_leaves_what_is_not_settled_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = one_job(dir.path());
    // Long backoffs: the stop comes while the whole batch waits to be tried again.
    config.customer_migration.retry_initial_delay_millis = 60_000;
    config.customer_migration.retry_max_delay_millis = 60_000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 16;
    migrator.script = HashMap::from([(11, Behaviour::Locked)]);
    let (system, _) = system(&config, migrator);
    system.start().await.unwrap();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        stop.cancel();
    });
    let options = RunOptions {
        input: Some((1..=16).map(Key::int).collect()),
        ..Default::default()
    };
    let summary = overseer(&system).run(options, shutdown).await.unwrap();
    system.stop().await.unwrap();
    assert_eq!(summary.ending, Ending::Interrupted);
    assert_eq!(
        (summary.migrated, summary.deferred, summary.failed),
        (0, 0, 0)
    );
    assert_eq!(journal.batches.lock().unwrap().len(), 1);
}
