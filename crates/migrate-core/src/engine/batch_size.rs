//! The adaptive batch size: batches sized to take about a target time.
//!
//! A batch that is too large holds its locks and its transaction long enough to stall the
//! application's queries; one that is too small spends its time in commits. Like
//! pt-online-schema-change's `--chunk-time` and GitLab's batched background migrations, the
//! engine aims at a duration and sizes the batches to it from the recent ones:
//!
//! - the time per record is an exponentially weighted moving average of the recent batches'
//!   time per record (weight [`SMOOTHING`] for the newest), so that one odd batch does not
//!   swing the size;
//! - the next size is `target / time per record`, clamped to `batch-size-min..=batch-size-max`;
//! - it grows at most twofold per batch (a cheap batch says little about one ten times its
//!   size, as lock waits and cache misses grow with it), and it shrinks at once: a batch that
//!   took longer than the target sizes the next one from its own time per record when that is
//!   worse than the average, since a database that has become slow should be relieved now,
//!   not after the average has caught up.

use std::time::Duration;

/// Weight of the newest batch in the moving average of the time per record.
pub(crate) const SMOOTHING: f64 = 0.3;

/// Most the size grows in one step.
pub(crate) const MAX_GROWTH: f64 = 2.0;

/// Sizes batches to take about `target` each.
#[derive(Debug, Clone)]
pub(crate) struct BatchSizer {
    target: Duration,
    min: usize,
    max: usize,
    /// The moving average of the time per record, in seconds, once a batch was seen.
    per_record: Option<f64>,
    current: usize,
}

impl BatchSizer {
    /// A sizer starting at `start` (clamped), aiming at `target` per batch.
    pub(crate) fn new(target: Duration, min: usize, max: usize, start: usize) -> BatchSizer {
        let min = min.max(1);
        let max = max.max(min);
        BatchSizer {
            target,
            min,
            max,
            per_record: None,
            current: start.clamp(min, max),
        }
    }

    /// The size of the next batch.
    pub(crate) fn current(&self) -> usize {
        self.current
    }

    /// Takes in a batch of `records` that took `elapsed`; returns the size of the next batch.
    pub(crate) fn record(&mut self, records: usize, elapsed: Duration) -> usize {
        if records == 0 {
            return self.current;
        }
        let latest = elapsed.as_secs_f64() / records as f64;
        let average = match self.per_record {
            None => latest,
            Some(average) => SMOOTHING * latest + (1.0 - SMOOTHING) * average,
        };
        self.per_record = Some(average);
        let estimate = if elapsed > self.target {
            average.max(latest)
        } else {
            average
        };
        let ideal = if estimate > 0.0 {
            self.target.as_secs_f64() / estimate
        } else {
            f64::INFINITY
        };
        let grown = (self.current as f64 * MAX_GROWTH).max(1.0);
        let next = ideal.min(grown).round();
        self.current = (next as usize).clamp(self.min, self.max);
        self.current
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Batches costing `fixed + per_record * size`, fed back `steps` times.
    fn settle(sizer: &mut BatchSizer, fixed: Duration, per_record: Duration, steps: usize) {
        for _ in 0..steps {
            let size = sizer.current();
            sizer.record(size, fixed + per_record * size as u32);
        }
    }

    #[test]
    fn grows_at_most_twofold_per_batch_then_settles_on_the_target() {
        let mut sizer = BatchSizer::new(millis(500), 10, 10_000, 100);
        // 1 ms per record: 500 is right.
        assert_eq!(sizer.record(100, millis(100)), 200);
        assert_eq!(sizer.record(200, millis(200)), 400);
        assert_eq!(sizer.record(400, millis(400)), 500);
        assert_eq!(sizer.record(500, millis(500)), 500);
    }

    #[test]
    fn shrinks_at_once_when_a_batch_takes_too_long() {
        let mut sizer = BatchSizer::new(millis(500), 10, 10_000, 500);
        settle(&mut sizer, Duration::ZERO, millis(1), 10);
        assert_eq!(sizer.current(), 500);
        // The database slows tenfold: the next batch is sized from the slow one alone.
        assert_eq!(sizer.record(500, millis(5000)), 50);
    }

    #[test]
    fn converges_with_a_fixed_cost_per_batch() {
        let mut sizer = BatchSizer::new(millis(200), 1, 100_000, 1);
        // 20 ms per commit and 0.1 ms per record: (200 - 20) / 0.1 = 1,800 fits the target.
        settle(&mut sizer, millis(20), Duration::from_micros(100), 40);
        let size = sizer.current();
        assert!((1_500..=1_800).contains(&size), "{size}");
    }

    #[test]
    fn stays_between_min_and_max() {
        let mut sizer = BatchSizer::new(millis(100), 50, 300, 10_000);
        assert_eq!(sizer.current(), 300);
        settle(&mut sizer, Duration::ZERO, Duration::from_micros(1), 20);
        assert_eq!(sizer.current(), 300);
        settle(&mut sizer, Duration::ZERO, millis(100), 5);
        assert_eq!(sizer.current(), 50);
        // An instant batch (a clock too coarse to see it) grows, within the bounds; an empty
        // one says nothing.
        let mut fresh = BatchSizer::new(millis(100), 50, 300, 50);
        assert_eq!(fresh.record(50, Duration::ZERO), 100);
        assert_eq!(fresh.record(0, millis(9)), 100);
    }
}
