//! Real MCP peers: the TypeScript and Python SDKs' own clients (OAuth and plain), the
//! TypeScript SDK's example OAuth server, and @modelcontextprotocol/server-everything over
//! Streamable HTTP (plain and TLS) and the legacy HTTP+SSE transport, with the real `mcptap`
//! binary between them.
//!
//! The peers are pinned npm and PyPI packages installed by `tests/peers/setup` into
//! tests/peers/node_modules and tests/peers/.venv, driven by the scripts beside them (see
//! tests/peers/README.md). Without them each test prints `SKIPPED: ...` and returns, except
//! in CI (`CI=true`), where a missing peer fails the test. Every peer process is killed when its guard
//! drops, and each test gives up after 60 s.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// The most any one test here may take, start to finish.
pub(crate) const TEST_BUDGET: Duration = Duration::from_secs(60);

/// tests/peers, when its npm packages are installed.
pub(crate) fn peers_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers");
    let installed = [
        "node_modules/@modelcontextprotocol/sdk/package.json",
        "node_modules/@modelcontextprotocol/server-everything/package.json",
        "node_modules/@modelcontextprotocol/client/package.json",
        "node_modules/@modelcontextprotocol/server/package.json",
        "node_modules/@modelcontextprotocol/node/package.json",
    ]
    .iter()
    .all(|p| dir.join(p).is_file());
    installed.then_some(dir)
}

/// Whether a missing peer may be skipped: only outside CI (`CI=true` fails instead).
pub(crate) fn may_skip(what: &str) -> bool {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{what} is not installed, and in CI every peer must be: tests/peers/setup installs it"
        );
    }
    eprintln!("SKIPPED: {what} is not installed; run tests/peers/setup");
    true
}

/// The peers dir, or a loud skip outside CI (the test returns without asserting anything).
macro_rules! peers_or_skip {
    () => {
        match peers_dir() {
            Some(dir) => dir,
            None if may_skip("the real MCP peers") => return,
            None => unreachable!(),
        }
    };
}

/// A peer process (a server or a driver) that is killed when dropped. Its stdout and stderr
/// lines are echoed to the test's stderr (shown when a test fails) and can be waited for.
pub(crate) struct Peer {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Everything the process printed on stdout, for drivers that print their result there.
    stdout: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Peer {
    pub(crate) fn node(
        name: &'static str,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Peer {
        Peer::spawn(name, "node", dir, args, env)
    }

    fn spawn(
        name: &'static str,
        program: &str,
        dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Peer {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "starting `{program} {}` for {name} ({e}): tests/peers is installed, so this must be there too",
                args.join(" ")
            )
        });
        let (tx, lines) = mpsc::channel();
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        {
            let tx = tx.clone();
            let all = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    all.lock().unwrap().push_str(&line);
                    all.lock().unwrap().push('\n');
                    let _ = tx.send(line);
                }
            });
        }
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[{name} stderr] {line}");
                let _ = tx.send(line);
            }
        });
        let stdin = child.stdin.take();
        Peer {
            name,
            child,
            stdin,
            lines,
            stdout,
        }
    }

    /// Waits for a line (stdout or stderr) containing `needle`, and returns it.
    pub(crate) fn wait_for(&self, needle: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} did not print {needle:?} in time", self.name)
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("{} exited before printing {needle:?}", self.name)
                }
            }
        }
    }

    fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the process to exit (killing it at the deadline) and returns its exit code
    /// and stdout.
    pub(crate) fn finish(mut self, deadline: Instant) -> (i32, String) {
        drop(self.stdin.take());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // The reader thread ends at EOF, right after the exit: wait for it to drain.
                let end = Instant::now() + Duration::from_secs(5);
                while self
                    .lines
                    .recv_timeout(end.saturating_duration_since(Instant::now()))
                    .is_ok()
                {}
                let out = self.stdout.lock().unwrap().clone();
                return (status.code().unwrap_or(-1), out);
            }
            if Instant::now() >= deadline {
                panic!("{} did not finish in time", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a driver script to completion and returns the JSON object it printed last on stdout,
/// asserting it exited 0 with `"ok": true`.
fn run_driver(
    name: &'static str,
    dir: &Path,
    program: &str,
    args: &[&str],
    deadline: Instant,
) -> Value {
    run_driver_with(name, dir, program, args, &[], deadline)
}

/// [`run_driver`] with extra environment variables.
fn run_driver_with(
    name: &'static str,
    dir: &Path,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    deadline: Instant,
) -> Value {
    let (code, out) = Peer::spawn(name, program, dir, args, env).finish(deadline);
    let summary: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{name} printed no JSON summary (exit {code}):\n{out}"));
    assert_eq!(code, 0, "{name} failed: {summary:#}");
    assert_eq!(summary["ok"], true, "{name}: {summary:#}");
    summary
}

/// `mcptap explain CAPTURE --json`, parsed; the human report is echoed for failures.
pub(crate) fn explain(capture: &Path) -> Value {
    let bin = env!("CARGO_BIN_EXE_mcptap");
    let human = Command::new(bin)
        .arg("explain")
        .arg(capture)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&human.stdout));
    let out = Command::new(bin)
        .arg("explain")
        .arg(capture)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mcptap explain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("explain --json prints JSON")
}

pub(crate) fn stage_status<'a>(report: &'a Value, id: &str) -> &'a str {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("explain has no stage {id}"))["status"]
        .as_str()
        .unwrap()
}

/// What is wrong with the report's stages, against what each stage should be.
fn stage_problems(report: &Value, expected: &[(&str, &str)]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(id, want)| {
            let got = stage_status(report, id);
            (got != *want).then(|| format!("stage {id} is {got}, expected {want}"))
        })
        .collect()
}

pub(crate) fn error_findings(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| format!("error finding {}: {}", f["check"], f["message"]))
        .collect()
}

/// The value after `key` in a peer's line (`... mcp=http://127.0.0.1:PORT/mcp ...`).
pub(crate) fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

