//! The capture format, version 1: one JSON object per line, each an [`Event`].
//! Documented for users in `docs/capture-format.md`, with a JSON Schema beside it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The capture format version written in the `session` line.
pub const FORMAT_VERSION: u32 = 1;

/// A header list as recorded: `[name, value]` pairs, names lowercased, each name at its
/// first appearance with all its values in arrival order (duplicates kept).
pub use super::headers::Headers;

/// One line of a capture: when it happened, and what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Microseconds since the session started (monotonic clock).
    pub t: u64,
    /// Wall-clock time, RFC 3339 with microseconds, UTC.
    pub ts: String,
    #[serde(flatten)]
    pub body: EventBody,
}

/// What an event records; `kind` names the variant in the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventBody {
    Session(Session),
    ConnOpen(ConnOpen),
    ConnClose(ConnClose),
    TlsError(TlsError),
    Request(Request),
    Response(Response),
    Body(Body),
    Sse(Sse),
    End(End),
    Upgrade(Upgrade),
    Note(Note),
    SessionEnd(SessionEnd),
}

/// First line of every capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// Capture format version ([`FORMAT_VERSION`]).
    pub v: u32,
    pub tool: String,
    pub tool_version: String,
    /// A short random id that also ends the default file name.
    pub session_id: String,
    pub routes: Vec<Route>,
    pub options: SessionOptions,
    /// `fingerprint` (secrets replaced by keyed fingerprints) or `off` (`--no-redact`).
    pub redaction: String,
}

/// `routes[].listen` (and `conn_open.listener`) of a capture written by `mcptap replay`.
pub const LISTEN_REPLAY: &str = "replay";
/// `routes[].listen` (and `conn_open.listener`) of a capture written by `mcptap probe`.
pub const LISTEN_PROBE: &str = "probe";

/// One listener and the upstream it forwards to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub listen: String,
    pub upstream: String,
}

/// The options that shape what was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionOptions {
    pub max_body: u64,
    /// `wait` (lossless) or `drop`.
    pub on_full: String,
    pub preserve_host: bool,
    pub upstream_insecure: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<String>,
    /// Seconds to wait for upstream response headers; `null` when off.
    #[serde(default)]
    pub upstream_timeout_s: Option<f64>,
    pub grace_s: f64,
    /// `--rewrite-origins`: upstream origins in headers and bodies were rewritten to the
    /// proxy's (each rewrite is a `note`); left out when off.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rewrite_origins: bool,
}

/// TLS facts of a connection (filled in once the proxy terminates TLS).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TlsFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_offered: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
    /// Key exchange group, e.g. `X25519` (absent on a TLS 1.2 resumption, which has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_us: Option<u64>,
    #[serde(default)]
    pub resumed: bool,
}

/// A client connection was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnOpen {
    pub conn: u64,
    pub peer: String,
    pub local: String,
    pub listener: String,
    /// The index in `session.routes` of the listener that accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFacts>,
}

impl ConnOpen {
    /// The client's address without its port (`203.0.113.7`, `::1`).
    pub fn peer_ip(&self) -> String {
        match self.peer.parse::<std::net::SocketAddr>() {
            Ok(addr) => addr.ip().to_string(),
            Err(_) => self.peer.clone(),
        }
    }
}

/// A client connection ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnClose {
    pub conn: u64,
    /// `closed`, `error`, or `shutdown`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    pub exchanges: u64,
}

/// A TLS handshake that failed, with what the client offered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TlsError {
    pub peer: String,
    pub listener: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn_offered: Vec<String>,
    pub reason: String,
}

/// A request as the client sent it (redacted unless `--no-redact`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub ex: u64,
    pub conn: u64,
    pub method: String,
    /// The request target as received (origin form for HTTP/1.1, the full URI for HTTP/2).
    pub target: String,
    /// `HTTP/1.1`, `HTTP/2`…: a fixed text as the proxy records it, no allocation per request.
    pub version: Cow<'static, str>,
    pub headers: Headers,
    /// Where the proxy forwards it.
    pub upstream: String,
    /// The index in `session.routes` of the route it came in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<u32>,
}

