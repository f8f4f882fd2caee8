//! Migrations on a real database against their physical limit and the loop a user would write,
//! in one process.
//!
//! Seeds the demo `customers` table (1 million rows by default) and its `orders` (grown to as
//! many rows as `customers` unless `--orders N` says otherwise), derives `orders_by_id`,
//! `orders_interleaved` and `orders_clustered` (the same orders under another key or in
//! another order), then alternates rounds on fresh copies of that database:
//!
//! - `built-in`: the engine with the built-in customer migration and the default settings
//!   (`Config::default()` pointed at the database, board discarded);
//! - `TOML`: the engine with `migrations/customer-split.toml` through `builder_for`, as
//!   `db-migrate --migration` builds it;
//! - `UPDATE`: the same transformation as ONE set-based `UPDATE customers SET ... WHERE
//!   schema_version = 1 AND <well-formed>`, the fastest the database can do the work;
//! - `loop`: the loop a user writes instead, without the engine: page the ids 1,000 at a time
//!   in order and run that UPDATE on each page's id range, one transaction per page;
//! - `loop x2` (PostgreSQL only): the same loop with two writing connections taking
//!   alternate pages;
//! - `composite`: the engine with `migrations/orders-normalize.toml` on `orders`, keyed by
//!   (region text, order_no integer);
//! - `clustered`: the same file on `orders_clustered`, the same rows stored in their key's
//!   order (SQLite `WITHOUT ROWID`; PostgreSQL `CLUSTER`);
//! - `integer`: the same file on `orders_by_id`, keyed by its integer `id` alone (numbered in
//!   the order of `(region, order_no)`), stored in that key's order;
//! - `interleaved`: the same file on `orders_interleaved`, the same integer key on rows stored
//!   as `orders` stores them (the regions interleaved) and with its history: composite /
//!   interleaved is what the key itself costs, interleaved / integer what the storage costs;
//! - `loop composite` and `loop integer` (SQLite only): the hand-written loop over `orders`
//!   (a row value range per page of 500 keys) and over `orders_by_id` (an `id` range): what a
//!   batched migration costs per key without the engine, the reference for composite /
//!   integer.
//!
//! Prints each round, the medians in rows of the table per second, and their ratios.
//!
//! `cargo bench -p migrate-core --bench sqlite` runs SQLite; `-- --postgres` runs PostgreSQL at
//! `DB_MIGRATE_TEST_POSTGRES_URL` instead (start one with `.ci/postgres.sh`). Other options:
//! `--rows N`, `--orders N`, `--rounds R`, and engine settings `--processes P`,
//! `--batch-size B`, `--fetch-size F`, `--block-size K`, `--max-connections C`, and
//! `--only NAME,NAME` to run only some measures (to profile one).

#![allow(clippy::print_stdout)]

#[path = "database/runs.rs"]
mod runs;
#[path = "database/target.rs"]
mod target;

use std::time::Duration;

use target::Target;

#[derive(Debug, Clone)]
struct Options {
    rows: u64,
    /// Rows of `orders` (and of `orders_by_id`): the seed's tenth of `rows`, grown to this.
    orders: Option<u64>,
    rounds: usize,
    postgres: bool,
    processes: Option<usize>,
    batch_size: Option<usize>,
    fetch_size: Option<usize>,
    block_size: Option<usize>,
    max_connections: Option<u32>,
    /// Only the measures with these names (`--only TOML,loop`), for profiling one of them.
    only: Option<Vec<String>>,
}

