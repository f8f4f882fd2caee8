//! The result of a run, and the seed's way of saying it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::migration::Noun;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ending {
    /// Every scanned record was handled.
    Completed,
    /// Stopped on request (Ctrl-C, SIGTERM, a cancelled token); progress was saved.
    Interrupted,
    /// Stopped by the engine: too many failures, or a fatal error (see `Summary::abort_reason`).
    Aborted,
}

/// Counts and timing of one run. Counts from runs over separate key ranges add up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// What the records are called (`customer`, `customers`).
    #[serde(default)]
    pub noun: Noun,
    /// Records migrated by this run (on a dry run: records that need migrating).
    pub migrated: u64,
    /// Records found already migrated.
    pub previously_migrated: u64,
    /// Records that no longer existed when their turn came (deleted since the scan read them):
    /// nothing to migrate, and not a failure.
    #[serde(default)]
    pub gone: u64,
    /// Records that failed and were recorded.
    pub failed: u64,
    /// Records left for the next run: another session held them (a lock or statement timeout,
    /// a busy SQLite database) through every retry. Not failures: the checkpoint stays behind
    /// them, so the next run migrates them. A run that defers records has not finished the
    /// migration.
    #[serde(default)]
    pub deferred: u64,
    /// Failures recorded for this migration, by this run or an earlier one, that no run has
    /// resolved since; `None` when the store cannot tell (or on a dry run). A run that
    /// completes with open failures has not finished the migration.
    #[serde(default)]
    pub open_failures: Option<u64>,
    /// Records the scanner handed to the jobs.
    pub scanned: u64,
    /// Wall-clock time of the run.
    #[serde(with = "millis")]
    pub elapsed: Duration,
    /// Whether the run checked and counted only.
    pub dry_run: bool,
    /// How the run ended.
    pub ending: Ending,
    /// Why the run was aborted, when it was.
    pub abort_reason: Option<String>,
    /// Where the failures were recorded (a file path or a table), when any failed.
    pub failures_recorded_in: Option<String>,
    /// The batch size at the end of the run (it changes when it adapts); `None` from a run that
    /// did not say.
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Seconds the run spent paused (see [`RunControl`](crate::RunControl)).
    #[serde(default)]
    pub paused_seconds: f64,
    /// Seconds the run spent throttled by the database's health.
    #[serde(default)]
    pub throttled_seconds: f64,
}

impl Summary {
    /// A run that handled nothing, completed: what [`Summary::merge`] starts from when several
    /// ranges make one migration.
    pub fn empty(noun: Noun) -> Summary {
        Summary {
            noun,
            migrated: 0,
            previously_migrated: 0,
            gone: 0,
            deferred: 0,
            failed: 0,
            open_failures: None,
            scanned: 0,
            elapsed: Duration::ZERO,
            dry_run: false,
            ending: Ending::Completed,
            abort_reason: None,
            failures_recorded_in: None,
            batch_size: None,
            paused_seconds: 0.0,
            throttled_seconds: 0.0,
        }
    }

    /// Failures recorded by earlier runs that are still open: the run completed without a
    /// failure of its own, but the migration still has records that failed.
    pub fn earlier_open_failures(&self) -> u64 {
        self.open_failures
            .map_or(0, |open| open.saturating_sub(self.failed))
    }

    /// Whether the run was interrupted on request.
    pub fn interrupted(&self) -> bool {
        self.ending == Ending::Interrupted
    }

    /// Adds another run's counts to these, as when several ranges make one migration.
    pub fn merge(&mut self, other: &Summary) {
        self.migrated += other.migrated;
        self.previously_migrated += other.previously_migrated;
        self.gone += other.gone;
        self.failed += other.failed;
        self.deferred += other.deferred;
        self.scanned += other.scanned;
        self.elapsed = self.elapsed.max(other.elapsed);
        self.paused_seconds = self.paused_seconds.max(other.paused_seconds);
        self.throttled_seconds = self.throttled_seconds.max(other.throttled_seconds);
        self.batch_size = self.batch_size.or(other.batch_size);
    }
}

