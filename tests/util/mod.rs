//! Test harness: upstream servers on 127.0.0.1:0, the real `mcptap` binary as a proxy in
//! front of them, a client, and the capture read back and checked against the schema.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;

pub type UpBody = BoxBody<Bytes, std::io::Error>;

/// A body from bytes, for fixture upstreams.
pub fn full(b: impl Into<Bytes>) -> UpBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A `text/event-stream` response streaming `body`.
pub fn event_stream<B>(body: B) -> Response<UpBody>
where
    B: http_body::Body<Data = Bytes, Error = std::io::Error> + Send + Sync + 'static,
{
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body.boxed())
        .unwrap()
}

/// A fixture upstream: a hyper server on 127.0.0.1:0 (HTTP/1.1 and HTTP/2) running `handler`.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<UpBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An upstream served by a task of the test's own (for TLS and other special servers).
    pub fn from_task(addr: SocketAddr, task: tokio::task::JoinHandle<()>) -> Upstream {
        Upstream { addr, task }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real binary, proxying to an upstream, writing its capture into a temp folder.
pub struct TestProxy {
    pub addr: SocketAddr,
    /// Every route's listen address, in route order (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    pub capture: PathBuf,
    /// The temp folder the capture is in, for extra files a test needs.
    pub dir: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
    pub stdout: Option<std::process::ChildStdout>,
    /// Every line the proxy wrote on stderr so far.
    stderr: Arc<std::sync::Mutex<Vec<String>>>,
}

pub struct ProxyBuilder {
    upstream: String,
    args: Vec<String>,
    quiet: bool,
    capture: Option<PathBuf>,
    listen: String,
}

impl TestProxy {
    pub fn to(upstream: &str) -> ProxyBuilder {
        ProxyBuilder {
            upstream: upstream.to_string(),
            args: Vec::new(),
            quiet: true,
            capture: None,
            listen: "127.0.0.1:0".into(),
        }
    }

    /// The proxy's stderr lines so far that contain `needle`.
    pub fn stderr_lines(&self, needle: &str) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits (bounded) for a stderr line containing `needle`.
    pub async fn until_stderr(&self, needle: &str, within: Duration) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(line) = self.stderr_lines(needle).into_iter().next() {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no stderr line with {needle:?} within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the listener of route `route` (0 is `--upstream`, then each `--route`).
    pub fn route_url(&self, route: usize, path: &str) -> String {
        format!("http://{}{}", self.addrs[route], path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn stop(&mut self) -> i32 {
        self.signal("TERM");
        self.wait()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    pub fn wait(&mut self) -> i32 {
        // Bounded: a proxy that does not exit fails the test instead of hanging it.
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the proxy did not exit within 15 s");
    }

    /// Stops the proxy and reads its capture.
    pub fn finish(mut self) -> Capture {
        let code = self.stop();
        assert_eq!(code, 0, "the proxy exited with {code}");
        Capture::load(&self.capture)
    }

    /// The peak resident set size of the proxy so far, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS:")
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyBuilder {
    pub fn arg(mut self, a: &str) -> Self {
        self.args.push(a.to_string());
        self
    }

    pub fn args(mut self, a: &[&str]) -> Self {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }

    /// Capture to this path instead of a fresh file in a temp folder.
    pub fn capture_to(mut self, path: &Path) -> Self {
        self.capture = Some(path.to_path_buf());
        self
    }

    /// Listen on this address instead of 127.0.0.1:0 (for a peer that must know the port first).
    pub fn listen(mut self, addr: &str) -> Self {
        self.listen = addr.to_string();
        self
    }

    /// Keep the live terminal lines (on the child's stdout).
    pub fn live(mut self) -> Self {
        self.quiet = false;
        self
    }

    pub fn start(self) -> TestProxy {
        let dir = tempfile::tempdir().unwrap();
        let capture = self
            .capture
            .clone()
            .unwrap_or_else(|| dir.path().join("capture.jsonl"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcptap"));
        cmd.args([
            "proxy",
            "--upstream",
            &self.upstream,
            "--listen",
            &self.listen,
        ])
        .arg("--capture")
        .arg(&capture)
        .args(&self.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_BACKTRACE");
        if self.quiet {
            cmd.arg("--quiet");
        }
        let mut child = cmd.spawn().expect("starting mcptap");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read stderr on a thread: one `listening on` line per route, then `capturing to`;
        // the rest is echoed for failures.
        let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = lines.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mcptap] {line}");
                kept.lock().unwrap().push(line.clone());
                let rest = line
                    .strip_prefix("mcptap: listening on http://")
                    .or_else(|| line.strip_prefix("mcptap: listening on https://"));
                if let Some(rest) = rest {
                    addrs.push(rest.split_whitespace().next().unwrap().parse().unwrap());
                }
                if line.starts_with("mcptap: capturing to ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(std::mem::take(&mut addrs));
                    }
                }
            }
        });
        let addrs: Vec<SocketAddr> = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("mcptap did not report its listen address");
        let addr = *addrs.first().expect("mcptap reported no listen address");
        let stdout = child.stdout.take();
        TestProxy {
            addr,
            addrs,
            capture,
            dir: dir.path().to_path_buf(),
            child,
            _dir: dir,
            stdout,
            stderr: lines,
        }
    }
}

/// A capture read back: every line parsed and checked against the published schema.
pub struct Capture {
    pub raw: Vec<u8>,
    pub events: Vec<Value>,
}

fn schema() -> &'static jsonschema::Validator {
    static SCHEMA: OnceLock<jsonschema::Validator> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/capture-format.schema.json");
        let text = std::fs::read_to_string(&path).expect("docs/capture-format.schema.json");
        let schema: Value = serde_json::from_str(&text).expect("the schema is JSON");
        jsonschema::validator_for(&schema).expect("the schema compiles")
    })
}

impl Capture {
    pub fn load(path: &Path) -> Capture {
        Capture::parse(std::fs::read(path).unwrap())
    }

    /// Parses capture bytes (from a file or a pipe), checking every line against the schema.
    pub fn parse(raw: Vec<u8>) -> Capture {
        let text = std::str::from_utf8(&raw).expect("captures are UTF-8");
        assert!(text.ends_with('\n'), "the capture ends with a whole line");
        let mut events = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", i + 1));
            let errors: Vec<String> = schema()
                .iter_errors(&event)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(
                errors.is_empty(),
                "line {} breaks the schema: {errors:?}\n{line}",
                i + 1
            );
            events.push(event);
        }
        assert_eq!(
            events[0]["kind"], "session",
            "the first line is the session"
        );
        Capture { raw, events }
    }

    pub fn kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["kind"] == kind).collect()
    }

    /// Events of one exchange, in file order.
    pub fn exchange(&self, ex: u64) -> Vec<&Value> {
        self.events.iter().filter(|e| e["ex"] == ex).collect()
    }

    /// The one event of `kind` for exchange `ex`.
    pub fn one(&self, ex: u64, kind: &str) -> &Value {
        let found: Vec<_> = self
            .exchange(ex)
            .into_iter()
            .filter(|e| e["kind"] == kind)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "exchange {ex} has {} {kind} events",
            found.len()
        );
        found[0]
    }

    /// The recorded body text of one exchange and direction, joined.
    pub fn body_text(&self, ex: u64, dir: &str) -> String {
        self.exchange(ex)
            .into_iter()
            .filter(|e| e["kind"] == "body" && e["dir"] == dir)
            .map(|e| e["text"].as_str().expect("a text body").to_string())
            .collect()
    }

    /// The exchange ids in order of their request events.
    pub fn exchanges(&self) -> Vec<u64> {
        self.kind("request")
            .iter()
            .map(|e| e["ex"].as_u64().unwrap())
            .collect()
    }

    pub fn last(&self) -> &Value {
        self.events.last().unwrap()
    }

    pub fn contains_bytes(&self, needle: &str) -> bool {
        self.raw
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }
}

