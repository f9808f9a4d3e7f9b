//! Any text: redaction never panics, in any place it applies.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcptap::capture::redact::Redactor;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = Redactor::with_key([7; 32]);
    let _ = r.json_text(&text);
    let _ = r.target(&text);
    let _ = r.form(&text);
    for name in ["authorization", "cookie", "set-cookie", "location", "link"] {
        let _ = r.header_value(name, &text);
    }
});
