//! The run's `tracing` spans and events, as an embedding service's own subscriber sees them: a
//! small layer collects them for the test.
//!
//! The layer is installed once as the global subscriber and hands what it sees to the collector
//! of the thread it happens on: the tokio test runtime runs every task of a test on the test's
//! thread, and the other tests of this binary, on other threads, are ignored. (A scoped
//! subscriber per test, `set_default`, was seen to miss every batch span when the whole binary
//! ran: tracing caches each callsite's interest, and other tests reach the callsites first.)

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use migrate_core::{Ending, Key, RunOptions, overseer};
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Level, Subscriber};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

use crate::support::{Behaviour, Journal, ScriptedMigrator, config, system};

type Fields = BTreeMap<String, String>;

/// A span as it was opened: its name, fields and parent's name.
#[derive(Debug, Clone)]
struct SpanSeen {
    name: String,
    fields: Fields,
    parent: Option<String>,
}

/// An event: its level, fields (the message among them) and the names of the spans it is in,
/// outermost first.
#[derive(Debug, Clone)]
struct EventSeen {
    level: Level,
    fields: Fields,
    scope: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
    events: Arc<Mutex<Vec<EventSeen>>>,
}

thread_local! {
    /// The collector of the test running on this thread, if it collects.
    static COLLECTOR: RefCell<Option<Collector>> = const { RefCell::new(None) };
}

/// Collects what happens on this thread until dropped.
struct Collecting;

impl Collecting {
    fn start(collector: &Collector) -> Collecting {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            tracing::subscriber::set_global_default(Registry::default().with(Routing))
                .expect("no other global subscriber in this binary");
        });
        COLLECTOR.with(|c| *c.borrow_mut() = Some(collector.clone()));
        Collecting
    }
}

impl Drop for Collecting {
    fn drop(&mut self) {
        COLLECTOR.with(|c| *c.borrow_mut() = None);
    }
}

/// The global layer: hands spans and events to this thread's collector.
struct Routing;

fn collector() -> Option<Collector> {
    COLLECTOR.with(|c| c.borrow().clone())
}

struct FieldsVisitor<'a>(&'a mut Fields);

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Routing {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(collector) = collector() else {
            return;
        };
        let mut fields = Fields::new();
        attrs.record(&mut FieldsVisitor(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent())
            .map(|parent| parent.name().to_owned());
        collector.spans.lock().unwrap().push(SpanSeen {
            name: attrs.metadata().name().to_owned(),
            fields,
            parent,
        });
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(collector) = collector() else {
            return;
        };
        let mut fields = Fields::new();
        event.record(&mut FieldsVisitor(&mut fields));
        let scope = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|s| s.name().to_owned()).collect())
            .unwrap_or_default();
        collector.events.lock().unwrap().push(EventSeen {
            level: *event.metadata().level(),
            fields,
            scope,
        });
    }
}

/// Runs records 1 to 20 in batches of 5 on the paused clock, with `script`, under a collecting
/// subscriber; returns the summary, what was collected and the journal.
async fn traced_run(
    script: &[(i64, Behaviour)],
    max_failures: u64,
) -> (migrate_core::Summary, Collector, Arc<Journal>) {
    let collector = Collector::default();
    let _collecting = Collecting::start(&collector);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 20);
    config.customer_migration.processes = 2;
    config.customer_migration.max_failures = max_failures;
    let journal = Arc::new(Journal::default());
    let mut migrator = ScriptedMigrator::new(Arc::clone(&journal));
    migrator.batch_size = 5;
    migrator.pace = Duration::from_millis(5);
    migrator.script = script.iter().cloned().collect();
    // Given keys, so that the script names them.
    let options = RunOptions {
        input: Some((1..=20).map(Key::int).collect()),
        ..RunOptions::default()
    };
    let (system, _board) = system(&config, migrator);
    system.start().await.unwrap();
    let summary = overseer(&system)
        .run(options, CancellationToken::new())
        .await
        .unwrap();
    system.stop().await.unwrap();
    (summary, collector, journal)
}

fn events_with(collector: &Collector, message: &str) -> Vec<EventSeen> {
    collector
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.fields.get("message").is_some_and(|m| m == message))
        .cloned()
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_run_has_its_span_batch_spans_and_events_for_retries_and_failures() {
    let script = [(7, Behaviour::FlakyTimes(1)), (13, Behaviour::Permanent)];
    let (summary, collector, journal) = traced_run(&script, 0).await;
    assert_eq!(summary.ending, Ending::Completed);
    assert_eq!((summary.migrated, summary.failed), (19, 1));

    let spans = collector.spans.lock().unwrap().clone();
    let runs: Vec<_> = spans.iter().filter(|s| s.name == "run").collect();
    assert_eq!(runs.len(), 1, "{spans:?}");
    assert_eq!(runs[0].fields["migration"], "customer-migration");
    assert_eq!(runs[0].fields["dry_run"], "false");
    assert_eq!(runs[0].fields["range"], "all");

    // Every batch is a span inside the run, with its first and last key and its size, as the
    // migrator received it; together they hold each record once.
    let batches: Vec<_> = spans.iter().filter(|s| s.name == "batch").collect();
    let received: HashSet<(String, String, String)> = journal
        .batches
        .lock()
        .unwrap()
        .iter()
        .map(|b| {
            let (first, last) = (b[0].to_string(), b[b.len() - 1].to_string());
            (first, last, b.len().to_string())
        })
        .collect();
    let mut size = 0;
    for batch in &batches {
        assert_eq!(batch.parent.as_deref(), Some("run"), "{batch:?}");
        assert_eq!(batch.fields["migration"], "customer-migration");
        let seen = (
            batch.fields["first"].clone(),
            batch.fields["last"].clone(),
            batch.fields["size"].clone(),
        );
        assert!(received.contains(&seen), "{seen:?} not in {received:?}");
        size += batch.fields["size"].parse::<usize>().unwrap();
    }
    assert_eq!(size, 20);

    let retries = events_with(&collector, "retrying a record");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert_eq!(retries[0].fields["key"], "7");
    assert_eq!(retries[0].fields["attempt"], "2");
    assert_eq!(retries[0].fields["error"], "flaky 7");
    assert_eq!(retries[0].scope, ["run", "batch"]);

    let failed = events_with(&collector, "a record failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].level, Level::WARN);
    assert_eq!(failed[0].fields["key"], "13");
    assert_eq!(failed[0].fields["error"], "malformed 13");
    assert_eq!(failed[0].scope, ["run", "batch"]);

    let ended = events_with(&collector, "the run ended");
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].scope, ["run"]);
    assert_eq!(ended[0].fields["ending"], "Completed");
    assert_eq!(ended[0].fields["migrated"], "19");
    assert_eq!(ended[0].fields["failed"], "1");
    assert!(events_with(&collector, "the run aborts").is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_abort_is_an_error_event_in_the_run_span() {
    let script = [
        (2, Behaviour::Permanent),
        (3, Behaviour::Permanent),
        (4, Behaviour::Permanent),
    ];
    let (summary, collector, _) = traced_run(&script, 1).await;
    assert_eq!(summary.ending, Ending::Aborted);
    let aborts = events_with(&collector, "the run aborts");
    assert_eq!(aborts.len(), 1, "{aborts:?}");
    assert_eq!(aborts[0].level, Level::ERROR);
    assert_eq!(aborts[0].scope.first().map(String::as_str), Some("run"));
    assert!(
        aborts[0].fields["reason"].contains("max-failures"),
        "{aborts:?}"
    );
    assert_eq!(
        events_with(&collector, "the run ended")[0].fields["ending"],
        "Aborted"
    );
}
