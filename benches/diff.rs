//! `cargo bench --bench diff`: how long `mcptap diff` takes on two synthetic captures of
//! 5,000 exchanges each (an OAuth prelude, then an MCP session of lists, JSON calls and
//! streamed calls with progress events), as the proxy would write them. B differs from A the
//! way two real sessions do: other ports, session ids, fingerprints and dates (noise), plus
//! a changed result now and then, retried requests (insertions) and missing calls
//! (deletions). Prints the median of a few runs of read + align + compare + render.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use mcptap::capture::reader::Capture;
use mcptap::diff::{self, Options};
use mcptap::style::Style;
use serde_json::{json, Value};

const EXCHANGES: usize = 5_000;
const RUNS: usize = 7;

/// How one synthetic session differs from the other.
struct Variant {
    port: u16,
    upstream_port: u16,
    session_id: &'static str,
    /// Fingerprint salt and Mcp-Session-Id seed: the noise.
    salt: u32,
    /// Every n-th tool result says something else.
    changed_every: Option<usize>,
    /// Every n-th MCP request is first rejected with 401 and retried.
    retry_every: Option<usize>,
    /// Every n-th MCP request is never sent.
    missing_every: Option<usize>,
}

struct Writer {
    out: String,
    t: u64,
    ex: u64,
    conn: u64,
}

impl Writer {
    fn line(&mut self, kind: &str, mut fields: Value) {
        let t = self.t;
        let secs = t / 1_000_000;
        let ts = format!(
            "2026-11-26T{:02}:{:02}:{:02}.{:06}Z",
            22 + secs / 3600,
            secs / 60 % 60,
            secs % 60,
            t % 1_000_000
        );
        let obj = fields.as_object_mut().expect("an object");
        obj.insert("t".into(), t.into());
        obj.insert("ts".into(), ts.into());
        obj.insert("kind".into(), kind.into());
        let _ = writeln!(self.out, "{fields}");
    }

    fn tick(&mut self, us: u64) {
        self.t += us;
    }
}

fn fp(salt: u32, what: u32) -> String {
    format!(
        "<redacted fp={:08x}>",
        salt.wrapping_mul(2_654_435_761) ^ what
    )
}

