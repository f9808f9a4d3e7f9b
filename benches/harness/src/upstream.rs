//! The fixed upstream every contender forwards to, run inside the harness process so that
//! SSE events can be stamped and measured on one monotonic clock.
//!
//! - `POST /json` reads the request body and answers a 1 KiB JSON-RPC result.
//! - `GET /sse?n=N&size=S&rate=R` sends N events of S bytes (wire size of the event) at R
//!   per second, each stamped with its send time; `n=0` sends one comment and then stays
//!   open and silent (an idle stream).
//! - `GET /big?bytes=N` streams N bytes with a Content-Length.
//! - `POST /mcp` is an MCP server (2025-06-18 Streamable HTTP, JSON responses): `initialize`
//!   with a fresh `Mcp-Session-Id`, `tools/list` of two tools, `tools/call`; a notification
//!   gets 202 and no body. No bearer token is checked.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds on the process's monotonic clock (the SSE stamps and their reader share it).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Size of the `/json` answer.
pub const JSON_SIZE: usize = 1024;
/// Size of each frame of a `/big` body.
const BIG_FRAME: usize = 256 * 1024;

/// What the upstream has seen, for the harness to wait on.
#[derive(Default)]
pub struct Stats {
    /// Idle event streams open now.
    pub idle_open: AtomicU64,
    /// MCP sessions `POST /mcp` opened (`initialize` answered).
    pub mcp_sessions: AtomicU64,
}

/// The running upstream: one plain listener (HTTP/1.1 and h2c) and one TLS listener.
pub struct Upstream {
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub stats: Arc<Stats>,
}

struct App {
    stats: Arc<Stats>,
    json: Bytes,
    big: Bytes,
    /// The `result` of every `tools/call`.
    tool_result: Vec<u8>,
}

/// Starts both listeners on the current runtime.
pub async fn start(cert: &Path, key: &Path) -> anyhow::Result<Upstream> {
    let stats = Arc::new(Stats::default());
    let app = Arc::new(App {
        stats: stats.clone(),
        json: Bytes::from(json_body()),
        big: Bytes::from(vec![b'x'; BIG_FRAME]),
        tool_result: tool_result(),
    });
    let plain = TcpListener::bind("127.0.0.1:0").await?;
    let tls = TcpListener::bind("127.0.0.1:0").await?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(cert, key)?));
    let up = Upstream {
        plain: plain.local_addr()?,
        tls: tls.local_addr()?,
        stats,
    };
    tokio::spawn(accept_loop(plain, app.clone(), None));
    tokio::spawn(accept_loop(tls, app, Some(acceptor)));
    Ok(up)
}

async fn accept_loop(listener: TcpListener, app: Arc<App>, tls: Option<tokio_rustls::TlsAcceptor>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors: let some close.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.handle(req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            match tls {
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            }
        });
    }
}

