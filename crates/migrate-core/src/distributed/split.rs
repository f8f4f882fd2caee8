//! Splitting a migration's key space into ranges, through the migration's own paging (no SQL
//! of a table): integer keys by their minimum and maximum, other keys by sampling boundaries.

use crate::components::component::BoxError;
use crate::engine::checkpoint::KeyRange;
use crate::migration::Migration;
use crate::migration::key::{Key, KeyKind};

use super::ranges::PlannedRange;

/// The most ranges a plan has: beyond it ranges grow instead, so that the table of ranges and
/// the claims stay small.
pub const MAX_RANGES: u64 = 10_000;

/// How many keys a sampling page reads at once.
const SAMPLE_PAGE: usize = 10_000;

/// Ranges of about `target_rows` records each, covering every key of `migration`, present and
/// future: the first range has no lower bound and the last no upper bound.
pub async fn split(
    migration: &dyn Migration,
    target_rows: u64,
) -> Result<Vec<PlannedRange>, BoxError> {
    let target_rows = target_rows.max(1);
    match migration.key_columns() {
        [column] if column.kind == KeyKind::Integer => split_integers(migration, target_rows).await,
        _ => split_sampled(migration, target_rows).await,
    }
}

/// The first key after `after`, if any.
async fn first_after(migration: &dyn Migration, after: i64) -> Result<Option<i64>, BoxError> {
    let page = migration.page(Some(&Key::int(after)), None, 1).await?;
    Ok(page.first().and_then(Key::as_int))
}

/// The largest key, found by galloping then bisecting on `page(after, 1)`: about 2·log2 of
/// the key span in queries, each an index probe.
async fn largest(migration: &dyn Migration, first: i64) -> Result<i64, BoxError> {
    // Invariant: `low` is a key, and no key is above `high`.
    let mut low = first;
    let mut high = i64::MAX;
    let mut step: i64 = 1;
    loop {
        let probe = low.saturating_add(step);
        match first_after(migration, probe).await? {
            Some(key) => low = key,
            None => {
                high = probe;
                break;
            }
        }
        if probe == i64::MAX {
            break;
        }
        step = step.saturating_mul(2);
    }
    while low < high {
        let mid = low + (high - low) / 2;
        match first_after(migration, mid).await? {
            Some(key) => low = key,
            None => high = mid,
        }
    }
    Ok(low)
}

/// Integer keys: ranges of equal key span, sized so that each holds about `target_rows`
/// records when the keys are spread evenly (the count comes from `remaining` when the
/// migration can tell it; otherwise the keys are taken as dense).
async fn split_integers(
    migration: &dyn Migration,
    target_rows: u64,
) -> Result<Vec<PlannedRange>, BoxError> {
    let Some(first) = migration
        .page(None, None, 1)
        .await?
        .first()
        .and_then(Key::as_int)
    else {
        return Ok(vec![PlannedRange::Between(KeyRange::ALL)]);
    };
    let last = largest(migration, first).await?;
    let span = i128::from(last) - i128::from(first) + 1;
    let rows = match migration.remaining(None, None).await? {
        Some(rows) => i128::from(rows.max(1)),
        None => span,
    };
    let pieces = (rows + i128::from(target_rows) - 1) / i128::from(target_rows);
    let pieces = pieces.clamp(1, i128::from(MAX_RANGES));
    let width = (span + pieces - 1) / pieces;
    Ok(integer_ranges(first, width, pieces))
}

/// `pieces` ranges of `width` keys from `first`; the first and last unbounded outward.
fn integer_ranges(first: i64, width: i128, pieces: i128) -> Vec<PlannedRange> {
    let at = |i: i128| i64::try_from(i128::from(first) + i * width).unwrap_or(i64::MAX);
    (0..pieces)
        .map(|i| {
            PlannedRange::Between(KeyRange {
                // Bounds are exclusive: the range starts after the key before its first.
                after: (i > 0).then(|| Key::int(at(i).saturating_sub(1))),
                before: (i + 1 < pieces).then(|| Key::int(at(i + 1))),
            })
        })
        .collect()
}

/// Text, UUID and composite keys: one pass over the keys in the migration's order, a boundary
/// every `target_rows` keys. Bounds are exclusive and such keys have no successor, so the
/// boundary keys themselves form one more range of given keys.
async fn split_sampled(
    migration: &dyn Migration,
    target_rows: u64,
) -> Result<Vec<PlannedRange>, BoxError> {
    let mut boundaries: Vec<Key> = Vec::new();
    let mut after: Option<Key> = None;
    let mut since_boundary: u64 = 0;
    loop {
        let room = target_rows - since_boundary;
        let limit = usize::try_from(room).unwrap_or(usize::MAX).min(SAMPLE_PAGE);
        let page = migration.page(after.as_ref(), None, limit).await?;
        let Some(last) = page.last().cloned() else {
            break;
        };
        since_boundary += page.len() as u64;
        if since_boundary >= target_rows {
            boundaries.push(last.clone());
            since_boundary = 0;
        }
        after = Some(last);
        if page.len() < limit {
            break;
        }
    }
    // A boundary that is the very last key would leave an empty last range: harmless, and
    // the range still catches keys added later.
    Ok(sampled_ranges(boundaries))
}

/// Ranges between consecutive `boundaries`, and the range of the boundaries themselves.
fn sampled_ranges(boundaries: Vec<Key>) -> Vec<PlannedRange> {
    let mut ranges = Vec::with_capacity(boundaries.len() + 2);
    let mut after = None;
    for boundary in &boundaries {
        ranges.push(PlannedRange::Between(KeyRange {
            after: after.take(),
            before: Some(boundary.clone()),
        }));
        after = Some(boundary.clone());
    }
    ranges.push(PlannedRange::Between(KeyRange {
        after,
        before: None,
    }));
    if !boundaries.is_empty() {
        ranges.push(PlannedRange::Keys(boundaries));
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn between(after: Option<i64>, before: Option<i64>) -> PlannedRange {
        PlannedRange::Between(KeyRange {
            after: after.map(Key::int),
            before: before.map(Key::int),
        })
    }

    #[test]
    fn integer_ranges_are_contiguous_and_open_at_both_ends() {
        // Keys 1..=10 in ranges of 4: [1, 4], [5, 8], [9, ...).
        assert_eq!(
            integer_ranges(1, 4, 3),
            vec![
                between(None, Some(5)),
                between(Some(4), Some(9)),
                between(Some(8), None)
            ]
        );
        assert_eq!(integer_ranges(7, 100, 1), vec![between(None, None)]);
    }

    #[test]
    fn integer_ranges_near_the_largest_key_do_not_overflow() {
        let ranges = integer_ranges(i64::MAX - 9, 5, 2);
        assert_eq!(
            ranges,
            vec![
                between(None, Some(i64::MAX - 4)),
                between(Some(i64::MAX - 5), None)
            ]
        );
    }

    #[test]
    fn sampled_boundaries_get_a_range_of_their_own() {
        let b = |s: &str| Key::text(s);
        let ranges = sampled_ranges(vec![b("m"), b("t")]);
        assert_eq!(
            ranges,
            vec![
                PlannedRange::Between(KeyRange {
                    after: None,
                    before: Some(b("m"))
                }),
                PlannedRange::Between(KeyRange {
                    after: Some(b("m")),
                    before: Some(b("t"))
                }),
                PlannedRange::Between(KeyRange {
                    after: Some(b("t")),
                    before: None
                }),
                PlannedRange::Keys(vec![b("m"), b("t")]),
            ]
        );
        assert_eq!(sampled_ranges(Vec::new()), vec![between(None, None)]);
    }
}
