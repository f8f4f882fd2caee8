//! The `migration_ranges` table: a migration's key space split into ranges, each pending,
//! leased by one process, or done.
//!
//! | column | meaning |
//! |---|---|
//! | `migration`, `range_id` | the range (ids from 1 in key order; the last id may be the range of boundary keys) |
//! | `lower_key`, `upper_key` | the bounds, both exclusive, as key lines (`42`, `eu,7`); NULL for unbounded |
//! | `range_keys` | for the range of boundary keys: a JSON array of key lines (the bounds are then NULL) |
//! | `state` | `pending`, `leased` or `done` |
//! | `holder` | the process holding or last holding it: `host:pid:token` |
//! | `generation` | one more at every claim: the fence (see [`fence`](super::fence)) |
//! | `lease_expires_at`, `heartbeat_at` | the lease, renewed by heartbeats (database time) |
//! | `rows_done` | records handled in the range so far |
//! | `done_at` | when it was finished |
//!
//! `migration_range_plans` has one row per migration whose key space was split: `migration`,
//! `ranges`, `planned_by`, `planned_at`. Splitting happens once, under a transaction-scoped
//! advisory lock: processes that start together wait for the first, then find its plan.
//!
//! Times are the database's (`now()`), never a machine's: the processes' clocks may differ.

use std::time::Duration;

use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use crate::database::{DbError, context};
use crate::engine::checkpoint::KeyRange;
use crate::migration::key::{Key, KeyColumn};

const CREATE_RANGES: &str = "CREATE TABLE IF NOT EXISTS migration_ranges (
    migration TEXT NOT NULL,
    range_id BIGINT NOT NULL,
    lower_key TEXT,
    upper_key TEXT,
    range_keys TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    holder TEXT,
    generation BIGINT NOT NULL DEFAULT 0,
    lease_expires_at TIMESTAMPTZ,
    heartbeat_at TIMESTAMPTZ,
    rows_done BIGINT NOT NULL DEFAULT 0,
    done_at TIMESTAMPTZ,
    PRIMARY KEY (migration, range_id))";
const CREATE_PLANS: &str = "CREATE TABLE IF NOT EXISTS migration_range_plans (
    migration TEXT PRIMARY KEY,
    ranges BIGINT NOT NULL,
    planned_by TEXT NOT NULL,
    planned_at TIMESTAMPTZ NOT NULL DEFAULT now())";

/// The advisory lock that serializes creating the tables and splitting a migration (a fixed
/// 64-bit number: `db-migrate ranges` in ASCII, truncated).
const PLAN_LOCK: i64 = 0x6462_6d5f_7261_6e67;

/// One range of a plan, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlannedRange {
    /// The keys between two bounds (both exclusive, `None` unbounded).
    Between(KeyRange),
    /// Exactly these keys: the boundaries of a split of keys without a successor (text,
    /// composite), which no range between bounds holds.
    Keys(Vec<Key>),
}

/// A range as stored, as a process works on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Its id within the migration.
    pub id: i64,
    /// Its bounds (`KeyRange::ALL` for a range of given keys).
    pub bounds: KeyRange,
    /// For a range of given keys: the keys.
    pub keys: Option<Vec<Key>>,
}

/// A range this process holds, with the generation its claim set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The range.
    pub range: Range,
    /// See [`fence::Lease`](super::fence::Lease).
    pub generation: i64,
    /// `rows_done` when claimed: what earlier holders handled.
    pub rows_before: i64,
}

impl Claim {
    /// The lease the fence checks.
    pub fn lease(&self) -> super::fence::Lease {
        super::fence::Lease {
            range_id: self.range.id,
            generation: self.generation,
        }
    }
}

/// How many ranges are in each state, and who works on them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Overview {
    /// Ranges finished.
    pub done: u64,
    /// Ranges held under a lease that has not expired.
    pub leased: u64,
    /// Ranges waiting for a process (expired leases included).
    pub pending: u64,
    /// Processes holding an unexpired lease.
    pub processes: u64,
    /// Records handled, summed over the ranges.
    pub rows_done: u64,
}

