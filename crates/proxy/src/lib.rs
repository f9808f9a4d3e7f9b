//! The data path of `mcptap proxy`: accept client connections (plain, TLS with ACME or
//! certificate files), forward each exchange to the configured upstream, record everything
//! into a capture, and shut down without losing what was recorded.
//!
//! Built on `mcptap-capture`; it knows nothing of MCP or of the commands that read captures.

pub mod forward;
pub mod h1;
pub mod headers;
pub mod memory;
pub mod origins;
pub mod pool;
pub mod record;
pub mod rewrite;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::tls::{AcmeConfig, AcmeEvent, RejectKind, ReloadSummary, TlsSetup};
use forward::{ConnContext, Route};
pub use mcptap_capture::file::CaptureTarget;
use mcptap_capture::file::{open_capture, short_id};
use mcptap_capture::model::{self, ConnClose, ConnOpen, EventBody, SessionOptions};
use mcptap_capture::redact::Redactor;
use mcptap_capture::writer::{self, OnFull, WriterConfig, WriterStats};
use mcptap_capture::{Clock, Observers, Record, SessionStart};
use record::Shared;

/// How the listener speaks.
#[derive(Debug, Clone)]
pub enum ListenTls {
    /// Plain HTTP (behind another TLS terminator).
    Off,
    /// Certificate and key files (full chain, leaf first), chosen by SNI; re-read on change.
    Files(Vec<(PathBuf, PathBuf)>),
    /// A leaf for these names from the local CA in this folder (created if needed).
    SelfSigned {
        certs_dir: PathBuf,
        names: Vec<String>,
    },
    /// Certificates obtained and renewed from an ACME CA.
    Acme(AcmeConfig),
}

/// One more listener and the upstream it forwards to (`--route LISTEN=UPSTREAM`).
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub listen: SocketAddr,
    pub upstream: hyper::Uri,
}

/// A validated proxy configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The first route's listener (`--listen`, or the first `--route`).
    pub listen: SocketAddr,
    /// The TLS every listener serves.
    pub tls: ListenTls,
    /// The first route's upstream (`--upstream`, or the first `--route`).
    pub upstream: hyper::Uri,
    /// The routes after the first, each its own listener; all are recorded in one capture.
    pub extra_routes: Vec<RouteSpec>,
    /// Rewrite upstream origins to the proxy's in responses, and back in requests.
    pub rewrite_origins: bool,
    pub capture: CaptureTarget,
    /// Go on in a new capture file at this size (`--rotate-size`).
    pub rotate_size: Option<u64>,
    /// Go on in a new capture file after this long (`--rotate-every`).
    pub rotate_every: Option<Duration>,
    pub max_body: u64,
    pub on_full: OnFull,
    pub queue_bytes: u32,
    pub redact: bool,
    pub preserve_host: bool,
    pub upstream_tls: upstream::UpstreamTls,
    pub upstream_timeout: Option<Duration>,
    pub grace: Duration,
    /// Longest time a client may take to send its request headers (slowloris).
    pub header_timeout: Option<Duration>,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// Plain HTTP/1.1 exchanges take the byte-forwarding fast path (`h1`); off, hyper
    /// serves every exchange.
    pub fast_path: bool,
    /// Open client connections at most; more are refused (503 on plain HTTP) and counted.
    pub max_connections: usize,
}

impl ProxyConfig {
    /// Every route, the first (`listen` → `upstream`) first: its index is the route's
    /// number in the capture.
    pub fn routes(&self) -> Vec<RouteSpec> {
        let first = RouteSpec {
            listen: self.listen,
            upstream: self.upstream.clone(),
        };
        std::iter::once(first)
            .chain(self.extra_routes.iter().cloned())
            .collect()
    }
}

/// How the proxy ended.
#[derive(Debug)]
pub struct ProxyOutcome {
    pub capture: PathBuf,
    pub writer: WriterStats,
}

/// Runs the proxy until SIGINT or SIGTERM (SIGHUP reloads certificates); `observers` follow
/// the session as it is recorded (the terminal's live lines, say).
pub async fn run(config: ProxyConfig, observers: Observers) -> anyhow::Result<ProxyOutcome> {
    let control = Control::signals()?;
    serve_until(config, observers, control, |_| {}).await
}

