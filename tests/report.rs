//! `mcptap report`: the page of a session recorded through the real proxy, opened in headless
//! Chromium (tests/browser/render.mjs) — stages, the silence point, an exchange expanded by a
//! click, no network request, no script from the capture — plus checks of the HTML itself.
//! The browser tests print SKIPPED and pass when tests/browser/setup has not been run.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hyper::Response;
use mcptap_fixture::server::Faults;
use serde_json::Value;

use crate::explain::session_with;
use crate::util::*;

/// Runs the real binary.
pub fn mcptap(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcptap"))
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("running mcptap")
}

/// Runs the binary and insists on success.
pub fn mcptap_ok(args: &[&std::ffi::OsStr]) -> Output {
    let out = mcptap(args);
    assert!(
        out.status.success(),
        "mcptap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A line on the real stderr, past the test harness's capture: a skipped test must be seen.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "\n*** {line} ***\n");
}

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Whether `node` and the packages of tests/browser are installed; says loudly why not.
pub fn node_ready(test: &str, package: &str) -> bool {
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        loud(&format!("SKIPPED {test}: node is not installed"));
        return false;
    }
    if !browser_dir().join("node_modules").join(package).is_dir() {
        loud(&format!(
            "SKIPPED {test}: tests/browser/node_modules/{package} is missing (run tests/browser/setup)"
        ));
        return false;
    }
    true
}

/// Whether headless Chromium can be driven here; says loudly why not.
pub fn browser_ready(test: &str) -> bool {
    if !node_ready(test, "playwright-core") {
        return false;
    }
    if !chromium().is_file() {
        loud(&format!(
            "SKIPPED {test}: {} is missing (run tests/browser/setup)",
            chromium().display()
        ));
        return false;
    }
    true
}

