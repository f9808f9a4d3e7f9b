//! Live terminal output of the proxy: one line per finished exchange, and a line when an
//! event stream opens and when it closes. An observer of the capture writer, so it sees
//! exactly what the capture records (redacted values included).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use crate::capture::headers::{is_event_stream, is_form};
use crate::capture::model::{Body, Direction, End, EventBody, Outcome, Request, Response, Upgrade};
use crate::capture::writer::ExchangeKeys;
use crate::capture::{Clock, Observer, Observers, SessionStart};

/// How much of a request body is kept to find its JSON-RPC method.
const RPC_PEEK: usize = 64 * 1024;

struct Line {
    /// `[upstream] ` when the proxy has several routes, else empty.
    route: String,
    method: String,
    path: String,
    status: Option<u16>,
    stream: bool,
    body: Vec<u8>,
    sse_events: u64,
    authenticated: bool,
    response_type: Option<String>,
    /// A form POST: what a token request is.
    form_post: bool,
    /// The client: its address and User-Agent.
    client: String,
    /// The access token in the response (as recorded: a `<redacted fp=…>` placeholder).
    issued: Option<String>,
    /// The request names a 2026-07-28 protocol version (`MCP-Protocol-Version`).
    modern: bool,
    /// The identities it carries, as the flow rules key them (`bearer …`, `session …`,
    /// `code …`).
    keys: Vec<String>,
    /// A browser's authorization request (its query names a `response_type`).
    authorize: bool,
}

/// Client flows as the live lines see them: the same evidence `explain` groups by (a
/// credential or session shared, else the client's address and User-Agent within a minute,
/// an authorization request joining the latest flow not yet authorized), decided as each
/// exchange ends. `explain`'s numbering, made with the whole capture in view, is the one to
/// trust when the two differ.
///
/// A proxy runs for days: what it remembers of a flow is dropped ten minutes after the flow's
/// last exchange, once it holds [`LIVE_KEYS`] identities.
#[derive(Default)]
struct LiveFlows {
    by_key: HashMap<String, usize>,
    /// When each flow's last exchange ended.
    last_seen: HashMap<usize, u64>,
    /// Each client's latest flow, and when its last exchange ended.
    by_client: HashMap<String, (usize, u64)>,
    /// Flows with an identity, and the latest flow without one with when it was last seen.
    anchored: std::collections::HashSet<usize>,
    unanchored: Option<(usize, u64)>,
    count: usize,
}

/// How many identities the live lines keep before forgetting flows quiet for
/// [`LIVE_MEMORY_US`].
const LIVE_KEYS: usize = 100_000;
const LIVE_MEMORY_US: u64 = 600_000_000;

impl LiveFlows {
    /// Forgets the flows whose last exchange ended before `t`.
    fn forget_before(&mut self, t: u64) {
        self.last_seen.retain(|_, last| *last >= t);
        let live = &self.last_seen;
        self.by_key.retain(|_, flow| live.contains_key(flow));
        self.by_client.retain(|_, (_, last)| *last >= t);
        self.anchored.retain(|flow| live.contains_key(flow));
    }

    /// The flow of an exchange that ended at `t`.
    fn flow_of(&mut self, keys: &[String], client: &str, authorize: bool, t: u64) -> usize {
        let near = |(flow, last): (usize, u64), within: u64| {
            (t.saturating_sub(last) <= within).then_some(flow)
        };
        let recent = self
            .by_client
            .get(client)
            .and_then(|&seen| near(seen, crate::mcp::flows::NEARBY_US));
        let known = keys.iter().find_map(|k| self.by_key.get(k).copied());
        let flow = known
            .or_else(|| {
                // An identity not seen before starts a flow, unless the client's discovery
                // leads into it.
                if keys.is_empty() {
                    recent
                } else {
                    recent.filter(|f| !self.anchored.contains(f))
                }
            })
            .or_else(|| {
                authorize
                    .then(|| self.unanchored.and_then(|seen| near(seen, 600_000_000)))
                    .flatten()
            })
            .unwrap_or_else(|| {
                self.count += 1;
                self.count
            });
        for k in keys {
            self.by_key.entry(k.clone()).or_insert(flow);
        }
        self.by_client.insert(client.to_string(), (flow, t));
        self.last_seen.insert(flow, t);
        if self.by_key.len() > LIVE_KEYS || self.by_client.len() > LIVE_KEYS {
            self.forget_before(t.saturating_sub(LIVE_MEMORY_US));
        }
        if keys.is_empty() {
            if !self.anchored.contains(&flow) {
                self.unanchored = Some((flow, t));
            }
        } else {
            self.anchored.insert(flow);
            if self.unanchored.is_some_and(|(f, _)| f == flow) {
                self.unanchored = None;
            }
        }
        flow
    }
}

