//! Transport checks (Streamable HTTP, SSE, sessions, edges).
//!
//! Each check reads the analyzed [`Session`] and reports where the capture shows a rule of the
//! MCP transport (or of HTTP, TLS and CORS as connectors meet them) broken. Every check stays
//! quiet when its rule holds or does not apply, and none may panic on any capture.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::{finding, Check, Finding, Severity};
use crate::jsonrpc::{self, show_id, Message};
use crate::session::{Call, Role, Session, Step};
use mcptap_capture::model::{Direction, Outcome};
use mcptap_capture::reader::{media_type, Exchange};

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;

/// How long connectors wait for the answer to `initialize`.
const INIT_LIMIT: u64 = 10 * SEC;
/// Events closer together than this arrived in one burst.
const BURST: u64 = 50 * MS;
/// A stream shorter than this cannot show buffering.
const BUFFER_MIN_STREAM: u64 = SEC;
/// A POST stream silent for longer than this after its headers looks held back.
const FIRST_EVENT_LIMIT: u64 = 10 * SEC;
/// How long after a 2xx without a body the answer may still come on another stream.
const LATE_ANSWER: u64 = 10 * SEC;

const INIT_LATENCY: &str = "init-latency";
const MCP_URL_REDIRECT: &str = "mcp-url-redirect";
const EDGE_BLOCK: &str = "edge-block";
const ACCEPT_406: &str = "accept-406";
const RESPONSE_CONTENT_TYPE: &str = "response-content-type";
const SSE_BUFFERING: &str = "sse-buffering";
const SSE_RESPONSE_DELIVERY: &str = "sse-response-delivery";
const SESSION_HEADER: &str = "session-header";
const SESSION_LOST: &str = "session-lost";
const PROTOCOL_VERSION_HEADER: &str = "protocol-version-header";
const GET_405: &str = "get-405";
const TLS_HANDSHAKE_FAILURES: &str = "tls-handshake-failures";
const CORS: &str = "cors";
const TRANSPORT_MISMATCH: &str = "transport-mismatch";

const SPEC_INIT_LATENCY: &str =
    "MCP 2025-06-18 Lifecycle §Timeouts (requests time out; connectors give initialize about 10 s)";
const SPEC_MCP_URL_REDIRECT: &str =
    "MCP 2025-06-18 Transports §Streamable HTTP (a single MCP endpoint); RFC 9110 §15.4 (3xx)";
const SPEC_EDGE_BLOCK: &str =
    "MCP 2025-06-18 Transports §Streamable HTTP (the endpoint answers the client's POST/GET); RFC 9110 §15.5.4, RFC 6585 §4";
const SPEC_ACCEPT_406: &str =
    "MCP 2025-06-18 Transports §Sending Messages to the Server, item 2 (Accept lists application/json and text/event-stream)";
const SPEC_RESPONSE_CONTENT_TYPE: &str =
    "MCP 2025-06-18 Transports §Sending Messages to the Server, items 4-5 (202 for notifications; JSON or SSE for requests)";
const SPEC_SSE_BUFFERING: &str =
    "MCP 2025-06-18 Transports §Sending Messages to the Server, item 6 (SSE stream); WHATWG HTML §9.2 Server-sent events";
const SPEC_SSE_RESPONSE_DELIVERY: &str =
    "MCP 2025-06-18 Transports §Sending Messages to the Server, item 6 (the stream should include the response before it closes)";
const SPEC_SESSION_HEADER: &str = "MCP 2025-06-18 Transports §Session Management, items 2-4";
const SPEC_PROTOCOL_VERSION_HEADER: &str = "MCP 2025-06-18 Transports §Protocol Version Header";
const SPEC_GET_405: &str =
    "MCP 2025-06-18 Transports §Listening for Messages from the Server, item 3 (text/event-stream or 405)";
const SPEC_TLS: &str =
    "MCP 2025-06-18 Authorization §Communication Security (OAuth 2.1 §1.5, HTTPS); RFC 8446 §6.2";
const SPEC_TRANSPORT_MISMATCH: &str = "MCP 2025-03-26 Transports §Streamable HTTP, §Backwards Compatibility (the HTTP+SSE transport of 2024-11-05)";
const SPEC_CORS: &str =
    "Fetch Standard §3.2 CORS protocol; MCP 2025-06-18 Transports §Security Warning (Origin)";

