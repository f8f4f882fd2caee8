//! Gap-free progress: a low-water mark plus the ids finished above it.
//!
//! Jobs finish out of order, so "the last id done" would skip records still in flight after a
//! crash. The [`Tracker`] keeps the ids handed out in scan order and marks each when it is
//! finished; everything up to the first unfinished id is summed up as the low-water mark, and
//! the finished ids above it are listed. A rerun scans from the low-water mark and skips the
//! listed ids, so nothing unfinished is skipped and nothing finished is done again.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use crate::migration::key::{Key, KeySet};

/// A contiguous range of keys in the database's key order: the keys after `after` and before
/// `before`, both exclusive; `None` is unbounded. A run scans one range; several processes can
/// share a migration by range.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyRange {
    /// The range holds the keys after this one, or from the first.
    pub after: Option<Key>,
    /// The range holds the keys before this one, or to the last.
    pub before: Option<Key>,
}

impl KeyRange {
    /// Every key.
    pub const ALL: KeyRange = KeyRange {
        after: None,
        before: None,
    };
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.after, &self.before) {
            (None, None) => f.write_str("all"),
            (after, before) => write!(
                f,
                "({}, {})",
                after.as_ref().map_or("-inf".to_owned(), |k| k.to_string()),
                before.as_ref().map_or("+inf".to_owned(), |k| k.to_string())
            ),
        }
    }
}

/// Names one checkpoint: which migration, which key range, which input.
///
/// A run over given ids (`--file`) and a full scan of the same migration progress through
/// different sequences of ids, so each keeps its own checkpoint: resuming one from the other's
/// low-water mark would skip records, and finishing one must not clear the other's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointKey {
    /// The migration's name (`customer-migration`).
    pub migration: String,
    /// The key range the checkpoint covers.
    pub range: KeyRange,
    /// For a run over given ids: a digest of the ids ([`CheckpointKey::input_digest`]); `None`
    /// for a scan of the table.
    pub input: Option<String>,
}

impl CheckpointKey {
    /// The key of a scan of `range` of `migration`, or of a run over `input` when given.
    pub fn new(migration: &str, range: KeyRange, input: Option<&[Key]>) -> CheckpointKey {
        CheckpointKey {
            migration: migration.to_owned(),
            range,
            input: input.map(Self::input_digest),
        }
    }

    /// `ids:` and a 64-bit FNV-1a digest of the keys in order (as their lines of a keys file),
    /// in hex: stable across builds and platforms (unlike `std`'s hasher), so that a rerun with
    /// the same file finds its checkpoint.
    pub fn input_digest(keys: &[Key]) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for key in keys {
            for byte in key.to_string().bytes().chain([b'\n']) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        format!("ids:{hash:016x}")
    }

    /// What the checkpoint covers within its migration, as stored: `all`, `(10, 20)`, or
    /// `ids:0123456789abcdef all` for a run over given ids.
    pub fn scope(&self) -> String {
        match &self.input {
            Some(input) => format!("{input} {}", self.range),
            None => self.range.to_string(),
        }
    }
}

/// Saved progress of an unfinished run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Every scanned key up to and including this one, in scan order, is finished.
    pub low_water: Option<Key>,
    /// Finished keys scanned after the low-water mark.
    pub done_above: Vec<Key>,
}

/// What the scanner should do with an id it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Hand it to the jobs; report it finished with this sequence number.
    Send(u64),
    /// A previous run finished it: skip it.
    Skip,
}

/// The ids between the scanner and the finished work, in scan order.
///
/// The window between the low-water mark and the scanner is bounded: one slow record (a long
/// retry, a lock held by another session) holds the mark back while the scanner goes on, and
/// without a bound the ids finished above it, in memory and in every checkpoint saved, would
/// grow with the table. At the bound, the scanner waits for [`Tracker::room`].
#[derive(Debug)]
pub struct Tracker {
    window: Mutex<Window>,
    /// Most ids in the window before the scanner waits; changes with the batch size and the
    /// number of jobs ([`Tracker::set_limit`]).
    limit: AtomicUsize,
    /// Woken when the window shrinks.
    room: tokio::sync::Notify,
    /// Set once [`room`](Tracker::room) answered that the scan can go no further in this run:
    /// what the run's end reads, rather than asking [`stuck`](Tracker::stuck) again under a
    /// limit that may have changed since.
    gave_up: std::sync::atomic::AtomicBool,
}

