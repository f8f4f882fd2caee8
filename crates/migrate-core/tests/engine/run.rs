//! The run: backpressure, retries, failure records, panics, shutdown, resume, dry run, input,
//! rate limit and events. Time runs on tokio's paused clock: no test sleeps to synchronise.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use migrate_core::{
    BatchError, BoxError, Ending, Event, JobId, JobStatus, Key, KeyColumn, KeyKind, KeyRange,
    Lifecycle, Migration, Noun, Outcome, RunOptions, Scan, ScanReport, Scanner, StatusBoard,
    Summary, migration_builder, overseer, scan_pages,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::support::{Behaviour, Journal, ScriptedMigrator, SharedBoard, config, system};

async fn run_once(
    config: &migrate_core::Config,
    migrator: ScriptedMigrator,
    options: RunOptions,
    shutdown: CancellationToken,
) -> (Summary, Vec<Event>) {
    let (system, board) = system(config, migrator);
    system.start().await.unwrap();
    let summary = overseer(&system).run(options, shutdown).await.unwrap();
    system.stop().await.unwrap();
    (summary, board.events())
}

/// `ids` as the keys of a run over given keys.
fn keys(ids: &[i64]) -> Arc<[Key]> {
    ids.iter().map(|&id| Key::int(id)).collect()
}

/// One run with the default options and no stop.
async fn run_plain(config: &migrate_core::Config, migrator: ScriptedMigrator) -> Summary {
    run_once(
        config,
        migrator,
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await
    .0
}

#[tokio::test(start_paused = true)]
async fn every_record_is_handled_once_and_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1000);
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(5);
    let (summary, events) = run_once(
        &config,
        migrator,
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.migrated, 1000);
    assert_eq!(summary.scanned, 1000);
    let migrated = journal.migrated_ids();
    assert_eq!(migrated.len(), 1000);
    assert!(migrated.values().all(|&n| n == 1));
    assert!(matches!(events.last(), Some(Event::Summary(s)) if s == &summary));
    // A completed run leaves no checkpoint behind: the next run starts over.
    assert!(!dir.path().join("paging-state.json").exists());
}

/// A scanner using the library's paging loop over a counting source, to watch how far it runs
/// ahead of the jobs.
struct CountingScanner {
    board: Arc<dyn StatusBoard>,
    ids: Vec<i64>,
    fetch_size: usize,
    block_size: usize,
    read: AtomicUsize,
    journal: Arc<Journal>,
    worst_lead: AtomicUsize,
    /// How long reading a page takes (a database round trip).
    page_delay: Duration,
    /// After this many pages, reading never returns (a hung query); 0: never hangs.
    hang_after_pages: usize,
    pages: AtomicUsize,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

impl std::fmt::Debug for CountingScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CountingScanner")
    }
}

