//! What the benchmark times, each on a fresh copy: the engine with a migration, the single
//! set-based UPDATE, and the loop a user would write by hand.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use migrate_core::{
    Backend, Config, EventBoard, MigrationModule, MigrationSpec, RunOptions, SqlMigration,
    StatusBoard, System, build_migration_system, builder_for, overseer,
};
use tokio_util::sync::CancellationToken;

use crate::Options;
use crate::target::open;

/// The migration as one statement: the same expressions as the engine's per-batch statement,
/// trimming the characters of [`whitespace`] (bound as `?1`/`$1`).
const SET_BASED_SQLITE: &str = "UPDATE customers SET
    last_name = trim(substr(full_name, 1, instr(full_name, ',') - 1), ?1),
    first_name = trim(substr(full_name, instr(full_name, ',') + 1), ?1),
    email = lower(trim(email, ?1)),
    schema_version = 2,
    migrated_at = '2026-01-01T00:00:00Z'
  WHERE schema_version = 1
    AND instr(CAST(full_name AS BLOB), x'00') = 0
    AND instr(full_name, ',') > 0
    AND trim(substr(full_name, 1, instr(full_name, ',') - 1), ?1) <> ''
    AND trim(substr(full_name, instr(full_name, ',') + 1), ?1) <> ''";
const SET_BASED_POSTGRES: &str = "UPDATE customers SET
    last_name = btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $1),
    first_name = btrim(substr(full_name, strpos(full_name, ',') + 1), $1),
    email = lower(btrim(email, $1)),
    schema_version = 2,
    migrated_at = '2026-01-01T00:00:00Z'
  WHERE schema_version = 1
    AND strpos(full_name, ',') > 0
    AND btrim(substr(full_name, 1, strpos(full_name, ',') - 1), $1) <> ''
    AND btrim(substr(full_name, strpos(full_name, ',') + 1), $1) <> ''";

/// The hand-written loop's page of keys, and its update of one page: the single UPDATE limited
/// to the key range `(after, last]` of the page.
const PAGE_SQLITE: &str = "SELECT id FROM customers WHERE id > ?1 ORDER BY id LIMIT ?2";
const PAGE_POSTGRES: &str = "SELECT id FROM customers WHERE id > $1 ORDER BY id LIMIT $2";
const RANGE_SUFFIX_SQLITE: &str = " AND id > ?2 AND id <= ?3";
const RANGE_SUFFIX_POSTGRES: &str = " AND id > $2 AND id <= $3";

/// Keys per page of the hand-written loop: the engine's default batch size for databases.
const LOOP_PAGE: i64 = 1000;

/// Every character Rust calls whitespace: the set the migration trims.
fn whitespace() -> String {
    (0..=u32::from(char::MAX))
        .filter_map(char::from_u32)
        .filter(|c| c.is_whitespace())
        .collect()
}

/// A migration file of the repository.
pub fn migration_file(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(name)
}

/// `orders-normalize.toml` on `orders_clustered`: the same change, key and batch size on the
/// same rows, stored in the key's order.
pub fn orders_clustered() -> MigrationSpec {
    let path = migration_file("orders-normalize.toml");
    let text = std::fs::read_to_string(&path).expect("the orders migration");
    let mut file: toml::Table = text.parse().expect("the orders migration is TOML");
    file.insert("name".into(), "orders-clustered".into());
    file.insert("table".into(), "orders_clustered".into());
    let text = toml::to_string(&file).expect("TOML");
    MigrationSpec::parse(&text, "orders-clustered.toml").expect("the clustered migration")
}

