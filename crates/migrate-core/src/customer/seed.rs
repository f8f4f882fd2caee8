//! The demo `customers` table: created and filled deterministically for a given size.

use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Sqlite};

use crate::connection::Backend;

/// A failure to create or fill the demo table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// The simulated backend has no table to fill.
    #[error("connection.url is simulated: seeding needs a sqlite:// or postgres:// URL")]
    Simulated,
    /// `customers` already holds rows and `--force` was not given.
    #[error("the customers table already holds {rows} rows: use --force to refill it")]
    NotEmpty {
        /// Rows found.
        rows: i64,
    },
    /// The bookkeeping tables of an earlier migration exist and `--force` was not given.
    #[error(
        "the database holds the bookkeeping of an earlier migration ({}): use --force to drop \
         it with the refill",
        list(tables)
    )]
    Bookkeeping {
        /// The tables found, with their rows.
        tables: Vec<DroppedTable>,
    },
    /// A statement failed.
    #[error("while {doing}: {source}")]
    Database {
        /// What was being done.
        doing: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

fn context(doing: &'static str) -> impl FnOnce(sqlx::Error) -> SeedError {
    move |source| SeedError::Database { doing, source }
}

/// What `seed_customers` created, and what it wiped to do so.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SeedReport {
    /// Rows in all.
    pub customers: u64,
    /// Rows already migrated (`schema_version = 2`).
    pub migrated: u64,
    /// Legacy rows whose `full_name` cannot be split.
    pub malformed: u64,
    /// Rows of the existing `customers` table deleted for the refill.
    pub deleted: u64,
    /// Bookkeeping tables dropped with the refill.
    pub dropped: Vec<DroppedTable>,
    /// Rows of the `orders` demo table (one for every ten customers), made anew.
    pub orders: u64,
}

/// A bookkeeping table, with the rows it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DroppedTable {
    /// `migration_checkpoints` or `migration_failures`.
    pub name: &'static str,
    /// Rows it held.
    pub rows: u64,
}

impl std::fmt::Display for DroppedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.rows == 1 { "" } else { "s" };
        write!(f, "{} ({} row{plural})", self.name, self.rows)
    }
}

/// `a (1 row) and b (2 rows)`.
pub(crate) fn list(tables: &[DroppedTable]) -> String {
    let names: Vec<String> = tables.iter().map(ToString::to_string).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The tables a migration keeps its progress and failures in. They describe the rows of
/// `customers`: once those are replaced, a kept checkpoint would make the next run skip the new
/// rows, and kept failures would name records that no longer exist.
const BOOKKEEPING: [&str; 5] = [
    "migration_checkpoints",
    "migration_failures",
    "migration_audit",
    "migration_runs",
    "migration_controls",
];

/// When the pre-migrated demo rows were migrated.
pub const SEEDED_MIGRATED_AT: &str = "2024-01-01T00:00:00Z";

/// One demo customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoCustomer {
    /// Primary key, 1 to N.
    pub id: i64,
    /// `"Last, First"` (or malformed).
    pub full_name: String,
    /// Mixed case with stray spaces on legacy rows.
    pub email: String,
    /// 1 legacy, 2 migrated.
    pub schema_version: i64,
    /// Filled on migrated rows.
    pub first_name: Option<String>,
    /// Filled on migrated rows.
    pub last_name: Option<String>,
    /// Set on migrated rows.
    pub migrated_at: Option<String>,
}

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Dennis",
    "Frances",
    "Ken",
    "Radia",
    "Tony",
    "Hedy",
    "John",
    "Katherine",
    "Niklaus",
];
const LAST: [&str; 16] = [
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Ritchie", "Allen",
    "Thompson", "Perlman", "Hoare", "Lamarr", "McCarthy", "Johnson", "Wirth",
];

fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `id`-th demo customer (ids from 1): about 30% already migrated, about 0.1% malformed.
pub fn demo_customer(id: i64) -> DemoCustomer {
    let h = mix(id as u64);
    let first = FIRST[(h % 16) as usize];
    let last = LAST[((h >> 8) % 16) as usize];
    let migrated = (h >> 16) % 100 < 30;
    let malformed = !migrated && (h >> 32).is_multiple_of(1000);
    let local = format!("{first}.{last}{id}");
    if migrated {
        return DemoCustomer {
            id,
            full_name: format!("{last}, {first}"),
            email: format!("{}@example.com", local.to_lowercase()),
            schema_version: 2,
            first_name: Some(first.to_owned()),
            last_name: Some(last.to_owned()),
            migrated_at: Some(SEEDED_MIGRATED_AT.to_owned()),
        };
    }
    let full_name = if malformed {
        if (h >> 40).is_multiple_of(2) {
            format!("{first} {last}")
        } else {
            String::new()
        }
    } else {
        format!("{last}, {first}")
    };
    // Mixed case and stray spaces, as legacy data has.
    let email = match (h >> 48) % 3 {
        0 => format!("  {local}@Example.COM"),
        1 => format!("{}@EXAMPLE.com ", local.to_uppercase()),
        _ => format!(" {local}@example.Com "),
    };
    DemoCustomer {
        id,
        full_name,
        email,
        schema_version: 1,
        first_name: None,
        last_name: None,
        migrated_at: None,
    }
}