impl fmt::Display for Summary {
    /// `Migrated 1,234 customers (345 previously migrated, 2 failures) in 1 minute, 5 seconds`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "Migration needed for"
        } else {
            "Migrated"
        };
        write!(
            f,
            "{verb} {} {} ({} previously migrated, ",
            thousands(self.migrated),
            self.noun.count(self.migrated),
            thousands(self.previously_migrated),
        )?;
        if self.gone > 0 {
            write!(f, "{} gone, ", thousands(self.gone))?;
        }
        write!(
            f,
            "{} {}) in {}",
            thousands(self.failed),
            plural(self.failed, "failure", "failures"),
            spell_duration(self.elapsed),
        )?;
        self.fmt_held(f)?;
        if self.deferred > 0 {
            write!(
                f,
                "; {} {} left for the next run (locked by another session)",
                thousands(self.deferred),
                self.noun.count(self.deferred),
            )?;
        }
        match self.ending {
            Ending::Completed => match self.earlier_open_failures() {
                0 => Ok(()),
                open => write!(
                    f,
                    "; {} {} recorded by earlier runs still open",
                    thousands(open),
                    plural(open, "failure", "failures")
                ),
            },
            Ending::Interrupted => f.write_str("; interrupted, progress saved"),
            Ending::Aborted => write!(
                f,
                "; aborted: {}",
                self.abort_reason.as_deref().unwrap_or("fatal error")
            ),
        }
    }
}

impl Summary {
    /// `, of which 12 seconds throttled and 3 seconds paused`, when the run was held a second
    /// or more.
    fn fmt_held(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held: Vec<String> = [
            (self.throttled_seconds, "throttled"),
            (self.paused_seconds, "paused"),
        ]
        .into_iter()
        .filter(|&(seconds, _)| seconds >= 1.0)
        .map(|(seconds, what)| {
            let spelled = spell_duration(Duration::from_secs_f64(seconds));
            format!("{spelled} {what}")
        })
        .collect();
        match held.as_slice() {
            [] => Ok(()),
            held => write!(f, ", of which {}", held.join(" and ")),
        }
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Elapsed time as the seed spells it: `less than a second`, `7 seconds`,
/// `1 minute, 5 seconds`, `2 hours, 1 minute`.
pub fn spell_duration(elapsed: Duration) -> String {
    let total = elapsed.as_secs();
    if total == 0 {
        return "less than a second".to_owned();
    }
    let (hours, minutes, seconds) = (total / 3600, total / 60 % 60, total % 60);
    let parts: Vec<String> = [(hours, "hour"), (minutes, "minute"), (seconds, "second")]
        .into_iter()
        .filter(|&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n} {unit}{}", if n == 1 { "" } else { "s" }))
        .collect();
    parts.join(", ")
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(migrated: u64, previously: u64, failed: u64, secs: u64) -> Summary {
        Summary {
            migrated,
            previously_migrated: previously,
            failed,
            scanned: migrated + previously + failed,
            elapsed: Duration::from_secs(secs),
            ..Summary::empty(Noun::new("customer", "customers"))
        }
    }

    #[test]
    fn reads_as_the_seed() {
        assert_eq!(
            summary(1234, 345, 2, 65).to_string(),
            "Migrated 1,234 customers (345 previously migrated, 2 failures) in 1 minute, 5 seconds"
        );
        assert_eq!(
            summary(723, 308, 0, 7).to_string(),
            "Migrated 723 customers (308 previously migrated, 0 failures) in 7 seconds"
        );
        assert_eq!(
            summary(1, 0, 1, 0).to_string(),
            "Migrated 1 customer (0 previously migrated, 1 failure) in less than a second"
        );
    }

    #[test]
    fn gone_records_and_open_failures_of_earlier_runs_are_said_when_there_are_some() {
        let mut s = summary(10, 2, 1, 1);
        s.gone = 3;
        s.open_failures = Some(5);
        assert_eq!(
            s.to_string(),
            "Migrated 10 customers (2 previously migrated, 3 gone, 1 failure) in 1 second; \
             4 failures recorded by earlier runs still open"
        );
        s.open_failures = Some(1);
        assert_eq!(s.earlier_open_failures(), 0);
        assert!(!s.to_string().contains("open"), "{s}");
    }

    #[test]
    fn dry_run_interrupted_and_aborted_say_so() {
        let mut s = summary(5, 1, 0, 3601);
        s.dry_run = true;
        assert_eq!(
            s.to_string(),
            "Migration needed for 5 customers (1 previously migrated, 0 failures) in 1 hour, 1 second"
        );
        s.dry_run = false;
        s.ending = Ending::Interrupted;
        assert!(s.to_string().ends_with("; interrupted, progress saved"));
        s.ending = Ending::Aborted;
        s.abort_reason = Some("more than 3 failures".into());
        assert!(s.to_string().ends_with("; aborted: more than 3 failures"));
    }

    #[test]
    fn records_left_for_the_next_run_are_said_apart_from_failures() {
        let mut s = summary(10, 2, 1, 1);
        s.deferred = 3;
        assert_eq!(
            s.to_string(),
            "Migrated 10 customers (2 previously migrated, 1 failure) in 1 second; 3 customers \
             left for the next run (locked by another session)"
        );
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["deferred"], 3);
        let mut total = summary(1, 0, 0, 1);
        total.merge(&s);
        assert_eq!(total.deferred, 3);
    }

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
