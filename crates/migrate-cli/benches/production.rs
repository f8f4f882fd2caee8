//! The migration next to a busy application, on PostgreSQL.
//!
//! `pgbench` plays the application: 4 clients at a fixed 500 transactions per second, each
//! transaction `UPDATE customers SET email = email WHERE id = <random>`, a write that takes the
//! row's lock as the migration's batches do. Each round seeds a million customers with
//! `db-migrate seed` into a fresh database, then, on a fresh copy of it per measure (the order
//! rotating from round to round), measures the application's latency from pgbench's
//! per-transaction log:
//!
//! - `none`: no migration, over a fixed window;
//! - `adaptive`: while the release `db-migrate` migrates the table with the built-in defaults
//!   (adaptive batches);
//! - `fixed`: the same with `customer-migrator.batch-size=10000` (a fixed size, adaptation off);
//! - any `--try "LABEL KEY=VALUE ..."`: the same with those overrides.
//!
//! and the migration's own throughput (rows of the table per second, from its `--json`
//! summary). It prints every round, the medians and the ratios the target is stated in: the
//! application's p99 with the adaptive default over its p99 with no migration (target: at most
//! 2), and the adaptive throughput over the fixed batch's (target: at least 0.5).
//!
//! ```console
//! $ export DB_MIGRATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5433/db_migrate_test
//! $ cargo bench -p migrate-cli --bench production -- --rounds 3
//! $ cargo bench -p migrate-cli --bench production -- --only none,adaptive \
//!       --try "target-100 customer-migration.batch-target-millis=100"
//! ```
//!
//! Options: `--rows N`, `--rounds R`, `--window SECONDS` (of `none`), `--warmup SECONDS`
//! (load before each measure starts), `--rate TPS`, `--clients C`, `--threads J`, `--try`
//! (repeatable), `--only LABEL,LABEL`. `PGBENCH` names the pgbench executable (default: the
//! one on `PATH`). It uses the databases `db_migrate_bench_load_seed` and
//! `db_migrate_bench_load` on the server and drops them at the end. It skips, saying why,
//! without `DB_MIGRATE_TEST_POSTGRES_URL` or pgbench. A benchmark, not a test: CI does not run
//! it.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

#[path = "production/load.rs"]
mod load;
#[path = "production/server.rs"]
mod server;

use std::path::PathBuf;
use std::time::Duration;

use load::{Latencies, Load, LoadSettings, epoch_micros};
use server::{RunSummary, Server};

/// One thing measured: the load alone, or the load while a migration runs with `overrides`.
#[derive(Debug, Clone)]
struct Measure {
    label: String,
    /// `None`: no migration.
    overrides: Option<Vec<String>>,
}

#[derive(Debug)]
struct Options {
    rows: u64,
    rounds: usize,
    window: Duration,
    warmup: Duration,
    load: LoadSettings,
    measures: Vec<Measure>,
}

fn options(pgbench: PathBuf) -> Options {
    let mut options = Options {
        rows: 1_000_000,
        rounds: 3,
        window: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        load: LoadSettings {
            pgbench,
            rate: 500,
            clients: 4,
            threads: 2,
        },
        measures: vec![
            Measure {
                label: "none".to_owned(),
                overrides: None,
            },
            Measure {
                label: "adaptive".to_owned(),
                overrides: Some(Vec::new()),
            },
            Measure {
                label: "fixed".to_owned(),
                overrides: Some(vec!["customer-migrator.batch-size=10000".to_owned()]),
            },
        ],
    };
    let mut only: Option<Vec<String>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value =
            || -> String { args.next().unwrap_or_else(|| panic!("{arg} needs a value")) };
        let number = |v: String| -> u64 {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{arg} needs a number, not {v}"))
        };
        match arg.as_str() {
            "--rows" => options.rows = number(value()),
            "--rounds" => options.rounds = number(value()) as usize,
            "--window" => options.window = Duration::from_secs(number(value())),
            "--warmup" => options.warmup = Duration::from_secs(number(value())),
            "--rate" => options.load.rate = number(value()),
            "--clients" => options.load.clients = number(value()) as u32,
            "--threads" => options.load.threads = number(value()) as u32,
            "--try" => {
                let spec = value();
                let mut words = spec.split_whitespace().map(str::to_owned);
                let label = words.next().expect("--try needs a label");
                options.measures.push(Measure {
                    label,
                    overrides: Some(words.collect()),
                });
            }
            "--only" => only = Some(value().split(',').map(str::to_owned).collect()),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    if let Some(only) = only {
        options.measures.retain(|m| only.contains(&m.label));
    }
    options
}

/// The pgbench to run: `PGBENCH`, or `pgbench` on `PATH`; or why there is none.
fn find_pgbench() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("PGBENCH") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("PGBENCH={} is not a file", path.display()))
        };
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join("pgbench"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "no pgbench on PATH (install postgresql-client, or set PGBENCH to its path)".to_owned()
        })
}

/// What one measure gave in one round.
#[derive(Debug, Clone)]
struct Outcome {
    latencies: Latencies,
    run: Option<RunSummary>,
}