/// Runs the proxy in-process until `stop` completes; `ready` gets the bound address once the
/// listener is up (`mcptap demo` and tests use this).
pub async fn run_until(
    config: ProxyConfig,
    observers: Observers,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ProxyOutcome> {
    serve_until(config, observers, Control::future(stop), ready).await
}

async fn serve_until(
    config: ProxyConfig,
    observers: Observers,
    mut signals: Control,
    ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<ProxyOutcome> {
    let clock = Arc::new(Clock::new());
    let session_id = short_id();
    let (path, mut file) = open_capture(&config.capture, &clock, &session_id)?;
    let tls = match &config.tls {
        ListenTls::Off => None,
        ListenTls::Files(pairs) => Some(TlsSetup::from_files(pairs)?),
        ListenTls::SelfSigned { certs_dir, names } => {
            Some(TlsSetup::self_signed(certs_dir, names)?)
        }
        ListenTls::Acme(acme) => Some(TlsSetup::acme(acme.clone())?),
    };
    let specs = config.routes();
    let mut listeners = Vec::with_capacity(specs.len());
    let mut locals = Vec::with_capacity(specs.len());
    for spec in &specs {
        let listener = TcpListener::bind(spec.listen)
            .await
            .with_context(|| format!("listening on {}", spec.listen))?;
        locals.push(
            listener
                .local_addr()
                .context("reading the listen address")?,
        );
        listeners.push(listener);
    }
    let local = locals[0];

    let redactor = Redactor::new(config.redact);
    let session = model::Session {
        v: model::FORMAT_VERSION,
        tool: "mcptap".into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        session_id: session_id.clone(),
        routes: specs
            .iter()
            .zip(&locals)
            .map(|(spec, local)| model::Route {
                listen: local.to_string(),
                upstream: spec.upstream.to_string(),
            })
            .collect(),
        options: SessionOptions {
            max_body: config.max_body,
            on_full: match config.on_full {
                OnFull::Wait => "wait".into(),
                OnFull::Drop => "drop".into(),
            },
            preserve_host: config.preserve_host,
            upstream_insecure: config.upstream_tls.insecure,
            upstream_ca: config
                .upstream_tls
                .ca_file
                .as_ref()
                .map(|p| p.display().to_string()),
            upstream_timeout_s: config.upstream_timeout.map(|d| d.as_secs_f64()),
            grace_s: config.grace.as_secs_f64(),
            rewrite_origins: config.rewrite_origins,
        },
        redaction: if config.redact { "fingerprint" } else { "off" }.into(),
    };
    let session_line = writer::line_of(&clock, 0, EventBody::Session(session.clone()))
        .and_then(|line| {
            use std::io::Write as _;
            file.write_all(&line)?;
            Ok(line)
        })
        .with_context(|| format!("writing the capture {}", path.display()))?;
    // Only a file is rotated (not /dev/null or a pipe).
    let rotation = (config.rotate_size.is_some() || config.rotate_every.is_some())
        .then(|| std::fs::metadata(&path).is_ok_and(|m| m.is_file()))
        .filter(|file| *file)
        .map(|_| mcptap_capture::file::Rotation {
            first: path.clone(),
            session_line,
            max_bytes: config.rotate_size,
            every: config.rotate_every,
        });
    let observers = observers(&SessionStart {
        clock: &clock,
        capture: &path,
        session: &session,
    });
    let (recorder, writer_thread) = writer::start(
        WriterConfig {
            file,
            rotation,
            redactor,
            max_body: config.max_body,
            queue_bytes: config.queue_bytes,
            on_full: config.on_full,
            observers,
            on_idle: crate::memory::when_idle,
        },
        clock.clone(),
    );

    let connector = upstream::connector(&config.upstream_tls)?;
    let rewriting = config.rewrite_origins.then(|| {
        let routes: Vec<(SocketAddr, hyper::Uri)> = locals
            .iter()
            .zip(&specs)
            .map(|(local, spec)| (*local, spec.upstream.clone()))
            .collect();
        Arc::new(rewrite::Rewriting::new(&routes, tls.is_some()))
    });
    let routes: Vec<Arc<Route>> = specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            Arc::new(Route {
                index: index as u32,
                upstream: spec.upstream.clone(),
                preserve_host: config.preserve_host,
                upstream_timeout: config.upstream_timeout,
                pool: pool::Pool::new(connector.clone(), spec.upstream.clone()),
                rewriting: rewriting.clone(),
            })
        })
        .collect();
    let shared = Arc::new(Shared::new(recorder.clone(), config.max_body));
    let watcher = tls.as_ref().map(|setup| {
        let recorder = recorder.clone();
        setup.spawn_watcher(move |result| record_reload(&recorder, result))
    });

    match &tls {
        None => {
            for (spec, local) in specs.iter().zip(&locals) {
                eprintln!(
                    "mcptap: listening on http://{local} (plain HTTP: put a TLS terminator in front, or see --help), forwarding to {}",
                    spec.upstream
                );
            }
        }
        Some(setup) => {
            for (spec, local) in specs.iter().zip(&locals) {
                eprintln!(
                    "mcptap: listening on https://{local} (TLS), forwarding to {}",
                    spec.upstream
                );
            }
            eprintln!("mcptap: TLS: {}", setup.summary());
            if let Some(ca) = setup.ca_cert() {
                eprintln!(
                    "mcptap: TLS: certificates from the local CA {}; clients must trust it (see `mcptap certs init --help`)",
                    ca.display()
                );
            }
        }
    }
    if config.rewrite_origins {
        eprintln!("mcptap: --rewrite-origins: upstream origins in headers and bodies are rewritten to the proxy's (noted in the capture)");
    }
    eprintln!("mcptap: capturing to {}", path.display());
    if !config.redact {
        eprintln!("mcptap: WARNING: --no-redact: tokens, cookies and OAuth secrets are written to the capture in clear text");
    }
    if config.upstream_tls.insecure {
        eprintln!(
            "mcptap: WARNING: --upstream-insecure: the upstream's TLS certificate is not checked"
        );
    }

    let acme = match &tls {
        Some(setup) => {
            let recorder = recorder.clone();
            let on_event = move |e: AcmeEvent| record_note(&recorder, e.code, e.message);
            Some(setup.spawn_acme(local.port(), on_event).await?)
        }
        None => None,
    };

    // The watchdog's clock: one tick a second into the writer.
    let ticker = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                every.tick().await;
                recorder.record(Record::Tick {
                    t: recorder.clock().now_us(),
                });
            }
        })
    };
    let mut conns = JoinSet::new();
    // The most connections open at once since the heap was last trimmed.
    let mut peak = 0usize;
    let mut refused = 0u64;
    let limits = Arc::new(Limits {
        header_timeout: config.header_timeout,
        max_header_bytes: config.max_header_bytes.max(8192),
        fast_path: config.fast_path,
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    ready(local);
    let mut first = 0;
    loop {
        tokio::select! {
            (index, accepted) = accept_any(&listeners, &mut first) => match accepted {
                Ok((stream, peer)) => {
                    if conns.len() >= config.max_connections {
                        refuse(stream, tls.is_none(), &recorder, &mut refused, config.max_connections);
                        continue;
                    }
                    let listener = Listener {
                        local: locals[index],
                        tls: tls.clone(),
                        limits: limits.clone(),
                        route: routes[index].clone(),
                    };
                    serve(&mut conns, stream, peer, listener, &shared, stop_rx.clone());
                    peak = peak.max(conns.len());
                }
                Err(e) => {
                    // Out of file descriptors and the like: keep the listener, slow down a little.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                if peak >= TRIM_AFTER && conns.len() <= peak / 2 {
                    peak = conns.len();
                    tokio::task::spawn_blocking(crate::memory::release_freed_memory);
                }
            }
            signal = signals.next() => match signal {
                Signal::Stop => break,
                Signal::Reload => match &tls {
                    Some(setup) => {
                        let result = setup.reload().map_err(|e| format!("{e:#}"));
                        record_reload(&recorder, result);
                    }
                    None => eprintln!("mcptap: SIGHUP: no TLS certificates to reload"),
                },
            },
        }
    }
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(a) = acme {
        a.abort();
    }
    if refused > 0 {
        recorder.event(
            clock.now_us(),
            EventBody::Note(model::Note {
                code: "connections_refused".into(),
                message: format!(
                    "{refused} connections were refused over --max-connections {} in this session",
                    config.max_connections
                ),
                count: Some(refused),
                ex: None,
            }),
        );
    }
    drop(listeners);
    let _ = stop_tx.send(true);
    eprintln!(
        "mcptap: shutting down: waiting up to {:.1}s for {} open exchanges (signal again to stop now)",
        config.grace.as_secs_f64(),
        shared.live_exchanges()
    );

    // Let in-flight exchanges finish within the grace period, then cut what is left.
    shared.tunnels.close();
    let graceful = async {
        while conns.join_next().await.is_some() {}
        shared.tunnels.wait().await;
    };
    let finished_in_time = tokio::select! {
        _ = graceful => true,
        _ = tokio::time::sleep(config.grace) => false,
        _ = signals.next_stop() => false,
    };
    if !finished_in_time {
        shared.force_shutdown();
        conns.abort_all();
        while conns.join_next().await.is_some() {}
        shared.tunnels.wait().await;
    }
    // Every exchange queues its `end` from a drop; give those a moment to arrive.
    let all_ended = tokio::time::timeout(Duration::from_secs(2), shared.all_ended())
        .await
        .is_ok();
    ticker.abort();
    recorder.record(Record::Finish {
        t: clock.now_us(),
        exchanges: shared.exchanges(),
        connections: shared.connections(),
        clean: finished_in_time && all_ended,
    });
    drop(recorder);
    drop(shared);
    let stats = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .context("waiting for the capture writer")?
        .map_err(|_| anyhow::anyhow!("the capture writer thread panicked"))?;
    eprintln!(
        "mcptap: capture complete: {} ({} events)",
        path.display(),
        stats.events_written
    );
    Ok(ProxyOutcome {
        capture: path,
        writer: stats,
    })
}

/// Connections open at once above which, when half of them have closed, the heap is trimmed.
const TRIM_AFTER: usize = 256;

/// A listener's address, TLS and route, handed to each connection.
struct Listener {
    local: SocketAddr,
    tls: Option<Arc<TlsSetup>>,
    limits: Arc<Limits>,
    route: Arc<Route>,
}

/// The next connection on any listener, and the listener's index. The listener polled first
/// moves on each time, so a busy route cannot starve the others.
async fn accept_any(
    listeners: &[TcpListener],
    first: &mut usize,
) -> (usize, io::Result<(TcpStream, SocketAddr)>) {
    let n = listeners.len();
    let start = *first % n;
    *first = first.wrapping_add(1);
    std::future::poll_fn(|cx| {
        for i in (0..n).map(|k| (start + k) % n) {
            if let Poll::Ready(accepted) = listeners[i].poll_accept(cx) {
                return Poll::Ready((i, accepted));
            }
        }
        Poll::Pending
    })
    .await
}

/// What a client connection may take.
struct Limits {
    header_timeout: Option<Duration>,
    max_header_bytes: usize,
    fast_path: bool,
}

/// Turns away a connection over `--max-connections`: a 503 on plain HTTP (a TLS client just
/// sees the close), counted, and noted once when the limit is first reached.
fn refuse(
    mut stream: TcpStream,
    plain: bool,
    recorder: &mcptap_capture::Recorder,
    refused: &mut u64,
    limit: usize,
) {
    *refused += 1;
    if *refused == 1 {
        let message = format!(
            "--max-connections {limit} reached: further connections are refused until some close"
        );
        eprintln!("mcptap: {message}");
        recorder.event_now(EventBody::Note(model::Note {
            code: "connections_refused".into(),
            message,
            count: Some(1),
            ex: None,
        }));
    }
    if plain {
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let body = "mcptap: too many connections, try again\n";
            let answer = format!(
                "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nRetry-After: 1\r\n\r\n{body}",
                body.len()
            );
            // Closing with the request unread would reset the connection before the client
            // reads the answer: take what it sent (briefly, boundedly), answer, then close.
            let mut sink = [0u8; 8192];
            let _ = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut sink)).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                stream.write_all(answer.as_bytes()).await?;
                stream.shutdown().await?;
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
        });
    }
}

