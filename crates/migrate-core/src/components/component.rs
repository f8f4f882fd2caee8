//! What every component shares: a lifecycle, a stable name, and its dependency edges.

use std::sync::Arc;

use async_trait::async_trait;

/// An error raised by a component's own code (start, stop, a scan, a write).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Async start and stop for a component.
///
/// shaku builds components synchronously and knows nothing of their lifecycle; the
/// [`System`](crate::System) calls `start` on each component in dependency order (a component
/// after everything it depends on) and `stop` in reverse. Both default to doing nothing.
#[async_trait]
pub trait Lifecycle: Send + Sync {
    /// Acquire what the component needs before the run (open a file, check a table).
    async fn start(&self) -> Result<(), BoxError> {
        Ok(())
    }

    /// Release what `start` acquired; flush what is buffered. Called once per successful start,
    /// even when another component's `stop` failed.
    async fn stop(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

/// A shaku interface with a stable, human name (`customer-scanner`), used for the dependency
/// graph, configuration sections and error messages.
///
/// Implemented for the trait object type (`dyn CustomerScanner`), so that
/// `#[derive(Dependencies)]` can name an injected interface in a way the compiler checks. Use
/// [`named_interface!`](crate::named_interface) to implement it.
pub trait NamedInterface {
    /// The component's name, kebab-case (`migration-overseer`).
    const NAME: &'static str;

    /// The same component seen through its lifecycle.
    fn lifecycle(this: Arc<Self>) -> Arc<dyn Lifecycle>;
}

/// Implements [`NamedInterface`] for `dyn Trait`, where `Trait: Lifecycle`.
///
/// ```
/// use migrate_core::{Lifecycle, named_interface};
/// pub trait Cache: shaku::Interface + Lifecycle {}
/// named_interface!(Cache, "cache");
/// ```
#[macro_export]
macro_rules! named_interface {
    ($interface:path, $name:literal) => {
        impl $crate::NamedInterface for dyn $interface {
            const NAME: &'static str = $name;
            fn lifecycle(this: ::std::sync::Arc<Self>) -> ::std::sync::Arc<dyn $crate::Lifecycle> {
                this
            }
        }
    };
}

/// A component as the graph sees it: the interface it provides, the type that implements it, and
/// the interfaces it injects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentDescriptor {
    /// The provided interface's name (`customer-scanner`).
    pub name: &'static str,
    /// The implementing type's name (`PagingScanner`), or the override's description.
    pub implementation: String,
    /// Names of the injected interfaces, in field order.
    pub dependencies: Vec<&'static str>,
    /// Whether the component was replaced when the module was built.
    pub overridden: bool,
}

impl ComponentDescriptor {
    /// A descriptor for a declared (not overridden) component.
    pub fn new(
        name: &'static str,
        implementation: &str,
        dependencies: Vec<&'static str>,
    ) -> ComponentDescriptor {
        ComponentDescriptor {
            name,
            implementation: implementation.to_owned(),
            dependencies,
            overridden: false,
        }
    }
}

/// Implemented by `#[derive(Dependencies)]`: the component's descriptor, read from shaku's own
/// `#[shaku(interface = ...)]` and `#[shaku(inject)]` attributes.
pub trait ComponentInfo {
    /// The descriptor of this component type.
    fn descriptor() -> ComponentDescriptor;
}
