//! Live control of a run (pause, resume, stop, rate limit, processes) and the adaptive batch
//! size, on the simulated backend with a scripted migrator. Time runs on tokio's paused clock.

use std::sync::Arc;
use std::time::Duration;

use migrate_core::{Ending, Event, FLOW_JOB, RunControl, RunOptions, Setting, Summary, overseer};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::support::{Journal, ScriptedMigrator, config, system};

/// A run started in the background, steered by `control`; the board's events come with it.
fn start(
    config: &migrate_core::Config,
    migrator: ScriptedMigrator,
    control: &RunControl,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<(Summary, Vec<Event>)> {
    let (system, board) = system(config, migrator);
    let options = RunOptions {
        control: control.clone(),
        ..RunOptions::default()
    };
    tokio::spawn(async move {
        system.start().await.unwrap();
        let summary = overseer(&system).run(options, shutdown).await.unwrap();
        system.stop().await.unwrap();
        (summary, board.events())
    })
}

/// Waits (on the paused clock) until the migrator received `n` ids.
async fn until_received(journal: &Journal, n: usize) {
    while journal.received_count() < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn batches(journal: &Journal) -> usize {
    journal.batches.lock().unwrap().len()
}

fn texts(events: &[Event], job: migrate_core::JobId) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JobText { job: j, text } if *j == job => Some(text.clone()),
            _ => None,
        })
        .collect()
}

fn all_migrated_once(journal: &Journal, n: i64) {
    let migrated = journal.migrated_ids();
    assert_eq!(migrated.len() as i64, n);
    assert!(migrated.values().all(|&times| times == 1), "{migrated:?}");
}

#[tokio::test(start_paused = true)]
async fn a_paused_run_starts_no_batch_and_completes_once_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 400);
    config.customer_migration.processes = 2;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(10);
    migrator.batch_size = 10;
    let control = RunControl::default();
    let run = start(&config, migrator, &control, CancellationToken::new());
    until_received(&journal, 40).await;
    control.pause("the test");
    // The batches under way (10 records of 10 ms) finish; then nothing starts.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let held = batches(&journal);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(batches(&journal), held, "no batch starts while paused");
    assert!(held < 40, "{held}");
    control.resume("the test");
    let (summary, events) = run.await.unwrap();
    assert_eq!(summary.ending, Ending::Completed, "{summary:?}");
    assert_eq!(summary.migrated, 400);
    all_migrated_once(&journal, 400);
    assert!(
        (10.0..10.5).contains(&summary.paused_seconds),
        "{}",
        summary.paused_seconds
    );
    let flow = texts(&events, FLOW_JOB);
    assert_eq!(flow, ["Paused by the test", "Resumed by the test"]);
    let jobs_paused = events
        .iter()
        .any(|e| matches!(e, Event::JobText { text, .. } if text == "Paused (by the test)"));
    assert!(jobs_paused, "the jobs say they are paused");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Flow(s) if s.paused_by.as_deref() == Some("the test")))
    );
}

#[tokio::test(start_paused = true)]
async fn a_paused_run_ends_promptly_on_ctrl_c_and_resumes_later() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 300);
    config.customer_migration.processes = 3;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(10);
    migrator.batch_size = 5;
    let control = RunControl::default();
    let shutdown = CancellationToken::new();
    let run = start(&config, migrator, &control, shutdown.clone());
    until_received(&journal, 30).await;
    control.pause("the test");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cancelled = Instant::now();
    shutdown.cancel();
    let (summary, _) = run.await.unwrap();
    // Well inside the 10-second grace period: nothing was under way.
    assert!(
        cancelled.elapsed() < Duration::from_millis(100),
        "{:?}",
        cancelled.elapsed()
    );
    assert_eq!(summary.ending, Ending::Interrupted);
    assert!(summary.migrated < 300);

    // The next run, not paused, finishes the rest without doing anything twice.
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 5;
    let rest = start(
        &config,
        migrator,
        &RunControl::default(),
        CancellationToken::new(),
    );
    let (second, _) = rest.await.unwrap();
    assert_eq!(second.ending, Ending::Completed);
    assert_eq!(summary.migrated + second.migrated, 300);
    all_migrated_once(&journal, 300);
}