#[derive(Debug)]
struct Window {
    /// Sequence number of `entries[0]`.
    first_seq: u64,
    /// Keys handed out and not yet folded into the low-water mark, with where each stands, in
    /// scan order.
    entries: VecDeque<(Key, State)>,
    /// Everything scanned up to here is finished.
    low_water: Option<Key>,
    /// Keys a previous run finished that the scanner has not met again yet. Met keys leave
    /// the set; keys whose rows vanished stay until the scan ends (the set is never larger
    /// than the checkpoint it came from). Keys are only compared for equality: the order is
    /// the database's.
    carried: KeySet,
    /// Whether anything changed since the last snapshot.
    dirty: bool,
}

impl Tracker {
    /// A tracker resuming from `checkpoint` (or from the start), with no bound on its window.
    pub fn new(checkpoint: Option<Checkpoint>) -> Tracker {
        Self::bounded(checkpoint, usize::MAX)
    }

    /// A tracker whose window holds about `limit` ids at most (a page more when a page
    /// arrives just under it).
    pub fn bounded(checkpoint: Option<Checkpoint>, limit: usize) -> Tracker {
        let checkpoint = checkpoint.unwrap_or_default();
        Tracker {
            limit: AtomicUsize::new(limit.max(1)),
            room: tokio::sync::Notify::new(),
            gave_up: std::sync::atomic::AtomicBool::new(false),
            window: Mutex::new(Window {
                first_seq: 0,
                entries: VecDeque::new(),
                low_water: checkpoint.low_water,
                carried: checkpoint.done_above.into_iter().collect(),
                dirty: false,
            }),
        }
    }

    /// Where the scan resumes: keys after this one.
    pub fn resume_after(&self) -> Option<Key> {
        self.lock().low_water.clone()
    }

    /// Registers a key the scanner read (keys must come in scan order).
    pub fn offer(&self, key: Key) -> Offer {
        self.lock().offer(key)
    }

    /// Registers a page of keys in scan order under one lock, calling `send(seq, key)` for each
    /// key to hand out (those a previous run finished are skipped).
    pub fn offer_page(&self, keys: Vec<Key>, mut send: impl FnMut(u64, Key)) {
        let mut w = self.lock();
        for key in keys {
            if let Offer::Send(seq) = w.offer(key.clone()) {
                send(seq, key);
            }
        }
    }

    /// Marks the ids with these sequence numbers finished.
    pub fn complete(&self, seqs: impl IntoIterator<Item = u64>) {
        self.settle(seqs, State::Done);
    }

    /// Marks the ids with these sequence numbers left for the next run (a lock held by another
    /// session outlasted their retries): not finished, so the low-water mark stays behind them
    /// and the next run migrates them, but no longer in flight in this run.
    pub fn defer(&self, seqs: impl IntoIterator<Item = u64>) {
        self.settle(seqs, State::Deferred);
        // The window does not shrink, but a scanner waiting for room may now be stuck.
        self.room.notify_waiters();
    }

    fn settle(&self, seqs: impl IntoIterator<Item = u64>, state: State) {
        let mut w = self.lock();
        let before = w.entries.len();
        for seq in seqs {
            let index = (seq - w.first_seq) as usize;
            w.entries[index].1 = state;
        }
        w.fold();
        // Only a window at its limit can have the scanner waiting (see `room`).
        let limit = self.limit.load(Ordering::Relaxed);
        let freed = before >= limit && w.entries.len() < limit;
        drop(w);
        if freed {
            self.room.notify_waiters();
        }
    }

    /// Waits until the window is below its limit: `true`. `false` when it never will in this
    /// run: it is full and a deferred id holds the low-water mark (see [`Tracker::stuck`]).
    pub async fn room(&self) -> bool {
        loop {
            // Registered before the check, so that a shrink in between is not missed.
            let shrunk = self.room.notified();
            {
                let w = self.lock();
                let limit = self.limit.load(Ordering::Relaxed);
                if w.entries.len() < limit {
                    return true;
                }
                if w.stuck(limit) {
                    self.gave_up.store(true, Ordering::Relaxed);
                    return false;
                }
            }
            shrunk.await;
        }
    }

    /// Whether [`room`](Tracker::room) ever answered that the window is stuck: the scan
    /// stopped there, and the run ends with what it could do.
    pub fn scan_gave_up(&self) -> bool {
        self.gave_up.load(Ordering::Relaxed)
    }

