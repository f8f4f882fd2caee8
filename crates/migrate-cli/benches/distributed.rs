//! More than one process on one PostgreSQL migration (`docs/benchmarks.md`, "More than one
//! process (PostgreSQL)").
//!
//! 1. **Throughput**: a million demo customers seeded once into `dbm_bench_dist_seed`; each
//!    round copies it to a fresh `dbm_bench_dist` (`CREATE DATABASE ... TEMPLATE`) and runs 1,
//!    2 and 4 `db-migrate --distributed` processes (this package's binary, built with the
//!    bench profile) on it, in a rotating order. It reports rows of the table per second, the
//!    CPU seconds of the `db-migrate` processes (their `utime + stime`, as this process's
//!    waited-for children in `/proc/self/stat`) and of the PostgreSQL backends serving the
//!    database (`utime + stime` of the pids `pg_stat_activity` lists for it, sampled every
//!    100 ms), how busy the whole machine was (`/proc/stat`), and the load average.
//! 2. **Claims**: 64 claimers, each with its own connection, on the real `migration_ranges`
//!    table through [`migrate_core::distributed::ranges`], each range's work simulated by a
//!    sleep (the simulated backend cannot hold the table: leases need PostgreSQL). Reports
//!    claims per second, claims that found nothing, leases lost, takeovers of abandoned
//!    ranges, and, in a second pass with a claim statement that also counts them, how many
//!    claimable ranges each claim passed over (`SKIP LOCKED` skips and lost races).
//!
//! `cargo bench -p migrate-cli --bench distributed` (needs `DB_MIGRATE_TEST_POSTGRES_URL`;
//! without it, it says so and skips). Options after `--`: `--rounds 3`, `--customers 1000000`,
//! `--range-rows 50000`, `--processes 1,2,4`, `--claimers 64`, `--claim-ranges 6400`,
//! `--work-millis 10`, `--abandon-permille 10`, `--only throughput|claims`.

#![allow(
    clippy::print_stdout,
    reason = "a benchmark reports its figures on stdout"
)]

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use migrate_core::distributed::ranges::{self, PlannedRange};
use migrate_core::{Key, KeyColumn, KeyKind, KeyRange};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool, Row};

#[derive(Debug, Clone)]
struct Options {
    rounds: usize,
    customers: u64,
    range_rows: u64,
    processes: Vec<usize>,
    claimers: usize,
    claim_ranges: i64,
    work: Duration,
    abandon_permille: u64,
    only: Option<String>,
}

fn options() -> Options {
    let mut o = Options {
        rounds: 3,
        customers: 1_000_000,
        range_rows: 50_000,
        processes: vec![1, 2, 4],
        claimers: 64,
        claim_ranges: 6400,
        work: Duration::from_millis(10),
        abandon_permille: 10,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let number = || value.replace('_', "").parse::<u64>().ok();
        match args[i].as_str() {
            "--rounds" => o.rounds = number().unwrap_or(3) as usize,
            "--customers" => o.customers = number().unwrap_or(o.customers),
            "--range-rows" => o.range_rows = number().unwrap_or(o.range_rows),
            "--processes" => {
                o.processes = value.split(',').filter_map(|n| n.parse().ok()).collect();
            }
            "--claimers" => o.claimers = number().unwrap_or(64) as usize,
            "--claim-ranges" => o.claim_ranges = number().unwrap_or(6400) as i64,
            "--work-millis" => o.work = Duration::from_millis(number().unwrap_or(10)),
            "--abandon-permille" => o.abandon_permille = number().unwrap_or(10),
            "--only" => o.only = Some(value),
            // `cargo bench` passes `--bench`.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn with_database(server: &str, database: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').expect("a database in the URL");
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..host_end])
}

async fn admin(server: &str, statements: &[String]) {
    let pool = PgPool::connect(server).await.expect("the server");
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Clock ticks per second of `/proc`'s CPU times.
fn ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Fields of `/proc/PID/stat` after the command name (field 3 is index 0).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    Some(rest.split(' ').map(|f| f.parse().unwrap_or(0)).collect())
}

/// CPU ticks of this process's waited-for children (`cutime + cstime`).
fn children_ticks() -> u64 {
    let f = stat_fields("self").expect("/proc/self/stat");
    f[13] + f[14]
}

/// `(busy, total)` ticks of the whole machine.
fn machine_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let total: u64 = cpu.iter().sum();
    let idle = cpu.get(3).copied().unwrap_or(0) + cpu.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Samples the CPU ticks of the backends serving `database` until `stop`; the last value seen