#[tokio::test(start_paused = true)]
async fn stop_ends_the_run_as_ctrl_c_does_with_a_checkpoint_to_resume_from() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 500);
    config.customer_migration.processes = 2;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(10);
    migrator.batch_size = 10;
    let control = RunControl::default();
    let run = start(&config, migrator, &control, CancellationToken::new());
    until_received(&journal, 100).await;
    control.stop("the test");
    let (summary, events) = run.await.unwrap();
    assert_eq!(summary.ending, Ending::Interrupted, "{summary:?}");
    assert!(
        summary
            .to_string()
            .ends_with("; interrupted, progress saved")
    );
    assert!((100..500).contains(&summary.migrated), "{summary:?}");
    assert_eq!(texts(&events, FLOW_JOB), ["Stopping (asked by the test)"]);

    let migrator = ScriptedMigrator::new(Arc::clone(&journal));
    let rest = start(
        &config,
        migrator,
        &RunControl::default(),
        CancellationToken::new(),
    );
    let (second, _) = rest.await.unwrap();
    assert_eq!(second.ending, Ending::Completed);
    assert_eq!(summary.migrated + second.migrated, 500);
    all_migrated_once(&journal, 500);
}

/// Prefixes of the job lines added so far, and how many of them retired.
fn job_lines(events: &[Event]) -> (usize, usize) {
    let added = events
        .iter()
        .filter(|e| matches!(e, Event::JobAdded { prefix, .. } if prefix.starts_with("Process")))
        .count();
    let retired = events
        .iter()
        .filter(|e| matches!(e, Event::JobText { text, .. } if text.starts_with("Retired")))
        .count();
    (added, retired)
}

#[tokio::test(start_paused = true)]
async fn processes_grow_and_shrink_while_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 6000);
    config.customer_migration.processes = 2;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.pace = Duration::from_millis(5);
    migrator.batch_size = 10;
    let control = RunControl::default();
    let run = start(&config, migrator, &control, CancellationToken::new());
    // Two jobs: a batch of 50 ms each, 40 batches a second.
    until_received(&journal, 100).await;
    let from = batches(&journal);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let two = batches(&journal) - from;
    control.set(Setting::Processes(5), "the test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = batches(&journal);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let five = batches(&journal) - from;
    control.set(Setting::Processes(1), "the test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from = batches(&journal);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let one = batches(&journal) - from;
    let (summary, events) = run.await.unwrap();
    assert!((38..=41).contains(&two), "two jobs: {two} batches a second");
    assert!(
        (95..=101).contains(&five),
        "five jobs: {five} batches a second"
    );
    assert!((19..=21).contains(&one), "one job: {one} batches a second");
    assert_eq!(summary.ending, Ending::Completed);
    all_migrated_once(&journal, 6000);
    assert_eq!(
        job_lines(&events),
        (5, 4),
        "five lines, four of them retired"
    );
    assert_eq!(
        texts(&events, FLOW_JOB),
        [
            "5 processes (set by the test)",
            "1 processes (set by the test)"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_set_while_running_takes_effect_from_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 5000);
    config.customer_migration.processes = 2;
    config.customer_migration.rate_limit = 100;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 10;
    let control = RunControl::default();
    let run = start(&config, migrator, &control, CancellationToken::new());
    until_received(&journal, 50).await;
    let from = journal.received_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let slow = journal.received_count() - from;
    control.set(Setting::RateLimit(1000), "the test");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let from = journal.received_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fast = journal.received_count() - from;
    let lifted = Instant::now();
    control.set(Setting::RateLimit(0), "the test");
    let (summary, events) = run.await.unwrap();
    assert!((180..=220).contains(&slow), "at 100/s: {slow} in 2 s");
    assert!((1900..=2100).contains(&fast), "at 1000/s: {fast} in 2 s");
    assert!(
        lifted.elapsed() < Duration::from_millis(100),
        "no limit at the end"
    );
    assert_eq!(summary.migrated, 5000);
    assert_eq!(
        texts(&events, FLOW_JOB),
        [
            "Rate limit 1,000/s (set by the test)",
            "No rate limit (set by the test)"
        ]
    );
}

/// The sizes of the batches the migrator received, in order.
fn sizes(journal: &Journal) -> Vec<usize> {
    journal
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(Vec::len)
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_batch_size_converges_on_the_target_and_follows_a_slowdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 12_000);
    config.customer_migration.processes = 1;
    config.customer_migration.batch_target_millis = 200;
    config.customer_migration.batch_size_min = 5;
    config.customer_migration.batch_size_max = 5000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.adaptive = true;
    migrator.batch_size = 10;
    // 1 ms a record: 200 records make the target; from the 6,000th, 4 ms: 50 do.
    migrator.pace = Duration::from_millis(1);
    migrator.slow_down = Some((6000, Duration::from_millis(4)));
    let control = RunControl::default();
    let (summary, events) = start(&config, migrator, &control, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.ending, Ending::Completed);
    all_migrated_once(&journal, 12_000);
    let sizes = sizes(&journal);
    // Doubling from 10: 20, 40, 80, 160, then 200.
    assert_eq!(&sizes[..6], [10, 20, 40, 80, 160, 200], "{sizes:?}");
    // 200 until the slowdown; the first slow batch (800 ms) sizes the next from its own time
    // at once.
    let shrunk = 5 + sizes[5..].iter().position(|&s| s < 200).unwrap();
    assert!(sizes[5..shrunk].iter().all(|&s| s == 200), "{sizes:?}");
    assert!(sizes[..shrunk].iter().sum::<usize>() >= 6000, "{sizes:?}");
    assert_eq!(sizes[shrunk], 50, "{sizes:?}");
    // The average catches up in a few batches, none over 1.6 times the target, then it holds.
    let slow = &sizes[shrunk..sizes.len() - 1];
    assert!(slow.iter().all(|&s| (50..=80).contains(&s)), "{sizes:?}");
    assert!(slow[20..].iter().all(|&s| s == 50), "{sizes:?}");
    assert_eq!(summary.batch_size, Some(50));
    let progress = texts(&events, migrate_core::SUMMARY_JOB);
    assert!(
        progress
            .iter()
            .any(|t| t.contains("batch 200 (adaptive), last 0.20 s")),
        "{progress:?}"
    );
}

/// The time a batch waited before it began (for a writer lock, a connection), reported with
/// `report_wait`, is not the batch's: the size follows the batch's own time only.
#[tokio::test(start_paused = true)]
async fn waits_before_a_batch_begins_do_not_shrink_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 3000);
    config.customer_migration.processes = 1;
    config.customer_migration.batch_target_millis = 200;
    config.customer_migration.batch_size_min = 5;
    config.customer_migration.batch_size_max = 5000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.adaptive = true;
    migrator.batch_size = 10;
    migrator.pace = Duration::from_millis(1);
    // A second in the queue before each batch: counted, it would keep batches at the minimum.
    migrator.queue = Duration::from_secs(1);
    let control = RunControl::default();
    let (summary, _) = start(&config, migrator, &control, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.ending, Ending::Completed);
    all_migrated_once(&journal, 3000);
    let sizes = sizes(&journal);
    assert_eq!(&sizes[..6], [10, 20, 40, 80, 160, 200], "{sizes:?}");
}

