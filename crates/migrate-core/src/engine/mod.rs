//! The engine: one run of any migration. The scanner pages through its keys (`scanner`), jobs
//! migrate batches of them with retries (`job`, `retry`, through the `migrator`; a batch that
//! meets another session's locks is retried, split and deferred in `contention`), the tracker
//! keeps gap-free progress (`checkpoint`), the overseer runs it all (`overseer`), and every step
//! is an event for the status board (`events`, `board`), down to the summary (`summary`). The
//! same steps are metrics (`metrics`) and `tracing` spans and events (`trace`).
//! Nothing here names a table or a column: that is the migration's business.

pub(crate) mod batch_size;
pub(crate) mod board;
pub(crate) mod checkpoint;
pub(crate) mod contention;
pub(crate) mod control;
pub(crate) mod events;
pub(crate) mod flow;
pub(crate) mod health;
pub(crate) mod job;
pub mod metrics;
pub(crate) mod migrator;
pub(crate) mod overseer;
pub(crate) mod retry;
pub(crate) mod scanner;
pub(crate) mod summary;
pub(crate) mod timing;
pub(crate) mod trace;