/// per backend, summed.
async fn backend_ticks(server: String, database: String, stop: Arc<AtomicBool>) -> u64 {
    let pool = PgPool::connect(&server).await.expect("the server");
    let mut seen: HashMap<i32, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
        for pid in pids {
            if let Some(f) = stat_fields(&pid.to_string()) {
                seen.insert(pid, f[11] + f[12]);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.close().await;
    seen.values().sum()
}

struct Round {
    rows_per_second: f64,
    client_cpu: f64,
    server_cpu: f64,
    machine_busy: f64,
    load: String,
}

async fn run_processes(server: &str, dir: &std::path::Path, n: usize, o: &Options) -> Round {
    admin(
        server,
        &[
            "DROP DATABASE IF EXISTS dbm_bench_dist WITH (FORCE)".to_owned(),
            "CREATE DATABASE dbm_bench_dist TEMPLATE dbm_bench_dist_seed".to_owned(),
        ],
    )
    .await;
    let url = with_database(server, "dbm_bench_dist");
    let load = load();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(backend_ticks(
        server.to_owned(),
        "dbm_bench_dist".to_owned(),
        Arc::clone(&stop),
    ));
    let (children_before, machine_before) = (children_ticks(), machine_ticks());
    let started = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_db-migrate"))
                .env_remove("DB_MIGRATE_TEST_POSTGRES_URL")
                .current_dir(dir)
                .args([
                    "--distributed",
                    "--range-rows",
                    &o.range_rows.to_string(),
                    "status-board.mode=off",
                    &format!("customer-migrator.log-file=p{n}-{i}.log"),
                    &format!("connection.url={url}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("db-migrate starts")
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("db-migrate ends"))
            .collect::<Vec<_>>()
    })
    .await
    .expect("waiting");
    let elapsed = started.elapsed();
    let (children_after, machine_after) = (children_ticks(), machine_ticks());
    stop.store(true, Ordering::Relaxed);
    let server_ticks = sampler.await.expect("sampler");
    for output in &outputs {
        assert!(
            matches!(output.status.code(), Some(0 | 1)),
            "db-migrate: {:?}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let pool = PgPool::connect(&url).await.expect("the copy");
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migration_ranges WHERE state <> 'done'")
            .fetch_one(&pool)
            .await
            .expect("ranges");
    assert_eq!(open, 0, "every range done");
    pool.close().await;
    let hz = ticks();
    let busy = (machine_after.0 - machine_before.0) as f64;
    let total = (machine_after.1 - machine_before.1).max(1) as f64;
    Round {
        rows_per_second: o.customers as f64 / elapsed.as_secs_f64(),
        client_cpu: (children_after - children_before) as f64 / hz,
        server_cpu: server_ticks as f64 / hz,
        machine_busy: busy / total,
        load,
    }
}

async fn throughput(server: &str, o: &Options) {
    let dir = tempfile::tempdir().expect("temporary directory");
    admin(
        server,
        &[
            "DROP DATABASE IF EXISTS dbm_bench_dist WITH (FORCE)".to_owned(),
            "DROP DATABASE IF EXISTS dbm_bench_dist_seed WITH (FORCE)".to_owned(),
            "CREATE DATABASE dbm_bench_dist_seed".to_owned(),
        ],
    )
    .await;
    let seeded = Command::new(env!("CARGO_BIN_EXE_db-migrate"))
        // The binary reads `DB_MIGRATE_*` as configuration; this one is the benchmark's.
        .env_remove("DB_MIGRATE_TEST_POSTGRES_URL")
        .current_dir(dir.path())
        .args([
            "seed",
            "--customers",
            &o.customers.to_string(),
            &format!(
                "connection.url={}",
                with_database(server, "dbm_bench_dist_seed")
            ),
        ])
        .output()
        .expect("db-migrate seed");
    assert!(
        seeded.status.success(),
        "{}",
        String::from_utf8_lossy(&seeded.stderr)
    );
    println!(
        "{} customers, ranges of {} rows, {} rounds",
        o.customers, o.range_rows, o.rounds
    );
    println!("round | processes | rows/s | client CPU s | server CPU s | machine busy | load");
    let mut results: HashMap<usize, Vec<Round>> = HashMap::new();
    for round in 0..o.rounds {
        let mut order = o.processes.clone();
        let turn = round % order.len().max(1);
        order.rotate_left(turn);
        for n in order {
            let r = run_processes(server, dir.path(), n, o).await;
            println!(
                "{} | {n} | {:.0} | {:.1} | {:.1} | {:.0}% | {}",
                round + 1,
                r.rows_per_second,
                r.client_cpu,
                r.server_cpu,
                r.machine_busy * 100.0,
                r.load
            );
            results.entry(n).or_default().push(r);
        }
    }
    let base = median(
        &mut results[&o.processes[0]]
            .iter()
            .map(|r| r.rows_per_second)
            .collect::<Vec<_>>(),
    );
    println!(
        "processes | median rows/s | ratio to {} | median client CPU s | median server CPU s | median machine busy",
        o.processes[0]
    );
    for n in &o.processes {
        let rounds = &results[n];
        let m = |f: fn(&Round) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
        let rate = m(|r| r.rows_per_second);
        println!(
            "{n} | {rate:.0} | {:.2} | {:.1} | {:.1} | {:.0}%",
            rate / base,
            m(|r| r.client_cpu),
            m(|r| r.server_cpu),
            m(|r| r.machine_busy * 100.0)
        );
    }
    admin(
        server,
        &[
            "DROP DATABASE IF EXISTS dbm_bench_dist WITH (FORCE)".to_owned(),
            "DROP DATABASE IF EXISTS dbm_bench_dist_seed WITH (FORCE)".to_owned(),
        ],
    )
    .await;
}

/// What one claimer saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    claims: u64,
    empty: u64,
    empty_claimable: u64,
    lost: u64,
    takeovers: u64,
    abandoned: u64,
    passed_over: Vec<u64>,
    claim_time: Duration,
}

/// The real claim's statement with one more column: how many ranges, claimable in the
/// statement's snapshot, come before the one it took (each skipped as locked by another
/// claimer's transaction, or found taken once that one committed: a lost race).
const COUNTING_CLAIM: &str = "WITH next AS (
       SELECT range_id FROM migration_ranges
        WHERE migration = $1
          AND (state = 'pending' OR (state = 'leased' AND lease_expires_at < now()))
        ORDER BY range_id LIMIT 1 FOR UPDATE SKIP LOCKED),
     passed AS (
       SELECT count(*) AS n FROM migration_ranges s, next
        WHERE s.migration = $1 AND s.range_id < next.range_id
          AND (s.state = 'pending' OR (s.state = 'leased' AND s.lease_expires_at < now())))
     UPDATE migration_ranges r
        SET state = 'leased', holder = $2, generation = r.generation + 1,
            lease_expires_at = now() + make_interval(secs => $3), heartbeat_at = now()
       FROM next, passed
      WHERE r.migration = $1 AND r.range_id = next.range_id
     RETURNING r.range_id, r.generation, passed.n";

fn chance(permille: u64) -> bool {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now()) % 1000 < permille
}

async fn claimer(url: String, name: String, me: usize, counting: bool, o: Options) -> Tally {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("a claimer's connection");
    let columns = [KeyColumn::new("id", KeyKind::Integer)];
    let lease = Duration::from_secs(1);
    let mut tally = Tally::default();
    let mut life = 0;
    loop {
        let holder = format!("sim:{me}:{life}");
        let asked = Instant::now();
        let claimed = if counting {
            sqlx::query(COUNTING_CLAIM)
                .bind(&name)
                .bind(&holder)
                .bind(lease.as_secs_f64())
                .fetch_optional(&pool)
                .await
                .expect("claim")
                .map(|row| {
                    let passed: i64 = row.get("n");
                    tally.passed_over.push(passed as u64);
                    row.get::<i64, _>("generation")
                })
                .map(|g| (None, g))
        } else {
            ranges::claim(&pool, &name, &holder, lease, &columns)
                .await
                .expect("claim")
                .map(|c| {
                    let g = c.generation;
                    (Some(c), g)
                })
        };
        tally.claim_time += asked.elapsed();
        let Some((claim, generation)) = claimed else {
            tally.empty += 1;
            let (open, claimable): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE state <> 'done'),
                        count(*) FILTER (WHERE state = 'pending'
                                           OR (state = 'leased' AND lease_expires_at < now()))
                   FROM migration_ranges WHERE migration = $1",
            )
            .bind(&name)
            .fetch_one(&pool)
            .await
            .expect("open ranges");
            if claimable > 0 {
                tally.empty_claimable += 1;
            }
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        tally.claims += 1;
        if generation > 1 {
            tally.takeovers += 1;
        }
        if chance(o.abandon_permille) {
            // This claimer "dies": the range waits for its lease to expire.
            tally.abandoned += 1;
            life += 1;
            continue;
        }
        tokio::time::sleep(o.work).await;
        let Some(claim) = claim else {
            // The counting pass finishes by its own statement (no `Claim` to hand).
            let done = sqlx::query(
                "UPDATE migration_ranges SET state = 'done', done_at = now()
                  WHERE migration = $1 AND holder = $2 AND state = 'leased'",
            )
            .bind(&name)
            .bind(&holder)
            .execute(&pool)
            .await
            .expect("finish");
            if done.rows_affected() == 0 {
                tally.lost += 1;
            }
            continue;
        };
        let renewed = ranges::renew(&pool, &name, &claim, lease, 1)
            .await
            .expect("renew");
        let finished = ranges::finish(&pool, &name, &claim, 2)
            .await
            .expect("finish");
        if !renewed || !finished {
            tally.lost += 1;
        }
    }
    pool.close().await;
    tally
}

