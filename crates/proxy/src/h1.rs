//! The HTTP/1.1 fast path. A client connection's plain exchanges are parsed with `httparse`
//! and forwarded as bytes on the connection's own task, each body teed to the recorder as
//! it passes: no second HTTP stack, no task or channel between client and upstream.
//!
//! Plain means: an HTTP/1.1 request whose head and whole body (`Content-Length`, at most
//! [`MAX_BODY_IN_HAND`]) are already read, no `Upgrade`, `Expect` or `Transfer-Encoding`,
//! an origin-form target, a `Host`; an HTTP/1.1 upstream. Anything else (a split or
//! malformed head, HTTP/1.0, HTTP/2, a chunked or large upload, CONNECT) goes to hyper,
//! with the bytes already read, and hyper serves the rest of the connection: the two
//! paths record the same events.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::forward::ConnContext;
use super::headers::HOP_BY_HOP_NAMES as HOP_BY_HOP;
use super::pool::{Raw, RawConnect, SendError};
use super::record::ExchangeLog;
use super::record::{Producer, RequestHead};
use super::upstream;
use crate::record::body::Tap;
use mcptap_capture::headers::is_event_stream;
use mcptap_capture::model::Headers;
use mcptap_capture::model::ServedBy;
use mcptap_capture::{Direction, Outcome};

/// The largest request body the fast path takes whole before forwarding; a larger one
/// (an upload) goes to hyper, which streams it.
pub const MAX_BODY_IN_HAND: usize = 64 * 1024;
/// Header lines a message may have (hyper's limit too).
const MAX_HEADERS: usize = 100;
/// The largest upstream response head read (hyper's client reads about as much).
pub const MAX_RESPONSE_HEAD: usize = 400 * 1024;
/// Bytes a client may send ahead (pipelined) while its last request is being answered.
const MAX_PIPELINED: usize = 128 * 1024;
/// A buffer larger than this is not kept by an idle connection.
const MAX_IDLE_BUFFER: usize = 64 * 1024;
/// Bytes read from a socket at a time.
const READ_SIZE: usize = 16 * 1024;
/// The most read from the upstream at a time, for a large body.
const MAX_READ_SIZE: usize = 256 * 1024;
/// Body bytes below this are copied behind the response head, for one write.
const COALESCE: usize = 16 * 1024;

/// How a fast-path connection ended.
pub enum Served<S> {
    /// Closed, with the error that closed it, if any.
    Closed(Option<String>),
    /// Hyper takes over, with the bytes read and not yet served.
    Fallback(Rewind<S>),
}

/// What the connection does after one request.
enum Step {
    Next,
    Close(Option<String>),
    Fallback,
}

/// Serves `io` on the fast path for as long as its requests are plain.
pub async fn serve<S>(
    io: S,
    ctx: &Arc<ConnContext>,
    header_timeout: Option<Duration>,
    max_head: usize,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Served<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Conn {
        io,
        buf: BytesMut::with_capacity(READ_SIZE),
        upstream: None,
        ctx,
        max_head,
        peer_ip: ctx.peer.ip().to_string(),
        origin: origin(&ctx.route.upstream),
        header_alarm: Alarm::default(),
        upstream_alarm: Alarm::default(),
    };
    let step = loop {
        if conn.buf.is_empty() {
            if conn.buf.capacity() > MAX_IDLE_BUFFER {
                // A large pipelined burst is over: an idle connection keeps a small buffer.
                conn.buf = BytesMut::with_capacity(READ_SIZE);
            } else if conn.buf.capacity() < READ_SIZE / 4 {
                // What is left of the buffer after the last exchange's bytes were split off.
                conn.buf.reserve(READ_SIZE);
            }
        }
        // The header timeout runs from when the proxy starts waiting for a request, idle
        // time included, as hyper's does.
        let deadline = header_timeout.map(|limit| (tokio::time::Instant::now() + limit, limit));
        if conn.buf.is_empty() {
            if *stopping.borrow() {
                break Step::Close(None);
            }
            // Waiting for the next request, and not past the start of a shutdown.
            let read = tokio::select! {
                // `biased` (here and below): the awaited bytes first, the rest when they are
                // not here, and no random draw per poll.
                biased;
                r = conn.io.read_buf(&mut conn.buf) => r,
                limit = until(&mut conn.header_alarm, deadline) => {
                    break Step::Close(Some(header_timeout_error(limit)))
                }
                _ = stopping.changed() => break Step::Close(None),
            };
            match read {
                Ok(0) => break Step::Close(None),
                Ok(_) => {}
                Err(e) => break Step::Close(Some(e.to_string())),
            }
        }
        match conn.exchange(deadline, stopping).await {
            Step::Next => continue,
            other => break other,
        }
    };
    if let Some(raw) = conn.upstream.take() {
        ctx.route.pool.put_raw(raw);
    }
    match step {
        Step::Fallback => Served::Fallback(Rewind {
            prefix: conn.buf.freeze(),
            inner: conn.io,
        }),
        Step::Close(error) => {
            let _ = conn.io.shutdown().await;
            Served::Closed(error)
        }
        Step::Next => unreachable!("the loop breaks on other steps only"),
    }
}

struct Conn<'a, S> {
    io: S,
    /// Bytes read from the client and not yet served.
    buf: BytesMut,
    /// The upstream connection kept between this client connection's exchanges.
    upstream: Option<Box<Raw>>,
    ctx: &'a Arc<ConnContext>,
    max_head: usize,
    /// The client's address as `X-Forwarded-For` names it.
    peer_ip: String,
    /// The upstream's scheme and authority, the start of every recorded upstream URL.
    origin: String,
    /// The timers of `--header-timeout` and `--upstream-timeout`, kept between exchanges.
    header_alarm: Alarm,
    upstream_alarm: Alarm,
}

/// A request head the fast path takes, as forwarded and as recorded.
struct Plain {
    head_len: usize,
    body_len: usize,
    method: String,
    target: String,
    /// The upstream's URL for it.
    upstream_url: String,
    headers: Headers,
    /// The request as it goes upstream, head and body.
    forwarded: Vec<u8>,
    /// `Connection: close` from the client.
    close: bool,
    head: bool,
    /// RFC 9110 §9.2.2: it may be sent again if a kept connection turns out closed.
    idempotent: bool,
}

/// What the bytes at the start of a client connection's buffer are.
enum Parse {
    /// A request the fast path takes, whole.
    Plain(Plain),
    /// The start of a head.
    Partial,
    /// Something for hyper.
    Other,
}