/// Response headers as the client received them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ex: u64,
    pub status: u16,
    pub version: Cow<'static, str>,
    pub headers: Headers,
    /// `upstream`, or `proxy` for an answer the proxy made itself (502, 504).
    pub producer: Cow<'static, str>,
}

/// Which way a body travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Request,
    Response,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// Recorded body bytes. A plain message body is one event written when the message ends;
/// an event stream is written as it arrives, cut at line ends so that redaction sees whole lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Body {
    pub ex: u64,
    pub dir: Direction,
    /// 0, 1, 2… per exchange and direction.
    pub seq: u64,
    /// The bytes as UTF-8 text, when they are valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The bytes in standard base64, when they are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
    /// Wire bytes of the frames this event accounts for (before redaction and `--max-body`):
    /// the whole message for a plain body; for an event stream, the frames that arrived since
    /// the previous body event.
    pub len: u64,
    /// `[t, len]` of the frames this event accounts for, as they arrived (frames wholly past
    /// `--max-body` are not listed).
    pub frames: Vec<(u64, u64)>,
    /// The recording stopped at `--max-body`; the message went on (see `end`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The content coding (`gzip`, `deflate`, `br`, `zstd`) the body crossed in: `text` or
    /// `b64` hold the decoded content (redacted like any), `len` and `frames` count the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Why the body's bytes are left out: a coding that cannot be decoded, whose bytes cannot
    /// be shown free of secrets (`--no-redact` records them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omitted: Option<String>,
}

/// One block of an event stream (see [`crate::sse::SseEvent`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sse {
    pub ex: u64,
    /// Which body the stream was (almost always `response`).
    pub dir: Direction,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comments: Vec<String>,
    /// False for a block a browser would not dispatch (comments only, or cut off by the end of the stream).
    pub dispatched: bool,
}

/// How an exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Complete,
    ClientAborted,
    UpstreamAborted,
    UpstreamError,
    Timeout,
    ProxyShutdown,
}

/// Per-exchange timings, microseconds since the request headers arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Timings {
    /// Time spent opening a new upstream connection (TCP, and TLS for https); `null` when reused.
    #[serde(default)]
    pub upstream_connect_us: Option<u64>,
    pub reused_connection: bool,
    #[serde(default)]
    pub request_body_done_us: Option<u64>,
    /// Upstream response headers received.
    #[serde(default)]
    pub ttfb_us: Option<u64>,
    #[serde(default)]
    pub response_done_us: Option<u64>,
    pub total_us: u64,
}

/// Byte counts of both bodies, as they crossed the proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ByteCounts {
    pub request: u64,
    pub response: u64,
}

/// The last event of an exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct End {
    pub ex: u64,
    pub outcome: Outcome,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub timings: Timings,
    pub bytes: ByteCounts,
    /// Which bodies were recorded only up to `--max-body`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<Direction>,
    /// Which of the proxy's data paths served the exchange (absent in captures that
    /// `replay`, `mock` or `probe` wrote, which have no such choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<ServedBy>,
}

/// The proxy's two data paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServedBy {
    /// The HTTP/1.1 byte-relaying fast path.
    FastPath,
    /// hyper's HTTP/1.1 and HTTP/2 path (upgrades, chunked uploads, h2).
    Hyper,
}

/// An upgraded connection (WebSocket…) tunnelled after a 101, recorded when it closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upgrade {
    pub ex: u64,
    pub protocol: String,
    pub client_to_upstream: u64,
    pub upstream_to_client: u64,
    pub duration_us: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A fact about the proxy itself: events dropped, a write error, a reload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Note {
    /// A stable identifier: `events_dropped`, `write_error`, `shutdown`, …
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The exchange the fact is about (an origin rewrite), when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ex: Option<u64>,
}

/// Last line of a capture written by a proxy that shut down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub exchanges: u64,
    pub connections: u64,
    /// Lines in the file, the `session` line and this one included.
    pub events_written: u64,
    pub events_dropped: u64,
    /// Events lost to capture write errors (counted, not written).
    pub events_lost: u64,
    /// True when every exchange ended and was recorded before the file closed.
    pub clean: bool,
}
