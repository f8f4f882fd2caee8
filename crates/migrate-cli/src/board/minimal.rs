//! `minimal` mode, the seed's: a plain line `prefix + text` when a job's text changes,
//! rate-limited per job so that a fast run cannot flood a log. No escape codes.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use migrate_core::{Event, JobId, StatusBoardConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Prefixes, next_event};

/// Per job: when its last line was written, and the newest text not yet written.
#[derive(Debug, Default)]
pub(crate) struct JobLine {
    written_at: Option<Instant>,
    pending: Option<String>,
}

/// Writes lines to `out`: a job's text at most once per `update-millis`; the newest pending
/// text of a job is written when it finishes, so the last word of every job is always seen.
pub(crate) fn write_event(
    out: &mut impl Write,
    event: &Event,
    now: Instant,
    every: Duration,
    prefixes: &mut Prefixes,
    lines: &mut HashMap<JobId, JobLine>,
) {
    match event {
        Event::JobAdded { job, prefix } => {
            prefixes.insert(*job, prefix.clone());
        }
        Event::JobText { job, text } => {
            let line = lines.entry(*job).or_default();
            if line
                .written_at
                .is_none_or(|t| now.duration_since(t) >= every)
            {
                line.written_at = Some(now);
                line.pending = None;
                let prefix = prefixes.get(job).map_or("", String::as_str);
                let _ = writeln!(out, "{prefix}{text}");
            } else {
                line.pending = Some(text.clone());
            }
        }
        Event::JobFinished { job } => {
            if let Some(text) = lines.get_mut(job).and_then(|l| l.pending.take()) {
                let prefix = prefixes.get(job).map_or("", String::as_str);
                let _ = writeln!(out, "{prefix}{text}");
            }
        }
        _ => {}
    }
}

pub(super) async fn render(
    mut receiver: mpsc::UnboundedReceiver<Event>,
    closing: CancellationToken,
    config: StatusBoardConfig,
) {
    let every = Duration::from_millis(config.update_millis.max(1));
    let mut prefixes = Prefixes::new();
    let mut lines = HashMap::new();
    while let Some(event) = next_event(&mut receiver, &closing).await {
        let mut stderr = std::io::stderr().lock();
        write_event(
            &mut stderr,
            &event,
            Instant::now(),
            every,
            &mut prefixes,
            &mut lines,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_rate_limited_and_the_last_one_is_written_at_the_end() {
        let start = Instant::now();
        let every = Duration::from_millis(100);
        let (mut prefixes, mut lines, mut out) = (Prefixes::new(), HashMap::new(), Vec::new());
        let job = JobId(2);
        let events = [
            (
                0,
                Event::JobAdded {
                    job,
                    prefix: "Process # 1: ".into(),
                },
            ),
            (
                0,
                Event::JobText {
                    job,
                    text: "Migrating customer 1".into(),
                },
            ),
            (
                10,
                Event::JobText {
                    job,
                    text: "Migrating customer 2".into(),
                },
            ),
            (
                20,
                Event::JobText {
                    job,
                    text: "Migrating customer 3".into(),
                },
            ),
            (
                150,
                Event::JobText {
                    job,
                    text: "Migrating customer 4".into(),
                },
            ),
            (
                160,
                Event::JobText {
                    job,
                    text: "Done".into(),
                },
            ),
            (160, Event::JobFinished { job }),
        ];
        for (at, event) in &events {
            let now = start + Duration::from_millis(*at);
            write_event(&mut out, event, now, every, &mut prefixes, &mut lines);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Process # 1: Migrating customer 1\nProcess # 1: Migrating customer 4\nProcess # 1: Done\n"
        );
    }
}