/// Records a certificate reload (from the file watcher or SIGHUP) as a `note`, and says it.
fn record_reload(recorder: &mcptap_capture::Recorder, result: Result<ReloadSummary, String>) {
    let (code, message) = match result {
        Ok(summary) => (
            "tls_reloaded",
            format!("TLS certificates reloaded: {summary}"),
        ),
        Err(e) => (
            "tls_reload_failed",
            format!("reloading the TLS certificates failed; the previous ones stay in use: {e}"),
        ),
    };
    record_note(recorder, code, message);
}

/// Records a proxy-side fact (certificates reloaded, ACME progress) as a `note`, and says it.
fn record_note(recorder: &mcptap_capture::Recorder, code: &str, message: String) {
    eprintln!("mcptap: {message}");
    recorder.event_now(EventBody::Note(model::Note {
        code: code.into(),
        message,
        count: None,
        ex: None,
    }));
}

/// Accepts one connection onto the connection set: the TLS handshake (if any) and the HTTP
/// connection run on the connection's own task, so a slow handshake never holds the loop.
fn serve(
    conns: &mut JoinSet<()>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    shared: &Arc<Shared>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let shared = shared.clone();
    let route = listener.route.clone();
    conns.spawn(async move {
        let local = stream
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        match &listener.tls {
            None => {
                serve_http(
                    stream, peer, local, None, &listener, shared, route, stopping,
                )
                .await
            }
            Some(setup) => match setup.accept(stream).await {
                Ok(accepted) => {
                    let facts = Some(accepted.facts);
                    serve_http(
                        accepted.stream,
                        peer,
                        local,
                        facts,
                        &listener,
                        shared,
                        route,
                        stopping,
                    )
                    .await
                }
                // An ACME CA validating a challenge: noted by the ACME side, not a failure.
                Err(rejected) if rejected.kind == RejectKind::AcmeChallenge => {}
                Err(rejected) => {
                    let recorder = &shared.recorder;
                    recorder.event_now(EventBody::TlsError(model::TlsError {
                        peer: peer.to_string(),
                        listener: listener.local.to_string(),
                        sni: rejected.sni,
                        alpn_offered: rejected.alpn_offered,
                        reason: rejected.reason,
                    }));
                }
            },
        }
    });
}

