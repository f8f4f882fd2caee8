//! The simulated run end to end: summary, exit codes, JSON, failures, interruption and resume.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::util::{Scratch, stderr, stdout};

/// A fast simulated run: `customers` records, sleeps scaled down, plain board lines.
fn fast(customers: u64) -> Vec<String> {
    vec![
        format!("connection.simulated-customers={customers}"),
        "customer-migrator.sleep-scale=0.01".to_owned(),
        "status-board.mode=minimal".to_owned(),
    ]
}

fn args(extra: &[&str], customers: u64) -> Vec<String> {
    let mut all: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    all.extend(fast(customers));
    all
}

fn run(scratch: &Scratch, args: &[String]) -> std::process::Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    scratch.run(&refs)
}

#[test]
fn the_seed_run_completes_with_the_seed_summary() {
    let scratch = Scratch::new();
    let output = run(&scratch, &args(&[], 300));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stderr(&output);
    let last = text.lines().last().unwrap();
    assert!(
        last.starts_with("Migrated ") && last.contains(" previously migrated, 0 failures) in "),
        "{last}"
    );
    assert!(text.contains("Completed table scan, after 300 customer rows"));
    assert!(text.contains("Process #20: "));
    let log = std::fs::read_to_string(scratch.path().join("state/migration.log")).unwrap();
    assert!(
        log.lines().count() > 150,
        "an audit line per migrated customer"
    );
}

#[derive(serde::Deserialize)]
struct JsonSummary {
    migrated: u64,
    previously_migrated: u64,
    failed: u64,
    scanned: u64,
    ending: String,
    dry_run: bool,
}

