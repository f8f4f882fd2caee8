//! `--visualize`: DOT on stdout, deterministic, accepted by `dot`; images through `dot`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{Scratch, stderr, stdout};

#[test]
fn prints_the_seed_graph_as_dot_and_the_same_bytes_every_time() {
    let scratch = Scratch::new();
    let first = scratch.run(&["--visualize"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = scratch.run(&["--visualize"]);
    assert_eq!(first.stdout, second.stdout, "two runs, same bytes");
    insta::assert_snapshot!("component_graph", stdout(&first));
    let dot = stdout(&first);
    for name in [
        "status-board",
        "connection",
        "customer-scanner",
        "customer-migrator",
        "migration-overseer",
    ] {
        assert!(dot.contains(&format!("\"{name}\"")), "{name} missing");
    }
    assert_eq!(dot.matches(" -> ").count(), 6, "the seed's six edges");
}

#[test]
fn visualize_needs_no_configuration_or_database() {
    let scratch = Scratch::new();
    // A broken configuration does not stop the graph: it is drawn before configuration is read.
    let output = scratch.run(&["--visualize", "connection.url=postgres://nowhere/x"]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn dot_accepts_the_output() {
    if Command::new("dot").arg("-V").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "graphviz must be installed in CI"
        );
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: graphviz `dot` is not installed");
        }
        return;
    }
    let scratch = Scratch::new();
    let output = scratch.run(&["--visualize"]);
    let mut dot = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    dot.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    let rendered = dot.wait_with_output().unwrap();
    assert!(rendered.status.success());
    assert!(String::from_utf8_lossy(&rendered.stdout).contains("<svg"));

    let output = scratch.run(&["--visualize=svg"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("db-migrate-components.svg"));
    let svg = std::fs::read_to_string(scratch.path().join("db-migrate-components.svg")).unwrap();
    assert!(svg.contains("overseer"), "{svg}");
}

#[test]
fn an_image_without_dot_says_so_clearly() {
    let scratch = Scratch::new();
    let output = scratch
        .command(&["--visualize=png"])
        .env("PATH", scratch.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("`dot` program from Graphviz, which is not installed"),
        "{message}"
    );
}
