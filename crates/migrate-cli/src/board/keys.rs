//! Keys on the console board: `p` pauses or resumes the run, `+` and `-` raise or lower its rate
//! limit, `q` stops it gracefully (as Ctrl-C), with a hint line at the bottom of the board.
//!
//! Keys are read only when stdin is a terminal and the board is the console board. The
//! terminal is not put in crossterm's raw mode, which would also turn off Ctrl-C's signal and
//! the newline translation every other line written to stderr relies on: only line editing and
//! echo are turned off (a key arrives at once, and is not printed over the board), and put back
//! when the board finishes, or by [`restore_input`] when the process exits in a hurry.
//!
//! A change made here takes effect in this run at once and is written to the progress store
//! (through the run's control link), so that every other process of the migration follows.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use migrate_core::{ControlChange, Controls, RunControl, Setting, thousands};
use tokio::sync::mpsc::UnboundedSender;

/// The keys, as the hint line shows them; short enough for a 40-column terminal.
pub(crate) const HINT: &str = "p pause · +/- rate · q stop";

/// How much `+` raises and `-` lowers the rate limit: a factor, so that a few presses cover a
/// wide range either way, and `+` then `-` comes back about where it was.
const RATE_STEP: f64 = 1.5;

/// How often the key reader looks whether the board finished.
const KEY_POLL: Duration = Duration::from_millis(100);

/// What the board knows of the run's controls: shared by the key reader, which changes them,
/// and the renderer, which shows them in the hint line and measures the run's rate.
#[derive(Debug, Clone)]
pub struct BoardControl {
    /// The run's controls.
    control: RunControl,
    /// Board changes to write to the progress store, for the other processes.
    changes: UnboundedSender<ControlChange>,
    /// The configured `rate-limit` (0: none).
    configured_rate: u64,
    /// Records per second of the whole run as the board measures it (`f64` bits; 0: unknown).
    measured: Arc<AtomicU64>,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `p`: pause, or resume when paused.
    TogglePause,
    /// `+` (or `=`, the same key unshifted): a higher rate limit.
    Faster,
    /// `-`: a lower rate limit.
    Slower,
    /// `q`: stop gracefully.
    Stop,
}

/// The action of a key press, if it has one.
pub(crate) fn action_of(key: &KeyEvent) -> Option<Action> {
    if key.kind != KeyEventKind::Press
        || key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
    {
        return None;
    }
    match key.code {
        KeyCode::Char('p' | 'P') => Some(Action::TogglePause),
        KeyCode::Char('+' | '=') => Some(Action::Faster),
        KeyCode::Char('-' | '_') => Some(Action::Slower),
        KeyCode::Char('q' | 'Q') => Some(Action::Stop),
        _ => None,
    }
}

/// The rate limit after `+` (`faster`) or `-`: the effective limit (`current`, 0 for none)
/// times or divided by [`RATE_STEP`]; without a limit, from the `measured` rate. `None` when
/// there is nothing to start from.
pub(crate) fn next_rate(current: u64, measured: Option<f64>, faster: bool) -> Option<u64> {
    let from = if current > 0 {
        current as f64
    } else {
        measured.filter(|r| *r >= 1.0)?
    };
    let next = if faster {
        (from * RATE_STEP).ceil()
    } else {
        (from / RATE_STEP).floor()
    };
    Some((next as u64).max(1))
}

