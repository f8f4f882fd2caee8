//! End-to-end tests of the `db-migrate` binary, run as a process. One module per topic.

mod board;
mod config;
mod database;
mod run;
mod seed;
mod trouble;
mod util;
mod visualize;