/// What the live lines have said of the protocol era so far.
#[derive(Default)]
enum EraSeen {
    #[default]
    Unknown,
    /// A modern request was refused (not by the authorization gate) at this exchange.
    ProbeRefused {
        ex: u64,
        status: u16,
    },
    Announced,
}

/// A token was issued and no request has presented it yet.
struct Waiting {
    since_t: u64,
    /// `POST /token #6`.
    by: String,
    /// The exchange that issued it.
    ex: u64,
    /// The client that asked for it: its address and User-Agent.
    client: String,
    notified: bool,
}

/// Prints exchanges as they happen, and a notice when the client goes quiet after a token.
pub struct Terminal {
    clock: Arc<Clock>,
    open: HashMap<u64, Line, ExchangeKeys>,
    /// Print a line per exchange (off with --quiet; the silence notice is printed regardless).
    lines: bool,
    silence_after_us: Option<u64>,
    capture: std::path::PathBuf,
    /// Each token issued and not yet presented, by its recorded value: with several clients,
    /// one that presents its token does not end the wait for another's.
    waiting: HashMap<String, Waiting>,
    /// Each open connection's client address.
    peers: HashMap<u64, String, ExchangeKeys>,
    /// The upstream of each route, named on every line when there are several.
    routes: Vec<String>,
    /// Finds the token request's grant in a body; built once, as building it costs more than
    /// searching a small body.
    code_grant: memchr::memmem::Finder<'static>,
    era: EraSeen,
    flows: LiveFlows,
}

impl Terminal {
    pub fn new(
        clock: Arc<Clock>,
        lines: bool,
        silence_after: Option<std::time::Duration>,
        capture: std::path::PathBuf,
    ) -> Self {
        Terminal {
            clock,
            open: HashMap::default(),
            lines,
            silence_after_us: silence_after.map(|d| d.as_micros() as u64),
            capture,
            waiting: HashMap::new(),
            peers: HashMap::default(),
            routes: Vec::new(),
            code_grant: memchr::memmem::Finder::new(b"grant_type=authorization_code"),
            era: EraSeen::default(),
            flows: LiveFlows::default(),
        }
    }

    /// With several routes, each line names the upstream its exchange went to (`routes[i]`
    /// for route `i`, e.g. `127.0.0.1:9000`).
    pub fn with_routes(mut self, routes: Vec<String>) -> Self {
        self.routes = if routes.len() > 1 { routes } else { Vec::new() };
        self
    }

    /// Called about once a second: the silence watchdog. The notice reads the capture back
    /// to add the explanation's errors, on a thread of its own: the writer waits for no one.
    pub fn tick(&mut self, now: u64) {
        let Some(limit) = self.silence_after_us else {
            return;
        };
        for w in self.waiting.values_mut() {
            if w.notified || now.saturating_sub(w.since_t) < limit {
                continue;
            }
            w.notified = true;
            let quiet = (now - w.since_t) as f64 / 1e6;
            let (by, ex, client) = (w.by.clone(), w.ex, w.client.clone());
            let capture = self.capture.clone();
            let notice = move || {
                let (flow, summary) = match crate::capture::reader::Capture::open(&capture) {
                    Ok(cap) => {
                        let report = crate::explain::explain(&cap, &capture.display().to_string());
                        // With several clients, the flow the token belongs to.
                        let flow = report.flows.iter().find(|f| f.exchange_ids.contains(&ex));
                        let findings = flow.map_or(&report.findings, |f| &f.explanation.findings);
                        let errors: Vec<String> = findings
                            .iter()
                            .filter(|f| f.severity == crate::mcp::checks::Severity::Error)
                            // The notice itself says what that check would.
                            .filter(|f| f.check != "post-token-silence")
                            .map(|f| format!("  {}: {}", f.check, f.message))
                            .collect();
                        let summary = if errors.is_empty() {
                            String::new()
                        } else {
                            format!("\n{}", errors.join("\n"))
                        };
                        (flow.map(|f| format!(" (flow {})", f.number)), summary)
                    }
                    Err(e) => (None, format!("\n  (could not read the capture back: {e})")),
                };
                let flow = flow.unwrap_or_default();
                eprintln!(
                    "mcptap: NOTICE: a token was issued by {by} to {client}{flow} {quiet:.0} s ago and no request has presented it since. The client went silent after the token exchange.{summary}\nmcptap: run `mcptap explain {}` for the whole story.",
                    capture.display()
                );
            };
            if std::thread::Builder::new()
                .name("mcptap-notice".into())
                .spawn(notice)
                .is_err()
            {
                eprintln!(
                    "mcptap: NOTICE: a token was issued by {} {quiet:.0} s ago and no request has presented it since.",
                    w.by
                );
            }
        }
    }

