//! Any byte stream, cut anywhere: the SSE parser never panics and the cut never matters.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcptap::sse::SseParser;

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize % (data.len() + 1);
    let mut whole = SseParser::new();
    let mut a = whole.push(data);
    a.extend(whole.finish());
    let mut cut = SseParser::new();
    let mut b = cut.push(&data[..split]);
    b.extend(cut.push(&data[split..]));
    b.extend(cut.finish());
    assert_eq!(a, b);
});
