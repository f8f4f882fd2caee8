//! Integration tests of the engine through its public API. One module per topic.

mod backends;
mod contention;
mod control;
mod run;
mod support;
mod system;
mod traces;