/// Serves HTTP on an accepted (and, with TLS, handshaken) connection until it ends.
#[allow(clippy::too_many_arguments)]
async fn serve_http<S>(
    io: S,
    peer: SocketAddr,
    local: String,
    tls: Option<model::TlsFacts>,
    listener: &Listener,
    shared: Arc<Shared>,
    route: Arc<Route>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = shared.next_conn();
    let recorder = shared.recorder.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let h2_client = tls
        .as_ref()
        .is_some_and(|t| t.alpn.as_deref() == Some("h2"));
    recorder.event_now(EventBody::ConnOpen(ConnOpen {
        conn,
        peer: peer.to_string(),
        local,
        listener: listener.local.to_string(),
        route: Some(route.index),
        tls,
    }));
    let ctx = Arc::new(ConnContext {
        conn,
        peer,
        shared: shared.clone(),
        upstream: pool::Slot::new(route.pool.clone()),
        route,
        scheme,
        exchanges: AtomicU64::new(0),
    });
    let counted = CountingStream::new(io);
    let mut guard = ConnGuard {
        end: ConnEnd::new(conn, &counted),
        shared,
        ctx: ctx.clone(),
    };
    let limits = &listener.limits;
    let fast = limits.fast_path
        && !h2_client
        && ctx.route.rewriting.is_none()
        && !ctx.route.pool.speaks_h2();
    let io = if fast {
        match h1::serve(
            counted,
            &ctx,
            limits.header_timeout,
            limits.max_header_bytes,
            &mut stopping,
        )
        .await
        {
            h1::Served::Closed(error) => {
                guard.end.error = error;
                return;
            }
            h1::Served::Fallback(io) => io,
        }
    } else {
        h1::Rewind::new(counted)
    };
    let service = service_fn(move |req| forward::handle(req, ctx.clone()));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(listener.limits.header_timeout)
        .max_buf_size(listener.limits.max_header_bytes)
        // The client gets the upstream's `Date`, or none: never one the upstream did not send.
        .auto_date_header(false);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .auto_date_header(false)
        .max_header_list_size(listener.limits.max_header_bytes as u32);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    // On shutdown, idle keep-alive connections close now and busy ones after their
    // exchange (HTTP/2: GOAWAY), instead of holding the grace period open.
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        guard.end.error = Some(upstream::error_chain(&*e));
    }
}