/// Opens a report in Chromium with the driver; returns what it printed about the page.
pub fn render(html: &Path, png: &Path, args: &[&str]) -> Value {
    let out = Command::new("node")
        .arg(browser_dir().join("render.mjs"))
        .arg(html)
        .arg(png)
        .args(args)
        .output()
        .expect("running node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let page: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "the driver printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success() && page.get("error").is_none(),
        "the driver failed: {}\n{}",
        page["error"],
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

/// A page that loaded nothing, ran only its own script, and threw nothing.
fn assert_self_contained(page: &Value) {
    assert_eq!(page["requests"], serde_json::json!([]), "network requests");
    assert_eq!(page["blocked"], serde_json::json!([]), "blocked requests");
    assert_eq!(
        page["cspViolations"],
        serde_json::json!([]),
        "CSP violations"
    );
    assert_eq!(page["pageErrors"], serde_json::json!([]), "script errors");
    assert_eq!(page["console"], serde_json::json!([]), "console errors");
    assert!(page["csp"]
        .as_str()
        .unwrap()
        .starts_with("default-src 'none'"));
}

/// Where test artifacts (screenshots) are kept: target/test-artifacts/.
pub fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the capture bytes to a file in `dir` and renders the report next to it.
fn report_of(dir: &Path, name: &str, raw: &[u8], extra: &[&str]) -> PathBuf {
    let capture = dir.join(format!("{name}.jsonl"));
    std::fs::write(&capture, raw).unwrap();
    let html = dir.join(format!("{name}.html"));
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "report".as_ref(),
        capture.as_os_str(),
        "-o".as_ref(),
        html.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    mcptap_ok(&args);
    html
}

/// The JSON data embedded in a page.
pub(crate) fn page_data(html: &str) -> Value {
    let start = html
        .find(r#"<script type="application/json" id="mcptap-data">"#)
        .expect("the data element");
    let rest = &html[start..];
    let open = rest.find('>').unwrap() + 1;
    let close = rest.find("</script>").unwrap();
    serde_json::from_str(&rest[open..close]).expect("the data is JSON")
}

const HOSTILE_BODY: &str =
    r#"<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"></script><!--"#;
const HOSTILE_HEADER: &str = r#"<script>window.__pwned=3</script>"#;

/// An upstream that answers everything with HTML meant to run in whatever shows it.
async fn hostile_upstream() -> Upstream {
    Upstream::start(|_req| async move {
        Response::builder()
            .status(200)
            .header("content-type", "text/html")
            .header("x-evil", HOSTILE_HEADER)
            .body(full(HOSTILE_BODY))
            .unwrap()
    })
    .await
}

/// Records one exchange with the hostile upstream.
async fn hostile_capture() -> Vec<u8> {
    let up = hostile_upstream().await;
    let proxy = TestProxy::to(&up.url()).start();
    read_all(
        h1_client()
            .request(
                hyper::Request::get(proxy.url("/page?q=%3Cscript%3Ex%3C%2Fscript%3E"))
                    .header("x-client", "\"><svg onload=alert(1)>")
                    .body(full(""))
                    .unwrap(),
            )
            .await
            .unwrap(),
    )
    .await;
    proxy.finish().raw
}

#[tokio::test]
async fn the_case_session_renders_with_its_stages_silence_and_a_clickable_exchange() {
    let s = session_with(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    if !browser_ready("the_case_session_renders_with_its_stages_silence_and_a_clickable_exchange") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = report_of(dir.path(), "case", &s.capture.raw, &[]);
    let png = artifacts().join("report.png");
    let page = render(&html, &png, &["--click=auto"]);
    assert_self_contained(&page);

    // The stages from explain, as the page shows them.
    let stages: Vec<(String, String)> = page["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for stage in [
        "reach",
        "challenge",
        "resource_metadata",
        "auth_server_metadata",
        "registration",
        "authorize",
        "token",
    ] {
        assert!(
            stages.contains(&(stage.to_string(), "reached".to_string())),
            "{stage}: {stages:?}"
        );
    }
    assert!(stages.contains(&("initialize".to_string(), "missing".to_string())));
    let bands = page["bands"].as_array().unwrap();
    assert!(bands.iter().any(|b| b == "token"), "{bands:?}");

    // The silence point: in the summary and drawn on the diagram.
    assert_eq!(page["silence"][0]["stage"], "token");
    let words = page["silence"][0]["text"].as_str().unwrap();
    assert!(
        words.contains("initialize") && words.contains("#6 POST /token"),
        "{words}"
    );
    assert_eq!(page["silenceMarks"], serde_json::json!(["token"]));

    // Findings link to the exchanges they concern.
    let findings = page["findings"].as_array().unwrap();
    let prm = findings
        .iter()
        .find(|f| f["check"] == "prm-resource-match")
        .expect("prm-resource-match is listed");
    assert_eq!(prm["link"], "#ex-2");

    // Clicking exchange #2 (the metadata that names the base URL) expands it.
    let x = &page["expanded"];
    assert_eq!(x["ex"], 2, "{x:#}");
    assert_eq!(x["hash"], "#ex-2");
    assert_eq!(x["selectedRows"], 2, "its request and response rows");
    let body = x["responseBody"].as_str().unwrap();
    assert!(
        body.contains("\n  \"resource\": \"http://127.0.0.1:"),
        "pretty-printed JSON: {body}"
    );
    let text = x["text"].as_str().unwrap();
    assert!(text.contains("content-type") && text.contains("application/json"));
    assert!(text.contains("prm-resource-match"), "the finding is shown");
    assert!(png.is_file());
}

#[tokio::test]
async fn a_hostile_upstream_cannot_run_script_in_the_report() {
    let raw = hostile_capture().await;
    if !browser_ready("a_hostile_upstream_cannot_run_script_in_the_report") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = report_of(dir.path(), "hostile", &raw, &[]);
    let page = render(
        &html,
        &artifacts().join("report-hostile.png"),
        &["--click=1"],
    );
    assert_self_contained(&page);
    assert_eq!(page["pwned"], Value::Null, "a script from the capture ran");
    let x = &page["expanded"];
    assert_eq!(
        x["responseBody"], HOSTILE_BODY,
        "shown as text, byte for byte"
    );
    let text = x["text"].as_str().unwrap();
    assert!(text.contains(HOSTILE_HEADER), "{text}");
    assert!(text.contains("\"><svg onload=alert(1)>"), "{text}");
}

#[tokio::test]
async fn the_page_is_self_contained_and_escapes_the_capture() {
    let raw = hostile_capture().await;
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(report_of(dir.path(), "hostile", &raw, &[])).unwrap();

    // A strict policy: nothing loads, only the page's own (hashed) style and script run.
    let csp_start = html
        .find(r#"<meta http-equiv="Content-Security-Policy" content=""#)
        .expect("a CSP meta tag");
    let csp = &html[csp_start..][..html[csp_start..].find('>').unwrap()];
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "img-src data:",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert!(
        html.find("<meta http-equiv=\"Content-Security-Policy\"")
            .unwrap()
            < html.find("<script").unwrap(),
        "the policy comes before any script"
    );

    // Nothing fetched: no src/href/url() pointing anywhere, no external script or style.
    let lower = html.to_ascii_lowercase();
    for needle in [
        "src=\"http",
        "src='http",
        "href=\"http",
        "href='http",
        "url(http",
        "url(\"http",
        "url('http",
        "@import",
        "<link rel=\"stylesheet",
        "<iframe",
        "<img",
    ] {
        assert!(!lower.contains(needle), "the page contains {needle}");
    }
    for link in lower.match_indices("<link").map(|(i, _)| &lower[i..i + 40]) {
        assert!(link.contains("href=\"data:"), "{link}");
    }
    assert_eq!(lower.matches("<script").count(), 2, "the data and the code");
    assert_eq!(lower.matches("</script").count(), 2);
    assert!(lower.contains(r#"<script type="application/json" id="mcptap-data">"#));

    // The capture's HTML is only ever in the JSON, escaped.
    for raw in [
        "<script>window.__pwned",
        "<img src=x",
        "<svg onload",
        "</script><!--",
    ] {
        assert!(!html.contains(raw), "raw capture text in the page: {raw}");
    }
    assert!(html.contains(r#"\u003cscript\u003ewindow.__pwned=1\u003c/script\u003e"#));
    let data = page_data(&html);
    let x = &data["sessions"][0]["exchanges"][0];
    assert_eq!(x["resp_body"]["text"], HOSTILE_BODY);
    assert!(x["resp_headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[1] == HOSTILE_HEADER));
}

#[tokio::test]
async fn redacted_values_stay_redacted_in_the_page() {
    let s = session_with(Faults::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let html = std::fs::read_to_string(report_of(dir.path(), "ok", &s.capture.raw, &[])).unwrap();
    let data = page_data(&html);
    let session = &data["sessions"][0];
    assert_eq!(session["redaction"], "fingerprint");
    // The bearer the client presented and the token it was issued: the same fingerprint,
    // and nothing else of the secret.
    let fp = session["tokens"][0]["fp"].as_str().unwrap();
    let as_json = serde_json::to_string(&data).unwrap();
    assert!(as_json.contains(&format!("Bearer <redacted fp={fp}>")));
    assert!(as_json.contains(&format!("\"access_token\\\":\\\"<redacted fp={fp}>")));
    for line in s.capture.kind("body") {
        if let Some(text) = line["text"].as_str() {
            assert!(!text.contains("access_token\":\"ey"), "{text}");
        }
    }
}

#[test]
fn a_file_that_is_not_a_capture_is_one_line_and_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "hello\n").unwrap();
    let out = mcptap(&[
        "report".as_ref(),
        bad.as_os_str(),
        "-o".as_ref(),
        dir.path().join("r.html").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("not an mcptap capture"), "{err}");
    assert!(!dir.path().join("r.html").exists());
}

#[test]
fn the_report_never_overwrites_its_capture() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("c.jsonl");
    std::fs::write(&capture, ODD_CAPTURE).unwrap();
    let out = mcptap(&[
        "report".as_ref(),
        capture.as_os_str(),
        "-o".as_ref(),
        capture.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = mcptap(&[
        "export".as_ref(),
        capture.as_os_str(),
        "--har".as_ref(),
        capture.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&capture).unwrap(), ODD_CAPTURE);
}

/// A capture with every odd thing a crash or a strange peer leaves: no response, no end,
/// binary bodies, an upgrade, an HTTP/2 target, a partial last line.
pub const ODD_CAPTURE: &str = concat!(
    r#"{"t":0,"ts":"2026-01-01T00:00:00.000000Z","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"0dd0dd00","routes":[{"listen":"127.0.0.1:1","upstream":"http://127.0.0.1:2/"}],"options":{"max_body":8,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":null,"grace_s":5.0},"redaction":"fingerprint"}"#,
    "\n",
    r#"{"t":1,"ts":"2026-01-01T00:00:00.000001Z","kind":"conn_open","conn":1,"peer":"127.0.0.1:5","local":"127.0.0.1:1","listener":"127.0.0.1:1","tls":{"sni":"mcp.test","alpn":"h2","version":"TLSv1.3","cipher":"TLS13_AES_128_GCM_SHA256","handshake_us":900,"resumed":false}}"#,
    "\n",
    r#"{"t":10,"ts":"2026-01-01T00:00:00.000010Z","kind":"request","ex":1,"conn":1,"method":"POST","target":"https://mcp.test/upload?token=%3Credacted%20fp%3D0a0b0c0d%3E","version":"HTTP/2","headers":[["content-type","application/octet-stream"],["cookie","sid=<redacted fp=01020304>; theme=dark"]],"upstream":"http://127.0.0.1:2/upload"}"#,
    "\n",
    r#"{"t":20,"ts":"2026-01-01T00:00:00.000020Z","kind":"body","ex":1,"dir":"request","seq":0,"b64":"AAECA/8=","len":5000,"frames":[[20,5000]],"truncated":true}"#,
    "\n",
    r#"{"t":30,"ts":"2026-01-01T00:00:00.000030Z","kind":"response","ex":1,"status":502,"version":"HTTP/2","headers":[["content-type","text/plain; charset=utf-8"],["set-cookie","a=<redacted fp=deadbeef>; Path=/; HttpOnly; Expires=Wed, 21 Oct 2015 07:28:00 GMT"]],"producer":"proxy"}"#,
    "\n",
    r#"{"t":31,"ts":"2026-01-01T00:00:00.000031Z","kind":"body","ex":1,"dir":"response","seq":0,"text":"upstream down","len":13,"frames":[[31,13]]}"#,
    "\n",
    r#"{"t":32,"ts":"2026-01-01T00:00:00.000032Z","kind":"end","ex":1,"outcome":"upstream_error","status":502,"error":"tcp connect error","timings":{"upstream_connect_us":null,"reused_connection":false,"request_body_done_us":15,"ttfb_us":20,"response_done_us":22,"total_us":22},"bytes":{"request":5000,"response":13},"truncated":["request"]}"#,
    "\n",
    r#"{"t":40,"ts":"2026-01-01T00:00:00.000040Z","kind":"request","ex":2,"conn":1,"method":"GET","target":"/ws","version":"HTTP/1.1","headers":[["upgrade","websocket"],["connection","upgrade"]],"upstream":"http://[::1]:2/ws"}"#,
    "\n",
    r#"{"t":41,"ts":"2026-01-01T00:00:00.000041Z","kind":"response","ex":2,"status":101,"version":"HTTP/1.1","headers":[["upgrade","websocket"]],"producer":"upstream"}"#,
    "\n",
    r#"{"t":42,"ts":"2026-01-01T00:00:00.000042Z","kind":"end","ex":2,"outcome":"complete","status":101,"timings":{"upstream_connect_us":7,"reused_connection":false,"request_body_done_us":null,"ttfb_us":1,"response_done_us":null,"total_us":20},"bytes":{"request":0,"response":0}}"#,
    "\n",
    r#"{"t":2000050,"ts":"2026-01-01T00:00:02.000050Z","kind":"upgrade","ex":2,"protocol":"websocket","client_to_upstream":5,"upstream_to_client":10,"duration_us":2000000}"#,
    "\n",
    r#"{"t":2000060,"ts":"2026-01-01T00:00:02.000060Z","kind":"request","ex":3,"conn":1,"method":"GET","target":"/events","version":"HTTP/1.1","headers":[["accept","text/event-stream"]],"upstream":"http://127.0.0.1:2/events"}"#,
    "\n",
    r#"{"t":2000070,"ts":"2026-01-01T00:00:02.000070Z","kind":"response","ex":3,"status":200,"version":"HTTP/1.1","headers":[["content-type","text/event-stream"]],"producer":"upstream"}"#,
    "\n",
    r#"{"t":2000080,"ts":"2026-01-01T00:00:02.000080Z","kind":"body","ex":3,"dir":"response","seq":0,"text":": hi\n\nid: 7\nevent: note\ndata: {\"a\":1}\n\ndata: two\n\n","len":44,"frames":[[2000080,44]]}"#,
    "\n",
    r#"{"t":2000080,"ts":"2026-01-01T00:00:02.000080Z","kind":"sse","ex":3,"dir":"response","seq":0,"comments":["hi"],"dispatched":false}"#,
    "\n",
    r#"{"t":2000080,"ts":"2026-01-01T00:00:02.000080Z","kind":"sse","ex":3,"dir":"response","seq":1,"id":"7","event":"note","data":"{\"a\":1}","dispatched":true}"#,
    "\n",
    r#"{"t":2000090,"ts":"2026-01-01T00:00:02.000090Z","kind":"sse","ex":3,"dir":"response","seq":2,"data":"two","dispatched":true}"#,
    "\n",
    r#"{"t":2000100,"ts":"2026-01-01T00:00:02.000100Z","kind":"request","ex":4,"conn":1,"method":"OPTIONS","target":"*","version":"HTTP/1.1","headers":[],"upstream":""}"#,
    "\n",
    r#"{"t":2000200,"ts":"2026-01-01T00:00:02.000200Z","kind":"end","ex":4,"outcome":"client_aborted","status":null,"error":"gone","timings":{"upstream_connect_us":null,"reused_connection":false,"request_body_done_us":null,"ttfb_us":null,"response_done_us":null,"total_us":100},"bytes":{"request":0,"response":0}}"#,
    "\n",
    r#"{"t":2000300,"ts":"2026-01-01T00:00:02.000300Z","kind":"request","ex":5,"conn":9,"method":"PUT","target":"/x","version":"HTTP/1.0","headers":[["content-type","application/json"]],"upstream":"http://127.0.0.1:2/x"}"#,
    "\n",
    r#"{"t":2000310,"ts":"2026-01-01T00:00:02.000310Z","kind":"body","ex":5,"dir":"request","seq":0,"text":"@/etc/passwd","len":12,"frames":[[2000310,12]]}"#,
    "\n",
    r#"{"t":2000400,"ts":"2026-01-01T00:00:02.000400Z","kind":"sse","ex":99,"dir":"response","seq":0,"data":"orphan","dispatched":true}"#,
    "\n",
    r#"{"t":2000500,"ts":"2026-01-01T00:00:02.000500Z","kind":"end","ex":3,"outcome":"upst"#,
);

#[test]
fn an_odd_capture_still_makes_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let html = report_of(dir.path(), "odd", ODD_CAPTURE.as_bytes(), &[]);
    let html = std::fs::read_to_string(html).unwrap();
    let data = page_data(&html);
    let xs = data["sessions"][0]["exchanges"].as_array().unwrap();
    assert_eq!(xs.len(), 5);
    assert_eq!(xs[0]["req_body"]["b64"], "AAECA/8=");
    assert_eq!(xs[0]["req_body"]["truncated"], true);
    assert_eq!(xs[1]["upgrade"]["protocol"], "websocket");
    assert!(xs[3].get("status").is_none());
    assert!(xs[4].get("end").is_none());
    assert!(data["sessions"][0]["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("partial")));
}

#[test]
fn an_odd_capture_draws_in_the_browser() {
    if !browser_ready("an_odd_capture_draws_in_the_browser") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = report_of(
        dir.path(),
        "odd",
        ODD_CAPTURE.as_bytes(),
        &["--body-limit", "4"],
    );
    let page = render(&html, &dir.path().join("odd.png"), &["--click=1,2,3,4,5"]);
    assert_self_contained(&page);
    let shown: Vec<u64> = page["expandedAll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["ex"].as_u64().unwrap())
        .collect();
    assert_eq!(shown, [1, 2, 3, 4, 5]);
    let stream = &page["expandedAll"][2];
    assert_eq!(stream["sseEvents"], 3);
    // Cut at --body-limit 4: the page says so.
    assert!(stream["text"]
        .as_str()
        .unwrap()
        .contains("shown up to --body-limit"));
    let binary = page["expandedAll"][0]["text"].as_str().unwrap();
    assert!(binary.contains("not UTF-8") && binary.contains("recorded only up to --max-body"));
}

#[tokio::test]
async fn two_sessions_side_by_side_mark_where_they_differ() {
    let good = session_with(Faults::default()).await;
    let bad = session_with(Faults {
        prm_resource_base_url: true,
        ..Faults::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("good.jsonl");
    std::fs::write(&other, &good.capture.raw).unwrap();
    let html = report_of(
        dir.path(),
        "bad",
        &bad.capture.raw,
        &["--diff", other.to_str().unwrap()],
    );
    let data = page_data(&std::fs::read_to_string(&html).unwrap());
    assert_eq!(data["mode"], "diff");
    let rows = data["diff"].as_array().unwrap();
    assert_eq!(rows.len(), good.capture.exchanges().len());
    // The first six exchanges are the same flow but for the planted fault in the metadata;
    // from the seventh, B goes on and A is silent.
    let differs: Vec<&Value> = rows.iter().map(|r| &r["differs"]).collect();
    assert!(
        differs[1]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "body.resource"),
        "{differs:?}"
    );
    for (i, d) in differs[..6].iter().enumerate() {
        if i != 1 {
            assert_eq!(**d, serde_json::json!([]), "row {i}: {differs:?}");
        }
    }
    assert!(
        differs[6..]
            .iter()
            .all(|d| **d == serde_json::json!(["only in B"])),
        "{differs:?}"
    );
    assert!(data["diff_first"]
        .as_str()
        .unwrap()
        .contains("body.resource"));
    if !browser_ready("two_sessions_side_by_side_mark_where_they_differ") {
        return;
    }
    let page = render(
        &html,
        &artifacts().join("report-diff.png"),
        &["--click=7", "--side=b"],
    );
    assert_self_contained(&page);
    let summary = page["diffSummary"].as_str().unwrap();
    assert!(
        summary.contains("8 of 13 rows differ") && summary.contains("body.resource"),
        "{summary}"
    );
    assert_eq!(
        page["diffRows"],
        rows.iter()
            .filter(|r| r["differs"] != serde_json::json!([]))
            .count()
    );
    assert!(
        page["expanded"]["diffMarksInDom"].as_u64().unwrap() > 0,
        "the marks near row 7 are drawn"
    );
    let silences: Vec<&str> = page["silence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(silences, ["token", "none"]);
    assert_eq!(page["expanded"]["ex"], 7);
    assert!(page["expanded"]["title"]
        .as_str()
        .unwrap()
        .starts_with("B #7"));
}

/// A capture of `n` exchanges made up in memory: MCP calls on keep-alive connections, an
/// event stream every 50 exchanges, a 401 every 97, a 502 every 331, a 31 s pause every 2,500.
pub fn synthetic_capture(n: u64) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(n as usize * 1400);
    let ts = |t: u64| {
        format!(
            "2026-01-01T00:{:02}:{:02}.{:06}Z",
            (t / 60_000_000) % 60,
            (t / 1_000_000) % 60,
            t % 1_000_000
        )
    };
    let _ = writeln!(
        out,
        r#"{{"t":0,"ts":"{}","kind":"session","v":1,"tool":"mcptap","tool_version":"0.1.0","session_id":"10000000","routes":[{{"listen":"127.0.0.1:8080","upstream":"http://127.0.0.1:8000/"}}],"options":{{"max_body":10485760,"on_full":"wait","preserve_host":false,"upstream_insecure":false,"upstream_timeout_s":60.0,"grace_s":5.0}},"redaction":"fingerprint"}}"#,
        ts(0)
    );
    let mut t = 1000u64;
    let line = |out: &mut String, t: u64, rest: String| {
        let _ = writeln!(out, r#"{{"t":{t},"ts":"{}",{rest}}}"#, ts(t));
    };
    for ex in 1..=n {
        let conn = (ex - 1) / 100 + 1;
        if (ex - 1) % 100 == 0 {
            line(
                &mut out,
                t,
                format!(
                    r#""kind":"conn_open","conn":{conn},"peer":"127.0.0.1:{}","local":"127.0.0.1:8080","listener":"127.0.0.1:8080""#,
                    30000 + conn
                ),
            );
        }
        if ex % 2500 == 0 {
            t += 31_200_000;
        }
        let stream = ex % 50 == 0;
        let (method, status) = if stream {
            ("GET", 200)
        } else if ex % 97 == 0 {
            ("POST", 401)
        } else if ex % 331 == 0 {
            ("POST", 502)
        } else {
            ("POST", 200)
        };
        line(
            &mut out,
            t,
            format!(
                r#""kind":"request","ex":{ex},"conn":{conn},"method":"{method}","target":"/mcp","version":"HTTP/1.1","headers":[["host","127.0.0.1:8080"],["accept","application/json, text/event-stream"],["content-type","application/json"],["authorization","Bearer <redacted fp=1a2b3c4d>"],["mcp-session-id","s-1"],["mcp-protocol-version","2025-06-18"]],"upstream":"http://127.0.0.1:8000/mcp""#
            ),
        );
        if method == "POST" {
            let body = format!(
                r#"{{\"jsonrpc\":\"2.0\",\"id\":{ex},\"method\":\"{}\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"text\":\"hello number {ex}\"}}}}}}"#,
                if ex % 7 == 0 {
                    "tools/list"
                } else {
                    "tools/call"
                }
            );
            line(
                &mut out,
                t + 80,
                format!(
                    r#""kind":"body","ex":{ex},"dir":"request","seq":0,"text":"{body}","len":120,"frames":[[{},120]]"#,
                    t + 80
                ),
            );
        }
        let rt = t + 900;
        let producer = if status == 502 { "proxy" } else { "upstream" };
        let ctype = if stream {
            "text/event-stream"
        } else if status == 502 {
            "text/plain; charset=utf-8"
        } else {
            "application/json"
        };
        line(
            &mut out,
            rt,
            format!(
                r#""kind":"response","ex":{ex},"status":{status},"version":"HTTP/1.1","headers":[["content-type","{ctype}"],["date","Thu, 01 Jan 2026 00:00:00 GMT"]],"producer":"{producer}""#
            ),
        );
        let mut end = rt + 200;
        if stream {
            for seq in 0..20u64 {
                let et = rt + 2_000 * (seq + 1);
                let data = format!(
                    r#"{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":{seq}}}}}"#
                );
                line(
                    &mut out,
                    et,
                    format!(
                        r#""kind":"body","ex":{ex},"dir":"response","seq":{seq},"text":"event: message\ndata: {data}\n\n","len":90,"frames":[[{et},90]]"#
                    ),
                );
                line(
                    &mut out,
                    et,
                    format!(
                        r#""kind":"sse","ex":{ex},"dir":"response","seq":{seq},"event":"message","data":"{data}","dispatched":true"#
                    ),
                );
                end = et + 10;
            }
            line(
                &mut out,
                end,
                format!(
                    r#""kind":"end","ex":{ex},"outcome":"client_aborted","status":200,"error":"the client went away","timings":{{"upstream_connect_us":null,"reused_connection":true,"request_body_done_us":null,"ttfb_us":900,"response_done_us":null,"total_us":{}}},"bytes":{{"request":0,"response":1800}}"#,
                    end - t
                ),
            );
        } else {
            let body = match status {
                200 => format!(
                    r#"{{\"jsonrpc\":\"2.0\",\"id\":{ex},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"hello number {ex}\"}}],\"isError\":false}}}}"#
                ),
                401 => r#"{\"error\":\"invalid_token\"}"#.to_string(),
                _ => "upstream: tcp connect error: Connection refused".to_string(),
            };
            line(
                &mut out,
                end,
                format!(
                    r#""kind":"body","ex":{ex},"dir":"response","seq":0,"text":"{body}","len":110,"frames":[[{end},110]]"#
                ),
            );
            let outcome = if status == 502 {
                r#""upstream_error","status":502,"error":"tcp connect error""#
            } else {
                r#""complete","status":STATUS"#
            };
            let outcome = outcome.replace("STATUS", &status.to_string());
            line(
                &mut out,
                end,
                format!(
                    r#""kind":"end","ex":{ex},"outcome":{outcome},"timings":{{"upstream_connect_us":null,"reused_connection":true,"request_body_done_us":100,"ttfb_us":900,"response_done_us":1100,"total_us":1100}},"bytes":{{"request":120,"response":110}}"#
                ),
            );
        }
        t = end + 1_500;
        if ex % 100 == 0 || ex == n {
            line(
                &mut out,
                t,
                format!(
                    r#""kind":"conn_close","conn":{conn},"reason":"closed","bytes_in":1,"bytes_out":1,"duration_us":1,"exchanges":100"#
                ),
            );
        }
    }
    let written = out.lines().count() + 1;
    line(
        &mut out,
        t + 10,
        format!(
            r#""kind":"session_end","exchanges":{n},"connections":{},"events_written":{written},"events_dropped":0,"events_lost":0,"clean":true"#,
            n.div_ceil(100)
        ),
    );
    out
}

#[test]
fn ten_thousand_exchanges_render_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("big.jsonl");
    std::fs::write(&capture, synthetic_capture(10_000)).unwrap();
    if let Some(keep) = std::env::var_os("MCPTAP_KEEP_10K") {
        std::fs::copy(&capture, keep).unwrap();
    }
    let html = dir.path().join("big.html");
    let started = Instant::now();
    mcptap_ok(&[
        "report".as_ref(),
        capture.as_os_str(),
        "-o".as_ref(),
        html.as_os_str(),
    ]);
    let write_ms = started.elapsed().as_millis();
    let size = std::fs::metadata(&html).unwrap().len();
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "mcptap report took {write_ms} ms"
    );
    if !browser_ready("ten_thousand_exchanges_render_quickly") {
        return;
    }
    let page = render(
        &html,
        &artifacts().join("report-10k.png"),
        &["--perf", "--click=5000", "--filter=tools/list"],
    );
    assert_self_contained(&page);
    let ready = page["readyMs"].as_u64().unwrap();
    let scroll: Vec<u64> = page["scroll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ms"].as_u64().unwrap())
        .collect();
    loud(&format!(
        "10,000 exchanges: `mcptap report` {write_ms} ms, page {:.1} MiB; Chromium ready {ready} ms after navigation (layout {} ms), scroll steps {scroll:?} ms, {} rows in the DOM",
        size as f64 / (1 << 20) as f64,
        page["layoutMs"],
        page["rowsInDom"]
    ));
    // Virtualised: a screenful of rows in the DOM, not 20,000.
    assert!(
        page["rowsInDom"].as_u64().unwrap() < 400,
        "{}",
        page["rowsInDom"]
    );
    // The 31.2 s pauses before exchanges 2,500, 5,000, 7,500 and 10,000 are folded and labelled.
    assert_eq!(
        page["gaps"],
        serde_json::json!([
            "… 31.2 s quiet …",
            "… 31.2 s quiet …",
            "… 31.2 s quiet …",
            "… 31.2 s quiet …"
        ])
    );
    assert!(ready < 15_000, "ready after {ready} ms");
    assert!(scroll.iter().all(|ms| *ms < 1_000), "{scroll:?}");
    // Every 7th POST lists tools.
    let lists = (1..=10_000u64)
        .filter(|ex| ex % 50 != 0 && ex % 7 == 0)
        .count() as u64;
    assert_eq!(page["filtered"]["shown"], lists);
    assert_eq!(page["expanded"]["ex"], 5000);
    assert_eq!(page["expanded"]["sseEvents"], 20);
}

#[test]
fn a_capture_of_many_large_flows_draws_a_dozen_and_lists_them_all() {
    // 30 clients of 400 exchanges each (12,000 in all): each block of the synthetic capture
    // gets its own token and session.
    let mut text = String::new();
    for line in synthetic_capture(12_000).lines() {
        let ex = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["ex"].as_u64());
        let line = match ex {
            Some(ex) => {
                let client = (ex - 1) / 400;
                line.replace("fp=1a2b3c4d", &format!("fp=c{client:07}"))
                    .replace("\"s-1\"", &format!("\"s-{client}\""))
            }
            None => line.to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let html = report_of(dir.path(), "many", text.as_bytes(), &[]);
    let page_html = std::fs::read_to_string(&html).unwrap();
    assert!(page_html.len() < 20 << 20, "{} bytes", page_html.len());
    let data = page_data(&page_html);
    let s = &data["sessions"][0];
    assert_eq!(s["exchanges_total"], 12_000);
    let flows = s["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 30);
    let drawn: Vec<&Value> = flows.iter().filter(|f| f["drawn"] == true).collect();
    assert_eq!(drawn.len(), 12);
    assert!(drawn.iter().any(|f| f["chosen"] == true));
    // Every exchange of a drawn flow is in the sequence, none of the others.
    assert_eq!(s["exchanges"].as_array().unwrap().len(), 12 * 400);
    let folded = s["folded"].as_str().unwrap();
    assert!(folded.contains("12 of 30 flows"), "{folded}");
    if !browser_ready("a_capture_of_many_large_flows_draws_a_dozen_and_lists_them_all") {
        return;
    }
    let page = render(&html, &artifacts().join("report-many-flows.png"), &[]);
    assert_self_contained(&page);
}