impl Overview {
    /// Every range.
    pub fn total(&self) -> u64 {
        self.done + self.leased + self.pending
    }
}

/// Creates the two tables when missing (under the plan lock, held by `conn`'s transaction).
async fn create_tables(conn: &mut PgConnection) -> Result<(), DbError> {
    for create in [CREATE_RANGES, CREATE_PLANS] {
        sqlx::query(create)
            .execute(&mut *conn)
            .await
            .map_err(context("creating the table of key ranges"))?;
    }
    Ok(())
}

/// Makes sure `migration` is split into ranges, exactly once whatever the number of processes
/// calling at once: the first computes the plan with `split` and stores it; the others wait
/// and find it. Returns the number of ranges.
///
/// The processes take turns on a session-level advisory lock, not a transaction's: `split`
/// pages through the whole key space, which on a large table takes minutes, and a transaction
/// left open that long would be cut by `idle_in_transaction_session_timeout` and hold back
/// vacuum. Only the writing of the plan is a (short) transaction. The waiters' wait is not cut
/// by a `statement_timeout` of the role.
pub async fn ensure_plan<F, Fut>(
    pool: &PgPool,
    migration: &str,
    planned_by: &str,
    split: F,
) -> Result<u64, crate::BoxError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<PlannedRange>, crate::BoxError>>,
{
    let mut conn = pool
        .acquire()
        .await
        .map_err(context("starting to plan the key ranges"))?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .map_err(context("starting to plan the key ranges"))?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(PLAN_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(context("waiting for the lock on the key ranges"))?;
    let planned = plan_once(&mut conn, migration, planned_by, split).await;
    // Whatever happened: a lock left with a pooled connection would stop every other process.
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(PLAN_LOCK)
        .execute(&mut *conn)
        .await;
    let reset = sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() || reset.is_err() {
        // Closing the session releases the lock and drops the setting.
        let _ = conn.close().await;
    }
    planned
}

/// The plan of `migration`, read or (the first time) computed and stored; under the lock.
async fn plan_once<F, Fut>(
    conn: &mut PgConnection,
    migration: &str,
    planned_by: &str,
    split: F,
) -> Result<u64, crate::BoxError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<PlannedRange>, crate::BoxError>>,
{
    create_tables(&mut *conn).await?;
    let existing: Option<i64> =
        sqlx::query_scalar("SELECT ranges FROM migration_range_plans WHERE migration = $1")
            .bind(migration)
            .fetch_optional(&mut *conn)
            .await
            .map_err(context("reading the plan of key ranges"))?;
    if let Some(ranges) = existing {
        return Ok(ranges.max(0) as u64);
    }
    let planned = split().await?;
    let mut tx = sqlx::Connection::begin(&mut *conn)
        .await
        .map_err(context("storing the plan of key ranges"))?;
    for (index, range) in planned.iter().enumerate() {
        insert_range(&mut tx, migration, index as i64 + 1, range).await?;
    }
    sqlx::query(
        "INSERT INTO migration_range_plans (migration, ranges, planned_by) VALUES ($1, $2, $3)",
    )
    .bind(migration)
    .bind(planned.len() as i64)
    .bind(planned_by)
    .execute(&mut *tx)
    .await
    .map_err(context("storing the plan of key ranges"))?;
    tx.commit()
        .await
        .map_err(context("storing the plan of key ranges"))?;
    Ok(planned.len() as u64)
}

async fn insert_range(
    conn: &mut PgConnection,
    migration: &str,
    id: i64,
    range: &PlannedRange,
) -> Result<(), DbError> {
    let line = |key: &Option<Key>| key.as_ref().map(Key::to_string);
    let (lower, upper, keys) = match range {
        PlannedRange::Between(bounds) => (line(&bounds.after), line(&bounds.before), None),
        PlannedRange::Keys(keys) => {
            let lines: Vec<String> = keys.iter().map(Key::to_string).collect();
            (
                None,
                None,
                Some(serde_json::to_string(&lines).expect("lines")),
            )
        }
    };
    sqlx::query(
        "INSERT INTO migration_ranges (migration, range_id, lower_key, upper_key, range_keys)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(migration)
    .bind(id)
    .bind(lower)
    .bind(upper)
    .bind(keys)
    .execute(&mut *conn)
    .await
    .map_err(context("storing a key range"))?;
    Ok(())
}

/// Claims one range: a pending one, or one whose lease expired (its holder died or stalled),
/// skipping those another process is claiming or whose holder's batch is committing. Returns
/// `None` when there is none to claim now.
pub async fn claim(
    pool: &PgPool,
    migration: &str,
    holder: &str,
    lease: Duration,
    columns: &[KeyColumn],
) -> Result<Option<Claim>, crate::BoxError> {
    let row = sqlx::query(
        "WITH next AS (
           SELECT range_id FROM migration_ranges
            WHERE migration = $1
              AND (state = 'pending' OR (state = 'leased' AND lease_expires_at < now()))
            ORDER BY range_id
            LIMIT 1
            FOR UPDATE SKIP LOCKED)
         UPDATE migration_ranges r
            SET state = 'leased', holder = $2, generation = r.generation + 1,
                lease_expires_at = now() + make_interval(secs => $3),
                heartbeat_at = now()
           FROM next
          WHERE r.migration = $1 AND r.range_id = next.range_id
         RETURNING r.range_id, r.lower_key, r.upper_key, r.range_keys, r.generation,
                   r.rows_done",
    )
    .bind(migration)
    .bind(holder)
    .bind(lease.as_secs_f64())
    .fetch_optional(pool)
    .await
    .map_err(context("claiming a key range"))?;
    Ok(row.map(|row| claim_from_row(&row, columns)).transpose()?)
}

/// Takes a range for a static shard: no lease, no expiry (a range of a shard is never taken
/// over; the shard's own process resumes it). `None` when it is done already.
pub async fn take(
    pool: &PgPool,
    migration: &str,
    range_id: i64,
    holder: &str,
    columns: &[KeyColumn],
) -> Result<Option<Claim>, crate::BoxError> {
    let row = sqlx::query(
        // The row is locked `FOR UPDATE` first, as a claim locks it: that conflicts with the
        // `FOR KEY SHARE` a batch's fence holds until it commits, so a shard taken over (a pod
        // replaced while the old one still runs) waits for the old holder's batch under way,
        // and the old holder's next batch sees the new generation. A plain UPDATE of these
        // columns takes only `FOR NO KEY UPDATE`, which does not conflict with it.
        "WITH target AS (
            SELECT range_id FROM migration_ranges
             WHERE migration = $1 AND range_id = $2 AND state <> 'done'
             FOR UPDATE
         )
         UPDATE migration_ranges AS r
            SET state = 'leased', holder = $3, generation = r.generation + 1,
                lease_expires_at = NULL, heartbeat_at = now()
           FROM target
          WHERE r.migration = $1 AND r.range_id = target.range_id
         RETURNING r.range_id, r.lower_key, r.upper_key, r.range_keys, r.generation, r.rows_done",
    )
    .bind(migration)
    .bind(range_id)
    .bind(holder)
    .fetch_optional(pool)
    .await
    .map_err(context("taking a key range of the shard"))?;
    Ok(row.map(|row| claim_from_row(&row, columns)).transpose()?)
}