/// The demo table, with the id column's type left to the database: on SQLite
/// `INTEGER PRIMARY KEY` is the rowid itself (one B-tree, keyset pages and batch lookups go
/// straight to the rows); PostgreSQL takes 64-bit `BIGINT PRIMARY KEY`.
fn create_customers(id_column: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS customers (
    id {id_column},
    full_name TEXT NOT NULL,
    email TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    first_name TEXT,
    last_name TEXT,
    migrated_at TEXT)"
    ))
}

/// One row of the `orders` demo table, keyed by (`region`, `order_no`): the second example
/// migration (`migrations/orders-normalize.toml`) tidies its status and currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOrder {
    /// Its region: text whose order differs between byte order and a linguistic collation.
    pub region: &'static str,
    /// Its number within the region.
    pub order_no: i64,
    /// Its status, with stray spaces and capitals (`lost` is no valid status).
    pub status: &'static str,
    /// Its currency code, with stray spaces and lower case (`eu` is no valid code).
    pub currency: &'static str,
    /// When it was normalized: set on every fifth order, as if done before.
    pub normalized_at: Option<&'static str>,
}

/// The `n`-th demo order (from 1), the same on every call.
pub fn demo_order(n: i64) -> DemoOrder {
    const REGIONS: [&str; 6] = ["amer", "Bravo", "emea", "Zulu", "apac", "delta"];
    const STATUSES: [&str; 5] = ["paid", " paid ", "SHIPPED", "Cancelled", "lost"];
    const CURRENCIES: [&str; 4] = [" usd", "EUR", "eur ", "eu"];
    let index = n - 1;
    let done = index % 5 == 0;
    DemoOrder {
        region: REGIONS[(index % 6) as usize],
        order_no: index / 6 + 1,
        status: if done {
            "paid"
        } else {
            STATUSES[(index % 5) as usize]
        },
        currency: if done {
            "USD"
        } else {
            CURRENCIES[(index % 4) as usize]
        },
        normalized_at: done.then_some(SEEDED_MIGRATED_AT),
    }
}

/// Rows per INSERT statement (7 parameters each: well under both databases' limits).
const ROWS_PER_INSERT: usize = 1000;

