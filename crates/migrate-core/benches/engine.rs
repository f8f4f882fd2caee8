//! The engine against a bare tokio pipeline doing the same work, in one process.
//!
//! All sides read the simulated backend's ids in pages, pass them through a bounded channel of
//! `block-size` to 20 worker tasks, and call the same migrator component (the simulated backend
//! at sleep scale 0, with its audit log). The baseline shares tokio's `mpsc` receiver behind a
//! mutex, as one writes it by hand; the second baseline uses the engine's own multi-consumer
//! channel, so the difference from it is what the engine adds: checkpoint tracking, retries,
//! counting, events. Rounds rotate which side goes first to spread the machine's noise;
//! medians and their ratios are printed, then the peak memory of the engine at 100 thousand and at 10
//! million records, and again with one record stuck in slow retries at the start of the table
//! (with the largest checkpoint saved meanwhile).
//!
//! `cargo bench -p migrate-core --bench engine` (`-- --records N --rounds R` to change sizes).

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use migrate_core::{
    Backend, BatchError, BoxError, Config, EventBoard, Key, KeyColumn, Migration, Migrator, Noun,
    Outcome, RecordFailure, RunOptions, SimulatedCustomers, StatusBoard, builder_for,
    migration_builder, overseer,
};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

const PROCESSES: usize = 20;

fn config(dir: &std::path::Path, records: u64) -> Config {
    let mut config = Config::default();
    config.connection.simulated_customers = records;
    config.customer_migrator.sleep_scale = 0.0;
    config.customer_migrator.log_file = dir.join("migration.log");
    config.customer_scanner.paging_state_path = dir.join("paging-state.json");
    config.customer_migration.processes = PROCESSES;
    config
}

/// The engine: the full system, board discarded. Returns records per second.
async fn engine(records: u64) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), records);
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let system = migration_builder(&config, Backend::Simulated { customers: records })
        .with_override::<dyn StatusBoard>(board, "EventBoard")
        .build()
        .unwrap();
    system.start().await.unwrap();
    let started = Instant::now();
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await
        .unwrap();
    let elapsed = started.elapsed();
    system.stop().await.unwrap();
    assert_eq!(summary.scanned, records);
    records as f64 / elapsed.as_secs_f64()
}

/// How the baseline's workers share the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// tokio's bounded `mpsc`, its receiver behind a tokio mutex: what one writes by hand.
    Mutex,
    /// `flume`'s bounded multi-consumer channel, each worker receiving on its own handle: the
    /// channel the engine uses.
    Mpmc,
}

