//! The run's metrics, through the `metrics` facade: recorded where things happen, so that any
//! recorder sees them (the CLI's Prometheus exporter, or an embedding service's own).
//!
//! Every name, description and unit is declared here, once ([`describe_metrics`]). Every metric
//! carries the label `migration` (the migration's name), so that several migrations in one
//! process, or one Prometheus, stay apart. Without an installed recorder every call is a no-op.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};

/// Records handled, by `outcome`: `migrated`, `previously_migrated`, `gone` or `failed` (a
/// counter; on a dry run `migrated` counts the records that need migrating).
pub const RECORDS_TOTAL: &str = "db_migrate_records_total";
/// Attempts beyond the first, over all records (a counter).
pub const RETRIES_TOTAL: &str = "db_migrate_retries_total";
/// Batches handed to the migrator, retries of their records included (a counter).
pub const BATCHES_TOTAL: &str = "db_migrate_batches_total";
/// Time to migrate one batch, retries included, in seconds (a histogram).
pub const BATCH_DURATION_SECONDS: &str = "db_migrate_batch_duration_seconds";
/// Records per batch the jobs take now (a gauge).
pub const BATCH_SIZE: &str = "db_migrate_batch_size";
/// The rate limit in force, in records per second; 0 for none (a gauge).
pub const RATE_LIMIT: &str = "db_migrate_rate_limit";
/// Jobs migrating a batch right now (a gauge).
pub const JOBS_BUSY: &str = "db_migrate_jobs_busy";
/// 1 while the run is throttled (no batch starts), 0 otherwise (a gauge).
pub const THROTTLED: &str = "db_migrate_throttled";
/// Time the run has spent throttled, in seconds (a gauge that only grows during a run).
pub const THROTTLED_SECONDS: &str = "db_migrate_throttled_seconds";

/// The label every metric carries.
pub const MIGRATION_LABEL: &str = "migration";
/// The label of [`RECORDS_TOTAL`].
pub const OUTCOME_LABEL: &str = "outcome";

/// Declares every metric's unit and description to the installed recorder. Called at the start
/// of every run; an embedder that installs its recorder later may call it again.
pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        RECORDS_TOTAL,
        Unit::Count,
        "Records handled, by outcome: migrated, previously_migrated, gone, failed, deferred."
    );
    describe_counter!(
        RETRIES_TOTAL,
        Unit::Count,
        "Attempts beyond the first to migrate a record."
    );
    describe_counter!(
        BATCHES_TOTAL,
        Unit::Count,
        "Batches handed to the migrator."
    );
    describe_histogram!(
        BATCH_DURATION_SECONDS,
        Unit::Seconds,
        "Time to migrate one batch, retries included."
    );
    describe_gauge!(
        BATCH_SIZE,
        Unit::Count,
        "Records per batch the jobs take now."
    );
    describe_gauge!(
        RATE_LIMIT,
        Unit::Count,
        "Rate limit in force, records per second (0: none)."
    );
    describe_gauge!(JOBS_BUSY, Unit::Count, "Jobs migrating a batch right now.");
    describe_gauge!(THROTTLED, "1 while the run is throttled, 0 otherwise.");
    describe_gauge!(
        THROTTLED_SECONDS,
        Unit::Seconds,
        "Time the run has spent throttled."
    );
}

/// One run's metric handles, registered once with the migration's label so that the jobs'
/// hot loop only adds to them.
#[derive(Debug, Clone)]
pub(crate) struct RunMetrics {
    migrated: Counter,
    previously_migrated: Counter,
    gone: Counter,
    failed: Counter,
    /// Records left for the next run, still locked by another session.
    deferred: Counter,
    retries: Counter,
    batches: Counter,
    batch_duration: Histogram,
    batch_size: Gauge,
    rate_limit: Gauge,
    jobs_busy: Gauge,
    throttled: Gauge,
    throttled_seconds: Gauge,
}

impl RunMetrics {
    /// Registers the metrics of migration `name` with the installed recorder (after describing
    /// them), for a run that starts with `batch_size` and `rate_limit`.
    pub(crate) fn new(name: &str, batch_size: usize, rate_limit: u64) -> RunMetrics {
        describe_metrics();
        let records = |outcome: &'static str| metrics::counter!(RECORDS_TOTAL, MIGRATION_LABEL => name.to_owned(), OUTCOME_LABEL => outcome);
        let label = || [(MIGRATION_LABEL, name.to_owned())];
        let run = RunMetrics {
            migrated: records("migrated"),
            previously_migrated: records("previously_migrated"),
            gone: records("gone"),
            failed: records("failed"),
            deferred: records("deferred"),
            retries: metrics::counter!(RETRIES_TOTAL, &label()),
            batches: metrics::counter!(BATCHES_TOTAL, &label()),
            batch_duration: metrics::histogram!(BATCH_DURATION_SECONDS, &label()),
            batch_size: metrics::gauge!(BATCH_SIZE, &label()),
            rate_limit: metrics::gauge!(RATE_LIMIT, &label()),
            jobs_busy: metrics::gauge!(JOBS_BUSY, &label()),
            throttled: metrics::gauge!(THROTTLED, &label()),
            throttled_seconds: metrics::gauge!(THROTTLED_SECONDS, &label()),
        };
        run.started(batch_size, rate_limit);
        run
    }

