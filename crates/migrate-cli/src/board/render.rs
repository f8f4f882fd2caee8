//! Turns board lines into the bytes of one frame: cut to width, styled, redrawn in place.

use std::borrow::Cow;

use crossterm::cursor::{Hide, MoveToPreviousLine, Show};
use crossterm::queue;
use crossterm::style::{Attribute, Color, Print, SetAttribute, SetForegroundColor};
use crossterm::terminal::{BeginSynchronizedUpdate, Clear, ClearType, EndSynchronizedUpdate};
use migrate_core::JobStatus;
use unicode_width::UnicodeWidthChar;

use super::model::Line;

/// Cuts `text` to at most `width` terminal columns, counting display width (a CJK character
/// takes two), and replaces control characters: a newline or an escape sequence coming from a
/// job's text would break the count of lines the next frame moves up over.
pub(crate) fn fit(text: &str, width: usize) -> Cow<'_, str> {
    let mut used = 0;
    let mut clean = true;
    for (at, c) in text.char_indices() {
        let w = if c.is_control() {
            clean = false;
            1
        } else {
            c.width().unwrap_or(0)
        };
        if used + w > width {
            return Cow::Owned(sanitize(&text[..at]));
        }
        used += w;
    }
    if clean {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(sanitize(text))
    }
}

/// The rows `text` takes once written whole (as [`fit`] leaves it, without a limit) from the
/// first column of a terminal `columns` wide. A terminal does not split a wide character: one
/// that does not fit in what is left of a row starts the next.
pub(crate) fn rows_taken(text: &str, columns: usize) -> usize {
    let columns = columns.max(1);
    let mut rows = 1;
    let mut used = 0;
    for c in text.chars() {
        let w = if c.is_control() {
            1
        } else {
            c.width().unwrap_or(0)
        };
        if used > 0 && used + w > columns {
            rows += 1;
            used = 0;
        }
        used += w;
    }
    rows
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn color(status: JobStatus) -> Option<Color> {
    match status {
        JobStatus::Normal => None,
        JobStatus::Success => Some(Color::Green),
        JobStatus::Warning => Some(Color::Yellow),
        JobStatus::Error => Some(Color::Red),
    }
}

/// How a frame is drawn.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    /// Terminal width in columns.
    pub(crate) columns: usize,
    /// Whether colours may be used (`NO_COLOR` unset).
    pub(crate) color: bool,
}

/// Appends to `out` one frame that replaces the `previous` lines drawn by the last frame.
///
/// The frame is a synchronized update so the terminal shows it whole: move up to the board's
/// first line, rewrite each line (clear, styled text, newline), clear whatever the previous
/// frame had below. The cursor stays hidden while the board is live; `last` shows it again.
///
/// Every line is cut to the width, in the last frame too, so that the final screen reads as the
/// live one did; but the last frame's last line, the run's summary, is written whole (in console
/// mode it is printed nowhere else) and may wrap. Nothing is drawn over the last frame, so its
/// wrapped rows are harmless once the rows below the board's top are cleared first: a wrapped
/// row then lands on a blank row, not over what the previous frame left there.
pub(crate) fn frame(
    out: &mut Vec<u8>,
    lines: &[Line],
    previous: usize,
    style: Style,
    last: bool,
) -> std::io::Result<()> {
    // The last column is left empty: some terminals wrap as soon as it is written, which would
    // add a row the next frame does not know about.
    let width = style.columns.saturating_sub(1).max(1);
    queue!(out, BeginSynchronizedUpdate, Hide, Print('\r'))?;
    // MoveToPreviousLine(0) would move up one line: terminals read 0 as 1.
    if previous > 0 {
        let up = u16::try_from(previous).unwrap_or(u16::MAX);
        queue!(out, MoveToPreviousLine(up))?;
    }
    if last {
        queue!(out, Clear(ClearType::FromCursorDown))?;
    }
    for (at, line) in lines.iter().enumerate() {
        queue!(out, Clear(ClearType::CurrentLine))?;
        let whole = last && at + 1 == lines.len();
        let text = fit(&line.text, if whole { usize::MAX } else { width });
        let color = color(line.status).filter(|_| style.color);
        if let Some(color) = color {
            queue!(out, SetForegroundColor(color))?;
        }
        if line.bold {
            queue!(out, SetAttribute(Attribute::Bold))?;
        }
        queue!(out, Print(text))?;
        if color.is_some() || line.bold {
            queue!(out, SetAttribute(Attribute::Reset))?;
        }
        out.extend_from_slice(b"\r\n");
    }
    queue!(out, Clear(ClearType::FromCursorDown))?;
    if last {
        queue!(out, Show)?;
    }
    queue!(out, EndSynchronizedUpdate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str, status: JobStatus, bold: bool) -> Line {
        Line {
            text: text.into(),
            status,
            bold,
        }
    }

    #[test]
    fn fit_counts_display_width_and_removes_control_characters() {
        assert_eq!(fit("abcdef", 4), "abcd");
        assert_eq!(fit("abc", 4), "abc");
        // Each of these takes two columns: a third would not fit in five.
        assert_eq!(fit("日本語", 5), "日本");
        assert_eq!(fit("a\nb\x1b[31m", 10), "a b [31m");
        assert_eq!(fit("é", 1), "é");
    }

    #[test]
    fn rows_taken_counts_the_rows_a_whole_line_wraps_onto() {
        assert_eq!(rows_taken("", 10), 1);
        assert_eq!(rows_taken("abcdefghij", 10), 1);
        assert_eq!(rows_taken("abcdefghijk", 10), 2);
        // Three columns a row hold one of these two-column characters, not two.
        assert_eq!(rows_taken("日本語", 3), 3);
        assert_eq!(rows_taken("a\nb", 3), 1);
        assert_eq!(rows_taken("abc", 0), 3);
    }

    #[test]
    fn no_color_emits_no_colour_but_keeps_bold() {
        let lines = [line("done", JobStatus::Success, true)];
        let mut plain = Vec::new();
        let style = Style {
            columns: 80,
            color: false,
        };
        frame(&mut plain, &lines, 0, style, false).unwrap();
        let plain = String::from_utf8(plain).unwrap();
        assert!(!plain.contains("\x1b[38;5;"), "{plain:?}");
        assert!(!plain.contains("\x1b[32m"), "{plain:?}");
        assert!(plain.contains("\x1b[1mdone\x1b[0m"), "{plain:?}");

        let mut colored = Vec::new();
        frame(
            &mut colored,
            &lines,
            0,
            Style {
                color: true,
                ..style
            },
            false,
        )
        .unwrap();
        let colored = String::from_utf8(colored).unwrap();
        assert!(
            colored.contains("\x1b[38;5;10m") || colored.contains("\x1b[32m"),
            "{colored:?}"
        );
    }

    #[test]
    fn the_first_frame_does_not_move_up_and_later_frames_move_up_over_the_previous_one() {
        let lines = [line("a", JobStatus::Normal, false)];
        let style = Style {
            columns: 80,
            color: true,
        };
        let mut first = Vec::new();
        frame(&mut first, &lines, 0, style, false).unwrap();
        assert!(!String::from_utf8(first).unwrap().contains('F'));
        let mut next = Vec::new();
        frame(&mut next, &lines, 3, style, false).unwrap();
        assert!(String::from_utf8(next).unwrap().contains("\x1b[3F"));
    }
}
