//! One exchange: record the request, forward it to the configured upstream, record and
//! stream back the response. The upstream is fixed by configuration; nothing in the
//! request (Host, absolute-form target, CONNECT) can send it anywhere else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use super::headers;
use super::origins::OriginMap;
use super::pool::{Pool, Slot, UpstreamIncoming};
use super::record::{ExchangeLog, Shared};
use super::record::{Producer, RequestHead};
use super::rewrite::{self, BodyKind, Collected, Forwarded, Notes, Rewriting};
use super::upgrade;
use super::upstream::{self, ConnectFacts};
use crate::record::body::RecordingBody;
use mcptap_capture::headers::media_type;
use mcptap_capture::model::ServedBy;

use mcptap_capture::{Direction, Outcome};

/// A body the proxy sends upstream: the client's, recorded as it was sent (and with
/// `--rewrite-origins`, rewritten after that).
pub type UpstreamBody = Forwarded<RecordingBody<Incoming, ExchangeLog>>;
/// A body the proxy sends to the client: the upstream's, or one the proxy made.
pub type ClientBody = Either<
    RecordingBody<Forwarded<UpstreamIncoming>, ExchangeLog>,
    RecordingBody<Full<Bytes>, ExchangeLog>,
>;

/// What one listener forwards to, and how.
pub struct Route {
    /// The route's index in the capture's `session.routes`.
    pub index: u32,
    pub upstream: Uri,
    pub preserve_host: bool,
    pub upstream_timeout: Option<Duration>,
    /// The route's upstream connections.
    pub pool: Arc<Pool>,
    /// `--rewrite-origins`: every route's origins, public and upstream.
    pub rewriting: Option<Arc<Rewriting>>,
}

/// One client connection.
pub struct ConnContext {
    pub conn: u64,
    pub peer: SocketAddr,
    pub shared: Arc<Shared>,
    pub route: Arc<Route>,
    /// The upstream connection this client connection keeps between exchanges.
    pub upstream: Arc<Slot>,
    pub scheme: &'static str,
    /// Exchanges served on this connection.
    pub exchanges: std::sync::atomic::AtomicU64,
}

pub fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/?",
    }
}

