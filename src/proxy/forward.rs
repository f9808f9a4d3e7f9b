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

use super::exchange::{ExchangeLog, Shared};
use super::headers;
use super::upgrade;
use super::upstream::{self, ConnectFacts, UpstreamClient};
use crate::capture::body::RecordingBody;
use crate::capture::model::{self, EventBody};
use crate::capture::{Direction, Outcome, Record};

/// A body the proxy sends upstream.
pub type UpstreamBody = RecordingBody<Incoming, ExchangeLog>;
/// A body the proxy sends to the client: the upstream's, or one the proxy made.
pub type ClientBody =
    Either<RecordingBody<Incoming, ExchangeLog>, RecordingBody<Full<Bytes>, ExchangeLog>>;

/// What one listener forwards to, and how.
pub struct Route {
    /// The route's index in the capture's `session.routes`.
    pub index: u32,
    pub upstream: Uri,
    pub preserve_host: bool,
    pub upstream_timeout: Option<Duration>,
    pub client: UpstreamClient<UpstreamBody>,
}

/// One client connection.
pub struct ConnContext {
    pub conn: u64,
    pub peer: SocketAddr,
    pub shared: Arc<Shared>,
    pub route: Arc<Route>,
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
    let log = ExchangeLog::start(shared);
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
    let target = upstream::upstream_uri(&ctx.route.upstream, &path_and_query);

    recorder.record(Record::Event {
        t: recorder.clock().us_at(log.started),
        body: EventBody::Request(model::Request {
            ex,
            conn: ctx.conn,
            method: req.method().to_string(),
            target: req.uri().to_string(),
            version: version_str(client_version).to_string(),
            headers: headers::to_record(req.headers()),
            upstream: target.as_ref().map(|u| u.to_string()).unwrap_or_default(),
            route: Some(ctx.route.index),
        }),
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

    // Build the upstream request from the client's.
    let upgrade_requested = headers::wants_upgrade(req.headers());
    let client_upgrade = upgrade_requested.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let client_host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let mut up_headers = parts.headers;
    headers::remove_hop_by_hop(&mut up_headers, upgrade_requested);
    let host = if ctx.route.preserve_host {
        client_host.clone()
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
    let mut up_req = Request::new(RecordingBody::new(
        body,
        ex,
        Direction::Request,
        recorder.clone(),
        log.clone(),
        shared.max_body,
    ));
    *up_req.method_mut() = parts.method;
    *up_req.uri_mut() = target;
    // HTTP/1.1 here; the pooled client speaks HTTP/2 where the upstream negotiated it.
    *up_req.version_mut() = Version::HTTP_11;
    *up_req.headers_mut() = up_headers;

    let sent = ctx.route.client.request(up_req);
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
            let text = format!(
                "mcptap: the upstream {} could not be reached or failed: {cause}\n",
                ctx.route.upstream
            );
            log.preset_outcome(Outcome::UpstreamError, cause);
            return Ok(proxy_answer(
                &ctx,
                &log,
                StatusCode::BAD_GATEWAY,
                &text,
                None,
                client_version,
            )
            .await);
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
    log.response_started(status.as_u16(), connect, at);
    let switching = status == StatusCode::SWITCHING_PROTOCOLS && client_upgrade.is_some();
    headers::remove_hop_by_hop(resp.headers_mut(), switching);
    recorder.record(Record::Event {
        t: recorder.clock().us_at(at),
        body: EventBody::Response(model::Response {
            ex,
            status: status.as_u16(),
            version: version_str(resp.version()).to_string(),
            headers: headers::to_record(resp.headers()),
            producer: "upstream".into(),
        }),
    });
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
    log.response_started(status.as_u16(), None, at);
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
    recorded.push(("content-length".into(), text.len().to_string()));
    recorder.record(Record::Event {
        t: recorder.clock().us_at(at),
        body: EventBody::Response(model::Response {
            ex: log.ex,
            status: status.as_u16(),
            version: version_str(version).to_string(),
            headers: recorded,
            producer: "proxy".into(),
        }),
    });
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
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("text/event-stream"))
}
