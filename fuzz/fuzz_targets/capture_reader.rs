//! Any file: the capture reader answers with a capture or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(capture) = mcptap::capture::reader::Capture::from_reader(data, "fuzz.jsonl") {
        // The analysis and every check must cope with whatever the file held.
        let _ = mcptap::explain::explain(&capture, "fuzz.jsonl");
    }
});
