//! Everything about the capture file: the event model, the recorder the data path
//! feeds, the writer thread that turns records into JSONL, and secret redaction.

pub mod body;
pub mod file;
pub mod headers;
mod line;
pub mod model;
pub mod observer;
mod queue;
pub mod reader;
pub mod redact;
mod swar;
pub mod writer;

pub use model::{Direction, Event, EventBody, Outcome, FORMAT_VERSION};
pub use observer::{Observer, Observers, SessionStart};
pub use writer::{Clock, Record, Recorder, WriterConfig, WriterStats};
