//! The component system: what shaku lacks, added without a second source of truth. Each
//! component has a stable name and a lifecycle (`component`), the system starts and stops them
//! in dependency order (`lifecycle`, `system`), and their dependency graph is derived from
//! their own injected fields (`graph`).

pub(crate) mod component;
pub(crate) mod graph;
pub(crate) mod lifecycle;
pub(crate) mod system;