/// The orders migration on `table` (`orders_by_id` or `orders_interleaved`), keyed by its
/// integer `id` alone.
pub fn orders_by_id(table: &str) -> MigrationSpec {
    let path = migration_file("orders-normalize.toml");
    let text = std::fs::read_to_string(&path).expect("the orders migration");
    let mut file: toml::Table = text.parse().expect("the orders migration is TOML");
    let mut id = toml::Table::new();
    id.insert("column".into(), "id".into());
    id.insert("type".into(), "integer".into());
    file.insert("name".into(), table.replace('_', "-").into());
    file.insert("table".into(), table.into());
    file.insert("key".into(), toml::Value::Array(vec![id.into()]));
    let text = toml::to_string(&file).expect("TOML");
    MigrationSpec::parse(&text, format!("{table}.toml")).expect("the integer-key migration")
}

/// The default configuration pointed at `url`, with the overrides of `options`.
fn config(url: &str, dir: &Path, options: &Options) -> Config {
    let mut config = Config::default();
    config.connection.url = url.to_owned();
    config.customer_migrator.log_file = dir.join("migration.log");
    let _ = std::fs::remove_file(&config.customer_migrator.log_file);
    if let Some(v) = options.processes {
        config.customer_migration.processes = v;
    }
    if let Some(v) = options.batch_size {
        config.customer_migrator.batch_size = Some(v);
    }
    if let Some(v) = options.fetch_size {
        config.customer_scanner.fetch_size = v;
    }
    if let Some(v) = options.block_size {
        config.customer_scanner.block_size = v;
    }
    if let Some(v) = options.max_connections {
        config.connection.max_connections = v;
    }
    config
}

/// The built-in customer migration with the default settings (and the overrides given).
pub async fn engine(url: &str, dir: &Path, options: &Options, rows: u64) -> (Duration, u64) {
    let config = config(url, dir, options);
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let system = build_migration_system(&config, Some((board, "EventBoard")))
        .await
        .expect("building");
    run(system, rows).await
}

/// The migration `spec` through [`builder_for`], as `db-migrate --migration` builds it.
pub async fn declared(
    url: &str,
    dir: &Path,
    options: &Options,
    spec: &MigrationSpec,
    rows: u64,
) -> (Duration, u64) {
    let config = config(url, dir, options);
    let backend = Backend::open(&config.connection, false)
        .await
        .expect("opening");
    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let migration = SqlMigration::new(spec.clone(), &backend)
        .expect("the migration")
        .with_timeouts(migrate_core::BatchTimeouts::from_config(
            &config.customer_migration,
        ))
        .sharing_writer(Arc::clone(&writer));
    let board: Box<dyn StatusBoard> = Box::new(EventBoard::discard());
    let system = builder_for(&config, backend, writer, Arc::new(migration))
        .with_override::<dyn StatusBoard>(board, "EventBoard")
        .build()
        .expect("building");
    run(system, rows).await
}

/// Starts `system`, times its run, stops it, and checks that it saw all `rows`. Returns the
/// run's time and the rows it migrated.
async fn run(system: System<MigrationModule>, rows: u64) -> (Duration, u64) {
    system.start().await.expect("starting");
    let started = Instant::now();
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await
        .expect("running");
    let elapsed = started.elapsed();
    system.stop().await.expect("stopping");
    assert_eq!(
        summary.migrated + summary.previously_migrated + summary.failed,
        rows,
        "{summary:?}"
    );
    (elapsed, summary.migrated)
}

/// The physical limit: one set-based UPDATE. Returns its time and the rows it updated.
pub async fn set_based(url: &str) -> (Duration, u64) {
    let backend = open(url, false).await;
    let whitespace = whitespace();
    let started = Instant::now();
    let updated = match &backend {
        Backend::Sqlite(pool) => sqlx::query(SET_BASED_SQLITE)
            .bind(&whitespace)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Backend::Postgres(pool) => sqlx::query(SET_BASED_POSTGRES)
            .bind(&whitespace)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        _ => unreachable!("a database"),
    }
    .expect("the set-based update");
    let elapsed = started.elapsed();
    backend.close().await;
    (elapsed, updated)
}

