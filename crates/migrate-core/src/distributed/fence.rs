//! Fencing: a batch commits only while its process still holds the lease on its range.
//!
//! A process that stalls (a long GC-like pause, a frozen VM, a network partition) can outlive
//! its lease without knowing it. Stopping its run when a heartbeat finds the lease gone is not
//! enough: the heartbeat may come too late. So the check is made where it counts, inside every
//! batch's transaction: [`BatchJournal`](crate::BatchJournal), which every built-in migration
//! writes in the batch's transaction just before the commit, reads the range's generation with
//! `FOR KEY SHARE`. A takeover bumps the generation under `FOR UPDATE`, which conflicts with
//! that share lock, so either the batch commits first and the takeover waits for it (and
//! resumes from the checkpoint, where the migration's guard finds those records migrated), or
//! the takeover commits first and the batch reads the new generation and rolls back. A stale
//! holder never commits after the new holder started.
//!
//! The lease a process holds is kept here, per database and migration, because the journal is
//! prepared once per migration and lives across the ranges the process runs one after another.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sqlx::PgConnection;

use crate::connection::Database;
use crate::database::{DbError, context, misdefined};

/// The lease a process holds on one range of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The range (`migration_ranges.range_id`).
    pub range_id: i64,
    /// The generation the claim set; any later claim sets a higher one.
    pub generation: i64,
}

/// Leases held by this process, by fence scope ([`scope`]).
static HELD: LazyLock<Mutex<HashMap<String, Lease>>> = LazyLock::new(Mutex::default);

/// What identifies a migration's fence within this process: the database and the migration's
/// name (two tests of one process may run the same migration on two databases).
pub(crate) fn scope(database: &Database, migration: &str) -> Option<String> {
    match database {
        Database::Postgres(pool) => {
            let options = pool.connect_options();
            Some(format!(
                "{}:{}/{}\u{0}{migration}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or_default()
            ))
        }
        // Distributed mode runs on PostgreSQL only.
        Database::Sqlite(_) => None,
    }
}

/// Fences the batches of `migration` on `database` with `lease` from now on.
pub fn hold(database: &Database, migration: &str, lease: Lease) {
    if let Some(scope) = scope(database, migration) {
        HELD.lock().expect("fence lock").insert(scope, lease);
    }
}

/// Lifts the fence: batches of `migration` are no longer checked.
pub fn release(database: &Database, migration: &str) {
    if let Some(scope) = scope(database, migration) {
        HELD.lock().expect("fence lock").remove(&scope);
    }
}

/// The lease held for `scope`, if any.
pub(crate) fn held(scope: &str) -> Option<Lease> {
    HELD.lock().expect("fence lock").get(scope).copied()
}

/// Inside a batch's transaction: fails (fatally, so that the run stops at once) unless the
/// range's generation is still `lease`'s, and keeps a takeover waiting until the transaction
/// ends.
pub(crate) async fn check(
    conn: &mut PgConnection,
    migration: &str,
    lease: Lease,
) -> Result<(), DbError> {
    const DOING: &str = "checking the lease on the batch's key range";
    let generation: Option<i64> = sqlx::query_scalar(
        "SELECT generation FROM migration_ranges
          WHERE migration = $1 AND range_id = $2 FOR KEY SHARE",
    )
    .bind(migration)
    .bind(lease.range_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(context(DOING))?;
    match generation {
        Some(g) if g == lease.generation => Ok(()),
        Some(g) => Err(misdefined(
            DOING,
            format!(
                "the lease on range {} of {migration} was taken over (generation {} held, \
                 now {g}): this process no longer works on it",
                lease.range_id, lease.generation
            ),
        )),
        None => Err(misdefined(
            DOING,
            format!("range {} of {migration} is gone", lease.range_id),
        )),
    }
}
