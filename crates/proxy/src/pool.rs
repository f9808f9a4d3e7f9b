//! The proxy's upstream connections, owned by the exchanges that use them.
//!
//! Each client connection keeps the HTTP/1.1 upstream connection its last exchange used
//! (its [`Slot`]) and sends its next request on it directly: no pool checkout, no hand-off
//! to a pool task, no task spawned to give the connection back. A connection goes back to
//! the slot when its response body has been read to the end, and to the route's [`Pool`]
//! when the client connection closes, for the next client connection to pick up. An
//! upstream that negotiates HTTP/2 gets one connection per route, shared by every exchange.

use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tower_service::Service;

use super::forward::UpstreamBody;
use super::upstream::{ConnectFacts, Connector};

/// An upstream connection unused for this long is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections a route keeps for client connections to come.
const MAX_IDLE: usize = 256;

/// The upstream connections of one route.
pub struct Pool {
    connector: Connector,
    /// The route's upstream (scheme and authority are what is dialled).
    origin: Uri,
    /// The shared connection, when the upstream speaks HTTP/2.
    h2: Mutex<Option<H2>>,
    /// Set once a connection to the upstream settled on HTTP/1.1.
    h1_seen: std::sync::atomic::AtomicBool,
    /// HTTP/1.1 connections left by client connections that closed, oldest first.
    idle: Mutex<Vec<H1>>,
    /// The same, for the HTTP/1.1 fast path, which reads and writes them as bytes.
    /// Boxed as the fast path holds them: moved in and out without copying 1 KiB each way.
    #[allow(clippy::vec_box)]
    raw_idle: Mutex<Vec<Box<Raw>>>,
    /// Whether a task is sweeping `idle` of connections past [`IDLE_TIMEOUT`].
    sweeping: Mutex<bool>,
    this: Weak<Pool>,
}

struct H1 {
    sender: http1::SendRequest<UpstreamBody>,
    facts: ConnectFacts,
    /// When its last response ended (or it was opened).
    idle_since: Instant,
}

impl H1 {
    /// Still open, and not idle so long that a firewall or the upstream may have dropped it
    /// without a word.
    fn usable(&self) -> bool {
        !self.sender.is_closed() && self.idle_since.elapsed() < IDLE_TIMEOUT
    }
}

/// An upstream connection as the dialler makes it (TCP, or TLS over TCP), timed.
type UpIo = <Connector as Service<Uri>>::Response;

/// An HTTP/1.1 upstream connection the fast path reads and writes as bytes.
pub struct Raw {
    pub io: TokioIo<UpIo>,
    pub facts: ConnectFacts,
    /// Bytes read from it and not yet used (a response head being parsed, body bytes).
    pub buf: bytes::BytesMut,
    /// When its last response ended (or it was opened).
    pub idle_since: Instant,
}

impl Raw {
    /// Not idle too long, and nothing waiting on it: no close, no reset, no stray bytes
    /// (any of which means it cannot carry another request). Looks without waiting.
    pub fn alive(&mut self) -> bool {
        if self.idle_since.elapsed() >= IDLE_TIMEOUT {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut peek = tokio::io::ReadBuf::new(&mut byte);
        matches!(
            tokio::io::AsyncRead::poll_read(std::pin::Pin::new(&mut self.io), &mut cx, &mut peek),
            Poll::Pending
        )
    }
}

/// What [`Pool::raw`] found.
pub enum RawConnect {
    /// Boxed: a TLS connection's state is large, and idle client connections hold theirs.
    Raw(Box<Raw>),
    /// The upstream chose HTTP/2: its connection is the route's shared one now.
    H2,
}

#[derive(Clone)]
struct H2 {
    sender: http2::SendRequest<UpstreamBody>,
    facts: ConnectFacts,
    /// When an exchange last started on it.
    used: Arc<Mutex<Instant>>,
    /// Set while no exchange has used it: the first one is the one that opened it (the
    /// fast path opens it, and hands its request to the HTTP/2 path).
    fresh: Arc<std::sync::atomic::AtomicBool>,
}

impl H2 {
    fn usable(&self) -> bool {
        !self.sender.is_closed() && lock(&self.used).elapsed() < IDLE_TIMEOUT
    }
}

/// The upstream connection a client connection keeps between its exchanges.
pub struct Slot {
    pool: Arc<Pool>,
    held: Mutex<Option<H1>>,
}

impl Slot {
    pub fn new(pool: Arc<Pool>) -> Arc<Slot> {
        Arc::new(Slot {
            pool,
            held: Mutex::new(None),
        })
    }