const ALL_STAGES: [&str; 12] = [
    "reach",
    "challenge",
    "resource_metadata",
    "auth_server_metadata",
    "registration",
    "authorize",
    "token",
    "initialize",
    "initialized",
    "get_stream",
    "list",
    "call",
];

/// Which SDK's client drives the OAuth flow.
#[derive(Clone, Copy, PartialEq)]
enum Connector {
    /// oauth-flow.mjs: the TypeScript SDK.
    TypeScript,
    /// oauth_flow.py: the Python SDK, from tests/peers/.venv.
    Python,
}

/// Where the authorization server is, and how the proxy fronts it.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// `--as same`: the AS on the MCP origin, which names the proxy's URL as its own.
    SameOrigin,
    /// `--as separate`: the AS on its own port, reached directly, not through the proxy.
    SeparateDirect,
    /// `--as separate` behind a second `--route`, with `--rewrite-origins`: the server names
    /// only its own upstream origins (as the SDK example does) and the proxy rewrites them.
    SeparateRouted,
}

/// Starts the SDK example OAuth server in `layout` with mcptap in front of it, runs the SDK
/// client's whole flow through the proxy, checks what the client got and that the capture
/// holds each of its requests to the proxy, and returns the client's summary, the proxy's
/// origin (its first route), the AS origin, and the capture's path (in `tmp`).
fn oauth_session(
    dir: &Path,
    layout: Layout,
    connector: Connector,
    tmp: &Path,
    deadline: Instant,
) -> (Value, String, String, PathBuf) {
    let as_mode = match layout {
        Layout::SameOrigin => "same",
        Layout::SeparateDirect | Layout::SeparateRouted => "separate",
    };
    let mut server = Peer::node(
        "oauth-server",
        dir,
        &["oauth-server.mjs", "--as", as_mode],
        &[],
    );
    let listening = server.wait_for("mcptap-peer: listening", deadline);
    let upstream = field(&listening, "mcp=")
        .strip_suffix("/mcp")
        .unwrap()
        .to_string();
    let as_origin = field(&listening, "as=").to_string();
    let capture = tmp.join("capture.jsonl");
    let mut proxy = TestProxy::to(&upstream).capture_to(&capture);
    if layout == Layout::SeparateRouted {
        proxy = proxy.args(&[
            "--route",
            &format!("127.0.0.1:0={as_origin}"),
            "--rewrite-origins",
        ]);
    }
    let proxy = proxy.start();
    let mcp_url = proxy.url("/mcp");
    if layout == Layout::SeparateRouted {
        // The server knows nothing of the proxy: it names its own URL as its resource.
        server.send_line(&format!("{upstream}/mcp"));
    } else {
        // The server names the proxy's URL as its resource (RFC 9728 §3.3) and, with `same`,
        // as its issuer too.
        server.send_line(&mcp_url);
    }
    server.wait_for("mcptap-peer: ready", deadline);
    let proxy_origins: Vec<String> = proxy.addrs.iter().map(|a| format!("http://{a}")).collect();

    let summary = match connector {
        Connector::TypeScript => run_driver(
            "oauth-flow.mjs",
            dir,
            "node",
            &["oauth-flow.mjs", &mcp_url],
            deadline,
        ),
        Connector::Python => run_driver(
            "oauth_flow.py",
            dir,
            dir.join(".venv/bin/python").to_str().unwrap(),
            &["oauth_flow.py", &mcp_url],
            deadline,
        ),
    };
    let cap = proxy.finish();
    drop(server);

    // What every SDK-driven connector must have got.
    assert_eq!(
        summary["challenged"], true,
        "the first initialize was not challenged: {summary:#}"
    );
    assert_eq!(summary["client_id_registered"], true);
    assert_eq!(summary["token_type"], "bearer");
    assert_eq!(summary["server"]["name"], "simple-streamable-http-server");
    assert_eq!(
        summary["tools"],
        serde_json::json!(["greet", "multi-greet"])
    );
    assert_eq!(summary["greet"], "Hello, mcptap!");
    assert_eq!(summary["multi_greet"], "Good morning, mcptap!");
    assert_eq!(
        summary["logging"],
        serde_json::json!([
            "debug: Starting multi-greet for mcptap",
            "info: Sending first greeting to mcptap",
            "info: Sending second greeting to mcptap"
        ]),
        "multi-greet's notifications"
    );
    if connector == Connector::TypeScript {
        assert_eq!(summary["state_round_trip"], true);
        assert_eq!(summary["session_terminated"], true);
    }

    // The capture holds exactly the requests the client sent to the proxy, on any route.
    let proxy_origin = mcp_url.strip_suffix("/mcp").unwrap().to_string();
    let via_proxy: Vec<String> = summary["contacted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            let (method, url) = c.as_str().unwrap().split_once(' ').unwrap();
            let origin = proxy_origins.iter().find(|o| {
                url.strip_prefix(o.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']))
            })?;
            Some(format!("{method} {}", &url[origin.len()..]))
        })
        .collect();
    let recorded: Vec<String> = cap
        .kind("request")
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap(),
                r["target"].as_str().unwrap()
            )
        })
        .collect();
    let mut a = via_proxy.clone();
    let mut b = recorded.clone();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "the client's requests to the proxy and the capture's differ"
    );
    for ex in cap.exchanges() {
        if cap.one(ex, "request")["method"] != "GET" {
            assert_eq!(cap.one(ex, "end")["outcome"], "complete", "exchange {ex}");
        }
    }
    assert_eq!(cap.last()["kind"], "session_end");
    (summary, proxy_origin, as_origin, capture)
}

