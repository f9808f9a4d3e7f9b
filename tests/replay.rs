//! `mcptap replay` against a live fixture server: a session recorded through the proxy
//! (OAuth included) replays with no flags; a capture whose tokens the replay cannot obtain
//! stops before the first request that needs one and names the flag that supplies it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::Request;
use mcptap_fixture::client::{self, ClientOptions, ClientOutcome, ClientReport};
use mcptap_fixture::server::{Faults, FixtureServer};
use serde_json::Value;

use crate::util::*;

/// A session recorded through the proxy: the fixture connector against the fixture server.
pub struct Recorded {
    pub capture: Capture,
    pub path: PathBuf,
    pub report: ClientReport,
    /// The proxy's origin the client used (`http://127.0.0.1:port`).
    pub origin: String,
    _dir: tempfile::TempDir,
}

/// Records one full session (OAuth, initialize, GET stream, tools, DELETE).
pub async fn record_session() -> Recorded {
    record_session_with(ClientOptions::default()).await
}

/// [`record_session`] with the client's options (its protocol era, say).
pub async fn record_session_with(options: ClientOptions) -> Recorded {
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let proxy = TestProxy::to(&server.url()).start();
    let origin = format!("http://{}", proxy.addr);
    server.set_public_base(origin.clone());
    let report = tokio::time::timeout(Duration::from_secs(30), client::run(&origin, &options))
        .await
        .expect("the fixture client finished");
    assert_eq!(
        report.outcome,
        ClientOutcome::Completed,
        "{:#?}",
        report.steps
    );
    let capture = proxy.finish();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recorded.jsonl");
    std::fs::write(&path, &capture.raw).unwrap();
    Recorded {
        capture,
        path,
        report,
        origin,
        _dir: dir,
    }
}

/// Runs the real binary with these arguments.
pub fn mcptap(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    eprintln!("[stdout] {}", String::from_utf8_lossy(&out.stdout));
    eprintln!("[stderr] {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `mcptap replay` off the async runtime (the binary talks to servers on it).
pub async fn replay(capture: &Path, target: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "replay".into(),
        capture.display().to_string(),
        "--target".into(),
        target.into(),
        "--capture".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mcptap(&args)
    })
    .await
    .unwrap()
}

