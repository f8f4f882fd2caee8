//! A shaku module with a lifecycle and a dependency graph: the [`System`].

use std::sync::Arc;

use shaku::{Component, HasComponent, Interface, ModuleBuilder};

use crate::components::component::{ComponentDescriptor, NamedInterface};
use crate::components::graph::{ComponentGraph, GraphError};
use crate::components::lifecycle::{LifecycleError, Named, start_all, stop_all};

/// A shaku module declared with [`system_module!`](crate::system_module): it can list its
/// components' descriptors and hand out each component's lifecycle.
pub trait SystemModule: shaku::Module + Sized + Send + Sync {
    /// The declared components, in declaration order, as `#[derive(Dependencies)]` describes
    /// them.
    fn declared_components() -> Vec<ComponentDescriptor>;

    /// Each component of the built module (overrides included) by name, in declaration order.
    fn lifecycles(&self) -> Vec<Named>;

    /// shaku's builder for this module.
    fn module_builder() -> ModuleBuilder<Self>;
}

/// Declares a shaku module whose components all derive `Dependencies`, and implements
/// [`SystemModule`] for it from the same list, so the graph cannot drift from the module.
///
/// shaku's `module!` takes no attributes, so the struct it declares has no doc comment: declare
/// it in a module of its own with `#[allow(missing_docs)]` and document the re-export.
///
/// ```
/// use migrate_core::{EventBoard, system_module};
/// system_module! {
///     pub BoardOnly { components = [EventBoard] }
/// }
/// let system = migrate_core::SystemBuilder::<BoardOnly>::new().build().unwrap();
/// assert_eq!(system.graph().start_order(), ["status-board"]);
/// ```
#[macro_export]
macro_rules! system_module {
    ($vis:vis $name:ident { components = [ $($component:ty),* $(,)? ] $(,)? }) => {
        ::shaku::module! {
            $vis $name {
                components = [ $($component),* ],
                providers = []
            }
        }

        impl $crate::SystemModule for $name {
            fn declared_components() -> ::std::vec::Vec<$crate::ComponentDescriptor> {
                ::std::vec![ $( <$component as $crate::ComponentInfo>::descriptor() ),* ]
            }

            fn lifecycles(
                &self,
            ) -> ::std::vec::Vec<(&'static str, ::std::sync::Arc<dyn $crate::Lifecycle>)> {
                ::std::vec![ $( {
                    type Provided = <$component as ::shaku::Component<$name>>::Interface;
                    (
                        <Provided as $crate::NamedInterface>::NAME,
                        <Provided as $crate::NamedInterface>::lifecycle(
                            ::shaku::HasComponent::<Provided>::resolve(self),
                        ),
                    )
                } ),* ]
            }

            fn module_builder() -> ::shaku::ModuleBuilder<Self> {
                $name::builder()
            }
        }
    };
}

/// Builds a [`System`]: component parameters and overrides go to shaku's module builder, and
/// overrides are remembered for the graph.
pub struct SystemBuilder<M: SystemModule> {
    builder: ModuleBuilder<M>,
    /// Components replaced by the caller, by interface name, with their implementation's name.
    overridden: Vec<(&'static str, String)>,
    /// Implementations the system chose when it was built (see `with_implementation`).
    chosen: Vec<(&'static str, String)>,
}

impl<M: SystemModule> std::fmt::Debug for SystemBuilder<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemBuilder")
            .field("overridden", &self.overridden)
            .finish_non_exhaustive()
    }
}

impl<M: SystemModule> Default for SystemBuilder<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: SystemModule> SystemBuilder<M> {
    /// A builder with every component declared and no parameter set.
    pub fn new() -> Self {
        SystemBuilder {
            builder: M::module_builder(),
            overridden: Vec::new(),
            chosen: Vec::new(),
        }
    }

    /// Sets the parameters of component `C` (its non-injected fields).
    pub fn with_parameters<C: Component<M>>(mut self, parameters: C::Parameters) -> Self
    where
        M: HasComponent<C::Interface>,
    {
        self.builder = self.builder.with_component_parameters::<C>(parameters);
        self
    }

