//! The controls of a migration in the progress store (`migration_controls`): what one process
//! writes, another reads back, each migration apart, concurrent changes each landing whole.

use std::sync::Arc;

use migrate_core::{
    ControlChange, Controls, EventBoard, ProgressStore, Setting, StatusBoard,
    build_migration_system,
};

use super::harness::{TestDb, on_both_backends};

on_both_backends!(controls_round_trip, concurrent_changes_all_land);

/// The progress store of a system built on `db`, as another process would open it.
async fn store(db: &TestDb) -> Arc<dyn ProgressStore> {
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let system = build_migration_system(&db.config(), Some((board, "EventBoard")))
        .await
        .expect("the system builds");
    system.resolve::<dyn ProgressStore>()
}

async fn controls_round_trip(db: &TestDb) {
    let writer = store(db).await;
    let reader = store(db).await;
    // Never controlled: the defaults, and no table made by reading.
    let none = reader.load_controls("m").await.unwrap();
    assert_eq!(none.generation, 0);
    assert!(!none.paused && none.changed_by.is_none());

    let paused = writer
        .change_controls("m", ControlChange::Pause, "alice@h pid 1")
        .await
        .unwrap();
    assert_eq!(paused.generation, 1);
    let run_started_at = paused.generation;
    writer
        .change_controls("m", ControlChange::Set(Setting::RateLimit(250)), "bob")
        .await
        .unwrap();
    writer
        .change_controls("m", ControlChange::Set(Setting::Processes(3)), "bob")
        .await
        .unwrap();
    writer
        .change_controls("m", ControlChange::Set(Setting::BatchSize(40)), "bob")
        .await
        .unwrap();
    writer
        .change_controls("m", ControlChange::Stop, "carol")
        .await
        .unwrap();

    let read = reader.load_controls("m").await.unwrap();
    assert_eq!(read.generation, 5);
    assert!(read.paused);
    assert_eq!(read.rate_limit, Some(250));
    assert_eq!(read.processes, Some(3));
    assert_eq!(read.batch_size, Some(40));
    assert_eq!(read.changed_by.as_deref(), Some("carol"));
    assert!(read.stop_requested_at.is_some() && read.changed_at.is_some());
    assert_eq!(read.stop_generation, Some(5));
    // The stop is for the run that started before it, not for one starting now.
    let mut running = Controls::default();
    read.apply_to(&mut running, run_started_at);
    assert!(running.stop && running.paused);
    let mut starting = Controls::default();
    read.apply_to(&mut starting, read.generation);
    assert!(!starting.stop && starting.paused);

    // Another migration's controls are its own.
    assert_eq!(reader.load_controls("other").await.unwrap().generation, 0);
    let resumed = reader
        .change_controls("m", ControlChange::Resume, "dave")
        .await
        .unwrap();
    assert!(!resumed.paused && resumed.generation == 6);
    assert!(!writer.load_controls("m").await.unwrap().paused);
}

async fn concurrent_changes_all_land(db: &TestDb) {
    let stores = [store(db).await, store(db).await, store(db).await];
    let mut tasks = Vec::new();
    for (n, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        tasks.push(tokio::spawn(async move {
            for i in 0..5 {
                let change = ControlChange::Set(Setting::RateLimit((n * 10 + i) as u64));
                store.change_controls("m", change, "t").await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Fifteen changes, none lost: each took the next generation.
    assert_eq!(stores[0].load_controls("m").await.unwrap().generation, 15);
}