    fn time(&self, t: u64) -> String {
        let wall = self.clock.wall_at(t);
        wall.get(11..23).unwrap_or(&wall).to_string()
    }

    fn request(&mut self, req: &Request) {
        let bearer = req.headers.iter().find_map(|(n, v)| {
            if !n.eq_ignore_ascii_case("authorization") {
                return None;
            }
            let (scheme, credential) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| credential.trim())
                .filter(|c| !c.is_empty())
        });
        let authenticated = bearer.is_some();
        if let Some(token) = bearer {
            self.waiting.remove(token);
        }
        let mut keys: Vec<String> = bearer.map(|b| format!("bearer {b}")).into_iter().collect();
        keys.extend(
            req.headers
                .get("mcp-session-id")
                .map(|s| format!("session {s}")),
        );
        let authorize = req.method == "GET" && req.target.contains("response_type=");
        let client = format!(
            "{} · {}",
            self.peers.get(&req.conn).map_or("?", String::as_str),
            req.headers.get("user-agent").unwrap_or("no User-Agent")
        );
        // With --quiet an exchange matters here only as the token request the watchdog waits
        // after, a form POST: the JSON-RPC traffic is not followed at all.
        let form_post =
            req.method == "POST" && req.headers.get("content-type").is_some_and(is_form);
        if !self.lines && !form_post {
            return;
        }
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
        // Long queries (an authorize URL) are cut: the capture has them whole.
        let path = if path.chars().count() > 72 {
            format!("{}…", path.chars().take(71).collect::<String>())
        } else {
            path
        };
        let route = req
            .route
            .and_then(|r| self.routes.get(r as usize))
            .map(|upstream| format!("[{upstream}] "))
            .unwrap_or_default();
        self.open.insert(
            req.ex,
            Line {
                route,
                method: req.method.clone(),
                path,
                status: None,
                stream: false,
                body: Vec::new(),
                sse_events: 0,
                authenticated,
                response_type: None,
                form_post,
                client,
                issued: None,
                modern: req
                    .headers
                    .get("mcp-protocol-version")
                    .is_some_and(|v| crate::mcp::era::MODERN_VERSIONS.contains(&v.trim())),
                keys,
                authorize,
            },
        );
    }

    fn response(&mut self, t: u64, resp: &Response) {
        let stream = resp
            .headers
            .get("content-type")
            .is_some_and(is_event_stream);
        let time = if stream && self.lines {
            self.time(t)
        } else {
            String::new()
        };
        let Some(line) = self.open.get_mut(&resp.ex) else {
            return;
        };
        line.status = Some(resp.status);
        line.stream = stream;
        if let Some(id) = resp.headers.get("mcp-session-id") {
            line.keys.push(format!("session {id}"));
        }
        if let Some(code) = resp
            .headers
            .get("location")
            .and_then(|l| crate::mcp::flows::query_value(l, "code"))
        {
            line.keys.push(format!("code {code}"));
        }
        line.response_type = resp
            .headers
            .get("content-type")
            .map(crate::capture::reader::media_type);
        if stream && self.lines {
            let rpc = rpc_method(&line.body)
                .map(|m| format!(" {m}"))
                .unwrap_or_default();
            print(format_args!(
                "{time} {}{} {} {}{rpc} event stream opened",
                line.route, line.method, line.path, resp.status
            ));
        }
    }

    /// A request body as recorded: its JSON-RPC method and grant are looked for in it. The
    /// response of a token request: the access token it issues.
    fn body(&mut self, body: &Body) {
        if body.dir != Direction::Request {
            if let (Some(line), Some(text)) = (self.open.get_mut(&body.ex), &body.text) {
                if line.form_post && self.code_grant.find(&line.body).is_some() {
                    line.issued = serde_json::from_str::<serde_json::Value>(text)
                        .ok()
                        .and_then(|v| v.get("access_token")?.as_str().map(String::from));
                }
            }
            return;
        }
        if let (Some(line), Some(text)) = (self.open.get_mut(&body.ex), &body.text) {
            let room = RPC_PEEK.saturating_sub(line.body.len());
            let bytes = text.as_bytes();
            line.body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }

    fn end(&mut self, t: u64, end: &End) {
        let Some(line) = self.open.remove(&end.ex) else {
            return;
        };
        let stage = || {
            crate::mcp::session::stage_hint(
                &line.method,
                line.path.split('?').next().unwrap_or(""),
                &line.body,
                line.form_post,
                end.status.or(line.status),
                line.authenticated,
                line.response_type.as_deref(),
            )
        };
        // The cheap tests first: with --quiet this is all an exchange costs here.
        let token_issued = end.status.is_some_and(|s| (200..300).contains(&s))
            && self.code_grant.find(&line.body).is_some()
            && stage() == Some(crate::mcp::session::StageId::Token);
        if let Some(token) = line.issued.clone().filter(|_| token_issued) {
            self.waiting.insert(
                token,
                Waiting {
                    since_t: t,
                    by: format!("{} {} #{}", line.method, line.path, end.ex),
                    ex: end.ex,
                    client: line.client.clone(),
                    notified: false,
                },
            );
        }
        if !self.lines {
            return;
        }
        let time = self.time(t);
        let status = end
            .status
            .or(line.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|| "---".into());
        let method = rpc_method(&line.body);
        let rpc = method
            .as_deref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        let stage = stage()
            .map(|s| format!(" [{}]", s.id()))
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
        let era = self.era_seen(&line, end, method.as_deref());
        // The flow, once a second client shows up.
        let mut keys = line.keys.clone();
        if line.form_post {
            let form = String::from_utf8_lossy(&line.body);
            for (field, kind) in [("code", "code"), ("refresh_token", "refresh")] {
                if let Some(v) = crate::mcp::session::form_value(&form, field) {
                    keys.push(format!("{kind} {v}"));
                }
            }
        }
        keys.extend(line.issued.as_ref().map(|token| format!("bearer {token}")));
        let flow = self.flows.flow_of(&keys, &line.client, line.authorize, t);
        let era = if self.flows.count > 1 {
            format!("{era} · flow {flow}")
        } else {
            era
        };
        if line.stream {
            print(format_args!(
                "{time} {}{} {} event stream closed after {took}, {} events, {}{outcome}{stage}{era}",
                line.route,
                line.method,
                line.path,
                line.sse_events,
                size(end.bytes.response)
            ));
        } else {
            print(format_args!(
                "{time} {}{} {} {status}{rpc} {took} ↑{} ↓{}{outcome}{stage}{era}",
                line.route,
                line.method,
                line.path,
                size(end.bytes.request),
                size(end.bytes.response)
            ));
        }
    }

    /// The protocol era, said once on the line of the exchange that settles it: a modern
    /// request answered (2026-07-28), or an initialize answered (2025, after a refused probe
    /// or not). The full negotiation analysis is `explain`'s.
    fn era_seen(&mut self, line: &Line, end: &End, method: Option<&str>) -> String {
        if matches!(self.era, EraSeen::Announced) {
            return String::new();
        }
        let Some(status) = end.status.or(line.status) else {
            return String::new();
        };
        let Some(method) = method else {
            return String::new();
        };
        if matches!(status, 401 | 403) {
            return String::new();
        }
        let ok = (200..300).contains(&status);
        let said = match (line.modern, ok, &self.era) {
            (true, true, _) => " · era 2026-07-28".to_string(),
            (true, false, EraSeen::Unknown) => {
                self.era = EraSeen::ProbeRefused { ex: end.ex, status };
                return String::new();
            }
            (
                false,
                true,
                EraSeen::ProbeRefused {
                    ex,
                    status: refused,
                },
            ) if method == "initialize" => {
                format!(" · era 2025: fell back after the 2026-07-28 probe #{ex} got {refused}")
            }
            (false, true, EraSeen::Unknown) if method == "initialize" => " · era 2025".to_string(),
            _ => return String::new(),
        };
        self.era = EraSeen::Announced;
        said
    }

    fn tls_error(&mut self, t: u64, e: &crate::capture::model::TlsError) {
        if !self.lines {
            return;
        }
        let time = self.time(t);
        let sni = e
            .sni
            .as_deref()
            .map(|s| format!(" for {s}"))
            .unwrap_or_default();
        print(format_args!(
            "{time} TLS handshake from {}{sni} failed: {}",
            e.peer, e.reason
        ));
    }

    fn upgrade(&mut self, t: u64, up: &Upgrade) {
        if !self.lines {
            return;
        }
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

/// The terminal as the proxy's observer: a line per exchange unless `lines` is off, and the
/// notice when a token was issued and no Bearer request followed within `silence_after`.
pub fn observers(lines: bool, silence_after: Option<std::time::Duration>) -> Observers {
    Box::new(move |start: &SessionStart<'_>| {
        // With several routes each line names its upstream by host and port.
        let routes = start
            .session
            .routes
            .iter()
            .map(|route| match route.upstream.parse::<http::Uri>() {
                Ok(uri) => uri
                    .authority()
                    .map_or_else(|| route.upstream.clone(), |a| a.to_string()),
                Err(_) => route.upstream.clone(),
            })
            .collect();
        let terminal = Terminal::new(
            start.clock.clone(),
            lines,
            silence_after,
            start.capture.to_path_buf(),
        )
        .with_routes(routes);
        vec![Box::new(terminal) as Box<dyn Observer>]
    })
}

impl Observer for Terminal {
    fn event(&mut self, t: u64, event: &EventBody) {
        match event {
            EventBody::Request(req) => self.request(req),
            EventBody::Response(resp) => self.response(t, resp),
            EventBody::Body(body) => self.body(body),
            EventBody::Sse(sse) => {
                if let Some(line) = self.open.get_mut(&sse.ex) {
                    line.sse_events += 1;
                }
            }
            EventBody::End(end) => self.end(t, end),
            EventBody::Upgrade(up) => self.upgrade(t, up),
            EventBody::TlsError(e) => self.tls_error(t, e),
            EventBody::ConnOpen(open) => {
                self.peers.insert(open.conn, open.peer_ip());
            }
            EventBody::ConnClose(close) => {
                self.peers.remove(&close.conn);
            }
            _ => {}
        }
    }

    fn tick(&mut self, t: u64) {
        Terminal::tick(self, t);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::model::Headers;

    fn request(ex: u64, method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            ex,
            conn: 1,
            method: method.into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: Headers::from_iter(headers.iter().copied()),
            upstream: String::new(),
            route: None,
        }
    }

    fn request_body(ex: u64, bytes: &[u8]) -> EventBody {
        body(ex, Direction::Request, bytes)
    }

    /// A token response issuing `token` (as recorded: a placeholder).
    fn issued(ex: u64, token: &str) -> EventBody {
        body(
            ex,
            Direction::Response,
            format!(r#"{{"access_token":"{token}","token_type":"Bearer"}}"#).as_bytes(),
        )
    }

    fn body(ex: u64, dir: Direction, bytes: &[u8]) -> EventBody {
        EventBody::Body(Body {
            ex,
            dir,
            seq: 0,
            text: Some(String::from_utf8(bytes.to_vec()).unwrap()),
            b64: None,
            len: bytes.len() as u64,
            frames: vec![(1, bytes.len() as u64)],
            truncated: false,
            encoding: None,
            omitted: None,
        })
    }

    fn end(ex: u64, status: u16) -> End {
        serde_json::from_value(serde_json::json!({
            "ex": ex, "outcome": "complete", "status": status,
            "timings": {"total_us": 1, "reused_connection": false}, "bytes": {"request": 0, "response": 0},
        }))
        .unwrap()
    }

    /// After a token is issued the watchdog waits for a request presenting that token, its
    /// scheme in any letter case; other credentials, and another client's token, do not end
    /// the wait.
    #[test]
    fn only_the_issued_token_ends_the_wait_after_it() {
        let mut term = Terminal::new(Arc::new(Clock::new()), false, None, "c.jsonl".into());
        let token = request(
            1,
            "POST",
            "/token",
            &[("content-type", "application/x-www-form-urlencoded")],
        );
        term.event(1, &EventBody::Request(token));
        term.event(
            1,
            &request_body(1, b"grant_type=authorization_code&code=abc"),
        );
        term.event(2, &issued(1, "<redacted fp=aaaa1111>"));
        term.event(2, &EventBody::End(end(1, 200)));
        assert_eq!(term.waiting.len(), 1);
        for (ex, value) in [
            (2, "Basic dXNlcg=="),
            (3, "Bearer"),
            (4, "Bearerxyz"),
            (5, "Bearer <redacted fp=bbbb2222>"),
        ] {
            term.event(
                3,
                &EventBody::Request(request(ex, "POST", "/mcp", &[("authorization", value)])),
            );
            assert_eq!(term.waiting.len(), 1, "{value}");
        }
        term.event(
            4,
            &EventBody::Request(request(
                6,
                "POST",
                "/mcp",
                &[("Authorization", "BEARER <redacted fp=aaaa1111>")],
            )),
        );
        assert!(term.waiting.is_empty());
    }

    /// A token request is a form POST, as `explain` has it (with --quiet nothing else is
    /// followed); a JSON body that merely quotes a grant is not one, whatever its path.
    #[test]
    fn the_watchdog_waits_after_a_form_post_that_issued_a_code_grant() {
        let grant: &[u8] = b"grant_type=authorization_code&code=abc";
        for lines in [false, true] {
            for (content_type, waits) in [
                (
                    Some("application/x-www-form-urlencoded; charset=utf-8"),
                    true,
                ),
                (Some("Application/X-WWW-Form-Urlencoded"), true),
                (None, false),
                (Some("application/json"), false),
                (Some("Application/JSON; charset=utf-8"), false),
                (Some("application/vnd.example+json"), false),
            ] {
                let mut term = Terminal::new(Arc::new(Clock::new()), lines, None, "c.jsonl".into());
                let headers: Vec<(&str, &str)> = content_type
                    .map(|ct| ("content-type", ct))
                    .into_iter()
                    .collect();
                term.event(
                    1,
                    &EventBody::Request(request(1, "POST", "/token", &headers)),
                );
                term.event(1, &request_body(1, grant));
                term.event(2, &issued(1, "<redacted fp=aaaa1111>"));
                term.event(2, &EventBody::End(end(1, 200)));
                assert_eq!(
                    !term.waiting.is_empty(),
                    waits,
                    "{content_type:?}, lines {lines}"
                );
            }
            let mut term = Terminal::new(Arc::new(Clock::new()), lines, None, "c.jsonl".into());
            term.event(1, &EventBody::Request(request(1, "GET", "/token", &[])));
            term.event(1, &request_body(1, grant));
            term.event(2, &issued(1, "<redacted fp=aaaa1111>"));
            term.event(2, &EventBody::End(end(1, 200)));
            assert!(term.waiting.is_empty(), "a GET, lines {lines}");
        }
    }

    #[test]
    fn live_flows_follow_identities_and_forget_quiet_flows() {
        const S: u64 = 1_000_000;
        let mut flows = LiveFlows::default();
        let a = "10.0.0.1 · connector/1";
        let b = "10.0.0.2 · connector/1";
        // Discovery without identity, then the token: one flow.
        assert_eq!(flows.flow_of(&[], a, false, 0), 1);
        assert_eq!(flows.flow_of(&["bearer t1".into()], a, false, S), 1);
        // Another client, another flow; its token keeps it apart on the same address later.
        assert_eq!(flows.flow_of(&["bearer t2".into()], b, false, 2 * S), 2);
        assert_eq!(flows.flow_of(&["bearer t2".into()], a, false, 3 * S), 2);
        // A new identity on a client whose flow already has one is a new flow.
        assert_eq!(flows.flow_of(&["bearer t3".into()], a, false, 4 * S), 3);
        // A day of sessions keeps memory bounded.
        for n in 0..(LIVE_KEYS as u64 + 10) {
            flows.flow_of(
                &[format!("session s{n}")],
                "10.0.0.9 · bot",
                false,
                5 * S + n * S,
            );
        }
        assert!(flows.by_key.len() <= LIVE_KEYS, "{}", flows.by_key.len());
        assert!(flows.last_seen.len() <= LIVE_KEYS);
    }
}