/// Creates `customers` and fills it with `customers` demo rows.
///
/// Rows already in `customers`, and the bookkeeping tables of an earlier migration
/// (`migration_checkpoints`, `migration_failures`), are wiped only with `force`: the rows are
/// deleted and the tables dropped, in the transaction that refills, and the report says what
/// went. Without `force` either one is an error and nothing is written. Whether a refill must be
/// confirmed first is the caller's decision.
pub async fn seed_customers(
    backend: &Backend,
    customers: u64,
    force: bool,
) -> Result<SeedReport, SeedError> {
    let mut report = SeedReport {
        customers,
        orders: customers / 10,
        ..SeedReport::default()
    };
    for id in 1..=customers as i64 {
        let c = demo_customer(id);
        report.migrated += u64::from(c.schema_version == 2);
        report.malformed += u64::from(crate::customer::sql::split_full_name(&c.full_name).is_err());
    }
    macro_rules! seed {
        ($pool:expr, $db:ty, $create:expr, $exists:expr) => {{
            let pool = $pool;
            sqlx::query($create)
                .execute(pool)
                .await
                .map_err(context("creating the customers table"))?;
            let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM customers")
                .fetch_one(pool)
                .await
                .map_err(context("counting customers"))?;
            if rows > 0 && !force {
                return Err(SeedError::NotEmpty { rows });
            }
            let mut found = Vec::new();
            for name in BOOKKEEPING {
                let exists: i64 = sqlx::query_scalar($exists)
                    .bind(name)
                    .fetch_one(pool)
                    .await
                    .map_err(context("looking for the bookkeeping tables"))?;
                if exists > 0 {
                    let count = AssertSqlSafe(format!("SELECT count(*) FROM {name}"));
                    let rows: i64 = sqlx::query_scalar(count)
                        .fetch_one(pool)
                        .await
                        .map_err(context("counting the bookkeeping rows"))?;
                    found.push(DroppedTable {
                        name,
                        rows: rows as u64,
                    });
                }
            }
            if !found.is_empty() && !force {
                return Err(SeedError::Bookkeeping { tables: found });
            }
            let mut tx = pool.begin().await.map_err(context("starting to seed"))?;
            sqlx::query("DELETE FROM customers")
                .execute(&mut *tx)
                .await
                .map_err(context("clearing the demo tables"))?;
            for table in &found {
                let drop = AssertSqlSafe(format!("DROP TABLE {}", table.name));
                sqlx::query(drop)
                    .execute(&mut *tx)
                    .await
                    .map_err(context("clearing the demo tables"))?;
            }
            for sql in [
                "DROP TABLE IF EXISTS orders",
                "CREATE TABLE orders (region TEXT NOT NULL, order_no BIGINT NOT NULL,
                   status TEXT, currency TEXT, normalized_at TEXT,
                   PRIMARY KEY (region, order_no))",
            ] {
                sqlx::query(sql)
                    .execute(&mut *tx)
                    .await
                    .map_err(context("making the orders demo table"))?;
            }
            let orders: Vec<DemoOrder> = (1..=report.orders as i64).map(demo_order).collect();
            for chunk in orders.chunks(ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<$db>::new(
                    "INSERT INTO orders (region, order_no, status, currency, normalized_at) ",
                );
                insert.push_values(chunk, |mut row, o| {
                    row.push_bind(o.region)
                        .push_bind(o.order_no)
                        .push_bind(o.status)
                        .push_bind(o.currency)
                        .push_bind(o.normalized_at);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(context("inserting demo orders"))?;
            }
            report.deleted = rows as u64;
            report.dropped = found;
            let mut next = 1i64;
            while next <= customers as i64 {
                let last = (next + ROWS_PER_INSERT as i64 - 1).min(customers as i64);
                let mut insert = QueryBuilder::<$db>::new(
                    "INSERT INTO customers (id, full_name, email, schema_version, first_name, last_name, migrated_at) ",
                );
                insert.push_values((next..=last).map(demo_customer), |mut row, c| {
                    row.push_bind(c.id)
                        .push_bind(c.full_name)
                        .push_bind(c.email)
                        .push_bind(c.schema_version as i32)
                        .push_bind(c.first_name)
                        .push_bind(c.last_name)
                        .push_bind(c.migrated_at);
                });
                insert
                    .build()
                    .execute(&mut *tx)
                    .await
                    .map_err(context("inserting demo customers"))?;
                next = last + 1;
            }
            tx.commit().await.map_err(context("committing the demo customers"))?;
        }};
    }
    match backend {
        Backend::Simulated { .. } => return Err(SeedError::Simulated),
        Backend::Sqlite(pool) => seed!(
            pool,
            Sqlite,
            create_customers("INTEGER PRIMARY KEY"),
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
        ),
        Backend::Postgres(pool) => seed!(
            pool,
            Postgres,
            create_customers("BIGINT PRIMARY KEY"),
            "SELECT count(*) FROM (SELECT to_regclass($1) AS found) AS t WHERE found IS NOT NULL"
        ),
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_tables_are_listed_with_their_rows() {
        let table = |name, rows| DroppedTable { name, rows };
        assert_eq!(list(&[table("a", 1)]), "a (1 row)");
        assert_eq!(
            list(&[table("a", 0), table("b", 2), table("c", 3)]),
            "a (0 rows), b (2 rows) and c (3 rows)"
        );
    }

    #[test]
    fn demo_data_is_deterministic_with_the_planned_shares() {
        assert_eq!(demo_customer(77), demo_customer(77));
        let all: Vec<_> = (1..=100_000).map(demo_customer).collect();
        let migrated = all.iter().filter(|c| c.schema_version == 2).count();
        let malformed = all
            .iter()
            .filter(|c| crate::customer::sql::split_full_name(&c.full_name).is_err())
            .count();
        assert!((28_000..32_000).contains(&migrated), "{migrated}");
        assert!((40..110).contains(&malformed), "{malformed}");
        let legacy = all.iter().find(|c| c.schema_version == 1).unwrap();
        assert_ne!(legacy.email.trim().to_lowercase(), legacy.email);
        assert!(legacy.first_name.is_none() && legacy.migrated_at.is_none());
    }
}
