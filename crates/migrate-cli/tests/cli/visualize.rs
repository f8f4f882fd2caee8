//! Tests: visualize.
