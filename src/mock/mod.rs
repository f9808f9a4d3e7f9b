//! `mcptap mock`: serve the recorded responses of a capture to a client — the OAuth
//! endpoints and the MCP endpoint alike, event streams on the recorded clock — so a client
//! can be debugged against exactly the server behaviour that was recorded.

pub mod matcher;
pub mod respond;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::capture::model::{self, EventBody};
use crate::capture::reader::{media_type, Capture};
use crate::capture::Direction;
use crate::proxy::forward::version_str;
use crate::proxy::record::body::{BodyObserver, RecordingBody};
use crate::proxy::record::standalone::{self as recording, Recording, RecordingSetup};
use crate::proxy::record::{ExchangeLog, Shared};
use crate::proxy::record::{Producer, RequestHead};
use crate::proxy::upstream::{self, UpstreamClient, UpstreamTls};
use crate::proxy::{headers, CaptureTarget, ConnEnd, CountingStream};
use crate::replay::origins;
use matcher::{Book, Pick, Unmatched};
use respond::{Rewrite, Speed, TimedBody};

const MOCK_EXAMPLES: &str = "\
Examples:
  mcptap mock captures/20261126T224832Z-3e9b4017.jsonl --listen 127.0.0.1:8080
      then point the client at http://127.0.0.1:8080/mcp: discovery, registration,
      authorization, token and the MCP session are answered as recorded
  mcptap mock capture.jsonl --listen 127.0.0.1:0 --speed max --reuse
  mcptap mock capture.jsonl --unmatched forward --upstream http://127.0.0.1:8000 --capture mock.jsonl

Matching is JSON-RPC aware: method and params (ids and _meta ignored), then HTTP method,
path, query and form fields (state, nonce and PKCE values ignored; redacted values match
anything). Identical requests get the recorded responses in order. Responses name the mock
instead of the recorded proxy address, answer with the incoming JSON-RPC id and progress
token, echo the incoming state, and serve redacted values as mcptap-redacted-<fp>.
An unmatched request gets 404 with a JSON body naming the closest recorded request and what
differed. Stop with Ctrl-C or SIGTERM.";

/// What an unmatched request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnmatchedArg {
    /// A 404 whose JSON body names the closest recorded request and what differed.
    #[value(name = "404")]
    NotFound,
    /// The request is forwarded to --upstream and its answer served.
    Forward,
}

#[derive(clap::Args, Debug)]
#[command(after_help = MOCK_EXAMPLES)]
pub struct MockArgs {
    /// The capture (JSONL) whose recorded responses are served.
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// Only client flow N of the capture (numbered from 1, as `mcptap explain` lists them).
    #[arg(long, value_name = "N")]
    pub flow: Option<usize>,

    /// Address to listen on (port 0 picks a free port; the chosen one is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// How fast recorded timing (time to first byte, the spacing of events) is played:
    /// 1 as recorded, 2.0 twice as fast, `max` without waiting.
    #[arg(long, value_name = "FACTOR", default_value = "1", value_parser = parse_speed)]
    pub speed: f64,

    /// When the recorded responses to a request have all been served, serve the last one
    /// again (default: 404).
    #[arg(long)]
    pub reuse: bool,

    /// What a request that matches no recorded one gets.
    #[arg(long, value_enum, value_name = "404|forward", default_value = "404")]
    pub unmatched: UnmatchedArg,

    /// Where `--unmatched forward` sends requests (http:// or https://).
    #[arg(long, value_name = "URL", required_if_eq("unmatched", "forward"))]
    pub upstream: Option<String>,

    /// Record the mock's own traffic to this file (never overwritten).
    #[arg(long = "capture", value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Serve recorded URLs as they are, instead of replacing the recorded proxy's origin by
    /// the mock's.
    #[arg(long)]
    pub keep_origin: bool,

    /// Record secrets in the mock's capture in clear text.
    #[arg(long)]
    pub no_redact: bool,