fn options() -> Options {
    let mut options = Options {
        rows: 1_000_000,
        orders: None,
        rounds: 3,
        postgres: false,
        processes: None,
        batch_size: None,
        fetch_size: None,
        block_size: None,
        max_connections: None,
        only: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--rows" => options.rows = value(),
            "--orders" => options.orders = Some(value()),
            "--rounds" => options.rounds = value() as usize,
            "--postgres" => options.postgres = true,
            "--processes" => options.processes = Some(value() as usize),
            "--batch-size" => options.batch_size = Some(value() as usize),
            "--fetch-size" => options.fetch_size = Some(value() as usize),
            "--block-size" => options.block_size = Some(value() as usize),
            "--max-connections" => options.max_connections = Some(value() as u32),
            "--only" => {
                let names = args.next().expect("--only needs names, e.g. TOML,loop");
                options.only = Some(names.split(',').map(str::to_owned).collect());
            }
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    options
}

/// One thing the benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    BuiltIn,
    Toml,
    Update,
    Loop,
    LoopTwoWriters,
    Composite,
    Clustered,
    Integer,
    Interleaved,
    LoopComposite,
    LoopInteger,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::BuiltIn => "built-in",
            Measure::Toml => "TOML",
            Measure::Update => "UPDATE",
            Measure::Loop => "loop",
            Measure::LoopTwoWriters => "loop x2",
            Measure::Composite => "composite",
            Measure::Clustered => "clustered",
            Measure::Integer => "integer",
            Measure::Interleaved => "interleaved",
            Measure::LoopComposite => "loop composite",
            Measure::LoopInteger => "loop integer",
        }
    }

    /// The copy it runs on (see [`target::COPIES`]).
    fn copy(self) -> &'static str {
        match self {
            Measure::BuiltIn => "engine",
            Measure::Toml => "toml",
            Measure::Update => "set",
            Measure::Loop => "loop",
            Measure::LoopTwoWriters => "loop2",
            Measure::Composite => "composite",
            Measure::Clustered => "clustered",
            Measure::Integer => "integer",
            Measure::Interleaved => "interleaved",
            Measure::LoopComposite => "loopc",
            Measure::LoopInteger => "loopi",
        }
    }
}

/// The migrations the engine runs, read once.
struct Specs {
    customers: migrate_core::MigrationSpec,
    orders: migrate_core::MigrationSpec,
    orders_by_id: migrate_core::MigrationSpec,
    orders_interleaved: migrate_core::MigrationSpec,
    orders_clustered: migrate_core::MigrationSpec,
}

/// Runs `measure` on a fresh copy: its time, the rows of its table, and what it says of them.
async fn time(
    measure: Measure,
    target: &Target,
    dir: &std::path::Path,
    options: &Options,
    specs: &Specs,
    orders: u64,
) -> (Duration, u64, String) {
    let url = target.copy(measure.copy()).await;
    let rows = options.rows;
    let (took, n, done) = match measure {
        Measure::BuiltIn => {
            let (took, n) = runs::engine(&url, dir, options, rows).await;
            (took, n, "migrated")
        }
        Measure::Toml => {
            let (took, n) = runs::declared(&url, dir, options, &specs.customers, rows).await;
            (took, n, "migrated")
        }
        Measure::Update => {
            let (took, n) = runs::set_based(&url).await;
            (took, n, "updated")
        }
        Measure::Loop => {
            let (took, n) = runs::hand_loop(&url).await;
            (took, n, "updated")
        }
        Measure::LoopTwoWriters => {
            let (took, n) = runs::hand_loop_two_writers(&url).await;
            (took, n, "updated")
        }
        Measure::Composite => {
            let (took, n) = runs::declared(&url, dir, options, &specs.orders, orders).await;
            return (took, orders, format!("{n} orders migrated"));
        }
        Measure::Clustered => {
            let (took, n) =
                runs::declared(&url, dir, options, &specs.orders_clustered, orders).await;
            return (took, orders, format!("{n} orders migrated"));
        }
        Measure::Integer | Measure::Interleaved => {
            let spec = match measure {
                Measure::Integer => &specs.orders_by_id,
                _ => &specs.orders_interleaved,
            };
            let (took, n) = runs::declared(&url, dir, options, spec, orders).await;
            return (took, orders, format!("{n} orders migrated"));
        }
        Measure::LoopComposite | Measure::LoopInteger => {
            let composite = measure == Measure::LoopComposite;
            let (took, n) = runs::orders_loop(&url, composite).await;
            return (took, orders, format!("{n} orders updated"));
        }
    };
    (took, rows, format!("{n} customers {done}"))
}

