//! End-to-end tests of the `db-migrate` binary, run as a process. One module per topic.

mod board;
mod config;
mod control;
mod database;
mod declared;
mod distributed;
mod keys;
mod locks;
mod observe;
/// Which PostgreSQL server the database tests use (shared with the engine's tests).
#[path = "../../../migrate-core/tests/common/postgres_server.rs"]
mod postgres_server;
mod run;
mod seed;
mod status;
mod trouble;
mod util;
mod visualize;
