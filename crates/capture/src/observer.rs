//! Observers of a session as it is recorded: the terminal's live lines, and whatever else
//! follows a session live (a browser view, an exporter), subscribe here. Each sees exactly
//! the events the capture file gets, redacted, in the file's order; none knows the others.

use std::path::Path;
use std::sync::Arc;

use super::model::{EventBody, Session};
use super::writer::Clock;

/// Follows the events of a session as the writer records them.
///
/// Called on the writer thread, which every recorded event waits for: an observer does
/// little per event and moves anything slow (reading the capture back, network I/O) to a
/// thread of its own, or the data path slows with it.
pub trait Observer: Send {
    /// One event, as written to the capture (`t`: µs since the session start).
    fn event(&mut self, t: u64, event: &EventBody);

    /// About once a second while the proxy runs, with the session time: for watchdogs.
    fn tick(&mut self, _t: u64) {}
}

/// What a session's observers are made from when it starts.
pub struct SessionStart<'a> {
    pub clock: &'a Arc<Clock>,
    /// The capture file being written.
    pub capture: &'a Path,
    /// The session's first line.
    pub session: &'a Session,
}

/// Makes a session's observers once its capture exists.
pub type Observers = Box<dyn FnOnce(&SessionStart<'_>) -> Vec<Box<dyn Observer>> + Send>;

/// No observers (a proxy run in-process by a test, say).
pub fn none() -> Observers {
    Box::new(|_| Vec::new())
}