/// Records `conn_close` however the connection task ends (finished, failed or aborted).
struct ConnGuard {
    end: ConnEnd,
    shared: Arc<Shared>,
    ctx: Arc<ConnContext>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let exchanges = self.ctx.exchanges.load(Ordering::Relaxed);
        self.end
            .record(&self.shared.recorder, self.shared.forced(), exchanges);
    }
}

/// What a connection's `conn_close` is made of, gathered while it is open (the proxy's
/// connections and the mock's).
pub struct ConnEnd {
    pub conn: u64,
    opened: Instant,
    bytes_in: Arc<AtomicU64>,
    bytes_out: Arc<AtomicU64>,
    /// Why the connection failed, if it did.
    pub error: Option<String>,
}

impl ConnEnd {
    /// Connection `conn`, opened now, its bytes counted by `stream`.
    pub fn new<S>(conn: u64, stream: &CountingStream<S>) -> Self {
        ConnEnd {
            conn,
            opened: Instant::now(),
            bytes_in: stream.bytes_in.clone(),
            bytes_out: stream.bytes_out.clone(),
            error: None,
        }
    }

    /// Records `conn_close`: `shutdown` when the proxy's shutdown cut it, `error` when it
    /// failed, else `closed`.
    pub fn record(&mut self, recorder: &mcptap_capture::Recorder, forced: bool, exchanges: u64) {
        let reason = if forced {
            "shutdown"
        } else if self.error.is_some() {
            "error"
        } else {
            "closed"
        };
        recorder.event_now(EventBody::ConnClose(ConnClose {
            conn: self.conn,
            reason: reason.into(),
            error: self.error.take(),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            duration_us: self.opened.elapsed().as_micros() as u64,
            exchanges,
        }));
    }
}