    /// Whether the window is full behind a deferred id: only the next run can move the
    /// low-water mark, so the scanner can go no further in this one.
    pub fn stuck(&self) -> bool {
        self.lock().stuck(self.limit.load(Ordering::Relaxed))
    }

    /// Changes the most ids in the window (at least 1); a scanner waiting at a lower limit
    /// goes on.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit.max(1), Ordering::Relaxed);
        self.room.notify_waiters();
    }

    /// Ids in the window: scanned and not yet folded into the low-water mark.
    pub fn window_len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Ids handed out and neither finished nor deferred.
    pub fn in_flight(&self) -> usize {
        self.count(State::Pending)
    }

    /// Ids deferred to the next run (see [`Tracker::defer`]).
    pub fn deferred(&self) -> usize {
        self.count(State::Deferred)
    }

    fn count(&self, state: State) -> usize {
        self.lock()
            .entries
            .iter()
            .filter(|(_, s)| *s == state)
            .count()
    }

    /// The progress to save, and whether it changed since the last call.
    pub fn snapshot(&self) -> (Checkpoint, bool) {
        let mut w = self.lock();
        let changed = std::mem::take(&mut w.dirty);
        let mut done_above: Vec<Key> = w
            .entries
            .iter()
            .filter(|(_, state)| *state == State::Done)
            .map(|(key, _)| key.clone())
            .collect();
        done_above.extend(w.carried.iter().cloned());
        (
            Checkpoint {
                low_water: w.low_water.clone(),
                done_above,
            },
            changed,
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().expect("tracker lock poisoned")
    }
}

/// Where an id of the window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Handed to the jobs, not settled yet.
    Pending,
    /// Finished: migrated, found migrated or gone, or failed and recorded.
    Done,
    /// Left for the next run, which meets it again: the checkpoint stays behind it.
    Deferred,
}

impl Window {
    /// See [`Tracker::stuck`].
    fn stuck(&self, limit: usize) -> bool {
        self.entries.len() >= limit && matches!(self.entries.front(), Some((_, State::Deferred)))
    }

    /// See [`Tracker::offer`].
    fn offer(&mut self, key: Key) -> Offer {
        // Most runs carry nothing: no key is hashed then.
        if !self.carried.is_empty() && self.carried.remove(&key) {
            self.entries.push_back((key, State::Done));
            self.fold();
            return Offer::Skip;
        }
        let seq = self.first_seq + self.entries.len() as u64;
        self.entries.push_back((key, State::Pending));
        Offer::Send(seq)
    }

