//! Backoff between attempts, and the run's rate limit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long to wait before attempt `attempt + 1` (the first retry is after attempt 1):
/// `initial * 2^(attempt-1)`, capped at `max`, then "equal jitter" (a random point in its upper
/// half) so that jobs failing together do not retry together.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let delay = initial.saturating_mul(1 << exponent).min(max);
    let half = delay / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// At most `per_second` records per second across all jobs: each job reserves its batch's slot
/// and waits for it, so the limit holds without a background task. The limit can change while
/// the run goes on ([`RateLimit::set`]); 0 is no limit.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// Time between two records in nanoseconds; 0 for no limit.
    interval_nanos: AtomicU64,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// A limit of `per_second` records per second, 0 for none.
    pub(crate) fn new(per_second: u64) -> RateLimit {
        let limit = RateLimit {
            interval_nanos: AtomicU64::new(0),
            next: Mutex::new(None),
        };
        limit.set(per_second);
        limit
    }

    /// Changes the limit from the next batch on; 0 lifts it.
    pub(crate) fn set(&self, per_second: u64) {
        let nanos = match per_second {
            0 => 0,
            n => (1_000_000_000 / n).max(1),
        };
        self.interval_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The limit in records per second, 0 for none.
    pub(crate) fn per_second(&self) -> u64 {
        match self.interval_nanos.load(Ordering::Relaxed) {
            0 => 0,
            nanos => 1_000_000_000 / nanos,
        }
    }

    /// Waits until `records` more records may go.
    pub(crate) async fn acquire(&self, records: usize) {
        let nanos = self.interval_nanos.load(Ordering::Relaxed);
        if nanos == 0 {
            return;
        }
        let interval = Duration::from_nanos(nanos);
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + interval * records as u32);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for _ in 0..200 {
            let first = backoff(1, initial, max);
            assert!(
                first >= Duration::from_millis(50) && first <= initial,
                "{first:?}"
            );
            let third = backoff(3, initial, max);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = backoff(20, initial, max);
            assert!(late >= Duration::from_millis(500) && late <= max);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_records_evenly() {
        let limit = RateLimit::new(10);
        let started = Instant::now();
        for _ in 0..21 {
            limit.acquire(1).await;
        }
        // 21 records at 10/s: the last may start after 2 seconds, not before.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_changes_from_the_next_batch() {
        let limit = RateLimit::new(10);
        assert_eq!(limit.per_second(), 10);
        limit.acquire(10).await;
        limit.set(100);
        let started = Instant::now();
        // The 10 reserved at 10/s end one second in; then 100 at 100/s.
        limit.acquire(100).await;
        limit.acquire(1).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        limit.set(0);
        assert_eq!(limit.per_second(), 0);
        let now = Instant::now();
        limit.acquire(1_000_000).await;
        limit.acquire(1).await;
        assert_eq!(now.elapsed(), Duration::ZERO);
    }
}
