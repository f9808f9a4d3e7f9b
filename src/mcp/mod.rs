//! MCP and OAuth awareness: JSON-RPC decoding, the session analysis (roles, stages, silence,
//! token lineage) and the checks that `mcptap explain` reports.

pub mod checks;
pub mod explanation;
pub mod jsonrpc;
pub mod oauth;
pub mod session;
