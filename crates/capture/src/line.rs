//! The events the writer writes most (request, response, body, sse, end), serialised by hand:
//! the same bytes serde_json makes of them, without serde's per-field calls, numbers by itoa,
//! strings copied eight bytes at a time where nothing needs escaping. Serde's escaper, a byte
//! at a time with a write per run between quotes, was the writer's largest cost on JSON bodies.
//!
//! A field added to one of these model types must be added here too: the property test
//! compares every kind with serde's output, and fails until it is.

use super::model::{
    Body, Direction, End, EventBody, Headers, Outcome, Request, Response, ServedBy, Sse,
};
use super::swar;

/// Appends `body` as `serde_json::to_writer` would; returns false, having written nothing, for
/// the kinds left to serde (they are rare: a few per connection or session).
pub(super) fn write_event_body(out: &mut Vec<u8>, body: &EventBody) -> bool {
    match body {
        EventBody::Request(req) => request(out, req),
        EventBody::Response(resp) => response(out, resp),
        EventBody::Body(b) => body_event(out, b),
        EventBody::Sse(sse) => sse_event(out, sse),
        EventBody::End(end) => end_event(out, end),
        _ => return false,
    }
    true
}

fn request(out: &mut Vec<u8>, req: &Request) {
    out.extend_from_slice(b"{\"kind\":\"request\",\"ex\":");
    number(out, req.ex);
    out.extend_from_slice(b",\"conn\":");
    number(out, req.conn);
    out.extend_from_slice(b",\"method\":");
    string(out, &req.method);
    out.extend_from_slice(b",\"target\":");
    string(out, &req.target);
    out.extend_from_slice(b",\"version\":");
    string(out, &req.version);
    out.extend_from_slice(b",\"headers\":");
    headers(out, &req.headers);
    out.extend_from_slice(b",\"upstream\":");
    string(out, &req.upstream);
    if let Some(route) = req.route {
        out.extend_from_slice(b",\"route\":");
        number(out, u64::from(route));
    }
    out.push(b'}');
}

fn response(out: &mut Vec<u8>, resp: &Response) {
    out.extend_from_slice(b"{\"kind\":\"response\",\"ex\":");
    number(out, resp.ex);
    out.extend_from_slice(b",\"status\":");
    number(out, u64::from(resp.status));
    out.extend_from_slice(b",\"version\":");
    string(out, &resp.version);
    out.extend_from_slice(b",\"headers\":");
    headers(out, &resp.headers);
    out.extend_from_slice(b",\"producer\":");
    string(out, &resp.producer);
    out.push(b'}');
}

fn body_event(out: &mut Vec<u8>, body: &Body) {
    out.extend_from_slice(b"{\"kind\":\"body\",\"ex\":");
    number(out, body.ex);
    out.extend_from_slice(b",\"dir\":");
    direction(out, body.dir);
    out.extend_from_slice(b",\"seq\":");
    number(out, body.seq);
    if let Some(text) = &body.text {
        out.extend_from_slice(b",\"text\":");
        string(out, text);
    }
    if let Some(b64) = &body.b64 {
        out.extend_from_slice(b",\"b64\":");
        string(out, b64);
    }
    out.extend_from_slice(b",\"len\":");
    number(out, body.len);
    out.extend_from_slice(b",\"frames\":[");
    for (i, &(t, len)) in body.frames.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        number(out, t);
        out.push(b',');
        number(out, len);
        out.push(b']');
    }
    out.push(b']');
    if body.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    if let Some(encoding) = &body.encoding {
        out.extend_from_slice(b",\"encoding\":");
        string(out, encoding);
    }
    if let Some(omitted) = &body.omitted {
        out.extend_from_slice(b",\"omitted\":");
        string(out, omitted);
    }
    out.push(b'}');
}

fn sse_event(out: &mut Vec<u8>, sse: &Sse) {
    out.extend_from_slice(b"{\"kind\":\"sse\",\"ex\":");
    number(out, sse.ex);
    out.extend_from_slice(b",\"dir\":");
    direction(out, sse.dir);
    out.extend_from_slice(b",\"seq\":");
    number(out, sse.seq);
    if let Some(event) = &sse.event {
        out.extend_from_slice(b",\"event\":");
        string(out, event);
    }
    if let Some(id) = &sse.id {
        out.extend_from_slice(b",\"id\":");
        string(out, id);
    }
    if let Some(data) = &sse.data {
        out.extend_from_slice(b",\"data\":");
        string(out, data);
    }
    if let Some(retry) = sse.retry {
        out.extend_from_slice(b",\"retry\":");
        number(out, retry);
    }
    if !sse.comments.is_empty() {
        out.extend_from_slice(b",\"comments\":[");
        for (i, comment) in sse.comments.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, comment);
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"dispatched\":");
    boolean(out, sse.dispatched);
    out.push(b'}');
}

