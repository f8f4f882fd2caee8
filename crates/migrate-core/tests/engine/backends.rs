//! Tests: the SQL backends. The same test code runs against an SQLite file in a temporary
//! directory and against PostgreSQL (a fresh database per test on the server named by
//! `DB_MIGRATE_TEST_POSTGRES_URL`; start one with `.ci/postgres.sh`).

mod controls;
mod correctness;
mod declarative;
mod distributed;
mod flow;
mod harness;
mod live;
mod locks;
mod masking;
mod names;
mod names_property;
mod trouble;
mod unexpected_rows;
