//! Tests: run.
