//! A service embedding the engine to migrate a real SQLite table of its own.
//!
//! The service's `products` table keeps each price as legacy text (`"12.50 EUR"`); the migration
//! parses it into `price_cents` and `currency` and stamps `migrated_at`, its guard. Each batch is
//! one transaction: the rows, the audit row and the resolution of earlier failures commit
//! together ([`BatchJournal`]). Prices that cannot be parsed are recorded as failures. The
//! example fills a temporary database, runs the migration while it watches the event stream,
//! and then checks that the table, `migration_audit` and `migration_failures` agree with the
//! summary; it returns an error when they do not.
//!
//! `cargo run --example sqlite_table`

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use migrate_core::{
    Backend, BatchError, BatchJournal, BoxError, Config, Database, Ending, Event, EventBoard, Key,
    KeyColumn, KeyKind, Migration, Noun, Outcome, RecordFailure, RunOptions, SUMMARY_JOB,
    StatusBoard, builder_for, overseer,
};
use sqlx::SqlitePool;
use tokio_util::sync::CancellationToken;

const NAME: &str = "product-prices";
const PRODUCTS: i64 = 3_000;
/// `migrated_at` of the rows an earlier release already migrated.
const EARLIER: &str = "2024-01-01T00:00:00Z";

/// The price migration on the service's own `products` table.
#[derive(Debug)]
struct ProductPrices {
    /// The database, for the journal's tables.
    database: Database,
    pool: SqlitePool,
    /// SQLite has one writer at a time: batches take turns with the progress store on this lock
    /// (the one given to `builder_for`) instead of in SQLite's busy handler.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Prepared by the first batch that writes, so that a dry run creates no table.
    journal: tokio::sync::OnceCell<BatchJournal>,
    noun: Noun,
    keys: Vec<KeyColumn>,
}

/// `"12.50 EUR"` as 1250 cents and `"EUR"`; `None` for anything else.
fn parse_price(text: &str) -> Option<(i64, &str)> {
    let (amount, currency) = text.split_once(' ')?;
    let (units, cents) = amount.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let currency_ok = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !(digits(units) && digits(cents) && cents.len() == 2 && currency_ok) {
        return None;
    }
    Some((
        units.parse::<i64>().ok()? * 100 + cents.parse::<i64>().ok()?,
        currency,
    ))
}

/// The sku of a one-column text key.
fn sku(key: &Key) -> &str {
    key.as_text().expect("product keys are one text column")
}

#[async_trait]
impl Migration for ProductPrices {
    fn name(&self) -> &str {
        NAME
    }

    fn noun(&self) -> &Noun {
        &self.noun
    }

    fn key_columns(&self) -> &[KeyColumn] {
        &self.keys
    }

    /// Keyset pagination: SQLite sorts the skus (its collation), never Rust.
    async fn page(
        &self,
        after: Option<&Key>,
        end: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Key>, BoxError> {
        let skus: Vec<String> = sqlx::query_scalar(
            "SELECT sku FROM products WHERE (?1 IS NULL OR sku > ?1) AND (?2 IS NULL OR sku < ?2)
              ORDER BY sku LIMIT ?3",
        )
        .bind(after.map(sku))
        .bind(end.map(sku))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok(skus.into_iter().map(Key::text).collect())
    }

    /// One transaction per batch: read the rows, decide each in Rust, update the parseable ones,
    /// write the journal, commit. A dry run reads only.
    async fn migrate(&self, keys: &[Key], dry_run: bool) -> Result<Vec<Outcome>, BatchError> {
        // A dry run reads in a transaction of its own, without the write lock or journal.
        let (_writer, journal) = if dry_run {
            (None, None)
        } else {
            let prepare = || BatchJournal::prepare(&self.database, NAME);
            let journal = self.journal.get_or_try_init(prepare).await?;
            (Some(self.writer.lock().await), Some(journal))
        };
        let begin = if dry_run { "BEGIN" } else { "BEGIN IMMEDIATE" };
        let mut tx = self
            .pool
            .begin_with(begin)
            .await
            .map_err(|e| BatchError::from_database("starting a batch", e))?;
        let skus: Vec<&str> = keys.iter().map(sku).collect();
        let rows: HashMap<String, (String, bool)> = sqlx::query_as(
            "SELECT sku, price, migrated_at IS NOT NULL FROM products
              WHERE sku IN (SELECT value FROM json_each(?))",
        )
        .bind(serde_json::to_string(&skus).expect("skus serialize"))
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| BatchError::from_database("reading a batch of products", e))?
        .into_iter()
        .map(|(sku, price, done)| (sku, (price, done)))
        .collect();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let (mut outcomes, mut migrated, mut settled) = (Vec::new(), Vec::new(), Vec::new());
        for (key, sku) in keys.iter().zip(&skus) {
            let outcome = match rows.get(*sku) {
                None => Outcome::Gone,
                Some((_, true)) => Outcome::PreviouslyMigrated,
                Some((price, false)) => match parse_price(price) {
                    None => Outcome::Failed(RecordFailure::permanent(format!(
                        "price {price:?} is not like \"12.50 EUR\""
                    ))),
                    Some(_) if dry_run => Outcome::Migrated,
                    Some((cents, currency)) => {
                        // The guard: a row is migrated once, whoever else runs this.
                        let update = sqlx::query(
                            "UPDATE products SET price_cents = ?, currency = ?, migrated_at = ?
                              WHERE sku = ? AND migrated_at IS NULL",
                        );
                        let bound = update.bind(cents).bind(currency).bind(&now).bind(*sku);
                        let updated = bound
                            .execute(&mut *tx)
                            .await
                            .map_err(|e| BatchError::from_database("migrating a product", e))?;
                        match updated.rows_affected() {
                            0 => Outcome::PreviouslyMigrated,
                            _ => {
                                migrated.push(key.clone());
                                Outcome::Migrated
                            }
                        }
                    }
                },
            };
            if !matches!(outcome, Outcome::Failed(_)) {
                settled.push(key.clone());
            }
            outcomes.push(outcome);
        }
        if let Some(journal) = journal {
            journal
                .write_sqlite(&mut tx, &now, &migrated, &settled)
                .await?;
        }
        tx.commit()
            .await
            .map_err(|e| BatchError::from_database("committing a batch", e))?;
        Ok(outcomes)
    }

