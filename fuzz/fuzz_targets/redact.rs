//! Any text: redaction never panics, in any place it applies; and a secret planted in a body
//! of any syntax, under a secret name in any style, never survives
//! (mcptap::capture::redact::properties).
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcptap::capture::redact::{properties, Redactor};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let r = Redactor::with_key([7; 32]);
    let _ = r.json_text(&text);
    let _ = r.target(&text);
    let _ = r.form(&text);
    let _ = r.body_owned(false, text.to_string());
    for name in ["authorization", "cookie", "set-cookie", "location", "link", "x-api-key"] {
        let _ = r.header_value(name, &text);
    }
    properties::planted_secret_never_survives(data);
});