#[async_trait]
impl Migration for CountingScanner {
    fn name(&self) -> &str {
        "counting"
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    async fn page(
        &self,
        after: Option<&Key>,
        _end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        if !self.page_delay.is_zero() {
            tokio::time::sleep(self.page_delay).await;
        }
        let pages = self.pages.fetch_add(1, Ordering::SeqCst) + 1;
        if self.hang_after_pages > 0 && pages > self.hang_after_pages {
            std::future::pending::<()>().await;
        }
        let after = after.and_then(Key::as_int);
        let start = after.map_or(0, |a| self.ids.partition_point(|&id| id <= a));
        let page: Vec<Key> = self.ids[start..]
            .iter()
            .take(limit)
            .map(|&id| Key::int(id))
            .collect();
        let read = self.read.fetch_add(page.len(), Ordering::SeqCst) + page.len();
        let lead = read - self.journal.received_count();
        self.worst_lead.fetch_max(lead, Ordering::SeqCst);
        Ok(page)
    }

    async fn remaining(&self, _: Option<&Key>, _: Option<&Key>) -> Result<Option<u64>, BoxError> {
        Ok(Some(self.ids.len() as u64))
    }

    /// The scripted migrator migrates: this source only pages.
    async fn migrate(&self, _: &[Key], _: bool) -> Result<Vec<Outcome>, BatchError> {
        Err(BatchError::Fatal {
            error: "the counting source does not migrate".into(),
            committed: None,
        })
    }
}

impl Lifecycle for CountingScanner {}

impl CountingScanner {
    /// A scanner over `ids` that neither slows nor hangs, reporting to a new recording board.
    fn new(ids: Vec<i64>, fetch_size: usize, block_size: usize, journal: &Arc<Journal>) -> Self {
        CountingScanner {
            board: Arc::new(SharedBoard(Arc::new(
                migrate_core::RecordingBoard::default(),
            ))),
            ids,
            fetch_size,
            block_size,
            read: AtomicUsize::new(0),
            journal: Arc::clone(journal),
            worst_lead: AtomicUsize::new(0),
            page_delay: Duration::ZERO,
            hang_after_pages: 0,
            pages: AtomicUsize::new(0),
            noun: Noun::new("customer", "customers"),
            keys: vec![KeyColumn::new("id", KeyKind::Integer)],
        }
    }
}

/// One run of the real overseer with `scanner` and `migrator` in place.
async fn run_with_scanner(
    config: &migrate_core::Config,
    migrator: ScriptedMigrator,
    scanner: &Arc<CountingScanner>,
    shutdown: CancellationToken,
) -> Summary {
    let system = migration_builder(config, migrate_core::Backend::Simulated { customers: 0 })
        .with_override::<dyn migrate_core::Migrator>(Box::new(migrator), "Scripted")
        .with_override::<dyn Scanner>(Box::new(ArcScanner(Arc::clone(scanner))), "Counting")
        .with_override::<dyn StatusBoard>(Box::new(SharedBoard(Arc::default())), "Recording")
        .build()
        .unwrap();
    system.start().await.unwrap();
    let summary = overseer(&system)
        .run(RunOptions::default(), shutdown)
        .await
        .unwrap();
    system.stop().await.unwrap();
    summary
}

#[async_trait]
impl Scanner for CountingScanner {
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError> {
        scan_pages(self, &*self.board, self.fetch_size, &scan).await
    }
    fn block_size(&self) -> usize {
        self.block_size
    }
}

#[tokio::test(start_paused = true)]
async fn the_scanner_never_runs_more_than_a_block_and_a_page_ahead_of_slow_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 0);
    config.customer_migration.processes = 4;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(10);
    let (block_size, fetch_size) = (10, 50);
    let scanner = Arc::new(CountingScanner::new(
        (1..=20_000).collect(),
        fetch_size,
        block_size,
        &journal,
    ));
    let summary = run_with_scanner(&config, migrator, &scanner, CancellationToken::new()).await;
    assert_eq!(summary.migrated, 20_000);
    let worst = scanner.worst_lead.load(Ordering::SeqCst);
    assert!(
        worst <= block_size + fetch_size,
        "the scanner ran {worst} ids ahead of the jobs"
    );
    // The bound is reached, so the test would see a scanner that ignored backpressure.
    assert!(worst >= fetch_size, "{worst}");
}

struct ArcScanner(Arc<CountingScanner>);

impl Lifecycle for ArcScanner {}

#[async_trait]
impl Scanner for ArcScanner {
    async fn scan(&self, scan: Scan) -> Result<ScanReport, BoxError> {
        self.0.scan(scan).await
    }
    fn block_size(&self) -> usize {
        self.0.block_size()
    }
}

/// The first `n` simulated ids, through a dry run.
async fn first_ids(customers: u64, n: usize) -> Vec<i64> {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), customers);
    let journal = Arc::new(Journal::default());
    let options = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    run_once(
        &config,
        ScriptedMigrator::new(Arc::clone(&journal)),
        options,
        CancellationToken::new(),
    )
    .await;
    let mut ids = journal.received.lock().unwrap().clone();
    ids.sort_unstable();
    ids.truncate(n);
    ids
}