impl BoardControl {
    /// The board's hold on `control`; `changes` go to the progress store, `configured_rate` is
    /// the configured `rate-limit`.
    pub fn new(
        control: RunControl,
        changes: UnboundedSender<ControlChange>,
        configured_rate: u64,
    ) -> BoardControl {
        BoardControl {
            control,
            changes,
            configured_rate,
            measured: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Records the run's rate as measured by the board.
    pub(crate) fn set_measured(&self, rate: Option<f64>) {
        self.measured
            .store(rate.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }

    fn measured(&self) -> Option<f64> {
        Some(f64::from_bits(self.measured.load(Ordering::Relaxed))).filter(|r| *r > 0.0)
    }

    /// The rate limit in effect: the override, else the configured one (0: none).
    fn effective_rate(&self, controls: &Controls) -> u64 {
        controls.rate_limit.unwrap_or(self.configured_rate)
    }

    /// Does what `action` asks: changes the run's controls at once and sends the change on to
    /// the store (a stop stays with this process, as Ctrl-C does).
    pub(crate) fn apply(&self, action: Action) {
        let by = "the board";
        let now = self.control.get();
        let change = match action {
            Action::TogglePause if now.paused => ControlChange::Resume,
            Action::TogglePause => ControlChange::Pause,
            Action::Faster | Action::Slower => {
                let faster = action == Action::Faster;
                let Some(rate) = next_rate(self.effective_rate(&now), self.measured(), faster)
                else {
                    return;
                };
                ControlChange::Set(Setting::RateLimit(rate))
            }
            Action::Stop => {
                self.control.stop(by);
                return;
            }
        };
        match change {
            ControlChange::Pause => self.control.pause(by),
            ControlChange::Resume => self.control.resume(by),
            ControlChange::Set(setting) => self.control.set(setting, by),
            ControlChange::Stop => {}
        }
        // The run goes on without the store when it is gone.
        let _ = self.changes.send(change);
    }

    /// The hint line: the keys, then the controls now (`paused`, the rate limit).
    pub(crate) fn hint(&self) -> String {
        let controls = self.control.get();
        let mut line = if controls.paused {
            HINT.replace("p pause", "p resume")
        } else {
            HINT.to_owned()
        };
        let mut state = Vec::new();
        if controls.stop {
            state.push("stopping".to_owned());
        } else if controls.paused {
            state.push("PAUSED".to_owned());
        }
        match self.effective_rate(&controls) {
            0 => {}
            rate => state.push(format!("limit {}/s", thousands(rate))),
        }
        if !state.is_empty() {
            line.push_str("  (");
            line.push_str(&state.join(", "));
            line.push(')');
        }
        line
    }
}

/// The key reader of a live board; [`Keys::finish`] stops it and gives the terminal back.
#[derive(Debug)]
pub(crate) struct Keys {
    done: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

/// The terminal settings before keys were read, to put back.
static SAVED: Mutex<Option<rustix::termios::Termios>> = Mutex::new(None);

impl Keys {
    /// Reads keys for `control` when stdin is a terminal; `None` otherwise (or when its
    /// settings cannot be changed).
    pub(crate) fn start(control: BoardControl) -> Option<Keys> {
        use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
        use std::io::IsTerminal;
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        // Only in the terminal's foreground: a run started with `&` would be stopped by
        // SIGTTOU when it changed the terminal's settings (and by SIGTTIN when it read), and
        // migrate nothing until brought to the foreground.
        if rustix::termios::tcgetpgrp(&stdin).ok()? != rustix::process::getpgrp() {
            return None;
        }
        let saved = tcgetattr(&stdin).ok()?;
        let mut keys = saved.clone();
        keys.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO);
        tcsetattr(&stdin, OptionalActions::Now, &keys).ok()?;
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        let done = Arc::new(AtomicBool::new(false));
        let reader_done = Arc::clone(&done);
        // A thread of its own, not a blocking task: the runtime waits for those when it shuts
        // down, and this one waits on the terminal.
        let reader = std::thread::Builder::new()
            .name("board-keys".into())
            .spawn(move || read_keys(&control, &reader_done))
            .ok();
        Some(Keys { done, reader })
    }

    /// Stops reading keys and puts the terminal's settings back.
    pub(crate) fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        restore_input();
    }
}

fn read_keys(control: &BoardControl, done: &AtomicBool) {
    while !done.load(Ordering::SeqCst) {
        match event::poll(KEY_POLL) {
            Ok(true) => {
                if let Ok(TermEvent::Key(key)) = event::read()
                    && let Some(action) = action_of(&key)
                {
                    control.apply(action);
                }
            }
            Ok(false) => {}
            // The terminal went away: no more keys.
            Err(_) => return,
        }
    }
}

/// Puts the terminal's input settings back as they were before keys were read, if they were
/// changed; safe to call at any time (a second Ctrl-C, a panic).
pub fn restore_input() {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(saved) = saved {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &saved,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
    }

    #[test]
    fn keys_map_to_actions_and_others_to_none() {
        assert_eq!(action_of(&press('p')), Some(Action::TogglePause));
        assert_eq!(action_of(&press('+')), Some(Action::Faster));
        assert_eq!(action_of(&press('=')), Some(Action::Faster));
        assert_eq!(action_of(&press('-')), Some(Action::Slower));
        assert_eq!(action_of(&press('q')), Some(Action::Stop));
        assert_eq!(action_of(&press('x')), None);
        let ctrl_p = KeyEvent::new(KeyCode::Char('p'), KeyModifiers::CONTROL);
        assert_eq!(action_of(&ctrl_p), None);
    }

    #[test]
    fn the_rate_steps_from_the_limit_or_else_the_measured_rate() {
        assert_eq!(next_rate(1000, None, true), Some(1500));
        assert_eq!(next_rate(1000, Some(5.0), false), Some(666));
        assert_eq!(next_rate(1, None, false), Some(1));
        assert_eq!(next_rate(0, Some(2000.0), false), Some(1333));
        assert_eq!(next_rate(0, Some(2000.0), true), Some(3000));
        assert_eq!(next_rate(0, None, true), None);
        assert_eq!(next_rate(0, Some(0.5), true), None);
    }

    #[tokio::test]
    async fn board_keys_change_the_run_and_go_to_the_store_and_the_hint_says_so() {
        let control = RunControl::default();
        let (sender, mut sent) = tokio::sync::mpsc::unbounded_channel();
        let board = BoardControl::new(control.clone(), sender, 0);
        assert_eq!(board.hint(), "p pause · +/- rate · q stop");
        board.apply(Action::TogglePause);
        assert!(control.get().paused);
        assert_eq!(control.get().by.as_deref(), Some("the board"));
        assert_eq!(sent.try_recv().unwrap(), ControlChange::Pause);
        assert_eq!(board.hint(), "p resume · +/- rate · q stop  (PAUSED)");
        // No limit and no measured rate yet: nothing to raise.
        board.apply(Action::Faster);
        assert!(sent.try_recv().is_err());
        board.set_measured(Some(400.0));
        board.apply(Action::Slower);
        assert_eq!(control.get().rate_limit, Some(266));
        assert_eq!(
            sent.try_recv().unwrap(),
            ControlChange::Set(Setting::RateLimit(266))
        );
        board.apply(Action::TogglePause);
        assert_eq!(sent.try_recv().unwrap(), ControlChange::Resume);
        assert_eq!(board.hint(), "p pause · +/- rate · q stop  (limit 266/s)");
        // A stop stays with this process.
        board.apply(Action::Stop);
        assert!(control.get().stop);
        assert!(sent.try_recv().is_err());
    }
}