fn end_event(out: &mut Vec<u8>, end: &End) {
    out.extend_from_slice(b"{\"kind\":\"end\",\"ex\":");
    number(out, end.ex);
    out.extend_from_slice(b",\"outcome\":");
    out.extend_from_slice(match end.outcome {
        Outcome::Complete => b"\"complete\"".as_slice(),
        Outcome::ClientAborted => b"\"client_aborted\"",
        Outcome::UpstreamAborted => b"\"upstream_aborted\"",
        Outcome::UpstreamError => b"\"upstream_error\"",
        Outcome::Timeout => b"\"timeout\"",
        Outcome::ProxyShutdown => b"\"proxy_shutdown\"",
    });
    out.extend_from_slice(b",\"status\":");
    optional_number(out, end.status.map(u64::from));
    if let Some(error) = &end.error {
        out.extend_from_slice(b",\"error\":");
        string(out, error);
    }
    let timings = &end.timings;
    out.extend_from_slice(b",\"timings\":{\"upstream_connect_us\":");
    optional_number(out, timings.upstream_connect_us);
    out.extend_from_slice(b",\"reused_connection\":");
    boolean(out, timings.reused_connection);
    out.extend_from_slice(b",\"request_body_done_us\":");
    optional_number(out, timings.request_body_done_us);
    out.extend_from_slice(b",\"ttfb_us\":");
    optional_number(out, timings.ttfb_us);
    out.extend_from_slice(b",\"response_done_us\":");
    optional_number(out, timings.response_done_us);
    out.extend_from_slice(b",\"total_us\":");
    number(out, timings.total_us);
    out.extend_from_slice(b"},\"bytes\":{\"request\":");
    number(out, end.bytes.request);
    out.extend_from_slice(b",\"response\":");
    number(out, end.bytes.response);
    out.push(b'}');
    if !end.truncated.is_empty() {
        out.extend_from_slice(b",\"truncated\":[");
        for (i, &dir) in end.truncated.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            direction(out, dir);
        }
        out.push(b']');
    }
    if let Some(by) = end.served_by {
        out.extend_from_slice(match by {
            ServedBy::FastPath => b",\"served_by\":\"fast_path\"".as_slice(),
            ServedBy::Hyper => b",\"served_by\":\"hyper\"",
        });
    }
    out.push(b'}');
}

fn headers(out: &mut Vec<u8>, headers: &Headers) {
    out.push(b'[');
    for (i, (name, value)) in headers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        string(out, name);
        out.push(b',');
        string(out, value);
        out.push(b']');
    }
    out.push(b']');
}

fn direction(out: &mut Vec<u8>, dir: Direction) {
    out.extend_from_slice(match dir {
        Direction::Request => b"\"request\"".as_slice(),
        Direction::Response => b"\"response\"",
    });
}

fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"true" } else { b"false" });
}