/// What the fast path needs to take a request head: where it goes and how it is marked.
pub struct HeadRules<'a> {
    /// Largest head taken; a longer one is hyper's to refuse (431).
    pub max_head: usize,
    pub upstream: &'a Uri,
    pub preserve_host: bool,
    /// The client's address as `X-Forwarded-For` names it.
    pub peer_ip: &'a str,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
    /// The upstream's scheme and authority, the start of the recorded upstream URL.
    pub origin: &'a str,
}

/// The request at the start of `buf`, if the fast path takes it: a whole HTTP/1.1 head and its
/// whole body, with nothing that needs hyper (chunked or Expect bodies, upgrades, CONNECT,
/// absolute targets, conflicting lengths, a missing or repeated Host).
fn parse_plain(buf: &[u8], rules: &HeadRules<'_>) -> Parse {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        // Not all here yet; a head past the limit is hyper's to refuse (431).
        Ok(httparse::Status::Partial) if buf.len() < rules.max_head => return Parse::Partial,
        _ => return Parse::Other,
    };
    if head_len > rules.max_head || req.version != Some(1) {
        return Parse::Other;
    }
    match take(buf, &req, head_len, rules) {
        Some(plain) => Parse::Plain(plain),
        None => Parse::Other,
    }
}

/// A parsed request head, if the fast path takes it and its whole body is here.
fn take(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    head_len: usize,
    rules: &HeadRules<'_>,
) -> Option<Plain> {
    let text = HeadText::new(&buf[..head_len]);
    let method = req.method?;
    // A fragment is not part of the target (hyper drops it too).
    let target = req.path?.split('#').next().unwrap_or("");
    if method == "CONNECT" || !target.starts_with('/') {
        return None;
    }
    let mut body_len: Option<u64> = None;
    let mut host: Option<&str> = None;
    let mut close = false;
    let mut named: Vec<&str> = Vec::new();
    let mut prior_xff: Option<&[u8]> = None;
    for field in req.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            // A list ("5, 5") is hyper's to refuse, as it does.
            if field.value.contains(&b',') {
                return None;
            }
            let n = content_length(field.value)?;
            if body_len.is_some_and(|m| m != n) {
                return None;
            }
            body_len = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return None;
        } else if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return None;
            }
            host = Some(text.of(field.value)?);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in text.of(field.value)?.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                }
                named.push(token);
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") && prior_xff.is_none() {
            prior_xff = Some(field.value);
        }
    }
    let host = host?;
    let sent_length = body_len.is_some();
    let body_len = body_len.unwrap_or(0);
    if body_len > MAX_BODY_IN_HAND as u64 {
        return None;
    }
    let body_len = body_len as usize;
    if buf.len() < head_len + body_len {
        return None;
    }
    let url = upstream::upstream_uri(rules.upstream, target).ok()?;
    let upstream_pq = url.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");

    let mut out = Vec::with_capacity(head_len + 160 + body_len);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(upstream_pq.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for field in req.headers.iter() {
        let name = field.name;
        // The framing, Host and X-Forwarded-* fields are the proxy's to write, whatever
        // `Connection` names.
        let skip = HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("host")
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host");
        if !skip {
            put_field(&mut out, name.as_bytes(), field.value);
        }
    }
    if sent_length {
        put_field(
            &mut out,
            b"content-length",
            itoa::Buffer::new().format(body_len).as_bytes(),
        );
    }
    let upstream_host = if rules.preserve_host {
        host
    } else {
        url.authority().map_or("", |a| a.as_str())
    };
    put_field(&mut out, b"host", upstream_host.as_bytes());
    let ip = rules.peer_ip;
    match prior_xff.filter(|v| !v.trim_ascii().is_empty()) {
        Some(prior) => {
            let mut chain = prior.to_vec();
            chain.extend_from_slice(b", ");
            chain.extend_from_slice(ip.as_bytes());
            put_field(&mut out, b"x-forwarded-for", &chain);
        }
        None => put_field(&mut out, b"x-forwarded-for", ip.as_bytes()),
    }
    let proto: &[u8] = if rules.https { b"https" } else { b"http" };
    put_field(&mut out, b"x-forwarded-proto", proto);
    put_field(&mut out, b"x-forwarded-host", host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&buf[head_len..head_len + body_len]);
    Some(Plain {
        head_len,
        body_len,
        method: method.to_string(),
        target: target.to_string(),
        upstream_url: [rules.origin, upstream_pq].concat(),
        headers: to_record(req.headers, &text, |_| false),
        forwarded: out,
        close,
        head: method == "HEAD",
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
    })
}

/// A request on its way upstream.
struct Outgoing<'a> {
    bytes: &'a [u8],
    head_request: bool,
    idempotent: bool,
}

/// Why no upstream response head came.
enum NoAnswer {
    /// Not sent: no connection could be made.
    Connect(SendError),
    /// The connection failed or the head was not HTTP.
    Failed(String),
    /// A kept connection closed before answering: the request may go once more.
    Stale(String),
    /// `--upstream-timeout` passed.
    Timeout(Duration),
    /// A new connection chose HTTP/2 after the request was on the record.
    Http2,
    /// The client closed its connection (or it failed) while the upstream was thinking.
    ClientGone(io::Error),
}

