//! Where the benchmark's copies live, and the seeded database they are copied from.

use migrate_core::{Backend, ConnectionConfig, SeedReport, demo_order, seed_customers};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Sqlite};

/// Where the copies live: SQLite files, or PostgreSQL databases made from a template.
pub enum Target {
    Sqlite { dir: tempfile::TempDir },
    Postgres { server: String },
}

/// Databases a run may leave on the server, dropped at the end.
pub const COPIES: [&str; 11] = [
    "engine",
    "toml",
    "set",
    "loop",
    "loop2",
    "composite",
    "clustered",
    "integer",
    "interleaved",
    "loopc",
    "loopi",
];

impl Target {
    /// An empty seed database: a file in a temporary directory, or `dbm_bench_seed` made anew.
    pub async fn new(postgres: bool) -> Target {
        if postgres {
            let server = std::env::var("DB_MIGRATE_TEST_POSTGRES_URL")
                .expect("--postgres needs DB_MIGRATE_TEST_POSTGRES_URL (see .ci/postgres.sh)");
            admin(
                &server,
                &[
                    "DROP DATABASE IF EXISTS dbm_bench_seed WITH (FORCE)".to_owned(),
                    "CREATE DATABASE dbm_bench_seed".to_owned(),
                ],
            )
            .await;
            Target::Postgres { server }
        } else {
            Target::Sqlite {
                dir: tempfile::tempdir().expect("a temporary directory"),
            }
        }
    }

    fn seed_url(&self) -> String {
        match self {
            Target::Sqlite { dir } => format!("sqlite://{}", dir.path().join("seed.db").display()),
            Target::Postgres { server } => with_database(server, "dbm_bench_seed"),
        }
    }

    /// Seeds `customers` demo customers (and their tenth as orders), grows `orders` to
    /// `orders` rows with more demo orders, and derives three tables of the same rows:
    /// `orders_by_id` under an integer key, stored in that key's order; `orders_interleaved`
    /// under the same integer key, stored as `orders` is and with its history; and
    /// `orders_clustered` under the composite key, stored in its order.
    pub async fn seed(&self, customers: u64, orders: u64) -> SeedReport {
        let seed = open(&self.seed_url(), true).await;
        let mut report = seed_customers(&seed, customers, true)
            .await
            .expect("seeding");
        grow_orders(&seed, report.orders, orders).await;
        report.orders = report.orders.max(orders);
        let (id, position) = match &seed {
            Backend::Postgres(_) => ("BIGINT", "ctid"),
            _ => ("INTEGER", "rowid"),
        };
        let mut statements = vec![
            // `orders_interleaved`: the integer key of `orders_by_id` on rows stored where
            // `orders` stores them, the regions interleaved, with an index of its own (on
            // SQLite `BIGINT PRIMARY KEY`, which is not the rowid): what sets a composite key
            // apart from an integer one, and nothing of the storage. Made before the updates
            // below, which it then goes through as `orders` does (on PostgreSQL an updated row
            // moves, and the space it leaves is what later updates reuse).
            "CREATE TABLE orders_interleaved (id BIGINT PRIMARY KEY, region TEXT NOT NULL,
               order_no BIGINT NOT NULL, status TEXT, currency TEXT, normalized_at TEXT)"
                .to_owned(),
            format!(
                "INSERT INTO orders_interleaved
                   SELECT id, region, order_no, status, currency, normalized_at
                   FROM (SELECT {position} AS position,
                                row_number() OVER (ORDER BY region, order_no) AS id, region,
                                order_no, status, currency, normalized_at
                         FROM orders) AS numbered
                   ORDER BY position"
            ),
        ];
        // About 40% of the demo orders hold a status or currency that the migration refuses:
        // made valid here, so that the runs measure the update rather than the recording of
        // failures (and do not stop at `max-failures`).
        for table in ["orders", "orders_interleaved"] {
            statements.push(format!(
                "UPDATE {table} SET status = ' New ' WHERE status = 'lost'"
            ));
            statements.push(format!(
                "UPDATE {table} SET currency = 'eur ' WHERE currency = 'eu'"
            ));
        }
        statements.extend([
            format!(
                "CREATE TABLE orders_by_id (id {id} PRIMARY KEY, region TEXT NOT NULL,
                   order_no BIGINT NOT NULL, status TEXT, currency TEXT, normalized_at TEXT)"
            ),
            "INSERT INTO orders_by_id
               SELECT row_number() OVER (ORDER BY region, order_no), region, order_no, status,
                      currency, normalized_at
               FROM orders"
                .to_owned(),
        ]);
        // `orders_clustered`: the same rows stored in their key's order. SQLite: a table
        // `WITHOUT ROWID`, whose primary key is the table's own B-tree (one descent per key
        // instead of the index's and then the rowid's). PostgreSQL has no such table: the heap
        // rewritten in the key's order (`CLUSTER`), which is what it can do.
        let clustered = match &seed {
            Backend::Postgres(_) => "",
            _ => " WITHOUT ROWID",
        };
        statements.push(format!(
            "CREATE TABLE orders_clustered (region TEXT NOT NULL, order_no BIGINT NOT NULL,
               status TEXT, currency TEXT, normalized_at TEXT,
               PRIMARY KEY (region, order_no)){clustered}"
        ));
        statements.push(
            "INSERT INTO orders_clustered SELECT region, order_no, status, currency, normalized_at
               FROM orders ORDER BY region, order_no"
                .to_owned(),
        );
        if let Backend::Postgres(_) = &seed {
            statements.push("CLUSTER orders_clustered USING orders_clustered_pkey".to_owned());
            statements.push("VACUUM ANALYZE".to_owned());
        }
        for sql in statements {
            let done = match &seed {
                Backend::Sqlite(pool) => sqlx::query(AssertSqlSafe(sql.clone()))
                    .execute(pool)
                    .await
                    .map(drop),
                Backend::Postgres(pool) => sqlx::query(AssertSqlSafe(sql.clone()))
                    .execute(pool)
                    .await
                    .map(drop),
                _ => unreachable!("a database"),
            };
            done.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        seed.close().await;
        report
    }

    /// A fresh copy of the seeded database; returns its URL.
    pub async fn copy(&self, name: &str) -> String {
        match self {
            Target::Sqlite { dir } => {
                let to = dir.path().join(format!("{name}.db"));
                for suffix in ["-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", to.display()));
                }
                std::fs::copy(dir.path().join("seed.db"), &to).expect("copying the seed");
                format!("sqlite://{}", to.display())
            }
            Target::Postgres { server } => {
                admin(
                    server,
                    &[
                        format!("DROP DATABASE IF EXISTS dbm_bench_{name} WITH (FORCE)"),
                        format!("CREATE DATABASE dbm_bench_{name} TEMPLATE dbm_bench_seed"),
                        // The copy went through the WAL and left its pages dirty: written out
                        // now, not by a checkpoint in the middle of whichever measure is next.
                        "CHECKPOINT".to_owned(),
                    ],
                )
                .await;
                with_database(server, &format!("dbm_bench_{name}"))
            }
        }
    }

    /// Drops the PostgreSQL databases of the run (SQLite's files go with their directory).
    pub async fn clean_up(&self) {
        if let Target::Postgres { server } = self {
            let drops: Vec<String> = COPIES
                .iter()
                .chain(&["seed"])
                .map(|name| format!("DROP DATABASE IF EXISTS dbm_bench_{name} WITH (FORCE)"))
                .collect();
            admin(server, &drops).await;
        }
    }
}

