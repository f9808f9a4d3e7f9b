//! `mcptap mock` serving a session recorded through the proxy: the unchanged fixture
//! connector completes against it (OAuth included) with the recorded results, event streams
//! keep their recorded spacing, and what does not match is answered 404 (or forwarded).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;
use mcptap::sse::SseParser;
use mcptap_fixture::client::{self, ClientOptions, ClientOutcome};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::{json, Value};

use crate::replay::record_session;
use crate::util::*;

/// The real binary serving a capture on 127.0.0.1:0.
pub(crate) struct MockServer {
    pub(crate) origin: String,
    child: Child,
}

impl MockServer {
    pub(crate) fn start(capture: &Path, args: &[&str]) -> MockServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mcptap"))
            .arg("mock")
            .arg(capture)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .env_remove("RUST_BACKTRACE")
            .spawn()
            .expect("starting mcptap mock");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[mock] {line}");
                if let Some(rest) = line.strip_prefix("mcptap: mock listening on http://") {
                    let addr = rest.split_whitespace().next().unwrap().to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the mock did not report its listen address");
        MockServer {
            origin: format!("http://{addr}"),
            child,
        }
    }

    /// SIGTERM, then the exit code.
    pub(crate) fn stop(&mut self) -> i32 {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the mock did not exit within 10 s");
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs one JSON-RPC message to the mock's /mcp.
async fn rpc(origin: &str, message: Value) -> (u16, Value) {
    let resp = h1_client()
        .request(
            Request::post(format!("{origin}/mcp"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(full(message.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = read_all(resp).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The slow_count call as the fixture connector makes it, with our own id and token; returns
/// each event's data and when it arrived.
async fn slow_count(origin: &str) -> Vec<(Instant, Value)> {
    let message = json!({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
        "params": {"name": "slow_count", "arguments": {"n": 3}, "_meta": {"progressToken": "tok-77"}}});
    let resp = h1_client()
        .request(
            Request::post(format!("{origin}/mcp"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(full(message.to_string()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let at = Instant::now();
        for e in parser.push(&data) {
            events.push((at, serde_json::from_str(&e.data.unwrap()).unwrap()));
        }
    }
    events
}

/// The fixture connector, run against the mock of `recorded` with the options it was
/// recorded with, completes, and every step sees what it saw through the proxy: the same
/// metadata (naming the mock), client id, session id, tools, results and notifications.
pub(crate) async fn connector_sees_what_it_saw(
    mock: &MockServer,
    recorded: &crate::replay::Recorded,
    options: &ClientOptions,
) {
    let report = tokio::time::timeout(Duration::from_secs(30), client::run(&mock.origin, options))
        .await
        .expect("the fixture client finished");
    assert_eq!(
        report.outcome,
        ClientOutcome::Completed,
        "{:#?}",
        report.steps
    );
    let steps: Vec<String> = report
        .steps
        .iter()
        .map(|s| s.replace(&mock.origin, &recorded.origin))
        .collect();
    assert_eq!(steps, recorded.report.steps);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fixture_connector_completes_against_the_mock() {
    let recorded = record_session().await;
    let dir = tempfile::tempdir().unwrap();
    let mock_capture = dir.path().join("mock.jsonl");
    let mut mock = MockServer::start(
        &recorded.path,
        &["--capture", mock_capture.to_str().unwrap()],
    );
    connector_sees_what_it_saw(&mock, &recorded, &ClientOptions::default()).await;

    assert_eq!(mock.stop(), 0);
    let served = Capture::load(&mock_capture);
    let session = &served.events[0];
    assert_eq!(
        session["routes"][0]["upstream"],
        format!("mock:{}", recorded.path.display())
    );
    assert_eq!(served.exchanges().len(), recorded.capture.exchanges().len());
    assert_eq!(served.last()["kind"], "session_end");
    // The served metadata names the mock, not the recorded proxy.
    assert!(served.contains_bytes(&mock.origin.replace("http://", "")));
    let prm = served
        .kind("body")
        .into_iter()
        .find(|b| {
            b["dir"] == "response"
                && b["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("authorization_servers"))
        })
        .unwrap();
    assert!(prm["text"].as_str().unwrap().contains(&mock.origin));
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_events_keep_their_recorded_spacing() {
    let recorded = record_session().await;

    let mock = MockServer::start(&recorded.path, &[]);
    let events = slow_count(&mock.origin).await;
    assert_eq!(events.len(), 4, "{events:?}");
    // The id and the progress token are the ones this request sent.
    for (_, e) in &events[..3] {
        assert_eq!(e["method"], "notifications/progress");
        assert_eq!(e["params"]["progressToken"], "tok-77");
    }
    assert_eq!(events[3].1["id"], 77);
    assert_eq!(events[3].1["result"]["content"][0]["text"], "counted to 3");
    // Recorded 100 ms apart; played at speed 1.
    for pair in events[..3].windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(gap >= Duration::from_millis(50), "events {gap:?} apart");
    }
    drop(mock);

    let fast = MockServer::start(&recorded.path, &["--speed", "max"]);
    let started = Instant::now();
    let events = slow_count(&fast.origin).await;
    assert_eq!(events.len(), 4);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "--speed max took {:?}",
        started.elapsed()
    );

    // Twice as fast: the three progress events, recorded 200 ms apart end to end, take
    // about 100 ms.
    let twice = MockServer::start(&recorded.path, &["--speed", "2"]);
    let events = slow_count(&twice.origin).await;
    let span = events[2].0 - events[0].0;
    assert!(
        span >= Duration::from_millis(50) && span < Duration::from_millis(180),
        "at --speed 2 the progress events spanned {span:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unmatched_request_gets_a_404_naming_the_closest() {
    let recorded = record_session().await;
    let mock = MockServer::start(&recorded.path, &[]);

    let echo = |text: &str, id: &str| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": text}}})
    };
    let (status, body) = rpc(&mock.origin, echo("bye", "a")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "mcptap_mock_unmatched");
    assert_eq!(body["request"], "POST /mcp tools/call");
    let echo_ex = recorded
        .capture
        .kind("body")
        .into_iter()
        .find(|b| {
            b["dir"] == "request" && b["text"].as_str().is_some_and(|t| t.contains("\"echo\""))
        })
        .unwrap()["ex"]
        .clone();
    assert_eq!(body["closest"]["exchange"], echo_ex);
    assert_eq!(
        body["closest"]["differences"],
        json!([r#"params.arguments.text: recorded "hello", got "bye""#])
    );

    // The recorded one matches whatever its id; a JSON body answers with the new id.
    let (status, body) = rpc(
        &mock.origin,
        json!({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list", "params": {}}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], "list-1");
    assert_eq!(body["result"]["tools"][0]["name"], "echo");
    // Served once, as recorded: the second time is a 404 that says so.
    let (status, body) = rpc(
        &mock.origin,
        json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}),
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        body["closest"]["differences"][0]
            .as_str()
            .unwrap()
            .contains("served already (--reuse"),
        "{body}"
    );

    let reuse = MockServer::start(&recorded.path, &["--reuse"]);
    for id in [1, 2, 3] {
        let (status, body) = rpc(
            &reuse.origin,
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["id"], id);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unmatched_requests_can_be_forwarded() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mock_capture = dir.path().join("forward.jsonl");
    let mut mock = MockServer::start(
        &recorded.path,
        &[
            "--unmatched",
            "forward",
            "--upstream",
            &server.url(),
            "--capture",
            mock_capture.to_str().unwrap(),
        ],
    );
    // Not recorded: the live server answers it (no token, so 401).
    let (status, body) = rpc(
        &mock.origin,
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "bye"}}}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert_eq!(mock.stop(), 0);
    let served = Capture::load(&mock_capture);
    let request = served.kind("request")[0];
    assert_eq!(request["upstream"], format!("{}/mcp", server.url()));
    assert_eq!(served.kind("response")[0]["producer"], "upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_mock_usage_is_one_line_and_status_2() {
    let recorded = record_session().await;
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
            .arg("mock")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = recorded.path.to_str().unwrap();
    let (code, err) = run(&[path, "--unmatched", "forward"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--upstream"), "{err}");
    let (code, err) = run(&[path, "--speed", "0"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not a speed"), "{err}");
    let (code, err) = run(&["/nonexistent/capture.jsonl"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_capture_is_served_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let capture = crate::replay::hostile_capture(dir.path());
    let served = dir.path().join("served.jsonl");
    let mut mock = MockServer::start(
        &capture,
        &["--speed", "max", "--capture", served.to_str().unwrap()],
    );
    let http = h1_client();
    let get = |path: &str| {
        Request::get(format!("{}{path}", mock.origin))
            .body(full(""))
            .unwrap()
    };
    // The stream recorded at the end of time: served at once at --speed max.
    let resp = http.request(get("/huge")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = read_all(resp).await;
    assert!(String::from_utf8_lossy(&body).contains("data: {\"id\":1}"));
    // The 101 cannot be served: 501, said in JSON.
    let resp = http.request(get("/ws")).await.unwrap();
    assert_eq!(resp.status(), 501);
    // Binary bodies byte for byte, status 999 included.
    let resp = http
        .request(
            Request::post(format!("{}/b64", mock.origin))
                .header("content-type", "application/json")
                .body(full(vec![0xffu8, 0x00, 0xfe]))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 999);
    assert_eq!(&read_all(resp).await[..], &[0xff, 0xfe, 0xfd]);
    // The batch: the incoming ids come back.
    let (status, body) = rpc(
        &mock.origin,
        json!([{"jsonrpc":"2.0","id":"q","method":"a"},{"jsonrpc":"2.0","method":"b","params":[]}]),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body[0]["id"], "q");
    assert_eq!(mock.stop(), 0);
    Capture::load(&served);
}
