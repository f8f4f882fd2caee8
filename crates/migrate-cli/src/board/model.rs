//! The board's state, free of any terminal: which lines exist, in which order, which are bold,
//! and how they fold into a given number of rows. Time is passed in, so tests choose it.

use std::collections::HashMap;
use std::time::Duration;

use migrate_core::{Event, JobId, JobStatus, thousands};
use tokio::time::Instant;

use super::progress::Progress;

/// One line as it should look, before it is cut to the terminal's width and styled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// Prefix, text and progress, unstyled.
    pub(crate) text: String,
    /// The colour.
    pub(crate) status: JobStatus,
    /// Whether the text changed within `dim-after-millis`.
    pub(crate) bold: bool,
}

#[derive(Debug)]
struct Job {
    prefix: String,
    text: String,
    status: JobStatus,
    /// When the text last changed: the line is bold until `dim_after` later.
    changed_at: Option<Instant>,
    /// Drawn as a bar (or a rate) after the text while the job is active.
    progress: Option<Progress>,
    /// When the line appeared: where its progress starts from.
    added_at: Instant,
}

/// Every job's line, in board order.
#[derive(Debug)]
pub(crate) struct Board {
    jobs: HashMap<JobId, Job>,
    /// Jobs still running, by id.
    active: Vec<JobId>,
    /// Jobs done, in the order they finished: they stack at the top of the board.
    finished: Vec<JobId>,
    /// The line that finished just before the run's summary (the summary line): it stays last
    /// on the final screen even if some job never reported being done.
    closing: Option<JobId>,
    dim_after: Duration,
}

impl Board {
    pub(crate) fn new(dim_after: Duration) -> Board {
        Board {
            jobs: HashMap::new(),
            active: Vec::new(),
            finished: Vec::new(),
            closing: None,
            dim_after,
        }
    }

    fn job(&mut self, job: JobId, now: Instant) -> &mut Job {
        // A job that reports before it was announced still gets a line rather than being lost.
        let active = &mut self.active;
        self.jobs.entry(job).or_insert_with(|| {
            // Job order, not arrival order: ids are handed out as jobs are created, while the
            // jobs' first events race each other (`Process #12` may report before `#1`).
            let at = active.partition_point(|&j| j < job);
            active.insert(at, job);
            Job {
                prefix: String::new(),
                text: String::new(),
                status: JobStatus::Normal,
                changed_at: None,
                progress: None,
                added_at: now,
            }
        })
    }

    /// Applies one event received at `now`.
    pub(crate) fn apply(&mut self, event: Event, now: Instant) {
        match event {
            Event::JobAdded { job, prefix } => self.job(job, now).prefix = prefix,
            Event::JobText { job, text } => {
                let line = self.job(job, now);
                if line.text != text {
                    line.text = text;
                    line.changed_at = Some(now);
                }
            }
            Event::JobStatus { job, status } => self.job(job, now).status = status,
            Event::JobProgress { job, done, total } => {
                let line = self.job(job, now);
                let added_at = line.added_at;
                line.progress
                    .get_or_insert_with(|| Progress::new(added_at))
                    .update(done, total, now);
            }
            Event::JobFinished { job } => {
                if let Some(at) = self.active.iter().position(|&j| j == job) {
                    self.active.remove(at);
                    self.finished.push(job);
                }
            }
            Event::Summary(_) => self.closing = self.finished.last().copied(),
            _ => {}
        }
    }

    /// The recent rate of `job`'s progress (units per second), once measurable.
    pub(crate) fn rate_of(&self, job: JobId) -> Option<f64> {
        self.jobs.get(&job)?.progress.as_ref()?.rate()
    }

