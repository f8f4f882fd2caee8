//! The console board drawn into a virtual terminal (`vt100`), on tokio's paused clock: sleeps
//! here advance virtual time once every task is idle, so each assertion sees the frames that
//! time allows, deterministically.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use migrate_core::{Event, JobId, JobStatus, StatusBoard, StatusBoardConfig, Summary};

use super::{BoardTask, ConsoleTarget, TerminalBoard, start_console};

/// A virtual terminal the board draws into, with a size the test can change.
#[derive(Clone)]
struct Term {
    parser: Arc<Mutex<vt100::Parser>>,
    size: Arc<Mutex<(u16, u16)>>,
    frames: Arc<AtomicUsize>,
}

struct TermWriter(Term);

impl Write for TermWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.frames.fetch_add(1, Ordering::SeqCst);
        self.0.parser.lock().unwrap().process(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Term {
    fn new(columns: u16, rows: u16) -> Term {
        Term {
            parser: Arc::new(Mutex::new(vt100::Parser::new(rows, columns, 100))),
            size: Arc::new(Mutex::new((columns, rows))),
            frames: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn start(&self, color: bool) -> (TerminalBoard, BoardTask) {
        let config = StatusBoardConfig {
            update_millis: 100,
            dim_after_millis: 1000,
            ..StatusBoardConfig::default()
        };
        let size = Arc::clone(&self.size);
        let target = ConsoleTarget {
            out: TermWriter(self.clone()),
            size: move || *size.lock().unwrap(),
            color,
            control: None,
        };
        start_console(&config, target)
    }

    fn resize(&self, columns: u16, rows: u16) {
        *self.size.lock().unwrap() = (columns, rows);
        self.parser
            .lock()
            .unwrap()
            .screen_mut()
            .set_size(rows, columns);
    }

    /// The screen's rows, trailing blanks trimmed, trailing empty rows dropped.
    fn rows(&self) -> Vec<String> {
        let parser = self.parser.lock().unwrap();
        let (_, columns) = parser.screen().size();
        let mut rows: Vec<String> = parser
            .screen()
            .rows(0, columns)
            .map(|r| r.trim_end().to_owned())
            .collect();
        while rows.last().is_some_and(String::is_empty) {
            rows.pop();
        }
        rows
    }

    /// Every row the terminal holds, those scrolled away first, with whether each wraps onto
    /// the next; trailing empty rows dropped. Also how many rows scrolled away.
    fn transcript(&self) -> (Vec<(String, bool)>, usize) {
        let mut parser = self.parser.lock().unwrap();
        let (_, columns) = parser.screen().size();
        parser.screen_mut().set_scrollback(usize::MAX);
        let scrolled = parser.screen().scrollback();
        let mut rows = Vec::new();
        for offset in (1..=scrolled).rev() {
            parser.screen_mut().set_scrollback(offset);
            let screen = parser.screen();
            rows.push((
                screen.rows(0, columns).next().unwrap(),
                screen.row_wrapped(0),
            ));
        }
        parser.screen_mut().set_scrollback(0);
        let screen = parser.screen();
        rows.extend(
            screen
                .rows(0, columns)
                .zip(0..)
                .map(|(text, row)| (text, screen.row_wrapped(row))),
        );
        while rows
            .last()
            .is_some_and(|(text, _)| text.trim_end().is_empty())
        {
            rows.pop();
        }
        (rows, scrolled)
    }

    fn wrapped(&self, row: u16) -> bool {
        self.parser.lock().unwrap().screen().row_wrapped(row)
    }

    fn contents(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    fn bold(&self, row: u16) -> bool {
        self.parser
            .lock()
            .unwrap()
            .screen()
            .cell(row, 0)
            .unwrap()
            .bold()
    }

    fn color(&self, row: u16) -> vt100::Color {
        self.parser
            .lock()
            .unwrap()
            .screen()
            .cell(row, 0)
            .unwrap()
            .fgcolor()
    }

    fn cursor_hidden(&self) -> bool {
        self.parser.lock().unwrap().screen().hide_cursor()
    }
}

async fn pass(millis: u64) {
    tokio::time::sleep(Duration::from_millis(millis)).await;
}

fn add(board: &TerminalBoard, job: u32, prefix: &str, text: &str) {
    board.publish(Event::JobAdded {
        job: JobId(job),
        prefix: prefix.into(),
    });
    board.publish(Event::JobText {
        job: JobId(job),
        text: text.into(),
    });
}

fn set_text(board: &TerminalBoard, job: u32, text: &str) {
    board.publish(Event::JobText {
        job: JobId(job),
        text: text.into(),
    });
}

fn finish(board: &TerminalBoard, job: u32, text: &str, status: JobStatus) {
    set_text(board, job, text);
    board.publish(Event::JobStatus {
        job: JobId(job),
        status,
    });
    board.publish(Event::JobFinished { job: JobId(job) });
}

/// The seed's screen: the scanner, the summary line, then three processes.
fn seed_screen(board: &TerminalBoard) {
    add(board, 0, "", "Scanned 500 customer rows");
    board.publish(Event::JobProgress {
        job: JobId(0),
        done: 500,
        total: Some(1031),
    });
    add(
        board,
        1,
        "",
        "Migrated 0 customers (0 previously migrated, 0 failures), 0/s",
    );
    for n in 1..=3 {
        add(
            board,
            n + 1,
            &format!("Process #{n:>2}: "),
            &format!("Migrating customer {}", 81630 + n),
        );
    }
}

fn summary() -> Summary {
    Summary {
        migrated: 723,
        previously_migrated: 308,
        scanned: 1031,
        elapsed: Duration::from_secs(7),
        ..Summary::empty(migrate_core::Noun::new("customer", "customers"))
    }
}

#[tokio::test(start_paused = true)]
async fn lines_appear_in_order_bold_then_normal_after_the_dim_delay() {
    let term = Term::new(100, 20);
    term.parser.lock().unwrap().process(b"$ db-migrate\r\n");
    let (board, task) = term.start(true);
    seed_screen(&board);
    pass(1).await;
    let rows = term.rows();
    assert_eq!(
        rows[0], "$ db-migrate",
        "the board starts below what was there"
    );
    assert!(
        rows[1].starts_with("Scanned 500 customer rows  ["),
        "{rows:#?}"
    );
    assert!(rows[1].ends_with("]  48%  ETA -:--"), "{rows:#?}");
    assert_eq!(
        rows[2],
        "Migrated 0 customers (0 previously migrated, 0 failures), 0/s"
    );
    assert_eq!(rows[3], "Process # 1: Migrating customer 81631");
    assert_eq!(rows[5], "Process # 3: Migrating customer 81633");
    assert_eq!(rows.len(), 6);
    assert!(term.cursor_hidden());
    assert!((1..=5).all(|row| term.bold(row)), "every line just changed");

    pass(600).await;
    set_text(&board, 3, "Migrating customer 81640");
    pass(500).await;
    // 1.1 s after the start: the untouched lines dimmed, the one changed at 0.6 s did not.
    assert!(!term.bold(1) && !term.bold(2) && !term.bold(3) && !term.bold(5));
    assert!(term.bold(4));
    assert_eq!(term.rows()[4], "Process # 2: Migrating customer 81640");
    pass(600).await;
    assert!(!term.bold(4), "dimmed without any new event");
    drop(board);
    task.finish().await;
}

#[tokio::test(start_paused = true)]
async fn redraws_are_coalesced_whatever_the_event_rate() {
    let term = Term::new(80, 10);
    let (board, task) = term.start(true);
    add(&board, 2, "Process # 1: ", "start");
    // 2,000 changes over two seconds: one every millisecond.
    for n in 0..2000 {
        set_text(&board, 2, &format!("Migrating customer {n}"));
        pass(1).await;
    }
    let frames = term.frames.load(Ordering::SeqCst);
    assert!(
        (15..=22).contains(&frames),
        "{frames} frames in 2 s at 100 ms"
    );
    pass(100).await;
    assert_eq!(term.rows()[0], "Process # 1: Migrating customer 1999");
    drop(board);
    task.finish().await;
}

#[tokio::test(start_paused = true)]
async fn completed_lines_move_up_and_stack_in_finishing_order_with_colours() {
    let term = Term::new(100, 20);
    let (board, task) = term.start(true);
    seed_screen(&board);
    pass(150).await;
    finish(&board, 3, "Done, after 52 customers", JobStatus::Success);
    pass(150).await;
    finish(
        &board,
        0,
        "Completed table scan, after 1,031 customer rows",
        JobStatus::Success,
    );
    finish(&board, 4, "Done, after 49 customers", JobStatus::Warning);
    pass(150).await;
    let rows = term.rows();
    assert_eq!(
        rows,
        [
            "Process # 2: Done, after 52 customers",
            "Completed table scan, after 1,031 customer rows",
            "Process # 3: Done, after 49 customers",
            "Migrated 0 customers (0 previously migrated, 0 failures), 0/s",
            "Process # 1: Migrating customer 81631",
        ]
    );
    assert_eq!(term.color(0), vt100::Color::Idx(10), "success is green");
    assert_eq!(term.color(2), vt100::Color::Idx(11), "warning is yellow");
    assert_eq!(term.color(4), vt100::Color::Default);
    set_text(&board, 1, "Migrated 1 customer");
    board.publish(Event::JobStatus {
        job: JobId(1),
        status: JobStatus::Error,
    });
    pass(150).await;
    assert_eq!(term.color(3), vt100::Color::Idx(9), "error is red");
    drop(board);
    task.finish().await;
}

#[tokio::test(start_paused = true)]
async fn no_color_draws_no_colour_but_still_bold() {
    let term = Term::new(80, 10);
    let (board, task) = term.start(false);
    finish(&board, 0, "Completed table scan", JobStatus::Success);
    pass(1).await;
    assert_eq!(term.color(0), vt100::Color::Default);
    assert!(term.bold(0));
    drop(board);
    task.finish().await;
}

#[tokio::test(start_paused = true)]
async fn lines_are_cut_to_the_width_and_follow_a_resize() {
    let term = Term::new(30, 10);
    let (board, task) = term.start(true);
    add(
        &board,
        2,
        "Process # 1: ",
        "Migrating customers 1000000 to 2000000",
    );
    add(&board, 3, "Process # 2: ", "顧客を移行しています 81631");
    add(&board, 4, "", "third\nline");
    pass(1).await;
    let rows = term.rows();
    // 29 columns: the last one stays empty. Each of these characters takes two columns.
    assert_eq!(
        rows,
        [
            "Process # 1: Migrating custom",
            "Process # 2: 顧客を移行してい",
            "third line"
        ]
    );
    assert!((0..3).all(|row| !term.wrapped(row)));

    term.resize(20, 10);
    set_text(&board, 4, "third line, longer now");
    pass(150).await;
    assert_eq!(
        term.rows(),
        [
            "Process # 1: Migrat",
            "Process # 2: 顧客を",
            "third line, longer"
        ]
    );
    // The final frame is never redrawn over: it may wrap, and the summary is read whole.
    let summary = summary();
    finish(&board, 1, &summary.to_string(), JobStatus::Success);
    board.publish(Event::Summary(summary.clone()));
    drop(board);
    task.finish().await;
    assert!(
        term.contents().contains(&summary.to_string()),
        "{}",
        term.contents()
    );
    assert!(term.wrapped(3));
}

#[tokio::test(start_paused = true)]
async fn more_jobs_than_rows_fold_into_a_count() {
    let term = Term::new(60, 8);
    let (board, task) = term.start(true);
    seed_screen(&board);
    for n in 4..=20 {
        add(
            &board,
            n + 1,
            &format!("Process #{n:>2}: "),
            "Migrating customer 1",
        );
    }
    finish(&board, 3, "Done, after 52 customers", JobStatus::Success);
    pass(1).await;
    let rows = term.rows();
    assert_eq!(
        rows.len(),
        7,
        "one row stays free for the cursor: {rows:#?}"
    );
    assert!(rows[0].starts_with("Scanned 500 customer rows"));
    assert!(rows[1].starts_with("Migrated 0 customers"));
    assert_eq!(rows[2], "Process # 1: Migrating customer 81631");
    assert_eq!(rows[6], "... and 16 more (1 done)");
    // Redrawn many times, the board stays in place: nothing above it scrolls away.
    for n in 0..20 {
        set_text(&board, 2, &format!("Migrating customer {n}"));
        pass(100).await;
    }
    assert_eq!(term.rows().len(), 7);
    assert_eq!(term.rows()[2], "Process # 1: Migrating customer 19");
    drop(board);
    task.finish().await;
}

#[tokio::test(start_paused = true)]
async fn the_final_screen_stacks_every_line_with_the_summary_last_and_shows_the_cursor() {
    let term = Term::new(100, 30);
    let (board, task) = term.start(true);
    seed_screen(&board);
    pass(150).await;
    finish(
        &board,
        0,
        "Completed table scan, after 1,031 customer rows",
        JobStatus::Success,
    );
    for (job, n) in [(3, 340), (2, 352), (4, 339)] {
        finish(
            &board,
            job,
            &format!("Done, after {n} customers"),
            JobStatus::Success,
        );
    }
    let summary = summary();
    finish(&board, 1, &summary.to_string(), JobStatus::Success);
    board.publish(Event::Summary(summary));
    // No time passes: finishing draws the final frame from whatever is queued.
    task.finish().await;
    assert_eq!(
        term.rows(),
        [
            "Completed table scan, after 1,031 customer rows",
            "Process # 2: Done, after 340 customers",
            "Process # 1: Done, after 352 customers",
            "Process # 3: Done, after 339 customers",
            "Migrated 723 customers (308 previously migrated, 0 failures) in 7 seconds",
        ]
    );
    assert!(!term.cursor_hidden());
    let (row, _) = term.parser.lock().unwrap().screen().cursor_position();
    assert_eq!(row, 5, "the cursor rests below the board");
}

#[tokio::test(start_paused = true)]
async fn on_a_narrow_terminal_the_final_screen_is_cut_like_the_live_one_and_keeps_the_summary_whole()
 {
    let term = Term::new(40, 20);
    let (board, task) = term.start(false);
    seed_screen(&board);
    pass(150).await;
    // The live frame: every line cut to 39 columns.
    assert_eq!(term.rows().len(), 5);
    assert!((0..5).all(|row| !term.wrapped(row)));
    finish(
        &board,
        0,
        "Completed table scan, after 1,031 customer rows",
        JobStatus::Success,
    );
    for (job, n) in [(3, 340), (2, 352), (4, 339)] {
        finish(
            &board,
            job,
            &format!("Done, after {n} customers"),
            JobStatus::Success,
        );
    }
    let summary = summary();
    let closing = summary.to_string();
    assert!(closing.len() > 40, "the summary needs two rows: {closing}");
    finish(&board, 1, &closing, JobStatus::Success);
    board.publish(Event::Summary(summary));
    task.finish().await;
    assert_eq!(
        term.rows(),
        [
            "Completed table scan, after 1,031 custo",
            "Process # 2: Done, after 340 customers",
            "Process # 1: Done, after 352 customers",
            "Process # 3: Done, after 339 customers",
            &closing[..40],
            &closing[40..],
        ]
    );
    assert!((0..4).all(|row| !term.wrapped(row)), "job lines are cut");
    assert!(term.wrapped(4), "the summary wraps, whole");
    let (row, _) = term.parser.lock().unwrap().screen().cursor_position();
    assert_eq!(row, 6, "the cursor rests below the board");
}

/// The lines of `rows`, with the rows of a wrapped line joined.
fn join_wrapped(rows: &[(String, bool)]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for (text, wrapped) in rows {
        if *wrapped {
            line.push_str(text);
        } else {
            line.push_str(text.trim_end());
            lines.push(std::mem::take(&mut line));
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

#[tokio::test(start_paused = true)]
async fn at_any_size_the_final_screen_ends_with_the_whole_summary_and_fits_above_the_cursor() {
    let summary = summary();
    let closing = summary.to_string();
    let finished = [
        (0, "Completed table scan, after 1,031 customer rows"),
        (3, "Process # 2: Done, after 340 customers"),
        (2, "Process # 1: Done, after 352 customers"),
        (4, "Process # 3: Done, after 339 customers"),
    ];
    for columns in [20_u16, 40, 80] {
        for rows in 1_u16..=6 {
            if rows == 1 && closing.len() > usize::from(columns) {
                // vt100 overflows wrapping a line on a one-row screen (`Grid::col_wrap`); the
                // tmux tests cover a one-row terminal at 40 columns.
                continue;
            }
            let term = Term::new(columns, rows);
            let (board, task) = term.start(false);
            seed_screen(&board);
            pass(150).await;
            for (job, text) in finished {
                let text = text.split_once(": ").map_or(text, |(_, t)| t);
                finish(&board, job, text, JobStatus::Success);
            }
            pass(150).await;
            finish(&board, 1, &closing, JobStatus::Success);
            board.publish(Event::Summary(summary.clone()));
            task.finish().await;

            let size = format!("{columns}x{rows}");
            let (transcript, scrolled) = term.transcript();
            let lines = join_wrapped(&transcript);
            let shown = format!("{size}: {transcript:#?}");
            let cut = |text: &str| {
                text.chars()
                    .take(usize::from(columns) - 1)
                    .collect::<String>()
            };
            // The rows the summary takes, and those left for the other lines above the cursor.
            let summary_rows = closing.len().div_ceil(usize::from(columns));
            let room = usize::from(rows - 1).saturating_sub(summary_rows);
            let mut expected: Vec<String> = finished.iter().map(|(_, text)| cut(text)).collect();
            if room < expected.len() {
                let kept = room.saturating_sub(1);
                let hidden = expected.len() - kept;
                expected.drain(..hidden);
                if room > 0 {
                    expected.insert(0, cut(&format!("... and {hidden} more ({hidden} done)")));
                }
            }
            expected.push(closing.clone());
            assert_eq!(lines, expected, "{shown}");
            assert_eq!(
                transcript.len(),
                expected.len() - 1 + summary_rows,
                "{shown}"
            );
            if summary_rows < usize::from(rows) {
                assert_eq!(
                    scrolled, 0,
                    "the final frame fits above the cursor: {shown}"
                );
            }
            assert!(!term.cursor_hidden(), "{size}");
        }
    }
}
