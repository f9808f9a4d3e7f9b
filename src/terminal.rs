//! Live terminal output of the proxy: one line per finished exchange, and a line when an
//! event stream opens and when it closes. Fed by the writer thread, so it sees exactly
//! what the capture records (redacted values included).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use crate::capture::model::{Direction, End, Outcome, Request, Response, Upgrade};
use crate::capture::Clock;

/// How much of a request body is kept to find its JSON-RPC method.
const RPC_PEEK: usize = 64 * 1024;

struct Line {
    method: String,
    path: String,
    status: Option<u16>,
    stream: bool,
    body: Vec<u8>,
    sse_events: u64,
}

/// Prints exchanges as they happen.
pub struct Terminal {
    clock: Arc<Clock>,
    open: HashMap<u64, Line>,
}

impl Terminal {
    pub fn new(clock: Arc<Clock>) -> Self {
        Terminal {
            clock,
            open: HashMap::new(),
        }
    }

    fn time(&self, t: u64) -> String {
        let wall = self.clock.wall_at(t);
        wall.get(11..23).unwrap_or(&wall).to_string()
    }

    pub fn request(&mut self, _t: u64, req: &Request) {
        let path = match req.target.find("://") {
            // HTTP/2 targets are absolute: show the path, as for HTTP/1.1.
            Some(i) => {
                let rest = &req.target[i + 3..];
                rest.find('/')
                    .map(|j| &rest[j..])
                    .unwrap_or("/")
                    .to_string()
            }
            None => req.target.clone(),
        };
        self.open.insert(
            req.ex,
            Line {
                method: req.method.clone(),
                path,
                status: None,
                stream: false,
                body: Vec::new(),
                sse_events: 0,
            },
        );
    }

    pub fn response(&mut self, t: u64, resp: &Response, stream: bool) {
        let time = self.time(t);
        let Some(line) = self.open.get_mut(&resp.ex) else {
            return;
        };
        line.status = Some(resp.status);
        line.stream = stream;
        if stream {
            let rpc = rpc_method(&line.body)
                .map(|m| format!(" {m}"))
                .unwrap_or_default();
            print(format_args!(
                "{time} {} {} {}{rpc} event stream opened",
                line.method, line.path, resp.status
            ));
        }
    }

    pub fn body_frame(&mut self, ex: u64, dir: Direction, bytes: &[u8]) {
        if dir != Direction::Request {
            return;
        }
        if let Some(line) = self.open.get_mut(&ex) {
            let room = RPC_PEEK.saturating_sub(line.body.len());
            line.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    pub fn sse_event(&mut self, ex: u64, _data: Option<&str>) {
        if let Some(line) = self.open.get_mut(&ex) {
            line.sse_events += 1;
        }
    }

    pub fn end(&mut self, t: u64, end: &End) {
        let time = self.time(t);
        let Some(line) = self.open.remove(&end.ex) else {
            return;
        };
        let status = end
            .status
            .or(line.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "---".into());
        let rpc = rpc_method(&line.body)
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        let took = duration(end.timings.total_us);
        let outcome = match end.outcome {
            Outcome::Complete => String::new(),
            other => {
                let name = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                match &end.error {
                    Some(e) => format!(" [{name}: {e}]"),
                    None => format!(" [{name}]"),
                }
            }
        };
        if line.stream {
            print(format_args!(
                "{time} {} {} event stream closed after {took}, {} events, {}{outcome}",
                line.method,
                line.path,
                line.sse_events,
                size(end.bytes.response)
            ));
        } else {
            print(format_args!(
                "{time} {} {} {status}{rpc} {took} ↑{} ↓{}{outcome}",
                line.method,
                line.path,
                size(end.bytes.request),
                size(end.bytes.response)
            ));
        }
    }

    pub fn upgrade(&mut self, t: u64, up: &Upgrade) {
        let time = self.time(t);
        print(format_args!(
            "{time} upgrade #{} {} closed after {}: ↑{} ↓{}{}",
            up.ex,
            up.protocol,
            duration(up.duration_us),
            size(up.client_to_upstream),
            size(up.upstream_to_client),
            up.error
                .as_deref()
                .map(|e| format!(" [{e}]"))
                .unwrap_or_default()
        ));
    }
}

fn print(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (piped into `head`) must not stop the proxy.
    let _ = writeln!(out, "{args}");
    let _ = out.flush();
}

/// The JSON-RPC method of a request body (the first one of a batch, with a count).
fn rpc_method(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &value {
        serde_json::Value::Array(items) => {
            let first = items.iter().find_map(|m| m.get("method")?.as_str())?;
            Some(format!("{first} (+{} in batch)", items.len() - 1))
        }
        _ => value.get("method")?.as_str().map(str::to_string),
    }
}

fn duration(us: u64) -> String {
    if us < 1_000 {
        format!("{us}µs")
    } else if us < 10_000_000 {
        format!("{}ms", us / 1_000)
    } else {
        format!("{:.1}s", us as f64 / 1e6)
    }
}

fn size(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes}B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1}KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}