    /// Print no line per request.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `2`, `0.5`, `max`.
fn parse_speed(s: &str) -> Result<f64, String> {
    if s.trim().eq_ignore_ascii_case("max") {
        return Ok(f64::INFINITY);
    }
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "'{s}' is not a speed: a number > 0 (1 as recorded, 2.0 twice as fast) or max"
        )),
    }
}

/// Runs `mcptap mock` until SIGINT or SIGTERM.
pub fn run(args: &MockArgs) -> anyhow::Result<ExitCode> {
    let listen = crate::args::resolve_listen(&args.listen)?;
    let upstream = match (&args.upstream, args.unmatched) {
        (Some(u), UnmatchedArg::Forward) => {
            Some(crate::replay::target_url(u).with_context(|| "--upstream".to_string())?)
        }
        (Some(_), UnmatchedArg::NotFound) => {
            bail!("--upstream is only used with --unmatched forward")
        }
        (None, UnmatchedArg::Forward) => bail!("--unmatched forward needs --upstream URL"),
        (None, UnmatchedArg::NotFound) => None,
    };
    let capture = crate::args::open_capture(&args.capture, args.flow)?;
    let withheld: Vec<String> = capture
        .exchanges
        .iter()
        .filter(|x| x.response_body.omitted.is_some())
        .map(|x| format!("#{}", x.ex))
        .collect();
    if !withheld.is_empty() {
        eprintln!(
            "mcptap: warning: {} recorded responses have no body in the capture (not text, or in a coding mcptap does not decode; {}): they are served empty. A capture made with --no-redact has them.",
            withheld.len(),
            withheld.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args, listen, upstream, capture))
}