/// A stream that counts the bytes each way (for `conn_close` and `upgrade`), readable
/// while the stream is still in use.
pub struct CountingStream<S> {
    pub inner: S,
    pub bytes_in: Arc<AtomicU64>,
    pub bytes_out: Arc<AtomicU64>,
}

impl<S> CountingStream<S> {
    pub fn new(inner: S) -> Self {
        CountingStream {
            inner,
            bytes_in: Arc::new(AtomicU64::new(0)),
            bytes_out: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
        res
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

/// What a signal asks for.
enum Signal {
    /// SIGINT or SIGTERM.
    Stop,
    /// SIGHUP: re-read the certificate files.
    Reload,
}

/// Where stop and reload requests come from: the process's signals (SIGINT, SIGTERM,
/// SIGHUP), or a future that asks once to stop (in-process use).
enum Control {
    Signals {
        int: tokio::signal::unix::Signal,
        term: tokio::signal::unix::Signal,
        hup: tokio::signal::unix::Signal,
    },
    Future(Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>),
}

impl Control {
    fn signals() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Control::Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    fn future(stop: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        Control::Future(Some(Box::pin(stop)))
    }

    async fn next(&mut self) -> Signal {
        match self {
            Control::Signals { int, term, hup } => tokio::select! {
                _ = int.recv() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            },
            Control::Future(stop) => match stop.as_mut() {
                Some(f) => {
                    f.await;
                    *stop = None;
                    Signal::Stop
                }
                // Asked once already: nothing more will come.
                None => std::future::pending().await,
            },
        }
    }

    async fn next_stop(&mut self) {
        loop {
            if let Signal::Stop = self.next().await {
                return;
            }
        }
    }
}