/// Adapting never widens the tracker's window beyond `max-pending`: the size stops at
/// `max-pending / (2 × processes)` however cheap the batches are.
#[tokio::test(start_paused = true)]
async fn the_adaptive_size_keeps_every_jobs_batches_within_max_pending() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 20_000);
    config.customer_migration.processes = 4;
    config.customer_migration.max_pending = 1000;
    config.customer_migration.batch_target_millis = 200;
    config.customer_migration.batch_size_min = 5;
    config.customer_migration.batch_size_max = 10_000;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.adaptive = true;
    migrator.batch_size = 10;
    // Cheap records: the target alone would take the size to its maximum.
    migrator.pace = Duration::from_micros(10);
    let control = RunControl::default();
    let (summary, _) = start(&config, migrator, &control, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.ending, Ending::Completed);
    all_migrated_once(&journal, 20_000);
    let sizes = sizes(&journal);
    let largest = sizes.iter().copied().max().unwrap();
    assert_eq!(largest, 125, "1000 / (2 × 4); sizes: {sizes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_batch_size_set_while_running_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 3000);
    config.customer_migration.processes = 1;
    config.customer_migration.batch_target_millis = 100;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.adaptive = true;
    migrator.batch_size = 100;
    migrator.pace = Duration::from_millis(1);
    let control = RunControl::default();
    let run = start(&config, migrator, &control, CancellationToken::new());
    until_received(&journal, 1000).await;
    control.set(Setting::BatchSize(7), "the test");
    let (summary, _) = run.await.unwrap();
    let sizes = sizes(&journal);
    // Every batch after the change holds 7 (the last one what was left).
    let tail = &sizes[sizes.len() - 100..sizes.len() - 1];
    assert!(tail.iter().all(|&s| s == 7), "{sizes:?}");
    assert_eq!(summary.batch_size, Some(7));
    all_migrated_once(&journal, 3000);
}