/// An upstream response head, as forwarded and as recorded.
struct Answer {
    status: u16,
    version: &'static str,
    headers: Headers,
    /// The head as it goes to the client, framing and all.
    head: Vec<u8>,
    framing: Framing,
    /// Whether the connection can carry another request after this response.
    reusable: bool,
    event_stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the upstream closes; the client gets it chunked.
    Close,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<'_, S> {
    /// Serves one request from `buf`, or says hyper must.
    async fn exchange(
        &mut self,
        header_deadline: Option<(tokio::time::Instant, Duration)>,
        stopping: &tokio::sync::watch::Receiver<bool>,
    ) -> Step {
        // The whole head first; a body not all here with it makes the request hyper's,
        // which streams it.
        let mut plain = loop {
            match self.plain() {
                Parse::Plain(plain) => break plain,
                Parse::Other => return Step::Fallback,
                Parse::Partial => {
                    self.buf.reserve(READ_SIZE);
                    let read = tokio::select! {
                        biased;
                        r = self.io.read_buf(&mut self.buf) => r,
                        limit = until(&mut self.header_alarm, header_deadline) => {
                            return Step::Close(Some(header_timeout_error(limit)))
                        }
                    };
                    match read {
                        Ok(n) if n > 0 => {}
                        // hyper records how the head broke off.
                        _ => return Step::Fallback,
                    }
                }
            }
        };
        let arrived = Instant::now();
        let ctx = self.ctx;
        // The exchange begins (its number, its request on the record) when its head is in,
        // as on the general path, so numbers follow arrival. Only while an https upstream
        // might still choose HTTP/2 does the connection come first: then the request,
        // unrecorded, can still go to hyper.
        let early = (!ctx.route.pool.may_choose_h2()).then(|| self.begin(&mut plain, arrived));
        // `--upstream-timeout` counts from the head's arrival.
        let deadline = ctx
            .route
            .upstream_timeout
            .map(|limit| (tokio::time::Instant::from_std(arrived) + limit, limit));
        let obtain = async {
            let kept = self
                .upstream
                .take()
                .and_then(|mut raw| raw.alive().then_some(raw));
            match kept {
                Some(raw) => Ok(Ok((raw, true))),
                None => match ctx.route.pool.raw(false).await {
                    Ok(RawConnect::Raw(raw)) => {
                        let reused = raw.facts.opened_at < arrived;
                        Ok(Ok((raw, reused)))
                    }
                    Ok(RawConnect::H2) => Err(()),
                    Err(e) => Ok(Err(NoAnswer::Connect(e))),
                },
            }
        };
        let first = match deadline {
            Some((at, limit)) => match tokio::time::timeout_at(at, obtain).await {
                Ok(got) => got,
                Err(_) => Ok(Err(NoAnswer::Timeout(limit))),
            },
            None => obtain.await,
        };
        let ((log, body), first) = match (early, first) {
            (Some(begun), Ok(first)) => (begun, first),
            (Some(begun), Err(())) => (begun, Err(NoAnswer::Http2)),
            (None, Ok(first)) => (self.begin(&mut plain, arrived), first),
            (None, Err(())) => return Step::Fallback,
        };
        let shared = &ctx.shared;
        let recorder = &shared.recorder;
        let ex = log.ex;
        let mut request = Tap::new(
            ex,
            Direction::Request,
            recorder.clone(),
            log.clone(),
            shared.max_body,
        );
        // A body is on the record once it has gone upstream (none, if no connection took
        // it); an empty one has ended already.
        let mut unsent = (!body.is_empty()).then_some(body);
        if unsent.is_none() {
            request.end(Instant::now());
        }
        let outgoing = Outgoing {
            bytes: &plain.forwarded,
            head_request: plain.head,
            idempotent: plain.idempotent,
        };
        let sent = {
            let client = (&mut self.io, &mut self.buf);
            let sending = std::pin::pin!(async {
                match first {
                    Err(no) => Err(no),
                    Ok(first) => {
                        send(ctx, first, &outgoing, (&mut request, &mut unsent), client).await
                    }
                }
            });
            within(sending, &mut self.upstream_alarm, deadline).await
        };
        drop(request);
        let close = plain.close || *stopping.borrow();
        let (mut raw, answer) = match sent {
            Ok(got) => got,
            Err(no) => return self.no_answer(&log, no, close).await,
        };
        let at = Instant::now();
        log.record_response(
            at,
            answer.status,
            answer.version,
            answer.headers,
            Producer::Upstream,
            Some(raw.facts),
        );
        let limit = if answer.event_stream {
            u64::MAX
        } else {
            shared.max_body
        };
        let mut response = Tap::new(ex, Direction::Response, recorder.clone(), log, limit);
        let mut head = answer.head;
        if close {
            // Before the blank line that ends the head.
            head.truncate(head.len() - 2);
            head.extend_from_slice(b"connection: close\r\n\r\n");
        }
        let client = (&mut self.io, &mut self.buf);
        match relay(client, &mut raw, head, answer.framing, &mut response).await {
            Ok(()) => {
                if answer.reusable && raw.buf.is_empty() {
                    raw.idle_since = Instant::now();
                    if raw.buf.capacity() > MAX_IDLE_BUFFER {
                        raw.buf = BytesMut::new();
                    }
                    self.upstream = Some(raw);
                }
                if close {
                    Step::Close(None)
                } else {
                    Step::Next
                }
            }
            Err(Broken::Upstream(why)) => {
                response.fail(Instant::now(), why.clone());
                Step::Close(Some(format!("the upstream response broke off: {why}")))
            }
            Err(Broken::Client(e)) => {
                response.abandon(Instant::now());
                Step::Close(Some(e.to_string()))
            }
        }
    }

    /// Takes the request out of `buf` and puts it on the record: the exchange's log, and
    /// its body (recorded once sent).
    fn begin(&mut self, plain: &mut Plain, arrived: Instant) -> (Arc<ExchangeLog>, Bytes) {
        let ctx = self.ctx;
        self.buf.advance(plain.head_len);
        let body = self.buf.split_to(plain.body_len).freeze();
        let shared = &ctx.shared;
        let log = ExchangeLog::proxied(shared, arrived, ServedBy::FastPath);
        ctx.exchanges.fetch_add(1, Ordering::Relaxed);
        log.record_request(RequestHead {
            conn: ctx.conn,
            method: std::mem::take(&mut plain.method),
            target: std::mem::take(&mut plain.target),
            version: "HTTP/1.1",
            headers: std::mem::take(&mut plain.headers),
            upstream: std::mem::take(&mut plain.upstream_url),
            route: Some(ctx.route.index),
        });
        (log, body)
    }

    /// The request at the start of `buf`, if the fast path takes it.
    fn plain(&self) -> Parse {
        let ctx = self.ctx;
        let rules = HeadRules {
            max_head: self.max_head,
            upstream: &ctx.route.upstream,
            preserve_host: ctx.route.preserve_host,
            peer_ip: &self.peer_ip,
            https: ctx.scheme == "https",
            origin: &self.origin,
        };
        parse_plain(&self.buf, &rules)
    }