    /// The run starts: the settings it starts with, and nothing throttled yet. A zero counter is
    /// registered for every outcome, so that a scrape shows them all from the start.
    fn started(&self, batch_size: usize, rate_limit: u64) {
        self.set_batch_size(batch_size);
        self.set_rate_limit(rate_limit);
        self.jobs_busy.set(0.0);
        self.set_throttled(false);
        self.throttled_seconds.set(0.0);
        for counter in [
            &self.migrated,
            &self.previously_migrated,
            &self.gone,
            &self.failed,
            &self.deferred,
            &self.retries,
            &self.batches,
        ] {
            counter.increment(0);
        }
    }

    /// A job starts a batch.
    pub(crate) fn batch_started(&self) {
        self.jobs_busy.increment(1.0);
    }

    /// A job finished a batch that took `elapsed`.
    pub(crate) fn batch_finished(&self, elapsed: Duration) {
        self.jobs_busy.decrement(1.0);
        self.batches.increment(1);
        self.batch_duration.record(elapsed.as_secs_f64());
    }

    /// Records a batch settled, by outcome (counted as the summary counts them).
    pub(crate) fn records(&self, migrated: u64, previously_migrated: u64, gone: u64) {
        self.migrated.increment(migrated);
        self.previously_migrated.increment(previously_migrated);
        self.gone.increment(gone);
    }

    /// Records that failed and were recorded.
    pub(crate) fn failed(&self, failed: u64) {
        self.failed.increment(failed);
    }

    /// Records left for the next run because another session held them.
    pub(crate) fn deferred(&self, deferred: u64) {
        self.deferred.increment(deferred);
    }

    /// Attempts beyond the first.
    pub(crate) fn retries(&self, retries: u64) {
        self.retries.increment(retries);
    }

    /// The batch size the jobs take from now on.
    pub(crate) fn set_batch_size(&self, batch_size: usize) {
        self.batch_size.set(batch_size as f64);
    }

    /// The rate limit in force from now on (0: none).
    pub(crate) fn set_rate_limit(&self, per_second: u64) {
        self.rate_limit.set(per_second as f64);
    }

    /// Whether the run is throttled now (no batch starts).
    pub(crate) fn set_throttled(&self, throttled: bool) {
        self.throttled.set(if throttled { 1.0 } else { 0.0 });
    }

    /// Adds time spent throttled.
    pub(crate) fn add_throttled_time(&self, time: Duration) {
        self.throttled_seconds.increment(time.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::{CompositeKey, MetricKind};

    use super::*;

    type Snapshot = [(
        CompositeKey,
        Option<Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )];

    fn value<'a>(snapshot: &'a Snapshot, name: &str, outcome: Option<&str>) -> &'a DebugValue {
        &snapshot
            .iter()
            .find(|(key, ..)| {
                let key = key.key();
                key.name() == name
                    && key
                        .labels()
                        .any(|l| l.key() == MIGRATION_LABEL && l.value() == "orders")
                    && outcome.is_none_or(|o| {
                        key.labels()
                            .any(|l| l.key() == OUTCOME_LABEL && l.value() == o)
                    })
            })
            .unwrap_or_else(|| panic!("no {name} {outcome:?}"))
            .3
    }

    #[test]
    fn records_with_the_migration_label_and_units() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let run = RunMetrics::new("orders", 500, 20);
            run.batch_started();
            run.batch_started();
            run.batch_finished(Duration::from_millis(250));
            run.records(7, 2, 1);
            run.failed(3);
            run.retries(4);
            run.set_throttled(true);
            run.add_throttled_time(Duration::from_millis(1500));
        });
        let snapshot = snapshotter.snapshot().into_vec();
        assert_eq!(
            value(&snapshot, RECORDS_TOTAL, Some("migrated")),
            &DebugValue::Counter(7)
        );
        assert_eq!(
            value(&snapshot, RECORDS_TOTAL, Some("previously_migrated")),
            &DebugValue::Counter(2)
        );
        assert_eq!(
            value(&snapshot, RECORDS_TOTAL, Some("gone")),
            &DebugValue::Counter(1)
        );
        assert_eq!(
            value(&snapshot, RECORDS_TOTAL, Some("failed")),
            &DebugValue::Counter(3)
        );
        assert_eq!(
            value(&snapshot, RETRIES_TOTAL, None),
            &DebugValue::Counter(4)
        );
        assert_eq!(
            value(&snapshot, BATCHES_TOTAL, None),
            &DebugValue::Counter(1)
        );
        let gauge = |name| match value(&snapshot, name, None) {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("{name} is {other:?}"),
        };
        assert_eq!(gauge(JOBS_BUSY), 1.0);
        assert_eq!(gauge(BATCH_SIZE), 500.0);
        assert_eq!(gauge(RATE_LIMIT), 20.0);
        assert_eq!(gauge(THROTTLED), 1.0);
        assert_eq!(gauge(THROTTLED_SECONDS), 1.5);
        let DebugValue::Histogram(durations) = value(&snapshot, BATCH_DURATION_SECONDS, None)
        else {
            panic!("not a histogram")
        };
        let durations: Vec<f64> = durations.iter().map(|d| d.into_inner()).collect();
        assert_eq!(durations, [0.25]);
        let (_, unit, description, _) = snapshot
            .iter()
            .find(|(key, ..)| {
                key.kind() == MetricKind::Histogram && key.key().name() == BATCH_DURATION_SECONDS
            })
            .unwrap();
        assert_eq!(*unit, Some(Unit::Seconds));
        assert!(description.as_ref().unwrap().contains("one batch"));
    }
}