/// The baseline: a bounded channel and 20 worker tasks calling the same migrator.
async fn baseline(records: u64, channel: Channel) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), records);
    let system = migration_builder(&config, Backend::Simulated { customers: records })
        .build()
        .unwrap();
    system.start().await.unwrap();
    let migrator = system.resolve::<dyn Migrator>();
    let batch = migrator.batch_size();
    let started = Instant::now();
    let block = config.customer_scanner.block_size;
    let (sender, receiver) = mpsc::channel::<Key>(block);
    let receiver = Arc::new(Mutex::new(receiver));
    let (mpmc_sender, mpmc_receiver) = flume::bounded::<Key>(block);
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let fetch = config.customer_scanner.fetch_size;
    let producer = tokio::spawn(async move {
        let source = SimulatedCustomers::new(records, Default::default());
        let mut after: Option<Key> = None;
        loop {
            let page = source.page(after.as_ref(), None, fetch).await.unwrap();
            let Some(last) = page.last().cloned() else {
                break;
            };
            for key in page {
                match channel {
                    Channel::Mutex => sender.send(key).await.unwrap(),
                    Channel::Mpmc => mpmc_sender.send_async(key).await.unwrap(),
                }
            }
            after = Some(last);
        }
    });
    let mut workers = Vec::new();
    for _ in 0..PROCESSES {
        let (receiver, mpmc, counts, migrator) = (
            Arc::clone(&receiver),
            mpmc_receiver.clone(),
            Arc::clone(&counts),
            Arc::clone(&migrator),
        );
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(batch);
            loop {
                ids.clear();
                let taken = match channel {
                    Channel::Mutex => receiver.lock().await.recv_many(&mut ids, batch).await,
                    Channel::Mpmc => match mpmc.recv_async().await {
                        Ok(first) => {
                            ids.push(first);
                            ids.extend(mpmc.try_iter().take(batch - 1));
                            ids.len()
                        }
                        Err(_) => 0,
                    },
                };
                if taken == 0 {
                    break;
                }
                for outcome in migrator.migrate(&ids, false).await.unwrap() {
                    let slot = match outcome {
                        Outcome::Migrated => 0,
                        Outcome::PreviouslyMigrated | Outcome::Gone => 1,
                        Outcome::Failed(_) => 2,
                    };
                    counts[slot].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    producer.await.unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    let elapsed = started.elapsed();
    system.stop().await.unwrap();
    let handled: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(handled, records);
    records as f64 / elapsed.as_secs_f64()
}

/// The simulated customers, but the first record fails twice before it migrates, with the
/// retry delay of the run between attempts: the low-water mark stays behind it for seconds
/// while the other jobs race on.
#[derive(Debug)]
struct StuckFirst {
    inner: SimulatedCustomers,
    stuck: Key,
    attempts: AtomicU64,
}

#[async_trait]
impl Migration for StuckFirst {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn noun(&self) -> &Noun {
        self.inner.noun()
    }

    fn key_columns(&self) -> &[KeyColumn] {
        self.inner.key_columns()
    }

    async fn page(
        &self,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        self.inner.page(after, before, limit).await
    }

    async fn migrate(&self, keys: &[Key], _: bool) -> Result<Vec<Outcome>, BatchError> {
        Ok(keys
            .iter()
            .map(|key| {
                if *key == self.stuck && self.attempts.fetch_add(1, Ordering::Relaxed) < 2 {
                    Outcome::Failed(RecordFailure::transient("stuck"))
                } else {
                    Outcome::Migrated
                }
            })
            .collect())
    }

    fn default_batch_size(&self) -> usize {
        1
    }
}

/// The engine over `records` with the first record stuck for seconds; returns the largest
/// checkpoint file seen, in bytes.
async fn engine_with_a_stuck_record(records: u64) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), records);
    config.customer_migration.retry_initial_delay_millis = 2000;
    config.customer_migration.retry_max_delay_millis = 4000;
    let inner = SimulatedCustomers::new(records, config.customer_migrator.clone());
    let stuck = inner.page(None, None, 1).await.unwrap().remove(0);
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let migration = Arc::new(StuckFirst {
        inner,
        stuck,
        attempts: AtomicU64::new(0),
    });
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let system = builder_for(
        &config,
        Backend::Simulated { customers: records },
        writer,
        migration,
    )
    .with_override::<dyn StatusBoard>(board, "EventBoard")
    .build()
    .unwrap();
    system.start().await.unwrap();
    let path = config.customer_scanner.paging_state_path.clone();
    let largest = Arc::new(AtomicU64::new(0));
    let watcher = {
        let largest = Arc::clone(&largest);
        tokio::spawn(async move {
            loop {
                if let Ok(meta) = std::fs::metadata(&path) {
                    largest.fetch_max(meta.len(), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await
        .unwrap();
    watcher.abort();
    system.stop().await.unwrap();
    assert_eq!(summary.migrated, records);
    largest.load(Ordering::Relaxed)
}

/// Peak resident memory since the last reset, in MiB (Linux), and a reset for the next phase.
fn peak_mib_and_reset() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    // Writing 5 resets the peak to the current size.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    Some(kib / 1024.0)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let records = arg("--records", 1_000_000);
    let rounds = arg("--rounds", 5) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--only engine` (or `baseline`, `mpmc`): that side alone, for a profiler.
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .map(|side| side.to_lowercase());
    if let Some(side) = only {
        runtime.block_on(async {
            for round in 1..=rounds {
                let rate = match side.as_str() {
                    "engine" => engine(records).await,
                    "baseline" => baseline(records, Channel::Mutex).await,
                    "mpmc" => baseline(records, Channel::Mpmc).await,
                    other => panic!("--only engine, baseline or mpmc, not {other}"),
                };
                println!("round {round}: {side} {rate:>10.0} records/s");
            }
        });
        return;
    }
    println!("engine vs bare tokio baseline: {records} records, {PROCESSES} jobs, sleep scale 0");
    runtime.block_on(async {
        // Warm-up: page cache, allocator, thread pool.
        engine(records / 10).await;
        baseline(records / 10, Channel::Mutex).await;
        baseline(records / 10, Channel::Mpmc).await;
        let (mut engine_rates, mut baseline_rates, mut mpmc_rates) =
            (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // Each side goes first in turn.
            let (mut e, mut b, mut m) = (0.0, 0.0, 0.0);
            for side in 0..3 {
                match (round + side) % 3 {
                    0 => e = engine(records).await,
                    1 => b = baseline(records, Channel::Mutex).await,
                    _ => m = baseline(records, Channel::Mpmc).await,
                }
            }
            println!(
                "round {}: engine {e:>10.0} records/s, baseline {b:>10.0} records/s ({:.3}), \
                 mpmc baseline {m:>10.0} records/s ({:.3})",
                round + 1,
                e / b,
                e / m
            );
            engine_rates.push(e);
            baseline_rates.push(b);
            mpmc_rates.push(m);
        }
        let (e, b, m) = (
            median(&mut engine_rates),
            median(&mut baseline_rates),
            median(&mut mpmc_rates),
        );
        println!(
            "median: engine {e:.0} records/s, baseline {b:.0} records/s, mpmc baseline {m:.0} \
             records/s"
        );
        println!("ratio engine/baseline: {:.3} (target >= 0.9)", e / b);
        println!(
            "ratio engine/mpmc baseline: {:.3} (what the engine's bookkeeping costs)",
            e / m
        );

        let _ = peak_mib_and_reset();
        tokio::time::sleep(Duration::from_millis(10)).await;
        for size in [100_000u64, 10_000_000] {
            let _ = peak_mib_and_reset();
            let rate = engine(size).await;
            match peak_mib_and_reset() {
                Some(peak) => println!(
                    "peak memory, engine over {size:>10} records: {peak:.1} MiB ({rate:.0} records/s)"
                ),
                None => println!("peak memory: not available on this system"),
            }
        }
        for size in [100_000u64, 10_000_000] {
            let _ = peak_mib_and_reset();
            let checkpoint = engine_with_a_stuck_record(size).await;
            let peak = peak_mib_and_reset().map_or("n/a".to_owned(), |p| format!("{p:.1} MiB"));
            println!(
                "one record stuck for seconds, {size:>10} records: peak memory {peak}, largest \
                 checkpoint {:.1} KiB",
                checkpoint as f64 / 1024.0
            );
        }
    });
}
