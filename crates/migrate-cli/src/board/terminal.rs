//! The real terminal: stderr, its size, `NO_COLOR`, and putting the cursor back whatever
//! happens (normal end, error, panic, a second Ctrl-C).

use std::io::Write;
use std::sync::{Mutex, MutexGuard, Once, TryLockError};
use std::time::Duration;

/// The console board's hold on stderr, shared with whoever must restore the terminal.
#[derive(Debug)]
struct Hold {
    /// A console board drew and has not yet drawn its last frame (the cursor may be hidden).
    live: bool,
    /// The terminal was restored for good: the process is exiting, no frame may hide the
    /// cursor again.
    released: bool,
}

static HOLD: Mutex<Hold> = Mutex::new(Hold {
    live: false,
    released: false,
});

/// Takes the hold even when a panicking thread poisoned it, and without waiting for ever on a
/// thread that panicked while holding it (the panic hook may run on that very thread).
fn hold() -> MutexGuard<'static, Hold> {
    for _ in 0..200 {
        match HOLD.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    HOLD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// stderr for the console board: each `write` is one whole frame, written under the hold so
/// that a restore never lands in the middle of a frame, and dropped once the terminal has been
/// restored for good.
#[derive(Debug)]
pub(crate) struct StderrFrames;

impl StderrFrames {
    /// Marks the board live: from now on a restore must show the cursor.
    pub(crate) fn new() -> StderrFrames {
        hold().live = true;
        install_panic_hook();
        StderrFrames
    }
}

impl Write for StderrFrames {
    fn write(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        let hold = hold();
        if !hold.released {
            std::io::stderr().lock().write_all(frame)?;
        }
        drop(hold);
        Ok(frame.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for StderrFrames {
    /// The renderer is gone: if its last frame was not drawn (the task was aborted or
    /// panicked), the cursor is shown here.
    fn drop(&mut self) {
        let mut hold = hold();
        if hold.live {
            show_cursor();
            hold.live = false;
        }
    }
}

/// The last frame was written (it shows the cursor): nothing is left to restore.
pub(crate) fn board_done() {
    hold().live = false;
}

fn show_cursor() {
    let mut stderr = std::io::stderr().lock();
    let _ = crossterm::queue!(
        stderr,
        crossterm::terminal::EndSynchronizedUpdate,
        crossterm::style::SetAttribute(crossterm::style::Attribute::Reset),
        crossterm::cursor::Show
    );
    let _ = stderr.flush();
}

/// Puts the terminal back as it was (cursor shown, attributes reset) before the process exits:
/// no frame is drawn after this. Safe to call at any time, from a signal task or a panic hook;
/// writes nothing when no console board is drawing, so that a log never gets escape codes.
pub fn restore_terminal() {
    super::keys::restore_input();
    let mut hold = hold();
    if hold.live {
        show_cursor();
        hold.live = false;
    }
    hold.released = true;
}

/// Chains a panic hook that restores the terminal before the previous hook prints the panic.
///
/// A panic on the main thread ends the process, so the board is stopped for good. A panic on
/// another thread may be contained (a migrator's panic is counted, and the run goes on), so the
/// cursor is shown and the board keeps drawing; it is restored again when the board finishes.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() == Some("main") {
                restore_terminal();
            } else if hold().live {
                show_cursor();
            }
            previous(info);
        }));
    });
}

/// The terminal's size as `(columns, rows)`, asked anew at every frame so that resizes are
/// followed. A fresh pseudo-terminal may report `(0, 0)`: 80x24 then.
pub(crate) fn size() -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((columns, rows)) if columns > 0 && rows > 0 => (columns, rows),
        _ => (80, 24),
    }
}

/// Whether colours are allowed: `NO_COLOR` unset or empty (<https://no-color.org>).
pub(crate) fn color_allowed() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
