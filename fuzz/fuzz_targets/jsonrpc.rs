//! Any bytes: JSON-RPC decoding never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mcptap::mcp::jsonrpc::decode_bytes(data);
});
