//! A job's progress: the recent rate, the ETA and the bar drawn after its text.

use std::collections::VecDeque;
use std::time::Duration;

use migrate_core::thousands;
use tokio::time::Instant;

/// The rate is measured over this much recent history, so that it follows a run that speeds up
/// or slows down instead of averaging from the start.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// Below this span of samples a rate is noise, and none is shown.
const MIN_RATE_SPAN: Duration = Duration::from_millis(200);

/// Cells of the bar between its brackets.
const BAR_CELLS: usize = 20;

/// Progress reports of one job.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    done: u64,
    total: Option<u64>,
    /// `(when, done)`, oldest first, covering at most [`RATE_WINDOW`] plus one sample.
    samples: VecDeque<(Instant, u64)>,
}

impl Progress {
    /// Progress of a job that started at `started`: it counts as a report of 0 then, so that a
    /// job reporting seldom (the scanner, once a page) has a rate from its first report.
    pub(crate) fn new(started: Instant) -> Progress {
        Progress {
            done: 0,
            total: None,
            samples: VecDeque::from([(started, 0)]),
        }
    }

    /// Records a report received at `now`.
    pub(crate) fn update(&mut self, done: u64, total: Option<u64>, now: Instant) {
        self.done = done;
        self.total = total;
        self.samples.push_back((now, done));
        // One sample older than the window is kept so the window is always fully spanned.
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|&(at, _)| now.duration_since(at) >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Units per second over the recent window, once it spans enough time.
    pub(crate) fn rate(&self) -> Option<f64> {
        let (&(first_at, first), &(last_at, last)) = (self.samples.front()?, self.samples.back()?);
        let span = last_at.duration_since(first_at);
        (span >= MIN_RATE_SPAN).then(|| last.saturating_sub(first) as f64 / span.as_secs_f64())
    }

    /// What follows the job's text: `[████░░░░]  45%  ETA 0:12  1,234/s` when the total is
    /// known, the rate alone (`1,234/s now`) when it is not.
    pub(crate) fn suffix(&self) -> String {
        let rate = self.rate();
        let rate_text = rate.map(|r| format!("{}/s", thousands(r.round() as u64)));
        match self.total {
            Some(total) => {
                let fraction = if total == 0 {
                    1.0
                } else {
                    (self.done as f64 / total as f64).clamp(0.0, 1.0)
                };
                let filled = (fraction * BAR_CELLS as f64).floor() as usize;
                let mut text = String::with_capacity(BAR_CELLS * 3 + 32);
                text.push('[');
                text.extend(std::iter::repeat_n('█', filled));
                text.extend(std::iter::repeat_n('░', BAR_CELLS - filled));
                text.push_str(&format!("] {:>3}%", (fraction * 100.0).floor() as u64));
                let remaining = total.saturating_sub(self.done);
                match rate {
                    Some(r) if r > 0.0 => {
                        let eta = Duration::from_secs_f64(remaining as f64 / r);
                        text.push_str(&format!("  ETA {}", clock(eta)));
                    }
                    _ if remaining == 0 => {}
                    _ => text.push_str("  ETA -:--"),
                }
                if let Some(rate_text) = rate_text {
                    text.push_str("  ");
                    text.push_str(&rate_text);
                }
                text
            }
            None => rate_text.map(|r| format!("{r} now")).unwrap_or_default(),
        }
    }
}

/// `0:07`, `12:34`, `1:02:03`: short enough to sit beside a bar.
pub(crate) fn clock(d: Duration) -> String {
    let secs = d.as_secs_f64().ceil() as u64;
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_total_draws_a_bar_percentage_eta_and_rate() {
        let start = Instant::now();
        let mut p = Progress::new(start);
        p.update(250, Some(1000), start + Duration::from_secs(1));
        assert_eq!(p.rate(), Some(250.0));
        assert_eq!(p.suffix(), "[█████░░░░░░░░░░░░░░░]  25%  ETA 0:03  250/s");
    }

    #[test]
    fn an_unknown_total_shows_the_rate_only_once_measurable() {
        let start = Instant::now();
        let mut p = Progress::new(start);
        p.update(10, None, start);
        assert_eq!(p.suffix(), "");
        p.update(5000, None, start + Duration::from_secs(2));
        assert_eq!(p.suffix(), "2,500/s now");
    }

    #[test]
    fn the_rate_follows_the_recent_window() {
        let start = Instant::now();
        let mut p = Progress::new(start);
        // Fast for ten seconds, then stalled for ten: the rate must fall to zero.
        for s in 0..=10 {
            p.update(s * 1000, None, start + Duration::from_secs(s));
        }
        for s in 11..=20 {
            p.update(10_000, None, start + Duration::from_secs(s));
        }
        assert_eq!(p.rate(), Some(0.0));
    }

    #[test]
    fn a_job_reporting_seldom_has_a_rate_from_its_first_report() {
        let start = Instant::now();
        let mut p = Progress::new(start);
        p.update(1000, Some(2500), start + Duration::from_secs(8));
        assert_eq!(p.suffix(), "[████████░░░░░░░░░░░░]  40%  ETA 0:12  125/s");
    }

    #[test]
    fn clock_spells_hours_minutes_seconds() {
        assert_eq!(clock(Duration::from_millis(6_200)), "0:07");
        assert_eq!(clock(Duration::from_secs(754)), "12:34");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