async fn claims(server: &str, o: &Options) {
    admin(
        server,
        &[
            "DROP DATABASE IF EXISTS dbm_bench_dist WITH (FORCE)".to_owned(),
            "CREATE DATABASE dbm_bench_dist".to_owned(),
        ],
    )
    .await;
    let url = with_database(server, "dbm_bench_dist");
    println!(
        "{} claimers, {} ranges, work {:?} a range, {}‰ of claims abandoned (lease 1 s)",
        o.claimers, o.claim_ranges, o.work, o.abandon_permille
    );
    println!(
        "pass | claims/s | mean claim ms | work share | claims | found nothing (with claimable ranges) | leases lost | abandoned | takeovers | passed over: mean, p99, max | load"
    );
    for (pass, counting) in [("real claim", false), ("counting claim", true)] {
        let name = format!("claims-{}", if counting { "counting" } else { "real" });
        let pool = PgPool::connect(&url).await.expect("the database");
        let count = o.claim_ranges;
        ranges::ensure_plan(&pool, &name, "bench", || async move {
            Ok((0..count)
                .map(|i| {
                    PlannedRange::Between(KeyRange {
                        after: (i > 0).then(|| Key::int(i * 1000)),
                        before: (i + 1 < count).then(|| Key::int((i + 1) * 1000 + 1)),
                    })
                })
                .collect())
        })
        .await
        .expect("plan");
        pool.close().await;
        let load = load();
        let started = Instant::now();
        let tasks: Vec<_> = (0..o.claimers)
            .map(|me| tokio::spawn(claimer(url.clone(), name.clone(), me, counting, o.clone())))
            .collect();
        let mut all = Tally::default();
        for task in tasks {
            let t = task.await.expect("claimer");
            all.claims += t.claims;
            all.empty += t.empty;
            all.empty_claimable += t.empty_claimable;
            all.lost += t.lost;
            all.takeovers += t.takeovers;
            all.abandoned += t.abandoned;
            all.claim_time += t.claim_time;
            all.passed_over.extend(t.passed_over);
        }
        let elapsed = started.elapsed().as_secs_f64();
        all.passed_over.sort_unstable();
        let passed = if all.passed_over.is_empty() {
            "-".to_owned()
        } else {
            let p = &all.passed_over;
            format!(
                "{:.2}, {}, {}",
                p.iter().sum::<u64>() as f64 / p.len() as f64,
                p[p.len() * 99 / 100],
                p[p.len() - 1]
            )
        };
        println!(
            "{pass} | {:.0} | {:.2} | {:.0}% | {} | {} ({}) | {} | {} | {} | {passed} | {load}",
            all.claims as f64 / elapsed,
            all.claim_time.as_secs_f64() * 1000.0 / all.claims.max(1) as f64,
            // The share of the claimers' time spent in the ranges' work.
            (all.claims - all.abandoned) as f64 * o.work.as_secs_f64() * 100.0
                / (o.claimers as f64 * elapsed),
            all.claims,
            all.empty,
            all.empty_claimable,
            all.lost,
            all.abandoned,
            all.takeovers,
        );
    }
    admin(
        server,
        &["DROP DATABASE IF EXISTS dbm_bench_dist WITH (FORCE)".to_owned()],
    )
    .await;
}

#[tokio::main]
async fn main() {
    let Ok(server) = std::env::var("DB_MIGRATE_TEST_POSTGRES_URL") else {
        println!(
            "distributed bench skipped: set DB_MIGRATE_TEST_POSTGRES_URL to a PostgreSQL server \
             (e.g. start one with .ci/postgres.sh)"
        );
        return;
    };
    let o = options();
    if o.only.as_deref() != Some("claims") {
        throughput(&server, &o).await;
    }
    if o.only.as_deref() != Some("throughput") {
        claims(&server, &o).await;
    }
}
