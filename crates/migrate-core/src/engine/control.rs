//! Live control of a running migration: pause, resume, a graceful stop, and settings changed
//! while it runs.
//!
//! A [`RunControl`] is a handle shared by whoever steers the run (keys on the terminal board,
//! `db-migrate control` through the progress store, an embedding service) and the engine, which
//! obeys it: while paused no new batch starts, a stop ends the run as Ctrl-C does, and a setting
//! changed here takes effect from the next batch on. Every change is seen by every watcher,
//! latest value first; a watcher that was busy sees only the latest state.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// What the run is told to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Controls {
    /// No new batch starts while set; batches under way finish.
    pub paused: bool,
    /// Stop the run gracefully, as on Ctrl-C (cannot be taken back).
    pub stop: bool,
    /// Records per second for the whole run, replacing the configured `rate-limit`; `Some(0)`
    /// lifts the limit. `None`: the configured one.
    pub rate_limit: Option<u64>,
    /// Migration jobs at once, replacing the configured `processes`. `None`: the configured
    /// number.
    pub processes: Option<usize>,
    /// A fixed batch size, replacing the configured one (and adaptation). `None`: as
    /// configured.
    pub batch_size: Option<usize>,
    /// Who changed the controls last and how (`paused from the board`, `rate-limit=500 by
    /// db-migrate control on host-2`), for the board and the events.
    pub by: Option<String>,
}

/// A setting that can be changed while a run goes on (`db-migrate control set KEY=VALUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `rate-limit`: records per second, 0 for none.
    RateLimit(u64),
    /// `processes`: migration jobs at once, at least 1.
    Processes(usize),
    /// `batch-size`: records per batch, at least 1.
    BatchSize(usize),
}

impl Setting {
    /// The setting `key=value`, or why it is not one.
    pub fn parse(text: &str) -> Result<Setting, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`{text}` is not KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        let number = |least: u64| -> Result<u64, String> {
            match value.parse::<u64>() {
                Ok(n) if n >= least => Ok(n),
                _ => Err(format!(
                    "`{key}` takes a whole number of at least {least}, not `{value}`"
                )),
            }
        };
        match key {
            "rate-limit" => Ok(Setting::RateLimit(number(0)?)),
            "processes" => Ok(Setting::Processes(number(1)?.min(10_000) as usize)),
            "batch-size" => Ok(Setting::BatchSize(number(1)?.min(1_000_000) as usize)),
            other => Err(format!(
                "`{other}` cannot be changed while a migration runs: rate-limit, processes or \
                 batch-size can"
            )),
        }
    }

    /// The setting as `key=value`.
    pub fn to_text(self) -> String {
        match self {
            Setting::RateLimit(n) => format!("rate-limit={n}"),
            Setting::Processes(n) => format!("processes={n}"),
            Setting::BatchSize(n) => format!("batch-size={n}"),
        }
    }

    /// `controls` with this setting applied.
    pub fn apply(self, controls: &mut Controls) {
        match self {
            Setting::RateLimit(n) => controls.rate_limit = Some(n),
            Setting::Processes(n) => controls.processes = Some(n.max(1)),
            Setting::BatchSize(n) => controls.batch_size = Some(n.max(1)),
        }
    }
}

/// A shared handle on a run's [`Controls`]; clones steer the same run.
#[derive(Debug, Clone)]
pub struct RunControl {
    sender: Arc<watch::Sender<Controls>>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl::new(Controls::default())
    }
}

impl RunControl {
    /// A handle starting from `controls` (a run restarted while paused starts paused).
    pub fn new(controls: Controls) -> RunControl {
        RunControl {
            sender: Arc::new(watch::Sender::new(controls)),
        }
    }

    /// The controls now.
    pub fn get(&self) -> Controls {
        self.sender.borrow().clone()
    }

    /// Changes the controls with `change`, saying `by` whom; watchers are told only when
    /// something changed.
    pub fn update(&self, by: impl Into<String>, change: impl FnOnce(&mut Controls)) {
        let by = by.into();
        self.sender.send_if_modified(|controls| {
            let before = controls.clone();
            change(controls);
            let changed = *controls != before;
            if changed {
                controls.by = Some(by);
            }
            changed
        });
    }

    /// Pauses the run: no new batch starts.
    pub fn pause(&self, by: impl Into<String>) {
        self.update(by, |c| c.paused = true);
    }

    /// Resumes a paused run.
    pub fn resume(&self, by: impl Into<String>) {
        self.update(by, |c| c.paused = false);
    }

    /// Stops the run gracefully.
    pub fn stop(&self, by: impl Into<String>) {
        self.update(by, |c| c.stop = true);
    }

    /// Applies `setting`.
    pub fn set(&self, setting: Setting, by: impl Into<String>) {
        self.update(by, |c| setting.apply(c));
    }

    /// A receiver that sees every later change (`changed().await`) and the current value.
    pub fn watch(&self) -> watch::Receiver<Controls> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_name_what_is_wrong() {
        assert_eq!(
            Setting::parse("rate-limit=500"),
            Ok(Setting::RateLimit(500))
        );
        assert_eq!(Setting::parse(" processes = 4"), Ok(Setting::Processes(4)));
        assert_eq!(
            Setting::parse("batch-size=250"),
            Ok(Setting::BatchSize(250))
        );
        let zero = Setting::parse("processes=0").unwrap_err();
        assert!(
            zero.contains("`processes`") && zero.contains("`0`"),
            "{zero}"
        );
        let unknown = Setting::parse("max-failures=3").unwrap_err();
        assert!(unknown.contains("`max-failures`"), "{unknown}");
        assert!(Setting::parse("rate-limit").is_err());
        assert_eq!(Setting::RateLimit(7).to_text(), "rate-limit=7");
    }

    #[tokio::test]
    async fn watchers_see_changes_and_who_made_them() {
        let control = RunControl::default();
        let mut watcher = control.watch();
        control.pause("the board");
        watcher.changed().await.unwrap();
        let seen = watcher.borrow_and_update().clone();
        assert!(seen.paused);
        assert_eq!(seen.by.as_deref(), Some("the board"));
        // The same state again is no change.
        control.pause("someone else");
        assert!(!watcher.has_changed().unwrap());
        control.set(Setting::RateLimit(100), "db-migrate control");
        assert_eq!(control.get().rate_limit, Some(100));
        assert!(watcher.has_changed().unwrap());
    }
}