#[tokio::test(start_paused = true)]
async fn failures_are_retried_with_backoff_then_recorded_and_the_run_goes_on() {
    let ids = first_ids(200, 5).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 200);
    config.customer_migration.retry_attempts = 4;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = HashMap::from([
        (ids[0], Behaviour::FlakyTimes(2)),
        (ids[1], Behaviour::AlwaysTransient),
        (ids[2], Behaviour::Permanent),
        (ids[3], Behaviour::Previously),
    ]);
    let started = tokio::time::Instant::now();
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.migrated, 197);
    assert_eq!(summary.previously_migrated, 1);
    assert_eq!(summary.failed, 2);
    assert_eq!(
        summary.failures_recorded_in.as_deref(),
        Some("the test journal")
    );
    let attempts = journal.attempts.lock().unwrap().clone();
    assert_eq!(attempts[&ids[0]], 3, "two failures, then success");
    assert_eq!(attempts[&ids[1]], 4, "retry-attempts in all");
    assert_eq!(attempts[&ids[2]], 1, "a permanent failure is not retried");
    let mut failures = journal.failures();
    failures.sort_by_key(|f| f.key.as_int());
    assert_eq!(failures.len(), 2);
    assert_eq!(
        (failures[0].key.as_int(), failures[0].attempts),
        (Some(ids[1]), 4)
    );
    assert_eq!(failures[0].error, format!("unreachable {}", ids[1]));
    assert_eq!(
        (failures[1].key.as_int(), failures[1].attempts),
        (Some(ids[2]), 1)
    );
    // Backoff: at least half of 100 + 200 + 400 ms (equal jitter) before the last attempt.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_migrator_is_contained_recorded_and_the_batch_goes_on() {
    let ids = first_ids(100, 10).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 100);
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 10;
    migrator.script = HashMap::from([(ids[4], Behaviour::Panic)]);
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.failed, 1);
    assert_eq!(summary.migrated, 99);
    let failures = journal.failures();
    assert_eq!(failures[0].key, Key::int(ids[4]));
    assert!(
        failures[0].error.contains("scripted panic on customer"),
        "{}",
        failures[0].error
    );
    // The others of the panicking batch were migrated one by one, each exactly once.
    assert!(journal.migrated_ids().values().all(|&n| n == 1));
}

#[tokio::test(start_paused = true)]
async fn too_many_failures_abort_the_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 500);
    config.customer_migration.max_failures = 3;
    config.customer_migration.retry_attempts = 1;
    let ids = first_ids(500, 500).await;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = ids.iter().map(|&id| (id, Behaviour::Permanent)).collect();
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Aborted);
    assert!(
        summary
            .abort_reason
            .as_deref()
            .is_some_and(|r| r.contains("more than 3 records failed")),
        "{summary:?}"
    );
    assert!(
        summary.failed > 3 && summary.failed < 100,
        "{}",
        summary.failed
    );
    // Every counted failure was recorded.
    assert_eq!(journal.failures().len() as u64, summary.failed);
    // The checkpoint was saved: what was not handled is still to do.
    let state = std::fs::read_to_string(dir.path().join("paging-state.json")).unwrap();
    assert!(state.contains("customer-migration/all"), "{state}");
}

/// Failures counted before the run (a distributed worker's earlier ranges) count against
/// `max-failures`: two more failures pass a limit of 3 only when none came before.
#[tokio::test(start_paused = true)]
async fn failures_counted_before_the_run_count_against_the_limit() {
    for (before, ending) in [(0, Ending::Completed), (2, Ending::Aborted)] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path(), 200);
        config.customer_migration.max_failures = 3;
        config.customer_migration.retry_attempts = 1;
        let ids = first_ids(200, 2).await;
        let journal = Arc::new(Journal::default());
        let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
        migrator.script = ids.iter().map(|&id| (id, Behaviour::Permanent)).collect();
        let options = RunOptions {
            failures_before: before,
            ..RunOptions::default()
        };
        let (summary, _) = run_once(&config, migrator, options, CancellationToken::new()).await;
        assert_eq!(summary.failed, 2, "{summary:?}");
        assert_eq!(summary.ending, ending, "{before} before: {summary:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_failure_that_cannot_be_recorded_aborts_the_run() {
    let ids = first_ids(50, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 50);
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = HashMap::from([(ids[0], Behaviour::Permanent)]);
    migrator.fail_recording = true;
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Aborted);
    assert_eq!(
        summary.abort_reason.as_deref(),
        Some("while recording failures: the failures table is gone")
    );
}

