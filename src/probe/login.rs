//! `--login`: the browser leg of OAuth the way desktop clients run it (RFC 8252 §7.3): a
//! loopback redirect listener on 127.0.0.1, the authorize URL handed to the user's browser,
//! the code caught at the redirect. The redirect that reaches the listener is recorded as an
//! exchange of its own (listener `callback`), so the capture shows where the code came from.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::capture::model::{self, EventBody};
use crate::capture::{Direction, Record};
use crate::proxy::headers;
use crate::proxy::record::body::BodyObserver;
use crate::proxy::record::{ExchangeLog, Shared};
use crate::proxy::record::{Producer, RequestHead};

/// The path the authorization server redirects the browser to.
pub const CALLBACK_PATH: &str = "/callback";

/// A bound loopback listener waiting for the authorization server's redirect.
pub struct Callback {
    listener: TcpListener,
    pub addr: SocketAddr,
}

/// What the redirect carried.
#[derive(Debug, Clone)]
pub struct Redirect {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub ex: u64,
}

impl Callback {
    /// Binds 127.0.0.1:`port` (0: any free port).
    pub async fn bind(port: u16) -> anyhow::Result<Callback> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding the login redirect listener to 127.0.0.1:{port}"))?;
        let addr = listener.local_addr()?;
        Ok(Callback { listener, addr })
    }

    pub fn redirect_uri(&self) -> String {
        format!("http://{}{CALLBACK_PATH}", self.addr)
    }

    /// Serves the listener until a request for the callback path arrives or `limit` passes.
    pub async fn wait(self, shared: Arc<Shared>, limit: Duration) -> Result<Redirect, String> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Redirect>();
        let local = self.addr;
        let accept = async move {
            loop {
                let Ok((stream, peer)) = self.listener.accept().await else {
                    continue;
                };
                let conn = shared.next_conn();
                let recorder = shared.recorder.clone();
                recorder.event_now(EventBody::ConnOpen(model::ConnOpen {
                    route: None,
                    conn,
                    peer: peer.to_string(),
                    local: local.to_string(),
                    listener: "callback".into(),
                    tls: None,
                }));
                let shared = shared.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let answer = serve(&shared, conn, &req, &tx);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = accept => Err("the login listener stopped".into()),
            got = rx.recv() => got.ok_or_else(|| "the login listener stopped".to_string()),
            _ = tokio::time::sleep(limit) => Err(format!(
                "no redirect reached {} within {} (--login-timeout): was the authorize URL opened and the login finished?",
                format_args!("http://{local}{CALLBACK_PATH}"),
                super::net::seconds_words(limit)
            )),
        }
    }
}

/// Answers one request to the listener and records it.
fn serve(
    shared: &Arc<Shared>,
    conn: u64,
    req: &Request<Incoming>,
    tx: &mpsc::UnboundedSender<Redirect>,
) -> Response<Full<Bytes>> {
    let log = ExchangeLog::start(shared);
    let recorder = &shared.recorder;
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    log.record_request(RequestHead {
        conn,
        method: req.method().to_string(),
        target: target.clone(),
        version: crate::proxy::forward::version_str(req.version()),
        headers: headers::to_record(req.headers()),
        upstream: "probe".into(),
        route: None,
    });
    let (status, page) = if req.uri().path() == CALLBACK_PATH {
        let query: Vec<(String, String)> =
            form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let redirect = Redirect {
            code: get("code"),
            state: get("state"),
            error: get("error").map(|e| match get("error_description") {
                Some(d) => format!("{e} ({d})"),
                None => e,
            }),
            ex: log.ex,
        };
        let ok = redirect.code.is_some();
        let _ = tx.send(redirect);
        if ok {
            (
                StatusCode::OK,
                "mcptap probe: the login reached the probe. You can close this tab.\n",
            )
        } else {
            (
                StatusCode::OK,
                "mcptap probe: the authorization server redirected back without a code; see the terminal.\n",
            )
        }
    } else {
        (StatusCode::NOT_FOUND, "not found\n")
    };
    let at = Instant::now();
    log.ended(Direction::Request, at);
    let body = Bytes::from_static(page.as_bytes());
    let response = Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .header("cache-control", "no-store")
        .body(Full::new(body.clone()))
        .unwrap_or_default();
    log.record_response(
        at,
        status.as_u16(),
        "HTTP/1.1",
        headers::to_record(response.headers()),
        Producer::Upstream,
        None,
    );
    log.frame(Direction::Response, body.len(), at);
    recorder.whole_frame(
        log.ex,
        Direction::Response,
        recorder.clock().us_at(at),
        body,
    );
    recorder.record(Record::BodyEnd {
        ex: log.ex,
        dir: Direction::Response,
        t: recorder.clock().us_at(at),
    });
    log.ended(Direction::Response, at);
    response
}

/// Tries to open `url` in the user's browser; false when no opener was found.
pub fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}