/// The mock's state, shared by every connection.
struct Mock {
    book: Book,
    speed: Speed,
    reuse: bool,
    keep_origin: bool,
    quiet: bool,
    forward: Option<(Uri, UpstreamClient<Full<Bytes>>)>,
    /// The recorder's side of the mock's own capture, when it records.
    shared: Option<Arc<Shared>>,
    local: SocketAddr,
    served: AtomicU64,
    unmatched: AtomicU64,
    forwarded: AtomicU64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Whatever the mock answers with.
pub type MockBody = UnsyncBoxBody<Bytes, BoxError>;

/// Request bodies above this are refused (413): matching reads them whole.
const MAX_REQUEST: usize = 16 << 20;

async fn serve(
    args: &MockArgs,
    listen: SocketAddr,
    upstream: Option<Uri>,
    capture: Capture,
) -> anyhow::Result<ExitCode> {
    for warning in &capture.warnings {
        eprintln!("mcptap: warning: {warning}");
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener
        .local_addr()
        .context("reading the listen address")?;
    let recording = match &args.record {
        Some(file) => Some(Recording::start(RecordingSetup {
            target: CaptureTarget::File(file.clone()),
            route: model::Route {
                listen: local.to_string(),
                upstream: format!("mock:{}", args.capture.display()),
            },
            options: recording::options(
                capture.session.options.max_body,
                None,
                &UpstreamTls::default(),
            ),
            redact: !args.no_redact,
        })?),
        None => None,
    };
    let forward = match upstream {
        Some(u) => Some((u, upstream::client(&UpstreamTls::default())?)),
        None => None,
    };
    let origins = origins::recorded_origins(&capture);
    let truncated = capture
        .exchanges
        .iter()
        .filter(|x| x.response_body.truncated)
        .count();
    let book = Book::new(Arc::new(capture), origins);
    let speed = Speed(args.speed);
    if let Some(r) = &recording {
        r.note(
            "mock",
            format!(
                "mock of {} ({} recorded responses){}",
                args.capture.display(),
                book.len(),
                match &forward {
                    Some((u, _)) => format!("; unmatched requests are forwarded to {u}"),
                    None => String::new(),
                }
            ),
        );
    }
    eprintln!(
        "mcptap: mock listening on http://{local} ({} recorded responses from {}, speed {})",
        book.len(),
        args.capture.display(),
        if speed.0.is_infinite() {
            "max".to_string()
        } else {
            format!("{}x", speed.0)
        }
    );
    if truncated > 0 {
        eprintln!("mcptap: warning: {truncated} responses were recorded only up to --max-body; they are served cut");
    }
    if let Some(r) = &recording {
        eprintln!("mcptap: capturing to {}", r.path.display());
    }
    let mock = Arc::new(Mock {
        book,
        speed,
        reuse: args.reuse,
        keep_origin: args.keep_origin,
        quiet: args.quiet,
        forward,
        shared: recording.as_ref().map(|r| r.shared.clone()),
        local,
        served: AtomicU64::new(0),
        unmatched: AtomicU64::new(0),
        forwarded: AtomicU64::new(0),
    });

    let mut conns = JoinSet::new();
    let mut signals = Signals::new()?;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    conns.spawn(connection(mock.clone(), stream, peer));
                }
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            _ = signals.next() => break,
        }
    }
    drop(listener);
    // Streams that were open in the recording never end: cut them now.
    if let Some(shared) = &mock.shared {
        shared.force_shutdown();
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    eprintln!(
        "mcptap: mock stopped: {} requests answered as recorded, {} unmatched{}",
        mock.served.load(Ordering::Relaxed),
        mock.unmatched.load(Ordering::Relaxed),
        match mock.forwarded.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} forwarded"),
        }
    );
    drop(mock);
    if let Some(recording) = recording {
        let path = recording.path.clone();
        let stats = recording.finish(true).await?;
        eprintln!(
            "mcptap: capture complete: {} ({} events)",
            path.display(),
            stats.events_written
        );
        if let Some(e) = stats.write_error {
            eprintln!("mcptap: error: the mock's capture is incomplete: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Serves one connection (HTTP/1.1 or HTTP/2), recorded when the mock records.
async fn connection(mock: Arc<Mock>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let local = stream
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let counted = CountingStream::new(stream);
    let mut guard = mock.shared.as_ref().map(|shared| {
        let conn = shared.next_conn();
        let recorder = &shared.recorder;
        recorder.event_now(EventBody::ConnOpen(model::ConnOpen {
            conn,
            peer: peer.to_string(),
            local,
            listener: mock.local.to_string(),
            route: None,
            tls: None,
        }));
        ConnGuard {
            mock: mock.clone(),
            end: ConnEnd::new(conn, &counted),
            exchanges: Arc::new(AtomicU64::new(0)),
        }
    });
    let conn = guard.as_ref().map(|g| g.end.conn).unwrap_or(0);
    let exchanges = guard.as_ref().map(|g| g.exchanges.clone());
    let service = service_fn(move |req| {
        if let Some(n) = &exchanges {
            n.fetch_add(1, Ordering::Relaxed);
        }
        handle(req, mock.clone(), conn)
    });
    let result = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(counted), service)
        .await;
    if let (Err(e), Some(g)) = (result, guard.as_mut()) {
        g.end.error = Some(upstream::error_chain(&*e));
    }
}

/// Records `conn_close` however the connection ends.
struct ConnGuard {
    mock: Arc<Mock>,
    end: ConnEnd,
    exchanges: Arc<AtomicU64>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let Some(shared) = &self.mock.shared else {
            return;
        };
        let exchanges = self.exchanges.load(Ordering::Relaxed);
        self.end
            .record(&shared.recorder, shared.forced(), exchanges);
    }
}

/// What an answer is made of, before it is recorded and sent.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: AnswerBody,
    /// `upstream` for a recorded or forwarded response, `proxy` for the mock's own.
    producer: Producer,
    /// The URL a forwarded request went to.
    upstream: String,
    line: String,
}

enum AnswerBody {
    Timed(TimedBody, bool),
    Forwarded(Incoming),
}