    /// Replaces the component that provides `I` with `component`, built outside the module
    /// (so it injects nothing). `implementation` names it in the graph.
    pub fn with_override<I>(mut self, component: Box<I>, implementation: &str) -> Self
    where
        I: Interface + NamedInterface + ?Sized,
        M: HasComponent<I>,
    {
        self.builder = self.builder.with_component_override::<I>(component);
        self.overridden.push((I::NAME, implementation.to_owned()));
        self
    }

    /// Puts `component` in place of the declared implementation of `I`, as the system's own
    /// choice rather than a replacement (the graph shows `implementation` without marking it
    /// overridden): for a variant chosen once when the system is built, such as the store that
    /// fits the backend. Built outside the module, it injects nothing.
    pub fn with_implementation<I>(mut self, component: Box<I>, implementation: &str) -> Self
    where
        I: Interface + NamedInterface + ?Sized,
        M: HasComponent<I>,
    {
        self.builder = self.builder.with_component_override::<I>(component);
        self.chosen.push((I::NAME, implementation.to_owned()));
        self
    }

    /// The graph the system will have, without building any component.
    pub fn graph(&self) -> Result<ComponentGraph, GraphError> {
        let find = |list: &[(&'static str, String)], name: &str| {
            list.iter()
                .rev()
                .find(|(n, _)| *n == name)
                .map(|(_, implementation)| implementation.clone())
        };
        let components = M::declared_components()
            .into_iter()
            .map(|mut descriptor| {
                if let Some(implementation) = find(&self.overridden, descriptor.name) {
                    descriptor.overridden = true;
                    descriptor.implementation = implementation;
                    descriptor.dependencies.clear();
                } else if let Some(implementation) = find(&self.chosen, descriptor.name) {
                    descriptor.implementation = implementation;
                    descriptor.dependencies.clear();
                }
                descriptor
            })
            .collect();
        ComponentGraph::new(components)
    }

    /// Checks the graph and builds the module (shaku builds every component now).
    pub fn build(self) -> Result<System<M>, GraphError> {
        let graph = self.graph()?;
        let module = self.builder.build();
        Ok(System {
            module: Arc::new(module),
            graph,
            started: tokio::sync::Mutex::new(Vec::new()),
        })
    }
}

/// A built module with its graph and lifecycle: [`start`](System::start) it, use its components,
/// [`stop`](System::stop) it.
pub struct System<M: SystemModule> {
    module: Arc<M>,
    graph: ComponentGraph,
    /// Components started and not yet stopped, in start order.
    started: tokio::sync::Mutex<Vec<Named>>,
}

impl<M: SystemModule> std::fmt::Debug for System<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("graph", &self.graph)
            .finish_non_exhaustive()
    }
}

impl<M: SystemModule> System<M> {
    /// The component that provides `I`.
    pub fn resolve<I: Interface + ?Sized>(&self) -> Arc<I>
    where
        M: HasComponent<I>,
    {
        HasComponent::<I>::resolve(&*self.module)
    }

    /// The dependency graph.
    pub fn graph(&self) -> &ComponentGraph {
        &self.graph
    }

    /// Starts every component, dependencies first. If one fails, those already started are
    /// stopped in reverse order and the error names the failing component.
    pub async fn start(&self) -> Result<(), LifecycleError> {
        let mut started = self.started.lock().await;
        if !started.is_empty() {
            return Err(LifecycleError::AlreadyStarted);
        }
        let mut by_name = self.module.lifecycles();
        let ordered: Vec<Named> = self
            .graph
            .start_order()
            .into_iter()
            .filter_map(|name| {
                let index = by_name.iter().position(|(n, _)| *n == name)?;
                Some(by_name.swap_remove(index))
            })
            .collect();
        *started = start_all(&ordered).await?;
        Ok(())
    }

    /// Stops every started component in reverse start order, even when some fail; reports all
    /// failures. Stopping a stopped system does nothing.
    pub async fn stop(&self) -> Result<(), LifecycleError> {
        let started = std::mem::take(&mut *self.started.lock().await);
        stop_all(&started).await
    }
}