fn median(values: &[f64]) -> f64 {
    let mut values = values.to_vec();
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

/// `1234567.8` as `1,234,568`.
fn thousands(value: f64) -> String {
    migrate_core::thousands(value.round() as u64)
}

#[tokio::main]
async fn main() {
    let options = options();
    let orders = options.orders.unwrap_or(options.rows);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let target = Target::new(options.postgres).await;
    let kind = if options.postgres {
        "postgres"
    } else {
        "sqlite"
    };
    let specs = Specs {
        customers: migrate_core::MigrationSpec::from_file(runs::migration_file(
            "customer-split.toml",
        ))
        .expect("the customer migration"),
        orders: migrate_core::MigrationSpec::from_file(runs::migration_file(
            "orders-normalize.toml",
        ))
        .expect("the orders migration"),
        orders_by_id: runs::orders_by_id("orders_by_id"),
        orders_interleaved: runs::orders_by_id("orders_interleaved"),
        orders_clustered: runs::orders_clustered(),
    };
    let started = std::time::Instant::now();
    let report = target.seed(options.rows, orders).await;
    println!(
        "{kind}: seeded {} customers ({} migrated, {} malformed) and {} orders in {:.1} s; \
         settings {options:?}",
        report.customers,
        report.migrated,
        report.malformed,
        report.orders,
        started.elapsed().as_secs_f64()
    );

    let mut measures = vec![
        Measure::BuiltIn,
        Measure::Toml,
        Measure::Update,
        Measure::Loop,
        Measure::Composite,
        Measure::Clustered,
        Measure::Integer,
        Measure::Interleaved,
    ];
    if options.postgres {
        measures.insert(4, Measure::LoopTwoWriters);
    } else {
        measures.extend([Measure::LoopComposite, Measure::LoopInteger]);
    }
    if let Some(only) = &options.only {
        measures.retain(|m| only.iter().any(|name| name.eq_ignore_ascii_case(m.name())));
        assert!(!measures.is_empty(), "--only names none of the measures");
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); measures.len()];
    for round in 1..=options.rounds {
        // Each round starts one later in the list, so that no measure always follows another.
        let start = (round - 1) % measures.len();
        for i in (start..measures.len()).chain(0..start) {
            let measure = measures[i];
            let (took, rows, note) =
                time(measure, &target, dir.path(), &options, &specs, orders).await;
            let rate = rows as f64 / took.as_secs_f64();
            rates[i].push(rate);
            println!(
                "round {round}: {:<14} {:>6.2} s {:>11} rows/s {note}",
                measure.name(),
                took.as_secs_f64(),
                thousands(rate),
            );
        }
    }
    let medians: Vec<f64> = rates.iter().map(|r| median(r)).collect();
    let of = |m: Measure| {
        measures
            .iter()
            .position(|&x| x == m)
            .map_or(f64::NAN, |i| medians[i])
    };
    println!(
        "{kind}, {} customers, {orders} orders: medians of {} rounds, rows/s",
        options.rows, options.rounds
    );
    for (measure, rate) in measures.iter().zip(&medians) {
        println!("  {:<14} {:>11}", measure.name(), thousands(*rate));
    }
    let mut ratios = vec![
        ("TOML / UPDATE", of(Measure::Toml) / of(Measure::Update)),
        (
            "built-in / UPDATE",
            of(Measure::BuiltIn) / of(Measure::Update),
        ),
        ("loop / UPDATE", of(Measure::Loop) / of(Measure::Update)),
        ("TOML / loop", of(Measure::Toml) / of(Measure::Loop)),
        (
            "composite / integer",
            of(Measure::Composite) / of(Measure::Integer),
        ),
        (
            "composite / interleaved",
            of(Measure::Composite) / of(Measure::Interleaved),
        ),
        (
            "interleaved / integer",
            of(Measure::Interleaved) / of(Measure::Integer),
        ),
        (
            "clustered / integer",
            of(Measure::Clustered) / of(Measure::Integer),
        ),
    ];
    if !options.postgres {
        ratios.push((
            "loop composite / loop integer",
            of(Measure::LoopComposite) / of(Measure::LoopInteger),
        ));
        ratios.push((
            "composite / loop composite",
            of(Measure::Composite) / of(Measure::LoopComposite),
        ));
    }
    if options.postgres {
        ratios.push((
            "loop x2 / UPDATE",
            of(Measure::LoopTwoWriters) / of(Measure::Update),
        ));
        ratios.push((
            "TOML / loop x2",
            of(Measure::Toml) / of(Measure::LoopTwoWriters),
        ));
    }
    for (name, ratio) in ratios.into_iter().filter(|(_, r)| !r.is_nan()) {
        println!("  {name:<30} {ratio:.2}");
    }
    target.clean_up().await;
}
