//! w8's load: MCP clients that open session after session through the proxy, so that the
//! capture it records holds many interleaved client flows made by real traffic, not written
//! by hand. MCP 2025-06-18 over Streamable HTTP with JSON responses, against the upstream's
//! `POST /mcp`.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use tokio::task::JoinSet;

use crate::client::connect_h1;

/// Clients at once in w8's load, each on its own keep-alive HTTP/1.1 connection.
pub const CLIENTS: usize = 32;
/// `tools/call` requests in a complete session.
pub const CALLS: u64 = 20;
/// Every `SILENT_EVERY`th session stops after `initialize`: a client that went silent.
pub const SILENT_EVERY: u64 = 10;

const PROTOCOL_VERSION: &str = "2025-06-18";
/// One User-Agent for every client, as behind one hosted connector.
const USER_AGENT: &str = "mcptap-bench-client/1.0";
/// A request unanswered this long ends its session and its connection.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A client whose connection fails this many times in a row gives up.
const FAILURES_TO_GIVE_UP: u32 = 20;

/// What the load sent and got.
#[derive(Default)]
pub struct McpLoad {
    /// Sessions started: `initialize` answered with an `Mcp-Session-Id`.
    pub sessions: u64,
    /// Of those, the ones that stopped after `initialize` on purpose.
    pub silent: u64,
    /// Exchanges completed: request sent, whole response read, expected status.
    pub exchanges: u64,
    /// Requests that failed or got an unexpected answer; each ends its session.
    pub errors: u64,
    /// The first of those errors, to say why.
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl McpLoad {
    /// Adds another run's counts (and its time) to these.
    pub fn add(&mut self, other: McpLoad) {
        self.elapsed += other.elapsed;
        self.sessions += other.sessions;
        self.silent += other.silent;
        self.exchanges += other.exchanges;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn failed(&mut self, e: anyhow::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{e:#}"));
        }
    }
}

/// Runs one client for each number in `clients` (its tokens are `tok-<number>-<session>`)
/// against `addr` until `enough(exchanges completed so far)` says so (asked every 10 ms) or
/// `limit` has passed; each client finishes the session it is in before it stops.
pub async fn run(
    addr: SocketAddr,
    clients: Range<usize>,
    limit: Duration,
    mut enough: impl FnMut(u64) -> bool,
) -> anyhow::Result<McpLoad> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let exchanges = Arc::new(AtomicU64::new(0));
    let mut running = JoinSet::new();
    for number in clients {
        running.spawn(client(addr, number, stop.clone(), exchanges.clone()));
    }
    let mut load = McpLoad::default();
    while !enough(exchanges.load(Ordering::Relaxed)) && started.elapsed() < limit {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            done = running.join_next() => match done {
                Some(done) => load.add(done.context("an MCP client panicked")?),
                // Every client gave up.
                None => break,
            },
        }
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = running.join_next().await {
        load.add(done.context("an MCP client panicked")?);
    }
    load.elapsed = started.elapsed();
    Ok(load)
}

/// One client: sessions one after another on one connection (a new one after a failure),
/// each with its own bearer token `tok-<client>-<session>`.
async fn client(
    addr: SocketAddr,
    number: usize,
    stop: Arc<AtomicBool>,
    exchanges: Arc<AtomicU64>,
) -> McpLoad {
    let mut load = McpLoad::default();
    let mut conn = None;
    let mut failures_in_a_row = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && failures_in_a_row < FAILURES_TO_GIVE_UP {
        let sender = match conn.as_mut() {
            Some(sender) => sender,
            None => match connect_h1(addr).await {
                Ok(sender) => conn.insert(sender),
                Err(e) => {
                    load.failed(e);
                    failures_in_a_row += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        n += 1;
        let token = format!("Bearer tok-{number}-{n}");
        // Staggered across clients, so that even a short run has its share of silent ones.
        let silent = (n + number as u64).is_multiple_of(SILENT_EVERY);
        let mcp = Mcp {
            addr,
            token: &token,
            exchanges: &exchanges,
        };
        match mcp.session(sender, silent, &mut load).await {
            Ok(()) => failures_in_a_row = 0,
            Err(e) => {
                load.failed(e);
                failures_in_a_row += 1;
                conn = None;
            }
        }
    }
    load
}

/// One session's requests.
struct Mcp<'a> {
    addr: SocketAddr,
    token: &'a str,
    /// Exchanges completed by every client of the run.
    exchanges: &'a AtomicU64,
}

impl Mcp<'_> {
    /// One session: `initialize`, and unless `silent`, `notifications/initialized`,
    /// `tools/list` and [`CALLS`] `tools/call`, each after the first with the session's
    /// `Mcp-Session-Id` and `MCP-Protocol-Version` (basic/transports, "Session Management"
    /// and "Protocol Version Header").
    async fn session(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        silent: bool,
        load: &mut McpLoad,
    ) -> anyhow::Result<()> {
        let initialize = format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{PROTOCOL_VERSION}","capabilities":{{}},"clientInfo":{{"name":"mcptap-bench-client","version":"1.0"}}}}}}"#
        );
        let id = self
            .exchange(conn, None, "initialize", initialize, StatusCode::OK, load)
            .await?
            .context("initialize answered without an Mcp-Session-Id")?;
        load.sessions += 1;
        if silent {
            load.silent += 1;
            return Ok(());
        }
        let id = Some(id.as_str());
        let initialized = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
        let method = "notifications/initialized";
        self.exchange(
            conn,
            id,
            method,
            initialized.into(),
            StatusCode::ACCEPTED,
            load,
        )
        .await?;
        let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
        self.exchange(conn, id, "tools/list", list.into(), StatusCode::OK, load)
            .await?;
        for call in 2..CALLS + 2 {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":{call},"method":"tools/call","params":{{"name":"search","arguments":{{"query":"mcptap benchmark {call}","limit":10}}}}}}"#
            );
            self.exchange(conn, id, "tools/call", body, StatusCode::OK, load)
                .await?;
        }
        Ok(())
    }

    /// POSTs one JSON-RPC message (a `method` request or notification), reads the whole answer, and counts the exchange if its
    /// status is `want`; the answer's `Mcp-Session-Id`, if any.
    async fn exchange(
        &self,
        conn: &mut SendRequest<Full<Bytes>>,
        session: Option<&str>,
        method: &str,
        body: String,
        want: StatusCode,
        load: &mut McpLoad,
    ) -> anyhow::Result<Option<String>> {
        let mut req = Request::post("/mcp")
            .header("host", self.addr.to_string())
            .header("user-agent", USER_AGENT)
            .header("authorization", self.token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream");
        if let Some(session) = session {
            req = req
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        let req = req.body(Full::new(Bytes::from(body)))?;
        let parts = tokio::time::timeout(REQUEST_TIMEOUT, async {
            conn.ready().await?;
            let (parts, body) = conn.send_request(req).await?.into_parts();
            body.collect().await?;
            Ok::<_, hyper::Error>(parts)
        })
        .await
        .with_context(|| format!("{method}: no answer within 30 s"))?
        .with_context(|| format!("{method}: the connection failed"))?;
        if parts.status != want {
            bail!("{method} answered {}, not {want}", parts.status);
        }
        load.exchanges += 1;
        self.exchanges.fetch_add(1, Ordering::Relaxed);
        Ok(parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }
}