    /// No response came: the client gets an answer in words (unless it left), recorded like
    /// any response.
    async fn no_answer(&mut self, log: &Arc<ExchangeLog>, no: NoAnswer, close: bool) -> Step {
        let upstream = &self.ctx.route.upstream;
        let (status, text) = match no {
            NoAnswer::Connect(e) => {
                let cause = upstream::error_chain(&e);
                let text = format!(
                    "mcptap: the upstream {upstream} could not be reached or failed: {cause}\n"
                );
                log.preset_outcome(Outcome::UpstreamError, cause);
                (StatusCode::BAD_GATEWAY, text)
            }
            NoAnswer::Failed(cause) | NoAnswer::Stale(cause) => {
                let text = format!(
                    "mcptap: the upstream {upstream} could not be reached or failed: {cause}\n"
                );
                log.preset_outcome(Outcome::UpstreamError, cause);
                (StatusCode::BAD_GATEWAY, text)
            }
            // No one to answer: the exchange's log, dropped with no response, records the
            // client going away before the upstream answered.
            NoAnswer::ClientGone(e) => return Step::Close(Some(e.to_string())),
            NoAnswer::Http2 => {
                let cause = "the upstream now speaks HTTP/2 on new connections".to_string();
                let text = format!(
                    "mcptap: the upstream {upstream} could not be reached or failed: {cause}\n"
                );
                log.preset_outcome(Outcome::UpstreamError, cause);
                (StatusCode::BAD_GATEWAY, text)
            }
            NoAnswer::Timeout(limit) => {
                let why = format!(
                    "the upstream sent no response headers within {:.1}s (--upstream-timeout)",
                    limit.as_secs_f64()
                );
                log.preset_outcome(Outcome::Timeout, why.clone());
                (StatusCode::GATEWAY_TIMEOUT, format!("mcptap: {why}\n"))
            }
        };
        let recorder = &self.ctx.shared.recorder;
        let at = Instant::now();
        let length = text.len().to_string();
        log.record_response(
            at,
            status.as_u16(),
            "HTTP/1.1",
            Headers::from_iter([
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", length.as_str()),
            ]),
            Producer::Proxy,
            None,
        );
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {length}\r\n{}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            if close { "connection: close\r\n" } else { "" },
        )
        .into_bytes();
        out.extend_from_slice(text.as_bytes());
        let mut tap = Tap::new(
            log.ex,
            Direction::Response,
            recorder.clone(),
            log.clone(),
            self.ctx.shared.max_body,
        );
        tap.frame(Bytes::from(text), at).await;
        tap.end(Instant::now());
        if let Err(e) = write(&mut self.io, &out).await {
            return Step::Close(Some(e.to_string()));
        }
        if close {
            Step::Close(None)
        } else {
            Step::Next
        }
    }
}

/// Sends a request on `first`, or, when that was a kept connection the upstream had closed
/// and the request may be repeated, once more on a new one; reads the response head. The
/// request body goes on the record once it has been written. Meanwhile the client is
/// watched: bytes it pipelines are kept, and its going away ends the wait.
async fn send<S: AsyncRead + Unpin>(
    ctx: &ConnContext,
    (mut raw, mut reused): (Box<Raw>, bool),
    request: &Outgoing<'_>,
    (tap, unsent): (&mut Tap<ExchangeLog>, &mut Option<Bytes>),
    (client, client_buf): (&mut S, &mut BytesMut),
) -> Result<(Box<Raw>, Answer), NoAnswer> {
    loop {
        let tried = async {
            write(&mut raw.io, request.bytes)
                .await
                .map_err(|e| NoAnswer::Stale(format!("sending the request failed: {e}")))?;
            if let Some(body) = unsent.take() {
                tap.last_frame(body, Instant::now()).await;
            }
            read_head(&mut raw, request.head_request).await
        };
        let outcome = tokio::select! {
            biased;
            r = tried => r,
            e = client_gone(client, client_buf) => Err(NoAnswer::ClientGone(e)),
        };
        match outcome {
            Ok(answer) => return Ok((raw, answer)),
            // Only a request that may be repeated (RFC 9110 §9.2.2): the upstream may have
            // acted on it before closing.
            Err(NoAnswer::Stale(_)) if reused && request.idempotent => {
                raw = match ctx.route.pool.raw(true).await {
                    Ok(RawConnect::Raw(fresh)) => fresh,
                    Ok(RawConnect::H2) => return Err(NoAnswer::Http2),
                    Err(e) => return Err(NoAnswer::Connect(e)),
                };
                reused = false;
            }
            Err(NoAnswer::Stale(why)) => return Err(NoAnswer::Failed(why)),
            Err(no) => return Err(no),
        }
    }
}