/// explain on a session the proxy saw whole: every stage reached, no silence, no error, and the
/// token issued by /token presented and accepted.
fn assert_explains_clean(capture: &Path) {
    let report = explain(capture);
    let mut problems = stage_problems(&report, &ALL_STAGES.map(|id| (id, "reached")));
    problems.extend(error_findings(&report));
    if !report["silence"].is_null() {
        problems.push(format!("silence reported: {}", report["silence"]));
    }
    let tokens = report["tokens"].as_array().unwrap();
    if !tokens.iter().any(|t| {
        t["grant_type"] == "authorization_code"
            && t["accepted"] == true
            && t["presented"].as_array().is_some_and(|p| !p.is_empty())
    }) {
        problems.push(format!(
            "no authorization_code token line presented and accepted: {tokens:?}"
        ));
    }
    assert!(
        problems.is_empty(),
        "explain on a clean SDK OAuth session:\n  {}",
        problems.join("\n  ")
    );
}

/// The SDK's OAuth example with its authorization server on the MCP server's own origin: the
/// proxy sees the whole flow, and explain must find every stage and nothing wrong.
#[test]
fn typescript_sdk_oauth_session_explains_clean() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let (summary, proxy_origin, _, capture) = oauth_session(
        &dir,
        Layout::SameOrigin,
        Connector::TypeScript,
        tmp.path(),
        deadline,
    );
    for c in summary["contacted"].as_array().unwrap() {
        let url = c.as_str().unwrap().split_whitespace().nth(1).unwrap();
        assert!(
            url.starts_with(&proxy_origin),
            "the client went around the proxy: {c}"
        );
    }

    assert_explains_clean(&capture);
}

/// The same session driven by the Python SDK's client (tests/peers/.venv), which probes
/// `server/discover` (protocol 2026-07-28) first and falls back to initialize.
#[test]
fn python_sdk_oauth_session_explains_clean() {
    let dir = peers_or_skip!();
    if !dir.join(".venv/bin/python").is_file() && may_skip("the Python MCP peer") {
        return;
    }
    let deadline = Instant::now() + TEST_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let (summary, proxy_origin, _, capture) = oauth_session(
        &dir,
        Layout::SameOrigin,
        Connector::Python,
        tmp.path(),
        deadline,
    );
    for c in summary["contacted"].as_array().unwrap() {
        let url = c.as_str().unwrap().split_whitespace().nth(1).unwrap();
        assert!(
            url.starts_with(&proxy_origin),
            "the client went around the proxy: {c}"
        );
    }
    assert_explains_clean(&capture);
}

/// One capture, several real clients at once against the SDK's OAuth example: the TypeScript
/// SDK and the Python SDK each going the whole way, a TypeScript SDK client that stops after its
/// token (the connector of ../shared/CASE.md), a client refused at its first request, and a
/// scanner. `explain` tells the flows apart, each with its own furthest stage and silence, and
/// explains the silent one first.
#[test]
fn several_sdk_clients_in_one_capture_are_explained_flow_by_flow() {
    let dir = peers_or_skip!();
    if !dir.join(".venv/bin/python").is_file() && may_skip("the Python MCP peer") {
        return;
    }
    let deadline = Instant::now() + TEST_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Peer::node(
        "oauth-server",
        &dir,
        &["oauth-server.mjs", "--as", "same"],
        &[],
    );
    let listening = server.wait_for("mcptap-peer: listening", deadline);
    let upstream = field(&listening, "mcp=")
        .strip_suffix("/mcp")
        .unwrap()
        .to_string();
    let capture = tmp.path().join("capture.jsonl");
    let proxy = TestProxy::to(&upstream).capture_to(&capture).start();
    let mcp_url = proxy.url("/mcp");
    server.send_line(&mcp_url);
    server.wait_for("mcptap-peer: ready", deadline);

    // Refused at its first request: a bearer token this server never issued.
    let refused = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &mcp_url])
        .args(["-H", "authorization: Bearer a-token-from-elsewhere"])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "accept: application/json, text/event-stream"])
        .args(["-A", "refused-client/1"])
        .args(["-d", r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"r","version":"1"}}}"#])
        .output()
        .unwrap();
    // The SDK example answers a token it does not know with a 500, not RFC 6750's 401: a
    // refusal either way.
    let status = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        status.starts_with('4') || status.starts_with('5'),
        "{status}"
    );
    let scanner = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-A", "scanner/1"])
        .arg(proxy.url("/wp-login.php"))
        .arg(proxy.url("/favicon.ico"))
        .status()
        .unwrap();
    assert!(scanner.success());

    // Three SDK clients at once.
    let python = dir.join(".venv/bin/python");
    let clients = [
        Peer::spawn(
            "oauth-flow.mjs (whole)",
            "node",
            &dir,
            &["oauth-flow.mjs", &mcp_url],
            &[],
        ),
        Peer::spawn(
            "oauth_flow.py",
            python.to_str().unwrap(),
            &dir,
            &["oauth_flow.py", &mcp_url],
            &[],
        ),
        Peer::spawn(
            "oauth-flow.mjs (stops after token)",
            "node",
            &dir,
            &["oauth-flow.mjs", &mcp_url, "--stop-after-token"],
            &[],
        ),
    ];
    for client in clients {
        let (code, out) = client.finish(deadline);
        assert_eq!(code, 0, "{out}");
    }
    drop(proxy.finish());
    drop(server);

    let report = explain(&capture);
    let flows = report["flows"].as_array().expect("flows[]");
    let summary: Vec<String> = flows
        .iter()
        .map(|f| {
            format!(
                "{} {} furthest={} silent={} exchanges={}",
                f["number"],
                f["client"],
                f["furthest_stage"],
                f["silence"]["after_stage"],
                f["exchange_ids"].as_array().unwrap().len()
            )
        })
        .collect();
    assert_eq!(flows.len(), 4, "{summary:#?}");
    let reached_call = |f: &Value| {
        f["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == "call" && s["reached"] == true)
    };
    let whole: Vec<&Value> = flows.iter().filter(|f| reached_call(f)).collect();
    assert_eq!(
        whole.len(),
        2,
        "the two SDK clients that went the whole way: {summary:#?}"
    );
    for f in &whole {
        assert_eq!(f["silence"], Value::Null, "{summary:#?}");
        assert_eq!(
            f["tokens"].as_array().unwrap().len(),
            1,
            "{:#}",
            f["tokens"]
        );
        assert_eq!(f["tokens"][0]["accepted"], true);
    }
    let silent: Vec<&Value> = flows
        .iter()
        .filter(|f| f["silence"]["after_stage"] == "token")
        .collect();
    assert_eq!(silent.len(), 1, "{summary:#?}");
    assert_eq!(
        silent[0]["tokens"][0]["accepted"],
        Value::Null,
        "never presented"
    );
    let refused: Vec<&Value> = flows
        .iter()
        .filter(|f| f["client"].as_str().unwrap().contains("refused-client/1"))
        .collect();
    assert_eq!(refused.len(), 1, "{summary:#?}");
    assert_eq!(refused[0]["exchange_ids"].as_array().unwrap().len(), 1);
    assert_eq!(report["other_traffic"].as_array().unwrap().len(), 2);
    // The silent one is explained, and the top level is its.
    assert_eq!(
        report["flow"]["number"], silent[0]["number"],
        "{:#}",
        report["flow"]
    );
    assert_eq!(report["silence"]["after_stage"], "token");
}

