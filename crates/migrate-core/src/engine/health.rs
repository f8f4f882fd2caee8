//! Whether the database is healthy enough for the next batch: the engine's side of throttling.
//!
//! The engine knows no SQL: it asks a [`HealthCheck`] every `throttle-interval-millis` and,
//! while the check gives a reason, no job starts a batch (the same gate as a pause). The
//! checks over the project's databases (a throttle query, PostgreSQL's replication lag) are in
//! [`DatabaseHealth`](crate::DatabaseHealth).

use async_trait::async_trait;

use crate::components::component::BoxError;

/// A check of the database's health, asked between batches.
#[async_trait]
pub trait HealthCheck: Send + Sync + std::fmt::Debug {
    /// `Ok(None)` when batches may go on; `Ok(Some(why))` to hold them off (`replication lag
    /// 3.2 s over 1 s`); `Err` when the check itself failed, which the engine reports and
    /// treats as a reason to hold off.
    async fn check(&self) -> Result<Option<String>, BoxError>;
}