/// The ids of the ranges of `migration`.
pub async fn range_ids(pool: &PgPool, migration: &str) -> Result<Vec<i64>, DbError> {
    sqlx::query_scalar(
        "SELECT range_id FROM migration_ranges WHERE migration = $1 ORDER BY range_id",
    )
    .bind(migration)
    .fetch_all(pool)
    .await
    .map_err(context("listing the key ranges"))
}

/// The claim a claiming or taking statement returned.
fn claim_from_row(row: &sqlx::postgres::PgRow, columns: &[KeyColumn]) -> Result<Claim, String> {
    Ok(Claim {
        range: range_from_row(row, columns)?,
        generation: row.get("generation"),
        rows_before: row.get("rows_done"),
    })
}

fn range_from_row(row: &sqlx::postgres::PgRow, columns: &[KeyColumn]) -> Result<Range, String> {
    let id: i64 = row.get("range_id");
    let parse = |line: Option<String>| -> Result<Option<Key>, String> {
        line.map(|line| {
            Key::parse(&line, columns)
                .map_err(|e| format!("migration_ranges, range {id}: key {line:?}: {e}"))
        })
        .transpose()
    };
    let keys = match row.get::<Option<String>, _>("range_keys") {
        None => None,
        Some(json) => {
            let lines: Vec<String> = serde_json::from_str(&json)
                .map_err(|e| format!("migration_ranges, range {id}: range_keys: {e}"))?;
            Some(
                lines
                    .into_iter()
                    .map(|line| parse(Some(line)).map(Option::unwrap))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        }
    };
    Ok(Range {
        id,
        bounds: KeyRange {
            after: parse(row.get("lower_key"))?,
            before: parse(row.get("upper_key"))?,
        },
        keys,
    })
}

/// Renews the lease and records progress; `false` when the lease is lost (taken over, or the
/// range finished by someone else): the caller must stop working on the range.
pub async fn renew(
    pool: &PgPool,
    migration: &str,
    claim: &Claim,
    lease: Duration,
    rows_done: i64,
) -> Result<bool, DbError> {
    let renewed = sqlx::query(
        "UPDATE migration_ranges
            SET lease_expires_at = CASE WHEN lease_expires_at IS NULL THEN NULL
                                        ELSE now() + make_interval(secs => $4) END,
                heartbeat_at = now(), rows_done = $5
          WHERE migration = $1 AND range_id = $2 AND generation = $3 AND state = 'leased'",
    )
    .bind(migration)
    .bind(claim.range.id)
    .bind(claim.generation)
    .bind(lease.as_secs_f64())
    .bind(rows_done)
    .execute(pool)
    .await
    .map_err(context("renewing the lease on a key range"))?;
    Ok(renewed.rows_affected() == 1)
}

/// Marks the range done; `false` when the lease was lost first.
pub async fn finish(
    pool: &PgPool,
    migration: &str,
    claim: &Claim,
    rows_done: i64,
) -> Result<bool, DbError> {
    let set = "state = 'done', done_at = now(), lease_expires_at = NULL, rows_done = $4";
    end_lease(
        pool,
        migration,
        claim,
        rows_done,
        set,
        "marking a key range done",
    )
    .await
}

/// Gives the range back (the run stopped): pending again, for any process to claim at once,
/// from its checkpoint.
pub async fn give_back(
    pool: &PgPool,
    migration: &str,
    claim: &Claim,
    rows_done: i64,
) -> Result<(), DbError> {
    let set = "state = 'pending', lease_expires_at = NULL, rows_done = $4";
    end_lease(
        pool,
        migration,
        claim,
        rows_done,
        set,
        "giving a key range back",
    )
    .await?;
    Ok(())
}

/// Applies `set` (whose `$4` is `rows_done`) to the range while `claim` still holds it;
/// `false` when the lease was lost first.
async fn end_lease(
    pool: &PgPool,
    migration: &str,
    claim: &Claim,
    rows_done: i64,
    set: &'static str,
    doing: &'static str,
) -> Result<bool, DbError> {
    let sql = format!(
        "UPDATE migration_ranges SET {set}
          WHERE migration = $1 AND range_id = $2 AND generation = $3 AND state = 'leased'"
    );
    let ended = sqlx::query(AssertSqlSafe(sql))
        .bind(migration)
        .bind(claim.range.id)
        .bind(claim.generation)
        .bind(rows_done)
        .execute(pool)
        .await
        .map_err(context(doing))?;
    Ok(ended.rows_affected() == 1)
}

/// How the ranges of `migration` stand; `None` when it was never split.
pub async fn overview(pool: &PgPool, migration: &str) -> Result<Option<Overview>, DbError> {
    if !tables_exist(pool).await? {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT count(*) FILTER (WHERE state = 'done') AS done,
                count(*) FILTER (WHERE state = 'leased'
                  AND (lease_expires_at IS NULL OR lease_expires_at >= now())) AS leased,
                count(*) AS total,
                count(DISTINCT holder) FILTER (WHERE state = 'leased'
                  AND (lease_expires_at IS NULL OR lease_expires_at >= now())) AS processes,
                coalesce(sum(rows_done), 0)::BIGINT AS rows_done
           FROM migration_ranges WHERE migration = $1",
    )
    .bind(migration)
    .fetch_one(pool)
    .await
    .map_err(context("reading the key ranges"))?;
    let count = |name: &str| row.get::<i64, _>(name).max(0) as u64;
    if count("total") == 0 {
        return Ok(None);
    }
    Ok(Some(Overview {
        done: count("done"),
        leased: count("leased"),
        pending: count("total") - count("done") - count("leased"),
        processes: count("processes"),
        rows_done: count("rows_done"),
    }))
}

/// Whether `migration_ranges` exists.
pub async fn tables_exist(pool: &PgPool) -> Result<bool, DbError> {
    sqlx::query_scalar("SELECT to_regclass('migration_ranges') IS NOT NULL")
        .fetch_one(pool)
        .await
        .map_err(context("looking for the table of key ranges"))
}

/// One range as `db-migrate status` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RangeRow {
    /// Its id.
    pub id: i64,
    /// Its bounds or keys, as text.
    pub scope: String,
    /// `pending`, `leased`, `expired` (leased, lease run out) or `done`.
    pub state: String,
    /// Its holder, or last holder.
    pub holder: Option<String>,
    /// Its generation.
    pub generation: i64,
    /// Records handled.
    pub rows_done: i64,
    /// Seconds since the last heartbeat, while leased.
    pub heartbeat_age: Option<f64>,
}

