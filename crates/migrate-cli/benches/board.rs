//! What the live status board costs a run: the engine at sleep scale 0 over a million simulated
//! records, with the console board drawing into a sink, against the same run with the board off.
//! Both runs feed the same `TerminalBoard` queue; only the renderer differs. Rounds alternate
//! which mode goes first so that warm-up and machine noise fall on both.
//!
//! `cargo bench -p migrate-cli --bench board` (`BOARD_BENCH_RECORDS`, `BOARD_BENCH_ROUNDS` change
//! the size).

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use migrate_cli::board::{self, ConsoleTarget, Output};
use migrate_core::{Config, RunOptions, StatusBoard, build_migration_system};
use tokio_util::sync::CancellationToken;

/// A terminal that discards what it is sent, counting frames and bytes.
#[derive(Debug, Clone, Default)]
struct Sink {
    frames: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Write for Sink {
    fn write(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
        Ok(frame.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Console,
    Off,
}

struct Measure {
    records_per_second: f64,
    frames: u64,
    bytes: u64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

async fn run(records: u64, mode: Mode) -> Measure {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = Config::default();
    config.connection.simulated_customers = records;
    config.customer_migrator.sleep_scale = 0.0;
    config.customer_migrator.log_file = dir.path().join("migration.log");
    config.customer_scanner.paging_state_path = dir.path().join("paging-state.json");
    let sink = Sink::default();
    let (terminal_board, task) = match mode {
        Mode::Console => board::start_console(
            &config.status_board,
            ConsoleTarget {
                out: sink.clone(),
                size: || (120, 40),
                color: true,
                control: None,
            },
        ),
        Mode::Off => board::start(&config.status_board, Output::Off, None),
    };
    let status_board: Box<dyn StatusBoard> = Box::new(terminal_board);
    let system = build_migration_system(&config, Some((status_board, board::IMPLEMENTATION)))
        .await
        .expect("the system builds");
    system.start().await.expect("the system starts");
    let started = Instant::now();
    let summary = migrate_core::overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await
        .expect("the run starts");
    system.stop().await.expect("the system stops");
    drop(system);
    task.finish().await;
    let elapsed = started.elapsed();
    let handled = summary.migrated + summary.previously_migrated + summary.failed;
    assert_eq!(handled, records, "every record handled");
    Measure {
        records_per_second: handled as f64 / elapsed.as_secs_f64().max(1e-9),
        frames: sink.frames.load(Ordering::Relaxed),
        bytes: sink.bytes.load(Ordering::Relaxed),
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn main() {
    let records = env_number("BOARD_BENCH_RECORDS", 1_000_000);
    let rounds = env_number("BOARD_BENCH_ROUNDS", 5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("status board cost: {records} simulated records, sleep scale 0, {rounds} rounds");
    let (mut console, mut off) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [Mode::Console, Mode::Off]
        } else {
            [Mode::Off, Mode::Console]
        };
        for mode in order {
            let measure = runtime.block_on(run(records, mode));
            match mode {
                Mode::Console => {
                    println!(
                        "  round {}: console {:>10.0} records/s  ({} frames, {} bytes)",
                        round + 1,
                        measure.records_per_second,
                        measure.frames,
                        measure.bytes
                    );
                    console.push(measure.records_per_second);
                }
                Mode::Off => {
                    println!(
                        "  round {}: off     {:>10.0} records/s",
                        round + 1,
                        measure.records_per_second
                    );
                    off.push(measure.records_per_second);
                }
            }
            // Let the previous run's files and tasks settle before the next one.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let (console, off) = (median(&mut console), median(&mut off));
    println!("median: console {console:.0} records/s, off {off:.0} records/s");
    println!(
        "ratio off/console: {:.3} (the board costs {:.1}%; target under 1.05)",
        off / console,
        (off / console - 1.0) * 100.0
    );
}
