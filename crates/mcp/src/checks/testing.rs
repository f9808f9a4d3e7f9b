//! Test support for the checks: captures written as JSONL from a few builder calls, so a
//! check's test reads as the exchanges it is about.

use mcptap_capture::reader::Capture;
use serde_json::{json, Value};

use super::{Finding, Severity};
use crate::session::Session;

const MS: u64 = 1_000;

pub(crate) const TS: &str = "2026-01-01T00:00:00.000000Z";
pub(crate) const BOTH: &str = "application/json, text/event-stream";

/// One exchange to write into a capture; every time is µs after the request (`t`).
#[derive(Clone)]
pub(crate) struct Ex {
    pub(crate) ex: u64,
    pub(crate) t: u64,
    pub(crate) method: &'static str,
    pub(crate) path: &'static str,
    pub(crate) req: Vec<(String, String)>,
    pub(crate) body: Option<String>,
    pub(crate) status: Option<u16>,
    pub(crate) ttfb: u64,
    pub(crate) resp: Vec<(String, String)>,
    pub(crate) resp_body: Option<String>,
    /// SSE blocks: when, and the raw block (without the blank line).
    pub(crate) sse: Vec<(u64, String)>,
    pub(crate) end: Option<(u64, &'static str)>,
    /// The connection it came on.
    pub(crate) conn: u64,
}

impl Ex {
    pub(crate) fn new(ex: u64, t: u64, method: &'static str, path: &'static str) -> Ex {
        Ex {
            ex,
            t,
            method,
            path,
            req: vec![
                ("host".into(), "127.0.0.1:1".into()),
                ("user-agent".into(), "connector/1.0".into()),
            ],
            body: None,
            status: None,
            ttfb: 5 * MS,
            resp: Vec::new(),
            resp_body: None,
            sse: Vec::new(),
            end: Some((10 * MS, "complete")),
            conn: 1,
        }
    }

    /// On connection `conn` (1 unless said).
    pub(crate) fn on(mut self, conn: u64) -> Ex {
        self.conn = conn;
        self
    }

    /// POST /mcp with a JSON-RPC body and the Accept the spec asks for.
    pub(crate) fn post(ex: u64, t: u64, body: &str) -> Ex {
        Ex::new(ex, t, "POST", "/mcp")
            .h("content-type", "application/json")
            .h("accept", BOTH)
            .send(body)
    }

    pub(crate) fn send(mut self, body: &str) -> Ex {
        self.body = Some(body.to_string());
        self
    }

    pub(crate) fn get(ex: u64, t: u64) -> Ex {
        Ex::new(ex, t, "GET", "/mcp").h("accept", "text/event-stream")
    }

    pub(crate) fn h(mut self, name: &str, value: &str) -> Ex {
        self.req.retain(|(n, _)| n != name);
        self.req.push((name.into(), value.into()));
        self
    }

    pub(crate) fn no_h(mut self, name: &str) -> Ex {
        self.req.retain(|(n, _)| n != name);
        self
    }

    pub(crate) fn status(mut self, status: u16) -> Ex {
        self.status = Some(status);
        self
    }

    pub(crate) fn rh(mut self, name: &str, value: &str) -> Ex {
        self.resp.push((name.into(), value.into()));
        self
    }

    /// A response with this body and content type.
    pub(crate) fn answer(self, status: u16, content_type: &str, body: &str) -> Ex {
        let mut x = self.status(status).rh("content-type", content_type);
        x.resp_body = Some(body.to_string());
        x
    }

    pub(crate) fn json(self, body: &str) -> Ex {
        self.answer(200, "application/json", body)
    }

    /// A 200 event stream carrying `data` blocks at these times.
    pub(crate) fn stream(mut self, events: &[(u64, &str)]) -> Ex {
        self = self.status(200).rh("content-type", "text/event-stream");
        for (t, data) in events {
            self.sse.push((*t, format!("data: {data}")));
        }
        self
    }

    pub(crate) fn ttfb(mut self, us: u64) -> Ex {
        self.ttfb = us;
        self
    }

    pub(crate) fn end(mut self, us: u64, outcome: &'static str) -> Ex {
        self.end = Some((us, outcome));
        self
    }

    pub(crate) fn open(mut self) -> Ex {
        self.end = None;
        self
    }
}

/// A capture as JSONL text.
pub(crate) struct Cap {
    pub(crate) lines: Vec<String>,
    pub(crate) last: u64,
}

impl Cap {
    pub(crate) fn new() -> Cap {
        Cap {
            lines: vec![json!({
                "t": 0, "ts": TS, "kind": "session", "v": 1, "tool": "mcptap",
                "tool_version": "0.1.0", "session_id": "abcd1234",
                "routes": [{"listen": "127.0.0.1:1", "upstream": "http://127.0.0.1:2/"}],
                "options": {"max_body": 1048576, "on_full": "wait", "preserve_host": false,
                    "upstream_insecure": false, "upstream_timeout_s": null, "grace_s": 5.0},
                "redaction": "fingerprint"
            })
            .to_string()],
            last: 0,
        }
    }

    pub(crate) fn push(&mut self, t: u64, kind: &str, mut v: Value) {
        v["t"] = json!(t);
        v["ts"] = json!(TS);
        v["kind"] = json!(kind);
        self.last = self.last.max(t);
        self.lines.push(v.to_string());
    }