/// The batch whose failure could not be recorded committed its other records: they count, and
/// the unrecorded failure is left for the next run (not counted, not marked done).
#[tokio::test(start_paused = true)]
async fn an_aborted_run_counts_every_record_its_batches_committed() {
    let ids = first_ids(400, 400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 400);
    config.customer_migration.processes = 4;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 10;
    migrator.script = ids
        .iter()
        .step_by(37)
        .map(|&id| (id, Behaviour::Permanent))
        .collect();
    migrator.fail_recording = true;
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Aborted);
    assert_eq!(
        summary.migrated,
        journal.migrated_ids().len() as u64,
        "every committed record is counted"
    );
    assert!(summary.migrated > 0);
    assert_eq!(summary.failed, 0, "no failure was recorded");
    // The next run (recording works again) records the failures and finishes.
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = ids
        .iter()
        .step_by(37)
        .map(|&id| (id, Behaviour::Permanent))
        .collect();
    let summary = run_plain(&config, migrator).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.failed, ids.iter().step_by(37).count() as u64);
    assert_eq!(
        journal.migrated_ids().len(),
        400 - ids.iter().step_by(37).count()
    );
}

#[tokio::test(start_paused = true)]
async fn stopping_at_random_points_and_resuming_migrates_every_record_exactly_once() {
    let customers = 3000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), customers);
    config.customer_migration.processes = 7;
    config.customer_scanner.fetch_size = 64;
    config.customer_scanner.block_size = 16;
    let journal = Arc::new(Journal::default());
    let mut rng = rand::rng();
    let mut runs = 0;
    let mut total_migrated = 0;
    loop {
        runs += 1;
        assert!(runs < 200, "the migration does not finish");
        let shutdown = CancellationToken::new();
        let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
        migrator.batch_size = rng.random_range(1..=5);
        migrator.pace = Duration::from_millis(rng.random_range(1..=20));
        migrator.stop = Some((rng.random_range(1..=250), shutdown.clone()));
        let (summary, _) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
        total_migrated += summary.migrated;
        match summary.ending {
            Ending::Interrupted => continue,
            Ending::Completed => break,
            Ending::Aborted => panic!("{summary:?}"),
        }
    }
    assert!(runs > 5, "only {runs} runs: the stops did not interrupt");
    let migrated = journal.migrated_ids();
    assert_eq!(migrated.len() as u64, customers, "every record migrated");
    let twice: Vec<_> = migrated.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "migrated more than once: {twice:?}");
    assert_eq!(total_migrated, customers, "the runs' counts add up");
}

#[tokio::test(start_paused = true)]
async fn an_interrupted_run_says_so_and_reset_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 400);
    let journal = Arc::new(Journal::default());
    let shutdown = CancellationToken::new();
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.stop = Some((100, shutdown.clone()));
    let (summary, events) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    assert!(summary.to_string().contains("interrupted"), "{summary}");
    assert!(summary.migrated >= 100 && summary.migrated < 400);
    let summary_status = events.iter().rev().find_map(|e| match e {
        Event::JobStatus { job, status } if *job == migrate_core::SUMMARY_JOB => Some(*status),
        _ => None,
    });
    assert_eq!(summary_status, Some(JobStatus::Warning));
    // --reset ignores the saved progress: everything is migrated again.
    let options = RunOptions {
        reset: true,
        ..Default::default()
    };
    let (summary, _) = run_once(
        &config,
        ScriptedMigrator::new(Arc::clone(&journal)),
        options,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.migrated, 400);
}