/// (method, path, status) of every exchange, in request order.
pub fn sequence(capture: &Capture) -> Vec<(String, String, Option<u64>)> {
    capture
        .exchanges()
        .into_iter()
        .map(|ex| {
            let req = capture.one(ex, "request");
            let target = req["target"].as_str().unwrap();
            let path = target.split('?').next().unwrap().to_string();
            let status = capture
                .exchange(ex)
                .into_iter()
                .find(|e| e["kind"] == "response")
                .and_then(|r| r["status"].as_u64());
            (req["method"].as_str().unwrap().to_string(), path, status)
        })
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The same capture, starting at the authenticated initialize: the token it presents was
/// issued before the cut, so nothing in it says where the token came from.
fn cut_at_initialize(recorded: &Recorded, dir: &Path) -> (PathBuf, u64, String) {
    let first = recorded
        .capture
        .exchanges()
        .into_iter()
        .find(|&ex| {
            let req = recorded.capture.one(ex, "request");
            req["method"] == "POST"
                && req["headers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|h| h[0] == "authorization")
        })
        .expect("an authenticated request");
    let auth = recorded.capture.one(first, "request")["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "authorization")
        .unwrap()[1]
        .as_str()
        .unwrap()
        .to_string();
    let fp = auth
        .split("fp=")
        .nth(1)
        .unwrap()
        .trim_end_matches('>')
        .to_string();
    let mut text = String::new();
    for event in &recorded.capture.events {
        if event["ex"].as_u64().is_some_and(|ex| ex < first) {
            continue;
        }
        text.push_str(&event.to_string());
        text.push('\n');
    }
    let path = dir.join("cut.jsonl");
    std::fs::write(&path, text).unwrap();
    (path, first, fp)
}

/// A fresh access token from the fixture server: registration, authorization, token, by hand.
async fn mint_token(server: &FixtureServer) -> String {
    let http = h1_client();
    let base = server.url();
    let send = |req: Request<UpBody>| {
        let http = http.clone();
        async move {
            let resp = http.request(req).await.unwrap();
            let (parts, body) = resp.into_parts();
            (parts, body.collect().await.unwrap().to_bytes())
        }
    };
    let (_, body) = send(
        Request::post(format!("{base}/register"))
            .header("content-type", "application/json")
            .body(full(
                r#"{"client_name":"t","redirect_uris":["http://127.0.0.1:1/cb"],"token_endpoint_auth_method":"none"}"#,
            ))
            .unwrap(),
    )
    .await;
    let client_id = serde_json::from_slice::<Value>(&body).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let verifier = "v".repeat(43);
    let challenge = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ))
    };
    let (parts, _) = send(
        Request::get(format!(
            "{base}/authorize?response_type=code&client_id={client_id}&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_challenge={challenge}&code_challenge_method=S256&state=s"
        ))
        .body(full(""))
        .unwrap(),
    )
    .await;
    let location = parts.headers["location"].to_str().unwrap().to_string();
    let code = form_urlencoded::parse(location.split_once('?').unwrap().1.as_bytes())
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let form = format!(
        "grant_type=authorization_code&code={code}&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&client_id={client_id}&code_verifier={verifier}"
    );
    let (_, body) = send(
        Request::post(format!("{base}/token"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(full(form))
            .unwrap(),
    )
    .await;
    serde_json::from_slice::<Value>(&body).unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_session_replays_fully_with_no_flags() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("replayed.jsonl");
    let out = replay(&recorded.path, &server.url(), &out_path, &[]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let replayed = Capture::load(&out_path);
    // The same exchanges answered the same way: the replay registered, authorized, got its
    // own token and session id from the live server, and used them.
    assert_eq!(sequence(&replayed), sequence(&recorded.capture));
    let session = &replayed.events[0];
    assert_eq!(session["routes"][0]["listen"], "replay");
    assert_eq!(
        session["routes"][0]["upstream"],
        format!("{}/", server.url())
    );
    // The token request carried the new code and a fresh PKCE verifier, the initialize the
    // new token; the recorded proxy origin became the server's.
    assert!(replayed.contains_bytes(&format!(
        "resource=http%3A%2F%2F{}%2Fmcp",
        server.addr.to_string().replace(':', "%3A")
    )));
    assert!(!replayed.contains_bytes(&recorded.origin.replace("http://", "")));
    // slow_count's progress came over the stream again.
    let progress = replayed
        .kind("sse")
        .iter()
        .filter(|e| {
            e["data"]
                .as_str()
                .is_some_and(|d| d.contains("notifications/progress"))
        })
        .count();
    assert_eq!(progress, 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("POST /token → 200"), "{stdout}");
    assert!(
        stdout.contains("tools/call → 200 event stream, 4 events"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_and_recorded_pace_replay_the_same_exchanges() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("concurrent.jsonl");
    let out = replay(&recorded.path, &server.url(), &out_path, &["--concurrent"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut got = sequence(&Capture::load(&out_path));
    let mut want = sequence(&recorded.capture);
    got.sort();
    want.sort();
    assert_eq!(got, want);

    let recorded_span = {
        let t = |kind: &str| -> Vec<u64> {
            recorded
                .capture
                .kind(kind)
                .iter()
                .map(|e| e["t"].as_u64().unwrap())
                .collect()
        };
        let starts = t("request");
        Duration::from_micros(starts.last().unwrap() - starts.first().unwrap())
    };
    let out_path = dir.path().join("paced.jsonl");
    let started = Instant::now();
    let out = replay(
        &recorded.path,
        &server.url(),
        &out_path,
        &["--pace", "recorded"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        started.elapsed() >= recorded_span,
        "paced replay took {:?}, the recording {:?}",
        started.elapsed(),
        recorded_span
    );
    assert_eq!(
        sequence(&Capture::load(&out_path)),
        sequence(&recorded.capture)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_the_replay_cannot_obtain_stops_it_before_the_request() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cut, first, fp) = cut_at_initialize(&recorded, dir.path());

    let out_path = dir.path().join("stopped.jsonl");
    let out = replay(&cut, &server.url(), &out_path, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "replay stopped before exchange {first} (POST /mcp initialize)"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("fp={fp}")), "{err}");
    assert!(err.contains("Authorization header"), "{err}");
    assert!(err.contains("--token TOKEN"), "{err}");
    assert!(err.contains("0 earlier exchanges were replayed"), "{err}");
    // Nothing was sent blind.
    assert!(Capture::load(&out_path).kind("request").is_empty());

    // With the token, the MCP part replays (a new session id included).
    let token = mint_token(&server).await;
    let out_path = dir.path().join("with-token.jsonl");
    let out = replay(&cut, &server.url(), &out_path, &["--token", &token]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let want: Vec<_> = sequence(&recorded.capture)
        .into_iter()
        .skip(first as usize - 1)
        .collect();
    assert_eq!(sequence(&Capture::load(&out_path)), want);

    // The same through --secrets, keyed by the fingerprint in the capture.
    let secrets = dir.path().join("secrets.json");
    std::fs::write(&secrets, format!(r#"{{"{fp}": "{token}"}}"#)).unwrap();
    let out_path = dir.path().join("with-secrets.jsonl");
    let out = replay(
        &cut,
        &server.url(),
        &out_path,
        &["--secrets", secrets.to_str().unwrap()],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sequence(&Capture::load(&out_path)), want);

    // And through --header, which replaces the header wherever it was.
    let out_path = dir.path().join("with-header.jsonl");
    let header = format!("Authorization: Bearer {token}");
    let out = replay(&cut, &server.url(), &out_path, &["--header", &header]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sequence(&Capture::load(&out_path)), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn skipping_the_token_request_stops_where_its_token_is_needed() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("skipped.jsonl");
    let out = replay(
        &recorded.path,
        &server.url(),
        &out_path,
        &["--skip", "POST /token"],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("(POST /token), but it was not replayed (--only/--skip)"),
        "{err}"
    );
    // Everything before the first authenticated request went out.
    let sent = sequence(&Capture::load(&out_path));
    assert_eq!(sent.len(), 5, "{sent:?}");
    assert!(err.contains("5 earlier exchanges were replayed"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn only_selects_by_method_path_and_rpc_method() {
    let recorded = record_session().await;
    let server = FixtureServer::start(Faults::default(), None).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("only.jsonl");
    let out = replay(
        &recorded.path,
        &server.url(),
        &out_path,
        &["--only", "GET /.well-known/*", "--only", "initialize"],
    )
    .await;
    let got = sequence(&Capture::load(&out_path));
    let got: Vec<(&str, &str, Option<u64>)> = got
        .iter()
        .map(|(m, p, s)| (m.as_str(), p.as_str(), *s))
        .collect();
    // The unauthenticated initialize (401) is selected too; the authenticated one is not
    // reachable without the token request, so the replay stops before it.
    assert_eq!(
        got,
        vec![
            ("POST", "/mcp", Some(401)),
            (
                "GET",
                "/.well-known/oauth-protected-resource/mcp",
                Some(200)
            ),
            ("GET", "/.well-known/oauth-authorization-server", Some(200)),
        ]
    );
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.jsonl");
    let out = mcptap(&[
        "replay",
        missing.to_str().unwrap(),
        "--target",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nope.jsonl"), "{err}");

    let out = mcptap(&["replay", missing.to_str().unwrap(), "--target", "ftp://x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("http://"));

    let secrets = dir.path().join("s.json");
    std::fs::write(&secrets, r#"{"not-an-fp": "x"}"#).unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, "").unwrap();
    let out = mcptap(&[
        "replay",
        capture.to_str().unwrap(),
        "--target",
        "http://127.0.0.1:9",
        "--secrets",
        secrets.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not a fingerprint"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_target_stops_the_replay() {
    let recorded = record_session().await;
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out_path = dir.path().join("refused.jsonl");
    let out = replay(
        &recorded.path,
        &format!("http://127.0.0.1:{port}"),
        &out_path,
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("could not be sent"),
        "{}",
        stderr(&out)
    );
    let replayed = Capture::load(&out_path);
    assert_eq!(replayed.kind("request").len(), 1);
    assert_eq!(replayed.kind("end")[0]["outcome"], "upstream_error");
}

/// A capture no proxy would write: absurd times, a 101 and a 999, an invalid method, binary
/// bodies, an absolute target naming another host, exchanges without responses.
pub fn hostile_capture(dir: &Path) -> PathBuf {
    use serde_json::json;
    let ts = "2026-01-01T00:00:00.000000Z";
    let max = u64::MAX;
    let mut lines = vec![
        json!({"t":0,"ts":ts,"kind":"session","v":1,"tool":"mcptap","tool_version":"0",
        "session_id":"00000000","routes":[{"listen":"0.0.0.0:1","upstream":"http://127.0.0.1:2/"}],
        "options":{"max_body":10,"on_full":"drop","preserve_host":false,"upstream_insecure":false,
        "upstream_timeout_s":null,"grace_s":0.0},"redaction":"fingerprint"}),
    ];
    let request = |ex: u64, t: u64, method: &str, target: &str, headers: Value| {
        json!({"t":t,"ts":ts,"kind":"request","ex":ex,"conn":ex,"method":method,"target":target,
            "version":"HTTP/2","headers":headers,"upstream":""})
    };
    let response = |ex: u64, t: u64, status: u64, ct: &str| {
        json!({"t":t,"ts":ts,"kind":"response","ex":ex,"status":status,"version":"HTTP/1.1",
            "headers":[["content-type",ct],["content-length","99999"],["location","http://127.0.0.1:1/cb?state=<redacted fp=zz>&code=<redacted fp=0123abcd>"]],"producer":"upstream"})
    };
    let end = |ex: u64, t: u64, outcome: &str| {
        json!({"t":t,"ts":ts,"kind":"end","ex":ex,"outcome":outcome,"status":null,
            "timings":{"upstream_connect_us":null,"reused_connection":false,"request_body_done_us":null,
            "ttfb_us":null,"response_done_us":null,"total_us":0},"bytes":{"request":0,"response":0}})
    };
    // 1: an upgrade.
    lines.push(request(
        1,
        5,
        "GET",
        "/ws",
        json!([["upgrade", "websocket"], ["connection", "upgrade"]]),
    ));
    lines.push(response(1, 6, 101, "text/plain"));
    // 2: not a method.
    lines.push(request(2, 7, "BAD METHOD", "/x", json!([])));
    // 3: an event stream at the end of time.
    lines.push(request(
        3,
        8,
        "GET",
        "/huge",
        json!([["accept", "text/event-stream"]]),
    ));
    lines.push(response(3, max - 5, 200, "text/event-stream"));
    lines.push(json!({"t":max,"ts":ts,"kind":"sse","ex":3,"dir":"response","seq":0,"data":"{\"id\":1}\n\u{0}","dispatched":false}));
    lines.push(end(3, max, "complete"));
    // 4: binary both ways, a status no one uses.
    lines.push(request(
        4,
        9,
        "POST",
        "/b64",
        json!([["content-type", "application/json"]]),
    ));
    lines.push(json!({"t":9,"ts":ts,"kind":"body","ex":4,"dir":"request","seq":0,"b64":"/wD+","len":3,"frames":[[9,3]]}));
    lines.push(response(4, 10, 999, "application/json"));
    lines.push(json!({"t":10,"ts":ts,"kind":"body","ex":4,"dir":"response","seq":0,"b64":"//79","len":3,"frames":[[10,3]]}));
    lines.push(end(4, 11, "complete"));
    // 5: an absolute target naming another host, and no response.
    lines.push(request(
        5,
        12,
        "GET",
        "http://evil.example/steal?x=1",
        json!([["host", "evil.example"], ["x-odd", "a\u{7f}b"]]),
    ));
    lines.push(end(5, 13, "client_aborted"));
    // 6: a JSON-RPC batch, and a partial last line.
    lines.push(request(
        6,
        14,
        "POST",
        "/mcp",
        json!([["content-type", "application/json"]]),
    ));
    lines.push(json!({"t":14,"ts":ts,"kind":"body","ex":6,"dir":"request","seq":0,
        "text":"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},{\"jsonrpc\":\"2.0\",\"method\":\"b\",\"params\":[]}]","len":9,"frames":[[14,9]]}));
    lines.push(response(6, 15, 200, "application/json"));
    lines.push(json!({"t":15,"ts":ts,"kind":"body","ex":6,"dir":"response","seq":0,"text":"[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}]","len":9,"frames":[[15,9]]}));
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    text.push_str(r#"{"t":16,"ts":"x","kind":"end","ex":6,"outc"#);
    let path = dir.join("hostile.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_capture_is_replayed_only_to_the_target_without_panicking() {
    use std::sync::{Arc, Mutex};
    let seen: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let log = seen.clone();
    let upstream = Upstream::start(move |req| {
        let log = log.clone();
        async move {
            let host = req
                .headers()
                .get("host")
                .map(|h| h.to_str().unwrap_or("").to_string())
                .unwrap_or_default();
            log.lock()
                .unwrap()
                .push((req.method().to_string(), req.uri().to_string(), host));
            hyper::Response::new(full("ok"))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let capture = hostile_capture(dir.path());
    let out_path = dir.path().join("out.jsonl");
    let out = replay(
        &capture,
        &upstream.url(),
        &out_path,
        &["--stream-timeout", "0.5"],
    )
    .await;
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("upgraded connections (WebSocket) are not replayed"),
        "{err}"
    );
    assert!(err.contains("not a valid HTTP method"), "{err}");
    let seen = seen.lock().unwrap().clone();
    let authority = upstream.addr.to_string();
    // Everything went to the target, with the recorded path and query, under its own Host.
    assert_eq!(
        seen.iter()
            .map(|(m, u, _)| (m.as_str(), u.as_str()))
            .collect::<Vec<_>>(),
        vec![
            ("GET", "/huge"),
            ("POST", "/b64"),
            ("GET", "/steal?x=1"),
            ("POST", "/mcp")
        ]
    );
    assert!(seen.iter().all(|(_, _, h)| *h == authority), "{seen:?}");
    Capture::load(&out_path);
}

/// A request whose body the capture withheld (bytes that are not text) is not re-sent empty:
/// the replay stops before it and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_body_was_withheld_stops_the_replay_in_words() {
    let up = Upstream::start(|_req| async { hyper::Response::new(full("ok")) }).await;
    let proxy = TestProxy::to(&up.url()).start();
    let client = h1_client();
    for body in [&b"plain text"[..], &[0xffu8, 0xfe, 0x01, 0x02][..]] {
        let resp = client
            .request(
                hyper::Request::post(proxy.url("/upload"))
                    .header("content-type", "application/octet-stream")
                    .body(full(body.to_vec()))
                    .unwrap(),
            )
            .await
            .unwrap();
        read_all(resp).await;
    }
    let capture = proxy.finish();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("withheld.jsonl");
    std::fs::write(&path, &capture.raw).unwrap();
    let out_path = dir.path().join("replayed.jsonl");
    let out = replay(&path, &up.url(), &out_path, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let words = stderr(&out);
    assert!(
        words.contains("its body is not in the capture") && words.contains("not UTF-8"),
        "{words}"
    );
    // The text body went; the withheld one did not.
    let replayed = Capture::load(&out_path);
    assert_eq!(replayed.kind("request").len(), 1);
}
