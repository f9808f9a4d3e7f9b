//! mcptap's capture format and everything that writes or reads it: the event model, the
//! recorder the data path feeds, the writer thread that turns records into JSONL (the one
//! serializer) and tells observers, the reader, secret redaction and the SSE parser.
//!
//! The lowest layer: it knows nothing of MCP, of the proxy or of any command.

pub mod coding;
pub mod file;
pub mod headers;
mod line;
pub mod model;
pub mod observer;
mod queue;
pub mod reader;
pub mod redact;
pub mod sse;
mod swar;
pub mod writer;

pub use model::{Direction, Event, EventBody, Outcome, FORMAT_VERSION};
pub use observer::{Observer, Observers, SessionStart};
pub use writer::{Clock, Record, Recorder, WriterConfig, WriterStats};
