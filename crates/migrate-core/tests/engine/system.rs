//! The system: the real module's graph, start order, overrides and lifecycle failures.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use migrate_core::shaku;
use migrate_core::{
    Backend, BatchError, BoxError, ComponentInfo, Config, Connection, Dependencies, Key, KeyColumn,
    Lifecycle, LifecycleError, MigrationModule, Migrator, Noun, Outcome, Scanner, StatusBoard,
    SystemBuilder, migration_builder, system_module,
};

type Log = Arc<Mutex<Vec<String>>>;

/// Records lifecycle calls under a name, and can refuse to start.
struct Recorder {
    name: &'static str,
    log: Log,
    fail_start: bool,
    noun: Noun,
}

#[async_trait]
impl Lifecycle for Recorder {
    async fn start(&self) -> Result<(), BoxError> {
        self.log
            .lock()
            .unwrap()
            .push(format!("start {}", self.name));
        if self.fail_start {
            return Err("the audit log directory is read-only".into());
        }
        Ok(())
    }
    async fn stop(&self) -> Result<(), BoxError> {
        self.log.lock().unwrap().push(format!("stop {}", self.name));
        Ok(())
    }
}

impl StatusBoard for Recorder {
    fn publish(&self, _: migrate_core::Event) {}
}

#[async_trait]
impl Migrator for Recorder {
    async fn migrate(&self, keys: &[Key], _: bool) -> Result<Vec<Outcome>, BatchError> {
        Ok(keys.iter().map(|_| Outcome::Migrated).collect())
    }
    fn migration_name(&self) -> &str {
        self.name
    }
    fn key_columns(&self) -> &[KeyColumn] {
        &[]
    }
    fn noun(&self) -> &Noun {
        &self.noun
    }
    fn batch_size(&self) -> usize {
        1
    }
}

fn recorder(name: &'static str, log: &Log, fail_start: bool) -> Box<Recorder> {
    Box::new(Recorder {
        name,
        log: Arc::clone(log),
        fail_start,
        noun: Noun::default(),
    })
}

fn simulated() -> Backend {
    Backend::Simulated { customers: 10 }
}

#[test]
fn the_graph_has_the_seed_components_and_edges() {
    let graph = SystemBuilder::<MigrationModule>::new().graph().unwrap();
    let names: Vec<_> = graph.components().map(|c| c.name).collect();
    assert_eq!(
        names,
        [
            "status-board",
            "connection",
            "progress-store",
            "customer-scanner",
            "customer-migrator",
            "migration-overseer"
        ]
    );
    assert_eq!(
        graph.edges(),
        [
            ("progress-store", "connection"),
            ("customer-scanner", "status-board"),
            ("migration-overseer", "customer-scanner"),
            ("migration-overseer", "status-board"),
            ("migration-overseer", "customer-migrator"),
            ("migration-overseer", "progress-store"),
        ]
    );
    assert_eq!(
        graph.start_order(),
        [
            "status-board",
            "connection",
            "progress-store",
            "customer-scanner",
            "customer-migrator",
            "migration-overseer"
        ]
    );
}

#[tokio::test]
async fn components_start_in_dependency_order_and_stop_in_reverse() {
    let log: Log = Arc::default();
    let system = migration_builder(&Config::default(), simulated())
        .with_override::<dyn StatusBoard>(recorder("status-board", &log, false), "Recorder")
        .with_override::<dyn Migrator>(recorder("customer-migrator", &log, false), "Recorder")
        .build()
        .unwrap();
    system.start().await.unwrap();
    system.stop().await.unwrap();
    assert_eq!(
        *log.lock().unwrap(),
        [
            "start status-board",
            "start customer-migrator",
            "stop customer-migrator",
            "stop status-board"
        ]
    );
}

#[tokio::test]
async fn a_failing_start_names_the_component_and_stops_the_started_ones() {
    let log: Log = Arc::default();
    let system = migration_builder(&Config::default(), simulated())
        .with_override::<dyn StatusBoard>(recorder("status-board", &log, false), "Recorder")
        .with_override::<dyn Migrator>(recorder("customer-migrator", &log, true), "Recorder")
        .build()
        .unwrap();
    let error = system.start().await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "while starting customer-migrator: the audit log directory is read-only"
    );
    assert!(matches!(
        error,
        LifecycleError::Start {
            component: "customer-migrator",
            ..
        }
    ));
    assert_eq!(
        *log.lock().unwrap(),
        [
            "start status-board",
            "start customer-migrator",
            "stop status-board"
        ]
    );
}

#[test]
fn an_override_is_marked_in_the_graph_and_in_dot() {
    let log: Log = Arc::default();
    let builder = SystemBuilder::<MigrationModule>::new()
        .with_override::<dyn Migrator>(recorder("m", &log, false), "AuditedMigrator");
    let graph = builder.graph().unwrap();
    let migrator = graph
        .components()
        .find(|c| c.name == "customer-migrator")
        .unwrap();
    assert!(migrator.overridden);
    assert_eq!(migrator.implementation, "AuditedMigrator");
    assert!(graph.to_dot().contains("(overridden by AuditedMigrator)"));
    // The replacement was built outside the module: it injects nothing.
    assert!(!graph.edges().contains(&("customer-migrator", "connection")));
}

#[test]
fn the_override_is_the_component_the_module_hands_out() {
    let log: Log = Arc::default();
    let system = migration_builder(&Config::default(), simulated())
        .with_override::<dyn Migrator>(recorder("replacement", &log, false), "Recorder")
        .build()
        .unwrap();
    assert_eq!(system.resolve::<dyn Migrator>().batch_size(), 1);
    assert_eq!(
        system.resolve::<dyn Migrator>().migration_name(),
        "replacement"
    );
    // The components not replaced are the module's own.
    assert_eq!(system.resolve::<dyn Scanner>().block_size(), 100);
    assert_eq!(
        system.resolve::<dyn Connection>().display_url(),
        "simulated:"
    );
}

// A service's own component, declared the way the library's are: the graph reads its edges from
// the same attributes shaku injects by.
trait Audit: shaku::Interface + Lifecycle {}
migrate_core::named_interface!(Audit, "audit");

#[derive(shaku::Component, Dependencies)]
#[shaku(interface = Audit)]
struct AuditImpl {
    #[shaku(inject)]
    #[allow(dead_code)]
    board: Arc<dyn StatusBoard>,
    #[allow(dead_code)]
    label: String,
}

impl Lifecycle for AuditImpl {}
impl Audit for AuditImpl {}

system_module! {
    AuditModule {
        components = [migrate_core::EventBoard, AuditImpl]
    }
}

#[test]
fn derived_edges_follow_the_inject_fields() {
    let descriptor = AuditImpl::descriptor();
    assert_eq!(descriptor.name, "audit");
    assert_eq!(descriptor.implementation, "AuditImpl");
    assert_eq!(descriptor.dependencies, ["status-board"]);
    let system = SystemBuilder::<AuditModule>::new()
        .with_parameters::<AuditImpl>(AuditImplParameters { label: "x".into() })
        .build()
        .unwrap();
    assert_eq!(system.graph().edges(), [("audit", "status-board")]);
    assert_eq!(system.graph().start_order(), ["status-board", "audit"]);
}
