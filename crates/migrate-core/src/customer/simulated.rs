//! The seed's simulated backend: made-up customer ids and sleeps where the database work would
//! be. Kept for demos and to measure the engine alone (`sleep-scale = 0`).
//!
//! Everything is a function of the id, so reruns see the same customers, the same ~30% already
//! migrated and the same failing records.

use std::time::Duration;

/// First simulated id; ids then grow by 1 to 100.
const FIRST_ID: i64 = 10_000;
/// Ids are spread over this stride, one per stride, at a pseudo-random offset.
const STRIDE: i64 = 100;

/// The most customers the simulated backend can hold: the last id,
/// `FIRST_ID + (MAX_CUSTOMERS - 1) * STRIDE + STRIDE - 1`, still fits an `i64`.
pub(crate) const MAX_CUSTOMERS: u64 = ((i64::MAX - FIRST_ID - (STRIDE - 1)) / STRIDE + 1) as u64;

/// A stable 64-bit mix of `x` (splitmix64's finaliser).
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `index`-th simulated customer id (ascending in `index`).
fn id_at(index: u64) -> i64 {
    FIRST_ID + index as i64 * STRIDE + (mix(index) % STRIDE as u64) as i64
}

/// Up to `limit` ids above `after`, ascending, out of `customers` in all.
pub(crate) fn page(customers: u64, after: Option<i64>, limit: usize) -> Vec<i64> {
    let mut index = match after {
        Some(after) if after >= FIRST_ID => ((after - FIRST_ID) / STRIDE) as u64,
        _ => 0,
    };
    while index < customers && after.is_some_and(|a| id_at(index) <= a) {
        index += 1;
    }
    (index..customers.min(index + limit as u64))
        .map(id_at)
        .collect()
}

/// How many simulated ids lie above `after`.
pub(crate) fn remaining(customers: u64, after: Option<i64>) -> u64 {
    let Some(after) = after else {
        return customers;
    };
    match page(customers, Some(after), 1).first() {
        Some(&next) => customers - ((next - FIRST_ID) / STRIDE) as u64,
        None => 0,
    }
}

/// About 30% of the simulated customers are already migrated, as in the seed.
pub(crate) fn previously_migrated(id: i64) -> bool {
    mix(id as u64 ^ 0xA5A5) % 100 < 30
}

/// Whether this record fails, for a failure rate between 0 and 1.
pub(crate) fn fails(id: i64, failure_rate: f64) -> bool {
    failure_rate > 0.0 && (mix(id as u64 ^ 0x5EED) % 1_000_000) as f64 / 1_000_000.0 < failure_rate
}

/// The seed's check: 10 to 59 ms, scaled.
pub(crate) fn check_time(id: i64, scale: f64) -> Duration {
    scaled(10 + mix(id as u64 ^ 0xC0FFEE) % 50, scale)
}

/// The seed's migration: 50 to 249 ms, scaled.
pub(crate) fn migrate_time(id: i64, scale: f64) -> Duration {
    scaled(50 + mix(id as u64 ^ 0xBEEF) % 200, scale)
}

fn scaled(millis: u64, scale: f64) -> Duration {
    Duration::from_secs_f64(millis as f64 * scale / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_simulated_table_keeps_its_last_ids_in_range() {
        let last = id_at(MAX_CUSTOMERS - 1);
        let before = id_at(MAX_CUSTOMERS - 3);
        assert!(before < last && last <= i64::MAX - (STRIDE - 1 - last % STRIDE));
        let tail = page(MAX_CUSTOMERS, Some(before), 10);
        assert_eq!(tail, [id_at(MAX_CUSTOMERS - 2), last]);
        assert_eq!(remaining(MAX_CUSTOMERS, Some(before)), 2);
        assert!(page(MAX_CUSTOMERS, Some(last), 10).is_empty());
    }

    #[test]
    fn pages_are_ascending_contiguous_and_complete() {
        let mut after = None;
        let mut all = Vec::new();
        loop {
            let page = page(1031, after, 100);
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 100);
            after = page.last().copied();
            all.extend(page);
        }
        assert_eq!(all.len(), 1031);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(remaining(1031, None), 1031);
        assert_eq!(remaining(1031, Some(all[99])), 931);
        assert_eq!(remaining(1031, Some(all[1030])), 0);
        assert_eq!(page(1031, Some(all[99]), 1), vec![all[100]]);
        assert_eq!(page(1031, Some(all[99] + 1), 1), vec![all[100]]);
    }

    #[test]
    fn about_thirty_percent_are_already_migrated() {
        let ids = page(10_000, None, 10_000);
        let share = ids.iter().filter(|&&id| previously_migrated(id)).count();
        assert!((2700..3300).contains(&share), "{share}");
    }

    #[test]
    fn failure_rate_is_respected_and_stable() {
        let ids = page(100_000, None, 100_000);
        let failing = ids.iter().filter(|&&id| fails(id, 0.01)).count();
        assert!((800..1200).contains(&failing), "{failing}");
        assert!(ids.iter().all(|&id| !fails(id, 0.0)));
    }

    #[test]
    fn sleeps_follow_the_seed_and_scale_to_zero() {
        for id in page(1000, None, 1000) {
            let check = check_time(id, 1.0).as_millis();
            let migrate = migrate_time(id, 1.0).as_millis();
            assert!((10..60).contains(&check));
            assert!((50..250).contains(&migrate));
            assert_eq!(check_time(id, 0.0), Duration::ZERO);
        }
    }
}