fn main() {
    let Ok(url) = std::env::var("DB_MIGRATE_TEST_POSTGRES_URL") else {
        println!(
            "production benchmark skipped: DB_MIGRATE_TEST_POSTGRES_URL is not set \
             (start a server with .ci/postgres.sh and export it)"
        );
        return;
    };
    let pgbench = match find_pgbench() {
        Ok(pgbench) => pgbench,
        Err(why) => {
            println!("production benchmark skipped: {why}");
            return;
        }
    };
    let options = options(pgbench);
    let server = Server::new(url);
    let dir = tempfile::tempdir().expect("a temporary directory");
    println!(
        "{} rows, {} rounds; load: pgbench {} clients, {} threads, {} tx/s; measures: {}",
        options.rows,
        options.rounds,
        options.load.clients,
        options.load.threads,
        options.load.rate,
        options
            .measures
            .iter()
            .map(|m| m.label.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut results: Vec<Vec<Outcome>> = vec![Vec::new(); options.measures.len()];
    for round in 0..options.rounds {
        println!("round {} (load average {})", round + 1, load_average());
        server.seed(options.rows, dir.path());
        let count = options.measures.len();
        for step in 0..count {
            let index = (round + step) % count;
            let measure = &options.measures[index];
            let outcome = run_measure(&server, &options, measure, round, step, dir.path());
            println!("  {:<12} {}", measure.label, describe(&outcome));
            results[index].push(outcome);
        }
    }
    server.drop_database(server::COPY);
    server.drop_database(server::SEED);
    report(&options, &results);
}

/// One measure on a fresh copy of the seed, with the load running from `warmup` before it.
fn run_measure(
    server: &Server,
    options: &Options,
    measure: &Measure,
    round: usize,
    step: usize,
    dir: &std::path::Path,
) -> Outcome {
    let url = server.copy();
    let work = dir.join(format!("round{round}-{step}"));
    std::fs::create_dir_all(&work).expect("a directory for the measure");
    let load = Load::start(&options.load, &url, options.rows, &work);
    std::thread::sleep(options.warmup);
    let from = epoch_micros();
    let run = match &measure.overrides {
        None => {
            std::thread::sleep(options.window);
            None
        }
        Some(overrides) => Some(server::migrate(&url, overrides, &work)),
    };
    let to = epoch_micros();
    // Lines reach pgbench's log files when its buffers fill: let them catch up.
    std::thread::sleep(Duration::from_secs(2));
    let latencies = load.stop(from, to);
    server.drop_database(server::COPY);
    Outcome { latencies, run }
}

fn describe(outcome: &Outcome) -> String {
    let l = &outcome.latencies;
    let mut text = format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.1} ms (own p99 {:.2} ms), {} tx at {:.0}/s",
        l.total(0.5),
        l.total(0.99),
        l.total(1.0),
        l.own(0.99),
        l.count(),
        l.rate()
    );
    if let Some(run) = &outcome.run {
        text.push_str(&format!(
            "; migration {:.0} rows/s ({} migrated in {:.1} s, {}, last batch {})",
            run.rows_per_second(),
            run.migrated,
            run.seconds,
            run.ending,
            run.batch_size.map_or("?".to_owned(), |b| b.to_string())
        ));
    }
    text
}

/// The first three fields of `/proc/loadavg`, as `uptime` shows them.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| !v.is_nan());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Medians per measure, then the ratios of the target.
fn report(options: &Options, results: &[Vec<Outcome>]) {
    println!();
    println!("medians of {} rounds:", options.rounds);
    println!("| measure | p50 ms | p99 ms | max ms | own p99 ms | app tx/s | migration rows/s |");
    println!("|---|---|---|---|---|---|---|");
    let p99 =
        |outcomes: &[Outcome]| median(outcomes.iter().map(|o| o.latencies.total(0.99)).collect());
    let throughput = |outcomes: &[Outcome]| {
        median(
            outcomes
                .iter()
                .filter_map(|o| o.run.as_ref().map(RunSummary::rows_per_second))
                .collect(),
        )
    };
    for (measure, outcomes) in options.measures.iter().zip(results) {
        let of = |f: &dyn Fn(&Latencies) -> f64| {
            median(outcomes.iter().map(|o| f(&o.latencies)).collect())
        };
        let rows = throughput(outcomes);
        println!(
            "| {} | {:.2} | {:.2} | {:.1} | {:.2} | {:.0} | {} |",
            measure.label,
            of(&|l| l.total(0.5)),
            p99(outcomes),
            of(&|l| l.total(1.0)),
            of(&|l| l.own(0.99)),
            of(&Latencies::rate),
            if rows.is_nan() {
                "-".to_owned()
            } else {
                format!("{rows:.0}")
            }
        );
    }
    let find = |label: &str| {
        options
            .measures
            .iter()
            .position(|m| m.label == label)
            .map(|i| &results[i][..])
    };
    let none_rounds = find("none");
    let none = none_rounds.map(p99);
    let fixed = find("fixed").map(throughput);
    println!();
    for (measure, outcomes) in options.measures.iter().zip(results) {
        if measure.overrides.is_none() {
            continue;
        }
        let mut line = format!("{}:", measure.label);
        if let Some(none) = none {
            line.push_str(&format!(
                " p99 / p99 none = {:.2} (target <= 2)",
                p99(outcomes) / none
            ));
        }
        if let Some(none_rounds) = none_rounds {
            // Each round against the baseline of the same round, which saw the same machine.
            let per_round = median(
                outcomes
                    .iter()
                    .zip(none_rounds)
                    .map(|(o, n)| o.latencies.total(0.99) / n.latencies.total(0.99))
                    .collect(),
            );
            line.push_str(&format!(" (median of the rounds' ratios {per_round:.2})"));
        }
        if let Some(fixed) = fixed {
            line.push_str(&format!(
                "; rows/s / rows/s fixed = {:.2} (target >= 0.5)",
                throughput(outcomes) / fixed
            ));
        }
        if !measure.overrides.as_ref().is_some_and(Vec::is_empty) {
            line.push_str(&format!(
                "  [{}]",
                measure.overrides.as_deref().unwrap_or_default().join(" ")
            ));
        }
        println!("{line}");
    }
}