fn date(t: u64, v: &Variant) -> String {
    let s = t / 1_000_000 + u64::from(v.salt % 7);
    format!(
        "Thu, 26 Nov 2026 {:02}:{:02}:{:02} GMT",
        22 + s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// One exchange: request, bodies, response, SSE events, end.
#[allow(clippy::too_many_arguments)]
fn exchange(
    w: &mut Writer,
    v: &Variant,
    method: &str,
    target: &str,
    mut request_headers: Vec<(String, String)>,
    request_body: Option<(&str, String)>,
    status: u16,
    response_type: &str,
    response_body: &str,
    events: &[String],
) {
    w.ex += 1;
    let ex = w.ex;
    if ex % 40 == 1 {
        w.conn += 1;
        w.line(
            "conn_open",
            json!({"conn": w.conn, "peer": format!("127.0.0.1:{}", 50_000 + w.conn), "local": format!("127.0.0.1:{}", v.port), "listener": format!("127.0.0.1:{}", v.port)}),
        );
    }
    let start = w.t;
    request_headers.push(("host".into(), format!("127.0.0.1:{}", v.port)));
    if let Some((ct, body)) = &request_body {
        request_headers.push(("content-type".into(), ct.to_string()));
        request_headers.push(("content-length".into(), body.len().to_string()));
    }
    w.line(
        "request",
        json!({"ex": ex, "conn": w.conn, "method": method, "target": target, "version": "HTTP/1.1",
               "headers": request_headers, "upstream": format!("http://127.0.0.1:{}{target}", v.upstream_port)}),
    );
    if let Some((_, body)) = &request_body {
        w.tick(150);
        w.line(
            "body",
            json!({"ex": ex, "dir": "request", "seq": 0, "text": body, "len": body.len(), "frames": [[w.t, body.len()]]}),
        );
    }
    w.tick(900 + (ex % 13) * 70);
    let mut headers = vec![
        ("content-type".to_string(), response_type.to_string()),
        ("date".to_string(), date(w.t, v)),
        (
            "x-request-id".to_string(),
            format!("{:08x}-1b2c-4d3e-8f90-{:012x}", ex, u64::from(v.salt) * ex),
        ),
    ];
    if response_type != "text/event-stream" {
        headers.push(("content-length".into(), response_body.len().to_string()));
    }
    w.line(
        "response",
        json!({"ex": ex, "status": status, "version": "HTTP/1.1", "headers": headers, "producer": "upstream"}),
    );
    let mut response_bytes = 0;
    if response_type == "text/event-stream" {
        for (seq, data) in events.iter().enumerate() {
            w.tick(400);
            let text = format!("event: message\ndata: {data}\n\n");
            response_bytes += text.len();
            w.line(
                "body",
                json!({"ex": ex, "dir": "response", "seq": seq, "text": text, "len": text.len(), "frames": [[w.t, text.len()]]}),
            );
            w.line(
                "sse",
                json!({"ex": ex, "dir": "response", "seq": seq, "event": "message", "data": data, "dispatched": true}),
            );
        }
    } else if !response_body.is_empty() {
        w.tick(120);
        response_bytes = response_body.len();
        w.line(
            "body",
            json!({"ex": ex, "dir": "response", "seq": 0, "text": response_body, "len": response_body.len(), "frames": [[w.t, response_body.len()]]}),
        );
    }
    w.tick(80);
    let total = w.t - start;
    w.line(
        "end",
        json!({"ex": ex, "outcome": "complete", "status": status,
               "timings": {"upstream_connect_us": null, "reused_connection": true, "request_body_done_us": 150,
                           "ttfb_us": total.saturating_sub(200), "response_done_us": total, "total_us": total},
               "bytes": {"request": request_body.as_ref().map_or(0, |(_, b)| b.len()), "response": response_bytes}}),
    );
    w.tick(300);
}

fn session(v: &Variant) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 << 20),
        t: 0,
        ex: 0,
        conn: 0,
    };
    w.line(
        "session",
        json!({"v": 1, "tool": "mcptap", "tool_version": "0.1.0", "session_id": v.session_id,
               "routes": [{"listen": format!("127.0.0.1:{}", v.port), "upstream": format!("http://127.0.0.1:{}/", v.upstream_port)}],
               "options": {"max_body": 10_485_760, "on_full": "wait", "preserve_host": false, "upstream_insecure": false, "upstream_timeout_s": 60.0, "grace_s": 5.0},
               "redaction": "fingerprint"}),
    );
    let base = format!("http://127.0.0.1:{}", v.port);
    let ua = || ("user-agent".to_string(), "claude-connector/1.0".to_string());
    let mcp_accept = || {
        (
            "accept".to_string(),
            "application/json, text/event-stream".to_string(),
        )
    };
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude","version":"1"}}}"#;
    exchange(
        &mut w,
        v,
        "POST",
        "/mcp",
        vec![ua(), mcp_accept()],
        Some(("application/json", init.into())),
        401,
        "application/json",
        r#"{"error":"unauthorized"}"#,
        &[],
    );
    exchange(
        &mut w,
        v,
        "GET",
        "/.well-known/oauth-protected-resource/mcp",
        vec![ua()],
        None,
        200,
        "application/json",
        &json!({"resource": format!("{base}/mcp"), "authorization_servers": [base], "scopes_supported": ["mcp"]}).to_string(),
        &[],
    );
    exchange(
        &mut w,
        v,
        "GET",
        "/.well-known/oauth-authorization-server",
        vec![ua()],
        None,
        200,
        "application/json",
        &json!({"issuer": base, "authorization_endpoint": format!("{base}/authorize"), "token_endpoint": format!("{base}/token"),
                "registration_endpoint": format!("{base}/register"), "code_challenge_methods_supported": ["S256"]})
        .to_string(),
        &[],
    );
    let client_id = format!("client-{:016x}", u64::from(v.salt) * 0x9e37_79b9);
    exchange(
        &mut w,
        v,
        "POST",
        "/register",
        vec![ua()],
        Some((
            "application/json",
            r#"{"client_name":"claude","redirect_uris":["https://claude.ai/api/mcp/auth_callback"]}"#.into(),
        )),
        201,
        "application/json",
        &json!({"client_id": client_id, "client_id_issued_at": 1_795_736_658 + v.salt, "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"]}).to_string(),
        &[],
    );
    let state = format!("st{:020x}", v.salt);
    exchange(
        &mut w,
        v,
        "GET",
        &format!("/authorize?response_type=code&client_id={client_id}&code_challenge=ch{:040x}&code_challenge_method=S256&state={state}&resource=http%3A%2F%2F127.0.0.1%3A{}%2Fmcp", v.salt, v.port),
        vec![ua()],
        None,
        302,
        "text/plain",
        "",
        &[],
    );
    exchange(
        &mut w,
        v,
        "POST",
        "/token",
        vec![ua()],
        Some((
            "application/x-www-form-urlencoded",
            format!(
                "grant_type=authorization_code&code={}&client_id={client_id}&code_verifier={}",
                fp(v.salt, 1),
                fp(v.salt, 2)
            ),
        )),
        200,
        "application/json",
        &json!({"access_token": fp(v.salt, 3), "token_type": "Bearer", "expires_in": 3600})
            .to_string(),
        &[],
    );
    let session_id = format!("{:032x}", u128::from(v.salt) * 0x1234_5678_9abc_def1);
    let authed = |extra: bool| {
        let mut h = vec![
            ua(),
            mcp_accept(),
            (
                "authorization".to_string(),
                format!("Bearer {}", fp(v.salt, 3)),
            ),
        ];
        if extra {
            h.push(("mcp-session-id".to_string(), session_id.clone()));
            h.push(("mcp-protocol-version".to_string(), "2025-06-18".to_string()));
        }
        h
    };
    exchange(
        &mut w,
        v,
        "POST",
        "/mcp",
        authed(false),
        Some(("application/json", init.replace("\"id\":0", "\"id\":1"))),
        200,
        "application/json",
        r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"bench","version":"1"}}}"#,
        &[],
    );
    let mut calls = 0usize;
    let mut id = 1u64;
    while (w.ex as usize) < EXCHANGES {
        calls += 1;
        id += 1;
        if v.missing_every.is_some_and(|n| calls.is_multiple_of(n)) {
            continue;
        }
        let kind = calls % 4;
        let (method, params) = match kind {
            0 => ("tools/list", json!({})),
            1 => (
                "tools/call",
                json!({"name": "echo", "arguments": {"text": format!("hello {calls}")}}),
            ),
            2 => (
                "resources/read",
                json!({"uri": format!("file:///notes/{calls}.md")}),
            ),
            _ => (
                "tools/call",
                json!({"name": "slow_count", "arguments": {"n": 3}, "_meta": {"progressToken": format!("count-{id}")}}),
            ),
        };
        let body =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        if v.retry_every.is_some_and(|n| calls.is_multiple_of(n)) {
            exchange(
                &mut w,
                v,
                "POST",
                "/mcp",
                authed(true),
                Some(("application/json", body.clone())),
                401,
                "application/json",
                r#"{"error":"invalid_token"}"#,
                &[],
            );
        }
        let changed = v.changed_every.is_some_and(|n| calls.is_multiple_of(n));
        let text = if changed {
            format!("goodbye {calls}")
        } else {
            format!("hello {calls}")
        };
        match kind {
            3 => {
                let mut events: Vec<String> = (1..=3)
                    .map(|p| {
                        json!({"jsonrpc": "2.0", "method": "notifications/progress",
                               "params": {"progressToken": format!("count-{id}"), "progress": p, "total": 3}})
                        .to_string()
                    })
                    .collect();
                events.push(
                    json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}], "isError": false}})
                        .to_string(),
                );
                exchange(
                    &mut w,
                    v,
                    "POST",
                    "/mcp",
                    authed(true),
                    Some(("application/json", body)),
                    200,
                    "text/event-stream",
                    "",
                    &events,
                );
            }
            _ => {
                let result = match kind {
                    0 => json!({"tools": [
                        {"name": "echo", "description": "Returns the text it is given.", "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}},
                        {"name": "slow_count", "description": "Counts to n.", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer"}}}}
                    ]}),
                    1 => json!({"content": [{"type": "text", "text": text}], "isError": false}),
                    _ => {
                        json!({"contents": [{"uri": format!("file:///notes/{calls}.md"), "text": text,
                                              "lastModified": format!("2026-11-26T22:{:02}:{:02}Z", calls % 60, (calls + v.salt as usize) % 60)}]})
                    }
                };
                exchange(
                    &mut w,
                    v,
                    "POST",
                    "/mcp",
                    authed(true),
                    Some(("application/json", body)),
                    200,
                    "application/json",
                    &json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
                    &[],
                );
            }
        }
    }
    w.line(
        "session_end",
        json!({"exchanges": w.ex, "connections": w.conn, "events_written": 0, "events_dropped": 0, "events_lost": 0, "clean": true}),
    );
    w.out
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let dir = tempfile::tempdir().expect("a temp folder");
    let write = |name: &str, v: &Variant| {
        let path = dir.path().join(name);
        let text = session(v);
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .expect("writing a synthetic capture");
        (path, text.len())
    };
    let (a, a_bytes) = write(
        "a.jsonl",
        &Variant {
            port: 41_001,
            upstream_port: 8_000,
            session_id: "aaaa0001",
            salt: 1,
            changed_every: None,
            retry_every: None,
            missing_every: None,
        },
    );
    let (b, b_bytes) = write(
        "b.jsonl",
        &Variant {
            port: 52_002,
            upstream_port: 8_001,
            session_id: "bbbb0002",
            salt: 2,
            changed_every: Some(97),
            retry_every: Some(251),
            missing_every: Some(333),
        },
    );

    let run = |a: &Path, b: &Path| {
        let start = Instant::now();
        let ca = Capture::open(a).expect("reading A");
        let cb = Capture::open(b).expect("reading B");
        let read = start.elapsed();
        let report = diff::diff(&ca, "a.jsonl", &cb, "b.jsonl", &Options::default());
        let text = diff::render(&report, Style::plain(), 160);
        let total = start.elapsed();
        (read, total, report, text.len())
    };
    let (_, _, report, text_len) = run(&a, &b);
    let (mut reads, mut totals) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let (read, total, _, _) = run(&a, &b);
        reads.push(read);
        totals.push(total);
    }
    let (read, total) = (median(reads), median(totals));
    let s = &report.summary;
    println!(
        "mcptap diff, two synthetic captures of {} and {} exchanges ({:.1} and {:.1} MiB):",
        report.a.exchanges,
        report.b.exchanges,
        a_bytes as f64 / (1 << 20) as f64,
        b_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  median of {RUNS} runs: {:.0} ms in all = {:.0} ms reading both + {:.0} ms aligning, comparing and rendering",
        ms(total),
        ms(read),
        ms(total - read)
    );
    println!(
        "  found {} aligned ({} changed), {} inserted, {} deleted, {} moved, {} differences; view {} KiB",
        s.aligned,
        s.changed,
        s.inserted,
        s.deleted,
        s.moved,
        s.differences,
        text_len / 1024
    );
}