/// As in the SDK example, the authorization server on its own port: the client reaches it
/// directly, so the proxy sees challenge and resource metadata, then the authorized MCP
/// traffic; explain must call the OAuth stages in between not observed, not missing.
#[test]
fn typescript_sdk_oauth_with_a_separate_authorization_server_is_not_observed_not_missing() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let (summary, proxy_origin, as_origin, capture) = oauth_session(
        &dir,
        Layout::SeparateDirect,
        Connector::TypeScript,
        tmp.path(),
        deadline,
    );
    let contacted: Vec<&str> = summary["contacted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for path in ["/register", "/authorize", "/token"] {
        assert!(
            contacted.iter().any(|c| c
                .split_whitespace()
                .nth(1)
                .unwrap()
                .starts_with(&format!("{as_origin}{path}"))),
            "the client did not reach {as_origin}{path} directly: {contacted:?}"
        );
    }
    assert!(contacted
        .iter()
        .any(|c| c.starts_with(&format!("POST {proxy_origin}/mcp"))));

    let report = explain(&capture);
    let expected: Vec<(&str, &str)> = ALL_STAGES
        .iter()
        .map(|&id| match id {
            "auth_server_metadata" | "registration" | "authorize" | "token" => (id, "not_observed"),
            _ => (id, "reached"),
        })
        .collect();
    let mut problems = stage_problems(&report, &expected);
    problems.extend(error_findings(&report));
    if !report["silence"].is_null() {
        problems.push(format!("silence reported: {}", report["silence"]));
    }
    assert!(
        problems.is_empty(),
        "explain on an SDK OAuth session with the AS elsewhere:\n  {}",
        problems.join("\n  ")
    );
}

/// The SDK example's layout — MCP server and authorization server on two ports, each naming
/// only its own origin — behind two routes with `--rewrite-origins`: the client starts at the
/// proxy and stays there through discovery, registration, the authorize redirect, the token,
/// and the MCP calls; one capture holds both origins, and explain finds every stage from the
/// challenge to the call and nothing wrong.
#[test]
fn typescript_sdk_oauth_with_the_authorization_server_behind_a_second_route_explains_clean() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let tmp = tempfile::tempdir().unwrap();
    let (summary, proxy_origin, as_origin, capture) = oauth_session(
        &dir,
        Layout::SeparateRouted,
        Connector::TypeScript,
        tmp.path(),
        deadline,
    );
    let cap = Capture::load(&capture);
    let routes = cap.events[0]["routes"].as_array().unwrap().clone();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[1]["upstream"], format!("{as_origin}/"));
    let as_public = format!("http://{}", routes[1]["listen"].as_str().unwrap());
    // Every URL the client contacted was the proxy's: the rewritten metadata, challenge and
    // redirects never sent it to either upstream.
    let contacted: Vec<&str> = summary["contacted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in &contacted {
        let url = c.split_whitespace().nth(1).unwrap();
        assert!(
            url.starts_with(&format!("{proxy_origin}/"))
                || url.starts_with(&format!("{as_public}/")),
            "the client went around the proxy: {c}"
        );
    }
    // The OAuth endpoints were reached on the AS route, the MCP endpoint on the first.
    let route_of = |path: &str| -> Vec<u64> {
        cap.kind("request")
            .into_iter()
            .filter(|r| r["target"].as_str().unwrap().starts_with(path))
            .map(|r| r["route"].as_u64().unwrap())
            .collect()
    };
    for path in [
        "/register",
        "/authorize",
        "/token",
        "/.well-known/oauth-authorization-server",
    ] {
        let routes = route_of(path);
        assert!(
            !routes.is_empty() && routes.iter().all(|&r| r == 1),
            "{path}: {routes:?}"
        );
    }
    let mcp = route_of("/mcp");
    assert!(
        !mcp.is_empty() && mcp.iter().all(|&r| r == 0),
        "/mcp: {mcp:?}"
    );
    // The rewrites are on the record: the challenge, the metadata, the authorize and token
    // requests' resource indicator.
    let noted: Vec<String> = cap
        .kind("note")
        .into_iter()
        .filter(|n| n["code"] == "origins_rewritten")
        .map(|n| n["message"].as_str().unwrap().to_string())
        .collect();
    for place in [
        "www-authenticate",
        "body (application/json)",
        "target",
        "body (application/x-www-form-urlencoded)",
    ] {
        assert!(
            noted.iter().any(|m| m.contains(place)),
            "no rewrite noted in {place}: {noted:#?}"
        );
    }
    assert!(
        !cap.contains_bytes(&format!("\"resource\":\"{as_origin}")),
        "the capture records what the client saw"
    );

    let report = explain(&capture);
    let expected: Vec<(&str, &str)> = ALL_STAGES.iter().map(|&id| (id, "reached")).collect();
    let mut problems = stage_problems(&report, &expected);
    problems.extend(error_findings(&report));
    if !report["silence"].is_null() {
        problems.push(format!("silence reported: {}", report["silence"]));
    }
    assert!(
        problems.is_empty(),
        "explain on an SDK OAuth session over two routes:\n  {}",
        problems.join("\n  ")
    );
}