    fn take(&self) -> Option<H1> {
        lock(&self.held).take()
    }

    /// A connection whose response was read whole: kept for this client connection's next
    /// exchange, or (when an exchange running alongside already left one) given to the pool.
    fn give_back(&self, mut h1: H1) {
        h1.idle_since = Instant::now();
        let spare = {
            let mut held = lock(&self.held);
            match *held {
                None => {
                    *held = Some(h1);
                    None
                }
                Some(_) => Some(h1),
            }
        };
        if let Some(h1) = spare {
            self.pool.put_idle(h1);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(h1) = lock(&self.held).take() {
            self.pool.put_idle(h1);
        }
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the upstream (DNS, TCP, TLS): the request was not sent.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The connection failed while the exchange was on it.
    Http(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(e) => e.fmt(f),
            SendError::Http(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Connect(e) => e.source(),
            SendError::Http(e) => std::error::Error::source(e),
        }
    }
}

enum Fresh {
    H1(H1),
    H2(H2),
}

impl Pool {
    pub fn new(connector: Connector, origin: Uri) -> Arc<Pool> {
        Arc::new_cyclic(|this| Pool {
            connector,
            origin,
            h2: Mutex::new(None),
            h1_seen: std::sync::atomic::AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            raw_idle: Mutex::new(Vec::new()),
            sweeping: Mutex::new(false),
            this: this.clone(),
        })
    }

    /// Sends `req` (its URI absolute, on the route's origin) on an upstream connection:
    /// the shared HTTP/2 one, the slot's, an idle one of the pool's, or a new one. A request
    /// a reused connection turned away unsent (the upstream had just closed it) is sent once
    /// more on a new connection; the response carries the connection's [`ConnectFacts`].
    pub async fn send(
        &self,
        slot: &Arc<Slot>,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<UpstreamIncoming>, SendError> {
        // Set once a reused connection has turned the request away: then only a new one.
        let mut new_only = false;
        loop {
            // The connection this client connection kept comes first: an HTTP/1.1 upstream's
            // exchanges then never touch the route's shared state.
            let kept = if new_only {
                None
            } else {
                slot.take().filter(H1::usable)
            };
            let shared = if new_only || kept.is_some() {
                None
            } else {
                lock(&self.h2).as_ref().filter(|c| c.usable()).cloned()
            };
            if let Some(mut h2) = shared {
                match send_h2(&mut h2, req).await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(back) => {
                            req = back;
                            // Unless another exchange has already put a new one in its place.
                            let mut shared = lock(&self.h2);
                            if shared.as_ref().is_some_and(|c| c.sender.is_closed()) {
                                *shared = None;
                            }
                            drop(shared);
                            new_only = true;
                            continue;
                        }
                        None => return Err(SendError::Http(e.into_error())),
                    },
                }
            }
            let reused = match kept {
                Some(h1) => Some(h1),
                None if new_only => None,
                None => self.take_idle(),
            };
            let (mut h1, is_new) = match reused {
                Some(h1) => {
                    if !h1.sender.is_ready() {
                        // Just done with its last response, its task may not have said so yet.
                        tokio::task::yield_now().await;
                    }
                    if !h1.sender.is_ready() {
                        // Still busy (an early answer to an upload still being sent): another.
                        if !h1.sender.is_closed() {
                            self.put_idle(h1);
                        }
                        new_only = true;
                        continue;
                    }
                    (h1, false)
                }
                // Boxed: the handshakes make a large future, and every exchange future (which
                // hyper keeps beside each client connection, idle or not) would carry it.
                None => match Box::pin(self.connect()).await? {
                    Fresh::H1(h1) => (h1, true),
                    Fresh::H2(mut h2) => {
                        *lock(&self.h2) = Some(h2.clone());
                        return send_h2(&mut h2, req)
                            .await
                            .map_err(|e| SendError::Http(e.into_error()));
                    }
                },
            };
            origin_form(&mut req);
            match h1.sender.try_send_request(req).await {
                Ok(resp) => {
                    let facts = h1.facts;
                    let mut resp = resp.map(|body| UpstreamIncoming {
                        body,
                        back: Some((h1, slot.clone())),
                    });
                    resp.extensions_mut().insert(facts);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) if !is_new => {
                        req = back;
                        absolute_form(&mut req, &self.origin);
                        new_only = true;
                    }
                    _ => return Err(SendError::Http(e.into_error())),
                },
            }
        }
    }

