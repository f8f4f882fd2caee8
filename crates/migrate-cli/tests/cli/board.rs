//! Tests: board.