/// Serves one request.
pub async fn handle(
    mut req: Request<Incoming>,
    ctx: Arc<ConnContext>,
) -> Result<Response<ClientBody>, Infallible> {
    let shared = &ctx.shared;
    let recorder = &shared.recorder;
    let log = ExchangeLog::proxied(shared, Instant::now(), ServedBy::Hyper);
    ctx.exchanges
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ex = log.ex;
    let client_version = req.version();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    let client_host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let rewriting = ctx.route.rewriting.as_ref().and_then(|r| {
        r.for_request(
            ctx.route.index as usize,
            client_host.as_deref(),
            req.headers(),
        )
    });
    // The query names the proxy's origins (an OAuth `resource`, a `redirect_uri`): the
    // upstream gets its own.
    let mut places: Vec<(String, usize)> = Vec::new();
    let upstream_pq = match rewriting
        .as_ref()
        .and_then(|rw| rw.to_upstream.rewrite_str(&path_and_query))
    {
        Some((pq, n)) => {
            places.push(("target".into(), n));
            pq
        }
        None => path_and_query.clone(),
    };
    let target = upstream::upstream_uri(&ctx.route.upstream, &upstream_pq);

    log.record_request(RequestHead {
        conn: ctx.conn,
        method: req.method().to_string(),
        target: req.uri().to_string(),
        version: version_str(client_version),
        headers: headers::to_record(req.headers()),
        upstream: target.as_ref().map(|u| u.to_string()).unwrap_or_default(),
        route: Some(ctx.route.index),
    });

    if req.method() == Method::CONNECT {
        return Ok(proxy_answer(
            &ctx,
            &log,
            StatusCode::METHOD_NOT_ALLOWED,
            "mcptap is a reverse proxy for one configured upstream; CONNECT is not supported\n",
            None,
            client_version,
        )
        .await);
    }
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            let text = format!("mcptap: cannot form the upstream URL for this request: {e}\n");
            return Ok(proxy_answer(
                &ctx,
                &log,
                StatusCode::BAD_REQUEST,
                &text,
                None,
                client_version,
            )
            .await);
        }
    };

    let head_request = req.method() == Method::HEAD;
    // Build the upstream request from the client's.
    let upgrade_requested = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade_requested.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let mut up_headers = parts.headers;
    headers::remove_hop_by_hop(&mut up_headers, upgrade_requested);
    // HTTP/1.1 requires a Host: the upstream's own when the client sent none.
    let host = if ctx.route.preserve_host {
        client_host
            .clone()
            .or_else(|| target.authority().map(|a| a.to_string()))
    } else {
        target.authority().map(|a| a.to_string())
    };
    if let Some(host) = host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        up_headers.insert(HOST, host);
    }
    headers::add_forwarded(
        &mut up_headers,
        &ctx.peer.ip().to_string(),
        ctx.scheme,
        client_host.as_deref(),
    );
    let recorded = RecordingBody::new(
        body,
        ex,
        Direction::Request,
        recorder.clone(),
        log.clone(),
        shared.max_body,
    );
    let notes = Notes {
        recorder: recorder.clone(),
        ex,
    };
    let up_body = match &rewriting {
        Some(rw) => {
            for (field, n) in
                rewrite::rewrite_fields(&rw.to_upstream, &mut up_headers, rewrite::REQUEST_FIELDS)
            {
                places.push((field.to_string(), n));
            }
            // A compressed response could not be rewritten: ask for it plain.
            up_headers.insert(
                http::header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            let body = rewrite_message(
                recorded,
                &mut up_headers,
                &rw.to_upstream,
                &notes,
                "request",
                &mut places,
            )
            .await;
            notes.rewritten("request", &places);
            body
        }
        None => Forwarded::Through(recorded),
    };
    let mut up_req = Request::new(up_body);
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = target;
    // HTTP/1.1 here; the pool speaks HTTP/2 where the upstream negotiated it.
    *up_req.version_mut() = Version::HTTP_11;
    *up_req.headers_mut() = up_headers;

    let sent = ctx.route.pool.send(&ctx.upstream, up_req);
    let result = match ctx.route.upstream_timeout {
        Some(limit) => match tokio::time::timeout(limit, sent).await {
            Ok(r) => Ok(r),
            Err(_) => Err(limit),
        },
        None => Ok(sent.await),
    };
    let mut resp = match result {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let cause = upstream::error_chain(&e);
            if let Some(why) = log.request_error() {
                log.preset_outcome(Outcome::ClientAborted, why.clone());
                return Ok(proxy_answer(
                    &ctx,
                    &log,
                    StatusCode::BAD_REQUEST,
                    &format!("mcptap: {why}\n"),
                    None,
                    client_version,
                )
                .await);
            }
            return Ok(upstream_failed(&ctx, &log, cause, client_version).await);
        }
        Err(limit) => {
            let why = format!(
                "the upstream sent no response headers within {:.1}s (--upstream-timeout)",
                limit.as_secs_f64()
            );
            log.preset_outcome(Outcome::Timeout, why.clone());
            return Ok(proxy_answer(
                &ctx,
                &log,
                StatusCode::GATEWAY_TIMEOUT,
                &format!("mcptap: {why}\n"),
                None,
                client_version,
            )
            .await);
        }
    };
    let at = Instant::now();
    let connect = resp.extensions().get::<ConnectFacts>().copied();
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_none() {
        // Relayed, it would leave the client with a switch it never asked for and no
        // protocol to speak.
        let cause = "the upstream switched protocols (101) on a request that asked for no upgrade";
        return Ok(upstream_failed(&ctx, &log, cause.to_string(), client_version).await);
    }
    let switching = status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some();
    // RFC 9112 §6.3: a body read by its Transfer-Encoding makes a Content-Length beside it
    // meaningless; it stays on the record but must not reach the client, who would frame by it.
    let coded = resp.headers().contains_key(http::header::TRANSFER_ENCODING);
    headers::remove_hop_by_hop(resp.headers_mut(), switching);
    let (mut resp_parts, resp_body) = resp.into_parts();
    let mut places: Vec<(String, usize)> = Vec::new();
    let resp_body = match &rewriting {
        Some(rw) if !switching => {
            for (field, n) in rewrite::rewrite_fields(
                &rw.to_public,
                &mut resp_parts.headers,
                rewrite::RESPONSE_FIELDS,
            ) {
                places.push((field.to_string(), n));
            }
            let bodiless = head_request
                || status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED;
            if bodiless {
                Forwarded::Through(resp_body)
            } else if rewrite::body_kind(&resp_parts.headers) == BodyKind::EventStream
                && rewrite::encoded(&resp_parts.headers).is_none()
            {
                resp_parts.headers.remove(http::header::CONTENT_LENGTH);
                Forwarded::Lines(Box::new(rewrite::LineRewriter::new(
                    resp_body,
                    rw.to_public.clone(),
                    notes.clone(),
                    "response",
                )))
            } else {
                rewrite_message(
                    resp_body,
                    &mut resp_parts.headers,
                    &rw.to_public,
                    &notes,
                    "response",
                    &mut places,
                )
                .await
            }
        }
        _ => Forwarded::Through(resp_body),
    };
    let mut resp = Response::from_parts(resp_parts, resp_body);
    log.record_response(
        at,
        status.as_u16(),
        version_str(resp.version()),
        headers::to_record(resp.headers()),
        Producer::Upstream,
        connect,
    );
    if coded {
        resp.headers_mut().remove(http::header::CONTENT_LENGTH);
    }
    notes.rewritten("response", &places);
    if switching {
        let protocol = resp
            .headers()
            .get(http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown")
            .to_string();
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            upgrade::tunnel(
                ex,
                protocol,
                client_upgrade,
                upstream_upgrade,
                shared.clone(),
            );
        }
    }
    *resp.version_mut() = client_version;
    // An event stream is parsed whole into `sse` events, however long it runs; other bodies
    // are recorded up to --max-body.
    let limit = if is_event_stream(resp.headers()) {
        u64::MAX
    } else {
        shared.max_body
    };
    Ok(resp.map(|body| {
        Either::Left(RecordingBody::new(
            body,
            ex,
            Direction::Response,
            recorder.clone(),
            log.clone(),
            limit,
        ))
    }))
}