/// What a user writes instead of the engine: page the keys in order, and per page run the
/// single UPDATE limited to the page's key range, in its own transaction. Returns its time and
/// the rows it updated.
pub async fn hand_loop(url: &str) -> (Duration, u64) {
    let backend = open(url, false).await;
    let whitespace = whitespace();
    let started = Instant::now();
    let updated = match &backend {
        Backend::Sqlite(pool) => {
            let update = format!("{SET_BASED_SQLITE}{RANGE_SUFFIX_SQLITE}");
            let lead = Some(whitespace.as_str());
            range_loop(pool, PAGE_SQLITE, &update, LOOP_PAGE, lead, (i64::MIN,)).await
        }
        Backend::Postgres(pool) => {
            let update = format!("{SET_BASED_POSTGRES}{RANGE_SUFFIX_POSTGRES}");
            let lead = Some(whitespace.as_str());
            range_loop(pool, PAGE_POSTGRES, &update, LOOP_PAGE, lead, (i64::MIN,)).await
        }
        _ => unreachable!("a database"),
    };
    let elapsed = started.elapsed();
    backend.close().await;
    (elapsed, updated)
}

/// The orders migration of `orders-normalize.toml` as one statement, for the hand-written
/// loops over the orders (SQLite).
const ORDERS_SQLITE: &str = "UPDATE {table} SET status = lower(trim(status)),
    currency = upper(trim(currency)), normalized_at = '2026-01-01T00:00:00Z'
  WHERE normalized_at IS NULL
    AND lower(trim(status)) IN ('new', 'paid', 'shipped', 'cancelled')
    AND length(trim(currency)) = 3";

/// Keys per page of the hand-written loops over the orders: the file's `batch-size`.
const ORDERS_PAGE: i64 = 500;

/// The hand-written loop over the orders on SQLite, as a user writes it for the table's key:
/// `(region, order_no)` on `orders` when `composite`, else `id` on `orders_by_id`. Pages of
/// [`ORDERS_PAGE`] keys in order, and per page the orders migration limited to the page's
/// key range (a row value comparison for the composite key), in its own transaction. What a
/// batched migration of each key costs without the engine: the reference for composite /
/// integer. Returns its time and the rows it updated.
pub async fn orders_loop(url: &str, composite: bool) -> (Duration, u64) {
    let backend = open(url, false).await;
    let Backend::Sqlite(pool) = &backend else {
        unreachable!("the orders loops run on SQLite")
    };
    let started = Instant::now();
    let updated = if composite {
        let update = format!(
            "{} AND (region, order_no) > (?, ?) AND (region, order_no) <= (?, ?)",
            ORDERS_SQLITE.replace("{table}", "orders")
        );
        let page = "SELECT region, order_no FROM orders WHERE (region, order_no) > (?, ?) \
                    ORDER BY region, order_no LIMIT ?";
        range_loop(
            pool,
            page,
            &update,
            ORDERS_PAGE,
            None,
            (String::new(), i64::MIN),
        )
        .await
    } else {
        let update = format!(
            "{} AND id > ? AND id <= ?",
            ORDERS_SQLITE.replace("{table}", "orders_by_id")
        );
        let page = "SELECT id FROM orders_by_id WHERE id > ? ORDER BY id LIMIT ?";
        range_loop(pool, page, &update, ORDERS_PAGE, None, (i64::MIN,)).await
    };
    let elapsed = started.elapsed();
    backend.close().await;
    (elapsed, updated)
}

/// A query of a hand-written loop on `DB`.
type LoopQuery<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>;

/// A key of a hand-written loop, bound as its columns' values.
trait LoopKey<DB: sqlx::Database>: Sized + for<'r> sqlx::FromRow<'r, DB::Row> {
    fn bind<'q>(&self, query: LoopQuery<'q, DB>) -> LoopQuery<'q, DB>;
}

impl<DB: sqlx::Database> LoopKey<DB> for (i64,)
where
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
{
    fn bind<'q>(&self, query: LoopQuery<'q, DB>) -> LoopQuery<'q, DB> {
        query.bind(self.0)
    }
}

