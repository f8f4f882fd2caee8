//! The terminal status board: the CLI's implementation of the core's `StatusBoard`.
//!
//! Jobs publish events from any task; [`TerminalBoard::publish`] only queues them. One renderer
//! task owns stderr and draws in the configured mode: the live `console` board, `minimal` plain
//! lines, `off`, or JSON lines (`--log-format json`).

mod console;
mod keys;
mod minimal;
mod model;
mod progress;
mod render;
mod terminal;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use migrate_core::{BoardMode, Event, JobId, Lifecycle, StatusBoard, StatusBoardConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::LogFormat;

pub use console::ConsoleTarget;
pub use keys::BoardControl;
pub use terminal::restore_terminal;

/// The name the board goes by in the component graph.
pub const IMPLEMENTATION: &str = "TerminalBoard";

/// The CLI's status board component: queues events for the renderer task.
#[derive(Debug)]
pub struct TerminalBoard {
    sender: mpsc::UnboundedSender<Event>,
}

impl Lifecycle for TerminalBoard {}

impl StatusBoard for TerminalBoard {
    fn publish(&self, event: Event) {
        // After the renderer finished nobody draws; later events have nowhere to go.
        let _ = self.sender.send(event);
    }
}

/// How the board draws, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The live board.
    Console,
    /// Plain lines.
    Minimal,
    /// Nothing.
    Off,
    /// Every event as a JSON line.
    Json,
}

/// Resolves the mode: `auto` is `console` when stderr is a terminal and `TERM` is not `dumb`.
pub fn resolve(mode: BoardMode, log_format: LogFormat) -> Output {
    if log_format == LogFormat::Json {
        return Output::Json;
    }
    match mode {
        BoardMode::Console => Output::Console,
        BoardMode::Minimal => Output::Minimal,
        BoardMode::Off => Output::Off,
        BoardMode::Auto => {
            let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
            if std::io::stderr().is_terminal() && !dumb {
                Output::Console
            } else {
                Output::Minimal
            }
        }
    }
}

/// The renderer task; [`finish`](BoardTask::finish) draws the final screen.
#[derive(Debug)]
pub struct BoardTask {
    closing: CancellationToken,
    handle: JoinHandle<()>,
    output: Output,
    /// The key reader, while keys steer the run.
    keys: Option<keys::Keys>,
}

impl BoardTask {
    /// How the board draws.
    pub fn output(&self) -> Output {
        self.output
    }

    /// Drains the queued events, draws the final screen, restores the terminal.
    pub async fn finish(self) {
        if let Some(keys) = self.keys {
            keys.finish();
        }
        self.closing.cancel();
        let _ = self.handle.await;
    }
}

/// Starts the renderer for `output` and returns the board component that feeds it. On the
/// console board with stdin a terminal, keys steer the run through `control`, and a hint line
/// says which.
pub fn start(
    config: &StatusBoardConfig,
    output: Output,
    control: Option<BoardControl>,
) -> (TerminalBoard, BoardTask) {
    let (sender, receiver) = mpsc::unbounded_channel();
    let closing = CancellationToken::new();
    let handle = match output {
        Output::Minimal => tokio::spawn(minimal::render(receiver, closing.clone(), config.clone())),
        Output::Console => {
            let keys = control.clone().and_then(keys::Keys::start);
            let target = ConsoleTarget {
                out: terminal::StderrFrames::new(),
                size: terminal::size,
                color: terminal::color_allowed(),
                control: control.filter(|_| keys.is_some()),
            };
            let (board, mut task) = spawn_console(config, target, terminal::board_done);
            task.keys = keys;
            return (board, task);
        }
        Output::Json => tokio::spawn(json_lines(receiver, closing.clone())),
        Output::Off => tokio::spawn(discard(receiver, closing.clone())),
    };
    (
        TerminalBoard { sender },
        BoardTask {
            closing,
            handle,
            output,
            keys: None,
        },
    )
}

/// Starts a console board drawing into `target` (the terminal, a pseudo-terminal, a sink) and
/// returns the board component that feeds it. [`BoardTask::finish`] draws the final frame.
pub fn start_console<W, S>(
    config: &StatusBoardConfig,
    target: ConsoleTarget<W, S>,
) -> (TerminalBoard, BoardTask)
where
    W: Write + Send + 'static,
    S: FnMut() -> (u16, u16) + Send + 'static,
{
    spawn_console(config, target, || {})
}

/// Spawns the console renderer; `drawn` runs once its last frame is written.
fn spawn_console<W, S>(
    config: &StatusBoardConfig,
    mut target: ConsoleTarget<W, S>,
    drawn: fn(),
) -> (TerminalBoard, BoardTask)
where
    W: Write + Send + 'static,
    S: FnMut() -> (u16, u16) + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel();
    let closing = CancellationToken::new();
    let renderer_closing = closing.clone();
    let config = config.clone();
    let handle = tokio::spawn(async move {
        console::render(receiver, renderer_closing, config, &mut target).await;
        drawn();
        // Only now is `target` dropped: had the task been aborted before its last frame, its
        // drop would have restored the cursor.
        drop(target);
    });
    (
        TerminalBoard { sender },
        BoardTask {
            closing,
            handle,
            output: Output::Console,
            keys: None,
        },
    )
}

/// Receives the next event, or `None` once closing and drained.
async fn next_event(
    receiver: &mut mpsc::UnboundedReceiver<Event>,
    closing: &CancellationToken,
) -> Option<Event> {
    tokio::select! {
        biased;
        event = receiver.recv() => event,
        () = closing.cancelled() => receiver.try_recv().ok(),
    }
}

async fn json_lines(mut receiver: mpsc::UnboundedReceiver<Event>, closing: CancellationToken) {
    while let Some(event) = next_event(&mut receiver, &closing).await {
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

async fn discard(mut receiver: mpsc::UnboundedReceiver<Event>, closing: CancellationToken) {
    while next_event(&mut receiver, &closing).await.is_some() {}
}

/// Job prefixes by id, kept by the renderers.
pub(crate) type Prefixes = HashMap<JobId, String>;