#[tokio::test(start_paused = true)]
async fn jobs_past_the_grace_period_are_stopped_and_their_records_redone_next_time() {
    let ids = first_ids(100, 1).await;
    let hung = ids[0];
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 100);
    config.customer_migration.grace_period_millis = 2000;
    let journal = Arc::new(Journal::default());
    let shutdown = CancellationToken::new();
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = HashMap::from([(hung, Behaviour::Hang)]);
    migrator.pace = Duration::from_millis(10);
    migrator.stop = Some((20, shutdown.clone()));
    let started = tokio::time::Instant::now();
    let (summary, _) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    assert!(started.elapsed() >= Duration::from_millis(2000));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The hung record was not marked done: the next run migrates it.
    let summary = run_plain(&config, ScriptedMigrator::new(Arc::clone(&journal))).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(journal.migrated_ids().get(&hung), Some(&1));
    assert_eq!(journal.migrated_ids().len(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_dry_run_checks_and_counts_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 300);
    let ids = first_ids(300, 3).await;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = HashMap::from([
        (ids[0], Behaviour::Previously),
        (ids[1], Behaviour::Permanent),
    ]);
    let options = RunOptions {
        dry_run: true,
        ..Default::default()
    };
    let (summary, _) = run_once(&config, migrator, options, CancellationToken::new()).await;
    assert!(summary.dry_run);
    assert_eq!(
        (
            summary.migrated,
            summary.previously_migrated,
            summary.failed
        ),
        (298, 1, 1)
    );
    assert!(
        summary
            .to_string()
            .starts_with("Migration needed for 298 customers")
    );
    assert!(journal.migrated_ids().is_empty());
    assert!(journal.failures().is_empty(), "a dry run records nothing");
    assert!(!dir.path().join("paging-state.json").exists());
    assert!(!dir.path().join("migration.log").exists());
}

#[tokio::test(start_paused = true)]
async fn given_ids_are_migrated_instead_of_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1000);
    let journal = Arc::new(Journal::default());
    let options = RunOptions {
        input: Some(keys(&[3, 5, 8, 13, 21])),
        ..Default::default()
    };
    let (summary, _) = run_once(
        &config,
        ScriptedMigrator::new(Arc::clone(&journal)),
        options,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.migrated, 5);
    let mut ids: Vec<i64> = journal.migrated_ids().into_keys().collect();
    ids.sort_unstable();
    assert_eq!(ids, [3, 5, 8, 13, 21]);
}

#[tokio::test(start_paused = true)]
async fn a_key_range_limits_the_scan() {
    let ids = first_ids(1000, 1000).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 1000);
    let journal = Arc::new(Journal::default());
    let range = KeyRange {
        after: Some(Key::int(ids[99])),
        before: Some(Key::int(ids[200])),
    };
    let options = RunOptions {
        range,
        ..Default::default()
    };
    let (summary, _) = run_once(
        &config,
        ScriptedMigrator::new(Arc::clone(&journal)),
        options,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.migrated, 100);
    assert!(
        journal
            .migrated_ids()
            .keys()
            .all(|id| (ids[100]..ids[200]).contains(id))
    );
}

#[tokio::test(start_paused = true)]
async fn the_rate_limit_holds_for_the_whole_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 101);
    config.customer_migration.rate_limit = 50;
    let journal = Arc::new(Journal::default());
    let started = tokio::time::Instant::now();
    let summary = run_plain(&config, ScriptedMigrator::new(journal)).await;
    assert_eq!(summary.migrated, 101);
    // 101 records at 50 per second: the last one starts 2 seconds after the first.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_millis(2500));
}

