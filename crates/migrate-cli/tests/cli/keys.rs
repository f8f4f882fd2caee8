//! Text, UUID and composite keys: migrations declared in TOML, killed with SIGKILL at random
//! points and resumed, end as an uninterrupted run, with no key done twice and the audit
//! complete.

use std::collections::BTreeSet;

use sqlx::SqlitePool;

use crate::util::{Scratch, kill_after, random_below, stderr};

/// Rows of each test table.
const ROWS: i64 = 6000;

/// One kind of key: its table, made and filled by `setup`, and its migration file.
struct Case {
    name: &'static str,
    setup: &'static [&'static str],
    migration: &'static str,
    /// The table's rows as compared between runs (the key first), time stamps blanked.
    dump: &'static str,
}

const CASES: [Case; 3] = [
    Case {
        name: "text",
        setup: &[
            "CREATE TABLE tags (name TEXT PRIMARY KEY, label TEXT, done_at TEXT)",
            // Names whose byte order and collation order differ; every 97th label is blank.
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO tags SELECT
               CASE i % 3 WHEN 0 THEN 'Tag-' WHEN 1 THEN 'tag-' ELSE '_tag ' END || i,
               CASE WHEN i % 97 = 0 THEN '   ' ELSE ' label ' || i END, NULL FROM n",
        ],
        migration: r#"
name = "tags-upper"
table = "tags"
key = [{ column = "name", type = "text" }]
pending = "done_at IS NULL"
valid = "length(trim(label)) > 0"
message = "blank label"
[set]
label = "upper(trim(label))"
done_at = "{now}"
"#,
        dump: "SELECT name, label, done_at IS NOT NULL FROM tags ORDER BY name",
    },
    Case {
        name: "uuid",
        setup: &[
            "CREATE TABLE events (id TEXT PRIMARY KEY, kind TEXT, done_at TEXT)",
            // Deterministic UUID-shaped keys from a hash of i.
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO events SELECT
               lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3)
                 || '-8' || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
               CASE WHEN i % 89 = 0 THEN NULL ELSE 'Kind' || (i % 7) END, NULL
             FROM (SELECT i, printf('%016x%016x', i * 2654435761 % 4294967291, i * 40503)
                     AS h FROM n)",
        ],
        migration: r#"
name = "events-kind"
table = "events"
key = [{ column = "id", type = "uuid" }]
pending = "done_at IS NULL"
valid = "kind IS NOT NULL"
message = "no kind"
[set]
kind = "lower(kind)"
done_at = "{now}"
"#,
        dump: "SELECT id, kind, done_at IS NOT NULL FROM events ORDER BY id",
    },
    Case {
        name: "composite",
        setup: &[
            "CREATE TABLE shipments (region TEXT NOT NULL, no INTEGER NOT NULL, state TEXT,
               done_at TEXT, PRIMARY KEY (region, no))",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO shipments SELECT
               CASE i % 4 WHEN 0 THEN 'eu' WHEN 1 THEN 'Eu' WHEN 2 THEN 'us, east' ELSE 'asia' END,
               i / 4, CASE WHEN i % 101 = 0 THEN 'lost' ELSE ' Sent ' END, NULL FROM n",
        ],
        migration: r#"
name = "shipments-state"
table = "shipments"
key = [{ column = "region", type = "text" }, { column = "no", type = "integer" }]
pending = "done_at IS NULL"
valid = "trim(state) <> 'lost'"
message = "lost shipment"
[set]
state = "lower(trim(state))"
done_at = "{now}"
"#,
        dump: "SELECT region, no, state, done_at IS NOT NULL FROM shipments ORDER BY region, no",
    },
];