impl App {
    async fn handle(&self, req: Request<Incoming>) -> Response<UpBody> {
        let path = req.uri().path().to_string();
        let query = Query::parse(req.uri().query().unwrap_or(""));
        match (req.method().as_str(), path.as_str()) {
            ("POST", "/json") => {
                let _ = req.into_body().collect().await;
                respond(
                    StatusCode::OK,
                    "application/json",
                    UpBody::Full(Some(self.json.clone())),
                )
            }
            ("GET", "/sse") => {
                let n = query.get("n").unwrap_or(0);
                if n == 0 {
                    self.stats.idle_open.fetch_add(1, Ordering::AcqRel);
                    return respond(
                        StatusCode::OK,
                        "text/event-stream",
                        UpBody::Idle {
                            first: Some(Bytes::from_static(b": open\n\n")),
                            _open: IdleGuard(self.stats.clone()),
                        },
                    );
                }
                let size = query.get("size").unwrap_or(100) as usize;
                let rate = query.get("rate").unwrap_or(100).max(1);
                let (tx, rx) = mpsc::unbounded_channel();
                // A thread of its own paces the events: tokio's timer ticks in whole
                // milliseconds, too coarse for 1,000 events a second.
                std::thread::spawn(move || {
                    let period = Duration::from_secs_f64(1.0 / rate as f64);
                    let start = Instant::now();
                    for seq in 0..n {
                        let due = start + period * seq as u32;
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                        if tx.send(sse_event(seq, size)).is_err() {
                            break;
                        }
                    }
                });
                respond(StatusCode::OK, "text/event-stream", UpBody::Events(rx))
            }
            ("POST", "/mcp") => match req.into_body().collect().await {
                Ok(body) => self.mcp(&body.to_bytes()),
                Err(_) => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    UpBody::Full(Some(Bytes::from_static(b"unreadable body\n"))),
                ),
            },
            ("GET", "/big") => {
                let bytes = query.get("bytes").unwrap_or(0);
                respond(
                    StatusCode::OK,
                    "application/octet-stream",
                    UpBody::Big {
                        frame: self.big.clone(),
                        remaining: bytes,
                    },
                )
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                UpBody::Full(Some(Bytes::from_static(b"not found\n"))),
            ),
        }
    }

    /// One JSON-RPC message to `POST /mcp`, answered as a 2025-06-18 server answers it
    /// over Streamable HTTP with JSON responses (basic/transports, "Sending Messages to the
    /// Server"): a request gets its response, a notification 202 Accepted and no body.
    fn mcp(&self, body: &[u8]) -> Response<UpBody> {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
            let error =
                br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;
            return respond(
                StatusCode::BAD_REQUEST,
                "application/json",
                UpBody::Full(Some(Bytes::from_static(error))),
            );
        };
        let method = message.get("method").and_then(|m| m.as_str());
        let Some(id) = message.get("id").filter(|_| method.is_some()) else {
            let mut resp = Response::new(UpBody::Full(None));
            *resp.status_mut() = StatusCode::ACCEPTED;
            return resp;
        };
        let id = id.to_string();
        match method.unwrap_or_default() {
            "initialize" => {
                let n = self.stats.mcp_sessions.fetch_add(1, Ordering::Relaxed);
                let mut resp = respond(
                    StatusCode::OK,
                    "application/json",
                    UpBody::Full(Some(jsonrpc_result(&id, INITIALIZE_RESULT.as_bytes()))),
                );
                resp.headers_mut().insert(
                    "mcp-session-id",
                    session_id(n).parse().expect("hex digits and dashes"),
                );
                resp
            }
            "tools/list" => respond(
                StatusCode::OK,
                "application/json",
                UpBody::Full(Some(jsonrpc_result(&id, TOOLS_LIST_RESULT.as_bytes()))),
            ),
            "tools/call" => respond(
                StatusCode::OK,
                "application/json",
                UpBody::Full(Some(jsonrpc_result(&id, &self.tool_result))),
            ),
            "ping" => respond(
                StatusCode::OK,
                "application/json",
                UpBody::Full(Some(jsonrpc_result(&id, b"{}"))),
            ),
            _ => {
                let error = format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"Method not found"}}}}"#
                );
                respond(
                    StatusCode::OK,
                    "application/json",
                    UpBody::Full(Some(Bytes::from(error))),
                )
            }
        }
    }
}

const INITIALIZE_RESULT: &str = r#"{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"mcptap-bench-upstream","version":"0.0.0"}}"#;

const TOOLS_LIST_RESULT: &str = r#"{"tools":[{"name":"search","description":"Search the bench corpus","inputSchema":{"type":"object","properties":{"query":{"type":"string"},"limit":{"type":"integer"}},"required":["query"]}},{"name":"fetch","description":"Fetch one document of the bench corpus","inputSchema":{"type":"object","properties":{"id":{"type":"string"}},"required":["id"]}}]}"#;

/// Size of the text of a `tools/call` result.
const TOOL_TEXT_SIZE: usize = 400;