#[tokio::test(start_paused = true)]
async fn the_event_stream_tells_the_whole_story() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 50);
    config.customer_migration.processes = 3;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(journal);
    migrator.pace = Duration::from_millis(20);
    let (summary, events) = run_once(
        &config,
        migrator,
        RunOptions::default(),
        CancellationToken::new(),
    )
    .await;
    let added: Vec<(JobId, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::JobAdded { job, prefix } => Some((*job, prefix.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(added.len(), 5, "scanner, summary and three processes");
    assert!(added.iter().any(|(_, p)| p == "Process #1: "));
    assert!(added.iter().any(|(_, p)| p == "Process #3: "));
    let finished = events
        .iter()
        .filter(|e| matches!(e, Event::JobFinished { .. }))
        .count();
    assert_eq!(finished, 5);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::JobText { job, text } if *job == migrate_core::SCANNER_JOB
            && text == "Completed table scan, after 50 customer rows"
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::JobText { text, .. } if text.starts_with("Migrating customer ")
    )));
    assert!(events.iter().any(|e| matches!(
        e,
        Event::JobProgress { job, done: 50, total: Some(50) } if *job == migrate_core::SCANNER_JOB
    )));
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::JobProgress { job, total: Some(50), .. } if *job == migrate_core::SUMMARY_JOB
        )),
        "the summary line's progress knows the total the scanner found"
    );
    assert_eq!(events.last(), Some(&Event::Summary(summary)));
    // Events serialize for the JSON-lines log.
    let line = serde_json::to_string(&events[0]).unwrap();
    assert!(line.starts_with("{\"event\":\"job-added\""), "{line}");
}

#[tokio::test]
async fn stopping_a_system_twice_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 10);
    let (system, _) = system(&config, ScriptedMigrator::new(Arc::new(Journal::default())));
    system.start().await.unwrap();
    assert!(matches!(
        system.start().await,
        Err(migrate_core::LifecycleError::AlreadyStarted)
    ));
    system.stop().await.unwrap();
    system.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_sharing_the_channel_fill_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 0);
    config.customer_migration.processes = 20;
    // Real threads and real time: a linger far longer than a batch's five pages take, so that
    // a busy machine does not cut batches short.
    config.customer_migration.batch_linger_millis = 1000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 50;
    // Pages of 10 ids that take a millisecond each: the channel never holds a whole batch.
    let mut scanner = CountingScanner::new((1..=5000).collect(), 10, 100, &journal);
    scanner.page_delay = Duration::from_millis(1);
    let summary = run_with_scanner(
        &config,
        migrator,
        &Arc::new(scanner),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.migrated, 5000);
    let batches = journal.batches.lock().unwrap().clone();
    let full = batches.iter().filter(|b| b.len() == 50).count();
    // A job holding part of a batch waits for the rest (batch-linger-millis) instead of
    // migrating the few ids each page brings.
    assert!(
        full >= batches.len() - 2,
        "{full} of {} batches full",
        batches.len()
    );
    // Jobs fill their batches in turn: each batch holds ids that follow each other in scan
    // order (what lets a declared migration update a batch as one range of the table).
    for batch in &batches {
        assert!(
            batch.windows(2).all(|pair| pair[1] == pair[0] + 1),
            "a batch of ids not in a row: {batch:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_the_scanner_hangs_in_a_query_ends_within_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 0);
    config.customer_migration.processes = 4;
    config.customer_migration.grace_period_millis = 2000;
    let journal = Arc::new(Journal::default());
    let shutdown = CancellationToken::new();
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.stop = Some((30, shutdown.clone()));
    // Three pages of ten arrive, then the next query never returns.
    let mut scanner = CountingScanner::new((1..=1000).collect(), 10, 5, &journal);
    scanner.hang_after_pages = 3;
    let started = tokio::time::Instant::now();
    let summary = run_with_scanner(&config, migrator, &Arc::new(scanner), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    assert_eq!(summary.migrated, 30);
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A run over given ids (`-f`) keeps its own checkpoint: a full scan after it interrupted
/// must not resume from the file's low-water mark.
#[tokio::test(start_paused = true)]
async fn a_full_scan_after_an_interrupted_file_run_migrates_every_record() {
    let customers = 600;
    let all = first_ids(customers, customers as usize).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), customers);
    let journal = Arc::new(Journal::default());
    let shutdown = CancellationToken::new();
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.stop = Some((20, shutdown.clone()));
    let file_ids: Vec<i64> = all[400..500].to_vec();
    let options = RunOptions {
        input: Some(keys(&file_ids)),
        ..Default::default()
    };
    let (summary, _) = run_once(&config, migrator, options, shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);

    let summary = run_plain(&config, ScriptedMigrator::new(Arc::clone(&journal))).await;
    assert_eq!(summary.ending, Ending::Completed);
    let migrated = journal.migrated_ids();
    let missing: Vec<i64> = all
        .iter()
        .copied()
        .filter(|id| !migrated.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} records never migrated",
        missing.len()
    );
}