/// Serves one request.
async fn handle(
    req: Request<Incoming>,
    mock: Arc<Mock>,
    conn: u64,
) -> Result<Response<MockBody>, Infallible> {
    let log = mock.shared.as_ref().map(ExchangeLog::start);
    let (parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let body = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            let too_big = e.is::<http_body_util::LengthLimitError>();
            let (status, text) = if too_big {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("mcptap mock: request bodies above {MAX_REQUEST} bytes are refused\n"),
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("mcptap mock: reading the request body failed: {e}\n"),
                )
            };
            let answer = own_answer(status, "text/plain; charset=utf-8", text.clone(), text);
            return Ok(respond(&mock, log, conn, &parts, &[], answer));
        }
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| mock.local.to_string());
    let own_origin = format!("http://{host}");
    let media = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type);
    let incoming = matcher::shape(
        parts.method.as_str(),
        &path_and_query,
        media.as_deref(),
        &body,
        &mock.book.origins,
        Some(&own_origin),
    );
    let answer = match mock.book.pick(&incoming, mock.reuse) {
        Pick::Served { entry, again } => {
            mock.served.fetch_add(1, Ordering::Relaxed);
            let x = mock.book.exchange(entry);
            let rewrite = Rewrite {
                origins: &mock.book.origins,
                own_origin: (!mock.keep_origin).then_some(own_origin.as_str()),
                recorded: mock.book.shape(entry),
                incoming: &incoming,
            };
            let served = respond::serve(x, &rewrite, mock.speed);
            tokio::time::sleep(served.ttfb).await;
            let mut headers = HeaderMap::new();
            for (n, v) in &served.headers {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_bytes(v.as_bytes()),
                ) {
                    headers.append(n, v);
                }
            }
            let stream = served.end.is_none_or(|d| !d.is_zero());
            Answer {
                status: StatusCode::from_u16(served.status).unwrap_or(StatusCode::BAD_GATEWAY),
                headers,
                body: AnswerBody::Timed(TimedBody::start(served.chunks, served.end), stream),
                producer: Producer::Upstream,
                upstream: String::new(),
                line: format!(
                    "{} → {} · recorded exchange {}{}",
                    incoming.label,
                    served.status,
                    x.ex,
                    if again { " again (--reuse)" } else { "" }
                ),
            }
        }
        Pick::Unmatched(why) => {
            mock.unmatched.fetch_add(1, Ordering::Relaxed);
            match &mock.forward {
                Some((upstream_url, client)) => {
                    mock.forwarded.fetch_add(1, Ordering::Relaxed);
                    forward(
                        upstream_url,
                        client,
                        &parts,
                        &path_and_query,
                        body.clone(),
                        &incoming.label,
                    )
                    .await
                }
                None => not_found(&incoming.label, &why),
            }
        }
    };
    Ok(respond(&mock, log, conn, &parts, &body, answer))
}

/// Records the exchange (when the mock records), prints its line, and builds the response.
fn respond(
    mock: &Mock,
    log: Option<Arc<ExchangeLog>>,
    conn: u64,
    parts: &http::request::Parts,
    body: &[u8],
    answer: Answer,
) -> Response<MockBody> {
    if !mock.quiet {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", answer.line);
        let _ = out.flush();
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers.clone();
    let (Some(log), Some(shared)) = (log, &mock.shared) else {
        let body = match answer.body {
            AnswerBody::Timed(b, _) => b.map_err(|never| match never {}).boxed_unsync(),
            AnswerBody::Forwarded(b) => b.map_err(BoxError::from).boxed_unsync(),
        };
        return response.map(|_| body);
    };
    let recorder = shared.recorder.clone();
    let ex = log.ex;
    log.record_request(RequestHead {
        conn,
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        version: version_str(parts.version),
        headers: headers::to_record(&parts.headers),
        upstream: answer.upstream.clone(),
        route: None,
    });
    if !body.is_empty() {
        log.record_request_body(Bytes::copy_from_slice(body));
        log.frame(Direction::Request, body.len(), log.started);
    }
    log.ended(Direction::Request, log.started);
    let at = Instant::now();
    let mut recorded_headers = headers::to_record(&answer.headers);
    if let AnswerBody::Timed(b, _) = &answer.body {
        if let Some(n) = http_body::Body::size_hint(b).exact() {
            recorded_headers.push("content-length", itoa::Buffer::new().format(n));
        }
    }
    log.record_response(
        at,
        answer.status.as_u16(),
        version_str(if parts.version == Version::HTTP_2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        }),
        recorded_headers,
        answer.producer,
        None,
    );
    let max_body = shared.max_body;
    let body = match answer.body {
        AnswerBody::Timed(b, stream) => {
            let limit = if stream { u64::MAX } else { max_body };
            RecordingBody::new(b, ex, Direction::Response, recorder, log, limit)
                .map_err(|never| match never {})
                .boxed_unsync()
        }
        AnswerBody::Forwarded(b) => {
            RecordingBody::new(b, ex, Direction::Response, recorder, log, max_body)
                .map_err(BoxError::from)
                .boxed_unsync()
        }
    };
    response.map(|_| body)
}