    /// The next moment a bold line turns normal, if any is bold at `now`.
    pub(crate) fn next_dim(&self, now: Instant) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|job| job.changed_at.map(|at| at + self.dim_after))
            .filter(|&at| at > now)
            .min()
    }

    fn line(&self, id: JobId, now: Instant, finished: bool) -> Line {
        let job = &self.jobs[&id];
        let mut text = String::with_capacity(job.prefix.len() + job.text.len() + 64);
        text.push_str(&job.prefix);
        text.push_str(&job.text);
        // A finished job's bar says nothing its final text does not.
        if let Some(progress) = job.progress.as_ref().filter(|_| !finished) {
            let suffix = progress.suffix();
            if !suffix.is_empty() {
                text.push_str("  ");
                text.push_str(&suffix);
            }
        }
        Line {
            text,
            status: job.status,
            bold: job
                .changed_at
                .is_some_and(|at| now.duration_since(at) < self.dim_after),
        }
    }

    fn more(hidden: usize, finished: usize) -> Line {
        let text = if finished == 0 {
            format!("... and {} more", thousands(hidden as u64))
        } else {
            format!(
                "... and {} more ({} done)",
                thousands(hidden as u64),
                thousands(finished as u64)
            )
        };
        Line {
            text,
            status: JobStatus::Normal,
            bold: false,
        }
    }

    /// The lines of a live frame, at most `rows` of them (none if `rows` is 0).
    ///
    /// Unfolded: finished lines at the top in finishing order, then active lines by job id (the
    /// order in which jobs were created). When that does not fit, active lines come first (they are what is
    /// happening), then the most recently finished, then `... and N more`.
    pub(crate) fn view(&self, now: Instant, rows: usize) -> Vec<Line> {
        if rows == 0 {
            return Vec::new();
        }
        if self.jobs.len() <= rows {
            let mut lines = Vec::with_capacity(self.jobs.len());
            lines.extend(self.finished.iter().map(|&id| self.line(id, now, true)));
            lines.extend(self.active.iter().map(|&id| self.line(id, now, false)));
            return lines;
        }
        let shown = rows - 1;
        let mut lines = Vec::with_capacity(rows);
        let mut shown_finished = 0;
        for &id in self.active.iter().take(shown) {
            lines.push(self.line(id, now, false));
        }
        for &id in self.finished.iter().rev().take(shown - lines.len()) {
            lines.push(self.line(id, now, true));
            shown_finished += 1;
        }
        let hidden = self.jobs.len() - lines.len();
        lines.push(Self::more(hidden, self.finished.len() - shown_finished));
        lines
    }

    /// The lines of the final frame, in at most `rows` rows: the finished stack with the closing
    /// line last.
    ///
    /// The last line is written whole (it is the run's summary, shown nowhere else) and takes
    /// `height(text)` rows, so it is always there, alone if it needs every row or more. The
    /// others fill the rows left; when they do not fit, the newest are kept under
    /// `... and N more`.
    pub(crate) fn final_view(
        &self,
        now: Instant,
        rows: usize,
        height: impl Fn(&str) -> usize,
    ) -> Vec<Line> {
        let mut order: Vec<(JobId, bool)> = Vec::with_capacity(self.jobs.len());
        order.extend(
            self.finished
                .iter()
                .filter(|&&id| Some(id) != self.closing)
                .map(|&id| (id, true)),
        );
        order.extend(self.active.iter().map(|&id| (id, false)));
        order.extend(self.closing.map(|id| (id, true)));
        let Some((&(last, finished), others)) = order.split_last() else {
            return Vec::new();
        };
        let last = self.line(last, now, finished);
        let room = rows.saturating_sub(height(&last.text));
        let mut lines = Vec::with_capacity(others.len().min(room) + 1);
        let skip = if others.len() <= room {
            0
        } else if room == 0 {
            others.len()
        } else {
            let hidden = others.len() - (room - 1);
            let hidden_finished = others[..hidden].iter().filter(|(_, f)| *f).count();
            lines.push(Self::more(hidden, hidden_finished));
            hidden
        };
        lines.extend(
            others[skip..]
                .iter()
                .map(|&(id, finished)| self.line(id, now, finished)),
        );
        lines.push(last);
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIM: Duration = Duration::from_millis(1000);

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    fn added(job: u32, prefix: &str) -> Event {
        Event::JobAdded {
            job: JobId(job),
            prefix: prefix.into(),
        }
    }

    fn text(job: u32, text: &str) -> Event {
        Event::JobText {
            job: JobId(job),
            text: text.into(),
        }
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn a_changed_line_is_bold_until_the_dim_delay_passes() {
        let start = Instant::now();
        let mut board = Board::new(DIM);
        board.apply(added(2, "P1: "), start);
        board.apply(text(2, "a"), start);
        assert!(board.view(at(start, 999), 10)[0].bold);
        assert_eq!(board.next_dim(at(start, 999)), Some(at(start, 1000)));
        assert!(!board.view(at(start, 1000), 10)[0].bold);
        assert_eq!(board.next_dim(at(start, 1000)), None);
        // The same text again is not a change.
        board.apply(text(2, "a"), at(start, 1500));
        assert!(!board.view(at(start, 1500), 10)[0].bold);
        board.apply(text(2, "b"), at(start, 1600));
        assert!(board.view(at(start, 1600), 10)[0].bold);
    }

    #[test]
    fn finished_lines_stack_at_the_top_in_finishing_order() {
        let start = Instant::now();
        let mut board = Board::new(DIM);
        for (job, name) in [(0, "scan"), (1, "sum"), (2, "p1"), (3, "p2"), (4, "p3")] {
            board.apply(added(job, ""), start);
            board.apply(text(job, name), start);
        }
        board.apply(Event::JobFinished { job: JobId(3) }, start);
        board.apply(Event::JobFinished { job: JobId(0) }, start);
        assert_eq!(
            texts(&board.view(start, 10)),
            ["p2", "scan", "sum", "p1", "p3"]
        );
    }

    #[test]
    fn too_many_lines_fold_with_active_lines_first() {
        let start = Instant::now();
        let mut board = Board::new(DIM);
        for job in 0..8 {
            board.apply(added(job, ""), start);
            board.apply(text(job, &format!("job {job}")), start);
        }
        board.apply(Event::JobFinished { job: JobId(1) }, start);
        board.apply(Event::JobFinished { job: JobId(2) }, start);
        assert_eq!(
            texts(&board.view(start, 5)),
            [
                "job 0",
                "job 3",
                "job 4",
                "job 5",
                "... and 4 more (2 done)"
            ]
        );
        assert_eq!(
            texts(&board.view(start, 9)),
            [
                "job 1", "job 2", "job 0", "job 3", "job 4", "job 5", "job 6", "job 7"
            ]
        );
        // Room for every active line and one finished: the most recently finished one.
        board.apply(Event::JobFinished { job: JobId(7) }, start);
        assert_eq!(
            texts(&board.view(start, 7)),
            [
                "job 0",
                "job 3",
                "job 4",
                "job 5",
                "job 6",
                "job 7",
                "... and 2 more (2 done)"
            ]
        );
    }

    #[test]
    fn the_final_view_ends_with_the_summary_line_and_keeps_the_newest_lines() {
        let start = Instant::now();
        let mut board = Board::new(DIM);
        for job in 0..6 {
            board.apply(added(job, ""), start);
            board.apply(text(job, &format!("job {job}")), start);
        }
        // Job 5 never reports being done (stopped after the grace period).
        for job in [0, 2, 3, 4, 1] {
            board.apply(Event::JobFinished { job: JobId(job) }, start);
        }
        board.apply(
            Event::Summary(migrate_core::Summary {
                migrated: 0,
                previously_migrated: 0,
                failed: 0,
                deferred: 0,
                scanned: 0,
                elapsed: Duration::ZERO,
                dry_run: false,
                ending: migrate_core::Ending::Interrupted,
                abort_reason: None,
                failures_recorded_in: None,
                batch_size: None,
                paused_seconds: 0.0,
                throttled_seconds: 0.0,
                gone: 0,
                noun: migrate_core::Noun::new("customer", "customers"),
                open_failures: None,
            }),
            start,
        );
        let one_row = |_: &str| 1;
        assert_eq!(
            texts(&board.final_view(start, 100, one_row)),
            ["job 0", "job 2", "job 3", "job 4", "job 5", "job 1"]
        );
        assert_eq!(
            texts(&board.final_view(start, 4, one_row)),
            ["... and 3 more (3 done)", "job 4", "job 5", "job 1"]
        );
        // The summary line is there whatever the room: alone when it fills it, or overfills it.
        for rows in 0..=1 {
            assert_eq!(texts(&board.final_view(start, rows, one_row)), ["job 1"]);
        }
        assert_eq!(
            texts(&board.final_view(start, 2, one_row)),
            ["... and 5 more (4 done)", "job 1"]
        );
        // A summary wrapped over three rows leaves the others the rest.
        let three_rows = |_: &str| 3;
        assert_eq!(texts(&board.final_view(start, 2, three_rows)), ["job 1"]);
        assert_eq!(
            texts(&board.final_view(start, 5, three_rows)),
            ["... and 4 more (4 done)", "job 5", "job 1"]
        );
    }

    #[test]
    fn progress_shows_while_active_and_not_once_finished() {
        let start = Instant::now();
        let mut board = Board::new(DIM);
        board.apply(added(0, ""), start);
        board.apply(text(0, "Scanned 500 customer rows"), start);
        let progress = |done| Event::JobProgress {
            job: JobId(0),
            done,
            total: Some(1000),
        };
        board.apply(progress(0), start);
        board.apply(progress(500), at(start, 1000));
        assert_eq!(
            board.view(at(start, 1000), 5)[0].text,
            "Scanned 500 customer rows  [██████████░░░░░░░░░░]  50%  ETA 0:01  500/s"
        );
        board.apply(Event::JobFinished { job: JobId(0) }, at(start, 1000));
        assert_eq!(
            board.view(at(start, 1000), 5)[0].text,
            "Scanned 500 customer rows"
        );
    }
}