    /// Dials the upstream and sets up HTTP/2 or HTTP/1.1, as TLS's ALPN decided.
    async fn connect(&self) -> Result<Fresh, SendError> {
        let io = self.dial().await?;
        let facts = io.facts();
        if io.connected().is_negotiated_h2() {
            Ok(Fresh::H2(self.start_h2(io).await?))
        } else {
            let (sender, conn) = http1::Builder::new()
                // The same response-head limit as the fast path's.
                .max_buf_size(crate::h1::MAX_RESPONSE_HEAD)
                .handshake(io)
                .await
                .map_err(SendError::Http)?;
            // The connection's own task (upgrades, 101, need `with_upgrades`). Its error also
            // reaches the exchange on it, which records it.
            tokio::spawn(conn.with_upgrades());
            Ok(Fresh::H1(H1 {
                sender,
                facts,
                idle_since: Instant::now(),
            }))
        }
    }

    /// A new connection to the upstream: TCP, then TLS for https.
    async fn dial(&self) -> Result<UpIo, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        connector
            .call(self.origin.clone())
            .await
            .map_err(SendError::Connect)
    }

    /// Sets up HTTP/2 on a connection whose TLS chose it, as the route's shared connection.
    async fn start_h2(&self, io: UpIo) -> Result<H2, SendError> {
        let facts = io.facts();
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        // Spawned as it is: an async block around it would hold it twice in the task.
        tokio::spawn(conn);
        Ok(H2 {
            sender,
            facts,
            used: Arc::new(Mutex::new(Instant::now())),
            fresh: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        })
    }

    /// Whether the upstream is known to speak HTTP/2 (then the fast path stands aside).
    pub fn speaks_h2(&self) -> bool {
        lock(&self.h2).is_some()
    }

