//! A batch that met another session's locks (a lock or statement timeout, a busy SQLite
//! database): retried as a whole, then split in halves down to single records, so that the
//! records that are free get migrated; a record still contended after its retries is left
//! for the next run, never recorded as a failure.
//!
//! The whole batch and each single record get `retry-attempts` tries with backoff; a half gets
//! one try, since the batch it came from already waited out its retries: a half that is still
//! contended is split again at once. One locked record in a batch of `n` then costs about
//! `2 * retry-attempts + log2(n)` lock waits, and the other `n - 1` records are migrated.

use std::ops::Range;
use std::time::Duration;

use crate::engine::job::Shared;
use crate::engine::migrator::{BatchError, Outcome};
use crate::engine::retry::backoff;
use crate::engine::trace;
use crate::migration::key::Key;

/// What became of one record of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its final outcome, after this many attempts.
    Done(Outcome, u32),
    /// Still contended after this many attempts (the last error): left for the next run, not
    /// recorded as a failure.
    Deferred(u32, String),
    /// Not settled: the run halted first, and the next run migrates it.
    Unsettled,
}

impl Settled {
    /// The same, counting `earlier` attempts made before the ones it counts.
    fn after(self, earlier: u32) -> Settled {
        match self {
            Settled::Done(outcome, attempts) => Settled::Done(outcome, attempts + earlier),
            Settled::Deferred(attempts, error) => Settled::Deferred(attempts + earlier, error),
            Settled::Unsettled => Settled::Unsettled,
        }
    }
}

/// A part of a contended batch still to settle.
#[derive(Debug)]
struct Part {
    /// Which of the batch's records.
    range: Range<usize>,
    /// Tries of this part so far.
    tries: u32,
    /// The last contention it met.
    error: String,
}

/// How a part's tries ended.
enum PartEnd {
    /// Every record of it is settled (or deferred).
    Settled,
    /// Still contended: these halves are to be tried.
    Split(Part, Part),
    /// The run halted: what is not settled stays so.
    Halted,
}

impl Shared {
    /// Settles `ids`, whose first try as a batch met contention (`error`), into `results`
    /// (one entry per id, in order).
    pub(crate) async fn migrate_contended(
        &self,
        ids: &[Key],
        error: String,
        results: &mut Vec<Settled>,
    ) {
        results.clear();
        results.resize(ids.len(), Settled::Unsettled);
        let mut attempts = vec![1u32; ids.len()];
        let mut parts = vec![Part {
            range: 0..ids.len(),
            tries: 1,
            error,
        }];
        while let Some(part) = parts.pop() {
            match self.try_part(ids, part, &mut attempts, results).await {
                PartEnd::Settled => {}
                PartEnd::Split(first, second) => {
                    // The first half first: the records keep their order as far as can be.
                    parts.push(second);
                    parts.push(first);
                }
                PartEnd::Halted => return,
            }
        }
    }

    /// Tries `part` of `ids` until it is no longer contended or has had its tries; then a
    /// single record is deferred and a larger part split.
    async fn try_part(
        &self,
        ids: &[Key],
        mut part: Part,
        attempts: &mut [u32],
        results: &mut [Settled],
    ) -> PartEnd {
        let single = part.range.len() == 1;
        let budget = if single || part.range.len() == ids.len() {
            self.config.retry_attempts
        } else {
            1
        };
        let keys = &ids[part.range.clone()];
        while part.tries < budget {
            if part.tries > 0 {
                if !self.back_off(part.tries).await {
                    return PartEnd::Halted;
                }
                match keys {
                    [key] => trace::retrying(key, attempts[part.range.start] + 1, &part.error),
                    keys => trace::retrying_batch(keys, part.tries + 1, &part.error),
                }
            } else if self.halt.is_cancelled() {
                return PartEnd::Halted;
            }
            part.tries += 1;
            attempts[part.range.clone()]
                .iter_mut()
                .for_each(|a| *a += 1);
            match self.try_migrate(keys).await {
                Err(BatchError::Contended(error)) => part.error = error.to_string(),
                tried => {
                    let mut settled = Vec::with_capacity(keys.len());
                    self.settle(keys, tried, &mut settled).await;
                    for (i, result) in part.range.clone().zip(settled) {
                        results[i] = result.after(attempts[i] - 1);
                    }
                    return PartEnd::Settled;
                }
            }
        }
        if single {
            let i = part.range.start;
            results[i] = Settled::Deferred(attempts[i], part.error);
            return PartEnd::Settled;
        }
        if self.halt.is_cancelled() {
            return PartEnd::Halted;
        }
        trace::splitting(keys, &part.error);
        let middle = part.range.start + part.range.len() / 2;
        let half = |range| Part {
            range,
            tries: 0,
            error: part.error.clone(),
        };
        PartEnd::Split(half(part.range.start..middle), half(middle..part.range.end))
    }

    /// Waits the backoff after `tries` tries; `false` when the run halts meanwhile.
    async fn back_off(&self, tries: u32) -> bool {
        let initial = Duration::from_millis(self.config.retry_initial_delay_millis);
        let max = Duration::from_millis(self.config.retry_max_delay_millis);
        tokio::select! {
            biased;
            () = self.halt.cancelled() => false,
            () = tokio::time::sleep(backoff(tries, initial, max)) => true,
        }
    }
}
