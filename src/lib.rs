//! mcptap: a recording reverse proxy for remote MCP servers and their OAuth endpoints.
//!
//! This package is the `mcptap` binary and its commands, one module each. The layers below
//! are crates of their own: [`capture`] (the format: model, writer, reader, redaction,
//! [`sse`]), [`mcp`] (the analysis: sessions, stages, checks, the explanation) and
//! [`proxy`] (the data path, [`tls`]). The demo and test peers are `mcptap-fixture`,
//! used by `demo` and the tests and exposed by nothing here.

pub use mcptap_capture as capture;
pub use mcptap_capture::sse;
pub use mcptap_mcp as mcp;
pub use mcptap_proxy as proxy;
pub use mcptap_proxy::{memory, tls};

pub mod args;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod export;
pub mod mock;
pub mod probe;
pub mod replay;
pub mod report;
pub mod style;
pub mod terminal;
