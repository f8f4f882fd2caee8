//! Metrics and logs of a real run on an SQLite file: `/metrics` scraped while the run goes on
//! and once more at its end, against the summary; the log in a file or on stderr.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{Scratch, stderr, stdout};

const CUSTOMERS: u64 = 3000;

/// A scratch directory with `m.db` seeded with [`CUSTOMERS`] demo customers.
fn seeded() -> Scratch {
    let scratch = Scratch::new();
    let customers = CUSTOMERS.to_string();
    let seeded = scratch.run(&[
        "seed",
        "--customers",
        &customers,
        "connection.url=sqlite://m.db",
    ]);
    assert!(seeded.status.success(), "{}", stderr(&seeded));
    scratch
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics`, or `None` when nothing answers.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    Some(body.to_owned())
}

/// The value of the sample of `name` whose labels include `label`.
fn sample(metrics: &str, name: &str, label: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.split(['{', ' ']).next() == Some(name)
                && line.contains("migration=\"customer-migration\"")
                && line.contains(label)
        })
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no {name} {label} in:\n{metrics}"))
        .parse()
        .unwrap()
}

fn records(metrics: &str, outcome: &str) -> u64 {
    sample(
        metrics,
        "db_migrate_records_total",
        &format!("outcome=\"{outcome}\""),
    ) as u64
}

/// Waits for `child` to exit, at most `limit`.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn metrics_scraped_during_a_run_and_at_its_end_agree_with_the_summary() {
    let scratch = seeded();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // 3,000 records at 1,500 a second: about two seconds, time for scrapes in the middle. The
    // server lingers after the run until the scrape that reads the final counts.
    let mut child = scratch
        .command(&[
            "--json",
            "--metrics-addr",
            &addr,
            "connection.url=sqlite://m.db",
            "status-board.mode=off",
            "status-board.metrics-linger-millis=30000",
            "customer-migration.rate-limit=1500",
            "customer-migrator.batch-size=50",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, summary_line) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let _ = lines.send(line.unwrap());
        }
    });
    let mut mid_run = Vec::new();
    let summary: serde_json::Value = loop {
        if let Ok(line) = summary_line.recv_timeout(Duration::from_millis(100)) {
            break serde_json::from_str(&line).unwrap();
        }
        if let Some(metrics) = scrape(port) {
            mid_run.push(metrics);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "db-migrate ended without a summary"
        );
    };
    let last = scrape(port).expect("the server lingers for a last scrape");
    let status = wait_for(&mut child, Duration::from_secs(10)).expect("exits after it");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}"); // the demo's malformed customers

    let count = |key: &str| summary[key].as_u64().unwrap();
    assert_eq!(summary["ending"], "completed");
    assert!(count("failed") > 0, "{summary}");
    assert_eq!(records(&last, "migrated"), count("migrated"));
    assert_eq!(
        records(&last, "previously_migrated"),
        count("previously_migrated")
    );
    assert_eq!(records(&last, "gone"), count("gone"));
    assert_eq!(records(&last, "failed"), count("failed"));
    assert_eq!(
        records(&last, "migrated")
            + records(&last, "previously_migrated")
            + records(&last, "failed"),
        CUSTOMERS
    );
    let batches = sample(&last, "db_migrate_batches_total", "migration=");
    assert!(batches >= (CUSTOMERS / 50) as f64, "{batches}");
    assert_eq!(
        sample(
            &last,
            "db_migrate_batch_duration_seconds_count",
            "migration="
        ),
        batches
    );
    assert!(last.contains("# TYPE db_migrate_batch_duration_seconds histogram"));
    assert!(last.contains("db_migrate_batch_duration_seconds_bucket{"));
    assert!(last.contains("# HELP db_migrate_records_total Records handled, by outcome"));
    assert_eq!(sample(&last, "db_migrate_batch_size", "migration="), 50.0);
    assert_eq!(sample(&last, "db_migrate_rate_limit", "migration="), 1500.0);
    assert_eq!(sample(&last, "db_migrate_jobs_busy", "migration="), 0.0);
    assert_eq!(sample(&last, "db_migrate_throttled", "migration="), 0.0);
    assert_eq!(sample(&last, "db_migrate_retries_total", "migration="), 0.0);

    // At least one scrape saw the run half done: counters between nothing and the end.
    let handled = |m: &str| records(m, "migrated") + records(m, "previously_migrated");
    assert!(
        mid_run
            .iter()
            .any(|m| m.contains("db_migrate_records_total")
                && (1..CUSTOMERS - count("failed")).contains(&handled(m))),
        "{} scrapes, none in the middle of the run",
        mid_run.len()
    );
    // Counters never go back.
    let seen: Vec<u64> = mid_run
        .iter()
        .filter(|m| m.contains("db_migrate_records_total"))
        .map(|m| handled(m))
        .chain([handled(&last)])
        .collect();
    assert!(seen.is_sorted(), "{seen:?}");
}

#[test]
fn a_metrics_address_that_cannot_be_listened_on_is_a_usage_error_before_anything_runs() {
    let scratch = seeded();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = scratch.run(&[
        "--metrics-addr",
        &addr,
        "connection.url=sqlite://m.db",
        "customer-migrator.log-file=audit.log",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("--metrics-addr {addr}: cannot listen")),
        "{}",
        stderr(&output)
    );
    assert!(!scratch.path().join("audit.log").exists(), "nothing ran");

    let output = scratch.run(&[
        "connection.url=sqlite://m.db",
        &format!("status-board.metrics-addr={addr}"),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains(&format!("status-board.metrics-addr {addr}: cannot listen")));

    let output = scratch.run(&[
        "connection.url=sqlite://m.db",
        "status-board.metrics-addr=localhost",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("status-board.metrics-addr = \"localhost\": must be HOST:PORT"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn the_log_goes_to_a_file_as_json_or_to_stderr_as_text_when_no_board_draws_there() {
    let scratch = seeded();
    let output = scratch.run(&[
        "--log",
        "run.log",
        "--log-format",
        "json",
        "--json",
        "connection.url=sqlite://m.db",
        "status-board.mode=off",
        "customer-migrator.batch-size=500",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    // Nothing of the log on stderr: it went to the file.
    assert!(
        !stderr(&output).contains("the run ended"),
        "{}",
        stderr(&output)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    let log = std::fs::read_to_string(scratch.path().join("run.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ended = lines
        .iter()
        .find(|l| l["fields"]["message"] == "the run ended")
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(ended["level"], "INFO");
    assert_eq!(ended["span"]["name"], "run");
    assert_eq!(ended["span"]["migration"], "customer-migration");
    assert_eq!(ended["fields"]["migrated"], summary["migrated"]);
    assert_eq!(ended["fields"]["failed"], summary["failed"]);
    let failed = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "a record failed")
        .count() as u64;
    assert_eq!(failed, summary["failed"].as_u64().unwrap());
    // Batches are DEBUG: not at the default level of a log file.
    assert!(!log.contains("\"batch\""), "{log}");

    // Without a board on stderr (plain lines: not a terminal), --log-level sends it there.
    let output = scratch.run(&[
        "--log-level",
        "debug",
        "--reset",
        "connection.url=sqlite://m.db",
        "customer-migrator.batch-size=500",
    ]);
    let text = stderr(&output);
    assert!(text.contains("the run ended"), "{text}");
    assert!(
        text.contains("run{migration=\"customer-migration\""),
        "{text}"
    );
    assert!(
        text.contains("batch{migration=\"customer-migration\" first=1"),
        "{text}"
    );
}
