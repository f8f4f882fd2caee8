//! The component dependency graph: validation, start order and Graphviz output.

use std::collections::HashMap;
use std::fmt::Write as _;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::graph::{DiGraph, NodeIndex};

use crate::components::component::ComponentDescriptor;

/// Why a set of components does not form a valid system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A component injects an interface that no component provides.
    #[error("{component} depends on {dependency}, which no component provides")]
    MissingDependency {
        /// The component with the dangling edge.
        component: String,
        /// The interface nobody provides.
        dependency: String,
    },
    /// Components depend on each other in a cycle.
    #[error("dependency cycle between {}", .components.join(", "))]
    Cycle {
        /// Every component of the cycle, in declaration order.
        components: Vec<String>,
    },
    /// Two components provide the same interface.
    #[error("{component} is provided twice")]
    Duplicate {
        /// The interface provided twice.
        component: String,
    },
}

/// The system's components and their dependency edges, held in a petgraph graph.
///
/// Edges point from a component to what it depends on. Built only from
/// [`ComponentDescriptor`]s, which `#[derive(Dependencies)]` reads from shaku's attributes.
#[derive(Debug, Clone)]
pub struct ComponentGraph {
    graph: DiGraph<ComponentDescriptor, ()>,
}

impl ComponentGraph {
    /// Builds and checks the graph: every dependency must be provided, no name twice, no cycle.
    pub fn new(components: Vec<ComponentDescriptor>) -> Result<ComponentGraph, GraphError> {
        let mut graph = DiGraph::new();
        let mut index: HashMap<&'static str, NodeIndex> = HashMap::new();
        for descriptor in components {
            let name = descriptor.name;
            let node = graph.add_node(descriptor);
            if index.insert(name, node).is_some() {
                return Err(GraphError::Duplicate {
                    component: name.to_owned(),
                });
            }
        }
        let mut edges = Vec::new();
        for node in graph.node_indices() {
            let descriptor = &graph[node];
            for dependency in &descriptor.dependencies {
                let Some(&target) = index.get(dependency) else {
                    return Err(GraphError::MissingDependency {
                        component: descriptor.name.to_owned(),
                        dependency: (*dependency).to_owned(),
                    });
                };
                edges.push((node, target));
            }
        }
        for (from, to) in edges {
            graph.add_edge(from, to, ());
        }
        if toposort(&graph, None).is_err() {
            // toposort names one node of a cycle; tarjan_scc gives every member.
            let mut cycle: Vec<NodeIndex> = tarjan_scc(&graph)
                .into_iter()
                .find(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
                .unwrap_or_default();
            cycle.sort();
            return Err(GraphError::Cycle {
                components: cycle.iter().map(|&n| graph[n].name.to_owned()).collect(),
            });
        }
        Ok(ComponentGraph { graph })
    }

    /// The components in declaration order.
    pub fn components(&self) -> impl Iterator<Item = &ComponentDescriptor> {
        self.graph.node_weights()
    }

    /// Every edge as `(component, dependency)`, in declaration order.
    pub fn edges(&self) -> Vec<(&'static str, &'static str)> {
        self.graph
            .node_weights()
            .flat_map(|d| d.dependencies.iter().map(move |dep| (d.name, *dep)))
            .collect()
    }

    /// Names in start order: each component after all of its dependencies. Among components that
    /// could go in either order, declaration order wins, so the order is deterministic.
    pub fn start_order(&self) -> Vec<&'static str> {
        let mut order = Vec::with_capacity(self.graph.node_count());
        let mut placed = vec![false; self.graph.node_count()];
        while order.len() < self.graph.node_count() {
            let next = self
                .graph
                .node_indices()
                .find(|&n| {
                    !placed[n.index()]
                        && self
                            .graph
                            .neighbors(n)
                            .all(|dependency| placed[dependency.index()])
                })
                .expect("the graph was checked for cycles");
            placed[next.index()] = true;
            order.push(self.graph[next].name);
        }
        order
    }

    /// The graph as Graphviz DOT. Same components, same bytes: nodes and edges follow
    /// declaration order and nothing depends on hashing or addresses. Overridden components are
    /// drawn dashed and labelled with their replacement.
    pub fn to_dot(&self) -> String {
        let mut dot = String::from("digraph \"db-migrate\" {\n");
        dot.push_str("  rankdir=LR;\n");
        dot.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
        for descriptor in self.graph.node_weights() {
            let name = escape(descriptor.name);
            if descriptor.overridden {
                let _ = writeln!(
                    dot,
                    "  \"{name}\" [label=\"{name}\\n(overridden by {})\", style=\"rounded,dashed\", color=\"darkorange\"];",
                    escape(&descriptor.implementation)
                );
            } else {
                let _ = writeln!(dot, "  \"{name}\";");
            }
        }
        for (from, to) in self.edges() {
            let _ = writeln!(dot, "  \"{}\" -> \"{}\";", escape(from), escape(to));
        }
        dot.push_str("}\n");
        dot
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &'static str, deps: &[&'static str]) -> ComponentDescriptor {
        ComponentDescriptor::new(name, "Impl", deps.to_vec())
    }

    #[test]
    fn start_order_puts_dependencies_first() {
        let graph = ComponentGraph::new(vec![
            d("overseer", &["scanner", "board", "migrator"]),
            d("scanner", &["board", "connection"]),
            d("board", &[]),
            d("migrator", &["connection"]),
            d("connection", &[]),
        ])
        .unwrap();
        assert_eq!(
            graph.start_order(),
            ["board", "connection", "scanner", "migrator", "overseer"]
        );
    }

    #[test]
    fn a_missing_dependency_names_both_ends() {
        let error = ComponentGraph::new(vec![d("scanner", &["connection"])]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "scanner depends on connection, which no component provides"
        );
    }

    #[test]
    fn a_cycle_names_every_member() {
        let error = ComponentGraph::new(vec![
            d("a", &["b"]),
            d("b", &["c"]),
            d("c", &["a"]),
            d("d", &["a"]),
        ])
        .unwrap_err();
        assert_eq!(
            error,
            GraphError::Cycle {
                components: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        assert_eq!(error.to_string(), "dependency cycle between a, b, c");
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let error = ComponentGraph::new(vec![d("a", &["a"])]).unwrap_err();
        assert_eq!(error.to_string(), "dependency cycle between a");
    }

    #[test]
    fn duplicates_are_rejected() {
        let error = ComponentGraph::new(vec![d("a", &[]), d("a", &[])]).unwrap_err();
        assert_eq!(error.to_string(), "a is provided twice");
    }

    #[test]
    fn dot_marks_overrides_and_escapes_quotes() {
        let mut board = d("board", &[]);
        board.overridden = true;
        board.implementation = "Term\"Board".into();
        let graph = ComponentGraph::new(vec![board, d("scanner", &["board"])]).unwrap();
        let dot = graph.to_dot();
        assert!(dot.contains("\"board\" [label=\"board\\n(overridden by Term\\\"Board)\", style=\"rounded,dashed\""), "{dot}");
        assert!(dot.contains("\"scanner\" -> \"board\";"), "{dot}");
    }
}