/// Adds the demo orders after the first `from`, up to `to`.
async fn grow_orders(backend: &Backend, from: u64, to: u64) {
    const ROWS_PER_INSERT: i64 = 1000;
    macro_rules! insert {
        ($pool:expr, $db:ty) => {{
            let mut tx = $pool.begin().await.expect("a transaction");
            let mut next = from as i64 + 1;
            while next <= to as i64 {
                let last = (next + ROWS_PER_INSERT - 1).min(to as i64);
                let mut insert = QueryBuilder::<$db>::new(
                    "INSERT INTO orders (region, order_no, status, currency, normalized_at) ",
                );
                insert.push_values((next..=last).map(demo_order), |mut row, o| {
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
                    .expect("inserting orders");
                next = last + 1;
            }
            tx.commit().await.expect("committing orders");
        }};
    }
    match backend {
        Backend::Sqlite(pool) => insert!(pool, Sqlite),
        Backend::Postgres(pool) => insert!(pool, Postgres),
        _ => unreachable!("a database"),
    }
}

fn with_database(server: &str, database: &str) -> String {
    let (base, query) = server
        .split_once('?')
        .map_or((server, None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').expect("a database in the URL");
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    format!("{}/{database}{query}", &base[..host_end])
}

async fn admin(server: &str, statements: &[String]) {
    let pool = sqlx::PgPool::connect(server).await.expect("the server");
    for sql in statements {
        sqlx::query(AssertSqlSafe(sql.clone()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    pool.close().await;
}

/// The database at `url` with the project's connection settings.
pub async fn open(url: &str, create: bool) -> Backend {
    let config = ConnectionConfig {
        url: url.to_owned(),
        ..ConnectionConfig::default()
    };
    Backend::open(&config, create).await.expect("opening")
}