    fn default_batch_size(&self) -> usize {
        250
    }
}

/// The service's table: `PRODUCTS` products priced like `"12.50 EUR"`, but every 500th price
/// cannot be parsed, and every other 100th product was migrated by an earlier release.
/// Returns the skus that cannot be migrated.
async fn fill(pool: &SqlitePool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "CREATE TABLE products (sku TEXT PRIMARY KEY, price TEXT NOT NULL,
           price_cents INTEGER, currency TEXT, migrated_at TEXT)",
    )
    .execute(pool)
    .await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO products (sku, price, migrated_at)
         SELECT printf('SKU-%05d', i),
                CASE WHEN i % 1500 = 0 THEN 'N/A' WHEN i % 500 = 0 THEN '12,50 EUR'
                     ELSE printf('%d.%02d %s', i / 7, i % 100, iif(i % 3 = 0, 'USD', 'EUR')) END,
                iif(i % 100 = 0 AND i % 500 <> 0, ?2, NULL)
           FROM n",
    )
    .bind(PRODUCTS)
    .bind(EARLIER)
    .execute(pool)
    .await?;
    Ok((500..=PRODUCTS)
        .step_by(500)
        .map(|n| format!("SKU-{n:05}"))
        .collect())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.connection.url = format!("sqlite://{}", dir.path().join("shop.db").display());
    config.customer_migration.processes = 4;
    config.customer_migrator.log_file = dir.path().join("migration.log");

    let backend = Backend::open(&config.connection, true).await?;
    let Backend::Sqlite(pool) = backend.clone() else {
        return Err("the example opens an sqlite: URL".into());
    };
    let unparseable = fill(&pool).await?;

    let writer = Arc::new(tokio::sync::Mutex::new(()));
    let migration = ProductPrices {
        database: Database::Sqlite(pool.clone()),
        pool,
        writer: Arc::clone(&writer),
        journal: tokio::sync::OnceCell::new(),
        noun: Noun::new("product", "products"),
        keys: vec![KeyColumn::new("sku", KeyKind::Text)],
    };
    let (board, mut events) = EventBoard::channel();
    let board: Box<dyn StatusBoard> = Box::new(board);
    let system = builder_for(&config, backend, writer, Arc::new(migration))
        .with_override::<dyn StatusBoard>(board, "EventBoard")
        .build()?;

    system.start().await?;
    let watcher = tokio::spawn(async move {
        let mut last = String::new();
        while let Some(event) = events.recv().await {
            match event {
                Event::JobText {
                    job: SUMMARY_JOB,
                    text,
                } if text != last => {
                    println!("progress: {text}");
                    last = text;
                }
                // The last event: the stream stays open as long as the system does.
                Event::Summary(summary) => {
                    println!("summary event: {summary}");
                    break;
                }
                _ => {}
            }
        }
    });
    let summary = overseer(&system)
        .run(RunOptions::default(), CancellationToken::new())
        .await?;
    system.stop().await?; // closes the pool
    watcher.await?;

    // What the database holds now, read afresh: the rows, the audit, the failures.
    let Backend::Sqlite(pool) = Backend::open(&config.connection, false).await? else {
        return Err("not an SQLite database".into());
    };
    let counts: (i64, i64, i64) = sqlx::query_as(
        "SELECT sum(migrated_at > ?1), sum(migrated_at = ?1), sum(migrated_at IS NULL) FROM products",
    )
    .bind(EARLIER)
    .fetch_one(&pool)
    .await?;
    let strings = |sql: &'static str, bind: &'static str| {
        sqlx::query_scalar::<_, String>(sql)
            .bind(bind)
            .fetch_all(&pool)
    };
    let migrated = strings(
        "SELECT sku FROM products WHERE migrated_at > ? ORDER BY sku",
        EARLIER,
    );
    let audited = strings(
        "SELECT value FROM migration_audit, json_each(record_keys) WHERE migration = ? ORDER BY value",
        NAME,
    );
    let failed = strings(
        "SELECT record_key FROM migration_failures WHERE migration = ? AND resolved_at IS NULL
          ORDER BY record_key",
        NAME,
    );
    let (migrated, audited, failed) = (migrated.await?, audited.await?, failed.await?);

    let s = &summary;
    let expected = (s.migrated, s.previously_migrated, s.failed);
    let counts = (counts.0 as u64, counts.1 as u64, counts.2 as u64);
    if s.ending != Ending::Completed || counts != expected {
        let ending = s.ending;
        return Err(format!("ended {ending:?}; rows {counts:?}, summary {expected:?}").into());
    }
    if audited != migrated {
        let (a, m, differs) = (
            audited.len(),
            migrated.len(),
            audited.iter().zip(&migrated).find(|(a, m)| a != m),
        );
        let error = format!(
            "migration_audit lists {a} skus, {m} were migrated; first difference {differs:?}"
        );
        return Err(error.into());
    }
    if failed != unparseable {
        let error = format!("migration_failures lists {failed:?}, expected {unparseable:?}");
        return Err(error.into());
    }
    println!(
        "checked: {} rows migrated, each once in migration_audit; {} failures in migration_failures under {NAME}",
        migrated.len(),
        failed.len()
    );
    Ok(())
}
