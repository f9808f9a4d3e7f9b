//! mcptap: a recording reverse proxy for remote MCP servers and their OAuth endpoints.
//!
//! The proxy ([`proxy`]) forwards and records; the capture format and its writer live in
//! [`capture`]; [`sse`] parses event streams incrementally.

pub mod capture;
pub mod cli;
pub mod demo;
pub mod diff;
pub mod explain;
pub mod export;
pub mod fixture;
pub mod mcp;
pub mod memory;
pub mod mock;
pub mod probe;
pub mod proxy;
pub mod replay;
pub mod report;
pub mod sse;
pub mod style;
pub mod terminal;
pub mod tls;
