//! Tests: board. The live board in a real terminal (tmux), and plain lines when stderr is not
//! a terminal.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::util::{Scratch, binary, stderr};

/// A tmux server of its own running one `db-migrate` in a pane, killed on drop (also when the
/// test fails).
struct Tmux {
    socket: String,
    session: &'static str,
    _scratch: Scratch,
}

impl Tmux {
    /// Runs `db-migrate ARGS` in a `columns`x`rows` pane; the pane's shell then prints
    /// `EXIT=<code>` and stays, so the final screen and the cursor can be inspected.
    fn run(args: &[&str], columns: u16, rows: u16) -> Tmux {
        Tmux::run_as(args, columns, rows, false)
    }

    /// As [`run`](Tmux::run), with `background`: started with `&` by a shell with job control,
    /// in a process group of its own that is not the terminal's foreground one.
    fn run_as(args: &[&str], columns: u16, rows: u16, background: bool) -> Tmux {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let socket = format!(
            "db-migrate-test-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        let scratch = Scratch::new();
        // The shell's trap keeps it alive through Ctrl-C so that it reports the exit code.
        let script = match background {
            false => format!(
                "trap 'true' INT; {} {}; echo EXIT=$?; sleep 60",
                binary().display(),
                args.join(" ")
            ),
            true => format!(
                "set -m; trap 'true' INT; {} {} & wait $!; echo EXIT=$?; sleep 60",
                binary().display(),
                args.join(" ")
            ),
        };
        let mut command = Command::new("tmux");
        command
            .args(["-f", "/dev/null", "-L", &socket, "new-session", "-d"])
            .args(["-x", &columns.to_string(), "-y", &rows.to_string()])
            .args(["-s", "board", "-c"])
            .arg(scratch.path())
            .arg(&script)
            .env("SHELL", "/bin/sh")
            .env_remove("NO_COLOR")
            .env_remove("TMUX");
        for (key, _) in std::env::vars() {
            if key.starts_with("DB_MIGRATE_") {
                command.env_remove(key);
            }
        }
        let status = command
            .status()
            .expect("tmux is installed (the console board is tested in it)");
        assert!(status.success(), "tmux new-session failed: {status}");
        Tmux {
            socket,
            session: "board",
            _scratch: scratch,
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            output.status.success(),
            "tmux {args:?}: {}",
            stderr(&output)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// The pane's visible text, trailing blank lines dropped.
    fn screen(&self) -> Vec<String> {
        let text = self.tmux(&["capture-pane", "-p", "-t", self.session]);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }

    /// Polls the pane until `ready` holds for its screen; panics with the screen after `limit`.
    fn wait_for(&self, limit: Duration, ready: impl Fn(&[String]) -> bool) -> Vec<String> {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < limit,
                "timed out; screen:\n{}",
                screen.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pane's text with the rows of each wrapped line joined into one.
    fn joined_screen(&self) -> Vec<String> {
        let text = self.tmux(&["capture-pane", "-p", "-J", "-t", self.session]);
        text.lines().map(|l| l.trim_end().to_owned()).collect()
    }

    /// Every line the pane holds, those scrolled away first, wrapped rows joined, trailing
    /// blank lines dropped.
    fn history(&self) -> Vec<String> {
        let text = self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", self.session]);
        let mut lines: Vec<String> = text.lines().map(|l| l.trim_end().to_owned()).collect();
        while lines.last().is_some_and(String::is_empty) {
            lines.pop();
        }
        lines
    }

    fn wait_for_exit(&self) -> (Vec<String>, String) {
        let screen = self.wait_for(Duration::from_secs(120), |s| {
            s.iter().any(|l| l.starts_with("EXIT="))
        });
        let exit = screen
            .iter()
            .find_map(|l| l.strip_prefix("EXIT="))
            .expect("exit line")
            .to_owned();
        (screen, exit)
    }

    fn cursor_visible(&self) -> bool {
        self.tmux(&["display", "-p", "-t", self.session, "#{cursor_flag}"])
            .trim()
            == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stderr(Stdio::null())
            .status();
    }
}

fn is_summary(line: &str, ending: &str) -> bool {
    line.starts_with("Migrated ")
        && line.contains(" customers (")
        && line.contains(" previously migrated, 0 failures) in ")
        && line.ends_with(ending)
}

/// A completed run's summary, whatever its duration.
fn is_completed(line: &str) -> bool {
    is_summary(line, " second") || is_summary(line, " seconds")
}

fn is_finished(line: &str) -> bool {
    line.starts_with("Completed table scan, after ")
        || line.starts_with("Scan stopped, after ")
        || (line.starts_with("Process #") && line.contains(": Done, after "))
}

#[test]
fn console_board_in_a_terminal_ends_with_finished_lines_stacked_and_the_summary_last() {
    let tmux = Tmux::run(
        &[
            "connection.simulated-customers=200",
            "customer-migrator.sleep-scale=0.2",
            "status-board.mode=console",
        ],
        120,
        40,
    );
    let (screen, exit) = tmux.wait_for_exit();
    let shown = screen.join("\n");
    assert_eq!(exit, "0", "{shown}");
    let exit_row = screen.iter().position(|l| l.starts_with("EXIT=")).unwrap();
    // Redrawn in place: one line per job, nothing left over from earlier frames.
    assert_eq!(
        exit_row, 22,
        "scanner, 20 processes and the summary:\n{shown}"
    );
    let (board, summary) = (&screen[..exit_row - 1], &screen[exit_row - 1]);
    assert!(is_completed(summary), "{shown}");
    assert!(board.iter().all(|l| is_finished(l)), "{shown}");
    assert_eq!(
        board
            .iter()
            .filter(|l| l.starts_with("Completed table scan, after 200 customer rows"))
            .count(),
        1,
        "{shown}"
    );
    for n in 1..=20 {
        let prefix = format!("Process #{n:>2}: Done, after ");
        assert_eq!(
            board.iter().filter(|l| l.starts_with(&prefix)).count(),
            1,
            "{shown}"
        );
    }
    assert!(tmux.cursor_visible(), "the cursor is shown again");
}

#[test]
fn on_a_40_column_terminal_the_final_screen_has_every_line_intact() {
    let tmux = Tmux::run(
        &[
            "connection.simulated-customers=200",
            "customer-migrator.sleep-scale=0.2",
            "customer-migration.processes=3",
            "status-board.mode=console",
        ],
        40,
        30,
    );
    let (screen, exit) = tmux.wait_for_exit();
    let shown = screen.join("\n");
    assert_eq!(exit, "0", "{shown}");
    let joined = tmux.joined_screen();
    let shown = joined.join("\n");
    let exit_row = joined.iter().position(|l| l.starts_with("EXIT=")).unwrap();
    let (board, summary) = (&joined[..exit_row - 1], &joined[exit_row - 1]);
    // The summary is whole, over two rows; every other line is cut to 39 columns, as in the
    // live frames, and none runs into the next.
    assert!(is_completed(summary), "{shown}");
    assert_eq!(board.len(), 4, "the scanner and 3 processes:\n{shown}");
    assert!(
        board[0].starts_with("Completed table scan, after 200 custo"),
        "{shown}"
    );
    for line in board {
        assert!(line.chars().count() <= 39, "{line:?} is not cut:\n{shown}");
        assert!(
            is_finished(line) || line.starts_with("Completed table scan"),
            "{line:?}:\n{shown}"
        );
    }
    for n in 1..=3 {
        let prefix = format!("Process #{n}: Done, after ");
        assert_eq!(
            board.iter().filter(|l| l.starts_with(&prefix)).count(),
            1,
            "{shown}"
        );
    }
}

#[test]
fn on_a_terminal_of_one_or_two_rows_the_summary_is_shown_whole() {
    // 40 columns: the summary wraps over two rows, more than a one-row terminal has.
    for (columns, rows) in [(80, 2), (40, 1)] {
        let tmux = Tmux::run(
            &[
                "connection.simulated-customers=200",
                "customer-migrator.sleep-scale=0.2",
                "customer-migration.processes=3",
                "status-board.mode=console",
            ],
            columns,
            rows,
        );
        // The exit line may have scrolled away too: wait on the whole history.
        let start = Instant::now();
        let history = loop {
            let history = tmux.history();
            if history.iter().any(|l| l.starts_with("EXIT=")) {
                break history;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "timed out at {columns}x{rows}:\n{}",
                history.join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let shown = format!("{columns}x{rows}:\n{}", history.join("\n"));
        // The summary last, whole, not the fold line. Above it tmux may keep the last live
        // frame: it moves a screen cleared from its top-left corner into its history
        // (`scroll-on-clear`), and a board this short starts there.
        let [.., summary, exit] = history.as_slice() else {
            panic!("{shown}");
        };
        assert!(is_completed(summary), "{shown}");
        assert_eq!(exit, "EXIT=0", "{shown}");
        assert!(history.len() <= 3, "{shown}");
        assert!(tmux.cursor_visible(), "{shown}");
    }
}

#[test]
fn ctrl_c_in_a_terminal_ends_with_an_interrupted_summary_code_130_and_the_cursor_shown() {
    let tmux = Tmux::run(
        &[
            "connection.simulated-customers=20000",
            "status-board.mode=console",
        ],
        120,
        40,
    );
    // The live screen, as the seed's: the scanner, the summary line, then the processes.
    let live = tmux.wait_for(Duration::from_secs(60), |s| {
        s.len() >= 22 && s[21].starts_with("Process #20: Migrating customer")
    });
    let shown = live.join("\n");
    assert!(live[0].starts_with("Scann"), "{shown}");
    assert!(live[1].starts_with("Migrated "), "{shown}");
    for n in 1..=20 {
        assert!(
            live[n + 1].starts_with(&format!("Process #{n:>2}: ")),
            "{shown}"
        );
    }
    // Under them, the keys' hint (stdin is the pane's terminal).
    assert_eq!(live[22], "p pause · +/- rate · q stop", "{shown}");
    assert_eq!(live.len(), 23, "{shown}");
    assert!(
        !tmux.cursor_visible(),
        "the cursor is hidden while the board draws"
    );

    tmux.tmux(&["send-keys", "-t", tmux.session, "C-c"]);
    let (screen, exit) = tmux.wait_for_exit();
    let shown = screen.join("\n");
    assert_eq!(exit, "130", "{shown}");
    let exit_row = screen.iter().position(|l| l.starts_with("EXIT=")).unwrap();
    assert!(
        is_summary(&screen[exit_row - 1], "; interrupted, progress saved"),
        "{shown}"
    );
    // Besides the finished lines, the board may say that a stop was asked for.
    assert!(
        screen[..exit_row - 1]
            .iter()
            .all(|l| is_finished(l) || l.starts_with("Stopping")),
        "{shown}"
    );
    assert!(
        !screen.iter().any(|l| l.contains("Migrating customer")),
        "no job is left active: {shown}"
    );
    assert!(tmux.cursor_visible(), "the cursor is shown again");
}

/// The hint line of the board's keys, wherever it is on `screen`.
fn hint(screen: &[String]) -> Option<&str> {
    screen
        .iter()
        .find(|l| l.contains("+/- rate · q stop"))
        .map(String::as_str)
}

#[test]
fn keys_in_a_terminal_pause_and_resume_then_q_stops_gracefully() {
    let tmux = Tmux::run(
        &[
            "connection.simulated-customers=20000",
            "status-board.mode=console",
            "customer-migration.processes=4",
        ],
        120,
        40,
    );
    let live = tmux.wait_for(Duration::from_secs(60), |s| {
        s.iter().any(|l| l.contains(": Migrating customer"))
    });
    let shown = live.join("\n");
    assert_eq!(
        live.last().map(String::as_str),
        Some("p pause · +/- rate · q stop"),
        "{shown}"
    );

    tmux.tmux(&["send-keys", "-t", tmux.session, "p"]);
    let paused = tmux.wait_for(Duration::from_secs(10), |s| {
        hint(s).is_some_and(|h| h.contains("PAUSED"))
    });
    assert_eq!(
        hint(&paused),
        Some("p resume · +/- rate · q stop  (PAUSED)"),
        "{}",
        paused.join("\n")
    );
    // The key is not echoed onto the board.
    assert!(!paused.iter().any(|l| l == "p"), "{}", paused.join("\n"));

    tmux.tmux(&["send-keys", "-t", tmux.session, "p"]);
    let resumed = tmux.wait_for(Duration::from_secs(10), |s| {
        hint(s).is_some_and(|h| h.starts_with("p pause"))
    });
    assert_eq!(hint(&resumed), Some("p pause · +/- rate · q stop"));

    tmux.tmux(&["send-keys", "-t", tmux.session, "q"]);
    let (screen, exit) = tmux.wait_for_exit();
    let shown = screen.join("\n");
    assert_eq!(exit, "130", "{shown}");
    let exit_row = screen.iter().position(|l| l.starts_with("EXIT=")).unwrap();
    assert!(
        is_summary(&screen[exit_row - 1], "; interrupted, progress saved"),
        "{shown}"
    );
    // The final screen has no hint: the keys are done.
    assert!(hint(&screen).is_none(), "{shown}");
    assert!(tmux.cursor_visible(), "the cursor is shown again");
    // The terminal echoes again once the run is over.
    tmux.tmux(&["send-keys", "-t", tmux.session, "echoed"]);
    tmux.wait_for(Duration::from_secs(10), |s| {
        s.iter().any(|l| l.contains("echoed"))
    });
}

/// A run started in the background of an interactive shell leaves the terminal's settings
/// alone: it would be stopped (SIGTTOU) if it changed them to read keys, and migrate nothing.
#[test]
fn a_run_in_the_background_of_a_terminal_runs_to_completion() {
    let tmux = Tmux::run_as(
        &[
            "connection.simulated-customers=300",
            "customer-migrator.sleep-scale=0.01",
            "status-board.mode=console",
        ],
        120,
        40,
        true,
    );
    let (screen, exit) = tmux.wait_for_exit();
    assert_eq!(exit, "0", "{}", screen.join("\n"));
    assert!(
        tmux.history().iter().any(|l| is_completed(l)),
        "{}",
        tmux.history().join("\n")
    );
}

/// A paused run's board stops counting until `p` is pressed again.
#[test]
fn p_in_a_terminal_pauses_the_migration_until_pressed_again() {
    let tmux = Tmux::run(
        &[
            "connection.simulated-customers=1200",
            "status-board.mode=console",
            "customer-migration.processes=10",
        ],
        120,
        40,
    );
    tmux.wait_for(Duration::from_secs(60), |s| {
        s.iter().any(|l| l.contains(": Migrating customer"))
    });
    tmux.tmux(&["send-keys", "-t", tmux.session, "p"]);
    let migrated = |s: &[String]| {
        s.iter()
            .find(|l| l.starts_with("Migrated "))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
    };
    // Batches under way finish; then the count stays.
    std::thread::sleep(Duration::from_millis(1500));
    let before = migrated(&tmux.screen());
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        migrated(&tmux.screen()),
        before,
        "nothing migrated while paused"
    );
    tmux.tmux(&["send-keys", "-t", tmux.session, "p"]);
    let (screen, exit) = tmux.wait_for_exit();
    assert!(exit == "0" || exit == "1", "{}", screen.join("\n"));
    assert!(
        screen.iter().any(|l| l.starts_with("Migrated ")
            && l.contains(" previously migrated, 0 failures) in ")
            && l.ends_with(" seconds paused")),
        "{}",
        screen.join("\n")
    );
}

fn run_with_stderr_to(scratch: &Scratch, args: &[&str], log: &Path) -> std::process::ExitStatus {
    let mut command = scratch.command(args);
    // Colours would be allowed: plain lines must come from stderr not being a terminal.
    command.env_remove("NO_COLOR").env_remove("TERM");
    command
        .stderr(File::create(log).expect("log file"))
        .stdout(Stdio::null())
        .status()
        .expect("db-migrate runs")
}

#[test]
fn stderr_to_a_file_gets_plain_lines_without_escape_codes() {
    let scratch = Scratch::new();
    let log = scratch.path().join("log");
    let status = run_with_stderr_to(
        &scratch,
        &[
            "connection.simulated-customers=300",
            "customer-migrator.sleep-scale=0.05",
        ],
        &log,
    );
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("Process # 1: Migrating customer")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("Completed table scan, after 300")),
        "{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(
        is_summary(last, "second") || is_summary(last, "less than a second"),
        "{text}"
    );
}

/// The text of a log without its escape sequences (CSI `ESC [ ... final byte`), each frame's
/// lines on their own.
fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[test]
fn the_summary_is_shown_in_every_mode() {
    for mode in ["minimal", "off", "console"] {
        let scratch = Scratch::new();
        let log = scratch.path().join("log");
        let mode_arg = format!("status-board.mode={mode}");
        let status = run_with_stderr_to(
            &scratch,
            &[
                "connection.simulated-customers=100",
                "customer-migrator.sleep-scale=0",
                &mode_arg,
            ],
            &log,
        );
        assert!(status.success(), "{mode}");
        let text = std::fs::read_to_string(&log).unwrap();
        let plain = strip_escapes(&text);
        let last = plain.lines().last().unwrap_or_default();
        // The console's last frame ends with the summary line, uncut, as the other modes do.
        assert!(is_completed(last), "{mode}: {text:?}");
        if mode == "off" {
            assert_eq!(plain.lines().count(), 1, "{mode}: {text:?}");
        }
        if mode == "console" {
            assert!(
                text.ends_with("\x1b[?25h\x1b[?2026l"),
                "the cursor is shown: {text:?}"
            );
        }
    }
}
