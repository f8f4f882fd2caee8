//! Backoff between attempts, and the run's rate limit.

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
/// and waits for it, so the limit holds without a background task.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    next: Mutex<Option<Instant>>,
}

impl RateLimit {
    /// `None` when the limit is 0 (none).
    pub(crate) fn new(per_second: u64) -> Option<RateLimit> {
        (per_second > 0).then(|| RateLimit {
            interval: Duration::from_secs(1) / per_second.min(u32::MAX as u64) as u32,
            next: Mutex::new(None),
        })
    }

    /// Waits until `records` more records may go.
    pub(crate) async fn acquire(&self, records: usize) {
        let start = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let start = next.map_or(now, |n| n.max(now));
            *next = Some(start + self.interval * records as u32);
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
        let limit = RateLimit::new(10).unwrap();
        let started = Instant::now();
        for _ in 0..21 {
            limit.acquire(1).await;
        }
        // 21 records at 10/s: the last may start after 2 seconds, not before.
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert!(RateLimit::new(0).is_none());
    }
}