/// server-everything in `mode` (`streamableHttp` or `sse`) on a free port, and its origin
/// once it listens.
fn server_everything(dir: &Path, mode: &str, deadline: Instant) -> (Peer, String) {
    let server = Peer::node(
        "server-everything",
        dir,
        &[
            "--import",
            "./listen-reporter.mjs",
            "node_modules/@modelcontextprotocol/server-everything/dist/index.js",
            mode,
        ],
        &[("PORT", "0")],
    );
    let listening = server.wait_for("mcptap-peer: listening on ", deadline);
    let origin = format!("http://{}", field(&listening, "http://"));
    (server, origin)
}

/// How a server-everything session runs through the proxy.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Everything {
    /// Streamable HTTP, TypeScript SDK client, plain HTTP to the proxy.
    Streamable,
    /// The same over TLS: the proxy's certificate from a local CA (`--self-signed`), trusted by
    /// the client through NODE_EXTRA_CA_CERTS.
    StreamableTls,
    /// The legacy HTTP+SSE transport (server-everything `sse`, the SDK's SSEClientTransport).
    LegacySse,
    /// Streamable HTTP, Python SDK client (tests/peers/.venv).
    Python,
}

/// server-everything in the mode `how` needs; the client run direct and through the proxy
/// gets the same answers and makes the same HTTP exchanges, and the capture holds every
/// exchange and every SSE event; explain finds the MCP stages and no error.
fn everything_through_the_proxy(dir: &Path, how: Everything) {
    let deadline = Instant::now() + TEST_BUDGET;
    let mode = if how == Everything::LegacySse {
        "sse"
    } else {
        "streamableHttp"
    };
    let (server, upstream) = server_everything(dir, mode, deadline);
    let path = if how == Everything::LegacySse {
        "/sse"
    } else {
        "/mcp"
    };
    let python = dir.join(".venv/bin/python");
    let client = |label: &'static str, url: &str, env: &[(&str, &str)]| match how {
        Everything::Python => run_driver_with(
            label,
            dir,
            python.to_str().unwrap(),
            &["everything_client.py", url],
            env,
            deadline,
        ),
        Everything::LegacySse => run_driver_with(
            label,
            dir,
            "node",
            &["everything-client.mjs", url, "--sse"],
            env,
            deadline,
        ),
        _ => run_driver_with(
            label,
            dir,
            "node",
            &["everything-client.mjs", url],
            env,
            deadline,
        ),
    };
    let direct = client(
        "everything-client direct",
        &format!("{upstream}{path}"),
        &[],
    );

    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("capture.jsonl");
    let certs = tmp.path().join("certs");
    let mut proxy = TestProxy::to(&upstream).capture_to(&capture);
    if how == Everything::StreamableTls {
        proxy = proxy.args(&["--self-signed", "--certs-dir", certs.to_str().unwrap()]);
    }
    let proxy = proxy.start();
    let (url, ca) = if how == Everything::StreamableTls {
        let ca = certs.join("ca.pem");
        assert!(ca.is_file(), "--self-signed made the local CA");
        (
            format!("https://{}{path}", proxy.addr),
            ca.to_str().unwrap().to_string(),
        )
    } else {
        (proxy.url(path), String::new())
    };
    let env: Vec<(&str, &str)> = if ca.is_empty() {
        vec![]
    } else {
        vec![("NODE_EXTRA_CA_CERTS", ca.as_str())]
    };
    let proxied = client("everything-client proxied", &url, &env);
    let cap = proxy.finish();
    drop(server);

    // Same answers. (Nothing in what this client asks for is volatile: the static document,
    // not the dynamic resources with their timestamps; no session ids in `results`.) The one
    // exception is in the SDK client: the last progress notification and the result may come
    // in one read, and the result can settle the call before the notification is dispatched,
    // which then finds no handler (seen direct as often as through the proxy). So the
    // progress the client saw is compared as a prefix of what the server sent, all of which
    // the capture must hold.
    let without_progress = |v: &Value| {
        let mut r = v["results"].clone();
        r.as_object_mut().unwrap().remove("progress");
        r
    };
    assert_eq!(
        without_progress(&direct),
        without_progress(&proxied),
        "server-everything answered differently through the proxy"
    );
    let progress = proxied["results"]["progress"].as_array().unwrap();
    assert!(
        (3..=4).contains(&progress.len()),
        "progress notifications: {progress:?}"
    );
    assert_eq!(
        proxied["results"]["echo"]["content"][0]["text"],
        "Echo: through mcptap ✓"
    );
    // Same HTTP exchanges, same statuses and content types (the legacy transport's session
    // id in the message URL differs from run to run).
    let sorted = |v: &Value| {
        let mut r: Vec<String> = v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let mut r = r.clone();
                let p = r["path"].as_str().unwrap().to_string();
                r["path"] = Value::from(p.split('?').next().unwrap());
                r.to_string()
            })
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        sorted(&direct),
        sorted(&proxied),
        "the HTTP exchanges differ"
    );

    // The capture holds every request the client made, in the same numbers.
    let count = |method: &str| {
        proxied["requests"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["method"] == method)
            .count()
    };
    let recorded = |method: &str| {
        cap.kind("request")
            .iter()
            .filter(|r| r["method"] == method)
            .count()
    };
    for method in ["POST", "GET", "DELETE"] {
        assert_eq!(
            recorded(method),
            count(method),
            "{method} exchanges in the capture"
        );
    }
    // initialize, initialized, 2 lists, 2 calls, 1 read; the Python SDK first probes
    // `server/discover` (answered 400 by this server).
    let posts = if how == Everything::Python { 8 } else { 7 };
    assert_eq!(count("POST"), posts, "POSTs: {:#}", proxied["requests"]);
    for ex in cap.exchanges() {
        let req = cap.one(ex, "request");
        let target = req["target"].as_str().unwrap();
        match how {
            Everything::LegacySse if req["method"] == "GET" => assert_eq!(target, "/sse"),
            Everything::LegacySse => assert!(target.starts_with("/message?sessionId="), "{target}"),
            _ => assert_eq!(target, "/mcp"),
        }
        if req["method"] != "GET" {
            assert_eq!(cap.one(ex, "end")["outcome"], "complete", "exchange {ex}");
        }
    }
    if how == Everything::StreamableTls {
        for open in cap.kind("conn_open") {
            let tls = &open["tls"];
            assert!(
                tls["version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("TLS")),
                "a TLS connection: {open}"
            );
        }
    }

    // Every JSON-RPC message the server sent came through as its own SSE event: each progress
    // notification in order, then the call's result; one result event per request.
    let messages: Vec<(u64, Value)> = cap
        .kind("sse")
        .iter()
        .filter_map(|e| {
            let m = serde_json::from_str(e["data"].as_str()?).ok()?;
            Some((e["ex"].as_u64().unwrap(), m))
        })
        .collect();
    let recorded_progress: Vec<Value> = messages
        .iter()
        .filter(|(_, m)| m["method"] == "notifications/progress")
        .map(|(_, m)| serde_json::json!({"progress": m["params"]["progress"], "total": m["params"]["total"]}))
        .collect();
    let as_numbers = |v: &[Value]| -> Vec<(f64, f64)> {
        v.iter()
            .map(|p| {
                (
                    p["progress"].as_f64().unwrap(),
                    p["total"].as_f64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        as_numbers(&recorded_progress),
        [(1.0, 4.0), (2.0, 4.0), (3.0, 4.0), (4.0, 4.0)],
        "every progress event the server sent is in the capture, in order"
    );
    assert!(
        as_numbers(&recorded_progress).starts_with(&as_numbers(progress)),
        "the client got progress the capture does not show: {progress:?}"
    );
    let last_progress = messages
        .iter()
        .rposition(|(_, m)| m["method"] == "notifications/progress")
        .unwrap();
    let result_at = messages
        .iter()
        .position(|(_, m)| m["result"]["content"] == proxied["results"]["long_running"]["content"])
        .expect("the long-running call's result is an SSE event");
    assert!(
        result_at > last_progress,
        "the result comes after the progress"
    );
    assert_eq!(
        messages[result_at].0, messages[last_progress].0,
        "the progress and the result share a stream"
    );
    let answers = messages
        .iter()
        .filter(|(_, m)| m.get("result").is_some())
        .count();
    assert_eq!(
        answers, 6,
        "one result event per request (initialize, 2 lists, 2 calls, 1 read)"
    );
    if how == Everything::LegacySse {
        let endpoint = cap
            .kind("sse")
            .into_iter()
            .find(|e| e["event"] == "endpoint")
            .expect("the endpoint event");
        assert!(endpoint["data"]
            .as_str()
            .unwrap()
            .starts_with("/message?sessionId="));
    }

    let report = explain(&capture);
    let expected = [
        ("reach", "reached"),
        ("initialize", "reached"),
        ("initialized", "reached"),
        ("get_stream", "reached"),
        ("list", "reached"),
        ("call", "reached"),
    ];
    let mut problems = stage_problems(&report, &expected);
    problems.extend(error_findings(&report));
    // The first request reached the proxy before anything else happened (a legacy GET /sse
    // reaches when its headers arrive, not when the stream ends).
    let at = |id: &str| {
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["t"].as_u64())
    };
    for (id, _) in &expected[1..] {
        if let (Some(reach), Some(t)) = (at("reach"), at(id)) {
            if reach > t {
                problems.push(format!("reach at {reach} µs, after {id} at {t} µs"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "explain on a server-everything session ({how:?}):\n  {}",
        problems.join("\n  ")
    );
}

/// server-everything over Streamable HTTP, TypeScript SDK client, plain HTTP.
#[test]
fn server_everything_through_the_proxy_matches_direct() {
    let dir = peers_or_skip!();
    everything_through_the_proxy(&dir, Everything::Streamable);
}

/// The same with TLS at the proxy, its certificate from the local CA the client trusts.
#[test]
fn server_everything_through_the_proxy_over_tls_matches_direct() {
    let dir = peers_or_skip!();
    everything_through_the_proxy(&dir, Everything::StreamableTls);
}

/// The legacy HTTP+SSE transport (protocol 2024-11-05): answers on the GET stream, messages
/// POSTed to the endpoint it announces.
#[test]
fn server_everything_over_legacy_sse_through_the_proxy_matches_direct() {
    let dir = peers_or_skip!();
    everything_through_the_proxy(&dir, Everything::LegacySse);
}

/// The Python SDK's client against server-everything.
#[test]
fn python_sdk_client_with_server_everything_through_the_proxy_matches_direct() {
    let dir = peers_or_skip!();
    if !dir.join(".venv/bin/python").is_file() && may_skip("the Python MCP peer") {
        return;
    }
    everything_through_the_proxy(&dir, Everything::Python);
}

/// Records the everything-client's session with server-everything through the proxy, then
/// plays both sides of it back: `mcptap mock` serves it to the same client, unchanged, and
/// `mcptap replay` re-sends it to the live server; `mcptap diff` finds the replay equal to the
/// original.
#[test]
fn a_server_everything_session_mocked_and_replayed() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let (server, upstream) = server_everything(&dir, "streamableHttp", deadline);
    let tmp = tempfile::tempdir().unwrap();
    let original = tmp.path().join("original.jsonl");
    let proxy = TestProxy::to(&upstream).capture_to(&original).start();
    let recorded = run_driver(
        "everything-client proxied",
        &dir,
        "node",
        &["everything-client.mjs", &proxy.url("/mcp")],
        deadline,
    );
    proxy.finish();

    // The mock: the same client completes against it with the recorded results.
    let mut mock = crate::mock::MockServer::start(&original, &[]);
    let mocked = run_driver(
        "everything-client against the mock",
        &dir,
        "node",
        &["everything-client.mjs", &format!("{}/mcp", mock.origin)],
        deadline,
    );
    assert_eq!(mock.stop(), 0);
    // The TypeScript client may miss the last progress notification when it arrives in one
    // read with the result (see everything_through_the_proxy): progress is compared apart.
    let answers = |summary: &Value| {
        let mut results = summary["results"].clone();
        let progress = results.as_object_mut().unwrap().remove("progress").unwrap();
        (results, progress.as_array().unwrap().clone())
    };
    let ((recorded_results, recorded_progress), (mocked_results, mocked_progress)) =
        (answers(&recorded), answers(&mocked));
    assert_eq!(
        mocked_results, recorded_results,
        "the mock answered differently from the recorded server"
    );
    let shorter = recorded_progress.len().min(mocked_progress.len());
    assert!(
        shorter >= 3,
        "progress: {recorded_progress:?} {mocked_progress:?}"
    );
    assert_eq!(mocked_progress[..shorter], recorded_progress[..shorter]);
    assert_eq!(
        mocked["requests"], recorded["requests"],
        "the client's exchanges with the mock"
    );
    // The progress notifications keep their recorded spacing (250 ms apart, from a one-second
    // operation in four steps): each gap within 150 ms of the recorded one, so a mock that sent
    // them all at once, or buffered the stream, fails.
    let gaps = |summary: &Value| -> Vec<i64> {
        let at: Vec<i64> = summary["timing"]["progress_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_i64().unwrap())
            .collect();
        at.windows(2).map(|w| w[1] - w[0]).collect()
    };
    let (recorded_gaps, mocked_gaps) = (gaps(&recorded), gaps(&mocked));
    assert!(
        mocked_gaps.len().min(recorded_gaps.len()) >= 2,
        "{recorded_gaps:?} {mocked_gaps:?}"
    );
    for (r, m) in recorded_gaps.iter().zip(&mocked_gaps) {
        assert!(
            (r - m).abs() <= 150 && *m >= 100,
            "progress gaps: recorded {recorded_gaps:?} ms, through the mock {mocked_gaps:?} ms"
        );
    }

    // The replay against the live server: complete, and equal to the original but for noise.
    let replayed = tmp.path().join("replayed.jsonl");
    let out = crate::replay::mcptap(&[
        "replay",
        original.to_str().unwrap(),
        "--target",
        &upstream,
        "--capture",
        replayed.to_str().unwrap(),
        "--concurrent",
        "--stream-timeout",
        "3",
    ]);
    assert!(out.status.success(), "the replay failed");
    drop(server);
    let diff = crate::replay::mcptap(&[
        "diff",
        original.to_str().unwrap(),
        replayed.to_str().unwrap(),
        "--json",
    ]);
    let compared: Value = serde_json::from_slice(&diff.stdout).expect("diff --json");
    // --concurrent keeps each connection's order, not the order across connections: the GET
    // stream, on a connection of its own, may open before or after the POST beside it. That
    // is the only leeway; every exchange is there, answered the same.
    let summary = &compared["summary"];
    for field in ["changed", "inserted", "deleted", "differences"] {
        assert_eq!(
            summary[field], 0,
            "the replay differs from the original: {compared:#}"
        );
    }
    for entry in compared["entries"].as_array().unwrap() {
        if entry["kind"] == "moved" {
            assert_eq!(
                entry["a"]["method"], "GET",
                "only a GET stream may move: {entry:#}"
            );
        }
    }
}

/// The SDK's OAuth example recorded twice, each time with its own ports, client id, codes,
/// tokens and session ids: `mcptap diff` finds nothing between them.
#[test]
fn the_sdk_oauth_flow_recorded_twice_diffs_to_nothing() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_, _, _, a) = oauth_session(
        &dir,
        Layout::SeparateRouted,
        Connector::TypeScript,
        first.path(),
        deadline,
    );
    let (_, _, _, b) = oauth_session(
        &dir,
        Layout::SeparateRouted,
        Connector::TypeScript,
        second.path(),
        deadline,
    );
    let out = crate::replay::mcptap(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--json",
        "--exit-code",
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("diff --json");
    assert!(
        report["first_divergence"].is_null(),
        "{:#}",
        report["first_divergence"]
    );
    assert_eq!(out.status.code(), Some(0));
    let summary = &report["summary"];
    assert!(summary["aligned"].as_u64().unwrap() >= 9, "{summary:#}");
    assert_eq!(summary["aligned"], summary["unchanged"], "{summary:#}");
    // And the same two with --strict differ: the noise was there to suppress.
    let strict = crate::replay::mcptap(&[
        "diff",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--strict",
        "--exit-code",
    ]);
    assert_eq!(strict.status.code(), Some(1));
}

/// `mcptap probe` against server-everything, which asks for no authorization: the OAuth steps
/// do not apply, the MCP session steps pass, and the capture explains the same way.
#[test]
fn probe_of_a_server_without_authorization_passes() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let (server, origin) = server_everything(&dir, "streamableHttp", deadline);
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("probe.jsonl");
    let out = crate::replay::mcptap(&[
        "probe",
        &format!("{origin}/mcp"),
        "--json",
        "--capture",
        capture.to_str().unwrap(),
    ]);
    drop(server);
    assert_eq!(out.status.code(), Some(0), "no error-severity finding");
    let report: Value = serde_json::from_slice(&out.stdout).expect("probe --json");
    let status = |id: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("no step {id}: {report:#}"))["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for id in ["reach", "initialize", "initialized", "get_stream", "list"] {
        assert_eq!(status(id), "pass", "step {id}: {report:#}");
    }
    for id in [
        "challenge",
        "resource_metadata",
        "auth_server_metadata",
        "registration",
    ] {
        assert_eq!(status(id), "skip", "step {id}: {report:#}");
    }
    let explained = explain(&capture);
    for (id, want) in [
        ("reach", "reached"),
        ("challenge", "not_applicable"),
        ("token", "not_applicable"),
        ("initialize", "reached"),
        ("list", "reached"),
        ("call", "not_applicable"),
    ] {
        assert_eq!(stage_status(&explained, id), want, "stage {id}");
    }
    assert!(explained["silence"].is_null(), "{}", explained["silence"]);
    assert_eq!(error_findings(&explained), Vec::<String>::new());
}

/// Runs the TypeScript SDK's everything-client against `upstream` through the proxy, at
/// `path`, where it is expected to fail (what it says is not the point, the capture is), and
/// explains the capture: the client's output and the report.
fn failing_client_explained(
    dir: &Path,
    name: &'static str,
    upstream: &str,
    path: &str,
    deadline: Instant,
) -> (String, Value) {
    let tmp = tempfile::tempdir().unwrap();
    let capture = tmp.path().join("capture.jsonl");
    let proxy = TestProxy::to(upstream).capture_to(&capture).start();
    let (code, out) = Peer::spawn(
        name,
        "node",
        dir,
        &["everything-client.mjs", &proxy.url(path)],
        &[],
    )
    .finish(deadline);
    assert_ne!(code, 0, "{name} was expected to fail: {out}");
    proxy.finish();
    (out, explain(&capture))
}

/// The report's first finding of one of these severities (findings come most severe first).
fn first_finding<'r>(report: &'r Value, severities: &[&str]) -> &'r Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| severities.iter().any(|s| f["severity"] == *s))
        .unwrap_or_else(|| panic!("no {severities:?} finding: {:#}", report["findings"]))
}

/// A load balancer that sends each request to the next of two real server-everything
/// processes, each keeping its sessions in memory: the TypeScript SDK client's initialize
/// makes a session on one replica and its next request lands on the other. `explain` names
/// the cause as its first error: a session the server did not know right after creating it.
#[test]
fn sessions_split_across_replicas_are_named_as_the_cause() {
    use http_body_util::BodyExt as _;
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let (replica_a, origin_a) = server_everything(&dir, "streamableHttp", deadline);
    let (replica_b, origin_b) = server_everything(&dir, "streamableHttp", deadline);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let turn = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let balancer = runtime.block_on(Upstream::start(move |req| {
        let origins = [origin_a.clone(), origin_b.clone()];
        let next = turn.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 2;
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut forward = hyper::Request::builder()
                .method(parts.method)
                .uri(format!("{}{target}", origins[next]));
            for (name, value) in &parts.headers {
                if name != "host" {
                    forward = forward.header(name, value);
                }
            }
            let answer = h1_client()
                .request(forward.body(full(body)).unwrap())
                .await
                .unwrap();
            let (parts, body) = answer.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            hyper::Response::from_parts(parts, full(body))
        }
    }));
    let (_, report) = failing_client_explained(
        &dir,
        "everything-client behind two replicas",
        &balancer.url(),
        "/mcp",
        deadline,
    );
    drop((replica_a, replica_b));
    let first = first_finding(&report, &["error"]);
    assert_eq!(first["check"], "session-lost", "{first:#}");
    let errors = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .count();
    assert_eq!(errors, 1, "one cause, named once: {:#}", report["findings"]);
    // The silence does not name the refused step as if it had not been sent.
    assert!(
        report["silence"]["expected_next"]
            .as_str()
            .unwrap()
            .contains("tried at #2 and refused"),
        "{:#}",
        report["silence"]
    );
    assert!(
        first["message"].as_str().unwrap().contains("load balancer"),
        "{first:#}"
    );
}

