//! The two HTTP/1.1 data paths side by side on a corpus of well-formed and malformed messages.
//!
//! Each case is a client's raw bytes and an upstream's raw answers. It runs once through the
//! fast path and once through the general (hyper) path, each with a proxy and an upstream of
//! its own, and compares three things: the bytes the upstream received, the bytes the client
//! received and the capture. Where the two paths differ by design, the case is listed in
//! [`KNOWN`] with the reason, the same list as docs/proxy.md's "The two data paths"; any other
//! difference, or a listed one that went away, fails the test.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::*;

/// One message pair: what the client sends, and what the upstream answers to each request it
/// reads (it closes after the last answer, so every case ends).
struct Case {
    name: &'static str,
    client: Vec<u8>,
    answers: Vec<Vec<u8>>,
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok";

fn get(extra: &str) -> Vec<u8> {
    format!("GET /c HTTP/1.1\r\nHost: mcp.example\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST /c HTTP/1.1\r\nHost: mcp.example\r\n{headers}Connection: close\r\n\r\n{body}")
        .into_bytes()
}

fn case(name: &'static str, client: Vec<u8>, answers: &[&[u8]]) -> Case {
    Case {
        name,
        client,
        answers: answers.iter().map(|a| a.to_vec()).collect(),
    }
}

/// A plain GET answered with `answer`: a case about the response's framing.
fn answered(name: &'static str, answer: &[u8]) -> Case {
    case(name, get(""), &[answer])
}

fn corpus() -> Vec<Case> {
    let long_value = "v".repeat(100 * 1024);
    let huge_response_header = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nok",
        "b".repeat(500 * 1024)
    );
    let pipelined = [
        &b"POST /one HTTP/1.1\r\nHost: mcp.example\r\nContent-Length: 3\r\n\r\nabc"[..],
        b"GET /two HTTP/1.1\r\nHost: mcp.example\r\nConnection: close\r\n\r\n",
    ]
    .concat();
    vec![
        // Requests: Content-Length and Transfer-Encoding.
        case("get", get(""), &[OK]),
        case("post with a length", post("Content-Length: 5\r\n", "hello"), &[OK]),
        case(
            "chunked upload",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            ),
            &[OK],
        ),
        case(
            "chunked upload with an extension and upper-case size",
            post(
                "Transfer-Encoding: chunked\r\n",
                "A;ext=1\r\n0123456789\r\n0\r\n\r\n",
            ),
            &[OK],
        ),
        case(
            "chunked upload with trailers",
            post(
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
            ),
            &[OK],
        ),
        case(
            "length listed twice in one field",
            post("Content-Length: 5, 5\r\n", "hello"),
            &[OK],
        ),
        case(
            "length in two equal fields",
            post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"),
            &[OK],
        ),
        case(
            "two different lengths",
            post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
            &[OK],
        ),
        case(
            "length and chunked together",
            post(
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            &[OK],
        ),
        case(
            "a coding after chunked",
            post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
            &[OK],
        ),
        case(
            "an unknown coding alone",
            post("Transfer-Encoding: gzip\r\n", "hello"),
            &[OK],
        ),
        case("a signed length", post("Content-Length: +5\r\n", "hello"), &[OK]),
        case("a length that is not a number", post("Content-Length: abc\r\n", ""), &[OK]),
        case(
            "a length beyond 64 bits",
            post("Content-Length: 99999999999999999999999\r\n", ""),
            &[OK],
        ),
        case(
            "a chunk size padded with spaces",
            post("Transfer-Encoding: chunked\r\n", "5 \r\nhello\r\n0\r\n\r\n"),
            &[OK],
        ),
        case(
            "chunk lines ended by a bare LF",
            post("Transfer-Encoding: chunked\r\n", "5\nhello\n0\n\n"),
            &[OK],
        ),
        case(
            "a chunk size that is not hex",
            post("Transfer-Encoding: chunked\r\n", "zz\r\nhello\r\n0\r\n\r\n"),
            &[OK],
        ),
        // Requests: the head.
        case(
            "a folded header line",
            get("X-Folded: one\r\n two\r\n"),
            &[OK],
        ),
        case("a space before the colon", get("X-Space : v\r\n"), &[OK]),
        case(
            "a head with bare LF line ends",
            b"GET /c HTTP/1.1\nHost: mcp.example\nConnection: close\n\n".to_vec(),
            &[OK],
        ),
        case(
            "empty lines before the request line",
            [&b"\r\n\r\n"[..], &get("")].concat(),
            &[OK],
        ),
        case(
            "a 100 KB header",
            get(&format!("X-Long: {long_value}\r\n")),
            &[OK],
        ),
        case("a request line that is not HTTP", b"HELLO\r\n\r\n".to_vec(), &[OK]),
        case(
            "HTTP/1.0 without a Host",
            b"GET /c HTTP/1.0\r\n\r\n".to_vec(),
            &[OK],
        ),
        case(
            "an absolute-form target naming another host",
            b"GET http://elsewhere.example/c HTTP/1.1\r\nHost: elsewhere.example\r\nConnection: close\r\n\r\n".to_vec(),
            &[OK],
        ),
        case(
            "expect 100-continue",
            post("Content-Length: 5\r\nExpect: 100-continue\r\n", "hello"),
            &[OK],
        ),
        case(
            "pipelined requests in one write",
            pipelined,
            &[OK, OK],
        ),
        case(
            "an upgrade the upstream accepts",
            b"GET /ws HTTP/1.1\r\nHost: mcp.example\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nclient-frame".to_vec(),
            &[b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nserver-frame"],
        ),
        // Responses: framing.
        answered(
            "a chunked response",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        answered(
            "a response ended by the close",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
        ),
        answered(
            "a response length listed twice",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok",
        ),
        answered(
            "two different response lengths",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        ),
        answered(
            "a response with a length and chunked",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        ),
        answered(
            "a response chunk size padded with spaces",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 \r\nok\r\n0\r\n\r\n",
        ),
        answered(
            "response chunk lines ended by a bare LF",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n",
        ),
        answered(
            "a response with trailers",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: t\r\n\r\n",
        ),
        answered(
            "a response shorter than its length",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        ),
        answered(
            "a 100 Continue before the answer",
            &[&b"HTTP/1.1 100 Continue\r\n\r\n"[..], OK].concat(),
        ),
        answered(
            "a 103 Early Hints before the answer",
            &[&b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"[..], OK].concat(),
        ),
        answered(
            "an unsolicited 101",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw",
        ),
        answered(
            "a 204 with a length",
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        ),
        answered(
            "a 304 with a length",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ),
        answered(
            "a folded response header",
            b"HTTP/1.1 200 OK\r\nX-Folded: one\r\n two\r\nContent-Length: 2\r\n\r\nok",
        ),
        answered("a 500 KB response header", huge_response_header.as_bytes()),
        answered("a status line that is not HTTP", b"NOT HTTP AT ALL\r\n\r\n"),
        answered("an HTTP/1.0 answer", b"HTTP/1.0 200 OK\r\n\r\nold"),
        case("an upstream that closes without a word", get(""), &[]),
        case(
            "a HEAD answered with a length",
            b"HEAD /c HTTP/1.1\r\nHost: mcp.example\r\nConnection: close\r\n\r\n".to_vec(),
            &[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"],
        ),
    ]
}

/// Where the two paths differ by design: the case's name, what differs, and why.
const KNOWN: &[(&str, &str)] = &[
    (
        "length in two equal fields",
        "the capture: hyper's parser merges the two equal Content-Length fields into one \
         before the record sees them; the fast path records both, as the client sent them",
    ),
    (
        "a response length listed twice",
        "the client's bytes: the fast path writes the one length (\"2\"), hyper passes the \
         upstream's list (\"2, 2\") on; both are valid (RFC 9110 §8.6) and frame the same body",
    ),
    (
        "a response with trailers",
        "the client's bytes: the fast path relays the upstream's trailer fields; hyper sends \
         trailers only to a client that asked for them with `TE: trailers`",
    ),
    (
        "a 304 with a length",
        "the client's bytes: the fast path relays a 304's Content-Length, which RFC 9110 §8.6 \
         allows (the length the 200 would have had); hyper drops it",
    ),
];

type Expectation = fn(&Run) -> bool;

/// What a user would check in a few cases, whichever path served them.
const EXPECT: &[(&str, Expectation)] = &[
    ("two different lengths", |r| {
        r.client.starts_with("HTTP/1.1 400") && r.upstream.is_empty()
    }),
    ("length listed twice in one field", |r| {
        r.client.starts_with("HTTP/1.1 400") && r.upstream.is_empty()
    }),
    ("length and chunked together", |r| {
        // Refused, or framed by its chunks alone: never by the length.
        r.client.starts_with("HTTP/1.1 400")
            || r.upstream.iter().all(|u| !u.contains("content-length: 5"))
    }),
    ("pipelined requests in one write", |r| {
        r.client.matches("HTTP/1.1 200").count() == 2
            && r.upstream.concat().contains("POST /one")
            && r.upstream.concat().contains("GET /two")
    }),
    ("an unsolicited 101", |r| {
        r.client.starts_with("HTTP/1.1 502")
    }),
    ("a response with a length and chunked", |r| {
        r.client.ends_with("[chunked] ok[trailers] \r\n") && !r.client.contains("content-length")
    }),
    ("response chunk lines ended by a bare LF", |r| {
        !r.client.contains("ok") && r.capture.iter().any(|e| e["outcome"] == "upstream_aborted")
    }),
    ("a 500 KB response header", |r| {
        r.client.starts_with("HTTP/1.1 502")
    }),
    ("an absolute-form target naming another host", |r| {
        // Never an open proxy: the request goes to the configured upstream or nowhere.
        r.upstream.iter().all(|u| !u.contains("elsewhere.example/"))
    }),
];

/// The bytes an upstream received, by connection number.
type Received = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

/// What one run of a case gave.
#[derive(Debug, PartialEq)]
struct Run {
    /// The bytes the upstream received, one entry per connection.
    upstream: Vec<String>,
    /// The bytes the client received before the close.
    client: String,
    /// The capture's events, without what differs between any two runs.
    capture: Vec<Value>,
}

async fn run(case: &Case, fast: bool) -> Run {
    let received = Received::default();
    let up = answering_upstream(case.answers.clone(), received.clone()).await;
    let mut builder = TestProxy::to(&up.url());
    if !fast {
        builder = builder.arg("--no-fast-path");
    }
    let proxy = builder.start();
    let mut tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(&case.client).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    let upstream_addr = up.addr.to_string();
    let mut client = as_read(&answer);
    match read {
        Err(_) => client.push_str("\n[no close within 10 s]"),
        Ok(Err(e)) => client.push_str(&format!("\n[read error: {}]", e.kind())),
        Ok(Ok(_)) => {}
    }
    drop(tcp);
    let capture = comparable_events(&proxy.finish());
    // The upstream's port differs from run to run; it reaches the Host field and the record.
    let capture = serde_json::to_string(&capture)
        .unwrap()
        .replace(&upstream_addr, "upstream");
    let capture = words_blanked(serde_json::from_str(&capture).unwrap());
    let mut upstream = received.lock().unwrap().clone();
    upstream.sort();
    Run {
        upstream: upstream
            .into_iter()
            .map(|(_, bytes)| as_read(&bytes).replace(&upstream_addr, "upstream"))
            .collect(),
        client: client_words_blanked(&client),
        capture,
    }
}

/// The proxy's own error words taken out of a capture. Both paths answer a failed upstream
/// with a 502 and record the same outcome, but the fast path words the fault itself ("the
/// upstream sent two different Content-Length values") where the general path can only pass
/// on hyper's ("invalid content-length parsed"): the words are compared by their presence.
fn words_blanked(mut events: Vec<Value>) -> Vec<Value> {
    for e in &mut events {
        let o = e.as_object_mut().unwrap();
        if o.get("error").is_some() {
            o.insert("error".into(), Value::from("…"));
        }
        if o.get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| t.starts_with("mcptap: "))
        {
            o.insert("text".into(), Value::from("mcptap: …"));
            o.insert("len".into(), Value::from("…"));
        }
        if o.get("producer").is_some_and(|p| p == "proxy") {
            for pair in o["headers"].as_array_mut().unwrap() {
                if pair[0] == "content-length" {
                    pair[1] = Value::from("…");
                }
            }
        }
        if o.get("kind").is_some_and(|k| k == "end") && o.get("error").is_some() {
            o.insert("bytes".into(), Value::from("…"));
        }
    }
    events
}

/// [`words_blanked`] for the client's bytes: the proxy's own answer body and its length.
fn client_words_blanked(client: &str) -> String {
    match client.find("\r\n\r\nmcptap: ") {
        Some(at) => {
            let head: String = client[..at]
                .split("\r\n")
                .map(|l| {
                    if l.starts_with("content-length:") {
                        "content-length: …"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\r\n");
            format!("{head}\r\n\r\nmcptap: …")
        }
        None => client.to_string(),
    }
}

/// A raw stream of HTTP/1.1 messages as a reader of HTTP sees it: field names in lower case
/// and fields sorted by name, keeping the order of fields that share one (RFC 9110 §5.1, §5.3:
/// names are case-insensitive, and only the order within one name carries meaning). The fast
/// path keeps the upstream's spelling and order, hyper writes lower case in its own order;
/// neither is a difference a client or server may act on. Bodies and anything unparsed stay as
/// they are.
fn as_read(raw: &[u8]) -> String {
    let mut out = String::new();
    let mut at = 0;
    while at < raw.len() {
        let Some(head_len) = raw[at..].windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&raw[at..at + head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let start = lines.next().unwrap_or_default().to_string();
        if !(start.starts_with("HTTP/")
            || start.ends_with(" HTTP/1.1")
            || start.ends_with(" HTTP/1.0"))
            || head.contains("\r\n ")
        {
            break;
        }
        let mut fields: Vec<(String, String)> = lines
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_ascii_lowercase(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        out.push_str(&start);
        out.push_str("\r\n");
        for (name, value) in &fields {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("\r\n");
        at += head_len + 4;
        let body = framed_len(&start, &fields, &raw[at..]);
        let chunked = fields
            .iter()
            .any(|f| f.0 == "transfer-encoding" && f.1.ends_with("chunked"));
        match chunked.then(|| dechunk(&raw[at..at + body])).flatten() {
            Some(decoded) => out.push_str(&decoded),
            None => out.push_str(&String::from_utf8_lossy(&raw[at..at + body])),
        }
        at += body;
    }
    out.push_str(&String::from_utf8_lossy(&raw[at..]));
    out
}

/// How much of `rest` is the body of the message whose head is `start` and `fields`.
fn framed_len(start: &str, fields: &[(String, String)], rest: &[u8]) -> usize {
    let status: Option<u16> = start
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok());
    if matches!(status, Some(100..=199 | 204 | 304)) {
        return 0;
    }
    let field = |name: &str| fields.iter().find(|f| f.0 == name).map(|f| f.1.as_str());
    if field("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        return chunked_len(rest).unwrap_or(rest.len());
    }
    match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(n) => n.min(rest.len()),
        None if status.is_some() => rest.len(),
        None => 0,
    }
}

/// A whole chunked body as its reader sees it: the data, then any trailer lines. Where the
/// chunks break and how their sizes are spelled carries no meaning (RFC 9112 §7.1); the fast
/// path relays the upstream's chunks as they came, hyper writes its own.
fn dechunk(body: &[u8]) -> Option<String> {
    let mut data = Vec::new();
    let mut at = 0;
    loop {
        let end = at + body.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&body[at..end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = end + 2;
        if size == 0 {
            let trailers = String::from_utf8_lossy(&body[at..]).into_owned();
            return Some(format!(
                "[chunked] {}[trailers] {trailers}",
                String::from_utf8_lossy(&data)
            ));
        }
        data.extend_from_slice(body.get(at..at + size)?);
        at += size + 2;
    }
}

/// The length of a whole chunked body at the start of `buf`, trailers included.
fn chunked_len(buf: &[u8]) -> Option<usize> {
    let line_end = |from: usize| {
        buf.get(from..)?
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let mut at = 0;
    loop {
        let end = line_end(at)?;
        let size_text = String::from_utf8_lossy(&buf[at..end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        at = end + 2;
        if size == 0 {
            loop {
                let end = line_end(at)?;
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Some(at);
                }
            }
        }
        at += size + 2;
        if buf.len() < at {
            return None;
        }
    }
}

/// An upstream that reads requests (Content-Length or chunked bodies) and answers the n-th
/// with `answers[n]`, closing after the last one; every byte it reads is kept, per connection.
async fn answering_upstream(answers: Vec<Vec<u8>>, received: Received) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut number = 0;
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let answers = answers.clone();
            let received = received.clone();
            let index = {
                let mut all = received.lock().unwrap();
                all.push((number, Vec::new()));
                all.len() - 1
            };
            number += 1;
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for answer in answers.iter() {
                    let done = read_one_request(&mut tcp, &mut buf, &received, index).await;
                    if !done || tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
                if answers.is_empty() {
                    read_one_request(&mut tcp, &mut buf, &received, index).await;
                }
                let _ = tcp.shutdown().await;
                // Whatever follows (an upgraded stream's bytes) is kept too, until the close.
                let mut rest = [0u8; 4096];
                while let Ok(n) = tcp.read(&mut rest).await {
                    if n == 0 {
                        break;
                    }
                    received.lock().unwrap()[index]
                        .1
                        .extend_from_slice(&rest[..n]);
                }
            });
        }
    });
    Upstream::from_task(addr, task)
}

/// Reads until `buf` holds one whole request (its head, then a Content-Length or chunked
/// body), which it removes; false if the connection ended first.
async fn read_one_request(
    tcp: &mut TcpStream,
    buf: &mut Vec<u8>,
    received: &Received,
    index: usize,
) -> bool {
    loop {
        if let Some(len) = whole_request(buf) {
            buf.drain(..len);
            return true;
        }
        let mut chunk = [0u8; 8192];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                received.lock().unwrap()[index]
                    .1
                    .extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// The length of the whole request at the start of `buf`, if it is all there.
fn whole_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let field = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
    };
    if field("transfer-encoding:").is_some_and(|te| te.ends_with("chunked")) {
        return chunked_len(&buf[head_end..]).map(|n| head_end + n);
    }
    let length: usize = field("content-length:").map_or(0, |v| v.parse().unwrap_or(0));
    (buf.len() >= head_end + length).then_some(head_end + length)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_give_the_upstream_the_client_and_the_capture_the_same() {
    let cases = corpus();
    let mut differ = Vec::new();
    let mut report = String::new();
    for case in &cases {
        let fast = run(case, true).await;
        let general = run(case, false).await;
        if fast != general {
            differ.push(case.name);
            let shown = |run: &Run| {
                let text = format!("{run:#?}");
                // A 500 KB field would drown the rest.
                text.lines()
                    .map(|l| match l.char_indices().nth(300) {
                        Some((cut, _)) => format!("{}…", &l[..cut]),
                        None => l.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            report.push_str(&format!(
                "\n=== {}\n--- fast path:\n{}\n--- general path:\n{}\n",
                case.name,
                shown(&fast),
                shown(&general)
            ));
        }
    }
    // What each path did, checked where it matters most (the two agree elsewhere).
    let runs: std::collections::HashMap<&str, Run> = {
        let mut runs = std::collections::HashMap::new();
        for case in cases
            .iter()
            .filter(|c| EXPECT.iter().any(|(n, _)| *n == c.name))
        {
            runs.insert(case.name, run(case, true).await);
        }
        runs
    };
    for (name, expect) in EXPECT {
        let run = &runs[name];
        assert!(expect(run), "{name}: {run:#?}");
    }
    let known: Vec<&str> = KNOWN.iter().map(|(name, _)| *name).collect();
    for name in &known {
        assert!(
            cases.iter().any(|c| c.name == *name),
            "KNOWN names a case the corpus lacks: {name}"
        );
    }
    assert_eq!(differ, known, "{report}");
}