    /// Moves the low-water mark past every finished key at the front.
    fn fold(&mut self) {
        self.dirty = true;
        while let Some((_, State::Done)) = self.entries.front() {
            let (key, _) = self.entries.pop_front().expect("a front entry");
            self.low_water = Some(key);
            self.first_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(id: i64) -> Key {
        Key::int(id)
    }

    fn keys(ids: &[i64]) -> Vec<Key> {
        ids.iter().copied().map(Key::int).collect()
    }

    fn send(t: &Tracker, id: i64) -> u64 {
        match t.offer(k(id)) {
            Offer::Send(seq) => seq,
            Offer::Skip => panic!("{id} skipped"),
        }
    }

    #[test]
    fn low_water_waits_for_the_slowest_job() {
        let t = Tracker::new(None);
        let a = send(&t, 10);
        let b = send(&t, 20);
        let c = send(&t, 30);
        t.complete([c, b]);
        let (cp, changed) = t.snapshot();
        assert!(changed);
        assert_eq!(cp.low_water, None);
        assert_eq!(cp.done_above, keys(&[20, 30]));
        t.complete([a]);
        assert_eq!(
            t.snapshot().0,
            Checkpoint {
                low_water: Some(k(30)),
                done_above: vec![]
            }
        );
        assert!(!t.snapshot().1, "nothing changed since the last snapshot");
    }

    #[test]
    fn resume_skips_finished_ids_and_keeps_those_not_reached_yet() {
        let t = Tracker::new(Some(Checkpoint {
            low_water: Some(k(10)),
            done_above: keys(&[30, 50, 70]),
        }));
        assert_eq!(t.resume_after(), Some(k(10)));
        let s20 = send(&t, 20);
        assert_eq!(t.offer(k(30)), Offer::Skip);
        // 40 is in flight; 50 and 70 have not been reached and must stay in the checkpoint.
        let _s40 = send(&t, 40);
        t.complete([s20]);
        let (cp, _) = t.snapshot();
        assert_eq!(cp.low_water, Some(k(30)));
        let mut above = cp.done_above;
        above.sort_by_key(|key| key.as_int());
        assert_eq!(above, keys(&[50, 70]));
    }

    #[test]
    fn carried_keys_not_met_again_stay_done_and_text_keys_need_no_order() {
        // Keys are only compared for equality: text in any collation works.
        let t = Tracker::new(Some(Checkpoint {
            low_water: None,
            done_above: vec![Key::text("b"), Key::text("gone")],
        }));
        let a = match t.offer(Key::text("A")) {
            Offer::Send(seq) => seq,
            Offer::Skip => panic!("A skipped"),
        };
        assert_eq!(t.offer(Key::text("b")), Offer::Skip);
        t.complete([a]);
        let (cp, _) = t.snapshot();
        assert_eq!(cp.low_water, Some(Key::text("b")));
        // A key whose row vanished is kept: harmless, and bounded by the checkpoint it came from.
        assert_eq!(cp.done_above, [Key::text("gone")]);
    }

    #[test]
    fn given_ids_have_a_checkpoint_of_their_own() {
        let scan = CheckpointKey::new("m", KeyRange::ALL, None);
        let file = CheckpointKey::new("m", KeyRange::ALL, Some(&keys(&[1, 2, 3])));
        let other = CheckpointKey::new("m", KeyRange::ALL, Some(&keys(&[1, 2, 4])));
        assert_eq!(scan.scope(), "all");
        assert_ne!(file.scope(), scan.scope());
        assert_ne!(file.scope(), other.scope());
        assert_eq!(
            file,
            CheckpointKey::new("m", KeyRange::ALL, Some(&keys(&[1, 2, 3]))),
            "the same ids give the same key"
        );
        // Pinned: a rerun after an upgrade must find the checkpoint of the same file.
        assert_eq!(CheckpointKey::input_digest(&[]), "ids:cbf29ce484222325");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_window_waits_for_the_slowest_record() {
        let t = std::sync::Arc::new(Tracker::bounded(None, 3));
        let stuck = send(&t, 1);
        let others: Vec<u64> = [2, 3].iter().map(|&id| send(&t, id)).collect();
        t.complete(others);
        assert_eq!(t.window_len(), 3, "the slow record holds the mark");
        let waiting = tokio::spawn({
            let t = std::sync::Arc::clone(&t);
            async move { t.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(
            !waiting.is_finished(),
            "no room while the slow record is out"
        );
        t.complete([stuck]);
        assert!(waiting.await.unwrap(), "room");
        assert_eq!(t.window_len(), 0);
        assert_eq!(t.snapshot().0.low_water, Some(k(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferred_record_holds_the_mark_and_a_full_window_behind_it_is_stuck() {
        let t = std::sync::Arc::new(Tracker::bounded(Some(Checkpoint::default()), 3));
        let first = send(&t, 1);
        t.complete([first]);
        let locked = send(&t, 2);
        let others: Vec<u64> = [3, 4].iter().map(|&id| send(&t, id)).collect();
        t.complete(others);
        let waiting = tokio::spawn({
            let t = std::sync::Arc::clone(&t);
            async move { t.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        assert!(!waiting.is_finished(), "no room while the record is out");
        assert!(!t.stuck(), "the record may still pass");
        t.defer([locked]);
        assert_eq!((t.in_flight(), t.deferred()), (0, 1));
        assert!(t.stuck(), "the window is full behind the deferred record");
        assert!(!t.scan_gave_up());
        assert!(
            !waiting.await.unwrap(),
            "a waiting scanner learns it is stuck"
        );
        // A larger limit later (a larger batch size) leaves room, but the scan has stopped:
        // the run's end must still know it gave up, not read it as an interruption.
        t.set_limit(10);
        assert!(!t.stuck());
        assert!(t.scan_gave_up());
        let (checkpoint, _) = t.snapshot();
        // The next run resumes before the deferred record and skips those done after it.
        assert_eq!(checkpoint.low_water, Some(k(1)));
        assert_eq!(checkpoint.done_above, [k(3), k(4)]);
    }

    #[test]
    fn ranges_read_as_open_intervals() {
        let r = KeyRange {
            after: Some(k(10)),
            before: Some(k(20)),
        };
        assert_eq!(r.to_string(), "(10, 20)");
        assert_eq!(KeyRange::ALL.to_string(), "all");
    }
}
