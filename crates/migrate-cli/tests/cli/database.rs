//! Tests: database.