/// The transport checks, in report order.
pub fn checks() -> Vec<Check> {
    vec![
        Check {
            id: INIT_LATENCY,
            spec: SPEC_INIT_LATENCY,
            run: init_latency,
        },
        Check {
            id: MCP_URL_REDIRECT,
            spec: SPEC_MCP_URL_REDIRECT,
            run: mcp_url_redirect,
        },
        Check {
            id: EDGE_BLOCK,
            spec: SPEC_EDGE_BLOCK,
            run: edge_block,
        },
        Check {
            id: ACCEPT_406,
            spec: SPEC_ACCEPT_406,
            run: accept_406,
        },
        Check {
            id: RESPONSE_CONTENT_TYPE,
            spec: SPEC_RESPONSE_CONTENT_TYPE,
            run: response_content_type,
        },
        Check {
            id: SSE_BUFFERING,
            spec: SPEC_SSE_BUFFERING,
            run: sse_buffering,
        },
        Check {
            id: SSE_RESPONSE_DELIVERY,
            spec: SPEC_SSE_RESPONSE_DELIVERY,
            run: sse_response_delivery,
        },
        Check {
            id: SESSION_HEADER,
            spec: SPEC_SESSION_HEADER,
            run: session_header,
        },
        Check {
            id: SESSION_LOST,
            spec: SPEC_SESSION_HEADER,
            run: session_lost,
        },
        Check {
            id: TRANSPORT_MISMATCH,
            spec: SPEC_TRANSPORT_MISMATCH,
            run: transport_mismatch,
        },
        Check {
            id: PROTOCOL_VERSION_HEADER,
            spec: SPEC_PROTOCOL_VERSION_HEADER,
            run: protocol_version_header,
        },
        Check {
            id: GET_405,
            spec: SPEC_GET_405,
            run: get_405,
        },
        Check {
            id: TLS_HANDSHAKE_FAILURES,
            spec: SPEC_TLS,
            run: tls_handshake_failures,
        },
        Check {
            id: CORS,
            spec: SPEC_CORS,
            run: cors,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// `POST /mcp #12`.
pub(crate) fn label(x: &Exchange) -> String {
    format!("{} {} #{}", x.method(), x.path(), x.ex)
}

/// `POST /mcp #12 (tools/list)`: the label with what the request carried.
pub(crate) fn label_with(s: &Step<'_>) -> String {
    let what = carried(s);
    if what.is_empty() {
        label(s.x)
    } else {
        format!("{} ({what})", label(s.x))
    }
}

/// [`carried`], for the other checks.
pub(crate) fn carried_of(s: &Step<'_>) -> String {
    carried(s)
}

/// The JSON-RPC methods a request carried, for messages: `tools/call`, `a, b`.
fn carried(s: &Step<'_>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for m in &s.sent {
        let name = match m {
            Message::Request { method, .. } | Message::Notification { method, .. } => method,
            Message::Result { .. } | Message::Error { .. } => "a JSON-RPC response",
            Message::Invalid { .. } => continue,
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.len() > 3 {
        let more = names.len() - 3;
        names.truncate(3);
        return format!("{} and {more} more", names.join(", "));
    }
    names.join(", ")
}

/// A duration in words: `420 ms`, `12.3 s`.
fn dur(us: u64) -> String {
    if us < SEC {
        format!("{} ms", us / MS)
    } else {
        format!("{:.1} s", us as f64 / SEC as f64)
    }
}

/// An offset in seconds with millisecond precision: `+1.203 s`.
fn offset(us: u64) -> String {
    format!("+{:.3} s", us as f64 / SEC as f64)
}

fn is_2xx(x: &Exchange) -> bool {
    x.status().is_some_and(|c| (200..300).contains(&c))
}

/// The body decodes as JSON-RPC (at least one valid message).
fn has_jsonrpc_body(x: &Exchange) -> bool {
    !x.request_body.bytes.is_empty()
        && jsonrpc::decode_bytes(&x.request_body.bytes)
            .is_some_and(|m| m.iter().any(|m| !matches!(m, Message::Invalid { .. })))
}

/// A request to the MCP endpoint: its role says so, or it is a POST carrying JSON-RPC.
fn is_mcp_request(s: &Step<'_>) -> bool {
    matches!(s.role, Role::Mcp | Role::LegacyMessages)
        || (s.x.method() == "POST" && has_jsonrpc_body(s.x))
}

/// The request carries an `initialize` request.
fn sends_initialize(s: &Step<'_>) -> bool {
    s.sent
        .iter()
        .any(|m| m.is_request() && m.method() == Some("initialize"))
}

/// The `host[:port]` of an absolute URL.
fn host_of(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())
}

/// A header value for evidence, `(none)` when absent.
fn shown(v: Option<&str>) -> String {
    v.map(str::to_string)
        .unwrap_or_else(|| "(none)".to_string())
}

/// The comma-separated tokens of every value of a header list, trimmed and lowercased.
fn tokens<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A JSON-RPC id as the key `jsonrpc` uses (`n:1`, `s:a`).
fn id_key(id: &Value) -> Option<String> {
    match id {
        Value::String(s) => Some(format!("s:{s}")),
        Value::Number(n) => Some(format!("n:{n}")),
        _ => None,
    }
}

/// The answer to a call: `(exchange, time, message)`. The one on the call's own exchange wins;
/// one found elsewhere (a GET stream, a legacy stream) counts only if it is not contested (see
/// [`Call::answer_contested`]).
fn answer_of(call: &Call) -> Option<(u64, u64, &Message)> {
    let (ex, t, m) = call.answer.as_ref()?;
    (*ex == call.ex || !call.answer_contested).then_some((*ex, *t, m))
}

/// The ids of requests the client cancelled with `notifications/cancelled`.
fn cancelled_ids(session: &Session<'_>) -> HashSet<String> {
    session
        .steps
        .iter()
        .flat_map(|s| s.sent.iter())
        .filter_map(|m| match m {
            Message::Notification {
                method,
                params: Some(p),
            } if method == "notifications/cancelled" => p.get("requestId").and_then(id_key),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// init-latency
// ---------------------------------------------------------------------------------------

/// MCP Lifecycle §Timeouts: connectors wait about 10 s for the first authenticated initialize.
fn init_latency(session: &Session<'_>) -> Vec<Finding> {
    let oauth = session.uses_oauth();
    let Some((call, step)) = session
        .calls
        .iter()
        .filter(|c| c.method == "initialize")
        .filter_map(|c| session.step(c.ex).map(|s| (c, s)))
        .find(|(_, s)| !oauth || s.bearer.is_some())
    else {
        return Vec::new();
    };
    let x = step.x;
    let what = if oauth {
        "The first authenticated initialize"
    } else {
        "The first initialize"
    };
    // The JSON-RPC answer, or an HTTP error status that answered it.
    let answered =
        answer_of(call)
            .map(|(ex, t, _)| (ex, t))
            .or_else(|| match (x.status(), x.response_t) {
                (Some(c), Some(t)) if !(200..300).contains(&c) => Some((x.ex, t)),
                _ => None,
            });
    match answered {
        Some((by, t)) => {
            let took = t.saturating_sub(call.t);
            if took <= INIT_LIMIT {
                return Vec::new();
            }
            let mut evidence = vec![format!("took: {}", dur(took))];
            if by != x.ex {
                evidence.push(format!("answered on exchange #{by}"));
            }
            if let Some(c) = x.status() {
                evidence.push(format!("status: {c}"));
            }
            vec![finding(
                INIT_LATENCY,
                SPEC_INIT_LATENCY,
                Severity::Warning,
                Some(x.ex),
                format!(
                    "{what} ({}) took {} to answer; connectors give up after about 10 s. \
                     Answer initialize at once (no cold start or upstream calls before it).",
                    label(x),
                    dur(took)
                ),
                evidence,
            )]
        }
        None => {
            let (waited, how) = match &x.end {
                Some((t, end)) if end.outcome != Outcome::ProxyShutdown => (
                    t.saturating_sub(call.t),
                    format!(
                        "the exchange ended ({}) without it",
                        outcome_words(end.outcome)
                    ),
                ),
                _ => (
                    session.capture.end_t().saturating_sub(call.t),
                    "the capture ended without it".to_string(),
                ),
            };
            let ended = x
                .end
                .as_ref()
                .is_some_and(|(_, e)| e.outcome != Outcome::ProxyShutdown);
            if !ended && waited < INIT_LIMIT {
                // Still pending when the recording stopped: too early to tell.
                return Vec::new();
            }
            vec![finding(
                INIT_LATENCY,
                SPEC_INIT_LATENCY,
                Severity::Warning,
                Some(x.ex),
                format!(
                    "{what} ({}) was never answered: {how} after {}. \
                     The server must answer initialize within about 10 s.",
                    label(x),
                    dur(waited)
                ),
                vec![
                    format!("waited: {}", dur(waited)),
                    format!(
                        "status: {}",
                        shown(x.status().map(|c| c.to_string()).as_deref())
                    ),
                ],
            )]
        }
    }
}

fn outcome_words(o: Outcome) -> &'static str {
    match o {
        Outcome::Complete => "the server closed it",
        Outcome::ClientAborted => "the client closed it",
        Outcome::UpstreamAborted => "the upstream broke it off",
        Outcome::UpstreamError => "the upstream could not be reached",
        Outcome::Timeout => "the upstream timed out",
        Outcome::ProxyShutdown => "the proxy shut down",
    }
}

// ---------------------------------------------------------------------------------------
// mcp-url-redirect
// ---------------------------------------------------------------------------------------

/// RFC 9110 §15.4: connectors do not follow redirects for an MCP POST, and drop Authorization across origins.
fn mcp_url_redirect(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps.iter().filter(|s| is_mcp_request(s)) {
        let x = s.x;
        let Some(status @ (301 | 302 | 303 | 307 | 308)) = x.status() else {
            continue;
        };
        let location = x.response_header("location");
        let target = location.map(crate::session::url_path);
        let hint = match target.as_deref() {
            Some(p) if p == format!("{}/", x.path()) || format!("{p}/") == x.path() => {
                " It only adds or removes a trailing slash: register the exact URL the server serves, or serve both."
            }
            _ => " Register the final URL in the connector, or serve MCP at this URL.",
        };
        // Another origin: neither the host the client asked for nor the upstream behind the proxy.
        let cross = location.and_then(host_of).is_some_and(|lhost| {
            let same = |h: Option<&str>| h.is_some_and(|h| h.trim().eq_ignore_ascii_case(lhost));
            !same(x.request_header("host")) && !same(host_of(&x.request.upstream))
        });
        let mut message = format!(
            "{} was answered {status} to {}: connectors do not follow redirects for POST \
             (301/302/303 turn it into a GET) and drop Authorization across origins.",
            label_with(s),
            location.unwrap_or("nowhere (no Location)")
        );
        if cross {
            message.push_str(" This one goes to another origin.");
        }
        message.push_str(hint);
        out.push(finding(
            MCP_URL_REDIRECT,
            SPEC_MCP_URL_REDIRECT,
            Severity::Warning,
            Some(x.ex),
            message,
            vec![
                format!("status: {status}"),
                format!("location: {}", shown(location)),
            ],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// edge-block
// ---------------------------------------------------------------------------------------

const CHALLENGE_MARKERS: [&str; 5] = [
    "attention required",
    "just a moment",
    "cf-chl",
    "captcha",
    "access denied",
];

/// The `<title>` of an HTML page, trimmed and shortened.
fn html_title(html: &str) -> Option<String> {
    // ASCII lowercasing keeps every byte offset, so indices found in `lower` fit `html`.
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower.get(open..)?.find('>')? + 1;
    let end = start + lower.get(start..)?.find("</title")?;
    let title = html
        .get(start..end)?
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if title.is_empty() {
        return None;
    }
    Some(if title.chars().count() > 120 {
        format!("{}…", title.chars().take(120).collect::<String>())
    } else {
        title
    })
}

/// MCP Transports §Streamable HTTP: a WAF/CDN HTML block page means the app never saw the connector's request.
fn edge_block(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &session.steps {
        let x = s.x;
        if s.role == Role::Other && !has_jsonrpc_body(x) {
            continue;
        }
        let Some(status) = x.status() else { continue };
        if status < 400 || x.response_media_type().as_deref() != Some("text/html") {
            continue;
        }
        if x.response.as_ref().is_some_and(|r| r.producer == "proxy") {
            continue;
        }
        let body = x.response_body.text();
        let lower = body.to_ascii_lowercase();
        let marker = CHALLENGE_MARKERS
            .iter()
            .find(|m| lower.contains(*m))
            .copied();
        let mitigated = x.response_header("cf-mitigated");
        let challenge = marker.is_some() || mitigated.is_some();
        let blocking_status = matches!(status, 403 | 429 | 503);
        // The authorize page is the user's browser, where an HTML error page is normal: only a
        // bot challenge counts there.
        let counts = if s.role == Role::Authorize {
            challenge
        } else {
            blocking_status || challenge
        };
        if !counts {
            continue;
        }
        let title = html_title(&body);
        let server = x.response_header("server");
        let mut message = format!(
            "{} got an HTML {status} page{}{} instead of an answer from the app: a WAF/CDN in front \
             of it blocked the connector before the app saw the request.",
            label_with(s),
            server.map(|v| format!(" from {v}")).unwrap_or_default(),
            title
                .as_deref()
                .map(|t| format!(" (\"{t}\")"))
                .unwrap_or_default(),
        );
        message.push_str(
            " Exempt the MCP and OAuth paths from bot protection/rate limits, or allow-list the connector's user agent and IP ranges.",
        );
        let mut evidence = vec![
            format!("status: {status}"),
            format!("content-type: {}", shown(x.response_header("content-type"))),
            format!("server: {}", shown(server)),
            format!("user-agent: {}", shown(x.request_header("user-agent"))),
            format!("title: {}", shown(title.as_deref())),
        ];
        if let Some(m) = mitigated {
            evidence.push(format!("cf-mitigated: {m}"));
        }
        if let Some(m) = marker {
            evidence.push(format!("page mentions: {m:?}"));
        }
        out.push(finding(
            EDGE_BLOCK,
            SPEC_EDGE_BLOCK,
            Severity::Error,
            Some(x.ex),
            message,
            evidence,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// accept-406
// ---------------------------------------------------------------------------------------

/// MCP Transports §Sending Messages item 2: clients list both types in Accept, and servers must take that.
fn accept_406(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps.iter().filter(|s| is_mcp_request(s)) {
        let x = s.x;
        if x.method() != "POST" || x.status() != Some(406) {
            continue;
        }
        let accept = x.request_header("accept");
        let ranges: Vec<String> = accept
            .map(|a| a.split(',').map(media_type).collect())
            .unwrap_or_default();
        let json = ranges.iter().any(|r| r == "application/json");
        let sse = ranges.iter().any(|r| r == "text/event-stream");
        let evidence = vec![
            "status: 406".to_string(),
            format!("accept: {}", shown(accept)),
        ];
        if json && sse {
            out.push(finding(
                ACCEPT_406,
                SPEC_ACCEPT_406,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{} was answered 406 although its Accept lists both application/json and \
                     text/event-stream, as the spec requires: fix the server's Accept check \
                     (parse the list; allow parameters and q-values).",
                    label_with(s)
                ),
                evidence,
            ));
        } else {
            let missing: Vec<&str> = [(json, "application/json"), (sse, "text/event-stream")]
                .iter()
                .filter(|(has, _)| !has)
                .map(|(_, t)| *t)
                .collect();
            out.push(finding(
                ACCEPT_406,
                SPEC_ACCEPT_406,
                Severity::Info,
                Some(x.ex),
                format!(
                    "{} was answered 406; the client's Accept omitted {}, which the spec requires \
                     clients to send, so the refusal is the client's doing.",
                    label_with(s),
                    missing.join(" and ")
                ),
                evidence,
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// response-content-type
// ---------------------------------------------------------------------------------------

/// MCP Transports §Sending Messages items 4-5: requests get JSON or SSE; notifications and responses get 202 with no body.
fn response_content_type(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in session.steps_with(Role::Mcp) {
        let x = s.x;
        if x.method() != "POST" || !is_2xx(x) {
            continue;
        }
        let Some(status) = x.status() else { continue };
        let has_request = s.sent.iter().any(Message::is_request);
        let has_other = s
            .sent
            .iter()
            .any(|m| m.is_notification() || m.is_response());
        let ct = x.response_header("content-type");
        let mt = x.response_media_type();
        let empty =
            x.response_body.len == 0 && x.response_body.bytes.is_empty() && x.sse.is_empty();
        let evidence = vec![
            format!("status: {status}"),
            format!("content-type: {}", shown(ct)),
            format!("response body: {} bytes", x.response_body.len),
        ];
        if has_request {
            if matches!(
                mt.as_deref(),
                Some("application/json" | "text/event-stream")
            ) {
                continue;
            }
            out.push(finding(
                RESPONSE_CONTENT_TYPE,
                SPEC_RESPONSE_CONTENT_TYPE,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{} carried a JSON-RPC request but was answered {status} with Content-Type {}: \
                     answer a request with application/json (one JSON-RPC response) or \
                     text/event-stream.",
                    label_with(s),
                    ct.unwrap_or("(none)")
                ),
                evidence,
            ));
        } else if has_other {
            if status == 202 && empty {
                continue;
            }
            let (severity, what) = if empty {
                (
                    Severity::Warning,
                    format!("was answered {status} with an empty body"),
                )
            } else {
                (
                    Severity::Error,
                    format!(
                        "was answered {status} with a body ({} bytes{})",
                        x.response_body.len,
                        ct.map(|c| format!(", {c}")).unwrap_or_default()
                    ),
                )
            };
            out.push(finding(
                RESPONSE_CONTENT_TYPE,
                SPEC_RESPONSE_CONTENT_TYPE,
                severity,
                Some(x.ex),
                format!(
                    "{} carried only notifications/responses and {what}: the spec requires \
                     202 Accepted with no body; some clients try to parse anything else.",
                    label_with(s)
                ),
                evidence,
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// sse-buffering
// ---------------------------------------------------------------------------------------

/// MCP Transports §Sending Messages item 6: SSE events must reach the client as sent, not held by a buffer.
fn sse_buffering(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in &session.steps {
        let x = s.x;
        if !is_2xx(x) || x.response_media_type().as_deref() != Some("text/event-stream") {
            continue;
        }
        let Some(h) = x.response_t else { continue };
        let blocks: Vec<u64> = x
            .sse
            .iter()
            .filter(|(_, e)| e.dir == Direction::Response)
            .map(|(t, _)| *t)
            .collect();
        let dispatched: Vec<u64> = x
            .sse
            .iter()
            .filter(|(_, e)| e.dir == Direction::Response && e.dispatched)
            .map(|(t, _)| *t)
            .collect();
        let end_t = x.end.as_ref().map(|(t, _)| *t);
        let mut reasons: Vec<String> = Vec::new();

        // All events in one burst at the very end of the stream: of a long stream, or of any
        // stream whose progress notifications (meant to arrive as the work goes) came in the
        // same burst as the result.
        let progress = x.sse.iter().any(|(_, e)| {
            e.dir == Direction::Response
                && e.dispatched
                && e.data
                    .as_deref()
                    .is_some_and(|d| d.contains("notifications/progress"))
        });
        if let (Some(end_t), Some(&first), Some(&last)) =
            (end_t, dispatched.iter().min(), dispatched.iter().max())
        {
            let total = end_t.saturating_sub(h);
            let long_enough = total > BUFFER_MIN_STREAM || (progress && total > 2 * BURST);
            if dispatched.len() >= 2
                && long_enough
                && last.saturating_sub(first) <= BURST
                && end_t.saturating_sub(last) <= BURST
            {
                reasons.push(format!(
                    "all {} events arrived within {} of each other at the very end of a {} stream",
                    dispatched.len(),
                    dur(last.saturating_sub(first)),
                    dur(total)
                ));
            }
        }

        // Compression of an event stream.
        let encodings: Vec<String> = tokens(x.response_headers("content-encoding"))
            .into_iter()
            .filter(|e| matches!(e.as_str(), "gzip" | "x-gzip" | "br" | "deflate" | "zstd"))
            .collect();
        if !encodings.is_empty() {
            reasons.push(format!(
                "the stream is compressed (Content-Encoding: {}), which buffers events in many stacks",
                encodings.join(", ")
            ));
        }

        // A POST's stream silent for long after its headers.
        if x.method() == "POST" {
            if let Some(&first) = blocks.iter().min() {
                let wait = first.saturating_sub(h);
                if wait > FIRST_EVENT_LIMIT {
                    reasons.push(format!(
                        "the first event came {} after the headers (held by a buffer, or the server \
                         sent nothing: no priming event, no progress)",
                        dur(wait)
                    ));
                }
            }
        }

        if reasons.is_empty() {
            continue;
        }
        let times: Vec<String> = blocks
            .iter()
            .take(10)
            .map(|t| offset(t.saturating_sub(h)))
            .collect();
        let mut evidence = vec![format!(
            "events at {} after the headers{}",
            if times.is_empty() {
                "(none)".to_string()
            } else {
                times.join(", ")
            },
            if blocks.len() > 10 { ", …" } else { "" }
        )];
        if let Some(end_t) = end_t {
            evidence.push(format!(
                "stream ended at {}",
                offset(end_t.saturating_sub(h))
            ));
        }
        if !encodings.is_empty() {
            evidence.push(format!(
                "content-encoding: {}",
                shown(x.response_header("content-encoding"))
            ));
        }
        // The header nginx (and proxies that follow it) read to pass a stream through as it
        // comes.
        let unbuffered = x
            .response_header("x-accel-buffering")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("no"));
        let hint = if unbuffered {
            evidence
                .push("x-accel-buffering: no (a proxy that honours it is not the buffer)".into());
            String::new()
        } else {
            evidence.push("x-accel-buffering: (none)".into());
            " The answer does not carry X-Accel-Buffering: no; sending it turns nginx's \
             buffering off for this response."
                .to_string()
        };
        out.push(finding(
            SSE_BUFFERING,
            SPEC_SSE_BUFFERING,
            Severity::Warning,
            Some(x.ex),
            format!(
                "{}: {}. The stream looks held back between the app and the client; turn off \
                 buffering and compression for text/event-stream (nginx proxy_buffering off or \
                 X-Accel-Buffering: no, no gzip middleware, flush after each event).{hint}",
                label_with(s),
                reasons.join("; ")
            ),
            evidence,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// sse-response-delivery
// ---------------------------------------------------------------------------------------

/// MCP Transports §Sending Messages item 6: the POST's stream should carry the response before it ends.
fn sse_response_delivery(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let cancelled = cancelled_ids(session);
    let mut unanswered: HashMap<u64, Vec<&Call>> = HashMap::new();
    for c in &session.calls {
        // A subscriptions/listen stream (2026-07-28) is answered only when the server ends
        // it; a client that closes it has simply stopped listening.
        let listen_closed_by_client = c.method == "subscriptions/listen"
            && session
                .step(c.ex)
                .is_some_and(|s| s.x.outcome() == Some(Outcome::ClientAborted));
        if answer_of(c).is_none() && !cancelled.contains(&c.id) && !listen_closed_by_client {
            unanswered.entry(c.ex).or_default().push(c);
        }
    }
    for s in &session.steps {
        let x = s.x;
        if !matches!(s.role, Role::Mcp | Role::LegacyMessages) || x.method() != "POST" || !is_2xx(x)
        {
            continue;
        }
        let Some(lost) = unanswered.get(&x.ex) else {
            continue;
        };
        let ids: Vec<&str> = lost.iter().map(|c| show_id(&c.id)).collect();
        let methods: Vec<&str> = lost.iter().map(|c| c.method.as_str()).collect();
        let what = format!("{} (id {})", methods.join(", "), ids.join(", "));
        let stream = x.response_media_type().as_deref() == Some("text/event-stream");
        let mut evidence = vec![
            format!("request: {what}"),
            format!(
                "status: {}",
                shown(x.status().map(|c| c.to_string()).as_deref())
            ),
            format!("content-type: {}", shown(x.response_header("content-type"))),
        ];
        let message = if stream {
            let Some((end_t, end)) = &x.end else { continue };
            if end.outcome == Outcome::ProxyShutdown {
                continue;
            }
            let h = x.response_t.unwrap_or(x.t);
            let resumable = x
                .sse
                .iter()
                .any(|(_, e)| e.retry.is_some() || e.id.is_some());
            evidence.push(format!(
                "stream: {} events, ended ({:?}) at {} after the headers",
                x.sse.len(),
                end.outcome,
                offset(end_t.saturating_sub(h))
            ));
            format!(
                "{} carried {what} and was answered with an event stream that ended ({}) after {} \
                 without the response, which never came on any other stream either: the client \
                 waits until it times out. Send the JSON-RPC response on the POST's stream before \
                 closing it{}.",
                label(x),
                outcome_words(end.outcome),
                dur(end_t.saturating_sub(h)),
                if resumable {
                    " (or deliver it when the client resumes with GET and Last-Event-ID)"
                } else {
                    ""
                }
            )
        } else {
            // Only a whole JSON body could have carried the answer (a legacy 202 never does).
            let body_done = x
                .end
                .as_ref()
                .is_some_and(|(_, e)| e.outcome == Outcome::Complete)
                && x.response_media_type().as_deref() == Some("application/json")
                && !x.response_body.is_empty();
            let later = session.capture.end_t().saturating_sub(x.end_t());
            if !body_done && later < LATE_ANSWER {
                // The answer may still have been on its way when the recording stopped.
                continue;
            }
            evidence.push(format!("response body: {} bytes", x.response_body.len));
            format!(
                "{} carried {what} and was answered {} but the response never arrived, neither in \
                 that answer nor on any stream{}: the client waits until it times out. Return the \
                 JSON-RPC response in the POST's answer (application/json or text/event-stream).",
                label(x),
                shown(x.status().map(|c| c.to_string()).as_deref()),
                if body_done {
                    ""
                } else {
                    " in the rest of the capture"
                }
            )
        };
        out.push(finding(
            SSE_RESPONSE_DELIVERY,
            SPEC_SSE_RESPONSE_DELIVERY,
            Severity::Error,
            Some(x.ex),
            message,
            evidence,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// session-header
// ---------------------------------------------------------------------------------------

/// MCP Transports §Session Management items 2-4: after initialize assigns Mcp-Session-Id, every request carries it.
fn session_header(session: &Session<'_>) -> Vec<Finding> {
    // Each initialize whose 2xx answer assigned a session id: (from, id, its exchange).
    let mut epochs: Vec<(u64, &str, u64)> = session
        .steps_with(Role::Mcp)
        .filter(|s| sends_initialize(s) && is_2xx(s.x))
        .filter_map(|s| {
            let id = s.x.response_header("mcp-session-id")?.trim();
            (!id.is_empty()).then_some((s.x.response_t.unwrap_or(s.x.t), id, s.x.ex))
        })
        .collect();
    epochs.sort_by_key(|e| e.0);

    let mut out = Vec::new();
    let mut reported: BTreeSet<u64> = BTreeSet::new();
    for s in session.steps_with(Role::Mcp) {
        let x = s.x;
        // A 2026-07-28 request belongs to no session: it carries neither id nor 2025 version.
        if sends_initialize(s) || is_modern_step(s) {
            continue;
        }
        let Some(&(_, want, init_ex)) = epochs.iter().rev().find(|e| e.0 <= x.t && e.2 != x.ex)
        else {
            continue;
        };
        let got = x.request_header("mcp-session-id").map(str::trim);
        // Another session's id (several clients may share a capture) is fine too.
        if got.is_some_and(|g| epochs.iter().any(|e| e.0 <= x.t && e.1 == g)) {
            continue;
        }
        let problem = match got {
            None => "did not carry Mcp-Session-Id".to_string(),
            Some(other) => format!("carried Mcp-Session-Id: {other}"),
        };
        out.push(finding(
            SESSION_HEADER,
            SPEC_SESSION_HEADER,
            Severity::Warning,
            Some(x.ex),
            format!(
                "{} {problem}, but initialize (#{init_ex}) was answered with Mcp-Session-Id: \
                 {want}; the client must send that value on every later request (servers answer \
                 400 or 404 otherwise).",
                label_with(s)
            ),
            vec![
                format!("expected mcp-session-id: {want} (from #{init_ex})"),
                format!("mcp-session-id: {}", shown(got)),
                format!(
                    "status: {}",
                    shown(x.status().map(|c| c.to_string()).as_deref())
                ),
            ],
        ));
        reported.insert(x.ex);
        break;
    }

    // A 404 to a request carrying a session id: the session is gone (unless session-lost
    // says it never was, right after its initialize).
    let lost: BTreeSet<u64> = session_lost(session)
        .iter()
        .filter_map(|f| f.exchange)
        .collect();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for s in session.steps_with(Role::Mcp) {
        let x = s.x;
        if x.status() != Some(404) || reported.contains(&x.ex) || lost.contains(&x.ex) {
            continue;
        }
        let Some(id) = x.request_header("mcp-session-id").map(str::trim) else {
            continue;
        };
        if !seen.insert(id) {
            continue;
        }
        let reinit = session
            .steps_with(Role::Mcp)
            .find(|later| later.x.t > x.t && sends_initialize(later));
        let next = match reinit {
            Some(r) => format!("the client did re-initialize ({})", label(r.x)),
            None => "the client did not re-initialize in this capture".to_string(),
        };
        out.push(finding(
            SESSION_HEADER,
            SPEC_SESSION_HEADER,
            Severity::Info,
            Some(x.ex),
            format!(
                "{} carried Mcp-Session-Id: {id} and was answered 404: the session expired or the \
                 server forgot it (restart, another replica); the client must start over with a new \
                 initialize without a session id — {next}.",
                label_with(s)
            ),
            vec![format!("mcp-session-id: {id}"), "status: 404".to_string()],
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// transport-mismatch
// ---------------------------------------------------------------------------------------

/// A client and a server on different MCP transports: a Streamable HTTP client's POST that an
/// HTTP+SSE (2024-11-05) endpoint refuses with 405, or an HTTP+SSE client's opening GET that
/// a Streamable HTTP server refuses, after which the client never POSTs.
fn transport_mismatch(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let streams = |path: &str| {
        session.steps.iter().find(|s| {
            s.x.method() == "GET"
                && s.x.path() == path
                && s.x
                    .sse
                    .iter()
                    .any(|(_, e)| e.event.as_deref() == Some("endpoint"))
        })
    };
    // A JSON-RPC POST refused as a method the endpoint does not take: a 405, or a 404 on a
    // path that serves (or is named for) the legacy event stream.
    if let Some(s) = session.steps.iter().find(|s| {
        let status = s.x.status();
        s.x.method() == "POST"
            && s.sent.iter().any(|m| m.method().is_some())
            && (status == Some(405)
                || (status == Some(404)
                    && (streams(s.x.path()).is_some() || s.x.path().ends_with("/sse"))))
    }) {
        let allow = s.x.response_header("allow");
        let status = s.x.status().unwrap_or_default();
        let confirmed = match streams(s.x.path()) {
            Some(g) => format!(
                " {} confirms it: its event stream announced the legacy message endpoint.",
                label(g.x)
            ),
            None => String::new(),
        };
        out.push(finding(
            TRANSPORT_MISMATCH,
            SPEC_TRANSPORT_MISMATCH,
            Severity::Error,
            Some(s.x.ex),
            format!(
                "{} was answered {status}{}: the client speaks Streamable HTTP (it POSTs \
                 JSON-RPC to the endpoint), and this endpoint takes no POST, as the event stream \
                 of a server that speaks only the legacy HTTP+SSE transport (2024-11-05) does.\
                 {confirmed} Point the client at the server's Streamable HTTP endpoint, or enable \
                 Streamable HTTP on the server.",
                label_with(s),
                allow.map(|a| format!(" (Allow: {a})")).unwrap_or_default()
            ),
            vec![
                format!("status: {status}"),
                format!("allow: {}", shown(allow)),
            ],
        ));
    }
    // A GET stream opened first, refused, and no POST after it: a legacy client.
    let first_mcp = session
        .steps
        .iter()
        .find(|s| matches!(s.role, Role::Mcp | Role::LegacySse));
    if let Some(s) = first_mcp.filter(|s| {
        s.x.method() == "GET"
            && s.x.request_header("mcp-session-id").is_none()
            && s.x
                .request_header("accept")
                .is_some_and(|a| a.contains("text/event-stream"))
            && s.x.status().is_some_and(|c| c >= 400 && c != 401)
    }) {
        let posted = session
            .steps
            .iter()
            .any(|p| p.x.t > s.x.t && p.x.method() == "POST" && !p.sent.is_empty());
        if !posted {
            out.push(finding(
                TRANSPORT_MISMATCH,
                SPEC_TRANSPORT_MISMATCH,
                Severity::Error,
                Some(s.x.ex),
                format!(
                    "{} opened with a GET for an event stream and was refused: {}. A client of the \
                     legacy HTTP+SSE transport (2024-11-05) starts this way and waits for an \
                     `endpoint` event; a Streamable HTTP server refuses a GET without a session. \
                     The client never POSTed. Use a Streamable HTTP client (or its auto mode), or \
                     serve the legacy transport too.",
                    label(s.x),
                    session.refusal_of(s.x.ex)
                ),
                vec![format!(
                    "status: {}",
                    shown(s.x.status().map(|c| c.to_string()).as_deref())
                )],
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// session-lost
// ---------------------------------------------------------------------------------------

/// How soon after its initialize a session refused as unknown points at the deployment (a
/// replica that never had it) rather than at an expiry.
const SESSION_JUST_MADE_US: u64 = 60_000_000;

/// A session refused right after initialize, with what the evidence points to: the id never
/// reached the client (the server did not send it, or a hop dropped it), or the server did
/// not know the session it had just created (replicas keeping sessions in memory behind a
/// load balancer).
fn session_lost(session: &Session<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let inits: Vec<&Step<'_>> = session
        .steps_with(Role::Mcp)
        .filter(|s| sends_initialize(s) && is_2xx(s.x) && !is_modern_step(s))
        .collect();
    for init in inits {
        let id = init
            .x
            .response_header("mcp-session-id")
            .map(str::trim)
            .filter(|id| !id.is_empty());
        // The client's next request on the endpoint, before any new initialize.
        let Some(next) = session.steps_with(Role::Mcp).find(|s| {
            s.x.t > init.x.t
                && !sends_initialize(s)
                && s.x.request_header("authorization") == init.x.request_header("authorization")
        }) else {
            continue;
        };
        let status = next.x.status();
        let about_session = next
            .x
            .response_body
            .text()
            .to_ascii_lowercase()
            .contains("session");
        let refused = matches!(status, Some(404)) || (status == Some(400) && about_session);
        if !refused {
            continue;
        }
        let how = session.refusal_of(next.x.ex);
        let carried = next.x.request_header("mcp-session-id").map(str::trim);
        let (message, evidence) = match (id, carried) {
            (None, _) => (
                format!(
                    "initialize ({}) was answered without Mcp-Session-Id, and the client's next                      request, {}, was refused: {how}. The server keeps sessions, but no session                      id reached the client: the server did not send one, or a gateway, CDN or                      proxy in front of it dropped the header (mcptap records what the client                      received). Let Mcp-Session-Id through every hop (a browser client also                      needs it in Access-Control-Expose-Headers), or run the server stateless.",
                    label(init.x),
                    label_with(next)
                ),
                vec![
                    format!("{}: no mcp-session-id in the answer", label(init.x)),
                    format!("status of #{}: {}", next.x.ex, shown(status.map(|s| s.to_string()).as_deref())),
                ],
            ),
            (Some(id), Some(sent)) if sent == id && next.x.t.saturating_sub(init.x.end_t()) <= SESSION_JUST_MADE_US => (
                format!(
                    "The server created session {id} at initialize ({}) and {} ms later did not                      know it: {} carried that id and was refused: {how}. Sessions kept in one                      replica's memory while a load balancer sends the next request to another                      do this. Route by Mcp-Session-Id (sticky sessions), share the sessions                      (a session store), or run the server stateless.",
                    label(init.x),
                    next.x.t.saturating_sub(init.x.end_t()) / 1000,
                    label_with(next)
                ),
                vec![
                    format!("mcp-session-id issued: {id} (#{})", init.x.ex),
                    format!("mcp-session-id sent: {sent} (#{})", next.x.ex),
                    format!("status of #{}: {}", next.x.ex, shown(status.map(|s| s.to_string()).as_deref())),
                ],
            ),
            // Another id, or none: the session-header check names the client's mistake.
            _ => continue,
        };
        out.push(finding(
            SESSION_LOST,
            SPEC_SESSION_HEADER,
            Severity::Error,
            Some(next.x.ex),
            message,
            evidence,
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// protocol-version-header
// ---------------------------------------------------------------------------------------

/// MCP Transports §Protocol Version Header: from 2025-06-18 on, every later request carries MCP-Protocol-Version.
fn protocol_version_header(session: &Session<'_>) -> Vec<Finding> {
    // Each answered initialize: (when the answer came, negotiated version, its exchange, the
    // session id it assigned).
    let mut epochs: Vec<(u64, String, u64, Option<&str>)> = session
        .calls
        .iter()
        .filter(|c| c.method == "initialize")
        .filter_map(|c| match answer_of(c) {
            Some((_, t, Message::Result { result, .. })) => {
                let version = result.get("protocolVersion").and_then(Value::as_str)?;
                let sid = session
                    .step(c.ex)
                    .and_then(|s| s.x.response_header("mcp-session-id"))
                    .map(str::trim);
                Some((t, version.to_string(), c.ex, sid))
            }
            _ => None,
        })
        .collect();
    epochs.sort_by_key(|e| e.0);
    if epochs.is_empty() {
        return Vec::new();
    }

    let mut out = Vec::new();
    let mut warned = false;
    let mut erred = false;
    for s in session.steps_with(Role::Mcp) {
        if warned && erred {
            break;
        }
        let x = s.x;
        if sends_initialize(s) || is_modern_step(s) {
            continue;
        }
        let got = x.request_header("mcp-protocol-version").map(str::trim);
        // The initialize of this request's session, or else the latest one.
        let sid = x.request_header("mcp-session-id").map(str::trim);
        let linked =
            sid.and_then(|sid| epochs.iter().rev().find(|e| e.0 <= x.t && e.3 == Some(sid)));
        let Some((_, want, init_ex, _)) =
            linked.or_else(|| epochs.iter().rev().find(|e| e.0 <= x.t))
        else {
            continue;
        };
        if want.as_str() < "2025-06-18" {
            continue;
        }
        // Without a session to link it, a version another initialize negotiated is fine (several
        // clients may share a capture).
        if linked.is_none()
            && got.is_some_and(|g| epochs.iter().any(|e| e.0 <= x.t && e.1 == g))
            && got != Some(want.as_str())
        {
            continue;
        }
        let evidence = vec![
            format!("negotiated: {want} (initialize #{init_ex})"),
            format!("mcp-protocol-version: {}", shown(got)),
            format!(
                "status: {}",
                shown(x.status().map(|c| c.to_string()).as_deref())
            ),
        ];
        if got != Some(want.as_str()) {
            if warned {
                continue;
            }
            warned = true;
            let problem = match got {
                None => "did not carry MCP-Protocol-Version".to_string(),
                Some(v) => format!("carried MCP-Protocol-Version: {v}"),
            };
            out.push(finding(
                PROTOCOL_VERSION_HEADER,
                SPEC_PROTOCOL_VERSION_HEADER,
                Severity::Warning,
                Some(x.ex),
                format!(
                    "{} {problem}, but initialize (#{init_ex}) negotiated {want}; the client must \
                     send MCP-Protocol-Version: {want} on every later request.",
                    label_with(s)
                ),
                evidence,
            ));
        } else if x.status() == Some(400) && !erred {
            // A 400 explained by a missing session id, or one that names the session as what
            // is wrong, is the session rules' business.
            let session_missing = x.request_header("mcp-session-id").is_none()
                && session.steps_with(Role::Mcp).any(|i| {
                    sends_initialize(i) && i.x.response_header("mcp-session-id").is_some()
                });
            let about_session = x
                .response_body
                .text()
                .to_ascii_lowercase()
                .contains("session");
            if session_missing || about_session {
                continue;
            }
            erred = true;
            let mut evidence = evidence;
            let body = x.response_body.text();
            if !body.trim().is_empty() {
                let snippet: String = body.trim().chars().take(200).collect();
                evidence.push(format!("response body: {snippet}"));
            }
            out.push(finding(
                PROTOCOL_VERSION_HEADER,
                SPEC_PROTOCOL_VERSION_HEADER,
                Severity::Error,
                Some(x.ex),
                format!(
                    "{} carried MCP-Protocol-Version: {want}, the version initialize negotiated, \
                     and the server answered 400: the server must accept the version it agreed to \
                     (check its list of supported versions and its header check).",
                    label_with(s)
                ),
                evidence,
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// get-405
// ---------------------------------------------------------------------------------------

/// MCP Transports §Listening for Messages item 3: a 405 to the GET stream is allowed, but rules out server-initiated messages.
fn get_405(session: &Session<'_>) -> Vec<Finding> {
    let gets: Vec<&Step<'_>> = session
        .steps_with(Role::Mcp)
        .filter(|s| s.x.method() == "GET" && s.x.status() == Some(405))
        .collect();
    let Some(first) = gets.first() else {
        return Vec::new();
    };
    let mut evidence = vec!["status: 405".to_string()];
    if let Some(allow) = first.x.response_header("allow") {
        evidence.push(format!("allow: {allow}"));
    }
    if gets.len() > 1 {
        evidence.push(format!("{} GETs answered 405", gets.len()));
    }
    vec![finding(
        GET_405,
        SPEC_GET_405,
        Severity::Info,
        Some(first.x.ex),
        format!(
            "{} (the client's SSE stream) was answered 405: allowed, but the server can then send \
             notifications and requests only inside the stream of a POST.",
            label(first.x)
        ),
        evidence,
    )]
}

// ---------------------------------------------------------------------------------------
// tls-handshake-failures
// ---------------------------------------------------------------------------------------

/// What to change for a TLS failure reason (the proxy's reasons are already in words; raw
/// library messages and alert names are understood too).
fn tls_advice(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase().replace(['_', '-'], " ");
    let has = |needles: &[&str]| needles.iter().any(|n| r.contains(n));
    if has(&[
        "plain http",
        "http request",
        "invalidcontenttype",
        "invalid content type",
        "corrupt message",
        "not tls",
    ]) {
        "Use an https:// URL for this port, or a plain-HTTP listener for http://."
    } else if has(&[
        "no certificate for sni",
        "unrecognized name",
        "unrecognised name",
        "unrecognizedname",
        "unrecognisedname",
        "no certificate is loaded",
        "no server certificate",
    ]) {
        "Add the name the client asks for (SNI) to the certificate, or connect with a name it covers."
    } else if has(&[
        "rejected our certificate",
        "unknown ca",
        "unknownca",
        "bad certificate",
        "badcertificate",
        "certificate unknown",
        "certificateunknown",
        "unsupported certificate",
        "certificate expired",
        "certificateexpired",
        "certificate revoked",
    ]) {
        "Serve a certificate the client trusts, for the name it uses, with the full chain (not \
         self-signed, no missing intermediate), or make the client trust the issuing CA."
    } else if has(&["alpn", "application protocol", "noapplicationprotocol"]) {
        "Have the client offer h2 or http/1.1."
    } else if has(&[
        "no tls version",
        "protocol version",
        "protocolversion",
        "tls 1.1",
    ]) {
        "Use a client that speaks TLS 1.2 or 1.3."
    } else if has(&[
        "cipher",
        "key exchange",
        "signature algorithm",
        "incompatible",
        "handshake failure",
        "handshakefailure",
    ]) {
        "Enable modern parameters on the client (TLS 1.2+, AES-GCM or ChaCha20-Poly1305, ECDHE \
         with X25519 or P-256), or use a certificate key it accepts."
    } else if has(&["closed", "reset", "eof", "broken pipe"]) {
        "Clients hang up like this when they distrust the certificate or time out: check the \
         chain and the name first."
    } else if has(&[
        "malformed",
        "broke the tls protocol",
        "unexpected tls",
        "decrypt",
    ]) {
        "A client bug or a middlebox altering the traffic: try another client or network path."
    } else {
        "Check the certificate, its chain and the name the client uses."
    }
}

/// MCP Authorization §Communication Security: endpoints are served over HTTPS the client can complete.
fn tls_handshake_failures(session: &Session<'_>) -> Vec<Finding> {
    let mut groups: BTreeMap<&str, Vec<&mcptap_capture::model::TlsError>> = BTreeMap::new();
    for (_, e) in &session.capture.tls_errors {
        groups.entry(e.reason.as_str()).or_default().push(e);
    }
    groups
        .into_iter()
        .map(|(reason, errors)| {
            let snis: BTreeSet<&str> = errors.iter().filter_map(|e| e.sni.as_deref()).collect();
            let peers: BTreeSet<&str> = errors.iter().map(|e| e.peer.as_str()).collect();
            let alpn: BTreeSet<&str> = errors
                .iter()
                .flat_map(|e| e.alpn_offered.iter().map(String::as_str))
                .collect();
            let mut evidence = vec![
                format!("reason: {reason}"),
                format!("count: {}", errors.len()),
                format!(
                    "sni: {}",
                    if snis.is_empty() {
                        "(none)".to_string()
                    } else {
                        snis.iter().copied().collect::<Vec<_>>().join(", ")
                    }
                ),
                format!(
                    "peers: {}{}",
                    peers.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                    if peers.len() > 5 { ", …" } else { "" }
                ),
            ];
            if !alpn.is_empty() {
                evidence.push(format!(
                    "alpn offered: {}",
                    alpn.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            let n = errors.len();
            finding(
                TLS_HANDSHAKE_FAILURES,
                SPEC_TLS,
                Severity::Error,
                None,
                format!(
                    "{n} TLS handshake{} failed{}: {}. {}",
                    if n == 1 { "" } else { "s" },
                    if snis.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " for {}",
                            snis.iter().copied().collect::<Vec<_>>().join(", ")
                        )
                    },
                    reason.trim().trim_end_matches('.'),
                    tls_advice(reason)
                ),
                evidence,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// cors
// ---------------------------------------------------------------------------------------

/// The request headers a browser client's CORS preflight must get allowed.
const CORS_HEADERS: [&str; 6] = [
    "authorization",
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    // 2026-07-28 mirrors the method and the tool, resource or prompt name in these.
    "mcp-method",
    "mcp-name",
];

/// The request uses the header in a way that needs CORS permission.
/// A step whose request is of the 2026-07-28 era (see [`crate::era`]).
fn is_modern_step(s: &Step<'_>) -> bool {
    s.sent
        .iter()
        .find(|m| m.is_request())
        .is_some_and(|m| crate::era::is_modern_request(s, m))
}

fn uses_header(x: &Exchange, name: &str) -> bool {
    let Some(v) = x.request_header(name) else {
        return false;
    };
    if name == "content-type" {
        // The CORS-safelisted types need no permission.
        return !matches!(
            media_type(v).as_str(),
            "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
        );
    }
    true
}

/// The Origin names the host the request went to: not a cross-origin request.
fn same_origin(x: &Exchange, origin: &str) -> bool {
    let host = origin
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(origin)
        .trim_end_matches('/');
    x.request_header("host")
        .is_some_and(|h| h.trim().eq_ignore_ascii_case(host))
}

/// Access-Control-Allow-Origin lets this origin read the answer.
fn allows_origin(x: &Exchange, origin: &str) -> bool {
    x.response_header("access-control-allow-origin")
        .is_some_and(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case(origin.trim()))
}

/// Answers to one endpoint missing the same CORS headers: the first, and how many.
struct Gap {
    ex: u64,
    origin: String,
    evidence: Vec<String>,
    count: usize,
}

/// The `Origin` of a request, trimmed.
fn origin_of(x: &Exchange) -> Option<&str> {
    x.request_header("origin").map(str::trim)
}

/// Fetch §3.2 (CORS protocol): a browser client needs preflights allowed and answers readable.
fn cors(session: &Session<'_>) -> Vec<Finding> {
    if !session.steps.iter().any(|s| origin_of(s.x).is_some()) {
        return Vec::new();
    }
    let mut out = Vec::new();

    // Preflights.
    for s in session.steps_with(Role::Preflight) {
        let x = s.x;
        let (Some(origin), Some(status)) = (origin_of(x), x.status()) else {
            continue;
        };
        let requested = tokens(
            x.request_header("access-control-request-headers")
                .into_iter(),
        );
        let required: Vec<&str> = CORS_HEADERS
            .iter()
            .copied()
            .filter(|name| {
                requested.iter().any(|r| r == name)
                    || session.steps.iter().any(|a| {
                        a.role != Role::Preflight
                            && a.x.path() == x.path()
                            && origin_of(a.x).is_some()
                            && uses_header(a.x, name)
                    })
            })
            .collect();
        let allowed = tokens(x.response_headers("access-control-allow-headers"));
        let wildcard = allowed.iter().any(|a| a == "*");
        // `*` never covers Authorization (Fetch: a "CORS non-wildcard request-header name").
        let covered =
            |n: &str| allowed.iter().any(|a| a == n) || (wildcard && n != "authorization");
        let mut missing: Vec<String> = Vec::new();
        if !(200..300).contains(&status) {
            missing.push(format!("a 2xx status (got {status})"));
        }
        if !allows_origin(x, origin) {
            missing.push(format!("Access-Control-Allow-Origin: {origin}"));
        }
        let not_allowed: Vec<&str> = required.iter().copied().filter(|n| !covered(n)).collect();
        if !not_allowed.is_empty() {
            missing.push(format!(
                "Access-Control-Allow-Headers naming {}",
                not_allowed.join(", ")
            ));
        }
        if let Some(method) = x.request_header("access-control-request-method") {
            let method = method.trim().to_ascii_uppercase();
            let methods = tokens(x.response_headers("access-control-allow-methods"));
            let simple = matches!(method.as_str(), "GET" | "HEAD" | "POST");
            if !simple
                && !methods
                    .iter()
                    .any(|m| m == "*" || m.eq_ignore_ascii_case(&method))
            {
                missing.push(format!("Access-Control-Allow-Methods naming {method}"));
            }
        }
        if missing.is_empty() {
            continue;
        }
        out.push(finding(
            CORS,
            SPEC_CORS,
            Severity::Warning,
            Some(x.ex),
            format!(
                "The CORS preflight {} from {origin} lacks {}: the browser will not send the real \
                 request. Configure the server's CORS layer to allow them.",
                label(x),
                missing.join("; ")
            ),
            vec![
                format!("status: {status}"),
                format!(
                    "access-control-request-headers: {}",
                    shown(x.request_header("access-control-request-headers"))
                ),
                format!(
                    "access-control-allow-origin: {}",
                    shown(x.response_header("access-control-allow-origin"))
                ),
                format!(
                    "access-control-allow-headers: {}",
                    shown(x.response_header("access-control-allow-headers"))
                ),
            ],
        ));
    }

    // Actual requests: one finding per endpoint and gap, at its first exchange.
    let mut groups: BTreeMap<(String, Vec<String>), Gap> = BTreeMap::new();
    for s in &session.steps {
        let x = s.x;
        if matches!(s.role, Role::Preflight | Role::Authorize) {
            continue;
        }
        let (Some(origin), Some(status)) = (origin_of(x), x.status()) else {
            continue;
        };
        if same_origin(x, origin) {
            continue;
        }
        let mut missing: Vec<String> = Vec::new();
        if !allows_origin(x, origin) {
            missing.push("Access-Control-Allow-Origin".to_string());
        }
        let exposed = tokens(x.response_headers("access-control-expose-headers"));
        let exposes = |name: &str| exposed.iter().any(|e| e == "*" || e == name);
        if status == 401
            && x.response_header("www-authenticate").is_some()
            && !exposes("www-authenticate")
        {
            missing.push("Access-Control-Expose-Headers naming WWW-Authenticate".to_string());
        }
        if x.response_header("mcp-session-id").is_some() && !exposes("mcp-session-id") {
            missing.push("Access-Control-Expose-Headers naming Mcp-Session-Id".to_string());
        }
        if missing.is_empty() {
            continue;
        }
        let key = (format!("{} {}", x.method(), x.path()), missing);
        let gap = groups.entry(key).or_insert_with(|| Gap {
            ex: x.ex,
            origin: origin.to_string(),
            evidence: vec![
                format!("status: {status}"),
                format!(
                    "access-control-allow-origin: {}",
                    shown(x.response_header("access-control-allow-origin"))
                ),
                format!(
                    "access-control-expose-headers: {}",
                    shown(x.response_header("access-control-expose-headers"))
                ),
            ],
            count: 0,
        });
        gap.count += 1;
    }
    for ((what, missing), gap) in groups {
        let Gap {
            ex,
            origin,
            mut evidence,
            count,
        } = gap;
        if count > 1 {
            evidence.push(format!("{count} responses like this"));
        }
        out.push(finding(
            CORS,
            SPEC_CORS,
            Severity::Warning,
            Some(ex),
            format!(
                "The answer to {what} #{ex} (a browser request from {origin}) lacks {}: the \
                 browser hides {} from the client. Add {} to the server's CORS configuration.",
                missing.join(" and "),
                if missing.iter().any(|m| m == "Access-Control-Allow-Origin") {
                    "the whole answer"
                } else {
                    "those headers"
                },
                if missing.len() == 1 { "it" } else { "them" }
            ),
            evidence,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    // --- the list ----------------------------------------------------------------------

    #[test]
    fn every_check_has_a_unique_id_and_a_spec() {
        let checks = checks();
        assert_eq!(checks.len(), 14);
        let ids: BTreeSet<&str> = checks.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), checks.len());
        assert!(checks.iter().all(|c| !c.spec.is_empty()));
    }

    // --- init-latency ------------------------------------------------------------------

    #[test]
    fn init_latency_fires_on_a_slow_initialize() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-06-18"))
                .ttfb(12 * SEC)
                .end(12 * SEC + MS, "complete"),
        );
        let f = one(
            &cap.run(init_latency),
            INIT_LATENCY,
            Severity::Warning,
            Some(1),
        );
        assert!(f.evidence[0].contains("12.0 s"), "{f:#?}");
    }

    #[test]
    fn init_latency_fires_on_an_initialize_never_answered() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .stream(&[(SEC, &nt("notifications/message"))])
                .end(3 * SEC, "complete"),
        );
        let f = one(
            &cap.run(init_latency),
            INIT_LATENCY,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("never answered"), "{f:#?}");
    }

    #[test]
    fn init_latency_judges_only_the_first_authenticated_initialize() {
        let mut cap = Cap::new();
        // The unauthenticated one is slow, but it is not the one connectors time.
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .answer(401, "application/json", "{}")
                .rh("www-authenticate", "Bearer resource_metadata=\"x\"")
                .ttfb(15 * SEC)
                .end(15 * SEC, "complete"),
        )
        .add(
            Ex::post(2, 20 * SEC, &rq(1, "initialize"))
                .h("authorization", "Bearer <redacted fp=aaaa1111>")
                .json(&init_ok(1, "2025-06-18"))
                .ttfb(200 * MS)
                .end(201 * MS, "complete"),
        );
        quiet(&cap.run(init_latency));
    }

    // --- mcp-url-redirect --------------------------------------------------------------

    #[test]
    fn mcp_url_redirect_fires_on_a_redirected_post() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .status(307)
                .rh("location", "/mcp/"),
        );
        let f = one(
            &cap.run(mcp_url_redirect),
            MCP_URL_REDIRECT,
            Severity::Warning,
            Some(1),
        );
        assert!(
            f.evidence.contains(&"location: /mcp/".to_string()),
            "{f:#?}"
        );
        assert!(f.message.contains("trailing slash"), "{f:#?}");
    }

    #[test]
    fn mcp_url_redirect_names_a_cross_origin_target() {
        let mut cap = Cap::new();
        // To the upstream's own host behind the proxy: the same origin for the client.
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .status(308)
                .rh("location", "http://127.0.0.1:2/v2/mcp"),
        );
        let f = one(
            &cap.run(mcp_url_redirect),
            MCP_URL_REDIRECT,
            Severity::Warning,
            Some(1),
        );
        assert!(!f.message.contains("another origin"), "{f:#?}");

        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .status(302)
                .rh("location", "https://login.example.com/mcp"),
        );
        let f = one(
            &cap.run(mcp_url_redirect),
            MCP_URL_REDIRECT,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("another origin"), "{f:#?}");
    }

    #[test]
    fn mcp_url_redirect_ignores_oauth_redirects() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(
                Ex::new(2, SEC, "GET", "/authorize?response_type=code&client_id=c")
                    .status(302)
                    .rh("location", "https://client.example/cb?code=x"),
            );
        quiet(&cap.run(mcp_url_redirect));
    }

    // --- edge-block --------------------------------------------------------------------

    const CHALLENGE: &str = "<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>cf-chl</body></html>";

    #[test]
    fn edge_block_fires_on_a_waf_page() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .answer(403, "text/html; charset=UTF-8", CHALLENGE)
                .rh("server", "cloudflare"),
        );
        let f = one(&cap.run(edge_block), EDGE_BLOCK, Severity::Error, Some(1));
        assert!(
            f.evidence
                .contains(&"title: Attention Required! | Cloudflare".to_string()),
            "{f:#?}"
        );
        assert!(
            f.evidence.contains(&"server: cloudflare".to_string()),
            "{f:#?}"
        );
        assert!(
            f.evidence
                .contains(&"user-agent: connector/1.0".to_string()),
            "{f:#?}"
        );
    }

    #[test]
    fn edge_block_fires_on_a_challenge_with_another_status() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "GET", "/.well-known/oauth-protected-resource").answer(
                400,
                "text/html",
                "<title>Just a moment...</title>",
            ),
        );
        one(&cap.run(edge_block), EDGE_BLOCK, Severity::Error, Some(1));

        // On the authorize page only a bot challenge counts.
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "GET", "/authorize?response_type=code").answer(
                403,
                "text/html",
                "<p>Please solve the CAPTCHA</p>",
            ),
        );
        one(&cap.run(edge_block), EDGE_BLOCK, Severity::Error, Some(1));
    }

    #[test]
    fn edge_block_ignores_app_errors_and_other_paths() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "tools/call")).answer(
            403,
            "application/json",
            r#"{"error":"forbidden"}"#,
        ))
        .add(Ex::new(2, SEC, "GET", "/favicon.ico").answer(403, "text/html", CHALLENGE))
        .add(
            Ex::new(3, 2 * SEC, "GET", "/authorize?response_type=code").answer(
                403,
                "text/html",
                "<title>Consent denied</title>",
            ),
        )
        .add(Ex::post(4, 3 * SEC, &rq(2, "tools/list")).answer(
            404,
            "text/html",
            "<title>Not found</title>",
        ));
        quiet(&cap.run(edge_block));
    }

    // --- accept-406 --------------------------------------------------------------------

    #[test]
    fn accept_406_fires_when_the_client_sent_both_types() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .h("accept", "application/json;q=0.9, text/event-stream")
                .answer(406, "application/json", "{}"),
        );
        one(&cap.run(accept_406), ACCEPT_406, Severity::Error, Some(1));
    }

    #[test]
    fn accept_406_blames_the_client_that_omitted_a_type() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .h("accept", "application/json")
                .answer(406, "application/json", "{}"),
        );
        let f = one(&cap.run(accept_406), ACCEPT_406, Severity::Info, Some(1));
        assert!(f.message.contains("text/event-stream"), "{f:#?}");
    }

    #[test]
    fn accept_406_is_quiet_when_the_server_accepts() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")));
        quiet(&cap.run(accept_406));
    }

    // --- response-content-type ---------------------------------------------------------

    #[test]
    fn response_content_type_fires_on_a_request_answered_as_text() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "tools/list")).answer(200, "text/plain", "ok"));
        one(
            &cap.run(response_content_type),
            RESPONSE_CONTENT_TYPE,
            Severity::Error,
            Some(1),
        );
    }

    #[test]
    fn response_content_type_warns_on_200_empty_for_a_notification() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(Ex::post(2, SEC, &nt("notifications/initialized")).status(200));
        one(
            &cap.run(response_content_type),
            RESPONSE_CONTENT_TYPE,
            Severity::Warning,
            Some(2),
        );
    }

    #[test]
    fn response_content_type_errs_on_a_body_for_a_notification() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &nt("notifications/initialized")).json("{}"));
        one(
            &cap.run(response_content_type),
            RESPONSE_CONTENT_TYPE,
            Severity::Error,
            Some(1),
        );
    }

    #[test]
    fn response_content_type_is_quiet_on_json_sse_and_202() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(Ex::post(2, SEC, &nt("notifications/initialized")).status(202))
            .add(Ex::post(3, 2 * SEC, &rq(2, "tools/list")).stream(&[(20 * MS, &ok(2))]))
            // Errors may come in any form.
            .add(Ex::post(4, 3 * SEC, &rq(3, "tools/call")).answer(500, "text/plain", "boom"));
        quiet(&cap.run(response_content_type));
    }

    // --- sse-buffering -----------------------------------------------------------------

    #[test]
    fn sse_buffering_fires_on_a_burst_at_the_end() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[
                    (2 * SEC, &nt("notifications/progress")),
                    (2 * SEC + 10 * MS, &ok(1)),
                ])
                .end(2 * SEC + 20 * MS, "complete"),
        );
        let f = one(
            &cap.run(sse_buffering),
            SSE_BUFFERING,
            Severity::Warning,
            Some(1),
        );
        assert!(f.evidence[0].contains("+1.995 s, +2.005 s"), "{f:#?}");
    }

    #[test]
    fn sse_buffering_fires_on_a_short_call_whose_progress_came_with_its_result() {
        // 300 ms of work, its two progress notifications and the result all in one burst.
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[
                    (300 * MS, &nt("notifications/progress")),
                    (300 * MS + 1_000, &nt("notifications/progress")),
                    (300 * MS + 2_000, &ok(1)),
                ])
                .end(300 * MS + 3_000, "complete"),
        );
        let f = one(
            &cap.run(sse_buffering),
            SSE_BUFFERING,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("X-Accel-Buffering: no;"), "{f:#?}");
        // The same short call with its progress spread out is not buffered; nor is a fast
        // call without progress.
        let mut spread = Cap::new();
        spread.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[
                    (100 * MS, &nt("notifications/progress")),
                    (200 * MS, &nt("notifications/progress")),
                    (300 * MS, &ok(1)),
                ])
                .end(300 * MS + 1_000, "complete"),
        );
        assert!(spread.run(sse_buffering).is_empty());
        let mut fast = Cap::new();
        fast.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[
                    (300 * MS, &nt("notifications/message")),
                    (300 * MS + 1_000, &ok(1)),
                ])
                .end(300 * MS + 2_000, "complete"),
        );
        assert!(fast.run(sse_buffering).is_empty());
    }

    #[test]
    fn sse_buffering_fires_on_a_compressed_stream() {
        let mut cap = Cap::new();
        cap.add(
            Ex::get(1, 100)
                .stream(&[(10 * MS, &nt("notifications/message"))])
                .rh("content-encoding", "gzip"),
        );
        let f = one(
            &cap.run(sse_buffering),
            SSE_BUFFERING,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("gzip"), "{f:#?}");
    }

    #[test]
    fn sse_buffering_fires_on_a_late_first_event() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[(12 * SEC, &ok(1))])
                .end(14 * SEC, "complete"),
        );
        let f = one(
            &cap.run(sse_buffering),
            SSE_BUFFERING,
            Severity::Warning,
            Some(1),
        );
        assert!(f.message.contains("first event"), "{f:#?}");
    }

    #[test]
    fn sse_buffering_is_quiet_on_a_live_stream() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "tools/call"))
                .stream(&[
                    (10 * MS, &nt("notifications/progress")),
                    (1500 * MS, &ok(1)),
                ])
                .end(1510 * MS, "complete"),
        )
        // A quick stream whose events come together is fine too.
        .add(
            Ex::post(2, 3 * SEC, &rq(2, "tools/list"))
                .stream(&[(20 * MS, &nt("notifications/message")), (21 * MS, &ok(2))])
                .end(22 * MS, "complete"),
        );
        quiet(&cap.run(sse_buffering));
    }

    // --- sse-response-delivery ---------------------------------------------------------

    #[test]
    fn sse_response_delivery_fires_when_the_stream_ends_without_the_answer() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(7, "tools/call"))
                .stream(&[(100 * MS, &nt("notifications/progress"))])
                .end(SEC, "complete"),
        );
        let f = one(
            &cap.run(sse_response_delivery),
            SSE_RESPONSE_DELIVERY,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("id 7"), "{f:#?}");
    }

    /// A subscriptions/listen stream the client closed is over, not unanswered.
    #[test]
    fn sse_response_delivery_lets_a_listen_stream_end_by_the_client() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(3, "subscriptions/listen"))
                .stream(&[(10 * MS, &nt("notifications/subscriptions/acknowledged"))])
                .end(SEC, "client_aborted"),
        );
        quiet(&cap.run(sse_response_delivery));
        // Ended by the server without its result, it is still the error it was.
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(3, "subscriptions/listen"))
                .stream(&[(10 * MS, &nt("notifications/subscriptions/acknowledged"))])
                .end(SEC, "complete"),
        );
        one(
            &cap.run(sse_response_delivery),
            SSE_RESPONSE_DELIVERY,
            Severity::Error,
            Some(1),
        );
    }

    #[test]
    fn sse_response_delivery_fires_when_a_json_answer_lacks_the_response() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(7, "tools/call")).json(&ok(8)));
        one(
            &cap.run(sse_response_delivery),
            SSE_RESPONSE_DELIVERY,
            Severity::Error,
            Some(1),
        );
    }

    #[test]
    fn sse_response_delivery_accepts_an_answer_on_a_resumed_stream() {
        let mut cap = Cap::new();
        let priming = "id: ev-1\nretry: 1000\ndata: ";
        let mut first = Ex::post(1, 100, &rq(7, "tools/call"))
            .stream(&[])
            .end(SEC, "complete");
        first.sse.push((50 * MS, priming.to_string()));
        cap.add(first)
            .add(
                Ex::get(2, 2 * SEC)
                    .h("last-event-id", "ev-1")
                    .stream(&[(100 * MS, &ok(7))])
                    .end(200 * MS, "complete"),
            )
            .add(
                Ex::post(3, 3 * SEC, &rq(8, "tools/list"))
                    .stream(&[(10 * MS, &ok(8))])
                    .end(20 * MS, "complete"),
            )
            // Still open when the recording stopped: too early to tell.
            .add(
                Ex::post(4, 4 * SEC, &rq(9, "tools/call"))
                    .stream(&[])
                    .open(),
            )
            .close(5 * SEC);
        quiet(&cap.run(sse_response_delivery));
    }

    /// The legacy HTTP+SSE transport: 202 to the POST, the answer (if `answered`) on the GET stream.
    fn legacy(answered: bool) -> Cap {
        let mut stream = Ex::new(1, 100, "GET", "/sse")
            .h("accept", "text/event-stream")
            .stream(&[])
            .open();
        stream.sse.push((
            5 * MS,
            "event: endpoint\ndata: /messages?sessionId=abc".into(),
        ));
        if answered {
            stream
                .sse
                .push((2 * SEC, format!("event: message\ndata: {}", ok(1))));
        }
        let mut cap = Cap::new();
        cap.add(stream)
            .add(
                Ex::new(2, SEC, "POST", "/messages?sessionId=abc")
                    .h("content-type", "application/json")
                    .send(&rq(1, "tools/list"))
                    .answer(202, "text/plain", "Accepted"),
            )
            .close(20 * SEC);
        cap
    }

    #[test]
    fn sse_response_delivery_follows_the_legacy_transport() {
        one(
            &legacy(false).run(sse_response_delivery),
            SSE_RESPONSE_DELIVERY,
            Severity::Error,
            Some(2),
        );
        quiet(&legacy(true).run(sse_response_delivery));
    }

    // --- session-header ----------------------------------------------------------------

    fn initialized_session(cap: &mut Cap) {
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-06-18"))
                .rh("mcp-session-id", "s-123"),
        );
    }

    #[test]
    fn session_header_fires_on_a_request_without_the_id() {
        let mut cap = Cap::new();
        initialized_session(&mut cap);
        cap.add(
            Ex::post(2, SEC, &nt("notifications/initialized"))
                .h("mcp-session-id", "s-123")
                .status(202),
        )
        .add(Ex::post(3, 2 * SEC, &rq(2, "tools/list")).answer(400, "text/plain", "no session"))
        .add(Ex::post(4, 3 * SEC, &rq(3, "tools/list")).answer(400, "text/plain", "no session"));
        let f = one(
            &cap.run(session_header),
            SESSION_HEADER,
            Severity::Warning,
            Some(3),
        );
        assert!(f.message.contains("s-123"), "{f:#?}");
    }

    #[test]
    fn session_header_notes_an_expired_session() {
        // Ten minutes after initialize: an expiry, not a session the server never had.
        let mut cap = Cap::new();
        initialized_session(&mut cap);
        cap.add(
            Ex::post(2, 600 * SEC, &rq(2, "tools/list"))
                .h("mcp-session-id", "s-123")
                .answer(404, "text/plain", "gone"),
        )
        .add(
            Ex::post(3, 601 * SEC, &rq(3, "initialize"))
                .json(&init_ok(3, "2025-06-18"))
                .rh("mcp-session-id", "s-456"),
        )
        .add(
            Ex::post(4, 602 * SEC, &rq(4, "tools/list"))
                .h("mcp-session-id", "s-456")
                .json(&ok(4)),
        );
        assert!(cap.run(session_lost).is_empty());
        let f = one(
            &cap.run(session_header),
            SESSION_HEADER,
            Severity::Info,
            Some(2),
        );
        assert!(f.message.contains("did re-initialize"), "{f:#?}");
    }

    #[test]
    fn session_lost_blames_replicas_when_a_session_is_unknown_right_after_initialize() {
        let mut cap = Cap::new();
        initialized_session(&mut cap);
        cap.add(
            Ex::post(2, SEC, &nt("notifications/initialized"))
                .h("mcp-session-id", "s-123")
                .answer(404, "application/json", r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"Session not found"}}"#),
        );
        let f = one(
            &cap.run(session_lost),
            SESSION_LOST,
            Severity::Error,
            Some(2),
        );
        assert!(f.message.contains("load balancer"), "{f:#?}");
        assert!(f.message.contains("Session not found"), "{f:#?}");
        // Not also an expiry note.
        assert!(
            cap.run(session_header).is_empty(),
            "{:#?}",
            cap.run(session_header)
        );
    }

    #[test]
    fn transport_mismatch_names_a_legacy_server_and_a_legacy_client() {
        // A Streamable HTTP client POSTs to an HTTP+SSE server's stream endpoint.
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .answer(405, "text/plain", "Method Not Allowed")
                .rh("allow", "GET"),
        );
        let f = one(
            &cap.run(transport_mismatch),
            TRANSPORT_MISMATCH,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("Allow: GET"), "{f:#?}");
        assert!(f.message.contains("legacy HTTP+SSE"), "{f:#?}");
        // A legacy client opens a GET stream on a Streamable HTTP server and gives up.
        let mut cap = Cap::new();
        cap.add(
            Ex::get(1, 100)
                .h("accept", "text/event-stream")
                .answer(
                    400,
                    "application/json",
                    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#,
                ),
        );
        let f = one(
            &cap.run(transport_mismatch),
            TRANSPORT_MISMATCH,
            Severity::Error,
            Some(1),
        );
        assert!(f.message.contains("never POSTed"), "{f:#?}");
        // An auto-mode client that falls back to POST is not a mismatch.
        cap.add(Ex::post(2, SEC, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")));
        assert!(cap.run(transport_mismatch).is_empty());
    }

    #[test]
    fn session_lost_says_the_id_never_reached_the_client() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(
                Ex::post(2, SEC, &nt("notifications/initialized"))
                    .h("mcp-protocol-version", "2025-06-18")
                    .answer(400, "application/json", r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"Bad Request: No valid session ID provided"}}"#),
            );
        let f = one(
            &cap.run(session_lost),
            SESSION_LOST,
            Severity::Error,
            Some(2),
        );
        assert!(f.message.contains("without Mcp-Session-Id"), "{f:#?}");
        assert!(f.message.contains("No valid session ID"), "{f:#?}");
    }

    #[test]
    fn session_header_is_quiet_when_every_request_carries_it() {
        let mut cap = Cap::new();
        initialized_session(&mut cap);
        cap.add(
            Ex::post(2, SEC, &nt("notifications/initialized"))
                .h("mcp-session-id", "s-123")
                .status(202),
        )
        .add(
            Ex::get(3, 2 * SEC)
                .h("mcp-session-id", "s-123")
                .stream(&[])
                .end(SEC, "complete"),
        )
        // A second client's session in the same capture.
        .add(
            Ex::post(4, 3 * SEC, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-06-18"))
                .rh("mcp-session-id", "s-999"),
        )
        .add(
            Ex::post(5, 4 * SEC, &rq(2, "tools/list"))
                .h("mcp-session-id", "s-123")
                .json(&ok(2)),
        );
        quiet(&cap.run(session_header));
    }

    // --- protocol-version-header -------------------------------------------------------

    #[test]
    fn protocol_version_header_fires_on_a_missing_header() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(Ex::post(2, SEC, &nt("notifications/initialized")).status(202))
            .add(Ex::post(3, 2 * SEC, &rq(2, "tools/list")).json(&ok(2)));
        let f = one(
            &cap.run(protocol_version_header),
            PROTOCOL_VERSION_HEADER,
            Severity::Warning,
            Some(2),
        );
        assert!(f.message.contains("2025-06-18"), "{f:#?}");
    }

    #[test]
    fn protocol_version_header_errs_when_the_server_refuses_its_own_version() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-11-25")))
            .add(
                Ex::post(2, SEC, &rq(2, "tools/list"))
                    .h("mcp-protocol-version", "2025-11-25")
                    .answer(
                        400,
                        "application/json",
                        r#"{"error":"Unsupported protocol version"}"#,
                    ),
            );
        one(
            &cap.run(protocol_version_header),
            PROTOCOL_VERSION_HEADER,
            Severity::Error,
            Some(2),
        );
    }

    #[test]
    fn protocol_version_header_is_quiet_when_sent_or_not_required() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(
                Ex::post(2, SEC, &rq(2, "tools/list"))
                    .h("mcp-protocol-version", "2025-06-18")
                    .json(&ok(2)),
            );
        quiet(&cap.run(protocol_version_header));

        // Two clients, two versions, told apart by their session ids.
        let mut two = Cap::new();
        two.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-03-26"))
                .rh("mcp-session-id", "old"),
        )
        .add(
            Ex::post(2, SEC, &rq(1, "initialize"))
                .json(&init_ok(1, "2025-06-18"))
                .rh("mcp-session-id", "new"),
        )
        .add(
            Ex::post(3, 2 * SEC, &rq(2, "tools/list"))
                .h("mcp-session-id", "old")
                .json(&ok(2)),
        )
        .add(
            Ex::post(4, 3 * SEC, &rq(2, "tools/list"))
                .h("mcp-session-id", "new")
                .h("mcp-protocol-version", "2025-06-18")
                .json(&ok(2)),
        );
        quiet(&two.run(protocol_version_header));

        let mut old = Cap::new();
        old.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-03-26")))
            .add(Ex::post(2, SEC, &rq(2, "tools/list")).json(&ok(2)));
        quiet(&old.run(protocol_version_header));
    }

    // --- get-405 -----------------------------------------------------------------------

    #[test]
    fn get_405_notes_a_refused_stream() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(Ex::get(2, SEC).status(405).rh("allow", "POST"));
        one(&cap.run(get_405), GET_405, Severity::Info, Some(2));
    }

    #[test]
    fn get_405_is_quiet_when_the_stream_opens() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")))
            .add(Ex::get(2, SEC).stream(&[]).end(SEC, "complete"));
        quiet(&cap.run(get_405));
    }

    // --- tls-handshake-failures --------------------------------------------------------

    #[test]
    fn tls_handshake_failures_groups_by_reason() {
        let untrusted = "the client rejected our certificate (alert: unknown_ca): it does not \
                         trust the CA that issued it";
        let mut cap = Cap::new();
        cap.tls(1, untrusted, "mcp.example.com")
            .tls(2, untrusted, "mcp.example.com")
            .tls(3, "no cipher suite in common: the client offers none of the AES-GCM and ChaCha20-Poly1305 suites mcptap serves", "mcp.example.com");
        let findings = cap.run(tls_handshake_failures);
        assert_eq!(findings.len(), 2, "{findings:#?}");
        let ca = findings
            .iter()
            .find(|f| f.evidence.contains(&"count: 2".to_string()))
            .expect("the unknown_ca group");
        assert_eq!(ca.check, TLS_HANDSHAKE_FAILURES);
        assert_eq!(ca.severity, Severity::Error);
        assert_eq!(ca.exchange, None);
        assert!(
            ca.message
                .starts_with("2 TLS handshakes failed for mcp.example.com: the client rejected"),
            "{ca:#?}"
        );
        assert!(
            ca.message.contains("Serve a certificate the client trusts"),
            "{ca:#?}"
        );
        // Raw library reasons get advice too.
        assert!(tls_advice("received fatal alert: UnknownCA").starts_with("Serve a certificate"));
        assert!(
            tls_advice("client spoke plain HTTP to the TLS port").starts_with("Use an https://")
        );
        assert!(tls_advice("no certificate for SNI x (have: a)").starts_with("Add the name"));
    }

    #[test]
    fn tls_handshake_failures_is_quiet_without_errors() {
        let mut cap = Cap::new();
        cap.add(Ex::post(1, 100, &rq(1, "initialize")).json(&init_ok(1, "2025-06-18")));
        quiet(&cap.run(tls_handshake_failures));
    }

    // --- cors --------------------------------------------------------------------------

    const ORIGIN: &str = "http://localhost:6274";

    #[test]
    fn cors_fires_on_a_preflight_missing_headers() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "OPTIONS", "/mcp")
                .h("origin", ORIGIN)
                .h("access-control-request-method", "POST")
                .h(
                    "access-control-request-headers",
                    "authorization,content-type,mcp-protocol-version",
                )
                .status(204)
                .rh("access-control-allow-origin", "*")
                .rh("access-control-allow-headers", "*"),
        );
        let f = one(&cap.run(cors), CORS, Severity::Warning, Some(1));
        // `*` covers everything but Authorization.
        assert!(f.message.contains("naming authorization"), "{f:#?}");
        assert!(!f.message.contains("mcp-protocol-version"), "{f:#?}");
    }

    /// A 2026-07-28 browser client sends Mcp-Method and Mcp-Name: the preflight must allow them.
    #[test]
    fn cors_needs_the_2026_07_28_headers_allowed_when_a_browser_client_sends_them() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "OPTIONS", "/mcp")
                .h("origin", ORIGIN)
                .h("access-control-request-method", "POST")
                .h(
                    "access-control-request-headers",
                    "content-type,mcp-method,mcp-name,mcp-protocol-version",
                )
                .status(204)
                .rh("access-control-allow-origin", ORIGIN)
                .rh(
                    "access-control-allow-headers",
                    "content-type, mcp-protocol-version",
                ),
        );
        let f = one(&cap.run(cors), CORS, Severity::Warning, Some(1));
        assert!(f.message.contains("naming mcp-method, mcp-name"), "{f:#?}");
    }

    #[test]
    fn cors_fires_on_an_answer_the_browser_cannot_read() {
        let mut cap = Cap::new();
        cap.add(
            Ex::post(1, 100, &rq(1, "initialize"))
                .h("origin", ORIGIN)
                .json(&init_ok(1, "2025-06-18"))
                .rh("access-control-allow-origin", ORIGIN)
                .rh("mcp-session-id", "s-1"),
        )
        .add(
            Ex::post(2, SEC, &rq(1, "initialize"))
                .h("origin", ORIGIN)
                .json(&init_ok(1, "2025-06-18"))
                .rh("access-control-allow-origin", ORIGIN)
                .rh("mcp-session-id", "s-2"),
        );
        let f = one(&cap.run(cors), CORS, Severity::Warning, Some(1));
        assert!(f.message.contains("Mcp-Session-Id"), "{f:#?}");
        assert!(
            f.evidence.contains(&"2 responses like this".to_string()),
            "{f:#?}"
        );
    }

    #[test]
    fn cors_is_quiet_when_configured_or_not_a_browser() {
        let mut cap = Cap::new();
        cap.add(
            Ex::new(1, 100, "OPTIONS", "/mcp")
                .h("origin", ORIGIN)
                .h("access-control-request-method", "POST")
                .h(
                    "access-control-request-headers",
                    "authorization, content-type",
                )
                .status(204)
                .rh("access-control-allow-origin", ORIGIN)
                .rh(
                    "access-control-allow-headers",
                    "Authorization, Content-Type, Mcp-Session-Id, MCP-Protocol-Version",
                ),
        )
        .add(
            Ex::post(2, SEC, &rq(1, "initialize"))
                .h("origin", ORIGIN)
                .h("authorization", "Bearer <redacted fp=aaaa1111>")
                .answer(401, "application/json", "{}")
                .rh("www-authenticate", "Bearer")
                .rh("access-control-allow-origin", ORIGIN)
                .rh(
                    "access-control-expose-headers",
                    "WWW-Authenticate, Mcp-Session-Id",
                ),
        );
        quiet(&cap.run(cors));

        // No Origin anywhere: not a browser, CORS does not apply.
        let mut plain = Cap::new();
        plain
            .add(Ex::new(1, 100, "OPTIONS", "/mcp").status(404))
            .add(
                Ex::post(2, SEC, &rq(1, "initialize"))
                    .json(&init_ok(1, "2025-06-18"))
                    .rh("mcp-session-id", "s-1"),
            );
        quiet(&plain.run(cors));
    }

    // --- robustness --------------------------------------------------------------------

    /// One random exchange: method, body, status, content type, start, time to headers, SSE
    /// blocks, how it ends, which odd headers it has.
    type Odd = (
        usize,
        usize,
        u16,
        usize,
        u64,
        u64,
        Vec<(u64, usize)>,
        usize,
        usize,
    );

    fn odd() -> impl proptest::strategy::Strategy<Value = Odd> {
        let t = 0u64..30 * SEC;
        (
            0usize..4,
            0usize..5,
            100u16..600,
            0usize..4,
            t.clone(),
            t.clone(),
            proptest::collection::vec((t, 0usize..4), 0..4),
            0usize..3,
            0usize..4,
        )
    }

    /// A capture of odd exchanges: times out of order, ends before headers, stray headers.
    fn odd_capture(xs: Vec<Odd>) -> Cap {
        let methods = ["POST", "GET", "OPTIONS", "DELETE"];
        let bodies = [
            rq(1, "initialize"),
            nt("notifications/initialized"),
            ok(1),
            "<html>".to_string(),
            rq(2, "tools/call"),
        ];
        let types = [
            "application/json",
            "text/event-stream",
            "text/html",
            "text/plain",
        ];
        let datas = [init_ok(1, "2025-06-18"), ok(2), "not json".into(), nt("x")];
        let mut cap = Cap::new();
        for (i, (m, b, status, ct, t, ttfb, events, end, odd)) in xs.into_iter().enumerate() {
            let mut x = Ex::post(i as u64 + 1, t, &bodies[b])
                .answer(status, types[ct], "<title>Just a moment</title>")
                .ttfb(ttfb);
            x.method = methods[m];
            x.sse = events
                .iter()
                .map(|(t, d)| (*t, format!("data: {}", datas[*d])))
                .collect();
            x = match end {
                0 => x.open(),
                1 => x.end(ttfb / 2, "client_aborted"),
                _ => x.end(ttfb + 1, "complete"),
            };
            x = match odd {
                0 => x.h("origin", ORIGIN).rh("mcp-session-id", "s"),
                1 => x.no_h("accept").h("mcp-protocol-version", "2025-06-18"),
                2 => x
                    .h("authorization", "Bearer <redacted fp=aaaa1111>")
                    .rh("content-encoding", "br"),
                _ => x,
            };
            cap.add(x);
        }
        cap.tls(1, "odd", "");
        cap
    }

    proptest::proptest! {
        /// No capture, however odd, makes a check panic.
        #[test]
        fn no_check_panics(xs in proptest::collection::vec(odd(), 0..8)) {
            let cap = odd_capture(xs);
            for check in checks() {
                let _ = cap.run(check.run);
            }
        }
    }
}