/// A JSON or form body with `--rewrite-origins`: held whole (up to [`rewrite::BODY_LIMIT`]),
/// its origins swapped and its Content-Length fixed; any other body, or one too large or
/// compressed, goes on as it is, with a note saying why when it could have named an origin.
async fn rewrite_message<B>(
    body: B,
    headers: &mut http::HeaderMap,
    map: &OriginMap,
    notes: &Notes,
    what: &'static str,
    places: &mut Vec<(String, usize)>,
) -> Forwarded<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    let kind = rewrite::body_kind(headers);
    if kind == BodyKind::Other || http_body::Body::is_end_stream(&body) {
        return Forwarded::Through(body);
    }
    if let Some(encoding) = rewrite::encoded(headers) {
        notes.left_alone(
            what,
            &format!("it is compressed (Content-Encoding: {encoding})"),
        );
        return Forwarded::Through(body);
    }
    let limit = rewrite::BODY_LIMIT;
    if rewrite::declared_length(headers).is_some_and(|n| n > limit as u64) {
        notes.left_alone(
            what,
            &format!("it is larger than the {} MiB rewrite limit", limit >> 20),
        );
        return Forwarded::Through(body);
    }
    let collected = rewrite::collect(body, limit).await;
    let data = match &collected {
        Collected::Whole { data, .. } => map.rewrite(data).map(|(text, n)| {
            let media = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map_or("", media_type)
                .to_string();
            places.push((format!("body ({media})"), n));
            places.push((format!("Content-Length {} → {}", data.len(), text.len()), 0));
            rewrite::fix_length(headers, text.len());
            Bytes::from(text)
        }),
        Collected::Partial { error: None, .. } => {
            notes.left_alone(
                what,
                &format!("it is larger than the {} MiB rewrite limit", limit >> 20),
            );
            None
        }
        // The body failed: it goes on as far as it came, and the failure is recorded as usual.
        Collected::Partial { .. } => None,
    };
    Forwarded::from_collected(collected, data)
}

/// The 502 for an upstream that failed before its answer began, `cause` on the record.
async fn upstream_failed(
    ctx: &ConnContext,
    log: &Arc<ExchangeLog>,
    cause: String,
    version: Version,
) -> Response<ClientBody> {
    let text = format!(
        "mcptap: the upstream {} could not be reached or failed: {cause}\n",
        ctx.route.upstream
    );
    log.preset_outcome(Outcome::UpstreamError, cause);
    proxy_answer(ctx, log, StatusCode::BAD_GATEWAY, &text, None, version).await
}

/// An answer the proxy makes itself (plain text, one line), recorded like any response.
async fn proxy_answer(
    ctx: &ConnContext,
    log: &Arc<ExchangeLog>,
    status: StatusCode,
    text: &str,
    extra: Option<(&'static str, &'static str)>,
    version: Version,
) -> Response<ClientBody> {
    let recorder = &ctx.shared.recorder;
    let at = Instant::now();
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(text.as_bytes())));
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some((name, value)) = extra {
        resp.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    let mut recorded = headers::to_record(resp.headers());
    recorded.push("content-length", itoa::Buffer::new().format(text.len()));
    log.record_response(
        at,
        status.as_u16(),
        version_str(version),
        recorded,
        Producer::Proxy,
        None,
    );
    resp.map(|body| {
        Either::Right(RecordingBody::new(
            body,
            log.ex,
            Direction::Response,
            recorder.clone(),
            log.clone(),
            ctx.shared.max_body,
        ))
    })
}

/// `Content-Type: text/event-stream` (parameters and case ignored).
fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(mcptap_capture::headers::is_event_stream)
}