/// The TypeScript SDK's Streamable HTTP client pointed at the event stream of a server that
/// speaks only the legacy HTTP+SSE transport (server-everything `sse`): its POST is refused,
/// and `explain` names the transport mismatch as the first error.
#[test]
fn a_streamable_client_at_a_legacy_endpoint_is_named_a_transport_mismatch() {
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let (server, upstream) = server_everything(&dir, "sse", deadline);
    let (_, report) = failing_client_explained(
        &dir,
        "everything-client (Streamable HTTP) at /sse",
        &upstream,
        "/sse",
        deadline,
    );
    drop(server);
    let first = first_finding(&report, &["error", "warning"]);
    assert_eq!(
        first["check"], "transport-mismatch",
        "{:#}",
        report["findings"]
    );
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("legacy HTTP+SSE"),
        "{first:#}"
    );
}

/// A server whose tools/list answer breaks the MCP schema (a tool's inputSchema without
/// `"type": "object"`), before the TypeScript SDK client: the client rejects the whole answer,
/// and `explain` names the tool and the rule as its first error. The server is a fixture: the
/// SDK servers cannot produce such a schema.
#[test]
fn a_tool_schema_a_strict_client_rejects_is_named() {
    use http_body_util::BodyExt as _;
    let dir = peers_or_skip!();
    let deadline = Instant::now() + TEST_BUDGET;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Upstream::start(|req| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let id = message["id"].clone();
        let result = match message["method"].as_str().unwrap_or("") {
            "initialize" => serde_json::json!({
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "bad-tools", "version": "1.0.0"}
            }),
            "tools/list" => serde_json::json!({"tools": [
                {"name": "echo", "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}}},
                {"name": "add", "inputSchema": {"properties": {"a": {"type": "number"}}}}
            ]}),
            _ => {
                return hyper::Response::builder()
                    .status(202)
                    .header("mcp-session-id", "s-1")
                    .body(full(""))
                    .unwrap()
            }
        };
        hyper::Response::builder()
            .header("content-type", "application/json")
            .header("mcp-session-id", "s-1")
            .body(full(
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
            ))
            .unwrap()
    }));
    let (out, report) = failing_client_explained(
        &dir,
        "everything-client against a bad tool schema",
        &server.url(),
        "/mcp",
        deadline,
    );
    assert!(out.contains("tools/list"), "it failed listing tools: {out}");
    let first = first_finding(&report, &["error"]);
    assert_eq!(
        first["check"], "tool-definitions",
        "{:#}",
        report["findings"]
    );
    assert!(
        first["message"].as_str().unwrap().contains("tool \"add\""),
        "{first:#}"
    );
}