/// A `tools/call` result: one text block of [`TOOL_TEXT_SIZE`] bytes.
fn tool_result() -> Vec<u8> {
    let text: String = "result line of the bench corpus; "
        .chars()
        .cycle()
        .take(TOOL_TEXT_SIZE)
        .collect();
    format!(r#"{{"content":[{{"type":"text","text":"{text}"}}],"isError":false}}"#).into_bytes()
}

/// `{"jsonrpc":"2.0","id":ID,"result":RESULT}` with the request's id as it was sent.
fn jsonrpc_result(id: &str, result: &[u8]) -> Bytes {
    let mut body = Vec::with_capacity(40 + id.len() + result.len());
    body.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    body.extend_from_slice(id.as_bytes());
    body.extend_from_slice(br#","result":"#);
    body.extend_from_slice(result);
    body.push(b'}');
    Bytes::from(body)
}

/// A session id that looks like the UUIDs real servers hand out, distinct for each `n`.
fn session_id(n: u64) -> String {
    // splitmix64: distinct inputs give distinct, well-spread outputs.
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        z >> 32,
        (z >> 16) & 0xffff,
        z & 0xfff,
        n & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: UpBody) -> Response<UpBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert("content-type", content_type.parse().expect("static header"));
    if content_type == "text/event-stream" {
        headers.insert("cache-control", "no-cache".parse().expect("static header"));
    }
    resp
}

/// The `/json` answer: a JSON-RPC tool result padded to exactly [`JSON_SIZE`] bytes.
fn json_body() -> Vec<u8> {
    let head = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":""#;
    let tail = r#""}],"isError":false}}"#;
    let pad = JSON_SIZE - head.len() - tail.len();
    let mut body = String::with_capacity(JSON_SIZE);
    body.push_str(head);
    body.extend(std::iter::repeat_n('a', pad));
    body.push_str(tail);
    body.into_bytes()
}

/// One event of `size` wire bytes whose data carries its send time: `data: {"t":..}\n\n`.
fn sse_event(seq: u64, size: usize) -> Bytes {
    let head = format!(r#"data: {{"t":{},"seq":{seq},"pad":""#, now_us());
    let tail = "\"}\n\n";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut event = String::with_capacity(size.max(head.len() + tail.len()));
    event.push_str(&head);
    event.extend(std::iter::repeat_n('p', pad));
    event.push_str(tail);
    Bytes::from(event)
}

/// The query string as numbers.
struct Query(Vec<(String, u64)>);

impl Query {
    fn parse(q: &str) -> Self {
        Query(
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
                .collect(),
        )
    }
    fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

/// Counts an idle stream as open until the connection carrying it is gone.
pub struct IdleGuard(Arc<Stats>);

impl Drop for IdleGuard {
    fn drop(&mut self) {
        self.0.idle_open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upstream's response bodies.
pub enum UpBody {
    Full(Option<Bytes>),
    /// Events from the pacing thread; ends when the thread is done.
    Events(mpsc::UnboundedReceiver<Bytes>),
    /// One comment, then nothing, ever.
    Idle {
        first: Option<Bytes>,
        _open: IdleGuard,
    },
    /// `remaining` bytes, in slices of one shared frame.
    Big {
        frame: Bytes,
        remaining: u64,
    },
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            UpBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            UpBody::Events(rx) => rx.poll_recv(cx).map(|e| e.map(|b| Ok(Frame::data(b)))),
            UpBody::Idle { first, .. } => match first.take() {
                Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
                None => Poll::Pending,
            },
            UpBody::Big { frame, remaining } => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(frame.len() as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(frame.slice(..n)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpBody::Full(b) => b.is_none(),
            UpBody::Big { remaining, .. } => *remaining == 0,
            _ => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            UpBody::Big { remaining, .. } => SizeHint::with_exact(*remaining),
            _ => SizeHint::default(),
        }
    }
}

fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the certificate")?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("parsing the key")?
        .context("no private key in the key file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_their_sizes() {
        assert_eq!(json_body().len(), JSON_SIZE);
        assert_eq!(sse_event(7, 100).len(), 100);
        assert_eq!(sse_event(7, 16 * 1024).len(), 16 * 1024);
    }

    #[test]
    fn mcp_answers_are_json_rpc_with_the_request_id() {
        for (id, result) in [
            ("7", INITIALIZE_RESULT.as_bytes()),
            (r#""a-1""#, TOOLS_LIST_RESULT.as_bytes()),
            ("3", &tool_result()),
        ] {
            let body = jsonrpc_result(id, result);
            let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
            assert_eq!(v["id"].to_string(), id);
            assert!(v["result"].is_object(), "{v}");
        }
        assert!(tool_result().len() > TOOL_TEXT_SIZE);
        assert_ne!(session_id(1), session_id(2));
        assert_eq!(session_id(1).len(), 36);
    }
}