/// Resolves when the client has closed its connection or it failed, reading (and keeping)
/// what it sends meanwhile: a pipelined request, up to one whole request's worth.
async fn client_gone<S: AsyncRead + Unpin>(client: &mut S, buf: &mut BytesMut) -> io::Error {
    loop {
        if buf.len() >= MAX_PIPELINED {
            // Enough in hand: the client waits, as TCP makes it.
            return std::future::pending().await;
        }
        buf.reserve(READ_SIZE / 4);
        match client.read_buf(buf).await {
            Ok(0) => {
                return io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed its connection",
                )
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Reads a response head (passing over `1xx` interim answers) into an [`Answer`].
async fn read_head(raw: &mut Raw, head_request: bool) -> Result<Answer, NoAnswer> {
    let mut read_any = false;
    loop {
        if !raw.buf.is_empty() {
            read_any = true;
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut fields);
            match resp.parse(&raw.buf) {
                Ok(httparse::Status::Complete(n)) if n > MAX_RESPONSE_HEAD => {
                    return Err(too_large_head())
                }
                Ok(httparse::Status::Complete(n)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        raw.buf.advance(n);
                        continue;
                    }
                    let answer = answer(&resp, &HeadText::new(&raw.buf[..n]), head_request)?;
                    raw.buf.advance(n);
                    return Ok(answer);
                }
                Ok(httparse::Status::Partial) if raw.buf.len() < MAX_RESPONSE_HEAD => {}
                Ok(httparse::Status::Partial) => return Err(too_large_head()),
                Err(e) => {
                    return Err(NoAnswer::Failed(format!(
                        "the upstream's response is not HTTP/1.1: {e}"
                    )))
                }
            }
        }
        raw.buf.reserve(READ_SIZE);
        match raw.io.read_buf(&mut raw.buf).await {
            Ok(0) if read_any => {
                return Err(NoAnswer::Failed(
                    "the upstream closed the connection in the middle of its response head".into(),
                ))
            }
            Ok(0) => {
                return Err(NoAnswer::Stale(
                    "the upstream closed the connection before answering".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if read_any => return Err(NoAnswer::Failed(e.to_string())),
            Err(e) => return Err(NoAnswer::Stale(e.to_string())),
        }
    }
}

fn too_large_head() -> NoAnswer {
    NoAnswer::Failed(format!(
        "the upstream's response head is larger than {} KiB",
        MAX_RESPONSE_HEAD >> 10
    ))
}

/// The response head as recorded and as the client gets it.
fn answer(
    resp: &httparse::Response<'_, '_>,
    text: &HeadText<'_>,
    head_request: bool,
) -> Result<Answer, NoAnswer> {
    let status = resp.code.unwrap_or(0);
    let version = if resp.version == Some(0) {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    if status == 101 {
        return Err(NoAnswer::Failed(
            "the upstream switched protocols (101) on a request that asked for no upgrade".into(),
        ));
    }
    if status < 100 {
        return Err(NoAnswer::Failed(format!(
            "the upstream's status {status:03} is not an HTTP status code"
        )));
    }
    let mut named: Vec<&str> = Vec::new();
    let mut close = resp.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut content_type: Option<&str> = None;
    for field in resp.headers.iter() {
        let name = field.name;
        let value = text.of(field.value).unwrap_or("");
        if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let token = token.trim();
                if token.eq_ignore_ascii_case("close") {
                    close = true;
                }
                named.push(token);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = value.rsplit(',').next().unwrap_or("").trim();
            chunked = Some(last.eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(field.value).ok_or_else(|| {
                NoAnswer::Failed(format!(
                    "the upstream's Content-Length is not a number: {value:?}"
                ))
            })?;
            if length.is_some_and(|m| m != n) {
                return Err(NoAnswer::Failed(
                    "the upstream sent two different Content-Length values".into(),
                ));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("content-type") && content_type.is_none() {
            content_type = Some(value);
        }
    }
    let event_stream = content_type.is_some_and(is_event_stream);
    let bodiless = head_request || status == 204 || status == 304 || status < 200;
    let framing = if bodiless {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };
    let mut head = Vec::with_capacity(256 + resp.headers.len() * 48);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    head.push(b' ');
    head.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    let hop = |name: &str| {
        HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
            || named.iter().any(|n| name.eq_ignore_ascii_case(n))
    };
    for field in resp.headers.iter() {
        let name = field.name;
        // The framing fields are the proxy's to write, whatever `Connection` names.
        if !hop(name) && !name.eq_ignore_ascii_case("content-length") {
            put_field(&mut head, name.as_bytes(), field.value);
        }
    }
    match framing {
        Framing::Length(n) => put_field(
            &mut head,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        ),
        Framing::Chunked | Framing::Close => {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n")
        }
        // A HEAD or 304 answer's length describes the body it would have had.
        Framing::Empty => {
            if let Some(n) =
                length.filter(|_| status != 204 && status >= 200 && !hop("content-length"))
            {
                put_field(
                    &mut head,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
        }
    }
    head.extend_from_slice(b"\r\n");
    Ok(Answer {
        status,
        version,
        headers: to_record(resp.headers, text, hop),
        head,
        framing,
        reusable: !close && framing != Framing::Close,
        event_stream,
    })
}

/// A Content-Length value (RFC 9110 §8.6): a number, or a list repeating one number.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 18 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = part
            .iter()
            .fold(0, |n: u64, &digit| n * 10 + u64::from(digit - b'0'));
        if found.is_some_and(|m| m != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// How a response body stopped short.
enum Broken {
    Upstream(String),
    Client(io::Error),
}

/// Sends the response head and relays the body, recording it (its end too); the
/// connection's unread bytes stay in `raw.buf`.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    (client, client_buf): (&mut S, &mut BytesMut),
    raw: &mut Raw,
    mut head: Vec<u8>,
    framing: Framing,
    tap: &mut Tap<ExchangeLog>,
) -> Result<(), Broken> {
    let mut chunks = ChunkReader::default();
    let mut remaining = match framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut relayed: u64 = 0;
    let mut read_size = READ_SIZE;
    loop {
        if matches!(framing, Framing::Empty | Framing::Length(0)) {
            tap.end(Instant::now());
            return write(client, &head).await.map_err(Broken::Client);
        }
        if !raw.buf.is_empty() {
            let at = Instant::now();
            match framing {
                Framing::Length(_) => {
                    let take = remaining.min(raw.buf.len() as u64) as usize;
                    let data = raw.buf.split_to(take).freeze();
                    remaining -= take as u64;
                    relayed += take as u64;
                    // Ended when its last byte is in hand, as the other path has it: an
                    // exchange is over for the recorder before the client has it all.
                    if remaining == 0 {
                        tap.last_frame(data.clone(), at).await;
                    } else {
                        tap.frame(data.clone(), at).await;
                    }
                    pass(client, &mut head, &data).await?;
                    if remaining == 0 {
                        return flush_head(client, &mut head).await;
                    }
                }
                Framing::Chunked => {
                    let (used, done) = chunks
                        .feed(&raw.buf)
                        .map_err(|e| Broken::Upstream(e.to_string()))?;
                    let wire = raw.buf.split_to(used).freeze();
                    for range in chunks.data.drain(..) {
                        relayed += range.len() as u64;
                        tap.frame(wire.slice(range), at).await;
                    }
                    if done {
                        tap.end(Instant::now());
                    }
                    pass(client, &mut head, &wire).await?;
                    if done {
                        return flush_head(client, &mut head).await;
                    }
                }
                Framing::Close => {
                    let data = raw.buf.split().freeze();
                    relayed += data.len() as u64;
                    tap.frame(data.clone(), at).await;
                    head.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                    pass(client, &mut head, &data).await?;
                    head.extend_from_slice(b"\r\n");
                }
                Framing::Empty => {}
            }
        }
        if !head.is_empty() {
            // Nothing more in hand: what is ready goes out before waiting on the upstream
            // (an event stream's events must not wait for the next one).
            flush_head(client, &mut head).await?;
        }
        raw.buf.reserve(read_size);
        // Waiting on the upstream (an event stream may be quiet for hours): a client that
        // goes away meanwhile ends the exchange now.
        let read = tokio::select! {
            biased;
            r = raw.io.read_buf(&mut raw.buf) => r,
            e = client_gone(client, client_buf) => return Err(Broken::Client(e)),
        };
        match read {
            // A large body is read in larger pieces as it keeps filling them.
            Ok(n) if n >= read_size && read_size < MAX_READ_SIZE => read_size *= 2,
            Ok(0) if framing == Framing::Close => {
                tap.end(Instant::now());
                head.extend_from_slice(b"0\r\n\r\n");
                return flush_head(client, &mut head).await;
            }
            Ok(0) => {
                return Err(Broken::Upstream(match framing {
                    Framing::Length(_) => format!(
                        "the upstream closed the connection after {relayed} of {} body bytes",
                        relayed + remaining
                    ),
                    _ => format!(
                        "the upstream closed the connection in the middle of a chunked body, after {relayed} bytes"
                    ),
                }))
            }
            Ok(_) => {}
            Err(e) => return Err(Broken::Upstream(e.to_string())),
        }
    }
}

/// A connection's timer for one kind of deadline. Deadlines of a kind only move later, one
/// exchange after another, so the timer stays where it is set when the next deadline is
/// later: it goes off early (at most once per limit), finds the deadline not reached, and is
/// set again. Setting a timer per exchange took the timer wheel's lock twice.
#[derive(Default)]
struct Alarm(Option<Pin<Box<tokio::time::Sleep>>>);

impl Alarm {
    /// Ready once `at` has passed.
    fn poll_at(&mut self, cx: &mut Context<'_>, at: tokio::time::Instant) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() > at {
            sleep.as_mut().reset(at);
        }
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if tokio::time::Instant::now() >= at {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(at);
        }
    }

    /// Ready with the limit once the deadline, if there is one, has passed.
    fn poll_deadline(
        &mut self,
        cx: &mut Context<'_>,
        deadline: Option<(tokio::time::Instant, Duration)>,
    ) -> Poll<Duration> {
        match deadline {
            Some((at, limit)) => self.poll_at(cx, at).map(|()| limit),
            None => Poll::Pending,
        }
    }
}

/// Resolves at the deadline, if there is one, with its limit.
fn until(
    alarm: &mut Alarm,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> impl Future<Output = Duration> + '_ {
    std::future::poll_fn(move |cx| alarm.poll_deadline(cx, deadline))
}

/// `work`'s result, or `NoAnswer::Timeout` if the deadline passes first. `work` is pinned
/// where it was made: moving a future as large as an exchange's costs a copy of it.
fn within<'a, T, F: Future<Output = Result<T, NoAnswer>>>(
    mut work: Pin<&'a mut F>,
    alarm: &'a mut Alarm,
    deadline: Option<(tokio::time::Instant, Duration)>,
) -> impl Future<Output = Result<T, NoAnswer>> + 'a {
    std::future::poll_fn(move |cx| match work.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(out),
        Poll::Pending => alarm
            .poll_deadline(cx, deadline)
            .map(|limit| Err(NoAnswer::Timeout(limit))),
    })
}

fn header_timeout_error(limit: Duration) -> String {
    format!(
        "read header from client timeout: no whole request head within {:.1}s (--header-timeout)",
        limit.as_secs_f64()
    )
}

/// Queues `data` behind what `pending` holds (small bodies go out with their head in one
/// write) or writes both.
async fn pass<S: AsyncWrite + Unpin>(
    client: &mut S,
    pending: &mut Vec<u8>,
    data: &[u8],
) -> Result<(), Broken> {
    if pending.len() + data.len() <= COALESCE {
        pending.extend_from_slice(data);
        return Ok(());
    }
    flush_head(client, pending).await?;
    write(client, data).await.map_err(Broken::Client)
}

async fn flush_head<S: AsyncWrite + Unpin>(
    client: &mut S,
    pending: &mut Vec<u8>,
) -> Result<(), Broken> {
    if !pending.is_empty() {
        write(client, pending).await.map_err(Broken::Client)?;
        pending.clear();
    }
    Ok(())
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}

/// `scheme://authority` of an upstream URL, as `Uri`'s `Display` begins it.
fn origin(upstream: &Uri) -> String {
    let scheme = upstream.scheme_str().unwrap_or("http");
    let authority = upstream.authority().map_or("", |a| a.as_str());
    format!("{scheme}://{authority}")
}

fn put_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A head's bytes checked as UTF-8 once: a field's value is then a slice of that text (httparse's
/// values point into the parsed buffer) instead of a check of its own, which cost more than the
/// rest of recording the field.
struct HeadText<'a>(&'a str);

impl<'a> HeadText<'a> {
    /// Empty when the head is not all UTF-8: each value is then checked by itself.
    fn new(head: &'a [u8]) -> Self {
        HeadText(std::str::from_utf8(head).unwrap_or(""))
    }

    /// `value` as text, if it is UTF-8.
    fn of(&self, value: &'a [u8]) -> Option<&'a str> {
        // In the head's memory, the value's text is the same bytes at the same place.
        let at = (value.as_ptr() as usize).wrapping_sub(self.0.as_ptr() as usize);
        match at
            .checked_add(value.len())
            .and_then(|end| self.0.get(at..end))
        {
            Some(text) => Some(text),
            None => std::str::from_utf8(value).ok(),
        }
    }
}

/// Header fields as recorded (as `headers::to_record` has them from a `HeaderMap`): names
/// lowercased, each name at its first appearance with all its values in arrival order,
/// values decoded lossily; fields whose name `skip` accepts left out.
fn to_record<'a>(
    fields: &[httparse::Header<'a>],
    text: &HeadText<'a>,
    skip: impl Fn(&str) -> bool,
) -> Headers {
    let bytes = fields.iter().map(|f| f.name.len() + f.value.len()).sum();
    let mut record = Headers::with_capacity(fields.len(), bytes);
    for (i, field) in fields.iter().enumerate() {
        let name = field.name;
        // A repeated name went in with its first field.
        if skip(name)
            || fields[..i]
                .iter()
                .any(|f| f.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        for same in fields[i..]
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
        {
            match text.of(same.value) {
                Some(value) => record.push_lowercased(same.name, value),
                None => record.push_lowercased(same.name, &String::from_utf8_lossy(same.value)),
            }
        }
    }
    record
}

/// Follows a chunked body (RFC 9112 §7.1) as its bytes arrive: where each chunk's data is,
/// and where the body ends. The bytes themselves go on unchanged.
#[derive(Default)]
struct ChunkReader {
    state: ChunkState,
    /// Data ranges found by the last [`ChunkReader::feed`], in its input.
    data: Vec<std::ops::Range<usize>>,
}

#[derive(Default, Debug, PartialEq)]
enum ChunkState {
    /// At a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(u64),
    /// After a chunk's data: its line end.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    Done,
}

/// The longest chunk-size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl ChunkReader {
    /// Reads as far into `buf` as whole pieces allow; returns the bytes used and whether
    /// the body ended. Data ranges are left in `self.data`.
    fn feed(&mut self, buf: &[u8]) -> Result<(usize, bool), &'static str> {
        self.data.clear();
        let mut at = 0;
        loop {
            match self.state {
                ChunkState::Done => return Ok((at, true)),
                ChunkState::Size | ChunkState::Trailers => {
                    let rest = &buf[at..];
                    let Some(end) = memchr::memchr(b'\n', rest) else {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err("a chunk-size or trailer line is too long");
                        }
                        return Ok((at, false));
                    };
                    // CRLF only, as hyper reads it: a bare LF would reach the client as sent.
                    let Some(line) = rest[..end].strip_suffix(b"\r") else {
                        return Err("a chunk-size or trailer line ends in a bare LF");
                    };
                    at += end + 1;
                    if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            self.state = ChunkState::Done;
                        }
                        continue;
                    }
                    let digits = line
                        .split(|&b| b == b';')
                        .next()
                        .unwrap_or(b"")
                        .trim_ascii();
                    if digits.is_empty() || digits.len() > 15 {
                        return Err("a chunk size is not a hexadecimal number");
                    }
                    let mut size: u64 = 0;
                    for &d in digits {
                        let v = (d as char)
                            .to_digit(16)
                            .ok_or("a chunk size is not a hexadecimal number")?;
                        size = size * 16 + v as u64;
                    }
                    self.state = if size == 0 {
                        ChunkState::Trailers
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(left) => {
                    let avail = (buf.len() - at) as u64;
                    if avail == 0 {
                        return Ok((at, false));
                    }
                    let take = left.min(avail) as usize;
                    self.data.push(at..at + take);
                    at += take;
                    self.state = if take as u64 == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take as u64)
                    };
                }
                ChunkState::DataEnd => {
                    let rest = &buf[at..];
                    if rest.starts_with(b"\r\n") {
                        at += 2;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok((at, false));
                    } else {
                        return Err("a chunk's data does not end where its size says");
                    }
                    self.state = ChunkState::Size;
                }
            }
        }
    }
}

/// A stream with bytes already read from it put back in front: how a connection the fast
/// path has started reading goes to hyper.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    /// A stream nothing was read from.
    pub fn new(inner: S) -> Self {
        Rewind {
            prefix: Bytes::new(),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            if self.prefix.is_empty() {
                // The fast path's buffer is not held for the connection's life.
                self.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Properties of the fast path's head and framing code, checked on any input: by proptest on
/// every `cargo test` and by the `h1` fuzz target (fuzz/), which reach these through here.
#[doc(hidden)]
pub mod properties {
    use super::*;

    /// Any bytes as a client's request: no panic, and a head the fast path takes is
    /// forwarded whole and faithfully (its method first, its body last, the framing the
    /// proxy writes, nothing past the bytes it was given).
    pub fn request_head(data: &[u8]) {
        let upstream: Uri = "http://127.0.0.1:9/base/".parse().expect("a literal URL");
        for max_head in [64, 8192] {
            let rules = HeadRules {
                max_head,
                upstream: &upstream,
                preserve_host: data.first().is_some_and(|b| b & 1 == 1),
                peer_ip: "127.0.0.1",
                https: false,
                origin: "http://127.0.0.1:9",
            };
            match parse_plain(data, &rules) {
                Parse::Plain(plain) => {
                    assert!(
                        plain.head_len <= max_head,
                        "a head over the limit was taken"
                    );
                    assert!(plain.head_len + plain.body_len <= data.len());
                    let body = &data[plain.head_len..plain.head_len + plain.body_len];
                    assert!(plain.forwarded.starts_with(plain.method.as_bytes()));
                    assert!(plain.forwarded.ends_with(body));
                    assert!(plain.target.starts_with('/'));
                    assert!(plain.upstream_url.starts_with("http://127.0.0.1:9/base/"));
                    let head_end = plain.forwarded.len() - body.len();
                    let head = &plain.forwarded[..head_end];
                    assert!(
                        head.ends_with(b"\r\n\r\n"),
                        "the forwarded head is not closed"
                    );
                    let count = |needle: &[u8]| {
                        head.windows(needle.len())
                            .filter(|w| w.eq_ignore_ascii_case(needle))
                            .count()
                    };
                    assert_eq!(count(b"\r\nhost:"), 1, "one Host goes upstream");
                    assert_eq!(count(b"\r\ntransfer-encoding:"), 0);
                    assert!(count(b"\r\ncontent-length:") <= 1);
                }
                Parse::Partial => assert!(data.len() < max_head),
                Parse::Other => {}
            }
        }
    }

    /// Any bytes as a chunked body, fed whole or cut in two anywhere: no panic, and the same
    /// data, end and error either way (for a body that breaks, the data before the break may
    /// stop earlier when it arrived with the break).
    pub fn chunked_body(data: &[u8]) {
        let cut = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
        let whole = feed(&[data]);
        let split = feed(&[&data[..cut], &data[cut..]]);
        if whole.3.is_none() && split.3.is_none() {
            assert_eq!(whole, split, "cut at {cut}");
        } else {
            // A body that breaks, breaks the same way; the data passed on before the break
            // depends on where the bytes arrived (one is a start of the other), never on more.
            assert_eq!(whole.3, split.3, "cut at {cut}");
            let (short, long) = if whole.0.len() <= split.0.len() {
                (&whole.0, &split.0)
            } else {
                (&split.0, &whole.0)
            };
            assert!(
                long.starts_with(short),
                "cut at {cut}: {whole:?} / {split:?}"
            );
        }
    }

    /// What a reader made of `pieces`, arriving one after another: the data, the bytes used
    /// (0 when it broke), whether the body ended, and the error if it broke.
    fn feed(pieces: &[&[u8]]) -> (Vec<u8>, usize, bool, Option<&'static str>) {
        let mut reader = ChunkReader::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut data = Vec::new();
        let mut used_all = 0;
        for piece in pieces {
            pending.extend_from_slice(piece);
            match reader.feed(&pending) {
                Ok((used, end)) => {
                    for r in reader.data.drain(..) {
                        data.extend_from_slice(&pending[r]);
                    }
                    pending.drain(..used);
                    used_all += used;
                    if end {
                        return (data, used_all, true, None);
                    }
                }
                // Where in the input an error is met depends on the cut; what broke does not.
                Err(e) => return (data, 0, false, Some(e)),
            }
        }
        (data, used_all, false, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> (Vec<u8>, Vec<u8>, bool) {
        let mut reader = ChunkReader::default();
        let mut pending: Vec<u8> = Vec::new();
        let mut data = Vec::new();
        let mut passed = Vec::new();
        let mut done = false;
        for piece in pieces {
            pending.extend_from_slice(piece);
            let (used, end) = reader.feed(&pending).unwrap();
            for r in reader.data.drain(..) {
                data.extend_from_slice(&pending[r]);
            }
            passed.extend(pending.drain(..used));
            done = end;
        }
        (data, passed, done)
    }

    #[test]
    fn chunks_are_followed_across_any_split() {
        let body: &[u8] = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for cut in 0..body.len() {
            for cut2 in cut..body.len() {
                let (data, passed, done) =
                    feed_all(&[&body[..cut], &body[cut..cut2], &body[cut2..]]);
                assert_eq!(data, b"hello world", "cut at {cut}, {cut2}");
                assert_eq!(passed, body);
                assert!(done);
            }
        }
    }

    #[test]
    fn a_chunked_body_stops_at_its_end() {
        let mut reader = ChunkReader::default();
        let (used, done) = reader.feed(b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1 200").unwrap();
        assert!(done);
        assert_eq!(used, 13);
    }

    proptest::proptest! {
        #[test]
        fn any_request_bytes_parse_without_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            properties::request_head(&data);
        }

        #[test]
        fn near_requests_parse_without_panic(
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            cl in "[0-9 ,]{0,6}",
        ) {
            let mut data = format!("POST /mcp HTTP/1.1\r\nhost: h\r\ncontent-length: {cl}\r\n\r\n").into_bytes();
            data.extend_from_slice(&tail);
            properties::request_head(&data);
        }

        #[test]
        fn any_chunked_bytes_read_the_same_however_cut(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            properties::chunked_body(&data);
        }
    }

    #[test]
    fn bad_chunk_sizes_are_errors() {
        assert!(ChunkReader::default().feed(b"zz\r\n").is_err());
        assert!(ChunkReader::default().feed(b"3\r\nabcX").is_err());
        assert!(ChunkReader::default().feed(b"3\nabc\r\n").is_err());
        assert!(ChunkReader::default().feed(b"3\r\nabc\n0\r\n").is_err());
        assert!(ChunkReader::default()
            .feed(&vec![b'1'; MAX_CHUNK_LINE + 10])
            .is_err());
    }

    /// Polls the alarm once for `at`.
    async fn poll_once(alarm: &mut Alarm, at: tokio::time::Instant) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(alarm.poll_at(cx, at))).await
    }

    #[tokio::test]
    async fn an_alarm_waits_for_the_deadline_it_is_asked_for_not_the_one_it_was_set_to() {
        let limit = Duration::from_secs(1);
        let mut alarm = Alarm::default();
        let start = tokio::time::Instant::now();
        // Set for a first deadline and left there; the next one is later.
        assert!(poll_once(&mut alarm, start + Duration::from_millis(30))
            .await
            .is_pending());
        let later = start + Duration::from_millis(120);
        assert_eq!(until(&mut alarm, Some((later, limit))).await, limit);
        assert!(tokio::time::Instant::now() >= later);
        // An earlier deadline than the one set moves the alarm back.
        let far = tokio::time::Instant::now() + Duration::from_secs(30);
        assert!(poll_once(&mut alarm, far).await.is_pending());
        let soon = tokio::time::Instant::now() + Duration::from_millis(20);
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            until(&mut alarm, Some((soon, limit))),
        )
        .await;
        assert_eq!(waited, Ok(limit));
        assert!(tokio::time::Instant::now() >= soon);
    }

    #[test]
    fn content_length_is_a_number_or_a_list_repeating_one() {
        assert_eq!(content_length(b"1024"), Some(1024));
        assert_eq!(content_length(b" 7 ,7,\t7"), Some(7));
        assert_eq!(content_length(b"0"), Some(0));
        assert_eq!(
            content_length(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        for bad in [
            &b""[..],
            b"7,8",
            b"-1",
            b"+1",
            b"1 2",
            b"0x10",
            b"7,",
            b"1000000000000000000",
            b"\xff",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_field_value_is_text_from_the_head_or_on_its_own() {
        let head = b"Host: h\r\nX-A: caf\xc3\xa9\r\n";
        let text = HeadText::new(head);
        assert_eq!(text.of(&head[6..7]), Some("h"));
        assert_eq!(text.of(&head[14..19]), Some("café"));
        // Not from this head: checked by itself.
        assert_eq!(text.of(b"elsewhere"), Some("elsewhere"));
        assert_eq!(text.of(b"\xff"), None);
        // A head that is not UTF-8 still gives the values that are.
        let broken = b"X-A: \xff\r\nX-B: ok\r\n";
        let text = HeadText::new(broken);
        assert_eq!(text.of(&broken[5..6]), None);
        assert_eq!(text.of(&broken[13..15]), Some("ok"));
    }

    #[test]
    fn recorded_fields_group_repeated_names_at_their_first_place() {
        let fields = [
            httparse::Header {
                name: "Accept",
                value: b"a",
            },
            httparse::Header {
                name: "X-B",
                value: b"b",
            },
            httparse::Header {
                name: "accept",
                value: b"c",
            },
            httparse::Header {
                name: "Connection",
                value: b"close",
            },
        ];
        let got = to_record(&fields, &HeadText::new(b""), |name| {
            name.eq_ignore_ascii_case("connection")
        });
        let want = [("accept", "a"), ("accept", "c"), ("x-b", "b")];
        assert!(got.iter().eq(want));
    }

    proptest::proptest! {
        /// The grouping rule as a list of owned pairs had it: each field goes in after the
        /// last one of its name, or at the end.
        #[test]
        fn recorded_fields_go_after_the_last_of_their_name(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec!["a", "A", "b", "X-C", "x-c", "Connection", ""]),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..4),
                ),
                0..12,
            )
        ) {
            let fields: Vec<httparse::Header<'_>> = fields
                .iter()
                .map(|(name, value)| httparse::Header { name, value })
                .collect();
            let skip = |name: &str| name.eq_ignore_ascii_case("connection");
            let mut want: Vec<(String, String)> = Vec::new();
            for field in fields.iter().filter(|f| !skip(f.name)) {
                let name = field.name.to_ascii_lowercase();
                let value = String::from_utf8_lossy(field.value).into_owned();
                match want.iter().rposition(|(n, _)| *n == name) {
                    Some(last) => want.insert(last + 1, (name, value)),
                    None => want.push((name, value)),
                }
            }
            proptest::prop_assert_eq!(
                to_record(&fields, &HeadText::new(b""), skip),
                Headers::from(want)
            );
        }
    }

    #[tokio::test]
    async fn rewind_gives_back_its_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut r = Rewind {
            prefix: Bytes::from_static(b"hello"),
            inner: b,
        };
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
    }
}
