//! Any bytes as a client's request head and body, and as a chunked body: the HTTP/1.1 fast
//! path's parsing never panics, forwards what it takes faithfully, and reads a chunked body
//! the same however it is cut (the properties in mcptap::proxy::h1::properties).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcptap::proxy::h1::properties;

fuzz_target!(|data: &[u8]| {
    properties::request_head(data);
    properties::chunked_body(data);
});