fn summary(output: &std::process::Output) -> JsonSummary {
    serde_json::from_str(stdout(output).trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {:?} stderr {}", stdout(output), stderr(output)))
}

#[test]
fn failures_exit_1_with_a_record_per_failed_id_and_counts_that_add_up() {
    let scratch = Scratch::new();
    let output = run(
        &scratch,
        &args(
            &[
                "--json",
                "customer-migrator.failure-rate=0.05",
                "customer-migration.retry-initial-delay-millis=1",
                "customer-migration.retry-max-delay-millis=2",
            ],
            1000,
        ),
    );
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s = summary(&output);
    assert!(s.failed > 10, "{}", s.failed);
    assert_eq!(s.migrated + s.previously_migrated + s.failed, s.scanned);
    assert_eq!(s.scanned, 1000);
    let failures =
        std::fs::read_to_string(scratch.path().join("state/migration.failures.jsonl")).unwrap();
    let mut ids: Vec<i64> = failures
        .lines()
        .map(|line| {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(record["attempts"], 3, "{line}");
            assert_eq!(record["migration"], "customer-migration", "{line}");
            record["key"].as_i64().unwrap()
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len() as u64, s.failed, "one record per failed id");
    assert!(stderr(&output).contains("Failures were recorded in state/migration.failures.jsonl"));
}

#[test]
fn too_many_failures_exit_3() {
    let scratch = Scratch::new();
    let output = run(
        &scratch,
        &args(
            &[
                "--json",
                "customer-migrator.failure-rate=0.5",
                "customer-migration.max-failures=5",
                "customer-migration.retry-attempts=1",
            ],
            1000,
        ),
    );
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let s = summary(&output);
    assert_eq!(s.ending, "aborted");
    assert!(stderr(&output).contains("aborted: more than 5 records failed"));
}

#[test]
fn a_dry_run_says_migration_needed_and_writes_nothing() {
    let scratch = Scratch::new();
    let output = run(&scratch, &args(&["-D", "--json"], 200));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(summary(&output).dry_run);
    assert!(stderr(&output).contains("Migration needed for "));
    assert!(!scratch.path().join("state").exists(), "nothing written");
}

#[test]
fn ids_from_a_file_and_a_malformed_line_named_by_number() {
    let scratch = Scratch::new();
    std::fs::write(
        scratch.path().join("ids.txt"),
        "# to redo\n10001\n\n10002 # two\n",
    )
    .unwrap();
    let output = run(&scratch, &args(&["-f", "ids.txt", "--json"], 10));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let s = summary(&output);
    assert_eq!(s.scanned, 2);

    std::fs::write(scratch.path().join("bad.txt"), "10001\nten\n").unwrap();
    let output = run(&scratch, &args(&["-f", "bad.txt"], 10));
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(message.contains("bad.txt: line 2: \"ten\""), "{message}");
}

#[test]
fn sigint_interrupts_with_130_and_the_rerun_finishes_the_rest_without_redoing() {
    let scratch = Scratch::new();
    let customers = 2000;
    let slow = [
        format!("connection.simulated-customers={customers}"),
        "customer-migrator.sleep-scale=0.05".to_owned(),
        "status-board.mode=minimal".to_owned(),
        "--json".to_owned(),
    ];
    let mut child = scratch
        .command(&slow.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until jobs are migrating (bounded), then interrupt.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = 0;
    for line in lines.by_ref() {
        if line.unwrap().contains("Migrating customer") {
            seen += 1;
            if seen >= 40 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the run did not start");
    }
    let pid = child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", rest.join("\n"));
    let first = summary(&output);
    assert_eq!(first.ending, "interrupted");
    assert!(
        rest.iter()
            .any(|l| l.contains("interrupted, progress saved"))
    );
    assert!(first.migrated + first.previously_migrated < customers);

    let fast_again = [
        format!("connection.simulated-customers={customers}"),
        "customer-migrator.sleep-scale=0".to_owned(),
        "status-board.mode=off".to_owned(),
        "--json".to_owned(),
    ];
    let output = scratch.run(&fast_again.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let second = summary(&output);
    assert_eq!(second.ending, "completed");
    assert_eq!(
        first.migrated + first.previously_migrated + second.migrated + second.previously_migrated,
        customers,
        "the two runs add up"
    );
    // Nothing was done twice: each migrated id is in the audit log once.
    let log = std::fs::read_to_string(scratch.path().join("state/migration.log")).unwrap();
    let mut ids: Vec<&str> = log.lines().map(|l| l.split(' ').nth(3).unwrap()).collect();
    let total = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), total, "an id was migrated twice");
    assert_eq!(total as u64, first.migrated + second.migrated);
}

#[test]
fn json_log_format_writes_events_as_json_lines() {
    let scratch = Scratch::new();
    let output = run(&scratch, &args(&["--log-format", "json"], 50));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stderr(&output);
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.first().unwrap()["event"], "job-added");
    assert_eq!(events.last().unwrap()["event"], "summary");
}

/// Starts a slow run and returns it once jobs are migrating, with its stderr lines.
fn start_slow(
    scratch: &Scratch,
    extra: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let mut args = vec![
        "connection.simulated-customers=500",
        "status-board.mode=minimal",
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut child = scratch
        .command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    for line in lines.by_ref() {
        if line.unwrap().contains("Migrating customer") {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not start");
    }
    (child, lines)
}

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_stops_gracefully_like_ctrl_c() {
    let scratch = Scratch::new();
    let (child, lines) = start_slow(&scratch, &["customer-migrator.sleep-scale=0.05"]);
    signal(&child, "TERM");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", rest.join("\n"));
    assert_eq!(summary(&output).ending, "interrupted");
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let scratch = Scratch::new();
    // Each record takes seconds and the grace period is long: only the second signal ends it.
    let (child, mut lines) = start_slow(
        &scratch,
        &[
            "customer-migrator.sleep-scale=40",
            "customer-migration.grace-period-millis=600000",
        ],
    );
    signal(&child, "INT");
    // Signals sent back to back may merge into one: wait until the first was taken.
    let mut rest = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let stopping = line.contains("Ctrl-C again to exit at once");
        rest.push(line);
        if stopping {
            break;
        }
    }
    signal(&child, "INT");
    let started = Instant::now();
    rest.extend(lines.map_while(Result::ok));
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", rest.join("\n"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "exited after {:?}",
        started.elapsed()
    );
    assert!(
        rest.iter().any(|l| l.contains("interrupted twice")),
        "{rest:?}"
    );
}

#[test]
fn the_help_text_lists_the_commands_and_options() {
    let output = Scratch::new().run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    insta::assert_snapshot!("help", stdout(&output));
}

#[test]
fn a_customer_count_out_of_range_exits_2_naming_customers() {
    let scratch = Scratch::new();
    for command in ["seed", "demo"] {
        for count in ["-5", "1000000001", "many"] {
            let output = scratch.run(&[command, "--customers", count]);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{command} --customers {count}"
            );
            let message = stderr(&output);
            assert!(
                message.contains(&format!(
                    "invalid value '{count}' for '--customers <CUSTOMERS>'"
                )) && message.contains("between 0 and 1000000000"),
                "{command} --customers {count}: {message}"
            );
        }
    }
    assert!(!scratch.path().join("state").exists(), "nothing ran");
}
