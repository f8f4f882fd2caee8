//! Starting components in dependency order and stopping them in reverse.

use std::fmt;
use std::sync::Arc;

use crate::components::component::{BoxError, Lifecycle};

/// A failure to start or stop the system.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LifecycleError {
    /// A component's `start` failed. The components started before it were stopped again, in
    /// reverse order; any failure while doing so is in `stop_errors`.
    #[error("while starting {component}: {source}{}", StopErrors(stop_errors))]
    Start {
        /// The component whose start failed.
        component: &'static str,
        /// Its error.
        #[source]
        source: BoxError,
        /// Errors from stopping the components already started.
        stop_errors: Vec<(&'static str, BoxError)>,
    },
    /// One or more components failed to stop. Every started component was asked to stop.
    #[error("while stopping: {}", Joined(errors))]
    Stop {
        /// Each failing component with its error, in the order they were stopped.
        errors: Vec<(&'static str, BoxError)>,
    },
    /// `start` was called on a system that is already running.
    #[error("the system is already started")]
    AlreadyStarted,
}

struct Joined<'a>(&'a [(&'static str, BoxError)]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, error)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{name}: {error}")?;
        }
        Ok(())
    }
}

struct StopErrors<'a>(&'a [(&'static str, BoxError)]);

impl fmt::Display for StopErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            Ok(())
        } else {
            write!(f, " (and while stopping again: {})", Joined(self.0))
        }
    }
}

/// A named component ready for its lifecycle calls.
pub(crate) type Named = (&'static str, Arc<dyn Lifecycle>);

/// Starts `components` in the given order (dependencies first). On the first failure, stops the
/// ones already started in reverse order and returns the error naming the failing component.
/// On success returns the started components, in start order.
pub(crate) async fn start_all(components: &[Named]) -> Result<Vec<Named>, LifecycleError> {
    let mut started: Vec<Named> = Vec::with_capacity(components.len());
    for (name, component) in components {
        if let Err(source) = component.start().await {
            let stop_errors = stop_reverse(&started).await;
            return Err(LifecycleError::Start {
                component: name,
                source,
                stop_errors,
            });
        }
        started.push((name, Arc::clone(component)));
    }
    Ok(started)
}

/// Stops every component of `started` (in start order) in reverse, whatever fails.
pub(crate) async fn stop_all(started: &[Named]) -> Result<(), LifecycleError> {
    let errors = stop_reverse(started).await;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(LifecycleError::Stop { errors })
    }
}

async fn stop_reverse(started: &[Named]) -> Vec<(&'static str, BoxError)> {
    let mut errors = Vec::new();
    for (name, component) in started.iter().rev() {
        if let Err(error) = component.stop().await {
            errors.push((*name, error));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// A component that records its calls in a shared journal and can be told to fail.
    struct Recorder {
        name: &'static str,
        journal: Arc<Mutex<Vec<String>>>,
        fail_start: bool,
        fail_stop: bool,
    }

    #[async_trait]
    impl Lifecycle for Recorder {
        async fn start(&self) -> Result<(), BoxError> {
            self.journal
                .lock()
                .unwrap()
                .push(format!("start {}", self.name));
            if self.fail_start {
                return Err(format!("{} cannot start", self.name).into());
            }
            Ok(())
        }
        async fn stop(&self) -> Result<(), BoxError> {
            self.journal
                .lock()
                .unwrap()
                .push(format!("stop {}", self.name));
            if self.fail_stop {
                return Err(format!("{} cannot stop", self.name).into());
            }
            Ok(())
        }
    }

    fn system(spec: &[(&'static str, bool, bool)]) -> (Vec<Named>, Arc<Mutex<Vec<String>>>) {
        let journal = Arc::new(Mutex::new(Vec::new()));
        let components = spec
            .iter()
            .map(|&(name, fail_start, fail_stop)| {
                let c: Arc<dyn Lifecycle> = Arc::new(Recorder {
                    name,
                    journal: Arc::clone(&journal),
                    fail_start,
                    fail_stop,
                });
                (name, c)
            })
            .collect();
        (components, journal)
    }

    #[tokio::test]
    async fn starts_in_order_and_stops_in_reverse() {
        let (components, journal) = system(&[
            ("a", false, false),
            ("b", false, false),
            ("c", false, false),
        ]);
        let started = start_all(&components).await.unwrap();
        stop_all(&started).await.unwrap();
        assert_eq!(
            *journal.lock().unwrap(),
            [
                "start a", "start b", "start c", "stop c", "stop b", "stop a"
            ]
        );
    }

    #[tokio::test]
    async fn failed_start_stops_the_started_ones_in_reverse_and_names_the_component() {
        let (components, journal) = system(&[
            ("a", false, false),
            ("b", false, false),
            ("c", true, false),
            ("d", false, false),
        ]);
        let Err(error) = start_all(&components).await else {
            panic!("c must fail")
        };
        assert!(matches!(
            error,
            LifecycleError::Start { component: "c", .. }
        ));
        assert_eq!(error.to_string(), "while starting c: c cannot start");
        assert_eq!(
            *journal.lock().unwrap(),
            ["start a", "start b", "start c", "stop b", "stop a"]
        );
    }

    #[tokio::test]
    async fn every_component_is_stopped_even_when_stops_fail_and_all_errors_are_reported() {
        let (components, journal) =
            system(&[("a", false, true), ("b", false, false), ("c", false, true)]);
        let started = start_all(&components).await.unwrap();
        let error = stop_all(&started).await.unwrap_err();
        assert_eq!(
            *journal.lock().unwrap(),
            [
                "start a", "start b", "start c", "stop c", "stop b", "stop a"
            ]
        );
        let LifecycleError::Stop { errors } = &error else {
            panic!("{error}")
        };
        let names: Vec<_> = errors.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["c", "a"]);
        assert_eq!(
            error.to_string(),
            "while stopping: c: c cannot stop; a: a cannot stop"
        );
    }

    #[tokio::test]
    async fn stop_failures_during_a_failed_start_are_reported_too() {
        let (components, _journal) = system(&[("a", false, true), ("b", true, false)]);
        let Err(error) = start_all(&components).await else {
            panic!("b must fail")
        };
        assert_eq!(
            error.to_string(),
            "while starting b: b cannot start (and while stopping again: a: a cannot stop)"
        );
    }
}
