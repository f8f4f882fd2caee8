//! The status-board interface and the core's implementation, which hands events on.

use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::components::component::Lifecycle;
use crate::engine::events::Event;

/// Receives the run's events. The component every other component reports to.
///
/// `publish` must not block: it is called from the migration jobs. The terminal board of
/// `db-migrate` and [`EventBoard`] both queue the event and return.
pub trait StatusBoard: shaku::Interface + Lifecycle {
    /// Hands one event to the board.
    fn publish(&self, event: Event);
}
crate::named_interface!(StatusBoard, "status-board");

/// The core's status board: no terminal, it forwards every event to a channel, or drops them when
/// nobody subscribed. An embedding service reads the receiver from [`EventBoard::channel`].
#[derive(shaku::Component, migrate_derive::Dependencies)]
#[shaku(interface = StatusBoard)]
pub struct EventBoard {
    /// Where events go; `None` drops them (a board nobody watches).
    #[shaku(default)]
    sender: Option<mpsc::UnboundedSender<Event>>,
}

impl std::fmt::Debug for EventBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBoard")
            .field("subscribed", &self.sender.is_some())
            .finish()
    }
}

impl EventBoard {
    /// A board forwarding to a new unbounded channel, and that channel's receiver.
    ///
    /// Unbounded because `publish` must never block a job; the volume is bounded at the source
    /// (job text is coalesced, see [`Event`]).
    pub fn channel() -> (EventBoard, mpsc::UnboundedReceiver<Event>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            EventBoard {
                sender: Some(sender),
            },
            receiver,
        )
    }

    /// A board that drops every event.
    pub fn discard() -> EventBoard {
        EventBoard { sender: None }
    }
}

impl Lifecycle for EventBoard {}

impl StatusBoard for EventBoard {
    fn publish(&self, event: Event) {
        if let Some(sender) = &self.sender {
            // A closed receiver means nobody listens any more; the run does not care.
            let _ = sender.send(event);
        }
    }
}

/// A board that keeps every event in memory; for tests and small embeddings.
#[derive(Debug, Default)]
pub struct RecordingBoard {
    events: Mutex<Vec<Event>>,
}

impl RecordingBoard {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("board lock").clone()
    }
}

impl Lifecycle for RecordingBoard {}

impl StatusBoard for RecordingBoard {
    fn publish(&self, event: Event) {
        self.events.lock().expect("board lock").push(event);
    }
}