    pub(crate) fn add(&mut self, x: Ex) -> &mut Cap {
        let headers: Vec<[&str; 2]> = x
            .req
            .iter()
            .map(|(n, v)| [n.as_str(), v.as_str()])
            .collect();
        self.push(
            x.t,
            "request",
            json!({"ex": x.ex, "conn": x.conn, "method": x.method, "target": x.path,
                "version": "HTTP/1.1", "headers": headers,
                "upstream": format!("http://127.0.0.1:2{}", x.path)}),
        );
        if let Some(body) = &x.body {
            self.push(
                x.t + 1,
                "body",
                json!({"ex": x.ex, "dir": "request", "seq": 0, "text": body,
                    "len": body.len(), "frames": [[x.t + 1, body.len()]]}),
            );
        }
        let end_t = x.end.map(|(d, _)| x.t + d);
        if let Some(status) = x.status {
            let rt = x.t + x.ttfb;
            let headers: Vec<[&str; 2]> = x
                .resp
                .iter()
                .map(|(n, v)| [n.as_str(), v.as_str()])
                .collect();
            self.push(
                rt,
                "response",
                json!({"ex": x.ex, "status": status, "version": "HTTP/1.1",
                    "headers": headers, "producer": "upstream"}),
            );
            if let Some(body) = x.resp_body.as_ref().filter(|b| !b.is_empty()) {
                let bt = end_t.unwrap_or(rt);
                self.push(
                    bt,
                    "body",
                    json!({"ex": x.ex, "dir": "response", "seq": 0, "text": body,
                        "len": body.len(), "frames": [[bt, body.len()]]}),
                );
            }
            for (seq, (d, block)) in x.sse.iter().enumerate() {
                let t = x.t + d;
                let text = format!("{block}\n\n");
                self.push(
                    t,
                    "body",
                    json!({"ex": x.ex, "dir": "response", "seq": seq, "text": text,
                        "len": text.len(), "frames": [[t, text.len()]]}),
                );
                let mut sse =
                    json!({"ex": x.ex, "dir": "response", "seq": seq, "dispatched": true});
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("data", v)) => sse["data"] = json!(v),
                        Some(("id", v)) => sse["id"] = json!(v),
                        Some(("event", v)) => sse["event"] = json!(v),
                        Some(("retry", v)) => sse["retry"] = json!(v.parse::<u64>().unwrap()),
                        _ => {}
                    }
                }
                self.push(t, "sse", sse);
            }
        }
        if let (Some(t), Some((d, outcome))) = (end_t, x.end) {
            self.push(
                t,
                "end",
                json!({"ex": x.ex, "outcome": outcome, "status": x.status,
                    "timings": {"upstream_connect_us": null, "reused_connection": true,
                        "request_body_done_us": 1, "ttfb_us": x.ttfb,
                        "response_done_us": d, "total_us": d},
                    "bytes": {"request": 0, "response": 0}}),
            );
        }
        self
    }

    pub(crate) fn tls(&mut self, t: u64, reason: &str, sni: &str) -> &mut Cap {
        self.push(
            t,
            "tls_error",
            json!({"peer": format!("10.0.0.{t}:5000"), "listener": "0.0.0.0:443",
                "sni": sni, "reason": reason}),
        );
        self
    }

    /// Ends the recording at `t`.
    pub(crate) fn close(&mut self, t: u64) -> &mut Cap {
        self.push(
            t,
            "session_end",
            json!({"exchanges": 0, "connections": 0, "events_written": 0,
                "events_dropped": 0, "events_lost": 0, "clean": true}),
        );
        self
    }

    /// The capture as `explain` reads it.
    pub(crate) fn capture(&self) -> Capture {
        let text = self.lines.join("\n") + "\n";
        Capture::from_reader(text.as_bytes(), "test.jsonl").unwrap()
    }

    pub(crate) fn run(&self, check: fn(&Session<'_>) -> Vec<Finding>) -> Vec<Finding> {
        let capture = self.capture();
        assert!(
            capture.warnings.iter().all(|w| w.contains("session_end")),
            "{:?}",
            capture.warnings
        );
        let session = Session::analyze(&capture);
        check(&session)
    }
}

pub(crate) fn rq(id: u64, method: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {}}).to_string()
}

pub(crate) fn nt(method: &str) -> String {
    json!({"jsonrpc": "2.0", "method": method}).to_string()
}

pub(crate) fn ok(id: u64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string()
}

pub(crate) fn init_ok(id: u64, version: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": version,
        "capabilities": {}, "serverInfo": {"name": "s", "version": "1"}}})
    .to_string()
}

/// Exactly one finding, of this check, severity and exchange.
pub(crate) fn one(
    findings: &[Finding],
    check: &str,
    severity: Severity,
    ex: Option<u64>,
) -> Finding {
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    assert_eq!(f.check, check, "{f:#?}");
    assert_eq!(f.severity, severity, "{f:#?}");
    assert_eq!(f.exchange, ex, "{f:#?}");
    assert!(!f.message.is_empty() && !f.evidence.is_empty(), "{f:#?}");
    f.clone()
}

pub(crate) fn quiet(findings: &[Finding]) {
    assert!(findings.is_empty(), "{findings:#?}");
}
