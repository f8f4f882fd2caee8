//! Distributed mode: many processes, on many machines, share one migration through the
//! PostgreSQL database that holds its data. No coordinator of our own: the database's
//! transactions and row locks are the coordination.
//!
//! - The key space is split once into ranges ([`ranges`], [`split`]), stored in
//!   `migration_ranges`.
//! - Each process claims a range with `SELECT ... FOR UPDATE SKIP LOCKED` under a lease it
//!   renews with heartbeats, runs the ordinary engine over it (an [`Overseer`](crate::Overseer)
//!   run with [`RunOptions::range`](crate::RunOptions), whose checkpoint is kept per range),
//!   marks it done and claims the next ([`Worker`]). A range whose lease expired is claimed
//!   again, and its new holder resumes from its checkpoint.
//! - Every batch checks the lease inside its own transaction ([`fence`]): a holder that lost
//!   its lease commits nothing after the takeover.
//! - Static shards (`--shard I/N`) run a fixed share of the ranges without leases.
//!
//! Why not an existing job queue on PostgreSQL (`apalis-postgres`, `sqlxmq`): see
//! `docs/scale-out.md`. In short, the claim and the heartbeat are two statements each, the
//! fence must be ours anyway (it is a lock inside the migration's own batch transaction), and
//! those crates pin another sqlx release than ours.

pub mod board;
pub mod fence;
pub mod ranges;
pub mod split;
pub mod worker;

use std::time::Duration;

/// Leases and range sizes of a distributed run.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// How long a lease lasts without a heartbeat: after it, another process may take the
    /// range over. Long enough to ride out a pause of the process or the network.
    pub lease: Duration,
    /// How often the lease is renewed: a fraction of `lease`, so that a missed heartbeat or
    /// two does not lose it.
    pub heartbeat: Duration,
    /// About how many records a range holds.
    pub range_rows: u64,
    /// How often a process with nothing to claim looks again (others hold the remaining
    /// ranges; it waits to take over any whose holder dies).
    pub idle_poll: Duration,
}

impl Default for Settings {
    /// A 30-second lease renewed every 5 seconds; ranges of 100,000 records.
    fn default() -> Settings {
        Settings::with_lease(Duration::from_secs(30), 100_000)
    }
}

impl Settings {
    /// A lease of `lease`, renewed every sixth of it, polled every fourth; ranges of
    /// `range_rows`.
    pub fn with_lease(lease: Duration, range_rows: u64) -> Settings {
        Settings {
            lease,
            heartbeat: (lease / 6).max(Duration::from_millis(50)),
            range_rows: range_rows.max(1),
            idle_poll: (lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(2)),
        }
    }
}

/// How a process picks its ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Claims any pending or expired range under a lease.
    Leased,
    /// Runs ranges `index`, `index + count`, ... (counting from 0) without leases: what a
    /// Kubernetes Indexed Job gives each pod.
    Shard {
        /// This shard, from 0.
        index: u32,
        /// How many shards.
        count: u32,
    },
}

/// `host:pid:token`: names this process in `migration_ranges.holder`, unique even when a pid
/// is reused after a restart.
pub fn holder_name() -> String {
    let token: u32 = rand::random();
    format!(
        "{}:{}:{token:08x}",
        crate::store::runs::host_name(),
        std::process::id()
    )
}

pub use board::{RangeBoard, RangeProgress, WHOLE_JOB};
pub use ranges::{Claim, Overview, PlannedRange, Range, RangeRow};
pub use worker::Worker;