/// A number as serde_json writes it (itoa's digits).
pub(super) fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn optional_number(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => number(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

/// How much escaped text [`string`] gathers on the stack before appending it to the line.
const GATHER: usize = 256;

/// A JSON string as serde_json writes it: `"` and `\` escaped with a backslash, control
/// characters as `\b \t \n \f \r` or `\u00xx`, everything else (all of UTF-8) as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    let src = s.as_bytes();
    out.reserve(src.len() + 2);
    out.push(b'"');
    // Most strings (header fields, paths, names) need no escape at all: what comes before the
    // first byte that does is copied in one piece.
    let clean = clean_prefix(src);
    out.extend_from_slice(&src[..clean]);
    if clean < src.len() {
        escaped(out, &src[clean..]);
    }
    out.push(b'"');
}

/// How many bytes at the start of `src` need no escape.
fn clean_prefix(src: &[u8]) -> usize {
    let mut at = 0;
    while let Some(chunk) = src.get(at..at + 16) {
        let special = swar::json_special16(chunk.try_into().expect("sixteen bytes"));
        if special != 0 {
            return at + special.trailing_zeros() as usize;
        }
        at += 16;
    }
    src[at..]
        .iter()
        .position(|&b| ESCAPE[usize::from(b)] != 0)
        .map_or(src.len(), |i| at + i)
}

/// Appends `src` escaped, without the quotes around it.
///
/// Sixteen bytes at a time are copied with one store, and count up to the first that needs
/// an escape; the escape is written and the next sixteen start after it. The text gathers in
/// a stack buffer, appended to `out` every `GATHER` bytes: stores to the line itself would
/// reload its length after every byte, and a run of varying length between quotes would be a
/// memcpy call.
fn escaped(out: &mut Vec<u8>, src: &[u8]) {
    if src.len() < 16 {
        let mut esc = [0u8; 6];
        for &b in src {
            match ESCAPE[usize::from(b)] {
                0 => out.push(b),
                _ => {
                    let len = escape(&mut esc, b);
                    out.extend_from_slice(&esc[..len]);
                }
            }
        }
        return;
    }
    // Room past GATHER for one chunk and an escape, then for a tail of fifteen `\u00xx`.
    let mut buf = [0u8; GATHER + 96];
    let mut o = 0;
    let mut at = 0;
    while let Some(chunk) = src.get(at..at + 16) {
        let chunk: &[u8; 16] = chunk.try_into().expect("sixteen bytes");
        if o > GATHER {
            out.extend_from_slice(&buf[..o]);
            o = 0;
        }
        // Copied whole; only the part before the first byte to escape counts.
        buf[o..o + 16].copy_from_slice(chunk);
        let special = swar::json_special16(chunk);
        if special == 0 {
            o += 16;
            at += 16;
            continue;
        }
        let first = special.trailing_zeros() as usize;
        o += first;
        o += put(&mut buf[o..o + 6], chunk[first]);
        at += first + 1;
    }
    if o > GATHER {
        out.extend_from_slice(&buf[..o]);
        o = 0;
    }
    for &b in &src[at..] {
        o += put(&mut buf[o..o + 6], b);
    }
    out.extend_from_slice(&buf[..o]);
}

/// Writes `b`, escaped if it needs it, at the start of `to`; returns the length written.
#[inline]
fn put(to: &mut [u8], b: u8) -> usize {
    match ESCAPE[usize::from(b)] {
        0 => {
            to[0] = b;
            1
        }
        b'u' => escape(to, b),
        short => {
            to[0] = b'\\';
            to[1] = short;
            2
        }
    }
}

/// serde_json's table: the letter after the backslash for a byte that needs an escape (`u`
/// for `\u00xx`), 0 for a byte written as it is.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes the escape of a byte that needs one at the start of `to`; returns its length.
#[cold]
fn escape(to: &mut [u8], b: u8) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match ESCAPE[usize::from(b)] {
        b'u' => {
            to[..6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            6
        }
        short => {
            to[0] = b'\\';
            to[1] = short;
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ByteCounts, Timings};
    use proptest::prelude::*;

    fn by_hand(body: &EventBody) -> String {
        let mut out = Vec::new();
        assert!(write_event_body(&mut out, body));
        String::from_utf8(out).unwrap()
    }

    /// Text with what the escaper treats specially, densely: quotes, backslashes, every
    /// control character, DEL, multi-byte UTF-8, at every offset of a word.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\"\\\\\u{0}-\u{1f}\u{7f}aé€😀 {}:,]{0,40}",
            "[a-z\"]{0,20}",
        ]
    }

    fn dir() -> impl Strategy<Value = Direction> {
        prop_oneof![Just(Direction::Request), Just(Direction::Response)]
    }

    fn headers() -> impl Strategy<Value = Headers> {
        proptest::collection::vec((text(), text()), 0..4).prop_map(Headers::from)
    }

    fn number() -> impl Strategy<Value = u64> {
        prop_oneof![any::<u64>(), 0u64..1000, Just(u64::MAX), Just(0)]
    }

    fn request() -> impl Strategy<Value = EventBody> {
        (
            (number(), number(), text(), text()),
            (
                text(),
                headers(),
                text(),
                proptest::option::of(any::<u32>()),
            ),
        )
            .prop_map(
                |((ex, conn, method, target), (version, headers, upstream, route))| {
                    EventBody::Request(Request {
                        ex,
                        conn,
                        method,
                        target,
                        version: version.into(),
                        headers,
                        upstream,
                        route,
                    })
                },
            )
    }

    fn response() -> impl Strategy<Value = EventBody> {
        (number(), any::<u16>(), text(), headers(), text()).prop_map(
            |(ex, status, version, headers, producer)| {
                EventBody::Response(Response {
                    ex,
                    status,
                    version: version.into(),
                    headers,
                    producer: producer.into(),
                })
            },
        )
    }

    fn body() -> impl Strategy<Value = EventBody> {
        (
            (number(), dir(), number()),
            (proptest::option::of(text()), proptest::option::of(text())),
            (
                number(),
                proptest::collection::vec((number(), number()), 0..4),
                any::<bool>(),
            ),
            (proptest::option::of(text()), proptest::option::of(text())),
        )
            .prop_map(
                |((ex, dir, seq), (text, b64), (len, frames, truncated), (encoding, omitted))| {
                    EventBody::Body(Body {
                        ex,
                        dir,
                        seq,
                        text,
                        b64,
                        len,
                        frames,
                        truncated,
                        encoding,
                        omitted,
                    })
                },
            )
    }

    fn sse() -> impl Strategy<Value = EventBody> {
        (
            (number(), dir(), number()),
            (
                proptest::option::of(text()),
                proptest::option::of(text()),
                proptest::option::of(text()),
            ),
            (
                proptest::option::of(number()),
                proptest::collection::vec(text(), 0..3),
                any::<bool>(),
            ),
        )
            .prop_map(
                |((ex, dir, seq), (event, id, data), (retry, comments, dispatched))| {
                    EventBody::Sse(Sse {
                        ex,
                        dir,
                        seq,
                        event,
                        id,
                        data,
                        retry,
                        comments,
                        dispatched,
                    })
                },
            )
    }

    fn end() -> impl Strategy<Value = EventBody> {
        let outcome = prop_oneof![
            Just(Outcome::Complete),
            Just(Outcome::ClientAborted),
            Just(Outcome::UpstreamAborted),
            Just(Outcome::UpstreamError),
            Just(Outcome::Timeout),
            Just(Outcome::ProxyShutdown),
        ];
        let n = || proptest::option::of(number());
        (
            (
                number(),
                outcome,
                proptest::option::of(any::<u16>()),
                proptest::option::of(text()),
            ),
            (n(), any::<bool>(), n(), n(), n(), number()),
            (
                number(),
                number(),
                proptest::collection::vec(dir(), 0..3),
                proptest::option::of(prop_oneof![Just(ServedBy::FastPath), Just(ServedBy::Hyper)]),
            ),
        )
            .prop_map(
                |(
                    (ex, outcome, status, error),
                    (connect, reused, request_done, ttfb, response_done, total),
                    (request, response, truncated, served_by),
                )| {
                    EventBody::End(End {
                        ex,
                        outcome,
                        status,
                        error,
                        timings: Timings {
                            upstream_connect_us: connect,
                            reused_connection: reused,
                            request_body_done_us: request_done,
                            ttfb_us: ttfb,
                            response_done_us: response_done,
                            total_us: total,
                        },
                        bytes: ByteCounts { request, response },
                        truncated,
                        served_by,
                    })
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn each_kind_is_what_serde_makes_of_it(
            body in prop_oneof![request(), response(), body(), sse(), end()],
        ) {
            prop_assert_eq!(by_hand(&body), serde_json::to_string(&body).unwrap());
        }

        #[test]
        fn strings_are_escaped_as_serde_escapes_them(
            s in prop_oneof![text(), "[\u{0}-\u{1f}\"\\\\aé]{200,1200}", "[a-z\"]{200,1200}"],
        ) {
            let mut out = Vec::new();
            string(&mut out, &s);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn every_byte_is_escaped_as_serde_escapes_it() {
        for b in 0u8..0x80 {
            // Before, inside and after a full word, alone in the tail, after clean chunks.
            for pad in [0, 3, 8, 13, 16, 21, 40] {
                let s = format!("{}{}{}", "a".repeat(pad), char::from(b), "z".repeat(pad));
                let mut out = Vec::new();
                string(&mut out, &s);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&s).unwrap(),
                    "byte {b:#x}, pad {pad}"
                );
            }
        }
    }

    /// Long runs of the bytes with the longest escapes fill the stack buffer at every offset.
    #[test]
    fn long_escape_runs_are_gathered_and_flushed_whole() {
        for len in 250..330 {
            for fill in ["\u{1}", "\"", "a"] {
                let s = format!("{}{}", fill.repeat(len), "\u{1f}".repeat(len % 9));
                let mut out = Vec::new();
                string(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "len {len}");
            }
        }
    }

    #[test]
    fn other_kinds_are_left_to_serde() {
        let note = EventBody::Note(crate::model::Note {
            code: "x".into(),
            message: "y".into(),
            count: None,
            ex: None,
        });
        let mut out = Vec::new();
        assert!(!write_event_body(&mut out, &note));
        assert!(out.is_empty());
    }
}