    /// Whether a new connection might still choose HTTP/2: an https upstream none of whose
    /// connections has settled on HTTP/1.1 yet (plain http is always HTTP/1.1 here).
    pub fn may_choose_h2(&self) -> bool {
        self.origin.scheme_str() == Some("https")
            && !self.h1_seen.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A connection for the HTTP/1.1 fast path: an idle one, or a new one. When the
    /// upstream's TLS chooses HTTP/2, the new connection becomes the route's shared one
    /// and the fast path gets [`RawConnect::H2`].
    pub async fn raw(&self, new_only: bool) -> Result<RawConnect, SendError> {
        if !new_only {
            let mut idle = lock(&self.raw_idle);
            while let Some(mut raw) = idle.pop() {
                if raw.alive() {
                    return Ok(RawConnect::Raw(raw));
                }
            }
        }
        let io = self.dial().await?;
        if io.connected().is_negotiated_h2() {
            let h2 = self.start_h2(io).await?;
            *lock(&self.h2) = Some(h2);
            return Ok(RawConnect::H2);
        }
        self.h1_seen
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(RawConnect::Raw(Box::new(Raw {
            facts: io.facts(),
            io: TokioIo::new(io),
            buf: bytes::BytesMut::new(),
            idle_since: Instant::now(),
        })))
    }

    /// A fast-path connection whose last response was read whole, for a later client
    /// connection.
    pub fn put_raw(&self, mut raw: Box<Raw>) {
        if !raw.buf.is_empty() || !raw.alive() {
            return;
        }
        {
            let mut idle = lock(&self.raw_idle);
            if idle.len() >= MAX_IDLE {
                idle.remove(0);
            }
            idle.push(raw);
        }
        self.sweep_later();
    }

    fn take_idle(&self) -> Option<H1> {
        let mut idle = lock(&self.idle);
        while let Some(h1) = idle.pop() {
            if h1.usable() {
                return Some(h1);
            }
        }
        None
    }

    fn put_idle(&self, h1: H1) {
        if h1.sender.is_closed() {
            return;
        }
        {
            let mut idle = lock(&self.idle);
            if idle.len() >= MAX_IDLE {
                // The oldest goes: closed when its sender drops.
                idle.remove(0);
            }
            idle.push(h1);
        }
        self.sweep_later();
    }

    /// Closes idle connections past [`IDLE_TIMEOUT`], while there are any.
    fn sweep_later(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut sweeping = lock(&self.sweeping);
            if *sweeping {
                return;
            }
            *sweeping = true;
        }
        let pool = self.this.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(IDLE_TIMEOUT / 3).await;
                let Some(pool) = pool.upgrade() else { return };
                let mut idle = lock(&pool.idle);
                idle.retain(H1::usable);
                let mut raw_idle = lock(&pool.raw_idle);
                raw_idle.retain(|raw| raw.idle_since.elapsed() < IDLE_TIMEOUT);
                if idle.is_empty() && raw_idle.is_empty() {
                    *lock(&pool.sweeping) = false;
                    return;
                }
            }
        });
    }
}

async fn send_h2(
    h2: &mut H2,
    mut req: Request<UpstreamBody>,
) -> Result<Response<UpstreamIncoming>, hyper::client::conn::TrySendError<Request<UpstreamBody>>> {
    *req.version_mut() = Version::HTTP_2;
    *lock(&h2.used) = Instant::now();
    let mut facts = h2.facts;
    if h2.fresh.swap(false, std::sync::atomic::Ordering::Relaxed) {
        // Opened for this exchange, if before it began: not a reused connection.
        facts.opened_at = Instant::now();
    }
    let resp = h2.sender.try_send_request(req).await?;
    let mut resp = resp.map(|body| UpstreamIncoming { body, back: None });
    resp.extensions_mut().insert(facts);
    Ok(resp)
}

/// HTTP/1.1 asks for `/path?query`, not the absolute URL.
fn origin_form(req: &mut Request<UpstreamBody>) {
    if req.uri().scheme().is_some() {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(pq);
    }
}

/// Back to the absolute URL (for a retry that may land on HTTP/2).
fn absolute_form(req: &mut Request<UpstreamBody>, origin: &Uri) {
    if req.uri().scheme().is_none() {
        let mut parts = http::uri::Parts::default();
        parts.scheme = origin.scheme().cloned();
        parts.authority = origin.authority().cloned();
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    *req.version_mut() = Version::HTTP_11;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An upstream response body. An HTTP/1.1 connection goes back to its client
/// connection's slot once this body has been read to its end; a body dropped before its
/// end takes its connection with it (hyper closes it: the rest of the response is unread).
pub struct UpstreamIncoming {
    body: Incoming,
    back: Option<(H1, Arc<Slot>)>,
}

impl UpstreamIncoming {
    fn give_back(&mut self) {
        if let Some((h1, slot)) = self.back.take() {
            slot.give_back(h1);
        }
    }
}

impl Body for UpstreamIncoming {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for UpstreamIncoming {
    fn drop(&mut self) {
        // An empty body (HEAD, 204, 304) is never polled: its connection is free all the same.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