/// Every range of `migration`, in order.
pub async fn list(pool: &PgPool, migration: &str) -> Result<Vec<RangeRow>, DbError> {
    if !tables_exist(pool).await? {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT range_id, lower_key, upper_key, range_keys, generation, holder, rows_done,
                CASE WHEN state = 'leased' AND lease_expires_at < now() THEN 'expired'
                     ELSE state END AS state,
                CASE WHEN state = 'leased'
                     THEN extract(epoch FROM now() - heartbeat_at)::FLOAT8 END AS age
           FROM migration_ranges WHERE migration = $1 ORDER BY range_id",
    )
    .bind(migration)
    .fetch_all(pool)
    .await
    .map_err(context("listing the key ranges"))?;
    Ok(rows
        .iter()
        .map(|row| {
            let bound = |name: &str, open: &str| {
                row.get::<Option<String>, _>(name)
                    .unwrap_or_else(|| open.to_owned())
            };
            let scope = match row.get::<Option<String>, _>("range_keys") {
                Some(keys) => format!("keys {keys}"),
                None => format!(
                    "({}, {})",
                    bound("lower_key", "-inf"),
                    bound("upper_key", "+inf")
                ),
            };
            RangeRow {
                id: row.get("range_id"),
                scope,
                state: row.get("state"),
                holder: row.get("holder"),
                generation: row.get("generation"),
                rows_done: row.get("rows_done"),
                heartbeat_age: row.get("age"),
            }
        })
        .collect())
}