async fn setup(scratch: &Scratch, case: &Case, db: &str) {
    let path = scratch.path().join(db);
    std::fs::File::create(&path).unwrap();
    let pool = SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    for sql in case.setup {
        sqlx::query(sqlx::AssertSqlSafe(*sql))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    std::fs::write(
        scratch.path().join(format!("{}.toml", case.name)),
        case.migration,
    )
    .unwrap();
}

fn args(case: &Case, db: &str, log: &str) -> Vec<String> {
    vec![
        format!("connection.url=sqlite://{db}"),
        "status-board.mode=off".to_owned(),
        "--migration".to_owned(),
        format!("{}.toml", case.name),
        format!("customer-migrator.log-file={log}"),
        // Small batches: many commits to kill between.
        "customer-migrator.batch-size=20".to_owned(),
        "customer-migration.processes=4".to_owned(),
    ]
}

/// The rows as a list of text columns, and the keys listed in `migration_audit`.
async fn read(scratch: &Scratch, case: &Case, db: &str) -> (Vec<Vec<String>>, Vec<String>) {
    let url = format!("sqlite://{}", scratch.path().join(db).display());
    let pool = SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<sqlx::sqlite::SqliteRow> = sqlx::query(sqlx::AssertSqlSafe(case.dump))
        .fetch_all(&pool)
        .await
        .unwrap();
    use sqlx::Row;
    let rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .map(|v| v.unwrap_or_default())
                        .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                        .unwrap()
                })
                .collect()
        })
        .collect();
    let audit: Vec<String> = sqlx::query_scalar("SELECT record_keys FROM migration_audit")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    let audited = audit
        .iter()
        .flat_map(|keys| serde_json::from_str::<Vec<serde_json::Value>>(keys).unwrap())
        .map(|key| key.to_string())
        .collect();
    (rows, audited)
}

async fn killed_and_resumed_ends_as_uninterrupted(case: &Case) {
    let scratch = Scratch::new();
    setup(&scratch, case, "reference.db").await;
    let reference_args = args(case, "reference.db", "reference.log");
    let reference_args: Vec<&str> = reference_args.iter().map(String::as_str).collect();
    let reference_run = scratch.run(&reference_args);
    assert_eq!(
        reference_run.status.code(),
        Some(1),
        "{}",
        stderr(&reference_run)
    );
    let (reference, reference_audit) = read(&scratch, case, "reference.db").await;
    assert_eq!(reference.len() as i64, ROWS);
    let migrated = reference_audit.len();
    assert!(migrated > (ROWS as usize) / 2, "{migrated}");

    setup(&scratch, case, "killed.db").await;
    let args = args(case, "killed.db", "killed.log");
    let mut floor = 0;
    let mut kills = 0;
    for _ in 0..3 {
        let room = (migrated * 4 / 5).saturating_sub(floor);
        if room == 0 {
            break;
        }
        let at = floor + 1 + random_below(room as u64) as usize;
        if kill_after(&scratch, &args, "killed.log", at) {
            kills += 1;
        }
        floor = std::fs::read_to_string(scratch.path().join("killed.log"))
            .unwrap_or_default()
            .lines()
            .count();
    }
    assert!(kills > 0, "{}: no run was killed in the middle", case.name);
    let last: Vec<&str> = args.iter().map(String::as_str).collect();
    let finished = scratch.run(&last);
    assert_eq!(finished.status.code(), Some(1), "{}", stderr(&finished));

    let (rows, audited) = read(&scratch, case, "killed.db").await;
    let differing: Vec<_> = rows
        .iter()
        .zip(&reference)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        rows.len() == reference.len() && differing.is_empty(),
        "{}: the tables differ: {differing:?}",
        case.name
    );
    let distinct: BTreeSet<&String> = audited.iter().collect();
    assert_eq!(
        distinct.len(),
        audited.len(),
        "{}: a key audited twice",
        case.name
    );
    assert_eq!(
        audited.len(),
        migrated,
        "{}: the audit lists every migrated key",
        case.name
    );
    let reference_keys: BTreeSet<&String> = reference_audit.iter().collect();
    assert_eq!(
        distinct, reference_keys,
        "{}: the same keys were migrated",
        case.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_keys_killed_and_resumed_end_as_an_uninterrupted_run() {
    killed_and_resumed_ends_as_uninterrupted(&CASES[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uuid_keys_killed_and_resumed_end_as_an_uninterrupted_run() {
    killed_and_resumed_ends_as_uninterrupted(&CASES[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_killed_and_resumed_end_as_an_uninterrupted_run() {
    killed_and_resumed_ends_as_uninterrupted(&CASES[2]).await;
}