/// An HTTP/1.1 client (keep-alive pool) for tests.
pub fn h1_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, UpBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, UpBody>
{
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Reads a whole response body.
pub async fn read_all(resp: Response<Incoming>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Waits (bounded) until the live capture holds `n` lines of `kind`.
pub async fn until_recorded(proxy: &TestProxy, kind: &str, n: usize) {
    let needle = format!("\"kind\":\"{kind}\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&proxy.capture).unwrap();
        if text.lines().filter(|l| l.contains(&needle)).count() >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {n} {kind} lines:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A raw TCP upstream that answers every connection with `answer` and closes.
pub async fn raw_upstream(answer: &'static [u8]) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp.write_all(answer).await;
                let _ = tcp.shutdown().await;
            });
        }
    });
    Upstream::from_task(addr, task)
}

/// The events of a capture with what differs between two runs taken out: times, addresses
/// and ports, `date` values, frame timings and the byte counts of the connection (the two
/// paths spell the framing headers they add differently).
pub fn comparable_events(cap: &Capture) -> Vec<Value> {
    cap.events
        .iter()
        .filter(|e| e["kind"] != "session" && e["kind"] != "session_end")
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            for key in [
                "t",
                "ts",
                "peer",
                "local",
                "listener",
                "frames",
                "duration_us",
                "bytes_in",
                "bytes_out",
                "timings",
                // Which path served it: the one thing that differs by design.
                "served_by",
            ] {
                o.remove(key);
            }
            if let Some(headers) = o.get_mut("headers").and_then(Value::as_array_mut) {
                for pair in headers.iter_mut() {
                    if pair[0] == "date" {
                        pair[1] = Value::from("…");
                    }
                }
            }
            e
        })
        .collect()
}