/// The reverse: a file run that completes leaves an interrupted full scan's checkpoint alone.
#[tokio::test(start_paused = true)]
async fn a_file_run_leaves_the_checkpoint_of_an_interrupted_full_scan() {
    let customers = 600;
    let all = first_ids(customers, customers as usize).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), customers);
    let journal = Arc::new(Journal::default());
    let shutdown = CancellationToken::new();
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.stop = Some((200, shutdown.clone()));
    let (summary, _) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    let first_run = summary.migrated;

    let options = RunOptions {
        input: Some(keys(&all[10..20])),
        ..Default::default()
    };
    let (summary, _) = run_once(
        &config,
        ScriptedMigrator::new(Arc::clone(&journal)),
        options,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(summary.ending, Ending::Completed);

    // The full scan resumes where it stopped: it does not start over.
    let summary = run_plain(&config, ScriptedMigrator::new(Arc::clone(&journal))).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(summary.migrated, customers - first_run);
}

/// One record retrying slowly holds the low-water mark back: the scanner stops at
/// `max-pending` records past it instead of filling memory and the checkpoint with the rest of
/// the table.
#[tokio::test(start_paused = true)]
async fn a_slow_record_bounds_how_far_the_scan_runs_ahead_of_the_checkpoint() {
    let customers = 5000;
    let ids = first_ids(customers, 1).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), customers);
    config.customer_migration.processes = 4;
    config.customer_migration.max_pending = 200;
    config.customer_migration.retry_initial_delay_millis = 30_000;
    config.customer_migration.retry_max_delay_millis = 60_000;
    config.customer_scanner.fetch_size = 50;
    config.customer_scanner.block_size = 10;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.script = HashMap::from([(ids[0], Behaviour::FlakyTimes(2))]);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
    });
    let (summary, _) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    let state = std::fs::read_to_string(dir.path().join("paging-state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let done_above = state["customer-migration/all"]["done_above"]
        .as_array()
        .unwrap()
        .len();
    assert!(
        done_above <= 200 + 50,
        "{done_above} records finished above the stuck one are kept"
    );
    assert!(journal.received_count() <= 250 + 4);
    // The next run migrates the slow record and everything after it.
    let summary = run_plain(&config, ScriptedMigrator::new(Arc::clone(&journal))).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!(journal.migrated_ids().len() as u64, customers);
}

/// A stop while one record of a committed batch waits to be retried: the rest of the batch was
/// committed, so it is counted and marked done, and the next run migrates only that record.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_retry_counts_the_rest_of_the_committed_batch() {
    let ids = first_ids(400, 400).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 400);
    config.customer_migration.processes = 2;
    config.customer_migration.retry_initial_delay_millis = 30_000;
    config.customer_migration.retry_max_delay_millis = 60_000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 20;
    migrator.script = HashMap::from([(ids[5], Behaviour::FlakyTimes(1))]);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.cancel();
    });
    let (summary, _) = run_once(&config, migrator, RunOptions::default(), shutdown).await;
    assert_eq!(summary.ending, Ending::Interrupted);
    assert_eq!(
        summary.migrated,
        journal.migrated_ids().len() as u64,
        "every committed record is counted"
    );
    let summary = run_plain(&config, ScriptedMigrator::new(Arc::clone(&journal))).await;
    assert_eq!(summary.ending, Ending::Completed);
    let migrated = journal.migrated_ids();
    assert_eq!(migrated.len(), 400);
    let twice: Vec<_> = migrated.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "migrated twice: {twice:?}");
}
