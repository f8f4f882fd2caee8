//! `console` mode: the live board, one line per job rewritten in place.
//!
//! Events are applied to the [`Board`] as they arrive (cheap); frames are drawn at most once per
//! `update-millis` whatever the event rate, and once more when a bold line is due to turn
//! normal. Each frame is built in memory and written with one call, then flushed.

use std::io::Write;
use std::time::Duration;

use migrate_core::{Event, StatusBoardConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::model::{Board, Line};
use super::render::{self, Style};

/// Events taken from the channel in one go: enough to catch up after a frame, small enough
/// not to delay the next one.
const EVENT_BATCH: usize = 1024;

/// Where a console board draws: any `Write` (stderr, a pseudo-terminal, a sink for a
/// benchmark) and where its size comes from.
#[derive(Debug)]
pub struct ConsoleTarget<W, S> {
    /// Receives whole frames.
    pub out: W,
    /// Returns `(columns, rows)`; asked at every frame.
    pub size: S,
    /// Whether to colour lines by status (`false` under `NO_COLOR`).
    pub color: bool,
    /// The run's controls when keys steer it: live frames end with the hint line, and the
    /// run's measured rate is handed to the keys.
    pub control: Option<super::BoardControl>,
}

/// The renderer's drawing state.
struct Screen<'t, W, S> {
    target: &'t mut ConsoleTarget<W, S>,
    /// Lines the last frame drew: the next frame moves up over them.
    drawn: usize,
    /// The last frame's lines and width, to skip a frame that would change nothing.
    last: Option<(Vec<Line>, u16)>,
    buffer: Vec<u8>,
}

impl<W: Write, S: FnMut() -> (u16, u16)> Screen<'_, W, S> {
    fn draw(&mut self, board: &Board, now: Instant, last: bool) {
        let (columns, rows) = (self.target.size)();
        // The row under the board holds the cursor; a board as tall as the terminal would
        // scroll its first line away and the next frame would move up one line too few. So a
        // one-row terminal gets no live frame; the final one, never drawn over, still shows the
        // summary whole, even where it needs more rows than there are.
        let room = usize::from(rows).saturating_sub(1);
        let lines = if last {
            board.final_view(now, room, |text| {
                render::rows_taken(text, usize::from(columns))
            })
        } else {
            match &self.target.control {
                Some(control) => with_hint(board, control, now, room),
                None => board.view(now, room),
            }
        };
        if !last
            && self
                .last
                .as_ref()
                .is_some_and(|(l, c)| *c == columns && *l == lines)
        {
            return;
        }
        if self.drawn == 0 && lines.is_empty() {
            return;
        }
        self.buffer.clear();
        let style = Style {
            columns: usize::from(columns),
            color: self.target.color,
        };
        // Writing into a Vec cannot fail.
        let _ = render::frame(&mut self.buffer, &lines, self.drawn, style, last);
        // A terminal that went away is not a reason to stop the run.
        let _ = self.target.out.write_all(&self.buffer);
        let _ = self.target.out.flush();
        self.drawn = lines.len();
        self.last = Some((lines, columns));
    }
}

/// A live frame's lines with the hint line of the keys under them, when there is room for it
/// and a line of the board (the keys still work without it); the run's measured rate goes to
/// the keys.
fn with_hint(board: &Board, control: &super::BoardControl, now: Instant, room: usize) -> Vec<Line> {
    control.set_measured(board.rate_of(migrate_core::SUMMARY_JOB));
    if room < 2 {
        return board.view(now, room);
    }
    let mut lines = board.view(now, room - 1);
    if !lines.is_empty() {
        lines.push(Line {
            text: control.hint(),
            status: migrate_core::JobStatus::Normal,
            bold: false,
        });
    }
    lines
}

/// Runs the console board until `closing` is cancelled and the queue drained (or every sender
/// is gone), then draws the final frame, which shows the cursor again.
pub(crate) async fn render<W: Write, S: FnMut() -> (u16, u16)>(
    mut receiver: mpsc::UnboundedReceiver<Event>,
    closing: CancellationToken,
    config: StatusBoardConfig,
    target: &mut ConsoleTarget<W, S>,
) {
    let update = Duration::from_millis(config.update_millis.max(1));
    let mut board = Board::new(Duration::from_millis(config.dim_after_millis));
    let mut screen = Screen {
        target,
        drawn: 0,
        last: None,
        buffer: Vec::with_capacity(4096),
    };
    let mut events = Vec::with_capacity(EVENT_BATCH);
    let mut last_draw: Option<Instant> = None;
    let mut dirty = false;
    loop {
        let now = Instant::now();
        let earliest = last_draw.map_or(now, |at| at + update);
        let wake = if dirty {
            Some(earliest)
        } else {
            board.next_dim(now).map(|at| at.max(earliest))
        };
        tokio::select! {
            // The timer first: a steady flow of events must not starve the drawing.
            biased;
            () = sleep_until_some(wake) => {
                let now = Instant::now();
                screen.draw(&board, now, false);
                last_draw = Some(now);
                dirty = false;
            }
            () = closing.cancelled() => {
                while let Ok(event) = receiver.try_recv() {
                    board.apply(event, Instant::now());
                }
                break;
            }
            n = receiver.recv_many(&mut events, EVENT_BATCH) => {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                for event in events.drain(..) {
                    board.apply(event, now);
                }
                dirty = true;
            }
        }
    }
    screen.draw(&board, Instant::now(), true);
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