impl LoopKey<sqlx::Sqlite> for (String, i64) {
    fn bind<'q>(&self, query: LoopQuery<'q, sqlx::Sqlite>) -> LoopQuery<'q, sqlx::Sqlite> {
        query.bind(self.0.as_str()).bind(self.1)
    }
}

/// How many rows a statement changed, whatever the database (sqlx gives it per driver).
trait RowsAffected {
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// Pages the keys after `after`, `page_size` at a time, with `page` (the key's values, then
/// the limit), and runs `update` on each page in its own transaction, bound with `lead` first
/// when there is one, then the page's key range `(after, last]`: the rows it updated.
async fn range_loop<DB, K>(
    pool: &sqlx::Pool<DB>,
    page: &'static str,
    update: &str,
    page_size: i64,
    lead: Option<&str>,
    mut after: K,
) -> u64
where
    DB: sqlx::Database,
    K: LoopKey<DB>,
    DB::Arguments: sqlx::IntoArguments<DB>,
    DB::QueryResult: RowsAffected,
    i64: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'p> &'p sqlx::Pool<DB>: sqlx::Executor<'p, Database = DB>,
{
    let mut updated = 0;
    loop {
        let rows = after
            .bind(sqlx::query(page))
            .bind(page_size)
            .fetch_all(pool)
            .await
            .expect("a page of keys");
        let Some(row) = rows.last() else { break };
        let last = K::from_row(row).expect("a key");
        let mut tx = pool.begin().await.expect("a transaction");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(update.to_owned()));
        if let Some(lead) = lead {
            query = query.bind(lead);
        }
        updated += last
            .bind(after.bind(query))
            .execute(&mut *tx)
            .await
            .expect("the range update")
            .rows();
        tx.commit().await.expect("committing a page");
        after = last;
    }
    updated
}

/// The hand-written loop on PostgreSQL with two writers: one connection pages the keys and
/// hands the pages' ranges alternately to two others, each updating its ranges one
/// transaction at a time.
pub async fn hand_loop_two_writers(url: &str) -> (Duration, u64) {
    let backend = open(url, false).await;
    let Backend::Postgres(pool) = &backend else {
        unreachable!("PostgreSQL")
    };
    let whitespace = Arc::new(whitespace());
    let update = format!("{SET_BASED_POSTGRES}{RANGE_SUFFIX_POSTGRES}");
    let started = Instant::now();
    let mut senders = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..2 {
        // Two ranges queued per writer: enough to keep it busy while the pager reads ahead.
        let (send, mut ranges) = tokio::sync::mpsc::channel::<(i64, i64)>(2);
        senders.push(send);
        let (pool, whitespace, update) = (pool.clone(), Arc::clone(&whitespace), update.clone());
        writers.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await.expect("a connection");
            let mut updated = 0;
            while let Some((after, last)) = ranges.recv().await {
                let mut tx = sqlx::Connection::begin(&mut *conn)
                    .await
                    .expect("a transaction");
                updated += sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                    .bind(whitespace.as_str())
                    .bind(after)
                    .bind(last)
                    .execute(&mut *tx)
                    .await
                    .expect("the range update")
                    .rows_affected();
                tx.commit().await.expect("committing a page");
            }
            updated
        }));
    }
    let mut after = i64::MIN;
    for turn in 0.. {
        let page: Vec<i64> = sqlx::query_scalar(PAGE_POSTGRES)
            .bind(after)
            .bind(LOOP_PAGE)
            .fetch_all(pool)
            .await
            .expect("a page of ids");
        let Some(&last) = page.last() else { break };
        senders[turn % 2]
            .send((after, last))
            .await
            .expect("a writer");
        after = last;
    }
    drop(senders);
    let mut updated = 0;
    for writer in writers {
        updated += writer.await.expect("a writer");
    }
    let elapsed = started.elapsed();
    backend.close().await;
    (elapsed, updated)
}