/// An answer the mock makes itself.
fn own_answer(
    status: StatusCode,
    content_type: &'static str,
    body: String,
    line: String,
) -> Answer {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Answer {
        status,
        headers,
        body: AnswerBody::Timed(TimedBody::whole(Bytes::from(body)), false),
        producer: Producer::Proxy,
        upstream: String::new(),
        line: line.trim_end().to_string(),
    }
}

/// The 404: what was asked, the closest recorded request, and what differed.
fn not_found(label: &str, why: &Unmatched) -> Answer {
    let closest = why.closest.as_ref().map(|(ex, request, differences)| {
        serde_json::json!({"exchange": ex, "request": request, "differences": differences})
    });
    let message = format!("mcptap mock: no recorded exchange answers {label}");
    let body = serde_json::json!({
        "error": "mcptap_mock_unmatched",
        "message": message,
        "request": label,
        "closest": closest,
    });
    let line = match &why.closest {
        Some((ex, _, diffs)) => format!(
            "{label} → 404 unmatched; closest: exchange {ex} ({})",
            diffs.join("; ")
        ),
        None => format!("{label} → 404 unmatched; the capture has no responses"),
    };
    own_answer(
        StatusCode::NOT_FOUND,
        "application/json",
        body.to_string(),
        line,
    )
}

/// `--unmatched forward`: the request goes to the upstream, its answer back to the client.
async fn forward(
    base: &Uri,
    client: &UpstreamClient<Full<Bytes>>,
    parts: &http::request::Parts,
    path_and_query: &str,
    body: Bytes,
    label: &str,
) -> Answer {
    let failed = |why: String| {
        let text = format!("mcptap mock: forwarding to {base} failed: {why}\n");
        own_answer(
            StatusCode::BAD_GATEWAY,
            "text/plain; charset=utf-8",
            text,
            format!("{label} → 502 unmatched, forwarding failed: {why}"),
        )
    };
    let uri = match upstream::upstream_uri(base, path_and_query) {
        Ok(u) => u,
        Err(e) => return failed(e.to_string()),
    };
    let mut headers = parts.headers.clone();
    headers::remove_hop_by_hop(&mut headers, false);
    if let Some(host) = uri
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(HOST, host);
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri.clone();
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    match client.request(req).await {
        Ok(resp) => {
            let (mut p, b) = resp.into_parts();
            headers::remove_hop_by_hop(&mut p.headers, false);
            Answer {
                status: p.status,
                line: format!(
                    "{label} → {} unmatched, forwarded to {uri}",
                    p.status.as_u16()
                ),
                headers: p.headers,
                body: AnswerBody::Forwarded(b),
                producer: Producer::Upstream,
                upstream: uri.to_string(),
            }
        }
        Err(e) => failed(upstream::error_chain(&e)),
    }
}

/// SIGINT and SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
