//! MCP and OAuth awareness: JSON-RPC decoding, the session analysis (roles, stages, silence,
//! token lineage), the checks that `mcptap explain` reports, their explanation of a capture,
//! and the OAuth client helpers probe and the fixtures share.
//!
//! Reads captures through `mcptap-capture`; knows nothing of the proxy or the commands.

pub mod checks;
pub mod diff;
pub mod era;
pub mod explanation;
pub mod flows;
pub mod jsonrpc;
pub mod oauth;
pub mod rounds;
pub mod session;
